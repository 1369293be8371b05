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
        ("seeded", "yes".to_owned()),
        ("study", study.study_uid.clone()),
        ("series", study.series[0].clone()),
        ("series2", study.series[1].clone()),
        ("instance", ct1.sop_instance_uid.clone()),
        ("instance2", ct2.sop_instance_uid.clone()),
        ("sop_class", ct1.sop_class_uid.to_owned()),
        ("frame_bytes", ct1.frame_bytes.to_string()),
        ("mf_instance", multiframe.sop_instance_uid.clone()),
        ("mf_series", multiframe.series_uid.clone()),
        ("rle_series", rle.series_uid.clone()),
        ("mf_frames", MULTIFRAME_FRAMES.to_string()),
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
        .get(&format!("/studies/{study_uid}/instances?includefield=00280008&includefield=00280010"), Some(JSON))
        .await;
    let instances = json::datasets(&instances.body).unwrap_or_default();
    let in_first_series: Vec<_> =
        instances.iter().filter(|i| json::first(i, "0020000E").as_ref() == vars.get("series")).collect();
    for (name, instance) in ["instance", "instance2"].iter().zip(&in_first_series) {
        if let Some(uid) = json::first(instance, "00080018") {
            vars.insert((*name).into(), uid);
        }
    }
    if let Some(class) = in_first_series.first().and_then(|i| json::first(i, "00080016")) {
        vars.insert("sop_class".into(), class);
    }
    let multiframe = instances
        .iter()
        .find(|i| json::first(i, "00280008").and_then(|n| n.parse::<u32>().ok()).is_some_and(|n| n > 1));
    if let Some(instance) = multiframe {
        if let (Some(uid), Some(series), Some(frames)) =
            (json::first(instance, "00080018"), json::first(instance, "0020000E"), json::first(instance, "00280008"))
        {
            vars.insert("mf_instance".into(), uid);
            vars.insert("mf_series".into(), series);
            vars.insert("mf_frames".into(), frames);
        }
    }
    vars
}
