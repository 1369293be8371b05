//! C-FIND (PS3.4 §C.4.1) in the Study Root model: identifiers streamed as the PACS sends them.

use std::time::Instant;

use dicom_object::InMemDicomObject;

use crate::dimse::{Command, CommandField, StatusClass};
use crate::error::{DimseError, Operation};
use crate::operation::{next_message_id, start, unexpected, Deadlines, Exchange};
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
        let data =
            encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::query_rq(CommandField::CFindRq, STUDY_ROOT_FIND, message_id), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    let (mut exchange, first) = Exchange::new(pool, started, deadlines, tx);
    tokio::spawn(async move {
        let mut message = first;
        loop {
            let status = match exchange.status(&message, CommandField::CFindRsp) {
                Ok(status) => status,
                Err(e) => return exchange.fail(e).await,
            };
            let site = exchange.pool.site().id.clone();
            match status.class() {
                StatusClass::Pending => {
                    let ts =
                        exchange.association().transfer_syntax_of(message.presentation_context_id).map(str::to_owned);
                    let decoded = match (message.data_set.as_deref(), ts) {
                        (Some(bytes), Some(ts)) => {
                            decode_identifier(bytes, &ts).map_err(|source| DimseError::Protocol { site, source })
                        }
                        _ => Err(unexpected(&exchange.pool, &message)),
                    };
                    let failed = decoded.is_err();
                    if !exchange.deliver(decoded).await || failed {
                        return exchange.cancel().await;
                    }
                }
                StatusClass::Success | StatusClass::Warning => return exchange.finish(Ok(())).await,
                StatusClass::Cancel => {
                    return exchange.finish(Err(DimseError::Cancelled { site, operation: Operation::Find })).await
                }
                StatusClass::Failure(_) => {
                    let error_comment = message.command.error_comment.clone();
                    return exchange
                        .finish(Err(DimseError::Failed { site, operation: Operation::Find, status, error_comment }))
                        .await;
                }
            }
            message = match exchange.next().await {
                Some(message) => message,
                None => return,
            };
        }
    });
    Ok(stream)
}
