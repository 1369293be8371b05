//! C-ECHO (PS3.7 §9.1.5): is the PACS there and does it speak DICOM to us.

use std::time::{Duration, Instant};

use crate::dimse::{Command, CommandField, StatusClass};
use crate::error::{DimseError, Operation};
use crate::operation::{next_message_id, start, status_of, unexpected, Deadlines};
use crate::pool::AssociationPool;
use crate::syntax::{ContextPlan, VERIFICATION};

/// Sends one C-ECHO and returns the round-trip time (including association set-up when no
/// idle association was available).
pub async fn echo(pool: &AssociationPool) -> Result<Duration, DimseError> {
    let began = Instant::now();
    let deadlines = Deadlines::new(pool, None);
    let message_id = next_message_id();
    let started = start(pool, &ContextPlan::query(), VERIFICATION, message_id, deadlines, |_| {
        Ok((Command::c_echo_rq(message_id), None))
    })
    .await?;
    let message = started.first;
    if message.command.field != CommandField::CEchoRsp {
        return Err(unexpected(pool, &message));
    }
    let status = status_of(pool, &message)?;
    started.pooled.done();
    match status.class() {
        StatusClass::Success | StatusClass::Warning => Ok(began.elapsed()),
        _ => Err(DimseError::Failed {
            site: pool.site().id.clone(),
            operation: Operation::Echo,
            status,
            error_comment: message.command.error_comment,
        }),
    }
}
