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
        let (command, data_set) = match request(trim_uid(&ts)) {
            Ok(built) => built,
            Err(e) => {
                // Nothing was sent: the association is as good as it was.
                pooled.done();
                return Err(e);
            }
        };
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
    matches!(error, DimseError::ConnectionClosed { .. } | DimseError::Aborted { .. } | DimseError::Transport { .. })
}

/// Sends C-CANCEL for `message_id` and drains the association until the final response,
/// refusing any C-STORE sub-operation still arriving. The association goes back to the pool
/// when the PACS settles within the response deadline, and is aborted otherwise.
async fn cancel(mut pooled: PooledAssociation, presentation_context_id: u8, message_id: u16, response: Duration) {
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
                _ if message.command.message_id_responded_to == Some(message_id)
                    && !message.command.status.map(Status).is_some_and(Status::is_pending) =>
                {
                    return Ok::<(), DimseError>(());
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

/// The context of one streaming operation after its first response: the association, the
/// consumer's channel and the deadlines. Every way an operation ends goes through it, so each
/// ends the same way: handed back clean, cancelled, or aborted with the error sent on.
#[derive(Debug)]
pub(crate) struct Exchange<T> {
    pub pool: AssociationPool,
    pooled: PooledAssociation,
    pub tx: tokio::sync::mpsc::Sender<Result<T, DimseError>>,
    pub deadlines: Deadlines,
    presentation_context_id: u8,
    pub message_id: u16,
}

impl<T> Exchange<T> {
    /// The exchange and the first message of the operation.
    pub(crate) fn new(
        pool: &AssociationPool,
        started: Started,
        deadlines: Deadlines,
        tx: tokio::sync::mpsc::Sender<Result<T, DimseError>>,
    ) -> (Self, Message) {
        let Started { pooled, presentation_context_id, message_id, first } = started;
        (Exchange { pool: pool.clone(), pooled, tx, deadlines, presentation_context_id, message_id }, first)
    }

    pub(crate) fn association(&mut self) -> &mut crate::association::DimseAssociation {
        self.pooled.association()
    }

    /// The status of a response addressed to this operation, or the error that ends it.
    pub(crate) fn status(&self, message: &Message, expected: CommandField) -> Result<Status, DimseError> {
        if message.command.field != expected || message.command.message_id_responded_to != Some(self.message_id) {
            return Err(unexpected(&self.pool, message));
        }
        status_of(&self.pool, message)
    }

    /// Sends a result; false when the consumer has gone.
    pub(crate) async fn deliver(&self, item: Result<T, DimseError>) -> bool {
        self.tx.send(item).await.is_ok()
    }

    /// Waits for the next message only. Cancel-safe: usable as a branch of `select!`.
    pub(crate) async fn receive(&mut self) -> Result<Message, DimseError> {
        self.pooled.association().channel.receive_message(self.deadlines.next_wait()).await
    }

    /// Ends the operation after a failed wait for the PACS (the error of [`receive`]).
    pub(crate) async fn fail_waiting(self, error: DimseError) {
        let error = self.deadlines.timeout_error(&self.pool, error);
        self.fail(error).await;
    }

    /// The next message, or `None` once the operation has ended: the consumer went away (the
    /// operation is cancelled) or the PACS failed (the error is sent on and the association
    /// aborted). Not cancel-safe: await it directly, never as a `select!` branch.
    pub(crate) async fn next(&mut self) -> Option<Message> {
        let received = tokio::select! {
            _ = self.tx.closed() => None,
            received = self.pooled.association().channel.receive_message(self.deadlines.next_wait()) => Some(received),
        };
        match received {
            Some(Ok(message)) => Some(message),
            Some(Err(e)) => {
                let e = self.deadlines.timeout_error(&self.pool, e);
                let _ = self.tx.send(Err(e)).await;
                self.pooled.take_for_abort().await;
                None
            }
            None => {
                cancel_in_place(
                    &mut self.pooled,
                    self.presentation_context_id,
                    self.message_id,
                    self.deadlines.response,
                )
                .await;
                None
            }
        }
    }

    /// Ends the operation after its final response: sends `outcome` when it is an error and
    /// keeps the association.
    pub(crate) async fn finish(self, outcome: Result<(), DimseError>) {
        if let Err(e) = outcome {
            let _ = self.tx.send(Err(e)).await;
        }
        self.pooled.done();
    }

    /// Ends the operation on a protocol failure: sends the error and aborts the association.
    pub(crate) async fn fail(self, error: DimseError) {
        let _ = self.tx.send(Err(error)).await;
        self.pooled.discard().await;
    }

    /// Ends the operation because the consumer has gone or cannot take a result.
    pub(crate) async fn cancel(mut self) {
        cancel_in_place(&mut self.pooled, self.presentation_context_id, self.message_id, self.deadlines.response).await;
    }
}

/// [`cancel`] on an association still owned by an [`Exchange`]: after it the association is
/// either back in the pool or aborted, and the exchange holds nothing.
async fn cancel_in_place(
    pooled: &mut PooledAssociation,
    presentation_context_id: u8,
    message_id: u16,
    response: Duration,
) {
    if let Some(owned) = pooled.take() {
        cancel(owned, presentation_context_id, message_id, response).await;
    }
}
