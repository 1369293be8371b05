//! The gateway's own bounds on work taken on at once, whoever asks (`[server]`): at most
//! `max_requests_in_flight` DICOMweb requests at once, one more waiting at most `queue_wait`
//! for a slot, and STOW-RS bodies of at most `stow_memory` bytes being processed at once;
//! past them a request is shed with 503 and Retry-After before any PACS is contacted.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::SheddingConfig;

/// STOW-RS memory is counted in units of this many bytes (semaphore permits are `u32`).
const STOW_UNIT: u64 = 1024;

/// The gateway-wide bounds on work taken on at once.
#[derive(Debug)]
pub(crate) struct Admission {
    requests: Arc<Semaphore>,
    queue_wait: Duration,
    stow_units: Arc<Semaphore>,
    stow_total_units: u32,
}

/// Why the gateway sheds a request (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Overload {
    /// `server.max_requests_in_flight` requests were in flight for all of `server.queue_wait`.
    RequestsInFlight,
    /// `server.stow_memory` was taken by other STOW-RS bodies for all of `server.queue_wait`.
    StowMemory,
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::RequestsInFlight => "the gateway is serving as many requests as it takes at once",
            Overload::StowMemory => "the gateway is processing as many STOW-RS bytes as it takes at once",
        })
    }
}

/// A shed request's body is read and dropped (up to this many bytes, for at most
/// [`DISCARD_WITHIN`]) before the 503 goes out, so that a client still sending it reads the
/// answer instead of a connection reset.
const DISCARD_AT_MOST: u64 = 64 << 20;
const DISCARD_WITHIN: Duration = Duration::from_secs(10);

/// Reads and drops what is left of a request body, within the bounds above.
pub(crate) async fn discard(body: axum::body::Body) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0u64;
    let _ = tokio::time::timeout(DISCARD_WITHIN, async {
        while let Some(Ok(chunk)) = stream.next().await {
            read += chunk.len() as u64;
            if read > DISCARD_AT_MOST {
                break;
            }
        }
    })
    .await;
}

/// A response body that holds `held` until it ends or is dropped.
#[derive(Debug)]
pub(crate) struct Holding<B> {
    body: B,
    _held: OwnedSemaphorePermit,
}

impl<B> Holding<B> {
    pub(crate) fn new(body: B, held: OwnedSemaphorePermit) -> Self {
        Holding { body, _held: held }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Holding<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Admission {
    pub(crate) fn new(config: &SheddingConfig) -> Admission {
        let stow_total_units = config.stow_memory.div_ceil(STOW_UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Admission {
            requests: Arc::new(Semaphore::new(config.max_requests_in_flight.max(1))),
            queue_wait: config.queue_wait,
            stow_units: Arc::new(Semaphore::new(stow_total_units as usize)),
            stow_total_units,
        }
    }

    /// A slot for one request, waiting at most `queue_wait` for one.
    pub(crate) async fn admit(&self) -> Result<OwnedSemaphorePermit, Overload> {
        if let Ok(permit) = self.requests.clone().try_acquire_owned() {
            return Ok(permit);
        }
        match tokio::time::timeout(self.queue_wait, self.requests.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Overload::RequestsInFlight),
        }
    }

    /// Room for a STOW-RS body of `bytes` (at most the whole budget: a larger body is
    /// processed alone), waiting at most `queue_wait` for it.
    pub(crate) async fn reserve_stow(&self, bytes: u64) -> Result<OwnedSemaphorePermit, Overload> {
        let units = bytes.div_ceil(STOW_UNIT).clamp(1, u64::from(self.stow_total_units)) as u32;
        if let Ok(permit) = self.stow_units.clone().try_acquire_many_owned(units) {
            return Ok(permit);
        }
        match tokio::time::timeout(self.queue_wait, self.stow_units.clone().acquire_many_owned(units)).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Overload::StowMemory),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[tokio::test]
    async fn past_its_bounds_the_gateway_sheds_after_the_queue_wait() {
        let config =
            SheddingConfig { max_requests_in_flight: 2, queue_wait: Duration::from_millis(50), stow_memory: 10 << 20 };
        let admission = Admission::new(&config);
        let first = admission.admit().await.expect("1");
        let _second = admission.admit().await.expect("2");
        let started = Instant::now();
        assert_eq!(admission.admit().await.map(|_| ()), Err(Overload::RequestsInFlight));
        assert!(started.elapsed() >= Duration::from_millis(50) && started.elapsed() < Duration::from_secs(1));
        // A slot freed while waiting is taken.
        let waiting = tokio::spawn(async move { (admission.admit().await.is_ok(), admission) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(first);
        let (admitted, admission) = waiting.await.expect("task");
        assert!(admitted);

        let big = admission.reserve_stow(8 << 20).await.expect("8 MiB of 10");
        assert_eq!(admission.reserve_stow(4 << 20).await.map(|_| ()), Err(Overload::StowMemory));
        let small = admission.reserve_stow(2 << 20).await.expect("2 MiB of the 2 left");
        drop((big, small));
        // A body larger than the whole budget is processed alone.
        let alone = admission.reserve_stow(1 << 40).await.expect("alone");
        assert_eq!(admission.reserve_stow(1).await.map(|_| ()), Err(Overload::StowMemory));
        drop(alone);
    }
}
