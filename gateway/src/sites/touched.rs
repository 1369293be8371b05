//! What one request caused at the sites and below the HTTP edge, gathered while it runs for its
//! log and audit line: the sites it contacted and the instances cleaned of burned-in text for
//! it. The edge makes one per request (crate::http::ledger) and hands it to the core in the
//! request's `Access`; every operation on a site takes it (crate::sites::Site notes itself),
//! and a shared retrieval (a flight) notes into the record of the request that started it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// One request's sites contacted and instances cleaned.
#[derive(Debug, Default)]
pub(crate) struct Touched {
    sites: Mutex<BTreeSet<String>>,
    cleaned: AtomicU64,
}

impl Touched {
    /// Notes that the request contacted `site`.
    pub(crate) fn note_site(&self, site: &str) {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).insert(site.to_owned());
    }

    /// Notes that an instance was cleaned of burned-in text for this request.
    pub(crate) fn note_cleaned(&self) {
        self.cleaned.fetch_add(1, Ordering::Relaxed);
    }

    /// The sites contacted, by id, in order.
    pub(crate) fn sites(&self) -> Vec<String> {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// How many instances were cleaned for this request.
    pub(crate) fn cleaned(&self) -> u64 {
        self.cleaned.load(Ordering::Relaxed)
    }
}
