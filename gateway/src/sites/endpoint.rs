//! A configured DIMSE site as pacs-adapter reaches it: AE titles, address, association bounds,
//! timeouts and TLS.

use std::time::Duration;

use pacs_adapter::{SiteEndpoint, SiteTls};

use crate::config::{Config, SiteConfig};

/// The adapter's view of a configured DIMSE site.
pub(crate) fn endpoint(config: &Config, site_config: &SiteConfig) -> Result<SiteEndpoint, String> {
    let site = site_config.dimse().ok_or("the site is not reached by DIMSE")?;
    let mut endpoint = SiteEndpoint::new(
        site_config.id.clone(),
        config.dimse.ae_title.clone(),
        site.ae_title.clone(),
        site.address.clone(),
    );
    endpoint.max_associations = site.max_associations;
    endpoint.response_timeout = site_config.timeout;
    endpoint.connect_timeout = site_config.timeout.min(Duration::from_secs(10));
    endpoint.max_pdu_length = site.max_pdu_length;
    endpoint.move_calling_ae_title = site.move_calling_ae.clone();
    if let Some(tls) = &site.tls {
        let cert_and_key = tls.cert_and_key.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
        let client = pacs_adapter::tls::client_config(&tls.ca, cert_and_key).map_err(|e| e.to_string())?;
        let host = site.address.rsplit_once(':').map_or(site.address.as_str(), |(host, _)| host);
        endpoint.tls = Some(SiteTls { config: client, server_name: host.trim_matches(['[', ']']).to_owned() });
    }
    Ok(endpoint)
}
