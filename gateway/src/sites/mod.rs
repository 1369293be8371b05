//! One site of the federation as the gateway uses it: its configuration, the protocol it is
//! reached by, its health and what was sent to it. Every operation the gateway sends to a site
//! (search, retrieve, list, store, echo) goes through here, so that each outcome is recorded in
//! the site's health (the circuit breaker), no request reaches a site whose circuit is open,
//! and the request notes the site it contacted. The protocol behind is DIMSE (`dimse.rs`); a
//! second one is one more variant of [`Protocol`].

pub(crate) mod dimse;
mod endpoint;
pub(crate) mod health;
pub(crate) mod touched;

pub(crate) use endpoint::endpoint;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dicom_object::InMemDicomObject;
use dicomweb_model::SiteId;
use pacs_adapter::{
    DimseError, DimseStream, FindRequest, PlannedInstance, QueryLevel, RetrieveTarget, RetrievedInstance, StoreOutcome,
};

use crate::config::SiteConfig;
use crate::sites::dimse::Dimse;
use crate::sites::health::{CircuitOpen, SiteHealth};
use crate::sites::touched::Touched;

#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) config: SiteConfig,
    pub(crate) protocol: Protocol,
    pub(crate) health: SiteHealth,
    pub(crate) sent: SentOperations,
    /// The most matches of one C-FIND collected (`federation.max_matches`).
    pub(crate) max_matches: usize,
}

/// A site's place among the gateway's sites: configuration order, which also breaks ties when
/// results are merged. Not a place in a request's own list of sites (those are positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SiteIndex(pub usize);

impl std::ops::Index<SiteIndex> for [Site] {
    type Output = Site;

    fn index(&self, index: SiteIndex) -> &Site {
        &self[index.0]
    }
}

impl std::ops::Index<SiteIndex> for Vec<Site> {
    type Output = Site;

    fn index(&self, index: SiteIndex) -> &Site {
        &self[index.0]
    }
}

/// How the gateway reaches a site.
#[derive(Debug)]
pub(crate) enum Protocol {
    Dimse(Dimse),
}

/// Connections to a site (associations, for DIMSE): open (in use or idle), idle, and the most
/// in use at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Connections {
    pub(crate) open: usize,
    pub(crate) idle: usize,
    pub(crate) peak_in_use: usize,
}

/// The matches of one C-FIND, at most the site's `max_matches`.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) results: Vec<InMemDicomObject>,
    /// The site had more matches than were collected (the C-FIND was cancelled there).
    pub(crate) truncated: bool,
}

/// How many operations the gateway has sent to a site since it started, by kind.
#[derive(Debug, Default)]
pub(crate) struct SentOperations {
    pub(crate) find: AtomicU64,
    pub(crate) retrieve: AtomicU64,
    pub(crate) store: AtomicU64,
    pub(crate) echo: AtomicU64,
    /// Operations that ended in a site fault (unreachable, timed out, aborted, ...).
    pub(crate) faults: AtomicU64,
    /// C-FIND time, whole answers collected, in microseconds (with `find`: the mean).
    pub(crate) find_micros: AtomicU64,
    /// Time from sending a C-GET / C-MOVE to the stream of its instances, in microseconds.
    pub(crate) retrieve_start_micros: AtomicU64,
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Why an operation did not reach an answer from a site.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unanswered {
    #[error("{0}")]
    Dimse(#[from] DimseError),
    #[error("site {site}: {open}")]
    CircuitOpen { site: SiteId, open: CircuitOpen },
    /// A C-FIND whose every match was needed (a count, a listing) had more than the bound.
    #[error("site {site} has more than {limit} matches (federation.max_matches)")]
    TooManyMatches { site: SiteId, limit: usize },
}

impl Site {
    pub(crate) fn id(&self) -> &SiteId {
        &self.config.id
    }

    /// The site's connections now.
    pub(crate) fn connections(&self) -> Connections {
        match &self.protocol {
            Protocol::Dimse(dimse) => Connections {
                open: dimse.pool.open_associations(),
                idle: dimse.pool.idle_associations(),
                peak_in_use: dimse.pool.peak_in_use(),
            },
        }
    }

    /// The deadline of one whole operation at this site: twice its response timeout.
    pub(crate) fn operation_budget(&self) -> Duration {
        self.config.timeout * 2
    }

    fn admit(&self, touched: &Touched) -> Result<(), Unanswered> {
        touched.note_site(self.id().as_str());
        self.health.admit().map_err(|open| Unanswered::CircuitOpen { site: self.id().clone(), open })
    }

    fn observed<T>(&self, outcome: Result<T, DimseError>) -> Result<T, Unanswered> {
        self.health.record(&outcome);
        if outcome.as_ref().is_err_and(crate::sites::health::is_site_fault) {
            count(&self.sent.faults);
        }
        Ok(outcome?)
    }

    /// A C-FIND collected whole (counts and listings): more than `max_matches` matches is an
    /// error, never a wrong count.
    pub(crate) async fn find_all(
        &self,
        touched: &Touched,
        level: QueryLevel,
        identifier: InMemDicomObject,
    ) -> Result<Vec<InMemDicomObject>, Unanswered> {
        let found = self.find_at_most(touched, level, identifier).await?;
        if found.truncated {
            return Err(Unanswered::TooManyMatches { site: self.id().clone(), limit: self.max_matches });
        }
        Ok(found.results)
    }

    /// A C-FIND collected up to `max_matches` matches (then cancelled at the site), within the
    /// site's operation budget (also enforced from outside the DIMSE layer, so that a PACS that
    /// never answers cannot hold a request). Memory is bounded by the matches kept.
    pub(crate) async fn find_at_most(
        &self,
        touched: &Touched,
        level: QueryLevel,
        identifier: InMemDicomObject,
    ) -> Result<Found, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.find);
        let budget = self.operation_budget();
        let began = Instant::now();
        let request = FindRequest { level, identifier, deadline: Some(began + budget) };
        let answer = async {
            match &self.protocol {
                Protocol::Dimse(dimse) => dimse.find(request, self.max_matches).await,
            }
        };
        let outcome = match tokio::time::timeout(budget + Duration::from_secs(1), answer).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DimseError::Timeout {
                site: self.id().clone(),
                phase: pacs_adapter::Phase::Operation,
                after: budget,
            }),
        };
        self.sent.find_micros.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        let (results, truncated) = self.observed(outcome)?;
        if truncated {
            tracing::warn!(site = %self.id(), limit = self.max_matches, "C-FIND cut at federation.max_matches");
        }
        Ok(Found { results, truncated })
    }

    /// Starts a C-GET or C-MOVE (the site's retrieve method) of `target`: a study or series
    /// as instance-level sub-requests over `retrieve_associations` associations when that is
    /// more than one, instances in the order they arrive.
    pub(crate) async fn retrieve(
        &self,
        touched: &Touched,
        target: RetrieveTarget,
    ) -> Result<DimseStream<RetrievedInstance>, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.retrieve);
        let began = Instant::now();
        let outcome = match &self.protocol {
            Protocol::Dimse(dimse) => dimse.retrieve(target, self.config.retrieve_associations).await,
        };
        self.sent.retrieve_start_micros.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        self.observed(outcome)
    }

    /// The instances under `scope`, listed by C-FIND.
    pub(crate) async fn list_instances(
        &self,
        touched: &Touched,
        scope: &RetrieveTarget,
    ) -> Result<Vec<PlannedInstance>, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.find);
        let deadline = Instant::now() + self.config.timeout;
        let outcome = match &self.protocol {
            Protocol::Dimse(dimse) => dimse.list_instances(scope, deadline).await,
        };
        self.observed(outcome)
    }

    /// C-STORE of one Part-10 instance.
    pub(crate) async fn store(&self, touched: &Touched, part10: &[u8]) -> Result<StoreOutcome, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.store);
        let deadline = Instant::now() + self.operation_budget();
        let outcome = match &self.protocol {
            Protocol::Dimse(dimse) => dimse.store(part10, deadline).await,
        };
        self.observed(outcome)
    }

    /// A C-ECHO, whatever the circuit's state (it is how an open circuit is probed), recorded
    /// as the site's latest echo.
    pub(crate) async fn echo(&self) -> Result<Duration, DimseError> {
        count(&self.sent.echo);
        let budget = self.config.timeout;
        let echoed = async {
            match &self.protocol {
                Protocol::Dimse(dimse) => dimse.echo().await,
            }
        };
        let outcome = match tokio::time::timeout(budget, echoed).await {
            Ok(outcome) => outcome,
            Err(_) => Err(DimseError::Timeout {
                site: self.id().clone(),
                phase: pacs_adapter::Phase::Operation,
                after: budget,
            }),
        };
        self.health.record_echo(&outcome);
        outcome
    }
}
