//! The per-site association pool: at most `max_associations` open at once (in use or idle),
//! idle associations reused when their context plan matches, stale ones released.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::association::DimseAssociation;
use crate::error::{DimseError, Phase};
use crate::site::SiteEndpoint;
use crate::syntax::ContextPlan;

/// A pool of associations to one site. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AssociationPool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    site: SiteEndpoint,
    /// One permit per open association, held by in-use and idle ones alike.
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    returned: Notify,
    /// The most associations in use at once (handed out, not idle) since the pool began.
    peak_in_use: AtomicUsize,
}

#[derive(Debug)]
struct Idle {
    association: DimseAssociation,
    permit: OwnedSemaphorePermit,
}

impl AssociationPool {
    /// Creates the pool and, when called inside a tokio runtime, a task that releases idle
    /// associations once they pass the site's idle timeout. The task ends with the pool.
    pub fn new(site: SiteEndpoint) -> Self {
        let inner = Arc::new(PoolInner {
            permits: Arc::new(Semaphore::new(site.max_associations.max(1))),
            site,
            idle: Mutex::new(Vec::new()),
            returned: Notify::new(),
            peak_in_use: AtomicUsize::new(0),
        });
        if tokio::runtime::Handle::try_current().is_ok() {
            tokio::spawn(reap_idle(Arc::downgrade(&inner)));
        }
        AssociationPool { inner }
    }

    pub fn site(&self) -> &SiteEndpoint {
        &self.inner.site
    }

    /// Associations open now (in use plus idle).
    pub fn open_associations(&self) -> usize {
        self.inner.site.max_associations.max(1) - self.inner.permits.available_permits()
    }

    /// The most associations in use at once since the pool began.
    pub fn peak_in_use(&self) -> usize {
        self.inner.peak_in_use.load(Ordering::Relaxed)
    }

    /// Idle associations now.
    pub fn idle_associations(&self) -> usize {
        self.inner.lock_idle().len()
    }

    /// Takes an association negotiated with `plan`: an idle one when one matches (unless
    /// `fresh`), else a new one within the site's budget, waiting for a free slot until
    /// `budget_deadline`.
    pub async fn acquire(
        &self,
        plan: &ContextPlan,
        fresh: bool,
        budget_deadline: Instant,
    ) -> Result<PooledAssociation, DimseError> {
        let inner = &self.inner;
        loop {
            let mut stale = Vec::new();
            let reusable = {
                let mut idle = inner.lock_idle();
                let now = Instant::now();
                let mut i = 0;
                while i < idle.len() {
                    if now.duration_since(idle[i].association.last_used) >= inner.site.idle_timeout {
                        stale.push(idle.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                if fresh {
                    None
                } else {
                    idle.iter().position(|i| &i.association.plan == plan).map(|p| idle.swap_remove(p))
                }
            };
            close_all(stale, inner.site.response_timeout);
            if let Some(Idle { association, permit }) = reusable {
                return Ok(PooledAssociation::new(association, permit, inner, true));
            }
            if let Ok(permit) = inner.permits.clone().try_acquire_owned() {
                return self.establish(plan, permit).await;
            }
            // Every slot is taken; an idle association of another plan gives its slot up.
            let other = inner.lock_idle().pop();
            if let Some(Idle { association, permit }) = other {
                association.release(inner.site.response_timeout).await;
                return self.establish(plan, permit).await;
            }
            let wait = tokio::select! {
                permit = inner.permits.clone().acquire_owned() => permit.ok(),
                _ = inner.returned.notified() => None,
                _ = tokio::time::sleep_until(budget_deadline.into()) => {
                    return Err(DimseError::Timeout {
                        site: inner.site.id.clone(),
                        phase: Phase::AssociationBudget,
                        after: budget_deadline.saturating_duration_since(Instant::now()),
                    });
                }
            };
            if let Some(permit) = wait {
                return self.establish(plan, permit).await;
            }
        }
    }

    async fn establish(
        &self,
        plan: &ContextPlan,
        permit: OwnedSemaphorePermit,
    ) -> Result<PooledAssociation, DimseError> {
        let association = DimseAssociation::establish(&self.inner.site, plan).await?;
        tracing::debug!(site = %self.inner.site.id, contexts = plan.contexts.len(), "association established");
        Ok(PooledAssociation::new(association, permit, &self.inner, false))
    }

    /// Releases every idle association (at shutdown).
    pub async fn close_idle(&self) {
        let idle: Vec<Idle> = std::mem::take(&mut *self.inner.lock_idle());
        for Idle { association, .. } in idle {
            association.release(self.inner.site.response_timeout).await;
        }
    }
}

impl PoolInner {
    fn lock_idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        // A panic while holding this lock cannot leave the vector half-updated, so a poisoned
        // lock is still usable.
        self.idle.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn close_all(stale: Vec<Idle>, timeout: Duration) {
    for Idle { association, permit } in stale {
        tokio::spawn(async move {
            association.release(timeout).await;
            drop(permit);
        });
    }
}

async fn reap_idle(pool: Weak<PoolInner>) {
    let period = match pool.upgrade() {
        Some(inner) => (inner.site.idle_timeout / 2).max(Duration::from_millis(200)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else { return };
        let now = Instant::now();
        let stale: Vec<Idle> = {
            let mut idle = inner.lock_idle();
            let (stale, keep) = std::mem::take(&mut *idle)
                .into_iter()
                .partition(|i| now.duration_since(i.association.last_used) >= inner.site.idle_timeout);
            *idle = keep;
            stale
        };
        close_all(stale, inner.site.response_timeout);
    }
}

/// An association taken from the pool. Hand it back with [`done`](Self::done) once the
/// operation ended cleanly; dropped otherwise, it is aborted so a half-finished exchange can
/// never be reused.
#[derive(Debug)]
pub struct PooledAssociation {
    association: Option<DimseAssociation>,
    permit: Option<OwnedSemaphorePermit>,
    pool: Arc<PoolInner>,
    /// Whether this association served an earlier operation (it may have gone stale).
    pub reused: bool,
}

impl PooledAssociation {
    fn new(association: DimseAssociation, permit: OwnedSemaphorePermit, pool: &Arc<PoolInner>, reused: bool) -> Self {
        let open = pool.site.max_associations.max(1) - pool.permits.available_permits();
        let in_use = open.saturating_sub(pool.lock_idle().len());
        pool.peak_in_use.fetch_max(in_use, Ordering::Relaxed);
        PooledAssociation { association: Some(association), permit: Some(permit), pool: pool.clone(), reused }
    }

    pub fn association(&mut self) -> &mut DimseAssociation {
        // `done` and `discard` consume `self`; `take` leaves an empty handle that its owner
        // never uses again.
        self.association.as_mut().expect("association present until done, discarded or taken")
    }

    /// The operation ended cleanly: keep the association for the next one.
    pub fn done(mut self) {
        if let (Some(mut association), Some(permit)) = (self.association.take(), self.permit.take()) {
            if association.channel.is_at_message_boundary() {
                association.last_used = Instant::now();
                self.pool.lock_idle().push(Idle { association, permit });
                self.pool.returned.notify_one();
            } else {
                tokio::spawn(async move {
                    association.abort().await;
                    drop(permit);
                });
            }
        }
    }

    /// Moves the association out into a new handle, leaving this one empty (its drop then
    /// does nothing). `None` when it was already taken.
    pub(crate) fn take(&mut self) -> Option<PooledAssociation> {
        let association = self.association.take()?;
        Some(PooledAssociation {
            association: Some(association),
            permit: self.permit.take(),
            pool: self.pool.clone(),
            reused: self.reused,
        })
    }

    /// Aborts the association in place, leaving this handle empty.
    pub(crate) async fn take_for_abort(&mut self) {
        if let Some(taken) = self.take() {
            taken.discard().await;
        }
    }

    /// The association is unusable: abort it and free its slot.
    pub async fn discard(mut self) {
        if let Some(association) = self.association.take() {
            association.abort().await;
        }
        self.permit.take();
        self.pool.returned.notify_one();
    }
}

impl Drop for PooledAssociation {
    fn drop(&mut self) {
        if let Some(association) = self.association.take() {
            let permit = self.permit.take();
            let pool = self.pool.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    association.abort().await;
                    drop(permit);
                    pool.returned.notify_one();
                });
            }
        }
    }
}
