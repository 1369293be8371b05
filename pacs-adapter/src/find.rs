//! C-FIND (PS3.4 §C.4.1) in the Study Root model: identifiers streamed as the PACS sends them.

use std::time::Instant;

use dicom_object::InMemDicomObject;

use crate::dimse::{Command, CommandField, StatusClass};
use crate::error::{DimseError, Operation};
use crate::operation::{cancel, next_message_id, start, status_of, unexpected, Deadlines};
use crate::pool::AssociationPool;
use crate::query::{decode_identifier, encode_identifier, with_level, QueryLevel};
use crate::stream::DimseStream;
use crate::syntax::{ContextPlan, STUDY_ROOT_FIND};

/// A C-FIND: the level, the identifier (matching keys with values, return keys empty) and an
/// optional deadline for the whole query.
#[derive(Debug, Clone)]
pub struct FindRequest {
    pub level: QueryLevel,
    pub identifier: InMemDicomObject,
    pub deadline: Option<Instant>,
}

/// Starts a C-FIND and returns the stream of matches once the PACS has answered the first
/// time. Dropping the stream early cancels the query with C-CANCEL.
pub async fn find(pool: &AssociationPool, request: FindRequest) -> Result<DimseStream<InMemDicomObject>, DimseError> {
    let deadlines = Deadlines::new(pool, request.deadline);
    let identifier = with_level(request.identifier, request.level);
    let message_id = next_message_id();
    let site = pool.site().id.clone();
    let started = start(pool, &ContextPlan::query(), STUDY_ROOT_FIND, message_id, deadlines, |ts| {
        let data = encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::query_rq(CommandField::CFindRq, STUDY_ROOT_FIND, message_id), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    let pool = pool.clone();
    tokio::spawn(async move {
        let crate::operation::Started { mut pooled, presentation_context_id, message_id, first } = started;
        let mut message = first;
        loop {
            if message.command.field != CommandField::CFindRsp {
                let _ = tx.send(Err(unexpected(&pool, &message))).await;
                return pooled.discard().await;
            }
            let status = match status_of(&pool, &message) {
                Ok(status) => status,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return pooled.discard().await;
                }
            };
            match status.class() {
                StatusClass::Pending => {
                    let ts = pooled.association().transfer_syntax_of(message.presentation_context_id).map(str::to_owned);
                    let decoded = match (message.data_set.as_deref(), ts) {
                        (Some(bytes), Some(ts)) => decode_identifier(bytes, &ts)
                            .map_err(|source| DimseError::Protocol { site: pool.site().id.clone(), source }),
                        _ => Err(unexpected(&pool, &message)),
                    };
                    let failed = decoded.is_err();
                    if tx.send(decoded).await.is_err() || failed {
                        return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
                    }
                }
                StatusClass::Success | StatusClass::Warning => return pooled.done(),
                StatusClass::Cancel => {
                    let _ = tx.send(Err(DimseError::Cancelled { site: pool.site().id.clone(), operation: Operation::Find })).await;
                    return pooled.done();
                }
                StatusClass::Failure(_) => {
                    let _ = tx
                        .send(Err(DimseError::Failed {
                            site: pool.site().id.clone(),
                            operation: Operation::Find,
                            status,
                            error_comment: message.command.error_comment.clone(),
                        }))
                        .await;
                    return pooled.done();
                }
            }
            message = tokio::select! {
                _ = tx.closed() => {
                    return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
                }
                received = pooled.association().channel.receive_message(deadlines.next_wait()) => match received {
                    Ok(message) => message,
                    Err(e) => {
                        let _ = tx.send(Err(deadlines.timeout_error(&pool, e))).await;
                        return pooled.discard().await;
                    }
                },
            };
        }
    });
    Ok(stream)
}
