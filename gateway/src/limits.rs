//! Per-caller limits (`[limits]`): a token bucket of `requests_per_second` with `burst`, and at
//! most `concurrent_requests` requests in flight (a request counts until its response body
//! ends). A caller is a token's subject; callers over a limit get 429 with Retry-After.
//!
//! And the gateway's own bounds, whoever asks ([`Admission`], `[server]`): at most
//! `max_requests_in_flight` DICOMweb requests at once, one more waiting at most `queue_wait`
//! for a slot, and STOW-RS bodies of at most `stow_memory` bytes being processed at once;
//! past them a request is shed with 503 and Retry-After before any PACS is contacted.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::{LimitsConfig, SheddingConfig};

/// STOW-RS memory is counted in units of this many bytes (semaphore permits are `u32`).
const STOW_UNIT: u64 = 1024;

/// The gateway-wide bounds on work taken on at once.
#[derive(Debug)]
pub struct Admission {
    requests: Arc<Semaphore>,
    queue_wait: Duration,
    stow_units: Arc<Semaphore>,
    stow_total_units: u32,
}

/// Why the gateway sheds a request (503).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
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
pub async fn discard(body: axum::body::Body) {
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

impl axum::response::IntoResponse for Overload {
    fn into_response(self) -> axum::response::Response {
        use axum::http::{header, HeaderValue, StatusCode};
        let mut response = (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{self}; retry later\n"),
        )
            .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        response
    }
}

/// A response body that holds `held` until it ends or is dropped.
#[derive(Debug)]
pub struct Holding<B> {
    body: B,
    _held: OwnedSemaphorePermit,
}

impl<B> Holding<B> {
    pub fn new(body: B, held: OwnedSemaphorePermit) -> Self {
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
    pub fn new(config: &SheddingConfig) -> Admission {
        let stow_total_units = config.stow_memory.div_ceil(STOW_UNIT).clamp(1, u64::from(u32::MAX >> 4)) as u32;
        Admission {
            requests: Arc::new(Semaphore::new(config.max_requests_in_flight.max(1))),
            queue_wait: config.queue_wait,
            stow_units: Arc::new(Semaphore::new(stow_total_units as usize)),
            stow_total_units,
        }
    }

    /// A slot for one request, waiting at most `queue_wait` for one.
    pub async fn admit(&self) -> Result<OwnedSemaphorePermit, Overload> {
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
    pub async fn reserve_stow(&self, bytes: u64) -> Result<OwnedSemaphorePermit, Overload> {
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

#[derive(Debug)]
struct Caller {
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
    in_flight: AtomicU32,
}

#[derive(Debug)]
pub struct CallerLimits {
    config: LimitsConfig,
    callers: moka::sync::Cache<String, Arc<Caller>>,
}

/// Why a request is shed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shed {
    /// More requests per second than allowed: retry after this long.
    TooFast(Duration),
    /// Too many requests in flight.
    TooMany,
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub struct Slot(Arc<Caller>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallerLimits {
    pub fn new(config: LimitsConfig) -> CallerLimits {
        let callers = moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build();
        CallerLimits { config, callers }
    }

    /// Admits one request of `subject`, or says why not.
    pub fn admit(&self, subject: &str) -> Result<Slot, Shed> {
        let now = Instant::now();
        let caller = self.callers.get_with(subject.to_owned(), || {
            Arc::new(Caller { bucket: Mutex::new((f64::from(self.config.burst), now)), in_flight: AtomicU32::new(0) })
        });
        {
            let mut bucket = caller.bucket.lock().unwrap_or_else(|p| p.into_inner());
            let rate = f64::from(self.config.requests_per_second);
            let refilled =
                (bucket.0 + now.duration_since(bucket.1).as_secs_f64() * rate).min(f64::from(self.config.burst));
            if refilled < 1.0 {
                let wait = Duration::from_secs_f64((1.0 - refilled) / rate);
                return Err(Shed::TooFast(wait));
            }
            *bucket = (refilled - 1.0, now);
        }
        let before = caller.in_flight.fetch_add(1, Ordering::AcqRel);
        let slot = Slot(caller);
        if before >= self.config.concurrent_requests {
            return Err(Shed::TooMany);
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn a_caller_is_held_to_its_rate_and_concurrency_and_others_are_not_affected() {
        let limits = CallerLimits::new(LimitsConfig { requests_per_second: 1, burst: 3, concurrent_requests: 2 });
        let first = limits.admit("alice").expect("1");
        let second = limits.admit("alice").expect("2");
        assert_eq!(limits.admit("alice").map(|_| ()), Err(Shed::TooMany));
        drop(first);
        // The bucket (3) is now empty: the refused request above took a token too.
        assert!(matches!(limits.admit("alice"), Err(Shed::TooFast(wait)) if wait <= Duration::from_secs(1)));
        assert!(limits.admit("bob").is_ok());
        drop(second);
    }
}
