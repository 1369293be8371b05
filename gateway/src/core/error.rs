//! What the core's operations end in when they fail: typed, free of HTTP (crate::http::error
//! is the one place each becomes a status), and shareable (a flight relays its failure to every
//! request reading it). Messages name parameters, sites and statuses, never patient data.

use std::sync::Arc;
use std::time::Duration;

use pacs_adapter::DimseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or asks for what cannot be answered as asked.
    #[error("{0}")]
    BadRequest(String),
    /// Not authenticated.
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// Nothing the client accepts can be produced.
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The request is well-formed but not what the resource takes (a federated search body
    /// that is JSON but not a query).
    #[error("{0}")]
    Unprocessable(String),
    /// Something the standard allows that the gateway cannot do (decode this pixel data).
    #[error("{0}")]
    NotImplemented(String),
    /// The PACS failed or could not be reached.
    #[error("{0}")]
    Pacs(#[from] DimseError),
    /// A DICOMweb site failed or could not be reached.
    #[error("{0}")]
    Web(#[from] crate::sites::dicomweb::WebError),
    /// A site sent a data set past `[dataset_limits]` (nesting, lengths, inflated or frame size).
    #[error("the site sent an instance the gateway refuses to process: {0}")]
    ContentLimit(#[from] crate::core::dataset_limits::ContentLimitError),
    /// A site's answer fell short in a way found only once the response had started: it said
    /// it sent only part of what was asked (a DICOMweb origin's 206 or Warning on a later
    /// request of a retrieval), or it sent instances not asked for without end.
    #[error("{0}")]
    Partly(String),
    /// A fault of the gateway itself (its state store, a task that failed).
    #[error("{0}")]
    Internal(String),
    /// Every site that could answer has its circuit open (docs/FEDERATION.md).
    #[error("{message}")]
    SitesDown { message: String, retry_after: Duration },
    /// Something the gateway depends on (the pseudonym map) cannot be reached now; nothing was
    /// sent, and the request may be retried.
    #[error("{message}")]
    Unavailable { message: String, retry_after: Duration },
    /// The failure of a retrieval shared by several requests, relayed to each.
    #[error(transparent)]
    Shared(Arc<Error>),
}

impl From<crate::sites::Unanswered> for Error {
    fn from(e: crate::sites::Unanswered) -> Self {
        match e {
            crate::sites::Unanswered::Dimse(e) => Error::Pacs(e),
            crate::sites::Unanswered::Web(e) if e.is_not_found() => Error::NotFound(e.to_string()),
            crate::sites::Unanswered::Web(e) if e.is_forbidden() => Error::Forbidden(e.to_string()),
            crate::sites::Unanswered::Web(e) => Error::Web(e),
            crate::sites::Unanswered::CircuitOpen { site, open } => {
                Error::SitesDown { message: format!("site {site}: {open}"), retry_after: open.retry_in }
            }
            e @ crate::sites::Unanswered::TooManyMatches { .. } => {
                Error::BadRequest(format!("{e}: narrow the search or the resource"))
            }
        }
    }
}

impl From<dicomweb_model::qido::QidoError> for Error {
    fn from(e: dicomweb_model::qido::QidoError) -> Self {
        Error::BadRequest(e.to_string())
    }
}

impl Error {
    /// A site failing (unreachable, timed out, failed, its circuit open), said for a Warning:
    /// which site, and why in a few words of the gateway's own (nothing the site sent as free
    /// text). `None` for any other error.
    pub(crate) fn as_site_failure(&self) -> Option<String> {
        match self.origin() {
            Error::Pacs(e) => {
                Some(format!("site {} did not answer: {}", e.site()?, crate::sites::health::fault_reason(e)))
            }
            Error::Web(e) => Some(format!("site {} did not answer: {}", e.site(), e.fault_reason())),
            Error::SitesDown { message, .. } => Some(message.clone()),
            _ => None,
        }
    }

    /// The error as the core first raised it (through any relaying).
    pub(crate) fn origin(&self) -> &Error {
        match self {
            Error::Shared(shared) => shared.origin(),
            other => other,
        }
    }

    /// How long the client should wait before retrying, when that is known.
    pub(crate) fn retry_after(&self) -> Option<Duration> {
        match self.origin() {
            Error::SitesDown { retry_after, .. } | Error::Unavailable { retry_after, .. } => Some(*retry_after),
            // A busy origin: the gateway is as busy, for as long as the origin said.
            Error::Web(e) => e.retry_after(),
            _ => None,
        }
    }
}
