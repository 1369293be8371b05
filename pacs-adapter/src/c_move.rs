//! C-MOVE (PS3.4 §C.4.2) to our own AE: the PACS opens an association to the storage SCP and
//! sends each instance there; the SCP hands them to this move, which streams them on. Only
//! the site's own AE title and host may send them, and a site reached over TLS is not moved
//! from (the storage SCP speaks plain TCP).

use std::collections::HashSet;

use crate::dimse::{Command, CommandField, Message};
use crate::error::{DimseError, Operation};
use crate::get::RetrieveRequest;
use crate::instance::{RetrievedInstance, SubOperations};
use crate::operation::{start, Deadlines, Exchange};
use crate::pool::AssociationPool;
use crate::query::encode_identifier;
use crate::store_scp::{MoveSource, MoveTicket, StoreScp};
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
    if pool.site().tls.is_some() {
        return Err(DimseError::MoveWithoutTls { site: pool.site().id.clone() });
    }
    let deadlines = Deadlines::new(pool, request.deadline);
    let expected = (!request.target.instances.is_empty())
        .then(|| request.target.instances.iter().map(|u| u.as_str().to_owned()).collect::<HashSet<_>>());
    // The storage SCP takes this move's instances only from the site's AE title and host.
    let source = MoveSource::resolve(pool.site()).await?;
    let ticket = scp.register(source, expected);
    let identifier = request.target.identifier();
    let destination = scp.ae_title().as_str().to_owned();
    let site = pool.site().id.clone();
    let message_id = ticket.message_id;
    let started = start(pool, &ContextPlan::query(), STUDY_ROOT_MOVE, message_id, deadlines, |ts| {
        let data =
            encode_identifier(&identifier, ts).map_err(|source| DimseError::Protocol { site: site.clone(), source })?;
        Ok((Command::c_move_rq(STUDY_ROOT_MOVE, message_id, &destination), Some(data)))
    })
    .await?;
    let (tx, stream) = DimseStream::channel();
    let (exchange, first) = Exchange::new(pool, started, deadlines, tx);
    tokio::spawn(drive(exchange, first, ticket));
    Ok(stream)
}

async fn drive(mut exchange: Exchange<RetrievedInstance>, first: Message, mut ticket: MoveTicket) {
    let site = exchange.pool.site().id.clone();
    let mut sub_operations = SubOperations::default();
    let mut next_response = Some(first);
    let consumer = exchange.tx.clone();
    loop {
        if let Some(message) = next_response.take() {
            let status = match exchange.status(&message, CommandField::CMoveRsp) {
                Ok(status) => status,
                Err(e) => return exchange.fail(e).await,
            };
            sub_operations.update(&message.command);
            if !status.is_pending() {
                // Each instance was handed over before the SCP acknowledged it, and the PACS
                // sends the final response only after the last acknowledgement: whatever
                // belongs to this move is already queued.
                while let Ok(instance) = ticket.rx.try_recv() {
                    sub_operations.received += 1;
                    if !exchange.deliver(Ok(instance)).await {
                        return exchange.finish(Ok(())).await;
                    }
                }
                let outcome = sub_operations.outcome(&site, Operation::Move, &message.command);
                return exchange.finish(outcome).await;
            }
        }
        // Instances arrive on the storage SCP while responses arrive on the association; both
        // are waited for at once, and for the consumer leaving.
        tokio::select! {
            _ = consumer.closed() => {
                drop(ticket);
                return exchange.cancel().await;
            }
            Some(instance) = ticket.rx.recv() => {
                sub_operations.received += 1;
                if !exchange.deliver(Ok(instance)).await {
                    drop(ticket);
                    return exchange.cancel().await;
                }
            }
            received = exchange.receive() => match received {
                Ok(message) => next_response = Some(message),
                Err(e) => return exchange.fail_waiting(e).await,
            },
        }
    }
}
