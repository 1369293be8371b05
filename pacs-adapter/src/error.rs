//! The typed errors of every DIMSE operation. Each names the site; none carries patient data:
//! a PACS's error comment is kept in a field for the caller to inspect, not in the message.

use std::time::Duration;

use dicomweb_model::SiteId;

use crate::dimse::{DimseProtocolError, Status};

/// What a deadline was guarding when it passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// TCP connect, TLS handshake and association negotiation.
    Connect,
    /// Waiting for a free association of the site's budget.
    AssociationBudget,
    /// Waiting for the next response from the PACS.
    Response,
    /// The whole operation.
    Operation,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Phase::Connect => "connecting",
            Phase::AssociationBudget => "waiting for a free association",
            Phase::Response => "waiting for a response",
            Phase::Operation => "completing the operation",
        })
    }
}

/// DIMSE operations, for error messages and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Echo,
    Find,
    Get,
    Move,
    Store,
}

impl std::fmt::Display for Operation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Operation::Echo => "C-ECHO",
            Operation::Find => "C-FIND",
            Operation::Get => "C-GET",
            Operation::Move => "C-MOVE",
            Operation::Store => "C-STORE",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    #[error("site {site}: cannot connect: {source}")]
    Connect { site: SiteId, source: std::io::Error },

    #[error("site {site}: association rejected: {reason}")]
    AssociationRejected { site: SiteId, reason: String },

    #[error("site {site}: TLS: {detail}")]
    Tls { site: SiteId, detail: String },

    #[error("site {site}: no presentation context accepted for {what}")]
    NoPresentationContext { site: SiteId, what: String },

    #[error("site {site}: timed out after {after:?} {phase}")]
    Timeout { site: SiteId, phase: Phase, after: Duration },

    #[error("site {site}: association aborted by the PACS")]
    Aborted { site: SiteId },

    #[error("site {site}: connection closed by the PACS")]
    ConnectionClosed { site: SiteId },

    #[error("site {site}: network error: {detail}")]
    Transport { site: SiteId, detail: String },

    #[error("site {site}: protocol error: {source}")]
    Protocol { site: SiteId, source: DimseProtocolError },

    /// The PACS answered with a failure status.
    #[error("site {site}: {operation} failed with status {status} ({class:?})", class = status.class())]
    Failed { site: SiteId, operation: Operation, status: Status, error_comment: Option<String> },

    /// The operation was cancelled (C-CANCEL acknowledged, or status FE00H).
    #[error("site {site}: {operation} cancelled")]
    Cancelled { site: SiteId, operation: Operation },

    /// A C-GET or C-MOVE finished but not every sub-operation succeeded: what was streamed is
    /// not the whole of what was asked for.
    #[error(
        "site {site}: {operation} incomplete: {completed} completed, {failed} failed, {warning} with warnings, status {status}"
    )]
    SubOperationsFailed {
        site: SiteId,
        operation: Operation,
        status: Status,
        completed: u32,
        failed: u32,
        warning: u32,
        error_comment: Option<String>,
    },

    /// An instance-level C-GET or C-MOVE finished as a success without every instance it named
    /// (a PACS that does not match a list of SOP Instance UIDs): what was streamed is not the
    /// whole of what was asked for.
    #[error("site {site}: {operation} sent {sent} of the {asked} instances it named")]
    NotAllSent { site: SiteId, operation: Operation, asked: usize, sent: usize },

    /// An instance given to C-STORE is not a readable Part-10 file.
    #[error("invalid instance: {0}")]
    InvalidInstance(String),

    /// C-MOVE of a site reached over TLS: the storage SCP speaks plain TCP only, so the
    /// instances would cross the network in clear.
    #[error("site {site}: C-MOVE refused: the site is reached over TLS and the storage SCP does not speak TLS; use c-get over TLS")]
    MoveWithoutTls { site: SiteId },

    /// The storage SCP that receives C-MOVE sub-operations is not running.
    #[error("the C-MOVE storage SCP is not running")]
    StoreScpUnavailable,
}

impl DimseError {
    /// The site the error is about, when there is one.
    pub fn site(&self) -> Option<&SiteId> {
        match self {
            DimseError::Connect { site, .. }
            | DimseError::AssociationRejected { site, .. }
            | DimseError::Tls { site, .. }
            | DimseError::NoPresentationContext { site, .. }
            | DimseError::Timeout { site, .. }
            | DimseError::Aborted { site }
            | DimseError::ConnectionClosed { site }
            | DimseError::Transport { site, .. }
            | DimseError::Protocol { site, .. }
            | DimseError::Failed { site, .. }
            | DimseError::Cancelled { site, .. }
            | DimseError::SubOperationsFailed { site, .. }
            | DimseError::NotAllSent { site, .. }
            | DimseError::MoveWithoutTls { site } => Some(site),
            DimseError::InvalidInstance(_) | DimseError::StoreScpUnavailable => None,
        }
    }

    /// True when the error says the site cannot be reached or does not answer in time, as
    /// opposed to the site answering with a failure.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            DimseError::Connect { .. }
                | DimseError::Timeout { .. }
                | DimseError::Aborted { .. }
                | DimseError::ConnectionClosed { .. }
                | DimseError::Transport { .. }
        )
    }

    /// A PDU that could not be read off an association (`crate::incoming`).
    pub(crate) fn from_read(site: &SiteId, error: crate::incoming::ReadError) -> Self {
        use crate::incoming::ReadError;
        use std::io::ErrorKind;
        let site = site.clone();
        match error {
            ReadError::Closed => DimseError::ConnectionClosed { site },
            ReadError::Io(e)
                if matches!(
                    e.kind(),
                    ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
                ) =>
            {
                DimseError::ConnectionClosed { site }
            }
            ReadError::Io(e) => DimseError::Transport { site, detail: e.to_string() },
            ReadError::Message(source) => DimseError::Protocol { site, source },
            malformed @ (ReadError::TooLarge { .. } | ReadError::MalformedPData(_) | ReadError::Malformed(_)) => {
                DimseError::Protocol { site, source: DimseProtocolError::MalformedPdu(malformed.to_string()) }
            }
        }
    }

    pub(crate) fn from_ul(site: &SiteId, error: dicom_ul::association::Error) -> Self {
        use dicom_ul::association::Error as Ul;
        let site = site.clone();
        match error {
            Ul::Connect { source, .. } | Ul::ToAddress { source, .. } => DimseError::Connect { site, source },
            Ul::Rejected { association_rj, .. } => {
                DimseError::AssociationRejected { site, reason: association_rj.source.to_string() }
            }
            Ul::NoAcceptedPresentationContexts { .. } => {
                DimseError::NoPresentationContext { site, what: "any proposed abstract syntax".into() }
            }
            Ul::Aborted { .. } => DimseError::Aborted { site },
            Ul::ConnectionClosed { .. } => DimseError::ConnectionClosed { site },
            Ul::TlsHandshake { source, .. } => DimseError::Tls { site, detail: source.to_string() },
            Ul::TlsConnection { source, .. } => DimseError::Tls { site, detail: source.to_string() },
            Ul::UnexpectedPdu { pdu, .. } if matches!(*pdu, dicom_ul::Pdu::AbortRQ { .. }) => {
                DimseError::Aborted { site }
            }
            other => {
                // Display of dicom-ul errors names the failing step; their sources hold the io
                // or PDU-level cause.
                let mut detail = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    detail.push_str(": ");
                    detail.push_str(&cause.to_string());
                    source = cause.source();
                }
                if detail.contains("Connection reset") || detail.contains("Broken pipe") {
                    DimseError::ConnectionClosed { site }
                } else {
                    DimseError::Transport { site, detail }
                }
            }
        }
    }
}
