//! The DIMSE message layer that dicom-ul lacks: command sets, status codes, and messages
//! reassembled from (and split into) presentation data values.

pub mod command;
pub mod message;
pub mod status;

pub use command::{Command, CommandField};
pub use message::{pdus as pdus_for, DataSetBuffer, Message, MessageAssembler};
pub use status::{FailureKind, Status, StatusClass};

/// A peer broke the DIMSE protocol (as opposed to reporting a failure status).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimseProtocolError {
    #[error("malformed command set: {0}")]
    MalformedCommand(&'static str),
    #[error("unknown command field {0:04X}H")]
    UnknownCommandField(u16),
    #[error("command set of {0} bytes exceeds the limit")]
    CommandTooLarge(usize),
    #[error("data set exceeds the limit of {0} bytes")]
    DataSetTooLarge(usize),
    #[error("data fragment received before any command")]
    DataBeforeCommand,
    #[error("command fragment received while a data set was expected")]
    CommandDuringDataSet,
    #[error("data fragment on presentation context {got} while the command used {expected}")]
    PresentationContextSwitch { expected: u8, got: u8 },
    #[error("presentation context {0} was not accepted on this association")]
    UnknownPresentationContext(u8),
    #[error("unexpected {0}")]
    UnexpectedMessage(String),
    /// A PDU that cannot be read (too long, or its items do not add up).
    #[error("{0}")]
    MalformedPdu(String),
}
