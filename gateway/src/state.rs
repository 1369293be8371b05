//! What the server holds while it runs: the configuration and the site it answers from, with
//! its association pool and retrieve method (C-GET, or C-MOVE into the storage SCP).

use std::sync::Arc;

use pacs_adapter::{AssociationPool, RetrieveMethod, StoreScp, StoreScpOptions};

use crate::check::endpoint;
use crate::config::{Config, RetrieveMode, SiteConfig};

#[derive(Debug)]
pub struct Site {
    pub config: SiteConfig,
    pub pool: AssociationPool,
    pub method: RetrieveMethod,
}

#[derive(Debug)]
pub struct Gateway {
    pub config: Config,
    /// The site every request is answered from. One site until federation lands: the first
    /// configured one.
    pub site: Site,
    store_scp: Option<tokio::task::JoinHandle<()>>,
}

impl Gateway {
    /// Builds the site pools and, when a site retrieves by C-MOVE, binds the storage SCP on
    /// `dimse.listen`.
    pub async fn start(config: Config) -> anyhow::Result<Arc<Gateway>> {
        let site_config = config.sites.first().cloned().ok_or_else(|| anyhow::anyhow!("no site is configured"))?;
        let pool = AssociationPool::new(endpoint(&config, &site_config).map_err(|e| anyhow::anyhow!(e))?);
        let (method, store_scp) = match site_config.retrieve {
            RetrieveMode::CGet => (RetrieveMethod::Get, None),
            RetrieveMode::CMove => {
                let options = StoreScpOptions::new(config.dimse_ae_title.clone());
                let (scp, local, handle) =
                    StoreScp::spawn(&config.dimse_listen.to_string(), options).await.map_err(|e| {
                        anyhow::anyhow!("cannot listen for C-MOVE sub-operations on {}: {e}", config.dimse_listen)
                    })?;
                tracing::info!(%local, ae = %config.dimse_ae_title, "storage SCP for C-MOVE listening");
                (RetrieveMethod::Move(scp), Some(handle))
            }
        };
        Ok(Arc::new(Gateway { site: Site { config: site_config, pool, method }, config, store_scp }))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(handle) = self.store_scp.take() {
            handle.abort();
        }
    }
}
