//! The gateway as a EUCAIM data holder (docs/EUCAIM.md): the datasets it publishes
//! (`[[datasets]]`), their index (crate::core::eucaim::index, refreshed from the sites on an
//! interval and after every store), the federated count query EUCAIM's Focus sends and its
//! answer, and the view of the datasets for people.

pub(crate) mod answer;
pub(crate) mod catalogue;
pub(crate) mod index;
pub(crate) mod query;
pub(crate) mod refresh;
pub(crate) mod vocabulary;

use std::sync::Arc;
use std::time::SystemTime;

use dicomweb_model::{SiteId, StudyInstanceUid};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::config::{Config, DatasetConfig, EucaimConfig};
use crate::core::eucaim::answer::Counted;
use crate::core::eucaim::index::Index;
use crate::core::eucaim::query::Query;
use crate::sites::Site;

/// The published datasets and what the gateway knows of them.
#[derive(Debug)]
pub(crate) struct Datasets {
    pub(crate) datasets: Vec<DatasetConfig>,
    pub(crate) eucaim: EucaimConfig,
    pub(crate) index: Arc<Index>,
    /// The provider's secret; `None`: the provider endpoint is off.
    secret: Option<Secret>,
    /// Studies stored through the gateway, to be read again (by site); at most
    /// [`STORED_WAITING`] wait, and one that finds the queue full is read at the next refresh.
    stored: mpsc::Sender<(SiteId, StudyInstanceUid)>,
    stored_queue: std::sync::Mutex<Option<mpsc::Receiver<(SiteId, StudyInstanceUid)>>>,
}

/// Stored studies waiting to be read into the index, at most.
const STORED_WAITING: usize = 10_000;

/// The provider's secret, never printed.
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Whether a request's Authorization may ask the federated search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admitted {
    /// No secret is configured: the endpoint is off.
    Off,
    Yes,
    No,
}

impl Datasets {
    /// The datasets of the configuration and their index (read back from the state directory),
    /// with the provider's secret read; `None` when no dataset is configured.
    pub(crate) fn open(config: &Config) -> anyhow::Result<Option<Arc<Datasets>>> {
        if config.datasets.is_empty() {
            return Ok(None);
        }
        let secret = match &config.eucaim.secret_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("cannot read eucaim.secret_file {}: {e}", path.display()))?;
                let text = text.trim().to_owned();
                if text.len() < 16 {
                    anyhow::bail!("eucaim.secret_file {}: the secret is shorter than 16 characters", path.display());
                }
                Some(Secret(text))
            }
            None => None,
        };
        let index = Index::open(config.federation.state_dir.as_deref(), &config.datasets)?;
        let (stored, queue) = mpsc::channel(STORED_WAITING);
        Ok(Some(Arc::new(Datasets {
            datasets: config.datasets.clone(),
            eucaim: config.eucaim.clone(),
            index: Arc::new(index),
            secret,
            stored,
            stored_queue: std::sync::Mutex::new(Some(queue)),
        })))
    }

    /// Keeps the index fresh until the gateway stops: every dataset read from its sites at once
    /// and every `eucaim.refresh`, and each study stored through the gateway read again.
    pub(crate) fn start(self: &Arc<Self>, sites: Arc<Vec<Site>>) -> tokio::task::JoinHandle<()> {
        let queue = self.stored_queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let this = self.clone();
        tokio::spawn(async move {
            let Some(mut queue) = queue else { return };
            let mut next = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next) => {
                        this.refresh_all(&sites).await;
                        next = tokio::time::Instant::now() + this.eucaim.refresh;
                    }
                    stored = queue.recv() => match stored {
                        Some(first) => {
                            // What waits is read together: one change to the index per site.
                            let mut waiting = vec![first];
                            while let Ok(more) = queue.try_recv() {
                                waiting.push(more);
                            }
                            this.refresh_stored(&sites, waiting).await;
                        }
                        None => return,
                    },
                }
            }
        })
    }

    async fn refresh_all(&self, sites: &[Site]) {
        for dataset in &self.datasets {
            for site in sites.iter().filter(|s| dataset.sites.contains(s.id())) {
                match refresh::refresh_site(&self.index, dataset, site).await {
                    Ok(done) => tracing::info!(
                        dataset = %dataset.id, site = %site.id(), studies = done.studies,
                        series_asked = done.series_asked, complete = done.complete,
                        "dataset index refreshed"
                    ),
                    Err(e) => tracing::warn!(
                        dataset = %dataset.id, site = %site.id(), error = %e,
                        "cannot refresh the dataset index; what was last read stays"
                    ),
                }
            }
        }
    }

    async fn refresh_stored(&self, sites: &[Site], stored: Vec<(SiteId, StudyInstanceUid)>) {
        let mut by_site: std::collections::BTreeMap<SiteId, Vec<StudyInstanceUid>> = Default::default();
        for (site, study) in stored {
            let studies = by_site.entry(site).or_default();
            if !studies.contains(&study) {
                studies.push(study);
            }
        }
        for (site_id, studies) in by_site {
            let Some(site) = sites.iter().find(|s| *s.id() == site_id) else { continue };
            for dataset in self.datasets.iter().filter(|d| d.sites.contains(&site_id)) {
                match refresh::refresh_studies(&self.index, dataset, site, &studies).await {
                    Ok(0) => {}
                    Ok(unread) => tracing::warn!(
                        dataset = %dataset.id, site = %site_id, unread,
                        "stored studies could not be read into the index; the next refresh reads them"
                    ),
                    Err(e) => {
                        tracing::warn!(dataset = %dataset.id, site = %site_id, error = %e, "cannot index stored studies")
                    }
                }
            }
        }
    }

    /// Notes studies stored into `site` through the gateway: they are read into the index.
    pub(crate) fn stored(&self, site: &SiteId, studies: &[StudyInstanceUid]) {
        if self.datasets.iter().any(|d| d.sites.contains(site)) {
            for study in studies {
                if self.stored.try_send((site.clone(), study.clone())).is_err() {
                    tracing::debug!(site = %site, "stored studies wait to be indexed: this one at the next refresh");
                }
            }
        }
    }

    /// Whether `authorization` (the header's value) is `Secret <the secret>`, compared in
    /// constant time.
    pub(crate) fn admit(&self, authorization: Option<&str>) -> Admitted {
        let Some(secret) = &self.secret else { return Admitted::Off };
        let given = authorization.and_then(|value| value.strip_prefix("Secret ")).unwrap_or("").as_bytes();
        let expected = secret.0.as_bytes();
        let differs =
            given.len() != expected.len() || given.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) != 0;
        if differs {
            Admitted::No
        } else {
            Admitted::Yes
        }
    }

    /// The answer to a count query over every dataset (CPU: a pass over the index).
    pub(crate) fn search(&self, query: &Query) -> (Value, Vec<Counted>) {
        let snapshots: Vec<_> =
            self.datasets.iter().map(|d| (d, self.index.studies(&d.id).unwrap_or_default())).collect();
        let views: Vec<_> = snapshots.iter().map(|(d, s)| (*d, s.as_ref())).collect();
        answer::answer(query, &views, &self.eucaim)
    }

    /// A dataset's catalogue record (`None`: no such dataset), or the settings it lacks.
    /// `gateway_root`: the gateway's public URL without its DICOMweb base path.
    pub(crate) fn record(&self, id: &str, gateway_root: &str) -> Option<Result<catalogue::Record, Vec<String>>> {
        let dataset = self.datasets.iter().find(|d| d.id == id)?;
        let studies = self.index.studies(id).unwrap_or_default();
        let held = answer::describe(&studies);
        let counts = (answer::private(held.studies, &self.eucaim), answer::private(held.subjects, &self.eucaim));
        let iri = catalogue::record_iri(&self.eucaim, gateway_root, id);
        Some(catalogue::record(&self.eucaim, dataset, &held, counts, iri))
    }

    /// Reads every dataset from its sites now (the command line's `datasets describe`).
    pub(crate) async fn refresh_now(&self, sites: &[Site]) {
        self.refresh_all(sites).await;
    }

    /// The datasets for people (`GET /datasets`): names, descriptions, counts (after the
    /// privacy of counts), what the studies hold, and when the index last read each.
    pub(crate) fn view(&self) -> Value {
        let every = Query { id: None, root: query::Node::Group { all: false, children: Vec::new() } };
        let (_, counted) = self.search(&every);
        let datasets: Vec<Value> = self
            .datasets
            .iter()
            .zip(counted)
            .map(|(dataset, counted)| {
                let studies = self.index.studies(&dataset.id).unwrap_or_default();
                let description = answer::describe(&studies);
                let refreshed = studies.refreshed.values().map(|read| read.at).min();
                let took: f64 = studies.refreshed.values().map(|read| read.took.as_secs_f64()).sum();
                json!({
                    "id": dataset.id,
                    "name": dataset.name,
                    "description": dataset.description,
                    "studies": counted.studies,
                    "subjects": counted.subjects,
                    "age_range": { "min": description.age_min, "max": description.age_max },
                    "sexes": description.sexes,
                    "modalities": description.modalities,
                    "body_parts": description.body_parts,
                    "manufacturers": description.manufacturers,
                    "sites": dataset.sites.len(),
                    "indexed": refreshed.map(|at| humantime::format_rfc3339_seconds(at).to_string()),
                    "complete": studies.refreshed.len() == dataset.sites.len()
                        && studies.refreshed.values().all(|read| read.complete),
                    "indexing_seconds": (took * 1000.0).round() / 1000.0,
                })
            })
            .collect();
        json!({ "datasets": datasets, "generated": humantime::format_rfc3339_seconds(SystemTime::now()).to_string() })
    }
}
