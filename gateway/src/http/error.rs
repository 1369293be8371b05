//! The one place where an error becomes an HTTP status and a plain-text message (with
//! Retry-After when the core knows how long to wait).

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_adapter::DimseError;

use crate::core::Error;

/// The status each error is answered with.
pub(crate) fn status(error: &Error) -> StatusCode {
    match error.origin() {
        Error::BadRequest(_) => StatusCode::BAD_REQUEST,
        Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        Error::Forbidden(_) => StatusCode::FORBIDDEN,
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
        Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        Error::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        Error::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
        Error::Pacs(DimseError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
        Error::Pacs(DimseError::InvalidInstance(_)) => StatusCode::BAD_REQUEST,
        Error::Pacs(_) => StatusCode::BAD_GATEWAY,
        Error::Web(e) if e.is_timeout() => StatusCode::GATEWAY_TIMEOUT,
        Error::Web(e) if e.retry_after().is_some() => StatusCode::SERVICE_UNAVAILABLE,
        Error::Web(_) => StatusCode::BAD_GATEWAY,
        Error::SitesDown { .. } | Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::ContentLimit(_) | Error::Partly(_) => StatusCode::BAD_GATEWAY,
        Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        Error::Shared(_) => unreachable!("origin() looks through relaying"),
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = status(&self);
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut response = plain(status, &self.to_string());
        if let Some(retry_after) = self.retry_after() {
            with_retry_after(&mut response, retry_after);
        }
        response
    }
}

/// 429: the caller asks too fast or too much at once; it may retry after `wait`.
pub(crate) fn too_many_requests(message: &str, wait: std::time::Duration) -> Response {
    let mut response = plain(StatusCode::TOO_MANY_REQUESTS, message);
    with_retry_after(&mut response, wait);
    response
}

/// 503: the gateway as a whole is at its bound (docs/RELIABILITY.md); retry in a second.
impl IntoResponse for crate::http::admission::Overload {
    fn into_response(self) -> Response {
        let mut response = plain(StatusCode::SERVICE_UNAVAILABLE, &format!("{self}; retry later"));
        with_retry_after(&mut response, std::time::Duration::from_secs(1));
        response
    }
}

/// A plain-text response: the message and a newline.
pub(crate) fn plain(status: StatusCode, message: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{message}\n")).into_response()
}

/// Adds Retry-After in whole seconds (at least one).
pub(crate) fn with_retry_after(response: &mut Response, wait: std::time::Duration) {
    response.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from(wait.as_secs().max(1)));
}

/// A Warning header value of RFC 7234 warn-code 299 (the gateway's own words, never a value of
/// the data).
pub(crate) fn warning(text: &str) -> Option<axum::http::HeaderValue> {
    axum::http::HeaderValue::from_str(&format!("299 dicomweb-gateway \"{}\"", text.replace('"', "'"))).ok()
}

/// Adds the Warnings of what a retrieval's response lacks: one naming how many instances were
/// withheld before it started, and why, and one for each site that said it sent only part of
/// what was asked.
pub(crate) fn with_withheld_warning(
    mut response: Response,
    withheld: usize,
    reasons: &[String],
    partly: &[String],
) -> Response {
    // What sites said they left out (crate::core::retrieve::Retrieval::partly), one each.
    for said in partly {
        if let Some(value) = warning(said) {
            response.headers_mut().append("warning", value);
        }
    }
    if withheld > 0 {
        let why = if reasons.is_empty() { String::new() } else { format!(" ({})", reasons.join("; ")) };
        let text = format!(
            "{withheld} instance(s) withheld: their pixels may show identity (burned-in annotation){why}; later \
             ones, if any, are withheld too"
        );
        if let Some(value) = warning(&text) {
            response.headers_mut().append("warning", value);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_warning_is_code_299_with_the_text_quoted() {
        let value = warning("site \"a\" did not answer").expect("header value");
        assert_eq!(value.to_str().expect("ascii"), "299 dicomweb-gateway \"site 'a' did not answer\"");
    }

    #[test]
    fn a_relayed_failure_answers_as_its_origin_with_its_wait() {
        let origin = Error::SitesDown { message: "every site is down".into(), retry_after: Duration::from_secs(7) };
        let relayed = Error::Shared(std::sync::Arc::new(Error::Shared(std::sync::Arc::new(origin))));
        let response = relayed.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
        let map =
            Error::Unavailable { message: "the pseudonym map is unreachable".into(), retry_after: Duration::ZERO };
        assert_eq!(map.into_response().headers()[header::RETRY_AFTER], "1", "at least a second");
    }

    #[test]
    fn a_busy_origin_is_a_503_with_its_wait_and_a_failing_one_a_502() {
        use crate::sites::dicomweb::WebError;
        let site = dicomweb_model::SiteId::new("edge-1").expect("id");
        let busy = WebError::Busy {
            site: site.clone(),
            operation: "WADO-RS",
            status: 429,
            retry_after: Duration::from_secs(3),
        };
        let response = Error::Web(busy).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        let failed = WebError::Status { site, operation: "WADO-RS", status: 500 };
        let response = Error::Web(failed).into_response();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
