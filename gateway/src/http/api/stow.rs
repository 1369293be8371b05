//! STOW-RS (PS3.18 §10.5): `multipart/related; type="application/dicom"` bodies read part by
//! part as they arrive (one instance in memory at a time), each instance checked and C-STOREd
//! to the first site of the request that takes instances (`store = true`), and the Store
//! Instances Response Module (PS3.18 Annex I) as DICOM JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicom_dictionary_std::tags;
use pacs_adapter::{part10, DimseError};
use serde_json::{json, Value as Json};

use super::{accepts, parse_uid, text_of};
use crate::config::DataSetLimitsConfig;
use crate::core::access::Access;
use crate::core::dataset_limits::{check_encoded, ContentLimitError};
use crate::core::privacy::pseudonyms::{Kind, Original};
use crate::core::Error;
use crate::http::admission::Admission;
use crate::http::multipart::{boundary_of, MultipartError, MultipartReader};
use crate::sites::Unanswered;
use crate::state::{Gateway, Site};

/// PS3.18 Table I.2-2 failure reasons.
const OUT_OF_RESOURCES: u16 = 0xA700;
const DATA_SET_MISMATCH: u16 = 0xA900;
const CANNOT_UNDERSTAND: u16 = 0xC000;
const TRANSFER_SYNTAX_NOT_SUPPORTED: u16 = 0xC122;
const PROCESSING_FAILURE: u16 = 0x0110;

const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Why an instance is refused before it is parsed: a bound of `[dataset_limits]` (PS3.18
/// Table I.2-2: A700 when the gateway will not spend that much, C000 when the data set
/// contradicts itself).
fn limit_reason(e: &ContentLimitError) -> u16 {
    match e {
        ContentLimitError::TooDeep(_)
        | ContentLimitError::InflatedTooLarge(_)
        | ContentLimitError::FrameTooLarge { .. }
        | ContentLimitError::DecodedTooLarge { .. } => OUT_OF_RESOURCES,
        ContentLimitError::LengthPastEnd { .. }
        | ContentLimitError::PartialValue { .. }
        | ContentLimitError::Inflate(_)
        | ContentLimitError::Malformed(_) => CANNOT_UNDERSTAND,
    }
}

/// Largest single instance accepted in a request.
const MAX_INSTANCE: usize = 2 * 1024 * 1024 * 1024 - 1;

pub async fn store_studies(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Extension(admission): Extension<Arc<Admission>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    store_instances(gw, access, &admission, None, headers, body).await
}

pub async fn store_study(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Extension(admission): Extension<Arc<Admission>>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let study = parse_uid("study", &study)?;
    store_instances(gw, access, &admission, Some(study), headers, body).await
}

#[derive(Debug, Default)]
struct Outcome {
    stored: Vec<Json>,
    failed: Vec<Json>,
    studies: Vec<String>,
    /// The studies stored into, in the site's UIDs.
    site_studies: Vec<String>,
    /// Failures that say the PACS could not be used at all.
    unavailable: Option<Unanswered>,
    /// De-identifying: the pseudonyms the response's URLs name.
    pseudonyms: Vec<(String, Original)>,
}

fn reference(class: &str, instance: &str) -> serde_json::Map<String, Json> {
    let mut item = serde_json::Map::new();
    item.insert("00081150".into(), json!({"vr": "UI", "Value": [class]}));
    item.insert("00081155".into(), json!({"vr": "UI", "Value": [instance]}));
    item
}

impl Outcome {
    fn fail(&mut self, class: &str, instance: &str, reason: u16) {
        let mut item = if instance.is_empty() { serde_json::Map::new() } else { reference(class, instance) };
        item.insert("00081197".into(), json!({"vr": "US", "Value": [reason]}));
        self.failed.push(Json::Object(item));
    }
}

async fn store_instances(
    gw: Arc<Gateway>,
    access: Access,
    admission: &Admission,
    target_study: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    accepts(&headers, &["application/dicom+json", "application/json"])?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media_type = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let part_type = content_type.split(';').skip(1).find_map(|p| {
        p.split_once('=')
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("type"))
            .map(|(_, v)| v.trim().trim_matches('"').to_ascii_lowercase())
    });
    if media_type != "multipart/related" || part_type.as_deref().is_some_and(|t| t != "application/dicom") {
        return Err(Error::UnsupportedMediaType(
            "STOW-RS takes multipart/related; type=\"application/dicom\" bodies".into(),
        ));
    }
    let boundary = boundary_of(content_type)
        .ok_or_else(|| Error::BadRequest("the Content-Type has no boundary parameter".into()))?;
    // Instances go to the first site of the request that takes them.
    let site = gw
        .sites_for(&access)?
        .into_iter()
        .find(|s| s.config.store)
        .ok_or_else(|| Error::Forbidden("no site of this request takes stored instances (store = true)".into()))?;
    let limit = gw.config.stow_limit;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes")));
    }
    // The body's bytes count against `server.stow_memory` while it is processed (a body without
    // Content-Length at the limit); none left within `server.queue_wait`: 503.
    let _reserved = match admission.reserve_stow(declared.unwrap_or(limit).min(limit)).await {
        Ok(reserved) => reserved,
        Err(overload) => {
            crate::http::admission::discard(body).await;
            return Ok(overload.into_response());
        }
    };

    // De-identifying, a study named in the URL is in the site's terms as the instances' own
    // study UIDs will be (api/stow_deid.rs): the study a pseudonym stands for, or the caller's
    // UID kept under the project's upload key.
    let target_study = match (access.privacy(), target_study) {
        (Some(privacy), Some(study)) => match privacy.lookup(&study).await? {
            Some(original) if original.kind == Kind::Study => Some(original.value),
            _ => Some(privacy.engine.keys().stored_uid(&study)),
        },
        (_, target_study) => target_study,
    };
    let edge = gw.config.http_limits;
    let max_part = MAX_INSTANCE.min(limit.min(edge.stow_max_part_size) as usize);
    let mut reader =
        MultipartReader::new(body.into_data_stream(), &boundary, max_part, limit).with_max_parts(edge.stow_max_parts);
    let mut outcome = Outcome::default();
    let mut broken = None;
    loop {
        let part = match reader.next_part().await {
            Ok(Some(part)) => part,
            Ok(None) => break,
            Err(e) => {
                broken = Some(e);
                break;
            }
        };
        if part.header("content-type").is_some_and(|t| !t.to_ascii_lowercase().starts_with("application/dicom")) {
            outcome.fail("", "", CANNOT_UNDERSTAND);
            continue;
        }
        store_one(&access, site, gw.config.dataset_limits, target_study.as_deref(), part.body, &mut outcome).await;
    }

    // What was cached of these studies no longer shows all of them.
    for study in &outcome.site_studies {
        gw.cache.forget_study(study);
    }
    if !outcome.site_studies.is_empty() {
        gw.search_cache.forget_studies(&outcome.site_studies);
    }
    let nothing_stored = outcome.stored.is_empty();
    if let Some(e) = &broken {
        if nothing_stored {
            return Err(match e {
                MultipartError::BodyTooLarge(_) | MultipartError::PartTooLarge(_) | MultipartError::TooManyParts(_) => {
                    Error::PayloadTooLarge(e.to_string())
                }
                _ => Error::BadRequest(e.to_string()),
            });
        }
    }
    if nothing_stored {
        if let Some(e) = outcome.unavailable.take() {
            return Err(e.into());
        }
        if outcome.failed.is_empty() {
            return Err(Error::BadRequest("the request holds no instance".into()));
        }
    }
    if let Some(privacy) = access.privacy() {
        privacy.record(std::mem::take(&mut outcome.pseudonyms)).await?;
    }
    let status = match (outcome.stored.is_empty(), outcome.failed.is_empty() && broken.is_none()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut module = serde_json::Map::new();
    if let [study] = outcome.studies.as_slice() {
        module
            .insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{}/studies/{study}", access.base_url)]}));
    }
    if !outcome.failed.is_empty() {
        module.insert("00081198".into(), json!({"vr": "SQ", "Value": outcome.failed}));
    }
    if !outcome.stored.is_empty() {
        module.insert("00081199".into(), json!({"vr": "SQ", "Value": outcome.stored}));
    }
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/dicom+json")], Json::Object(module).to_string()).into_response();
    if let Some(e) = broken {
        let text = format!("299 dicomweb-gateway \"{e}; the parts before it were processed\"");
        if let Ok(value) = HeaderValue::from_str(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    Ok(response)
}

async fn store_one(
    access: &Access,
    site: &Site,
    limits: DataSetLimitsConfig,
    target_study: Option<&str>,
    bytes: bytes::Bytes,
    outcome: &mut Outcome,
) {
    let Ok(header) = part10::parse_header(&bytes) else {
        outcome.fail("", "", CANNOT_UNDERSTAND);
        return;
    };
    // The data set within `[dataset_limits]` first (nesting, lengths, inflated size), then
    // parsed whole: an instance the gateway cannot read is refused here rather than stored into
    // a PACS that may choke on it later.
    let keep_parsed = access.privacy().is_some();
    let parsed = {
        let bytes = bytes.clone();
        let (offset, syntax) = (header.data_set_offset, header.transfer_syntax_uid.clone());
        tokio::task::spawn_blocking(move || {
            let inflated = check_encoded(&bytes[offset..], &syntax, &limits).map_err(|e| limit_reason(&e))?;
            let obj = dicom_object::from_reader(&bytes[128..]).map_err(|_| CANNOT_UNDERSTAND)?;
            let uids =
                [tags::SOP_CLASS_UID, tags::SOP_INSTANCE_UID, tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID]
                    .map(|tag| text_of(&obj, tag));
            // The parsed instance is kept only to be put into the site's terms.
            Ok((inflated, uids, keep_parsed.then(|| obj.into_inner())))
        })
        .await
        .unwrap_or(Err(PROCESSING_FAILURE))
    };
    let (inflated, [data_set_class, data_set_instance, study, series], object) = match parsed {
        Ok(parsed) => parsed,
        Err(reason) => {
            outcome.fail(&header.sop_class_uid, &header.sop_instance_uid, reason);
            return;
        }
    };
    // The data set, not the file meta group, says what the instance is; a file whose meta group
    // disagrees with it (pydicom has one) is framed anew around its untouched data set.
    let (Some(class), Some(instance)) = (data_set_class, data_set_instance) else {
        outcome.fail(&header.sop_class_uid, &header.sop_instance_uid, DATA_SET_MISMATCH);
        return;
    };
    let bytes = if class != header.sop_class_uid || instance != header.sop_instance_uid {
        let data_set = &bytes[header.data_set_offset..];
        bytes::Bytes::from(part10::wrap(&class, &instance, &header.transfer_syntax_uid, "", data_set))
    } else {
        bytes
    };
    let Some(study) = study else {
        outcome.fail(&class, &instance, DATA_SET_MISMATCH);
        return;
    };
    // De-identifying, the instance is stored in the site's terms (api/stow_deid.rs), framed
    // anew; the response names it by what it sent (`sent`) and the pseudonyms of what is kept.
    let sent = instance.clone();
    let (bytes, study, series, instance) = match (access.privacy(), object) {
        (Some(privacy), Some(object)) => {
            let syntax = if inflated.is_some() { EXPLICIT_VR_LE } else { header.transfer_syntax_uid.as_str() };
            match in_site_terms(privacy, object, &class, syntax, site.id().as_str()).await {
                Ok(stored) => stored,
                Err(reason) => {
                    outcome.fail(&class, &sent, reason);
                    return;
                }
            }
        }
        _ => (bytes, study, series, instance),
    };
    let inflated = if access.privacy().is_some() { None } else { inflated };
    if target_study.is_some_and(|t| t != study) {
        // PS3.18 §10.5.1: every instance must belong to the study the URL names.
        outcome.fail(&class, &instance, DATA_SET_MISMATCH);
        return;
    }
    // Deflated Explicit VR Little Endian is a raw deflate stream of an Explicit VR Little Endian
    // data set, so inflating it is lossless and exact. It is inflated (within the limit, above)
    // before C-STORE because DCMTK-based PACS (Orthanc 1.10) accept a deflated presentation
    // context and then never answer the C-STORE; DCMTK's own storescu inflates too.
    let bytes = match inflated {
        Some(data_set) => bytes::Bytes::from(part10::wrap(&class, &instance, EXPLICIT_VR_LE, "", &data_set)),
        None => bytes,
    };
    if outcome.unavailable.is_some() {
        // The site failed this request already (unreachable, timed out, aborted, its circuit
        // open): the rest is not sent to wait out the same deadline once per instance.
        outcome.fail(&class, &instance, OUT_OF_RESOURCES);
        return;
    }
    match site.store(&bytes).await {
        Ok(result) => {
            let mut item = reference(&class, &sent);
            // De-identifying, the instance is retrieved (like everything) by its pseudonyms.
            let series = series.unwrap_or_default();
            let (study_shown, series_shown, instance_shown) = match access.privacy() {
                Some(privacy) => {
                    let keys = privacy.engine.keys();
                    let shown = [(Kind::Study, &study), (Kind::Series, &series), (Kind::Instance, &instance)]
                        .map(|(kind, uid)| (keys.uid(uid), kind, uid.clone()));
                    outcome.pseudonyms.extend(shown.iter().map(|(pseudonym, kind, uid)| {
                        (pseudonym.clone(), Original { kind: *kind, value: uid.clone(), issuer: None })
                    }));
                    let [a, b, c] = shown.map(|(pseudonym, _, _)| pseudonym);
                    (a, b, c)
                }
                None => (study.clone(), series.clone(), instance.clone()),
            };
            item.insert(
                "00081190".into(),
                json!({"vr": "UR", "Value": [format!("{}/studies/{study_shown}/series/{series_shown}/instances/{instance_shown}", access.base_url)]}),
            );
            if result.status.0 != 0 {
                item.insert("00081196".into(), json!({"vr": "US", "Value": [result.status.0]}));
            }
            outcome.stored.push(Json::Object(item));
            if !outcome.site_studies.contains(&study) {
                outcome.site_studies.push(study.clone());
            }
            if !outcome.studies.contains(&study_shown) {
                outcome.studies.push(study_shown);
            }
        }
        Err(Unanswered::Dimse(DimseError::NoPresentationContext { .. })) => {
            outcome.fail(&class, &instance, TRANSFER_SYNTAX_NOT_SUPPORTED)
        }
        Err(Unanswered::Dimse(DimseError::Failed { status, .. })) => {
            let reason = match status.0 {
                0xA700..=0xA7FF | 0xA900..=0xA9FF | 0xC000..=0xCFFF | 0x0110 | 0x0122 => status.0,
                _ => PROCESSING_FAILURE,
            };
            outcome.fail(&class, &instance, reason);
        }
        Err(e @ Unanswered::CircuitOpen { .. }) => {
            outcome.fail(&class, &instance, OUT_OF_RESOURCES);
            outcome.unavailable.get_or_insert(e);
        }
        Err(Unanswered::Dimse(e)) if e.is_unavailable() => {
            tracing::warn!(site = %site.config.id, error = %e, "C-STORE failed: the site is unavailable");
            outcome.fail(&class, &instance, OUT_OF_RESOURCES);
            outcome.unavailable.get_or_insert(Unanswered::Dimse(e));
        }
        Err(e) => {
            tracing::warn!(site = %site.config.id, error = %e, "C-STORE failed");
            outcome.fail(&class, &instance, PROCESSING_FAILURE);
        }
    }
}

/// An instance in the site's terms (api/stow_deid.rs), encoded in `syntax` and framed as Part
/// 10, with its study, series and SOP Instance UIDs as stored; a failure reason otherwise.
async fn in_site_terms(
    privacy: &crate::core::privacy::deidentify::Privacy,
    mut object: dicom_object::InMemDicomObject,
    class: &str,
    syntax: &str,
    storing_site: &str,
) -> Result<(bytes::Bytes, String, Option<String>, String), u16> {
    if let Err(e) = crate::core::privacy::stow_deid::into_site_terms(privacy, &mut object, storing_site).await {
        tracing::warn!(error = %e, "a stored instance could not be put into the site's terms");
        return Err(OUT_OF_RESOURCES);
    }
    let (class, syntax) = (class.to_owned(), syntax.to_owned());
    tokio::task::spawn_blocking(move || {
        use dicom_encoding::TransferSyntaxIndex;
        let ts =
            dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(&syntax).ok_or(TRANSFER_SYNTAX_NOT_SUPPORTED)?;
        let mut data_set = Vec::new();
        object.write_dataset_with_ts(&mut data_set, ts).map_err(|_| PROCESSING_FAILURE)?;
        let uid = |tag| text_of(&object, tag);
        let (study, series, instance) =
            (uid(tags::STUDY_INSTANCE_UID), uid(tags::SERIES_INSTANCE_UID), uid(tags::SOP_INSTANCE_UID));
        let (Some(study), Some(instance)) = (study, instance) else { return Err(DATA_SET_MISMATCH) };
        let bytes = bytes::Bytes::from(part10::wrap(&class, &instance, &syntax, "", &data_set));
        Ok((bytes, study, series, instance))
    })
    .await
    .unwrap_or(Err(PROCESSING_FAILURE))
}
