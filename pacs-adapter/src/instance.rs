//! Instances received from a PACS (C-GET sub-operations, C-MOVE destination) and the
//! accounting of sub-operations that decides whether a retrieval was complete.

use bytes::Bytes;

use dicomweb_model::{SiteId, SopClassUid, SopInstanceUid, TransferSyntaxUid};

use crate::dimse::{Command, DimseProtocolError, Status, StatusClass};
use crate::error::{DimseError, Operation};
use crate::part10;

/// One retrieved instance as Part-10 bytes: a file meta group of ours, then the data set
/// exactly as the PACS sent it, in the transfer syntax it came in.
#[derive(Debug, Clone)]
pub struct RetrievedInstance {
    pub sop_class_uid: SopClassUid,
    pub sop_instance_uid: SopInstanceUid,
    pub transfer_syntax_uid: TransferSyntaxUid,
    pub part10: Bytes,
    data_set_offset: usize,
}

impl RetrievedInstance {
    /// An instance from Part-10 bytes (its file meta group says what it is).
    pub fn from_part10(part10: Bytes) -> Result<Self, crate::DimseError> {
        let header = part10::parse_header(&part10)?;
        let uid = |value: &str, what: &str| {
            dicomweb_model::Uid::from_peer(value)
                .map_err(|_| crate::DimseError::InvalidInstance(format!("file meta group without a valid {what}")))
        };
        Ok(RetrievedInstance {
            sop_class_uid: SopClassUid::from(uid(&header.sop_class_uid, "SOP Class UID")?),
            sop_instance_uid: SopInstanceUid::from(uid(&header.sop_instance_uid, "SOP Instance UID")?),
            transfer_syntax_uid: TransferSyntaxUid::from(uid(&header.transfer_syntax_uid, "Transfer Syntax UID")?),
            data_set_offset: header.data_set_offset,
            part10,
        })
    }

    /// An instance as an archive served it over DICOMweb: Part-10 bytes, or a data set that
    /// came without that framing ([`part10::reframe`]).
    pub fn from_served(bytes: Bytes) -> Result<Self, crate::DimseError> {
        if bytes.get(128..132) == Some(&b"DICM"[..]) {
            return Self::from_part10(bytes);
        }
        match part10::reframe(&bytes) {
            Some(part10) => Self::from_part10(Bytes::from(part10)),
            None => Self::from_part10(bytes),
        }
    }

    pub(crate) fn from_c_store(
        request: &Command,
        transfer_syntax_uid: &str,
        source_ae_title: &str,
        data_set: &[u8],
    ) -> Result<Self, DimseProtocolError> {
        let uid = |value: &Option<String>, what: &'static str| {
            value
                .as_deref()
                .and_then(|v| dicomweb_model::Uid::from_peer(v).ok())
                .ok_or(DimseProtocolError::MalformedCommand(what))
        };
        let sop_class_uid =
            SopClassUid::from(uid(&request.affected_sop_class_uid, "C-STORE without a valid Affected SOP Class UID")?);
        let sop_instance_uid = SopInstanceUid::from(uid(
            &request.affected_sop_instance_uid,
            "C-STORE without a valid Affected SOP Instance UID",
        )?);
        let transfer_syntax_uid =
            dicomweb_model::Uid::from_peer(transfer_syntax_uid).map(TransferSyntaxUid::from).map_err(|_| {
                DimseProtocolError::MalformedCommand("presentation context with an invalid transfer syntax")
            })?;
        let bytes = part10::wrap(
            sop_class_uid.as_str(),
            sop_instance_uid.as_str(),
            transfer_syntax_uid.as_str(),
            source_ae_title,
            data_set,
        );
        let data_set_offset = bytes.len() - data_set.len();
        Ok(RetrievedInstance {
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            part10: Bytes::from(bytes),
            data_set_offset,
        })
    }

    /// The data set as the PACS sent it, without our file meta group.
    pub fn data_set(&self) -> &[u8] {
        &self.part10[self.data_set_offset..]
    }
}

/// Counts of a C-GET or C-MOVE's sub-operations as the PACS reports them, checked against
/// the instances that actually arrived.
#[derive(Debug, Default)]
pub(crate) struct SubOperations {
    pub received: u32,
    completed: Option<u16>,
    failed: Option<u16>,
    warning: Option<u16>,
    pub remaining: Option<u16>,
}

impl SubOperations {
    pub(crate) fn update(&mut self, response: &Command) {
        self.remaining = response.remaining.or(self.remaining);
        self.completed = response.completed.or(self.completed);
        self.failed = response.failed.or(self.failed);
        self.warning = response.warning.or(self.warning);
    }

    /// Decides the outcome from the final response: `Ok` only when the PACS reports no failed
    /// sub-operation and every completed one reached us.
    pub(crate) fn outcome(
        &self,
        site: &SiteId,
        operation: Operation,
        final_response: &Command,
    ) -> Result<(), DimseError> {
        let status = Status(final_response.status.unwrap_or(0xC000));
        let completed = u32::from(self.completed.unwrap_or(0));
        let failed = u32::from(self.failed.unwrap_or(0));
        let warning = u32::from(self.warning.unwrap_or(0));
        let incomplete = |status| DimseError::SubOperationsFailed {
            site: site.clone(),
            operation,
            status,
            completed,
            failed,
            warning,
            error_comment: final_response.error_comment.clone(),
        };
        match status.class() {
            StatusClass::Cancel => Err(DimseError::Cancelled { site: site.clone(), operation }),
            StatusClass::Success | StatusClass::Warning => {
                let reported = completed + warning;
                if failed > 0 || (self.completed.is_some() && reported != self.received) {
                    Err(incomplete(status))
                } else {
                    Ok(())
                }
            }
            StatusClass::Failure(_) if completed + failed + warning > 0 => Err(incomplete(status)),
            StatusClass::Failure(_) | StatusClass::Pending => Err(DimseError::Failed {
                site: site.clone(),
                operation,
                status,
                error_comment: final_response.error_comment.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dimse::CommandField;

    fn response(status: u16, completed: Option<u16>, failed: Option<u16>, warning: Option<u16>) -> Command {
        let mut command = Command::c_cancel_rq(1);
        command.field = CommandField::CGetRsp;
        command.status = Some(status);
        command.completed = completed;
        command.failed = failed;
        command.warning = warning;
        command
    }

    #[test]
    fn outcome_is_complete_only_when_everything_arrived() {
        let site = SiteId::new("s").expect("id");
        let cases = [
            // (received, final status, completed, failed, warning, ok?)
            (3, 0x0000, Some(3), Some(0), Some(0), true),
            (3, 0x0000, None, None, None, true),
            (2, 0x0000, Some(3), Some(0), Some(0), false),
            (2, 0xB000, Some(1), Some(0), Some(1), true),
            (2, 0xB000, Some(2), Some(1), Some(0), false),
            (0, 0xA702, Some(0), Some(3), Some(0), false),
            (0, 0xC000, None, None, None, false),
            (1, 0xFE00, Some(1), None, None, false),
        ];
        for (received, status, completed, failed, warning, ok) in cases {
            let final_response = response(status, completed, failed, warning);
            let mut ops = SubOperations { received, ..Default::default() };
            ops.update(&final_response);
            let outcome = ops.outcome(&site, Operation::Get, &final_response);
            assert_eq!(outcome.is_ok(), ok, "{received} {status:04X} {completed:?} {failed:?}: {outcome:?}");
        }
    }
}
