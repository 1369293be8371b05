//! QIDO-RS (PS3.18 §10.6): the six search resources. The query string is bounded and parsed
//! here, the answer kept in the search cache and written as DICOM JSON; the search itself is
//! the core's (crate::core::search::query).

use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use dicomweb_model::dicom_json::{write_object, JsonOptions};
use dicomweb_model::qido::{self, QidoQuery};
use dicomweb_model::{SeriesInstanceUid, StudyInstanceUid};
use pacs_adapter::QueryLevel;

use super::{accepts, parse_uid};
use crate::config::HttpLimitsConfig;
use crate::core::access::Access;
use crate::core::search::query::{self as search_query, Federation, Scope};
use crate::core::Error;
use crate::http::error::warning;
use crate::http::search_cache::SearchKey;
use crate::state::Gateway;

/// The UIDs a search path fixes (`{study}`, `{series}`), each checked.
#[derive(Debug, Default)]
pub(crate) struct ScopePath {
    study: Option<StudyInstanceUid>,
    series: Option<SeriesInstanceUid>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for ScopePath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Error> {
        let params = match Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state).await {
            Ok(Path(params)) => params,
            // A path without parameters (`/studies`, `/series`, `/instances`).
            Err(_) => return Ok(ScopePath::default()),
        };
        let study = params.get("study").map(|s| parse_uid("study", s)).transpose()?;
        let series = params.get("series").map(|s| parse_uid("series", s)).transpose()?;
        Ok(ScopePath { study, series })
    }
}

/// `/studies`.
pub(crate) async fn studies(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    search(&gw, &access, Scope { level: QueryLevel::Study, study: None, series: None }, q, &headers).await
}

/// `/series` and `/studies/{study}/series`.
pub(crate) async fn series(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    path: ScopePath,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    search(&gw, &access, Scope { level: QueryLevel::Series, study: path.study, series: None }, q, &headers).await
}

/// `/instances`, `/studies/{study}/instances` and `/studies/{study}/series/{series}/instances`.
pub(crate) async fn instances(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    path: ScopePath,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    search(&gw, &access, Scope { level: QueryLevel::Image, study: path.study, series: path.series }, q, &headers).await
}

/// A query string longer than `server.max_query_length` (414 URI Too Long) or with more than
/// `server.max_query_parameters` parameters (400), refused before anything parses it.
fn past_query_bounds(raw_query: Option<&str>, limits: &HttpLimitsConfig) -> Option<Response> {
    let raw_query = raw_query?;
    if raw_query.len() > limits.max_query_length {
        let message = format!("the query string is longer than the limit of {} bytes", limits.max_query_length);
        return Some(crate::http::error::plain(StatusCode::URI_TOO_LONG, &message));
    }
    let parameters = raw_query.split('&').filter(|p| !p.is_empty()).count();
    (parameters > limits.max_query_parameters).then(|| {
        let message = format!("the query has more than {} parameters", limits.max_query_parameters);
        Error::BadRequest(message).into_response()
    })
}

/// A search answered from the search cache, or by the sites (then kept when complete).
async fn search(
    gw: &Gateway,
    access: &Access,
    scope: Scope,
    raw_query: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, Error> {
    if let Some(refused) = past_query_bounds(raw_query.as_deref(), &gw.config.server.http_limits) {
        return Ok(refused);
    }
    accepts(headers, &["application/dicom+json", "application/json"])?;
    let pieces = search_query::in_site_terms(&gw.sites, access, scope).await?;
    // Confined to a study, the search is for the one piece that holds it, in its sites' terms
    // (what a store into the study is known by).
    let (level, study, series) = match pieces.as_slice() {
        [(_, scope)] => (scope.level, scope.study.clone(), scope.series.clone()),
        _ => (pieces.first().map_or(QueryLevel::Study, |(_, s)| s.level), None, None),
    };
    let resource = format!("{level:?} {study:?} {series:?}");
    let key = SearchKey::new(
        &access.cache_scope,
        access.site.as_deref(),
        &access.base_url,
        resource,
        raw_query.as_deref(),
        study.as_ref(),
    );
    if let Some(answer) = gw.search_cache.get(&key) {
        return Ok(answer);
    }
    let answer = search_sites(gw, access, pieces, raw_query).await?;
    Ok(gw.search_cache.keep(key, answer).await)
}

/// The search at the request's sites, written as DICOM JSON (204 when nothing matched).
async fn search_sites(
    gw: &Gateway,
    access: &Access,
    pieces: Vec<(Access, Scope)>,
    raw_query: Option<String>,
) -> Result<Response, Error> {
    let query = qido::parse(raw_query.as_deref().unwrap_or(""))?;
    let federation = Federation { sites: &gw.sites, whole: gw.sees_every_site(access), directory: &gw.directory };
    let answer = search_query::search(&federation, pieces, query.clone()).await?;
    let sites_missing = answer.sites_missing.as_deref().and_then(warning);
    if answer.results.is_empty() {
        return Ok(with_warning(StatusCode::NO_CONTENT.into_response(), &query, sites_missing));
    }
    let mut body = Vec::with_capacity(answer.results.len() * 1024);
    body.push(b'[');
    for (i, result) in answer.results.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        write_object(&mut body, result, &JsonOptions::default());
    }
    body.push(b']');
    let response = ([(header::CONTENT_TYPE, "application/dicom+json")], body).into_response();
    Ok(with_warning(response, &query, sites_missing))
}

fn with_warning(mut response: Response, query: &QidoQuery, sites_missing: Option<HeaderValue>) -> Response {
    if let Some(value) = sites_missing {
        response.headers_mut().append("warning", value);
        response.extensions_mut().insert(crate::http::search_cache::Partial);
    }
    // PS3.18 §8.3.4.4: say so when fuzzy matching was asked for and not performed.
    let fuzzy = "The fuzzymatching parameter is not supported. Only literal matching has been performed.";
    if let Some(value) = warning(fuzzy).filter(|_| query.fuzzy_matching) {
        response.headers_mut().append("warning", value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_past_their_bounds_are_refused_before_parsing() {
        let limits = HttpLimitsConfig {
            max_header_size: 8192,
            max_query_length: 40,
            max_query_parameters: 3,
            stow_max_parts: 1,
            stow_max_part_size: 1,
        };
        assert!(past_query_bounds(None, &limits).is_none());
        assert!(past_query_bounds(Some("PatientID=1&limit=2&offset=0"), &limits).is_none());
        let long = past_query_bounds(Some(&"PatientID=1".repeat(4)), &limits).expect("too long");
        assert_eq!(long.status(), StatusCode::URI_TOO_LONG);
        let many = past_query_bounds(Some("a=1&b=2&c=3&d=4"), &limits).expect("too many");
        assert_eq!(many.status(), StatusCode::BAD_REQUEST);
        assert!(past_query_bounds(Some("a=1&&&b=2&"), &limits).is_none(), "empty pieces are no parameters");
    }
}
