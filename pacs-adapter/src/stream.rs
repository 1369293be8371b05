//! The result streams of C-FIND, C-GET and C-MOVE: results are produced by a task that owns
//! the association, through a bounded channel, so a slow consumer slows the PACS down instead
//! of filling memory, and dropping the stream tells the task to cancel the operation.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use crate::error::DimseError;

/// How many results may wait for the consumer before the PACS is held back.
pub(crate) const STREAM_BUFFER: usize = 4;

/// A stream of results of one DIMSE operation. It ends after the last result; an operation
/// that failed part-way ends with an `Err` item after the results that did arrive.
#[derive(Debug)]
pub struct DimseStream<T> {
    rx: mpsc::Receiver<Result<T, DimseError>>,
}

impl<T> DimseStream<T> {
    pub(crate) fn channel() -> (mpsc::Sender<Result<T, DimseError>>, Self) {
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        (tx, DimseStream { rx })
    }

    /// Collects at most `max` results, failing on the first error; `true` with them when the
    /// operation had more. The stream is then dropped, which cancels the operation.
    pub async fn try_collect_at_most(mut self, max: usize) -> Result<(Vec<T>, bool), DimseError> {
        let mut out = Vec::new();
        while let Some(item) = self.rx.recv().await {
            let item = item?;
            if out.len() == max {
                return Ok((out, true));
            }
            out.push(item);
        }
        Ok((out, false))
    }

    /// Collects every result, failing on the first error.
    pub async fn try_collect_all(mut self) -> Result<Vec<T>, DimseError> {
        let mut out = Vec::new();
        while let Some(item) = self.rx.recv().await {
            out.push(item?);
        }
        Ok(out)
    }
}

impl<T> futures::Stream for DimseStream<T> {
    type Item = Result<T, DimseError>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}
