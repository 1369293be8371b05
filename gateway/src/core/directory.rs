//! What the federation has seen each site hold: for a study, the sites holding it and, once a
//! series-level search was seen, each series' holders, modality and distinct instance count.
//!
//! Retrieval plans from here instead of locating by C-FIND each time, and study roll-ups of a
//! study held by several sites come from here instead of more C-FINDs. Only what a complete
//! search showed is recorded: every configured site asked, none failing, matching on UIDs only
//! (a site that did not match a filter on another attribute may still hold the study). What was
//! seen is trusted for `federation.remember` (default 10 minutes): that bounds how stale a
//! location or a roll-up can be when a site changes behind the gateway's back. A remembered
//! location that turns out wrong (the site returns nothing) is forgotten and the target is
//! located anew.
//!
//! Retrievals add the transfer syntaxes the study's instances came in as stored, for the whole
//! study and by series, so that a later retrieval in a syntax the gateway cannot produce from
//! them is refused before its response starts (the sites' C-FIND does not say: Orthanc and
//! dcmqrscp leave Available Transfer Syntax UID empty).
//!
//! Memory holds at most `federation.remember_studies` studies (least recently used go first);
//! the embedded store under `federation.state_dir` keeps them across restarts, written by a
//! background thread in batches so no request waits on the disk. Records hold UIDs and site ids,
//! nothing else of a patient.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use dicomweb_model::{SeriesInstanceUid, SiteId, StudyInstanceUid};
use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::config::FederationConfig;

const STUDIES: TableDefinition<&str, &[u8]> = TableDefinition::new("studies");

/// One study as the sites were seen holding it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StudyRecord {
    /// When it was seen, milliseconds since the Unix epoch.
    pub(crate) seen_ms: u64,
    /// Ids of the sites holding the study, in configuration order.
    pub(crate) sites: Vec<SiteId>,
    /// Its series, once a complete series-level search was seen.
    pub(crate) series: Option<BTreeMap<SeriesInstanceUid, SeriesRecord>>,
    /// Transfer syntaxes its instances were seen stored in, as retrievals delivered them.
    #[serde(default)]
    pub(crate) stored: StoredSyntaxes,
    /// The sites the search asked, when it was not every configured site (a retrieval located
    /// the study over its project's sites): the record says nothing of the others. `None`:
    /// every site was asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) asked: Option<Vec<SiteId>>,
}

/// Transfer syntaxes a study's instances were seen stored in: what some retrieval delivered,
/// so every syntax here is held by some instance, but not every instance's is known.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredSyntaxes {
    /// Over the whole study.
    pub(crate) study: BTreeSet<String>,
    /// By SeriesInstanceUID, for series retrieved on their own.
    pub(crate) series: BTreeMap<SeriesInstanceUid, BTreeSet<String>>,
}

impl StoredSyntaxes {
    /// Adds what one retrieval saw (of one series when `series` is given).
    fn add(&mut self, series: Option<&SeriesInstanceUid>, seen: &BTreeSet<String>) {
        self.study.extend(seen.iter().cloned());
        if let Some(series) = series {
            self.series.entry(series.clone()).or_default().extend(seen.iter().cloned());
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SeriesRecord {
    /// Ids of the sites holding the series, in configuration order.
    pub(crate) sites: Vec<SiteId>,
    pub(crate) modality: Option<String>,
    /// Distinct instances over every holder, when known.
    pub(crate) instances: Option<u64>,
    /// The holders known to hold every one of those instances (configuration order); empty
    /// when the series is split instance by instance across sites; `None` when not known.
    #[serde(default)]
    pub(crate) complete_at: Option<Vec<SiteId>>,
}

impl StudyRecord {
    /// The series map when it is complete enough for roll-ups: every modality and count known.
    pub(crate) fn rollup_ready(&self) -> Option<&BTreeMap<SeriesInstanceUid, SeriesRecord>> {
        self.series.as_ref().filter(|series| series.values().all(|s| s.instances.is_some()))
    }

    /// Whether the search this record comes from asked every one of `sites`: only then does it
    /// say which of them hold the study.
    pub(crate) fn covers<'a>(&self, mut sites: impl Iterator<Item = &'a SiteId>) -> bool {
        self.asked.as_ref().is_none_or(|asked| sites.all(|site| asked.contains(site)))
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

enum Write {
    Put(String, Vec<u8>),
    Forget(String),
    /// Answered once what came before it is committed.
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests wait for the writer"))]
    Flush(mpsc::Sender<()>),
}

struct Expiry {
    remember: Duration,
}

impl moka::Expiry<StudyInstanceUid, Arc<StudyRecord>> for Expiry {
    fn expire_after_create(&self, _: &StudyInstanceUid, record: &Arc<StudyRecord>, _: Instant) -> Option<Duration> {
        let age = Duration::from_millis(now_ms().saturating_sub(record.seen_ms));
        Some(self.remember.saturating_sub(age))
    }
}

/// The federation's memory of where studies live. Cheap to share.
pub(crate) struct Directory {
    remember: Duration,
    studies: moka::sync::Cache<StudyInstanceUid, Arc<StudyRecord>>,
    store: Option<Arc<redb::Database>>,
    writes: Option<mpsc::Sender<Write>>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Directory {
    fn drop(&mut self) {
        // Closing the channel ends the writer once it has committed what was sent.
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("remember", &self.remember)
            .field("persistent", &self.store.is_some())
            .finish()
    }
}

impl Directory {
    /// Opens the directory: memory only, or backed by `state_dir/federation.redb`, pruned of
    /// what is older than `remember`.
    pub(crate) fn open(config: &FederationConfig) -> anyhow::Result<Directory> {
        let studies = moka::sync::Cache::builder()
            .max_capacity(config.remember_studies)
            .expire_after(Expiry { remember: config.remember })
            .build();
        let mut directory = Directory { remember: config.remember, studies, store: None, writes: None, writer: None };
        if let (Some(dir), false) = (&config.state_dir, config.remember.is_zero()) {
            let store = Arc::new(open_store(dir)?);
            prune(&store, config.remember)?;
            let (sender, receiver) = mpsc::channel();
            let writer_store = store.clone();
            let writer = std::thread::Builder::new()
                .name("directory-writer".into())
                .spawn(move || write_batches(&writer_store, &receiver))?;
            directory.writer = Some(writer);
            directory.store = Some(store);
            directory.writes = Some(sender);
        }
        Ok(directory)
    }

    fn fresh(&self, record: &StudyRecord) -> bool {
        Duration::from_millis(now_ms().saturating_sub(record.seen_ms)) < self.remember
    }

    /// What was seen of a study, if it is still trusted.
    pub(crate) fn study(&self, uid: &StudyInstanceUid) -> Option<Arc<StudyRecord>> {
        if self.remember.is_zero() {
            return None;
        }
        if let Some(record) = self.studies.get(uid) {
            return Some(record).filter(|r| self.fresh(r));
        }
        let store = self.store.as_ref()?;
        let read = store.begin_read().ok()?;
        let table = read.open_table(STUDIES).ok()?;
        let bytes = table.get(uid.as_str()).ok()??;
        let record: StudyRecord = serde_json::from_slice(bytes.value()).ok()?;
        if !self.fresh(&record) {
            return None;
        }
        let record = Arc::new(record);
        self.studies.insert(uid.clone(), record.clone());
        Some(record)
    }

    /// Records the sites a complete search found holding a study. What was known of its series
    /// stays when the holders are the same, and is dropped when they changed.
    pub(crate) fn record_sites(&self, uid: &StudyInstanceUid, sites: Vec<SiteId>) {
        if let Some(known) = self.study(uid) {
            if known.sites == sites && known.asked.is_none() {
                return;
            }
        }
        let record =
            StudyRecord { seen_ms: now_ms(), sites, series: None, stored: StoredSyntaxes::default(), asked: None };
        self.put(uid, record);
    }

    /// Records the series a series-level search found, with the study's holders: a search of
    /// every site (`asked` is `None`), or of the sites in `asked` with none failing. A record of
    /// some sites does not replace one of every site.
    pub(crate) fn record_series(
        &self,
        uid: &StudyInstanceUid,
        series: BTreeMap<SeriesInstanceUid, SeriesRecord>,
        asked: Option<Vec<SiteId>>,
    ) {
        let known = self.study(uid);
        if asked.is_some() && known.as_ref().is_some_and(|known| known.asked.is_none()) {
            return;
        }
        let mut sites: Vec<SiteId> = Vec::new();
        for one in series.values() {
            for site in &one.sites {
                if !sites.contains(site) {
                    sites.push(site.clone());
                }
            }
        }
        // The syntaxes instances were seen stored in stay: a search does not see them.
        let stored = known.map(|known| known.stored.clone()).unwrap_or_default();
        self.put(uid, StudyRecord { seen_ms: now_ms(), sites, series: Some(series), stored, asked });
    }

    /// Adds the transfer syntaxes a retrieval of the study (of one series when `series` is
    /// given) saw its instances stored in. Only a study already recorded learns them: they
    /// belong with where it lives, and are trusted as long.
    pub(crate) fn record_stored(
        &self,
        uid: &StudyInstanceUid,
        series: Option<&SeriesInstanceUid>,
        seen: &BTreeSet<String>,
    ) {
        if seen.is_empty() {
            return;
        }
        let Some(known) = self.study(uid) else { return };
        let mut record = (*known).clone();
        record.stored.add(series, seen);
        if record != *known {
            self.put(uid, record);
        }
    }

    /// Forgets a study (a remembered location turned out wrong).
    pub(crate) fn forget(&self, uid: &StudyInstanceUid) {
        self.studies.invalidate(uid);
        if let Some(writes) = &self.writes {
            let _ = writes.send(Write::Forget(uid.to_string()));
        }
    }

    fn put(&self, uid: &StudyInstanceUid, record: StudyRecord) {
        if self.remember.is_zero() {
            return;
        }
        if let (Some(writes), Ok(bytes)) = (&self.writes, serde_json::to_vec(&record)) {
            let _ = writes.send(Write::Put(uid.to_string(), bytes));
        }
        self.studies.insert(uid.clone(), Arc::new(record));
    }

    /// Waits until every write sent so far is on disk.
    #[cfg_attr(not(test), allow(dead_code, reason = "only the tests wait for the writer"))]
    pub(crate) fn flush(&self) {
        if let Some(writes) = &self.writes {
            let (done, committed) = mpsc::channel();
            if writes.send(Write::Flush(done)).is_ok() {
                let _ = committed.recv_timeout(Duration::from_secs(10));
            }
        }
    }
}

fn open_store(dir: &Path) -> anyhow::Result<redb::Database> {
    let store = crate::core::private_files::open_database(dir, "federation.state_dir", "federation.redb")?;
    let write = store.begin_write()?;
    write.open_table(STUDIES)?;
    write.commit()?;
    Ok(store)
}

/// Deletes what is older than `remember`.
fn prune(store: &redb::Database, remember: Duration) -> anyhow::Result<()> {
    let cutoff = now_ms().saturating_sub(remember.as_millis() as u64);
    let write = store.begin_write()?;
    {
        let mut table = write.open_table(STUDIES)?;
        table.retain(|_, bytes| {
            serde_json::from_slice::<StudyRecord>(bytes).map(|r| r.seen_ms >= cutoff).unwrap_or(false)
        })?;
    }
    write.commit()?;
    Ok(())
}

/// Commits writes in batches until the directory is dropped.
fn write_batches(store: &redb::Database, receiver: &mpsc::Receiver<Write>) {
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while batch.len() < 10_000 {
            match receiver.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        if let Err(e) = commit(store, batch) {
            tracing::warn!(error = %e, "cannot write the federation directory; locations stay in memory");
        }
    }
}

fn commit(store: &redb::Database, batch: Vec<Write>) -> anyhow::Result<()> {
    let mut flushed = Vec::new();
    let write = store.begin_write()?;
    {
        let mut table = write.open_table(STUDIES)?;
        for one in batch {
            match one {
                Write::Put(uid, bytes) => {
                    table.insert(uid.as_str(), bytes.as_slice())?;
                }
                Write::Forget(uid) => {
                    table.remove(uid.as_str())?;
                }
                Write::Flush(done) => flushed.push(done),
            }
        }
    }
    write.commit()?;
    for done in flushed {
        let _ = done.send(());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: Option<&Path>, remember: Duration) -> FederationConfig {
        FederationConfig {
            remember,
            remember_studies: 1000,
            state_dir: dir.map(Path::to_owned),
            echo_interval: Duration::from_secs(30),
            circuit_failures: 3,
            circuit_open: Duration::from_secs(30),
            max_matches: 10_000,
        }
    }

    fn study_uid(uid: &str) -> StudyInstanceUid {
        StudyInstanceUid::new(uid).expect("valid")
    }

    fn series_uid(uid: &str) -> SeriesInstanceUid {
        SeriesInstanceUid::new(uid).expect("valid")
    }

    fn site(id: &str) -> SiteId {
        SiteId::new(id).expect("valid")
    }

    fn series(sites: &[&str], instances: Option<u64>) -> SeriesRecord {
        SeriesRecord {
            sites: sites.iter().map(|s| site(s)).collect(),
            modality: Some("CT".into()),
            instances,
            complete_at: None,
        }
    }

    #[test]
    fn remembers_across_a_restart_and_forgets() {
        let dir = std::env::temp_dir().join(format!("directory-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let directory = Directory::open(&config(Some(&dir), Duration::from_secs(600))).expect("open");
            directory.record_series(
                &study_uid("1.2.3"),
                BTreeMap::from([
                    (series_uid("1.2.3.1"), series(&["a"], Some(3))),
                    (series_uid("1.2.3.2"), series(&["b", "a"], None)),
                ]),
                None,
            );
            directory.record_sites(&study_uid("1.2.4"), vec![site("b")]);
            directory.flush();
        }
        let directory = Directory::open(&config(Some(&dir), Duration::from_secs(600))).expect("reopen");
        let study = directory.study(&study_uid("1.2.3")).expect("remembered");
        assert_eq!(study.sites, [site("a"), site("b")]);
        assert!(study.rollup_ready().is_none(), "one count unknown");
        // Same holders: the series map stays; other holders: it goes.
        directory.record_sites(&study_uid("1.2.3"), vec![site("a"), site("b")]);
        assert!(directory.study(&study_uid("1.2.3")).expect("kept").series.is_some());
        directory.record_sites(&study_uid("1.2.3"), vec![site("a")]);
        assert!(directory.study(&study_uid("1.2.3")).expect("kept").series.is_none());
        directory.forget(&study_uid("1.2.4"));
        directory.flush();
        drop(directory);
        let directory = Directory::open(&config(Some(&dir), Duration::from_secs(600))).expect("reopen");
        assert!(directory.study(&study_uid("1.2.4")).is_none());
        assert_eq!(directory.study(&study_uid("1.2.3")).expect("remembered").sites, [site("a")]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_is_too_old_is_not_trusted() {
        let directory = Directory::open(&config(None, Duration::from_millis(50))).expect("open");
        directory.record_sites(&study_uid("1.2.3"), vec![site("a")]);
        assert!(directory.study(&study_uid("1.2.3")).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(directory.study(&study_uid("1.2.3")).is_none());
        let off = Directory::open(&config(None, Duration::ZERO)).expect("open");
        off.record_sites(&study_uid("1.2.3"), vec![site("a")]);
        assert!(off.study(&study_uid("1.2.3")).is_none());
    }

    #[test]
    fn stored_syntaxes_are_learnt_for_recorded_studies_and_survive_a_search() {
        let directory = Directory::open(&config(None, Duration::from_secs(600))).expect("open");
        let j2k = BTreeSet::from(["1.2.840.10008.1.2.4.90".to_owned()]);
        directory.record_stored(&study_uid("1.2.9"), None, &j2k);
        assert!(directory.study(&study_uid("1.2.9")).is_none(), "an unrecorded study is not made up from a retrieval");
        directory.record_sites(&study_uid("1.2.3"), vec![site("a")]);
        let seen_ms = directory.study(&study_uid("1.2.3")).expect("recorded").seen_ms;
        directory.record_stored(&study_uid("1.2.3"), Some(&series_uid("1.2.3.1")), &j2k);
        directory.record_stored(&study_uid("1.2.3"), None, &BTreeSet::from(["1.2.840.10008.1.2.1".to_owned()]));
        let study = directory.study(&study_uid("1.2.3")).expect("recorded");
        assert_eq!(study.stored.study.len(), 2);
        assert_eq!(study.stored.series[&series_uid("1.2.3.1")], j2k);
        assert_eq!(study.seen_ms, seen_ms, "learning syntaxes does not extend how long the location is trusted");
        directory.record_series(
            &study_uid("1.2.3"),
            BTreeMap::from([(series_uid("1.2.3.1"), series(&["a"], Some(3)))]),
            None,
        );
        assert_eq!(directory.study(&study_uid("1.2.3")).expect("recorded").stored, study.stored);
    }

    #[test]
    fn a_search_of_some_sites_says_nothing_of_the_others() {
        let directory = Directory::open(&config(None, Duration::from_secs(600))).expect("open");
        let found = || BTreeMap::from([(series_uid("1.2.3.1"), series(&["b"], Some(3)))]);
        directory.record_series(&study_uid("1.2.3"), found(), Some(vec![site("b"), site("c")]));
        let study = directory.study(&study_uid("1.2.3")).expect("recorded");
        assert!(study.covers([site("b"), site("c")].iter()) && study.covers([site("c")].iter()));
        assert!(!study.covers([site("a"), site("b")].iter()), "site a was not asked");
        // A search of every site replaces it, and is not replaced by one of some sites.
        directory.record_sites(&study_uid("1.2.3"), vec![site("a"), site("b")]);
        let study = directory.study(&study_uid("1.2.3")).expect("recorded");
        assert!(study.covers([site("a")].iter()) && study.series.is_none());
        directory.record_series(&study_uid("1.2.3"), found(), Some(vec![site("b")]));
        assert_eq!(directory.study(&study_uid("1.2.3")).expect("recorded").sites, [site("a"), site("b")]);
    }
}
