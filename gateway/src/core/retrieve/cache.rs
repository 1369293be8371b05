//! The retrieval cache (`[cache]`) and request coalescing (docs/CACHE.md).
//!
//! - Instances: de-identified instances (what leaves the gateway, never a site's own bytes when
//!   de-identifying), keyed by project, the site's study UID and the instance's UID as shown,
//!   in memory (moka), bounded in bytes by `cache.memory`. DICOM instances do not change under
//!   their UID, so they stay until evicted by size.
//! - Manifests: what a retrieval target (study, series, instance list) yielded, in order, once
//!   a retrieval of it completed; trusted for `cache.ttl`, which bounds how long an instance
//!   added at a site behind the gateway's back goes unseen. A target whose manifest is fresh and
//!   whose instances are all cached is served without a PACS.
//! - Flights: concurrent requests for the same target (in the same project) share one
//!   retrieval. Each reader is streamed what has arrived so far, then the rest as it arrives.
//!   A flight buffers at most [`FLIGHT_AHEAD`] bytes beyond its slowest reader (the PACS is
//!   read no faster) and drops what every reader has passed once it holds more than
//!   [`FLIGHT_KEPT`] bytes; a request arriving after that retrieves on its own. When its last
//!   reader goes away, the flight stops and its PACS operation is cancelled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use dicomweb_model::{SopInstanceUid, StudyInstanceUid};
use futures::{stream, Future, StreamExt};
use pacs_adapter::{RetrieveTarget, RetrievedInstance};
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::core::retrieve::disk_cache::{name_of, DiskTier, Marker};
use crate::core::retrieve::flight::Flight;
use crate::core::retrieve::Retrieval;
use crate::core::Error;

/// A flight reads at most this many bytes ahead of its slowest reader.
pub(crate) const FLIGHT_AHEAD: usize = 64 << 20;
/// A flight keeps what every reader has passed (for requests that join late) up to this size.
pub(crate) const FLIGHT_KEPT: usize = 64 << 20;

/// A retrieval target as the cache knows it: the project's cache scope and the site's UIDs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TargetKey {
    project: String,
    target: RetrieveTarget,
}

impl TargetKey {
    pub(crate) fn new(project: &str, target: &RetrieveTarget) -> TargetKey {
        TargetKey { project: project.to_owned(), target: target.clone() }
    }

    pub(crate) fn study(&self) -> &StudyInstanceUid {
        &self.target.study
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct InstanceKey {
    project: String,
    study: StudyInstanceUid,
    /// The SOP Instance UID as the client sees it (a pseudonym when de-identifying).
    instance: SopInstanceUid,
}

/// What a completed retrieval of a target yielded.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Manifest {
    /// The instances as the client sees them, in order.
    instances: Vec<SopInstanceUid>,
    withheld_before_first: usize,
    /// Why they were withheld (each reason once).
    #[serde(default)]
    withheld_reasons: Vec<String>,
    etag: String,
    /// When the retrieval completed (ms since the Unix epoch).
    completed_ms: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl TargetKey {
    fn file_name(&self) -> String {
        let target = &self.target;
        let instances = target.instances.iter().map(SopInstanceUid::as_str).collect::<Vec<_>>().join("\\");
        let series = target.series.as_ref().map_or("", |s| s.as_str());
        name_of("manifest", &[&self.project, target.study.as_str(), series, &instances])
    }
}

impl InstanceKey {
    fn file_name(&self) -> String {
        name_of("instance", &[&self.project, self.study.as_str(), self.instance.as_str()])
    }
}

/// The file that says when a study's manifests were last forgotten.
fn forgotten_file(study: &StudyInstanceUid) -> String {
    name_of("study-forgotten", &[study.as_str()])
}

/// Counts for operators and tests (`/admin/cache`).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Retrievals served whole from the cache.
    pub(crate) hits: AtomicU64,
    /// Retrievals that went to a PACS (each a flight of its own).
    pub(crate) misses: AtomicU64,
    /// Retrievals that joined a flight under way.
    pub(crate) coalesced: AtomicU64,
    /// Bytes of instances served from the cache.
    pub(crate) bytes_served: AtomicU64,
    /// Instances evicted from memory for size.
    pub(crate) evictions: AtomicU64,
}

#[derive(Debug)]
pub(crate) struct RetrievalCache {
    instances: Option<moka::sync::Cache<InstanceKey, RetrievedInstance>>,
    disk: Option<Arc<DiskTier>>,
    manifests: moka::sync::Cache<TargetKey, Arc<Manifest>>,
    /// Metadata responses made from cached retrievals, by project and entity tag.
    metadata: moka::sync::Cache<(String, String), bytes::Bytes>,
    ttl: Duration,
    flights: Mutex<HashMap<TargetKey, Weak<Flight>>>,
    pub(crate) counters: Arc<Counters>,
}

impl RetrievalCache {
    pub(crate) fn new(config: &CacheConfig) -> anyhow::Result<RetrievalCache> {
        let counters = Arc::new(Counters::default());
        let disk = match (&config.disk_dir, config.disk_bytes) {
            (Some(dir), bytes) if bytes > 0 => Some(Arc::new(DiskTier::open(dir, bytes, config.ttl)?)),
            _ => None,
        };
        let instances = (config.memory_bytes > 0).then(|| {
            let evictions = counters.clone();
            moka::sync::Cache::builder()
                .max_capacity(config.memory_bytes)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .weigher(|_: &InstanceKey, instance: &RetrievedInstance| {
                    u32::try_from(instance.part10.len()).unwrap_or(u32::MAX)
                })
                .eviction_listener(move |_, _, cause| {
                    if cause == moka::notification::RemovalCause::Size {
                        evictions.evictions.fetch_add(1, Ordering::Relaxed);
                    }
                })
                .build()
        });
        let manifests = moka::sync::Cache::builder()
            .max_capacity(100_000)
            .time_to_live(config.ttl.max(Duration::from_millis(1)))
            .build();
        let metadata = moka::sync::Cache::builder()
            .max_capacity((config.memory_bytes / 8).max(1 << 20))
            .weigher(|_: &(String, String), json: &bytes::Bytes| u32::try_from(json.len()).unwrap_or(u32::MAX))
            .time_to_live(config.ttl.max(Duration::from_millis(1)))
            .build();
        Ok(RetrievalCache {
            instances,
            disk,
            manifests,
            metadata,
            ttl: config.ttl,
            flights: Mutex::new(HashMap::new()),
            counters,
        })
    }

    /// The fresh manifest of `key`: from memory, else from the disk tier.
    async fn manifest(&self, key: &TargetKey) -> Option<Arc<Manifest>> {
        let fresh = |m: &Manifest| now_ms().saturating_sub(m.completed_ms) < self.ttl.as_millis() as u64;
        if let Some(manifest) = self.manifests.get(key) {
            return fresh(&manifest).then_some(manifest);
        }
        let disk = self.disk.clone()?;
        let (name, forgotten) = (key.file_name(), forgotten_file(key.study()));
        let manifest = tokio::task::spawn_blocking(move || {
            let manifest: Manifest = serde_json::from_slice(&disk.read(&name)?).ok()?;
            // A damaged marker: the study may have changed, so its manifests are not trusted.
            let forgotten_ms = match disk.read_marker(&forgotten) {
                Marker::Absent => None,
                Marker::Present(bytes) => Some(bytes.try_into().map(u64::from_le_bytes).unwrap_or(u64::MAX)),
                Marker::Damaged => Some(u64::MAX),
            };
            forgotten_ms.is_none_or(|at| manifest.completed_ms > at).then_some(manifest)
        })
        .await
        .ok()??;
        let manifest = Arc::new(manifest);
        fresh(&manifest).then(|| {
            self.manifests.insert(key.clone(), manifest.clone());
            manifest
        })
    }

    /// An instance from memory, else from the disk tier (then kept in memory again).
    async fn instance(&self, key: InstanceKey) -> Option<RetrievedInstance> {
        if let Some(found) = self.instances.as_ref().and_then(|m| m.get(&key)) {
            return Some(found);
        }
        let disk = self.disk.clone()?;
        let name = key.file_name();
        let bytes = tokio::task::spawn_blocking(move || disk.read(&name)).await.ok()??;
        let instance = RetrievedInstance::from_part10(bytes::Bytes::from(bytes)).ok()?;
        if let Some(memory) = &self.instances {
            memory.insert(key, instance.clone());
        }
        Some(instance)
    }

    fn is_cached(&self, key: &InstanceKey) -> bool {
        self.instances.as_ref().is_some_and(|m| m.contains_key(key))
            || self.disk.as_ref().is_some_and(|d| d.contains(&key.file_name()))
    }

    /// Whether the cache holds every instance of `key` (`shown` as for [`Self::cached`]).
    pub(crate) async fn holds(
        &self,
        key: &TargetKey,
        shown: impl Fn(&SopInstanceUid) -> Option<SopInstanceUid>,
    ) -> bool {
        self.held(key, shown).await.is_some()
    }

    /// What the cache holds of `key` when it holds all of it: the instances' UIDs as the
    /// client sees them, those withheld before the first, why, and the entity tag.
    async fn held(
        &self,
        key: &TargetKey,
        shown: impl Fn(&SopInstanceUid) -> Option<SopInstanceUid>,
    ) -> Option<(Vec<SopInstanceUid>, usize, Vec<String>, String)> {
        if self.instances.is_none() && self.disk.is_none() {
            return None;
        }
        let held = match (self.manifest(key).await, key.target.instances.as_slice()) {
            (Some(manifest), _) => (
                manifest.instances.clone(),
                manifest.withheld_before_first,
                manifest.withheld_reasons.clone(),
                manifest.etag.clone(),
            ),
            // One instance is itself the whole answer.
            (None, [only]) => {
                let uid = shown(only)?;
                let etag = etag_of(std::slice::from_ref(&uid));
                (vec![uid], 0, Vec::new(), etag)
            }
            (None, _) => return None,
        };
        held.0.iter().all(|uid| self.is_cached(&self.instance_key(key, uid))).then_some(held)
    }

    fn instance_key(&self, key: &TargetKey, uid: &SopInstanceUid) -> InstanceKey {
        InstanceKey { project: key.project.clone(), study: key.study().clone(), instance: uid.clone() }
    }

    /// The retrieval of `key` from the cache, when its instances are all there. `shown` gives
    /// an instance UID as the client sees it (the pseudonym when de-identifying). Instances on
    /// disk are read as the response goes; one found damaged then ends it with an error.
    pub(crate) async fn cached(
        self: &Arc<Self>,
        key: &TargetKey,
        shown: impl Fn(&SopInstanceUid) -> Option<SopInstanceUid>,
    ) -> Option<Retrieval> {
        let (uids, withheld, withheld_reasons, etag) = self.held(key, shown).await?;
        let instance_key = |uid: &SopInstanceUid| self.instance_key(key, uid);
        let mut keys = uids.iter().map(instance_key);
        let first = self.instance(keys.next()?).await?;
        self.counters.hits.fetch_add(1, Ordering::Relaxed);
        self.counters.bytes_served.fetch_add(first.part10.len() as u64, Ordering::Relaxed);
        let cache = self.clone();
        let rest = stream::iter(keys.collect::<Vec<_>>())
            .then(move |key| {
                let cache = cache.clone();
                async move {
                    let instance = cache.instance(key).await.ok_or_else(|| {
                        Error::Internal("a cached instance was lost or found damaged; retrieve again".into())
                    })?;
                    cache.counters.bytes_served.fetch_add(instance.part10.len() as u64, Ordering::Relaxed);
                    Ok(instance)
                }
            })
            .boxed();
        Some(Retrieval { first, rest, withheld, withheld_reasons, partly: Vec::new(), etag: Some(etag) })
    }

    /// The metadata response kept for a retrieval served from the cache (by its entity tag).
    pub(crate) fn metadata(&self, project: &str, tag: &str) -> Option<bytes::Bytes> {
        self.metadata.get(&(project.to_owned(), tag.to_owned()))
    }

    pub(crate) fn keep_metadata(&self, project: &str, tag: &str, json: bytes::Bytes) {
        if self.instances.is_some() || self.disk.is_some() {
            self.metadata.insert((project.to_owned(), tag.to_owned()), json);
        }
    }

    /// Forgets what every project's retrievals of `study` (the site's UID) yielded, so that
    /// the next retrieval sees what was added (after a STOW-RS into it).
    pub(crate) fn forget_study(&self, study: &StudyInstanceUid) {
        let stale: Vec<TargetKey> =
            self.manifests.iter().filter(|(key, _)| key.study() == study).map(|(key, _)| (*key).clone()).collect();
        for key in stale {
            self.manifests.invalidate(&key);
        }
        if let Some(disk) = self.disk.clone() {
            let name = forgotten_file(study);
            tokio::task::spawn_blocking(move || disk.write_marker(&name, &now_ms().to_le_bytes()));
        }
    }

    /// Joins the flight of `key` under way, or starts one with `retrieve`, and waits for its
    /// first instance.
    pub(crate) async fn join_or_start<F>(self: &Arc<Self>, key: TargetKey, retrieve: F) -> Result<Retrieval, Error>
    where
        F: Future<Output = Result<Retrieval, Error>> + Send + 'static,
    {
        let (flight, mut reader) = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            let joined =
                flights.get(&key).and_then(Weak::upgrade).and_then(|flight| Some((flight.clone(), flight.join()?)));
            match joined {
                Some(joined) => {
                    self.counters.coalesced.fetch_add(1, Ordering::Relaxed);
                    joined
                }
                None => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    let flight = Flight::new(FLIGHT_AHEAD, FLIGHT_KEPT);
                    let Some(reader) = flight.join() else {
                        return Err(Error::Internal("a new retrieval cannot be read".into()));
                    };
                    flights.insert(key.clone(), Arc::downgrade(&flight));
                    let task = fly(self.clone(), key.clone(), flight.clone(), retrieve);
                    // The sites the flight contacts are noted for the request that started it (its
                    // retrieval carries that request's Access).
                    tokio::spawn(task);
                    (flight, reader)
                }
            }
        };
        let first = match reader.next().await {
            Some(Ok(first)) => first,
            Some(Err(e)) => return Err(e),
            None => return Err(Error::NotFound("no such study, series or instance".into())),
        };
        let (withheld, withheld_reasons, partly) = flight.withheld();
        Ok(Retrieval { first, rest: reader.into_stream(), withheld, withheld_reasons, partly, etag: None })
    }

    /// Counters and sizes, as JSON.
    pub(crate) fn report(&self) -> serde_json::Value {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (entries, bytes) = match &self.instances {
            Some(instances) => {
                instances.run_pending_tasks();
                (instances.entry_count(), instances.weighted_size())
            }
            None => (0, 0),
        };
        let flights =
            self.flights.lock().unwrap_or_else(|p| p.into_inner()).values().filter(|w| w.strong_count() > 0).count();
        serde_json::json!({
            "retrievals": {
                "hits": count(&self.counters.hits),
                "misses": count(&self.counters.misses),
                "coalesced": count(&self.counters.coalesced),
                "in_flight": flights,
            },
            "instances": {"entries": entries, "bytes": bytes, "evictions": count(&self.counters.evictions)},
            "disk": self.disk.as_ref().map(|d| {
                let (files, bytes) = d.size();
                serde_json::json!({"files": files, "bytes": bytes, "off": d.is_off()})
            }),
            "bytes_served": count(&self.counters.bytes_served),
            "manifests": self.manifests.entry_count(),
        })
    }

    fn keep(&self, key: &TargetKey, instance: &RetrievedInstance) {
        let instance_key = InstanceKey {
            project: key.project.clone(),
            study: key.study().clone(),
            instance: instance.sop_instance_uid.clone(),
        };
        if let Some(instances) = &self.instances {
            instances.insert(instance_key.clone(), instance.clone());
        }
        if let Some(disk) = self.disk.clone() {
            let (name, bytes) = (instance_key.file_name(), instance.part10.clone());
            tokio::task::spawn_blocking(move || disk.write(&name, &bytes));
        }
    }
}

fn etag_of(instances: &[SopInstanceUid]) -> String {
    let mut hash = Sha256::new();
    for uid in instances {
        hash.update(uid.as_str().as_bytes());
        hash.update(b"\n");
    }
    hash.finalize().iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// Runs a flight's retrieval and ends it: every reader learns how, and the flight leaves the
/// registry.
async fn fly<F>(cache: Arc<RetrievalCache>, key: TargetKey, flight: Arc<Flight>, retrieve: F)
where
    F: Future<Output = Result<Retrieval, Error>> + Send + 'static,
{
    flight.end(carry(&cache, &key, &flight, retrieve).await);
    let mut flights = cache.flights.lock().unwrap_or_else(|p| p.into_inner());
    if flights.get(&key).is_some_and(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(&flight))) {
        flights.remove(&key);
    }
}

/// Each instance of the retrieval into the cache and the flight's buffer (waiting while the
/// slowest reader is [`FLIGHT_AHEAD`] bytes behind); the manifest once complete.
async fn carry<F>(cache: &RetrievalCache, key: &TargetKey, flight: &Flight, retrieve: F) -> Result<(), Arc<Error>>
where
    F: Future<Output = Result<Retrieval, Error>> + Send + 'static,
{
    let Retrieval { first, mut rest, withheld, withheld_reasons, partly, .. } = retrieve.await.map_err(Arc::new)?;
    let whole = partly.is_empty();
    flight.set_withheld(withheld, withheld_reasons.clone(), partly);
    let mut shown = Vec::new();
    let mut push = |instance: RetrievedInstance| {
        cache.keep(key, &instance);
        shown.push(instance.sop_instance_uid.clone());
        flight.push(instance);
    };
    push(first);
    loop {
        // Backpressure: wait for the slowest reader; stop when nobody reads any more (dropping
        // the retrieval cancels it at the PACS).
        if !flight.room().await {
            tracing::debug!("every reader of a retrieval went away: it is cancelled");
            return Err(Arc::new(Error::Internal("the retrieval was cancelled".into())));
        }
        match rest.next().await {
            Some(Ok(instance)) => push(instance),
            Some(Err(e)) => return Err(Arc::new(e)),
            None => break,
        }
    }
    if !whole {
        // Its instances stay cached one by one; without a manifest, it is never served whole.
        return Ok(());
    }
    let etag = etag_of(&shown);
    let manifest = Arc::new(Manifest {
        instances: shown,
        withheld_before_first: withheld,
        withheld_reasons,
        etag,
        completed_ms: now_ms(),
    });
    if let Some(disk) = cache.disk.clone() {
        if let Ok(json) = serde_json::to_vec(&*manifest) {
            let name = key.file_name();
            tokio::task::spawn_blocking(move || disk.write(&name, &json));
        }
    }
    cache.manifests.insert(key.clone(), manifest);
    Ok(())
}
