//! DIMSE status codes (PS3.7 Annex C) classified into what a caller acts on.

use std::fmt;

/// The class of a DIMSE status, with failures split by the reason a caller reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Success,
    Pending,
    Cancel,
    Warning,
    Failure(FailureKind),
}

/// Why an operation failed, as PS3.4 and PS3.7 group the failure codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A7xx: the peer is out of resources (e.g. cannot calculate matches, cannot perform
    /// sub-operations).
    OutOfResources,
    /// A9xx: the identifier or data set does not match the SOP class.
    DataSetMismatch,
    /// Cxxx: the peer is unable to process the request.
    UnableToProcess,
    /// 0122 / 0118: SOP class not supported.
    SopClassNotSupported,
    /// 0124: not authorized.
    NotAuthorized,
    /// A801: move destination unknown.
    MoveDestinationUnknown,
    /// 0111: duplicate SOP instance.
    DuplicateInstance,
    /// 0112 / 0117: no such or invalid SOP instance.
    NoSuchInstance,
    /// 0211 / 0212 / 0210: the peer did not understand the request.
    UnrecognizedOperation,
    /// 0213: the peer's resources are limited.
    ResourceLimitation,
    /// 0110 and anything else not listed.
    ProcessingFailure,
}

/// A status code as received, with its classification.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub const SUCCESS: Status = Status(0x0000);
    pub const PENDING: Status = Status(0xFF00);
    pub const CANCEL: Status = Status(0xFE00);
    /// C-STORE failure we answer when we cannot take an instance (PS3.4 C.4.2.1.4:
    /// "Refused: Out of Resources").
    pub const STORE_OUT_OF_RESOURCES: Status = Status(0xA700);
    /// C-STORE refused because the sender may not send it (PS3.7 Annex C, "Refused: Not
    /// Authorized"): no C-MOVE in flight of the sender's site claims the instance.
    pub const STORE_NOT_AUTHORIZED: Status = Status(0x0124);
    /// C-STORE "Error: Cannot understand" (Cxxx).
    pub const STORE_CANNOT_UNDERSTAND: Status = Status(0xC000);

    pub fn class(self) -> StatusClass {
        match self.0 {
            0x0000 => StatusClass::Success,
            0xFF00 | 0xFF01 => StatusClass::Pending,
            0xFE00 => StatusClass::Cancel,
            0x0001 | 0x0107 | 0x0116 | 0xB000..=0xBFFF => StatusClass::Warning,
            0xA700..=0xA7FF => StatusClass::Failure(FailureKind::OutOfResources),
            0xA801 => StatusClass::Failure(FailureKind::MoveDestinationUnknown),
            0xA900..=0xA9FF => StatusClass::Failure(FailureKind::DataSetMismatch),
            0xC000..=0xCFFF => StatusClass::Failure(FailureKind::UnableToProcess),
            0x0118 | 0x0122 => StatusClass::Failure(FailureKind::SopClassNotSupported),
            0x0124 => StatusClass::Failure(FailureKind::NotAuthorized),
            0x0111 => StatusClass::Failure(FailureKind::DuplicateInstance),
            0x0112 | 0x0117 => StatusClass::Failure(FailureKind::NoSuchInstance),
            0x0210..=0x0212 => StatusClass::Failure(FailureKind::UnrecognizedOperation),
            0x0213 => StatusClass::Failure(FailureKind::ResourceLimitation),
            _ => StatusClass::Failure(FailureKind::ProcessingFailure),
        }
    }

    pub fn is_pending(self) -> bool {
        self.class() == StatusClass::Pending
    }
}

impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Status({:04X} {:?})", self.0, self.class())
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}H", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_standard_codes() {
        use FailureKind::*;
        let cases = [
            (0x0000, StatusClass::Success),
            (0xFF00, StatusClass::Pending),
            (0xFF01, StatusClass::Pending),
            (0xFE00, StatusClass::Cancel),
            (0xB000, StatusClass::Warning),
            (0xB007, StatusClass::Warning),
            (0x0107, StatusClass::Warning),
            (0xA700, StatusClass::Failure(OutOfResources)),
            (0xA702, StatusClass::Failure(OutOfResources)),
            (0xA801, StatusClass::Failure(MoveDestinationUnknown)),
            (0xA900, StatusClass::Failure(DataSetMismatch)),
            (0xC001, StatusClass::Failure(UnableToProcess)),
            (0x0122, StatusClass::Failure(SopClassNotSupported)),
            (0x0124, StatusClass::Failure(NotAuthorized)),
            (0x0111, StatusClass::Failure(DuplicateInstance)),
            (0x0211, StatusClass::Failure(UnrecognizedOperation)),
            (0x0213, StatusClass::Failure(ResourceLimitation)),
            (0x0110, StatusClass::Failure(ProcessingFailure)),
            (0x1234, StatusClass::Failure(ProcessingFailure)),
        ];
        for (code, class) in cases {
            assert_eq!(Status(code).class(), class, "{code:04X}");
        }
    }
}
