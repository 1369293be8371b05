//! Per-caller limits (`[limits]`): a token bucket of `requests_per_second` with `burst`, and at
//! most `concurrent_requests` requests in flight (a request counts until its response body
//! ends). A caller is a token's subject; callers over a limit get 429 with Retry-After. The
//! gateway's own bounds, whoever asks, are in [`crate::http::admission`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;

#[derive(Debug)]
struct Caller {
    /// Tokens left and when they were counted.
    bucket: Mutex<(f64, Instant)>,
    in_flight: AtomicU32,
}

#[derive(Debug)]
pub(crate) struct CallerLimits {
    config: LimitsConfig,
    callers: moka::sync::Cache<String, Arc<Caller>>,
}

/// Why a request is shed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shed {
    /// More requests per second than allowed: retry after this long.
    TooFast(Duration),
    /// Too many requests in flight.
    TooMany,
}

/// A request in flight, counted until dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Caller>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl CallerLimits {
    pub(crate) fn new(config: LimitsConfig) -> CallerLimits {
        let callers = moka::sync::Cache::builder().max_capacity(100_000).time_to_idle(Duration::from_secs(600)).build();
        CallerLimits { config, callers }
    }

    /// Admits one request of `subject`, or says why not.
    pub(crate) fn admit(&self, subject: &str) -> Result<Slot, Shed> {
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
