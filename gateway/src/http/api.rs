//! The DICOMweb resources: thin handlers that parse, call the site and encode.

pub(crate) mod frames;
pub(crate) mod from_origin;
pub(crate) mod instance_bulkdata;
pub(crate) mod metadata_xml;
pub(crate) mod qido;
pub(crate) mod rendered;
pub(crate) mod stow;
pub(crate) mod wado;

use axum::http::{header, HeaderMap};

pub(crate) use crate::core::attributes::text_of;
use crate::core::Error;

/// The study, series or instance a WADO-RS path names (`{study}`, `{series}`, `{instance}`
/// path parameters), each UID checked; one extractor for every level.
#[derive(Debug)]
pub(crate) struct TargetPath(pub pacs_adapter::RetrieveTarget);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for TargetPath {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Error> {
        let axum::extract::Path(params) =
            axum::extract::Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| Error::BadRequest(e.to_string()))?;
        let study = params.get("study").ok_or_else(|| Error::BadRequest("no study in the path".into()))?;
        wado::target(study, params.get("series").map(String::as_str), params.get("instance").map(String::as_str))
            .map(TargetPath)
    }
}

/// The entity tag of a response made from a retrieval whose content was known before it
/// started (`retrieval`, from the cache), in one `representation` (media type, transfer
/// syntax, URL prefix): what a client sends back in `If-None-Match`.
pub(crate) fn entity_tag(retrieval: Option<&str>, representation: &str) -> Option<String> {
    use sha2::Digest;
    let retrieval = retrieval?;
    let digest = sha2::Sha256::digest(format!("{retrieval}\n{representation}").as_bytes());
    Some(format!("\"{}\"", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>()))
}

/// 304 Not Modified when the client's `If-None-Match` names `tag` (or `*`).
pub(crate) fn not_modified(headers: &HeaderMap, tag: Option<&str>) -> Option<axum::response::Response> {
    use axum::response::IntoResponse;
    let tag = tag?;
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| value.split(',').map(|t| t.trim().trim_start_matches("W/")).any(|t| t == "*" || t == tag));
    matches.then(|| {
        let mut response = axum::http::StatusCode::NOT_MODIFIED.into_response();
        with_validators(&mut response, Some(tag));
        response
    })
}

/// `Cache-Control: private` (responses are per caller and project) and the entity tag, if any.
pub(crate) fn with_validators(response: &mut axum::response::Response, tag: Option<&str>) {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("private"));
    if let Some(value) = tag.and_then(|t| axum::http::HeaderValue::from_str(t).ok()) {
        headers.insert(header::ETAG, value);
    }
}

/// A UID from the URL path, checked before it goes anywhere.
pub(crate) fn parse_uid<U: From<dicomweb_model::Uid>>(what: &str, raw: &str) -> Result<U, Error> {
    dicomweb_model::Uid::new(raw).map(U::from).map_err(|e| Error::BadRequest(format!("{what} UID in the path: {e}")))
}

/// One media range of an Accept header: the type and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaRange {
    pub media_type: String,
    pub parameters: Vec<(String, String)>,
}

impl MediaRange {
    pub(crate) fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The client's preference for this range, `q` (RFC 9110 §12.4.2): 1 when not given, 0
    /// when unreadable (a range with q=0 is one the client refuses).
    fn quality(&self) -> f32 {
        match self.parameter("q") {
            None => 1.0,
            Some(q) => q.trim().parse::<f32>().ok().filter(|q| (0.0..=1.0).contains(q)).unwrap_or(0.0),
        }
    }
}

/// The media ranges of the Accept headers, most preferred first (by `q`; in the order given
/// among equals); ranges with q=0 left out; empty when there is none.
pub fn accept_ranges(headers: &HeaderMap) -> Vec<MediaRange> {
    let mut ranges = Vec::new();
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else { continue };
        for range in split_outside_quotes(value, ',') {
            let mut parts = split_outside_quotes(&range, ';').into_iter();
            let media_type = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            if media_type.is_empty() {
                continue;
            }
            let parameters = parts
                .filter_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    Some((name.trim().to_ascii_lowercase(), value.trim().trim_matches('"').to_owned()))
                })
                .collect();
            ranges.push(MediaRange { media_type, parameters });
        }
    }
    let given = !ranges.is_empty();
    ranges.retain(|r| r.quality() > 0.0);
    if given && ranges.is_empty() {
        // Every range refused: unlike no Accept header at all, nothing is acceptable.
        ranges.push(MediaRange { media_type: "none/none".into(), parameters: Vec::new() });
    }
    // A stable sort: equals keep the client's order.
    ranges.sort_by(|a, b| b.quality().total_cmp(&a.quality()));
    ranges
}

fn split_outside_quotes(text: &str, separator: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if c == separator && !quoted {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

/// Checks that the client accepts one of `offered` (or anything); 406 otherwise.
pub fn accepts(headers: &HeaderMap, offered: &[&str]) -> Result<(), Error> {
    let ranges = accept_ranges(headers);
    if ranges.is_empty()
        || ranges.iter().any(|r| {
            r.media_type == "*/*"
                || offered
                    .iter()
                    .any(|o| *o == r.media_type || r.media_type == format!("{}/*", o.split('/').next().unwrap_or("")))
        })
    {
        Ok(())
    } else {
        Err(Error::NotAcceptable(format!("this resource is available as {}", offered.join(" or "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_accept_with_quoted_parameters() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "multipart/related; type=\"application/dicom\"; transfer-syntax=*, application/dicom+json;q=0.5"
                .parse()
                .expect("header"),
        );
        let ranges = accept_ranges(&headers);
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0].media_type, "multipart/related");
        assert_eq!(ranges[0].parameter("type"), Some("application/dicom"));
        assert_eq!(ranges[0].parameter("transfer-syntax"), Some("*"));
        assert_eq!(ranges[1].media_type, "application/dicom+json");
        assert!(accepts(&headers, &["application/dicom+json"]).is_ok());
        assert!(accepts(&headers, &["image/png"]).is_err());
    }

    #[test]
    fn ranges_come_most_preferred_first_and_refused_ones_never() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90; q=0.5, \
             application/json;q=0, multipart/related; type=\"application/dicom\", */*;q=0.1"
                .parse()
                .expect("header"),
        );
        let ranges = accept_ranges(&headers);
        let shown: Vec<_> = ranges.iter().map(|r| (r.media_type.as_str(), r.parameter("transfer-syntax"))).collect();
        assert_eq!(
            shown,
            [("multipart/related", None), ("multipart/related", Some("1.2.840.10008.1.2.4.90")), ("*/*", None)]
        );
        assert_eq!(ranges[0].parameter("type"), Some("application/dicom"), "unquoted type");
        headers.insert(header::ACCEPT, "application/dicom+json;q=0".parse().expect("header"));
        assert!(accepts(&headers, &["application/dicom+json"]).is_err(), "q=0 refuses");
    }
}
