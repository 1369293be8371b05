//! How long a transfer from or to a DICOMweb site may take: the site's `timeout`, and more for
//! each byte it has moved at no less than [`SLOWEST_RATE`]. A large instance over a slow link
//! takes as long as its bytes need; an origin that trickles (a byte now and then, each within
//! the idle timeout of a read) is cut off once it falls below the rate.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The slowest rate a transfer may keep up, in bytes a second (2 Mbit/s): far below any link a
/// hospital federates over, far above a trickle.
pub(crate) const SLOWEST_RATE: f64 = 256.0 * 1024.0;

/// The time a transfer of `bytes` may take beyond the site's `timeout`.
pub(crate) fn allowance(bytes: u64) -> Duration {
    Duration::from_secs_f64(bytes as f64 / SLOWEST_RATE)
}

/// A transfer begun at `began`: it may go on until `timeout` after that, plus the
/// [`allowance`] of the bytes it has moved so far (`moved`, read again whenever the time is up).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Pace {
    began: Instant,
    timeout: Duration,
}

impl Pace {
    pub(crate) fn from_now(timeout: Duration) -> Pace {
        Pace { began: Instant::now(), timeout }
    }

    /// When the transfer must have ended, having moved `moved` bytes.
    pub(crate) fn deadline(&self, moved: u64) -> Instant {
        self.began + self.timeout + allowance(moved)
    }

    /// `future`'s output, or `None` when the transfer falls behind its pace before it is ready.
    pub(crate) async fn keep<T>(&self, future: impl Future<Output = T>, moved: impl Fn() -> u64) -> Option<T> {
        let mut future = std::pin::pin!(future);
        loop {
            let deadline = self.deadline(moved());
            if let Ok(output) = tokio::time::timeout_at(deadline, &mut future).await {
                return Some(output);
            }
            // Bytes that came while it waited move the deadline on.
            if self.deadline(moved()) <= Instant::now() {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_transfer_goes_on_while_it_keeps_the_pace_and_is_cut_off_when_it_falls_behind() {
        let pace = Pace::from_now(Duration::from_secs(1));
        let moved = Arc::new(AtomicU64::new(0));
        // Moving 256 KiB every half second (twice the slowest rate) for 5 s: it finishes.
        let mover = moved.clone();
        let steady = async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                mover.fetch_add(256 << 10, Ordering::Relaxed);
            }
        };
        assert!(pace.keep(steady, || moved.load(Ordering::Relaxed)).await.is_some(), "kept the pace");
        // A byte a second after that: the deadline (1 s + 10 s of allowance) passes.
        let began = Instant::now();
        let mover = moved.clone();
        let trickle = async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                mover.fetch_add(1, Ordering::Relaxed);
            }
        };
        assert!(pace.keep(trickle, || moved.load(Ordering::Relaxed)).await.is_none(), "cut off");
        let cut_after = began.elapsed();
        assert!(cut_after >= Duration::from_secs(5) && cut_after <= Duration::from_secs(7), "{cut_after:?}");
    }

    #[test]
    fn the_allowance_is_a_second_for_each_quarter_mebibyte() {
        assert_eq!(allowance(0), Duration::ZERO);
        assert_eq!(allowance(256 << 10), Duration::from_secs(1));
        assert_eq!(allowance(1 << 30), Duration::from_secs(4096));
    }
}
