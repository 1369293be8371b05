//! What the server holds while it runs: the configuration and the federation's sites, each with
//! its association pool and retrieve method (C-GET, or C-MOVE into the shared storage SCP).

use std::sync::Arc;

use dicomweb_model::SiteId;
use pacs_adapter::{AssociationPool, RetrieveMethod, StoreScp, StoreScpOptions};

use crate::check::endpoint;
use crate::config::{Config, RetrieveMode, SiteConfig};

#[derive(Debug)]
pub struct Site {
    pub config: SiteConfig,
    pub pool: AssociationPool,
    pub method: RetrieveMethod,
}

impl Site {
    pub fn id(&self) -> &SiteId {
        &self.config.id
    }
}

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    /// Every configured site, in configuration order (which also breaks ties when merging).
    pub sites: Vec<Site>,
    store_scp: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Builds the site pools and, when a site retrieves by C-MOVE, binds the storage SCP on
    /// `dimse.listen` (one for all sites).
    pub async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let mut scp: Option<(StoreScp, tokio::task::JoinHandle<()>)> = None;
        if config.sites.iter().any(|s| s.retrieve == RetrieveMode::CMove) {
            let options = StoreScpOptions::new(config.dimse_ae_title.clone());
            let (store_scp, local, handle) =
                StoreScp::spawn(&config.dimse_listen.to_string(), options).await.map_err(|e| {
                    anyhow::anyhow!("cannot listen for C-MOVE sub-operations on {}: {e}", config.dimse_listen)
                })?;
            tracing::info!(%local, ae = %config.dimse_ae_title, "storage SCP for C-MOVE listening");
            scp = Some((store_scp, handle));
        }
        let mut sites = Vec::new();
        for site_config in &config.sites {
            let pool = AssociationPool::new(endpoint(&config, site_config).map_err(|e| anyhow::anyhow!(e))?);
            let method = match (&site_config.retrieve, &scp) {
                (RetrieveMode::CMove, Some((store_scp, _))) => RetrieveMethod::Move(store_scp.clone()),
                _ => RetrieveMethod::Get,
            };
            sites.push(Site { config: site_config.clone(), pool, method });
        }
        if sites.is_empty() {
            anyhow::bail!("no site is configured");
        }
        Ok(Arc::new(Gateway { config, sites, store_scp: scp.map(|(_, handle)| handle) }))
    }

    /// The sites a request may use: one when it was addressed under `/sites/{id}`, else all.
    pub fn sites_for(&self, scope: &SiteScope) -> Result<Vec<&Site>, crate::error::ApiError> {
        match &scope.0 {
            None => Ok(self.sites.iter().collect()),
            Some(id) => self
                .sites
                .iter()
                .find(|s| s.id().as_str() == id)
                .map(|s| vec![s])
                .ok_or_else(|| crate::error::ApiError::NotFound(format!("no site {id}"))),
        }
    }
}

/// The site a request was addressed to under `/sites/{id}`, if any; set before routing.
#[derive(Debug, Clone, Default)]
pub struct SiteScope(pub Option<String>);

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(handle) = self.store_scp.take() {
            handle.abort();
        }
    }
}
