//! What one request caused at the sites and below the HTTP edge, gathered while it runs for its
//! log and audit line: the sites it contacted, the instances cleaned of burned-in text for it,
//! and the sites that said they sent only part of what was asked. The edge makes one per request (crate::http::ledger) and hands it to the core in the
//! request's `Access`; every operation on a site takes it (crate::sites::Site notes itself),
//! and a shared retrieval (a flight) notes into the record of the request that started it.
//!
//! It also carries the caller's own credentials, for the DICOMweb sites configured to forward
//! them (`auth = "forward"`): never logged, never cached beyond the request.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// One request's sites contacted and instances cleaned, and its caller's credentials.
#[derive(Default)]
pub(crate) struct Touched {
    sites: Mutex<BTreeSet<String>>,
    cleaned: AtomicU64,
    partly: Mutex<Vec<String>>,
    authorization: OnceLock<Arc<str>>,
}

impl std::fmt::Debug for Touched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The credentials are never printed.
        f.debug_struct("Touched").field("sites", &self.sites()).field("cleaned", &self.cleaned()).finish()
    }
}

impl Touched {
    /// Sets the caller's Authorization header (`Bearer ...`), once, for sites that forward it.
    pub(crate) fn set_authorization(&self, authorization: &str) {
        let _ = self.authorization.set(authorization.into());
    }

    /// The caller's Authorization header, when it sent one.
    pub(crate) fn authorization(&self) -> Option<Arc<str>> {
        self.authorization.get().cloned()
    }

    /// Notes that the request contacted `site`.
    pub(crate) fn note_site(&self, site: &str) {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).insert(site.to_owned());
    }

    /// Notes that an instance was cleaned of burned-in text for this request.
    pub(crate) fn note_cleaned(&self) {
        self.cleaned.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes that a site said it answered with only part of what was asked (`what`: which
    /// site and how it said so, in the gateway's words).
    pub(crate) fn note_partly(&self, what: String) {
        self.partly.lock().unwrap_or_else(|p| p.into_inner()).push(what);
    }

    /// What sites said they left out of their answers, in the order they said it.
    pub(crate) fn partly(&self) -> Vec<String> {
        self.partly.lock().unwrap_or_else(|p| p.into_inner()).clone()
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
