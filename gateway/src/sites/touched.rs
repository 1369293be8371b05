//! What one request caused below the HTTP edge, gathered while it runs for its log and audit
//! line: the sites it contacted and the instances cleaned of burned-in text for it.
//!
//! Noted through a task-local: every operation on a site goes through crate::sites::Site, which
//! notes its site here; the edge runs each request's handler and the polling of its response
//! body in the request's scope, and a shared retrieval (a flight) runs in the scope of the
//! request that started it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

tokio::task_local! {
    static CURRENT: Arc<Touched>;
}

/// One request's sites contacted and instances cleaned.
#[derive(Debug, Default)]
pub struct Touched {
    sites: Mutex<BTreeSet<String>>,
    cleaned: AtomicU64,
}

impl Touched {
    /// Notes that an instance was cleaned of burned-in text for this request.
    pub fn note_cleaned(&self) {
        self.cleaned.fetch_add(1, Ordering::Relaxed);
    }

    /// The sites contacted, by id, in order.
    pub fn sites(&self) -> Vec<String> {
        self.sites.lock().unwrap_or_else(|p| p.into_inner()).iter().cloned().collect()
    }

    /// How many instances were cleaned for this request.
    pub fn cleaned(&self) -> u64 {
        self.cleaned.load(Ordering::Relaxed)
    }

    /// Runs `future` with this record current.
    pub async fn run<F: std::future::Future>(self: &Arc<Self>, future: F) -> F::Output {
        CURRENT.scope(self.clone(), future).await
    }

    /// Runs `f` (one poll of a response body) with this record current.
    pub fn run_sync<R>(self: &Arc<Self>, f: impl FnOnce() -> R) -> R {
        CURRENT.sync_scope(self.clone(), f)
    }
}

/// The current request's record, if any (for work it hands to a task of its own).
pub fn current() -> Option<Arc<Touched>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Notes that the current request contacted `site` (nothing outside a request).
pub fn note_site(site: &str) {
    let _ = CURRENT.try_with(|touched| {
        touched.sites.lock().unwrap_or_else(|p| p.into_inner()).insert(site.to_owned());
    });
}
