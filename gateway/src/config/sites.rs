//! `[[sites]]`: each PACS of the federation, its AE title, address, retrieve method, bounds and
//! TLS; ids unique.

use dicomweb_model::{AeTitle, SiteId};

use super::problems::Problems;
use super::{parse_size, raw, RetrieveMode, SiteConfig, SiteTlsFiles, SITE_MAX_PDU_RANGE};

/// Every site, each problem named by its place in the file.
pub(super) fn sites(raw: Vec<raw::Site>, problems: &mut Problems) -> Vec<SiteConfig> {
    let mut sites = Vec::new();
    for (i, site) in raw.into_iter().enumerate() {
        match validate_site(site) {
            Ok(site) => {
                if sites.iter().any(|s: &SiteConfig| s.id == site.id) {
                    problems.push(format!("sites[{i}]: id {} is used twice", site.id));
                }
                sites.push(site);
            }
            Err(site_problems) => problems.extend(site_problems.into_iter().map(|p| format!("sites[{i}]: {p}"))),
        }
    }
    if sites.is_empty() && problems.is_empty() {
        problems.push("no [[sites]]: the gateway needs at least one PACS");
    }
    sites
}

fn validate_site(site: raw::Site) -> Result<SiteConfig, Vec<String>> {
    let mut problems = Vec::new();
    let id = SiteId::new(&site.id).map_err(|e| problems.push(format!("id {:?}: {e}", site.id))).ok();
    let ae_title =
        AeTitle::new(&site.ae_title).map_err(|e| problems.push(format!("ae_title {:?}: {e}", site.ae_title))).ok();
    if site.address.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
        problems.push(format!("address {:?} must be host:port", site.address));
    }
    let retrieve = match site.retrieve.as_str() {
        "c-get" => Some(RetrieveMode::CGet),
        "c-move" => Some(RetrieveMode::CMove),
        other => {
            problems.push(format!("retrieve {other:?}: expected \"c-get\" or \"c-move\""));
            None
        }
    };
    let max_associations = site.max_associations.unwrap_or(4);
    if max_associations == 0 {
        problems.push("max_associations must be at least 1".into());
    }
    let retrieve_associations = site.retrieve_associations.unwrap_or(1);
    if max_associations > 0 && (retrieve_associations == 0 || retrieve_associations > max_associations) {
        problems.push(format!(
            "retrieve_associations = {retrieve_associations}: must be from 1 to max_associations ({max_associations})"
        ));
    }
    let timeout_text = site.timeout.unwrap_or_else(|| "30s".into());
    let timeout = humantime::parse_duration(&timeout_text)
        .map_err(|e| problems.push(format!("timeout {timeout_text:?}: {e}")))
        .ok();
    let max_pdu_text = site.max_pdu_length.unwrap_or_else(|| "1MiB".into());
    let max_pdu_length = match parse_size(&max_pdu_text) {
        Ok(n) if SITE_MAX_PDU_RANGE.contains(&n) => n as u32,
        Ok(_) => {
            problems.push(format!("max_pdu_length {max_pdu_text:?}: must be from 4KiB to 64MiB"));
            0
        }
        Err(e) => {
            problems.push(format!("max_pdu_length: {e}"));
            0
        }
    };
    let tls = match site.tls {
        None => None,
        Some(tls) => match (tls.cert, tls.key) {
            (Some(cert), Some(key)) => Some(SiteTlsFiles { ca: tls.ca, cert_and_key: Some((cert, key)) }),
            (None, None) => Some(SiteTlsFiles { ca: tls.ca, cert_and_key: None }),
            _ => {
                problems.push("tls: cert and key go together".into());
                None
            }
        },
    };
    if retrieve == Some(RetrieveMode::CMove) && tls.is_some() {
        // The storage SCP that receives C-MOVE sub-operations speaks plain TCP only.
        problems.push(
            "retrieve = \"c-move\" with tls: the PACS would send the instances to the storage SCP in clear (it does not speak TLS); use c-get over TLS".into(),
        );
    }
    let move_calling_ae = site
        .move_calling_ae
        .as_deref()
        .and_then(|raw| AeTitle::new(raw).map_err(|e| problems.push(format!("move_calling_ae {raw:?}: {e}"))).ok());
    if move_calling_ae.is_some() && retrieve != Some(RetrieveMode::CMove) {
        problems.push("move_calling_ae is only for retrieve = \"c-move\"".into());
    }
    match (id, ae_title, retrieve, timeout) {
        (Some(id), Some(ae_title), Some(retrieve), Some(timeout)) if problems.is_empty() => Ok(SiteConfig {
            id,
            ae_title,
            address: site.address,
            retrieve,
            max_associations,
            retrieve_associations,
            timeout,
            max_pdu_length,
            store: site.store.unwrap_or(false),
            tls,
            move_calling_ae,
        }),
        _ => Err(problems),
    }
}
