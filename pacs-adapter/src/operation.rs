//! What every DIMSE operation shares: message ids, starting a request on a pooled association
//! (retrying once on a fresh one if a reused association turns out to be stale), and
//! cancelling with C-CANCEL.

use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use crate::association::trim_uid;
use crate::dimse::{Command, CommandField, Message, Status};
use crate::error::{DimseError, Phase};
use crate::pool::{AssociationPool, PooledAssociation};
use crate::syntax::ContextPlan;

static NEXT_MESSAGE_ID: AtomicU16 = AtomicU16::new(1);

/// Message ids are unique across the process (until they wrap), which lets the storage SCP
/// route C-MOVE sub-operations by Move Originator Message ID whatever site they come from.
pub(crate) fn next_message_id() -> u16 {
    loop {
        let id = NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed);
        if id != 0 {
            return id;
        }
    }
}

/// Deadlines of one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub response: Duration,
    pub operation: Option<Instant>,
    started: Instant,
}

impl Deadlines {
    pub(crate) fn new(pool: &AssociationPool, operation: Option<Instant>) -> Self {
        Deadlines { response: pool.site().response_timeout, operation, started: Instant::now() }
    }

    /// How long the next wait for the PACS may take.
    pub(crate) fn next_wait(&self) -> Duration {
        match self.operation {
            Some(deadline) => self.response.min(deadline.saturating_duration_since(Instant::now())),
            None => self.response,
        }
    }

    /// The timeout error for a wait that ran out: the operation's if that is what ended it.
    pub(crate) fn timeout_error(&self, pool: &AssociationPool, error: DimseError) -> DimseError {
        match (&error, self.operation) {
            (DimseError::Timeout { .. }, Some(deadline)) if Instant::now() >= deadline => DimseError::Timeout {
                site: pool.site().id.clone(),
                phase: Phase::Operation,
                after: deadline.saturating_duration_since(self.started),
            },
            _ => error,
        }
    }

    fn budget_deadline(&self) -> Instant {
        self.operation.unwrap_or_else(|| Instant::now() + self.response)
    }
}

/// A request that is under way: the association, its context and the first message back.
#[derive(Debug)]
pub(crate) struct Started {
    pub pooled: PooledAssociation,
    pub presentation_context_id: u8,
    pub message_id: u16,
    pub first: Message,
}

/// Sends a request and waits for the first message back. `request` builds the command and
/// data set for the accepted transfer syntax of `abstract_syntax`.
pub(crate) async fn start(
    pool: &AssociationPool,
    plan: &ContextPlan,
    abstract_syntax: &str,
    message_id: u16,
    deadlines: Deadlines,
    request: impl Fn(&str) -> Result<(Command, Option<Vec<u8>>), DimseError>,
) -> Result<Started, DimseError> {
    let mut fresh = false;
    loop {
        let mut pooled = pool.acquire(plan, fresh, deadlines.budget_deadline()).await?;
        let (pc_id, ts) = match pooled.association().require_context(abstract_syntax) {
            Ok(found) => found,
            Err(e) => {
                pooled.done();
                return Err(e);
            }
        };
        let (command, data_set) = request(trim_uid(&ts))?;
        let exchange = async {
            let association = pooled.association();
            association.channel.send(pc_id, &command, data_set.as_deref()).await?;
            association.channel.receive_message(deadlines.next_wait()).await
        };
        match exchange.await {
            Ok(first) => return Ok(Started { pooled, presentation_context_id: pc_id, message_id, first }),
            Err(e) if pooled.reused && !fresh && is_stale(&e) => {
                tracing::debug!(site = %pool.site().id, "reused association was stale; retrying on a new one");
                pooled.discard().await;
                fresh = true;
            }
            Err(e) => {
                pooled.discard().await;
                return Err(deadlines.timeout_error(pool, e));
            }
        }
    }
}

fn is_stale(error: &DimseError) -> bool {
    matches!(
        error,
        DimseError::ConnectionClosed { .. } | DimseError::Aborted { .. } | DimseError::Transport { .. }
    )
}

/// Sends C-CANCEL for `message_id` and drains the association until the final response,
/// refusing any C-STORE sub-operation still arriving. The association goes back to the pool
/// when the PACS settles within the response deadline, and is aborted otherwise.
pub(crate) async fn cancel(mut pooled: PooledAssociation, presentation_context_id: u8, message_id: u16, response: Duration) {
    let drained = async {
        let channel = &mut pooled.association().channel;
        channel.send(presentation_context_id, &Command::c_cancel_rq(message_id), None).await?;
        loop {
            let message = channel.receive_message(response).await?;
            match message.command.field {
                CommandField::CStoreRq => {
                    let refusal = Command::c_store_rsp(&message.command, Status::STORE_OUT_OF_RESOURCES.0);
                    channel.send(message.presentation_context_id, &refusal, None).await?;
                }
                _ if message.command.message_id_responded_to == Some(message_id) => {
                    if !message.command.status.map(Status).is_some_and(Status::is_pending) {
                        return Ok::<(), DimseError>(());
                    }
                }
                _ => {}
            }
        }
    };
    match tokio::time::timeout(response, drained).await {
        Ok(Ok(())) => pooled.done(),
        _ => pooled.discard().await,
    }
}

/// The status of a response, or a protocol error when it has none.
pub(crate) fn status_of(pool: &AssociationPool, message: &Message) -> Result<Status, DimseError> {
    message.command.status.map(Status).ok_or_else(|| DimseError::Protocol {
        site: pool.site().id.clone(),
        source: crate::dimse::DimseProtocolError::MalformedCommand("response without Status"),
    })
}

pub(crate) fn unexpected(pool: &AssociationPool, message: &Message) -> DimseError {
    DimseError::Protocol {
        site: pool.site().id.clone(),
        source: crate::dimse::DimseProtocolError::UnexpectedMessage(format!("{:?}", message.command.field)),
    }
}
