//! Every error a request can end in, and the one place where each becomes an HTTP status and a
//! plain-text message. Messages name parameters, sites and statuses, never patient data.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use pacs_adapter::DimseError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
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
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Pacs(DimseError::Timeout { .. }) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Pacs(DimseError::InvalidInstance(_)) => StatusCode::BAD_REQUEST,
            ApiError::Pacs(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(%status, error = %self, "request failed");
        }
        (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{self}\n")).into_response()
    }
}
