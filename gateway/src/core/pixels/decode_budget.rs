//! The memory every decode in flight may hold together (`dataset_limits.decode_memory`).
//!
//! Each decode is bounded on its own (`dataset_limits.max_decoded_size`) and each response
//! decodes a few instances at once, but many requests for compressed studies at the same time
//! would multiply that. A decode first reserves its decoded size here (the pixel data of every
//! frame it decodes), waiting while the budget is spent, and gives it back when the decoded
//! copy is dropped. Start-up refuses a budget smaller than one decode may need, so every
//! reservation can be met.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dicom_object::{FileDicomObject, InMemDicomObject};
use pacs_adapter::RetrievedInstance;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::DataSetLimitsConfig;

/// The budget is counted in whole mebibytes (a reservation is rounded up).
const UNIT: u64 = 1 << 20;

/// Decoded bytes in flight across the gateway, bounded. Cheap to share.
#[derive(Debug)]
pub struct DecodeBudget {
    units: Arc<Semaphore>,
    total: u32,
    /// The most reserved at once since start-up, in bytes (for /metrics).
    peak: AtomicU64,
    /// Reservations that had to wait for others to give memory back.
    waits: AtomicU64,
}

/// Memory reserved for one decode, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _units: OwnedSemaphorePermit,
}

impl DecodeBudget {
    /// A budget of `bytes` (rounded down to whole mebibytes, at least one).
    pub(crate) fn new(bytes: u64) -> DecodeBudget {
        let total = u32::try_from(bytes / UNIT).unwrap_or(u32::MAX).clamp(1, Semaphore::MAX_PERMITS as u32);
        DecodeBudget {
            units: Arc::new(Semaphore::new(total as usize)),
            total,
            peak: AtomicU64::new(0),
            waits: AtomicU64::new(0),
        }
    }

    /// Waits until `bytes` of decoded pixel data fit in the budget and reserves them. A
    /// decode larger than the whole budget (which start-up rules out) reserves all of it.
    pub(crate) async fn reserve(&self, bytes: u64) -> Reservation {
        let units = u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX).clamp(1, self.total);
        let permit = match self.units.clone().try_acquire_many_owned(units) {
            Ok(permit) => permit,
            Err(_) => {
                self.waits.fetch_add(1, Ordering::Relaxed);
                // The semaphore is never closed.
                match self.units.clone().acquire_many_owned(units).await {
                    Ok(permit) => permit,
                    Err(_) => unreachable!("the decode budget's semaphore is never closed"),
                }
            }
        };
        self.peak.fetch_max(self.in_use(), Ordering::Relaxed);
        Reservation { _units: permit }
    }

    /// Runs `decode` on a blocking thread once `bytes` of decoded pixel data are reserved, and
    /// gives them back when it returns (what it returns is then the caller's to bound). Nothing
    /// is reserved for 0 bytes (nothing to decode).
    pub(crate) async fn decode<T: Send + 'static>(
        &self,
        bytes: u64,
        decode: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, tokio::task::JoinError> {
        let _reserved = if bytes == 0 { None } else { Some(self.reserve(bytes).await) };
        tokio::task::spawn_blocking(decode).await
    }

    /// A retrieved instance parsed and its decoded size bounded on a blocking thread
    /// (crate::core::dataset_limits::parsed_for_decoding), then `decode` run on it within the budget.
    /// `instead` names what the client may ask for when the instance cannot be decoded here.
    pub(crate) async fn decode_instance<T: Send + 'static>(
        &self,
        instance: RetrievedInstance,
        limits: DataSetLimitsConfig,
        instead: &'static str,
        decode: impl FnOnce(FileDicomObject<InMemDicomObject>, RetrievedInstance) -> Result<T, std::io::Error>
            + Send
            + 'static,
    ) -> Result<T, std::io::Error> {
        let (object, size, instance) = tokio::task::spawn_blocking(move || {
            crate::core::dataset_limits::parsed_for_decoding(&instance.part10, &limits)
                .map(|(object, size)| (object, size, instance))
                .map_err(|e| std::io::Error::other(format!("{e}; ask for {instead}")))
        })
        .await
        .map_err(std::io::Error::other)??;
        self.decode(size, move || decode(object, instance)).await.map_err(std::io::Error::other)?
    }

    /// Bytes reserved now.
    pub(crate) fn in_use(&self) -> u64 {
        u64::from(self.total - self.units.available_permits() as u32) * UNIT
    }

    /// The whole budget, in bytes.
    pub(crate) fn total(&self) -> u64 {
        u64::from(self.total) * UNIT
    }

    /// The most reserved at once since start-up, in bytes.
    pub(crate) fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// How many reservations waited for memory to be given back.
    pub(crate) fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_decode_waits_until_the_memory_is_given_back() {
        let budget = Arc::new(DecodeBudget::new(3 * UNIT));
        let first = budget.reserve(2 * UNIT).await;
        assert_eq!(budget.in_use(), 2 * UNIT);
        let small = budget.reserve(1).await;
        assert_eq!(budget.in_use(), 3 * UNIT, "a reservation is whole mebibytes");
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(2 * UNIT).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "reserved beyond the budget");
        drop(first);
        let second = tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("given memory back")
            .expect("task");
        assert_eq!(budget.in_use(), 3 * UNIT);
        assert_eq!((budget.peak(), budget.waits()), (3 * UNIT, 1));
        drop((second, small));
        assert_eq!(budget.in_use(), 0);
        // Larger than the whole budget: all of it, not a wait forever.
        let all = budget.reserve(10 * UNIT).await;
        assert_eq!(budget.in_use(), budget.total());
        drop(all);
    }
}
