//! What the server holds while it runs: the configuration, the federation's sites (each with
//! its association pool, retrieve method and health), the directory of where studies live, and
//! the tasks behind them (the shared C-MOVE storage SCP, the periodic C-ECHO of every site).

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use pacs_adapter::{StoreScp, StoreScpOptions};

use crate::config::{AuthMode, BurnedIn, Config, OriginAuth, Permission, ProjectConfig, RetrieveMode, SiteProtocol};
use crate::core::access::{Access, Project};
use crate::core::audit::AuditLog;
use crate::core::directory::Directory;
use crate::core::pixels::decode_budget::DecodeBudget;
use crate::core::privacy::clean_pixels::Cleaner;
use crate::core::privacy::deidentify::{Privacy, IMPLICIT_PROJECT};
use crate::core::retrieve::cache::RetrievalCache;
use crate::core::retrieve::Retriever;
use crate::http::auth::Authenticators;
use crate::http::limits::CallerLimits;
use crate::http::search_cache::SearchCache;
use crate::sites::health::{BreakerPolicy, SiteHealth};
pub(crate) use crate::sites::Site;
use crate::sites::SiteIndex;

#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) config: Config,
    /// Every configured site, in configuration order (which also breaks ties when merging).
    pub(crate) sites: Arc<Vec<Site>>,
    /// Where studies were seen (docs/FEDERATION.md).
    pub(crate) directory: Arc<Directory>,
    /// The projects (docs/ACCESS.md), each with its sites, permissions and, when `[deid]` is
    /// configured, its de-identification (docs/DEIDENTIFICATION.md). Without authentication:
    /// one implicit project over every site.
    pub(crate) projects: Vec<Arc<Project>>,
    /// Checks bearer tokens, when `auth.mode = "jwt"`.
    pub(crate) authenticator: Option<Arc<Authenticators>>,
    /// Per-caller limits, when callers are authenticated.
    pub(crate) limits: Option<CallerLimits>,
    /// The audit trail, when `audit.path` is configured.
    pub(crate) audit: Option<Arc<AuditLog>>,
    /// De-identified instances and what retrievals yielded; retrievals under way (docs/CACHE.md).
    pub(crate) cache: Arc<RetrievalCache>,
    /// Retrieval over the sites, the directory and the cache (crate::core::retrieve).
    pub(crate) retriever: Arc<Retriever>,
    /// QIDO-RS answers reused for a short while (docs/CACHE.md).
    pub(crate) search_cache: SearchCache,
    /// What `/metrics` reports of requests.
    pub(crate) metrics: Arc<crate::http::metrics::requests::RequestMetrics>,
    /// Instances as transcoded to an uncompressed syntax (docs/CACHE.md).
    pub(crate) transcoded: Arc<crate::core::retrieve::transcoded_cache::TranscodedCache>,
    /// Decoded pixel data in flight across every request, bounded.
    pub(crate) decode_budget: Arc<crate::core::pixels::decode_budget::DecodeBudget>,
    /// Requests in flight and STOW-RS memory across the gateway (docs/RELIABILITY.md).
    pub(crate) admission: Arc<crate::http::admission::Admission>,
    /// The datasets published to EUCAIM and their index, when any is configured.
    pub(crate) datasets: Option<Arc<crate::core::eucaim::Datasets>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Builds the site pools and, when a site retrieves by C-MOVE, binds the storage SCP on
    /// `dimse.listen` (one for all sites).
    pub(crate) async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let mut scp: Option<(StoreScp, tokio::task::JoinHandle<()>)> = None;
        if config.sites.iter().any(|s| s.dimse().is_some_and(|d| d.retrieve == RetrieveMode::CMove)) {
            let options = StoreScpOptions::new(config.dimse.ae_title.clone());
            let (store_scp, local, handle) =
                StoreScp::spawn(&config.dimse.listen.to_string(), options).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen for C-MOVE sub-operations on {}: {e}", config.dimse.listen)
                })?;
            tracing::info!(%local, ae = %config.dimse.ae_title, "storage SCP for C-MOVE listening");
            scp = Some((store_scp, handle));
        }
        let sites = sites(&config, scp.as_ref().map(|(scp, _)| scp))?;
        let directory = Arc::new(Directory::open(&config.federation)?);
        let decode_budget =
            Arc::new(crate::core::pixels::decode_budget::DecodeBudget::new(config.dataset_limits.decode_memory));
        let projects = projects(&config, &sites, &decode_budget)?;
        let (authenticator, limits) = match &config.auth {
            AuthMode::None => (None, None),
            AuthMode::Jwt(issuers) => {
                (Some(Authenticators::start(issuers).await?), Some(CallerLimits::new(config.limits.clone())))
            }
        };
        let audit = config
            .audit
            .path
            .as_deref()
            .map(|path| AuditLog::open(path, config.audit.fhir_path.as_deref()))
            .transpose()?
            .map(|log| log.replica(&config.server.replica_id))
            .map(Arc::new);
        let cache = Arc::new(RetrievalCache::new(&config.cache)?);
        let sites = Arc::new(sites);
        let retriever = Arc::new(Retriever {
            sites: sites.clone(),
            directory: directory.clone(),
            cache: cache.clone(),
            limits: config.dataset_limits,
        });
        let search_cache = SearchCache::new(&config.cache);
        let transcoded = Arc::new(crate::core::retrieve::transcoded_cache::TranscodedCache::new(&config.cache));
        let admission = Arc::new(crate::http::admission::Admission::new(&config.server.shedding));
        let mut tasks: Vec<_> = scp.map(|(_, handle)| handle).into_iter().collect();
        let datasets = crate::core::eucaim::Datasets::open(&config)?;
        if let Some(datasets) = &datasets {
            tasks.push(datasets.start(sites.clone()));
        }
        let gateway = Arc::new_cyclic(|weak: &Weak<Gateway>| {
            tasks.push(tokio::spawn(echo_sites(weak.clone())));
            Gateway {
                config,
                sites,
                directory,
                projects,
                authenticator,
                limits,
                audit,
                cache,
                retriever,
                search_cache,
                metrics: Default::default(),
                transcoded,
                decode_budget,
                admission,
                datasets,
                tasks,
            }
        });
        Ok(gateway)
    }

    /// The sites a request may use: its project's, or the one it addressed under
    /// `/sites/{id}` (404 when that is not one of the project's).
    pub(crate) fn sites_for(&self, access: &Access) -> Result<Vec<&Site>, crate::core::Error> {
        crate::core::retrieve::sites_for(&self.sites, access)
    }

    /// True when the request may reach every site of the federation (what it sees of where
    /// data lives is then the whole picture, and may be remembered).
    pub(crate) fn sees_every_site(&self, access: &Access) -> bool {
        access.site.is_none() && access.project.sites.len() == self.sites.len()
    }
}

/// The projects of the configuration, or the implicit one without authentication; each with
/// its de-identification when `[deid]` is configured (one secret, one pseudonym map, keys and
/// options per project).
/// The configured sites, each with its protocol (DIMSE retrieving by C-MOVE to `move_scp`
/// when given, else by C-GET), its health and its counters.
pub(crate) fn sites(config: &Config, move_scp: Option<&StoreScp>) -> anyhow::Result<Vec<Site>> {
    let policy = BreakerPolicy {
        failures_to_open: config.federation.circuit_failures,
        open_for: config.federation.circuit_open,
    };
    let mut sites = Vec::new();
    for site_config in &config.sites {
        let protocol = crate::sites::protocol(config, site_config, move_scp)
            .map_err(|e| anyhow::anyhow!("site {}: {e}", site_config.id))?;
        let health = SiteHealth::new(site_config.id.as_str(), policy, config.federation.echo_interval);
        sites.push(Site {
            config: site_config.clone(),
            protocol,
            health: Arc::new(health),
            sent: Default::default(),
            max_matches: config.federation.max_matches,
        });
    }
    if sites.is_empty() {
        anyhow::bail!("no site is configured");
    }
    Ok(sites)
}

fn projects(config: &Config, sites: &[Site], decode_budget: &Arc<DecodeBudget>) -> anyhow::Result<Vec<Arc<Project>>> {
    let implicit;
    let configured: &[ProjectConfig] = match &config.auth {
        AuthMode::None => {
            implicit = [ProjectConfig {
                id: IMPLICIT_PROJECT.to_owned(),
                sites: sites.iter().map(|s| s.id().clone()).collect(),
                permissions: vec![Permission::Search, Permission::Retrieve, Permission::Store],
                deid_options: None,
                show_sites: None,
                burned_in: None,
                access: crate::config::AccessCondition::Download,
                service_clients: Vec::new(),
            }];
            &implicit
        }
        AuthMode::Jwt(_) => &config.projects,
    };
    let shared = config.deid.as_ref().map(Privacy::open_shared).transpose()?;
    let burned_in = |project: &ProjectConfig| {
        project.burned_in.or(config.deid.as_ref().map(|deid| deid.burned_in)).unwrap_or(BurnedIn::Withhold)
    };
    // One cleaner for every project that cleans: Tesseract's model read once, the rules checked.
    let cleaner = match (&config.deid, configured.iter().any(|p| burned_in(p) == BurnedIn::Clean)) {
        (Some(deid), true) => Some(Arc::new(Cleaner::start(deid.burned_in_rules.as_deref(), decode_budget.clone())?)),
        _ => None,
    };
    configured
        .iter()
        .map(|project| {
            let privacy = match (&config.deid, &shared) {
                (Some(deid), Some(shared)) => {
                    let options = project.deid_options.as_deref().unwrap_or(&deid.options);
                    let cleaner = cleaner.clone().filter(|_| burned_in(project) == BurnedIn::Clean);
                    Some(Privacy::start(shared, &project.id, options, cleaner, config.dataset_limits)?)
                }
                _ => None,
            };
            let indexes: Vec<SiteIndex> =
                project.sites.iter().filter_map(|id| sites.iter().position(|s| s.id() == id).map(SiteIndex)).collect();
            let cache_scope = cache_scope(&project.id, indexes.iter().map(|&i| &sites[i]), privacy.as_ref());
            // Site ids name institutions: shown with de-identification only when asked for.
            let show_sites = match &config.deid {
                Some(deid) => project.show_sites.unwrap_or(deid.show_sites),
                None => project.show_sites.unwrap_or(true),
            };
            let forwards_credentials = indexes.iter().any(|&i| {
                let protocol = &sites[i].config.protocol;
                matches!(protocol, SiteProtocol::Dicomweb(web) if web.auth == OriginAuth::Forward)
            });
            Ok(Arc::new(Project {
                id: project.id.clone(),
                sites: indexes,
                permissions: project.permissions.clone(),
                privacy,
                cache_scope,
                show_sites,
                forwards_credentials,
                access: project.access,
                service_clients: project.service_clients.clone(),
            }))
        })
        .collect()
}

/// The project's cache scope: its id and a digest of what shapes its answers: each of its
/// sites (id, AE title, address) and, de-identifying, the options, a fingerprint of its keys
/// and the profile's revision.
fn cache_scope<'a>(project: &str, sites: impl Iterator<Item = &'a Site>, privacy: Option<&Privacy>) -> String {
    use sha2::Digest;
    let mut shaped = sha2::Sha256::new();
    for site in sites {
        shaped.update(format!("site {} {}\n", site.id(), site.config.location()));
    }
    if let Some(privacy) = privacy {
        let options: Vec<&str> = privacy.engine.options().selected().iter().map(|o| o.name).collect();
        shaped.update(format!(
            "deid {} {} {}\n",
            options.join(","),
            privacy.engine.keys().fingerprint(),
            dicomweb_deid::PROFILE_REVISION
        ));
        // Cleaning changes what the project's instances are, and with its rules and detector.
        if let Some(cleaner) = &privacy.cleaner {
            shaped.update(format!("clean {}\n", cleaner.fingerprint()));
        }
    }
    let digest: String = shaped.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{project}/{digest}")
}

/// Sends a C-ECHO to every site whose echo is due (its interval passed, or its open circuit's
/// time is up), until the gateway is dropped.
async fn echo_sites(gateway: Weak<Gateway>) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut in_flight: Vec<bool> = Vec::new();
    let (done_sender, mut done) = tokio::sync::mpsc::unbounded_channel::<usize>();
    loop {
        tick.tick().await;
        let Some(gw) = gateway.upgrade() else { return };
        in_flight.resize(gw.sites.len(), false);
        while let Ok(index) = done.try_recv() {
            in_flight[index] = false;
        }
        let now = Instant::now();
        for (index, site) in gw.sites.iter().enumerate() {
            if in_flight[index] || !site.health.echo_due(now) {
                continue;
            }
            in_flight[index] = true;
            let (weak, done) = (gateway.clone(), done_sender.clone());
            tokio::spawn(async move {
                if let Some(gw) = weak.upgrade() {
                    let site = &gw.sites[index];
                    if let Err(error) = site.echo().await {
                        tracing::debug!(site = %site.id(), %error, "C-ECHO failed");
                    }
                }
                let _ = done.send(index);
            });
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
