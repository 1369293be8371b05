//! C-MOVE (PS3.4 §C.4.2) to our own AE: the PACS opens an association to the storage SCP and
//! sends each instance there; the SCP hands them to this move, which streams them on.

use std::collections::HashSet;

use crate::dimse::{Command, CommandField};
use crate::error::{DimseError, Operation};
use crate::get::RetrieveRequest;
use crate::instance::{RetrievedInstance, SubOperations};
use crate::operation::{cancel, start, status_of, unexpected, Deadlines, Started};
use crate::pool::AssociationPool;
use crate::query::encode_identifier;
use crate::store_scp::{MoveTicket, StoreScp};
use crate::stream::DimseStream;
use crate::syntax::{ContextPlan, STUDY_ROOT_MOVE};

/// Starts a C-MOVE of `request` to the storage SCP and returns the stream of instances once
/// the PACS has answered the first time. As with C-GET, a retrieval with failed sub-operations
/// ends with an `Err`, and dropping the stream cancels the move.
pub async fn c_move(
    pool: &AssociationPool,
    scp: &StoreScp,
    request: RetrieveRequest,
) -> Result<DimseStream<RetrievedInstance>, DimseError> {
    if !scp.is_running() {
        return Err(DimseError::StoreScpUnavailable);
    }
    let deadlines = Deadlines::new(pool, request.deadline);
    let expected = (!request.target.instances.is_empty())
        .then(|| request.target.instances.iter().map(|u| u.as_str().to_owned()).collect::<HashSet<_>>());
    let ticket = scp.register(&pool.site().called_ae_title, expected);
    let identifier = request.target.identifier();
    let destination = scp.ae_title().as_str().to_owned();
    let site = pool.site().id.clone();
    let message_id = ticket.message_id;
    let started = start(pool, &ContextPlan::query(), STUDY_ROOT_MOVE, message_id, deadlines, |ts| {
        let data = encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::c_move_rq(STUDY_ROOT_MOVE, message_id, &destination), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    tokio::spawn(drive(pool.clone(), started, ticket, deadlines, tx));
    Ok(stream)
}

async fn drive(
    pool: AssociationPool,
    started: Started,
    mut ticket: MoveTicket,
    deadlines: Deadlines,
    tx: tokio::sync::mpsc::Sender<Result<RetrievedInstance, DimseError>>,
) {
    let Started { mut pooled, presentation_context_id, message_id, first } = started;
    let site = pool.site().id.clone();
    let mut sub_operations = SubOperations::default();
    let mut next_response = Some(first);
    loop {
        if let Some(message) = next_response.take() {
            if message.command.field != CommandField::CMoveRsp || message.command.message_id_responded_to != Some(message_id) {
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
            sub_operations.update(&message.command);
            if !status.is_pending() {
                // Each instance was handed over before the SCP acknowledged it, and the PACS
                // sends the final response only after the last acknowledgement: whatever
                // belongs to this move is already queued.
                while let Ok(instance) = ticket.rx.try_recv() {
                    sub_operations.received += 1;
                    if tx.send(Ok(instance)).await.is_err() {
                        return pooled.done();
                    }
                }
                if let Err(e) = sub_operations.outcome(&site, Operation::Move, &message.command) {
                    let _ = tx.send(Err(e)).await;
                }
                return pooled.done();
            }
        }
        tokio::select! {
            _ = tx.closed() => {
                drop(ticket);
                return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
            }
            Some(instance) = ticket.rx.recv() => {
                sub_operations.received += 1;
                if tx.send(Ok(instance)).await.is_err() {
                    drop(ticket);
                    return cancel(pooled, presentation_context_id, message_id, deadlines.response).await;
                }
            }
            received = pooled.association().channel.receive_message(deadlines.next_wait()) => match received {
                Ok(message) => next_response = Some(message),
                Err(e) => {
                    let _ = tx.send(Err(deadlines.timeout_error(&pool, e))).await;
                    return pooled.discard().await;
                }
            },
        }
    }
}
