//! C-STORE (PS3.4 §B.2) of a Part-10 instance, sent untouched on a presentation context of its
//! own SOP class and transfer syntax.

use std::time::Instant;

use crate::dimse::{Command, CommandField, Status, StatusClass};
use crate::error::{DimseError, Operation};
use crate::operation::{next_message_id, start, status_of, unexpected, Deadlines};
use crate::part10;
use crate::pool::AssociationPool;
use crate::syntax::ContextPlan;

/// The PACS's answer to one C-STORE that it did not refuse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOutcome {
    pub status: Status,
    /// Present when the PACS stored the instance with a warning (e.g. coerced attributes).
    pub warning_comment: Option<String>,
}

/// Stores one Part-10 instance. A refusal or failure is a `DimseError::Failed` carrying the
/// PACS's status; a PACS that does not accept the instance's transfer syntax gives
/// `NoPresentationContext` (this crate never transcodes).
pub async fn store(
    pool: &AssociationPool,
    part10_bytes: &[u8],
    deadline: Option<Instant>,
) -> Result<StoreOutcome, DimseError> {
    let header = part10::parse_header(part10_bytes)?;
    let data_set = &part10_bytes[header.data_set_offset..];
    let plan = ContextPlan::store(&header.sop_class_uid, &header.transfer_syntax_uid);
    let deadlines = Deadlines::new(pool, deadline);
    let message_id = next_message_id();
    let started = start(pool, &plan, &header.sop_class_uid, message_id, deadlines, |ts| {
        if ts != header.transfer_syntax_uid {
            return Err(DimseError::NoPresentationContext {
                site: pool.site().id.clone(),
                what: format!("{} in {}", header.sop_class_uid, header.transfer_syntax_uid),
            });
        }
        Ok((Command::c_store_rq(message_id, &header.sop_class_uid, &header.sop_instance_uid), Some(data_set.to_vec())))
    })
    .await;
    let started = match started {
        Ok(started) => started,
        Err(DimseError::NoPresentationContext { site, .. }) => {
            return Err(DimseError::NoPresentationContext {
                site,
                what: format!("SOP class {} in transfer syntax {}", header.sop_class_uid, header.transfer_syntax_uid),
            })
        }
        Err(e) => return Err(e),
    };
    let message = started.first;
    if message.command.field != CommandField::CStoreRsp || message.command.message_id_responded_to != Some(message_id) {
        let e = unexpected(pool, &message);
        started.pooled.discard().await;
        return Err(e);
    }
    let status = status_of(pool, &message)?;
    started.pooled.done();
    match status.class() {
        StatusClass::Success => Ok(StoreOutcome { status, warning_comment: None }),
        StatusClass::Warning => Ok(StoreOutcome { status, warning_comment: message.command.error_comment }),
        _ => Err(DimseError::Failed {
            site: pool.site().id.clone(),
            operation: Operation::Store,
            status,
            error_comment: message.command.error_comment,
        }),
    }
}
