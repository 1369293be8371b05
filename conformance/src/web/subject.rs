//! The data the checks run on, as the `{variables}` of the case files: from the study the
//! tool stored, or found on the server by searching.

use std::collections::BTreeMap;

use super::client::WebClient;
use super::dicom_json as json;
use super::seed::{fresh_uid, SeedStudy, MULTIFRAME_FRAMES};

const JSON: &str = "application/dicom+json";

fn common(vars: &mut BTreeMap<String, String>) {
    vars.insert("unknown_study".into(), fresh_uid());
    vars.insert("unknown_uid".into(), fresh_uid());
}

/// Every variable, from the study stored here.
pub fn seeded(study: &SeedStudy) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    common(&mut vars);
    let [ct1, ct2, multiframe, rle] = &study.instances[..] else { return vars };
    for (name, value) in [
        ("study", study.study_uid.clone()),
        ("series", study.series[0].clone()),
        ("series2", study.series[1].clone()),
        ("instance", ct1.sop_instance_uid.clone()),
        ("instance2", ct2.sop_instance_uid.clone()),
        ("sop_class", ct1.sop_class_uid.to_owned()),
        ("frame_bytes", ct1.frame_bytes.to_string()),
        ("pixel_bytes", ct1.frame_bytes.to_string()),
        ("mf_instance", multiframe.sop_instance_uid.clone()),
        ("mf_series", multiframe.series_uid.clone()),
        ("rle_series", rle.series_uid.clone()),
        ("mf_frames", MULTIFRAME_FRAMES.to_string()),
        ("mf_past_last", (MULTIFRAME_FRAMES + 1).to_string()),
        ("mf_frame_bytes", multiframe.frame_bytes.to_string()),
        ("rle_instance", rle.sop_instance_uid.clone()),
        ("rle_frame_bytes", rle.frame_bytes.to_string()),
        ("patient_id", study.patient_id.clone()),
        ("patient_name", study.patient_name.clone()),
        ("patient_id_stem", study.patient_id[..study.patient_id.len() - 4].to_owned()),
        ("patient_id_wildcard", format!("{}*", &study.patient_id[..study.patient_id.len() - 4])),
        ("accession_wildcard", format!("{}?", &study.accession_number[..study.accession_number.len() - 1])),
        ("accession", study.accession_number.clone()),
        ("study_date", study.study_date.to_owned()),
        ("study_date_range", format!("{}01-{}28", &study.study_date[..6], &study.study_date[..6])),
        ("modality", "CT".into()),
        ("study_series", "2".into()),
        ("study_instances", study.instances.len().to_string()),
        ("study_instances_after_offset", (study.instances.len() - 1).to_string()),
        ("series_instances", "2".into()),
    ] {
        vars.insert(name.to_owned(), value);
    }
    vars
}

/// What a search finds: the given study, or the first one listed. Variables of what is not
/// found stay unset, and the checks that need them do not apply.
pub async fn discover(client: &WebClient, study: Option<&str>) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    common(&mut vars);
    let include = "includefield=00100020&includefield=00080020&includefield=00080050&includefield=00080061\
                   &includefield=00201206&includefield=00201208";
    let target = match study {
        Some(uid) => format!("/studies?StudyInstanceUID={uid}&{include}"),
        None => format!("/studies?limit=1&{include}"),
    };
    let found = client.get(&target, Some(JSON)).await;
    let Some(study) = json::datasets(&found.body).ok().and_then(|s| s.into_iter().next()) else { return vars };
    let Some(study_uid) = json::first(&study, "0020000D") else { return vars };
    for (name, tag) in [
        ("patient_id", "00100020"),
        ("accession", "00080050"),
        ("study_date", "00080020"),
        ("modality", "00080061"),
        ("study_series", "00201206"),
        ("study_instances", "00201208"),
    ] {
        if let Some(value) = json::first(&study, tag).filter(|v| !v.is_empty()) {
            vars.insert(name.into(), value);
        }
    }
    if let Some(id) = vars.get("patient_id").filter(|id| id.chars().count() > 4).cloned() {
        let stem: String = id.chars().take(id.chars().count() - 2).collect();
        vars.insert("patient_id_wildcard".into(), format!("{stem}*"));
        vars.insert("patient_id_stem".into(), stem);
    }
    if let Some(accession) = vars.get("accession").filter(|a| a.chars().count() > 1).cloned() {
        let stem: String = accession.chars().take(accession.chars().count() - 1).collect();
        vars.insert("accession_wildcard".into(), format!("{stem}?"));
    }
    if let Some(date) = vars.get("study_date").filter(|d| d.len() == 8).cloned() {
        vars.insert("study_date_range".into(), format!("{date}-{date}"));
    }
    if let Some(n) = vars.get("study_instances").and_then(|n| n.parse::<usize>().ok()).filter(|n| *n > 0) {
        vars.insert("study_instances_after_offset".into(), (n - 1).to_string());
    }
    vars.insert("study".into(), study_uid.clone());
    let series = client.get(&format!("/studies/{study_uid}/series?includefield=00201209"), Some(JSON)).await;
    let series = json::datasets(&series.body).unwrap_or_default();
    for (i, name) in ["series", "series2"].iter().enumerate() {
        if let Some(uid) = series.get(i).and_then(|s| json::first(s, "0020000E")) {
            vars.insert((*name).into(), uid);
        }
    }
    if let Some(first) = series.first() {
        if let Some(n) = json::first(first, "00201209") {
            vars.insert("series_instances".into(), n);
        }
    }
    let instances = client
        .get(
            &format!(
                "/studies/{study_uid}/instances?includefield=00280008&includefield=00280010&includefield=00280011\
                 &includefield=00280100&includefield=00280002&includefield=0020000E"
            ),
            Some(JSON),
        )
        .await;
    let instances = json::datasets(&instances.body).unwrap_or_default();
    let in_first_series: Vec<_> =
        instances.iter().filter(|i| json::first(i, "0020000E").as_ref() == vars.get("series")).collect();
    for (name, instance) in ["instance", "instance2"].iter().zip(&in_first_series) {
        if let Some(uid) = json::first(instance, "00080018") {
            vars.insert((*name).into(), uid);
        }
    }
    if let Some(first) = in_first_series.first() {
        if let Some(class) = json::first(first, "00080016") {
            vars.insert("sop_class".into(), class);
        }
        if let Some((bytes, frames)) = frame_bytes_of(client, &study_uid, first).await {
            vars.insert("frame_bytes".into(), bytes.to_string());
            vars.insert("pixel_bytes".into(), (bytes * frames).to_string());
        }
    }
    // A multi-frame image of at least three frames, for the frame list 1,3.
    let frames = |i: &json::Dataset| json::first(i, "00280008").and_then(|n| n.parse::<u32>().ok()).unwrap_or(1);
    if let Some(instance) = instances.iter().find(|i| frames(i) >= 3) {
        if let (Some(uid), Some(series)) = (json::first(instance, "00080018"), json::first(instance, "0020000E")) {
            vars.insert("mf_instance".into(), uid);
            vars.insert("mf_series".into(), series);
            vars.insert("mf_frames".into(), frames(instance).to_string());
            vars.insert("mf_past_last".into(), (frames(instance) + 1).to_string());
            if let Some((bytes, _)) = frame_bytes_of(client, &study_uid, instance).await {
                vars.insert("mf_frame_bytes".into(), bytes.to_string());
            }
        }
    }
    vars
}

/// Bytes of one uncompressed frame of an instance and its number of frames: from its search
/// result, or else from its metadata (a search need not return the image attributes).
async fn frame_bytes_of(client: &WebClient, study: &str, instance: &json::Dataset) -> Option<(usize, usize)> {
    if let Some(found) = frame_bytes(instance) {
        return Some(found);
    }
    let series = json::first(instance, "0020000E")?;
    let uid = json::first(instance, "00080018")?;
    let metadata = client.get(&format!("/studies/{study}/series/{series}/instances/{uid}/metadata"), Some(JSON)).await;
    json::datasets(&metadata.body).ok()?.first().and_then(frame_bytes)
}

/// Bytes of one uncompressed frame, from Rows, Columns, Bits Allocated and Samples per Pixel,
/// and the Number of Frames (1 when absent); `None` when one is missing or the layout is not
/// byte-aligned.
fn frame_bytes(instance: &json::Dataset) -> Option<(usize, usize)> {
    let number = |tag| json::first(instance, tag).and_then(|n| n.parse::<usize>().ok());
    let bits = number("00280100")?;
    let samples = number("00280002").unwrap_or(1);
    let (rows, columns) = number("00280010").zip(number("00280011"))?;
    bits.is_multiple_of(8).then_some((rows * columns * samples * bits / 8, number("00280008").unwrap_or(1)))
}
