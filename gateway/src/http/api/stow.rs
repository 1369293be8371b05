//! STOW-RS (PS3.18 §10.5) at the edge: `multipart/related; type="application/dicom"` bodies
//! read part by part as they arrive (one instance in memory at a time), each instance handed to
//! the core (crate::core::store: checked and C-STOREd to the first site of the request that
//! takes instances, `store = true`), and the Store Instances Response Module (PS3.18 Annex I) as
//! DICOM JSON.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dicomweb_model::StudyInstanceUid;
use serde_json::{json, Value as Json};

use super::{accepts, parse_uid};
use crate::core::access::Access;
use crate::core::store;
use crate::core::Error;
use crate::http::error::warning;
use crate::http::multipart::{boundary_of, MultipartError, MultipartReader};
use crate::state::Gateway;

/// Largest single instance accepted in a request.
const MAX_INSTANCE: usize = 2 * 1024 * 1024 * 1024 - 1;

pub(crate) async fn store_studies(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    store_instances(gw, access, None, headers, body).await
}

pub(crate) async fn store_study(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let study = parse_uid("study", &study)?;
    store_instances(gw, access, Some(study), headers, body).await
}

fn reference(class: &str, instance: &str) -> serde_json::Map<String, Json> {
    let mut item = serde_json::Map::new();
    item.insert("00081150".into(), json!({"vr": "UI", "Value": [class]}));
    item.insert("00081155".into(), json!({"vr": "UI", "Value": [instance]}));
    item
}

/// A Referenced SOP Sequence item of an instance stored: where it is retrieved, and the
/// PACS's warning status.
fn stored_item(stored: &store::Stored, base_url: &str) -> Json {
    let mut item = reference(&stored.class, &stored.sent);
    let series = stored.series.as_ref().map_or("", |s| s.as_str());
    let url = format!("{base_url}/studies/{}/series/{series}/instances/{}", stored.study, stored.instance);
    item.insert("00081190".into(), json!({"vr": "UR", "Value": [url]}));
    if let Some(warning) = stored.warning {
        item.insert("00081196".into(), json!({"vr": "US", "Value": [warning]}));
    }
    Json::Object(item)
}

/// A Failed SOP Sequence item: the instance, if it was known, and the reason.
fn refused_item(refused: &store::Refused) -> Json {
    let mut item =
        if refused.instance.is_empty() { serde_json::Map::new() } else { reference(&refused.class, &refused.instance) };
    item.insert("00081197".into(), json!({"vr": "US", "Value": [refused.reason]}));
    Json::Object(item)
}

async fn store_instances(
    gw: Arc<Gateway>,
    access: Access,
    target_study: Option<StudyInstanceUid>,
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
    let site = store::storing_site(&gw.sites, &access)?;
    let limit = gw.config.server.stow_limit;
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(Error::PayloadTooLarge(format!("the request body is larger than the limit of {limit} bytes")));
    }
    // The body's bytes count against `server.stow_memory` while it is processed (a body without
    // Content-Length at the limit); none left within `server.queue_wait`: 503.
    let _reserved = match gw.admission.reserve_stow(declared.unwrap_or(limit).min(limit)).await {
        Ok(reserved) => reserved,
        Err(overload) => {
            crate::http::admission::discard(body).await;
            return Ok(overload.into_response());
        }
    };

    let mut storing = store::Storing::start(&access, site, gw.config.dataset_limits, target_study).await?;
    let edge = gw.config.server.http_limits;
    let max_part = MAX_INSTANCE.min(limit.min(edge.stow_max_part_size) as usize);
    let mut reader =
        MultipartReader::new(body.into_data_stream(), &boundary, max_part, limit).with_max_parts(edge.stow_max_parts);
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
            storing.refuse_part();
            continue;
        }
        storing.instance(part.body).await;
    }
    let mut outcome = storing.finish(&gw.cache).await?;
    // The search answers that may show these studies are stale too.
    if !outcome.site_studies.is_empty() {
        gw.search_cache.forget_studies(&outcome.site_studies);
        if let Some(datasets) = &gw.datasets {
            datasets.stored(site.id(), &outcome.site_studies);
        }
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
        if outcome.refused.is_empty() {
            return Err(Error::BadRequest("the request holds no instance".into()));
        }
    }
    let status = match (outcome.stored.is_empty(), outcome.refused.is_empty() && broken.is_none()) {
        (false, true) => StatusCode::OK,
        (false, false) => StatusCode::ACCEPTED,
        (true, _) => StatusCode::CONFLICT,
    };
    let mut module = serde_json::Map::new();
    if let [study] = outcome.studies.as_slice() {
        module
            .insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{}/studies/{study}", access.base_url)]}));
    }
    if !outcome.refused.is_empty() {
        let refused: Vec<Json> = outcome.refused.iter().map(refused_item).collect();
        module.insert("00081198".into(), json!({"vr": "SQ", "Value": refused}));
    }
    if !outcome.stored.is_empty() {
        let stored: Vec<Json> = outcome.stored.iter().map(|s| stored_item(s, &access.base_url)).collect();
        module.insert("00081199".into(), json!({"vr": "SQ", "Value": stored}));
    }
    let mut response =
        (status, [(header::CONTENT_TYPE, "application/dicom+json")], Json::Object(module).to_string()).into_response();
    if let Some(value) = broken.and_then(|e| warning(&format!("{e}; the parts before it were processed"))) {
        response.headers_mut().append("warning", value);
    }
    Ok(response)
}
