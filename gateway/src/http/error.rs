//! Every error a request can end in, and the one place where each becomes an HTTP status and a
//! plain-text message. Messages name parameters, sites and statuses, never patient data.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_adapter::DimseError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// Not authenticated (the authorization gate adds `WWW-Authenticate`).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Something the standard allows that the gateway cannot do (decode this pixel data).
    #[error("{0}")]
    NotImplemented(String),
    /// The PACS failed or could not be reached.
    #[error("{0}")]
    Pacs(#[from] DimseError),
    /// A site sent a data set past `[dataset_limits]` (nesting, lengths, inflated or frame size).
    #[error("the site sent an instance the gateway refuses to process: {0}")]
    ContentLimit(#[from] crate::core::dataset_limits::ContentLimitError),
    /// A fault of the gateway itself (its state store, a task that failed).
    #[error("{0}")]
    Internal(String),
    /// Every site that could answer has its circuit open (docs/FEDERATION.md).
    #[error("{message}")]
    SitesDown { message: String, retry_after: std::time::Duration },
    /// An error of a retrieval shared by several requests, relayed to each.
    #[error("{message}")]
    Relayed { status: StatusCode, message: String, retry_after: Option<std::time::Duration> },
}

impl From<crate::sites::Unanswered> for ApiError {
    fn from(e: crate::sites::Unanswered) -> Self {
        match e {
            crate::sites::Unanswered::Dimse(e) => ApiError::Pacs(e),
            crate::sites::Unanswered::CircuitOpen { site, open } => {
                ApiError::SitesDown { message: format!("site {site}: {open}"), retry_after: open.retry_in }
            }
            e @ crate::sites::Unanswered::TooManyMatches { .. } => {
                ApiError::BadRequest(format!("{e}: narrow the search or the resource"))
            }
        }
    }
}

impl From<dicomweb_model::qido::QidoError> for ApiError {
    fn from(e: dicomweb_model::qido::QidoError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Pacs(DimseError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Pacs(DimseError::InvalidInstance(_)) => StatusCode::BAD_REQUEST,
            ApiError::Pacs(_) => StatusCode::BAD_GATEWAY,
            ApiError::SitesDown { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::ContentLimit(_) => StatusCode::BAD_GATEWAY,
            ApiError::Relayed { status, .. } => *status,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let retry_after = match &self {
            ApiError::SitesDown { retry_after, .. } => Some(retry_after.as_secs().max(1).to_string()),
            ApiError::Relayed { retry_after: Some(retry_after), .. } => Some(retry_after.as_secs().max(1).to_string()),
            _ => None,
        };
        let mut response =
            (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{self}\n")).into_response();
        if let Some(value) = retry_after.and_then(|v| axum::http::HeaderValue::from_str(&v).ok()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        response
    }
}
