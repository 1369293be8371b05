//! Instances received from a PACS (C-GET sub-operations, C-MOVE destination) and the
//! accounting of sub-operations that decides whether a retrieval was complete.

use bytes::Bytes;

use dicomweb_model::{SiteId, SopClassUid, SopInstanceUid, TransferSyntaxUid};

use crate::dimse::{Command, DataSetBuffer, DimseProtocolError, Status, StatusClass};
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
    /// The buffer `part10` lies in, from its first byte, when room was kept in front of it
    /// (an instance received over DIMSE): [`with_front`](Self::with_front) writes there.
    buffer: Option<Bytes>,
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
            buffer: None,
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
        data_set: DataSetBuffer,
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
        let meta = part10::file_meta(
            sop_class_uid.as_str(),
            sop_instance_uid.as_str(),
            transfer_syntax_uid.as_str(),
            source_ae_title,
            0,
        );
        let (buffer, from) = data_set.prepend(&meta);
        Ok(RetrievedInstance {
            sop_class_uid,
            sop_instance_uid,
            transfer_syntax_uid,
            data_set_offset: meta.len(),
            part10: buffer.slice(from..),
            buffer: Some(buffer),
        })
    }

    /// The data set as the PACS sent it, without our file meta group.
    pub fn data_set(&self) -> &[u8] {
        &self.part10[self.data_set_offset..]
    }

    /// `front` followed by this instance's data set from `kept_from` (an offset into
    /// [`data_set`](Self::data_set)) on: a de-identified instance whose pixel data is kept.
    /// When nothing else holds the instance's buffer and the room in front suffices, `front` is
    /// written there and the kept bytes are not copied; what it replaces (a de-identified
    /// instance's identifying elements) is zeroed, not left in memory beside it.
    pub fn with_front(self, front: &[u8], kept_from: usize) -> Bytes {
        let kept_at = self.data_set_offset + kept_from;
        let RetrievedInstance { part10, buffer, .. } = self;
        if kept_at > part10.len() {
            return copied(front, &[]);
        }
        let Some(buffer) = buffer else { return copied(front, &part10[kept_at..]) };
        // Where the kept bytes are in the buffer (`part10` is a view of it).
        let kept_in_buffer = part10.as_ptr() as usize - buffer.as_ptr() as usize + kept_at;
        drop(part10);
        let Some(from) = kept_in_buffer.checked_sub(front.len()) else {
            return copied(front, &buffer[kept_in_buffer..]);
        };
        match buffer.try_into_mut() {
            Ok(mut only_ours) => {
                only_ours[..from].fill(0);
                only_ours[from..kept_in_buffer].copy_from_slice(front);
                only_ours.freeze().slice(from..)
            }
            Err(shared) => copied(front, &shared[kept_in_buffer..]),
        }
    }
}

fn copied(front: &[u8], kept: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(front.len() + kept.len());
    out.extend_from_slice(front);
    out.extend_from_slice(kept);
    Bytes::from(out)
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

    fn received(data_set: &[u8]) -> RetrievedInstance {
        let mut buffer = DataSetBuffer::with_room(crate::dimse::message::ROOM_IN_FRONT, data_set.len());
        buffer.extend(data_set);
        let command = Command::c_store_rq(1, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4");
        RetrievedInstance::from_c_store(&command, "1.2.840.10008.1.2.1", "PACS", buffer).expect("instance")
    }

    #[test]
    fn a_new_front_is_written_before_the_kept_bytes_where_they_lie() {
        let data_set: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
        let want = |front: &[u8]| [front, &data_set[5_000..]].concat();
        let instance = received(&data_set);
        assert_eq!(instance.data_set(), &data_set[..]);
        let kept_at = instance.data_set()[5_000..].as_ptr();
        let front = vec![9u8; 6_000];
        let out = instance.with_front(&front, 5_000);
        assert_eq!(out, want(&front));
        assert_eq!(out[6_000..].as_ptr(), kept_at, "not copied");

        // Held elsewhere too, a front larger than the room, no room at all: copied, the same.
        let shared = received(&data_set);
        let _held = shared.clone();
        assert_eq!(shared.with_front(&front, 5_000), want(&front));
        let larger = vec![9u8; 5_000 + crate::dimse::message::ROOM_IN_FRONT + 1024];
        assert_eq!(received(&data_set).with_front(&larger, 5_000), want(&larger));
        let framed = received(&data_set).part10;
        let from_file = RetrievedInstance::from_part10(framed).expect("part 10");
        assert_eq!(from_file.with_front(&front, 5_000), want(&front));
    }

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
