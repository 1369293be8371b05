//! One site of the federation as the gateway uses it: its configuration, the protocol it is
//! reached by, its health and what was sent to it. Every operation the gateway sends to a site
//! (search, retrieve, list, store, echo) goes through here, so that each outcome is recorded in
//! the site's health (the circuit breaker), no request reaches a site whose circuit is open,
//! and the request notes the site it contacted. The protocols behind are DIMSE (`dimse.rs`)
//! and DICOMweb (`dicomweb.rs`), each a variant of [`Protocol`]; what the core receives
//! (matches, a stream of instances, a store's outcome, [`Unanswered`]) is the same for both.

pub(crate) mod dicomweb;
pub(crate) mod dimse;
mod endpoint;
pub(crate) mod health;
mod pace;
pub(crate) mod touched;

pub(crate) use endpoint::endpoint;

/// How the gateway reaches a configured site: its association pool (retrieving by C-MOVE
/// into `move_scp`) or its DICOMweb client. TLS files are read here.
pub(crate) fn protocol(
    config: &crate::config::Config,
    site: &SiteConfig,
    move_scp: Option<&pacs_adapter::StoreScp>,
) -> Result<Protocol, String> {
    use crate::config::{RetrieveMode, SiteProtocol};
    match &site.protocol {
        SiteProtocol::Dimse(dimse) => {
            let pool = pacs_adapter::AssociationPool::new(endpoint(config, site)?);
            let method = match (dimse.retrieve, move_scp) {
                (RetrieveMode::CMove, Some(scp)) => pacs_adapter::RetrieveMethod::Move(scp.clone()),
                _ => pacs_adapter::RetrieveMethod::Get,
            };
            Ok(Protocol::Dimse(Dimse { pool, method }))
        }
        SiteProtocol::Dicomweb(web) => Ok(Protocol::Dicomweb(Arc::new(Dicomweb::new(site, web)?))),
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dicom_object::InMemDicomObject;
use dicomweb_model::{SeriesInstanceUid, SiteId, SopInstanceUid, StudyInstanceUid};
use futures::stream::BoxStream;
use futures::StreamExt;
use pacs_adapter::{DimseError, FindRequest, PlannedInstance, QueryLevel, RetrieveTarget, RetrievedInstance};

use crate::config::SiteConfig;
use crate::sites::dicomweb::{Dicomweb, WebError};
use crate::sites::dimse::Dimse;
use crate::sites::health::{CircuitOpen, SiteHealth};
use crate::sites::touched::Touched;

/// The echo time (an association opened, a C-ECHO answered: a few round trips) per
/// association a retrieval uses when `retrieve_associations` is not configured.
pub(crate) const ECHO_PER_ASSOCIATION: Duration = Duration::from_millis(10);

/// The instances of a retrieval from one site, in the order they arrive; a retrieval that
/// failed part-way ends with an `Err` after the instances that did arrive.
pub(crate) type InstanceStream = BoxStream<'static, Result<RetrievedInstance, Unanswered>>;

#[derive(Debug)]
pub(crate) struct Site {
    pub(crate) config: SiteConfig,
    pub(crate) protocol: Protocol,
    /// Shared with the streams of its answers, which record faults met after they began.
    pub(crate) health: Arc<SiteHealth>,
    pub(crate) sent: Arc<SentOperations>,
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
    Dicomweb(Arc<Dicomweb>),
}

impl Protocol {
    /// One echo outside serving (`dicomweb-gateway check`), the connection closed after it.
    pub(crate) async fn echo_once(&self) -> Result<Duration, String> {
        match self {
            Protocol::Dimse(dimse) => {
                let result = dimse.echo().await.map_err(|e| e.to_string());
                dimse.pool.close_idle().await;
                result
            }
            Protocol::Dicomweb(web) => web.echo().await.map_err(|e| e.to_string()),
        }
    }
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

/// A site's answer to a store: stored, with the warning status it gave, if any, and the UIDs
/// it is retrieved by there when the site said (a DICOMweb origin that de-identifies stores
/// it under its pseudonyms).
#[derive(Debug, Clone)]
pub(crate) struct StoredAtSite {
    pub(crate) warning: Option<u16>,
    pub(crate) retrieved_by: Option<(StudyInstanceUid, SeriesInstanceUid, SopInstanceUid)>,
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
    #[error("{0}")]
    Web(#[from] WebError),
    #[error("site {site}: {open}")]
    CircuitOpen { site: SiteId, open: CircuitOpen },
    /// A C-FIND whose every match was needed (a count, a listing) had more than the bound.
    #[error("site {site} has more than {limit} matches (federation.max_matches)")]
    TooManyMatches { site: SiteId, limit: usize },
}

impl Unanswered {
    /// Why the site itself is at fault (unreachable, timed out, broke its protocol, ...), when
    /// it is: then it counts against the site's health and another holder may be tried. A site
    /// that answered with a failure is there.
    pub(crate) fn fault(&self) -> Option<&'static str> {
        match self {
            Unanswered::Dimse(e) => health::is_site_fault(e).then(|| health::fault_reason(e)),
            Unanswered::Web(e) => e.fault(),
            Unanswered::CircuitOpen { .. } | Unanswered::TooManyMatches { .. } => None,
        }
    }

    /// A short reason for people, without anything a site sent as free text.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Unanswered::Dimse(e) => health::fault_reason(e),
            Unanswered::Web(e) => e.fault_reason(),
            Unanswered::CircuitOpen { .. } => "its circuit is open",
            Unanswered::TooManyMatches { .. } => "too many matches",
        }
    }

    /// The site answered, or could not be reached, in its protocol (not refused by the gateway
    /// itself: an open circuit, too many matches).
    pub(crate) fn is_from_site(&self) -> bool {
        matches!(self, Unanswered::Dimse(_) | Unanswered::Web(_))
    }

    /// The site could not be used at all (unreachable, timed out, its circuit open): the rest
    /// of a request's work for it is not sent to wait out the same deadline.
    pub(crate) fn is_unavailable(&self) -> bool {
        match self {
            Unanswered::Dimse(e) => e.is_unavailable(),
            Unanswered::Web(e) => matches!(e, WebError::Connect { .. } | WebError::Timeout { .. }),
            Unanswered::CircuitOpen { .. } => true,
            Unanswered::TooManyMatches { .. } => false,
        }
    }
}

impl Site {
    pub(crate) fn id(&self) -> &SiteId {
        &self.config.id
    }

    /// Whether the site is a DICOMweb origin.
    pub(crate) fn speaks_dicomweb(&self) -> bool {
        matches!(self.protocol, Protocol::Dicomweb(_))
    }

    /// Whether the site's data is de-identified before it reaches the gateway (`deidentified =
    /// true`): then a de-identifying gateway passes it on as it comes.
    pub(crate) fn deidentified(&self) -> bool {
        self.config.deidentified
    }

    /// The site's connections now.
    pub(crate) fn connections(&self) -> Connections {
        match &self.protocol {
            Protocol::Dimse(dimse) => Connections {
                open: dimse.pool.open_associations(),
                idle: dimse.pool.idle_associations(),
                peak_in_use: dimse.pool.peak_in_use(),
            },
            Protocol::Dicomweb(web) => {
                let (in_use, peak) = web.in_use();
                Connections { open: in_use, idle: 0, peak_in_use: peak }
            }
        }
    }

    /// The most connections (associations, HTTP requests) the site is sent at once.
    pub(crate) fn max_connections(&self) -> usize {
        match &self.config.protocol {
            crate::config::SiteProtocol::Dimse(dimse) => dimse.max_associations,
            crate::config::SiteProtocol::Dicomweb(web) => web.max_connections,
        }
    }

    /// Associations one study or series retrieval uses at once: as configured, else chosen by
    /// the site's round trip as its last echo measured it. Each C-STORE sub-operation of a
    /// C-GET waits for its response, so a retrieval over one association pays a round trip per
    /// instance; more associations hide it. Near the PACS (an echo within
    /// [`ECHO_PER_ASSOCIATION`]) one is enough; across a long link, one more per
    /// `ECHO_PER_ASSOCIATION` of echo, up to `max_associations`.
    pub(crate) fn retrieve_associations(&self) -> usize {
        let Some(dimse) = self.config.dimse() else { return 1 };
        if let Some(configured) = dimse.retrieve_associations {
            return configured;
        }
        let echo = match self.health.report().last_echo {
            Some((_, Ok(echo))) => echo,
            _ => return 1,
        };
        let chosen = (echo.as_secs_f64() / ECHO_PER_ASSOCIATION.as_secs_f64()).floor() as usize;
        chosen.clamp(1, dimse.max_associations.max(1))
    }

    /// The deadline of one whole operation at this site: twice its response timeout.
    pub(crate) fn operation_budget(&self) -> Duration {
        self.config.timeout * 2
    }

    fn admit(&self, touched: &Touched) -> Result<(), Unanswered> {
        touched.note_site(self.id().as_str());
        self.health.admit().map_err(|open| Unanswered::CircuitOpen { site: self.id().clone(), open })
    }

    /// Records what the site's protocol answered: a fault counts against its health.
    fn observed<T>(&self, outcome: Result<T, Unanswered>) -> Result<T, Unanswered> {
        if self.record_health(outcome.as_ref().err()) {
            count(&self.sent.faults);
        }
        outcome
    }

    /// Records an outcome in the site's health: a fault of the site counts against it, any
    /// other outcome shows it is there. True for a fault.
    fn record_health(&self, error: Option<&Unanswered>) -> bool {
        match error.and_then(Unanswered::fault) {
            Some(reason) => {
                self.health.record_fault(reason);
                true
            }
            None => {
                self.health.record_success();
                false
            }
        }
    }

    /// `operation` within the site's whole budget: however slowly an origin trickles an answer
    /// that is read whole (each read within `timeout`), it ends in time.
    async fn within_budget<T>(
        &self,
        operation: &'static str,
        answer: impl std::future::Future<Output = Result<T, Unanswered>>,
    ) -> Result<T, Unanswered> {
        let budget = self.operation_budget();
        tokio::time::timeout(budget, answer).await.unwrap_or_else(|_| Err(self.over_budget(operation, budget)))
    }

    /// An operation that ran past the site's whole budget, in its protocol's terms.
    fn over_budget(&self, operation: &'static str, after: Duration) -> Unanswered {
        match &self.protocol {
            Protocol::Dimse(_) => Unanswered::Dimse(DimseError::Timeout {
                site: self.id().clone(),
                phase: pacs_adapter::Phase::Operation,
                after,
            }),
            Protocol::Dicomweb(_) => Unanswered::Web(WebError::Timeout { site: self.id().clone(), operation, after }),
        }
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
        let answer = async {
            match &self.protocol {
                Protocol::Dimse(dimse) => {
                    let request = FindRequest { level, identifier, deadline: Some(began + budget) };
                    Ok(dimse.find(request, self.max_matches).await?)
                }
                Protocol::Dicomweb(web) => Ok(web.find(touched, level, &identifier, self.max_matches).await?),
            }
        };
        let outcome = match tokio::time::timeout(budget + Duration::from_secs(1), answer).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.over_budget("QIDO-RS", budget)),
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
    ) -> Result<InstanceStream, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.retrieve);
        let began = Instant::now();
        let outcome: Result<InstanceStream, Unanswered> = match &self.protocol {
            Protocol::Dimse(dimse) => {
                let associations = self.retrieve_associations();
                match dimse.retrieve(target, associations).await {
                    Ok(instances) => Ok(instances.map(|item| item.map_err(Unanswered::Dimse)).boxed()),
                    Err(e) => Err(e.into()),
                }
            }
            Protocol::Dicomweb(web) => match web.retrieve(touched, target).await {
                Ok(instances) => Ok(instances.map(|item| item.map_err(Unanswered::Web)).boxed()),
                Err(e) => Err(e.into()),
            },
        };
        self.sent.retrieve_start_micros.fetch_add(began.elapsed().as_micros() as u64, Ordering::Relaxed);
        Ok(self.noting_faults(self.observed(outcome)?, Unanswered::fault))
    }

    /// `answer`, whose failures after it began count against the site's health as failures
    /// before would (an origin breaking off a response, an association dropped mid-study):
    /// `fault` says which are the site's faults, and why.
    fn noting_faults<T: Send + 'static, E: Send + 'static>(
        &self,
        answer: BoxStream<'static, Result<T, E>>,
        fault: fn(&E) -> Option<&'static str>,
    ) -> BoxStream<'static, Result<T, E>> {
        let (health, sent) = (self.health.clone(), self.sent.clone());
        answer
            .inspect(move |item| {
                if let Some(reason) = item.as_ref().err().and_then(fault) {
                    health.record_fault(reason);
                    count(&sent.faults);
                }
            })
            .boxed()
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
            Protocol::Dimse(dimse) => dimse.list_instances(scope, deadline).await.map_err(Unanswered::from),
            Protocol::Dicomweb(web) => {
                let listed =
                    async { web.list_instances(touched, scope, self.max_matches).await.map_err(Unanswered::from) };
                self.within_budget("QIDO-RS", listed).await
            }
        };
        self.observed(outcome)
    }

    /// The metadata of `target` as a DICOMweb origin gives it (see [`Dicomweb::metadata`]);
    /// `None` from a DIMSE site, which has no such resource.
    pub(crate) async fn origin_metadata(
        &self,
        touched: &Touched,
        target: &RetrieveTarget,
        max: usize,
    ) -> Result<Option<dicomweb::OriginMetadata>, Unanswered> {
        let Protocol::Dicomweb(web) = &self.protocol else { return Ok(None) };
        self.admit(touched)?;
        count(&self.sent.retrieve);
        let answer = async { web.metadata(touched, target, max).await.map_err(Unanswered::from) };
        let outcome = self.within_budget("WADO-RS metadata", answer).await;
        self.observed(outcome)
    }

    /// One instance's resource (frames, rendered) as a DICOMweb origin answers the caller's
    /// request for it (see [`Dicomweb::relay`]); `None` from a DIMSE site.
    pub(crate) async fn relay(
        &self,
        touched: &Touched,
        instance: &RetrieveTarget,
        asked: &dicomweb::Relay,
    ) -> Result<Option<dicomweb::Relayed>, Unanswered> {
        let Protocol::Dicomweb(web) = &self.protocol else { return Ok(None) };
        self.admit(touched)?;
        count(&self.sent.retrieve);
        let outcome = web.relay(touched, instance, asked).await.map_err(Unanswered::from);
        let relayed = self
            .observed(outcome)?
            .map(|relayed| dicomweb::Relayed { body: self.noting_faults(relayed.body, WebError::fault), ..relayed });
        Ok(relayed)
    }

    /// C-STORE (or STOW-RS) of one Part-10 instance.
    pub(crate) async fn store(&self, touched: &Touched, part10: bytes::Bytes) -> Result<StoredAtSite, Unanswered> {
        self.admit(touched)?;
        count(&self.sent.store);
        let deadline = Instant::now() + self.operation_budget();
        let outcome = match &self.protocol {
            Protocol::Dimse(dimse) => match dimse.store(&part10, deadline).await {
                Ok(stored) => {
                    Ok(StoredAtSite { warning: (stored.status.0 != 0).then_some(stored.status.0), retrieved_by: None })
                }
                Err(e) => Err(e.into()),
            },
            Protocol::Dicomweb(web) => match web.store(touched, part10).await {
                Ok(answer) => Ok(StoredAtSite { warning: answer.warning, retrieved_by: answer.retrieved_by }),
                Err(e) => Err(e.into()),
            },
        };
        self.observed(outcome)
    }

    /// A C-ECHO (over DICOMweb, a search for one study), whatever the circuit's state (it is
    /// how an open circuit is probed), recorded as the site's latest echo.
    pub(crate) async fn echo(&self) -> Result<Duration, Unanswered> {
        count(&self.sent.echo);
        let budget = self.config.timeout;
        let echoed = async {
            match &self.protocol {
                Protocol::Dimse(dimse) => Ok(dimse.echo().await?),
                Protocol::Dicomweb(web) => Ok(web.echo().await?),
            }
        };
        let outcome = match tokio::time::timeout(budget, echoed).await {
            Ok(outcome) => outcome,
            Err(_) => Err(self.over_budget("echo", budget)),
        };
        self.health.record_echo(outcome.as_ref().map(|rtt| *rtt).map_err(|e| e.fault().unwrap_or_else(|| e.reason())));
        self.record_health(outcome.as_ref().err());
        outcome
    }
}
