//! `[[sites]]`: each site of the federation, ids unique: a PACS reached by DIMSE (its AE title,
//! address, retrieve method, bounds and TLS), or a DICOMweb origin (its URL, how the gateway
//! authenticates to it, TLS and bounds); and whether its data is de-identified already.

use dicomweb_model::{AeTitle, SiteId};

use super::problems::Problems;
use super::{
    parse_size, raw, ClientCredentials, DicomwebSiteConfig, DimseSiteConfig, OriginAuth, RetrieveMode, SiteConfig,
    SiteProtocol, SiteTlsFiles, SITE_MAX_PDU_RANGE,
};

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
        problems.push("no [[sites]]: the gateway needs at least one site");
    }
    sites
}

/// Where identifiable data could pass: a DICOMweb site that is not de-identified needs the
/// gateway's `[deid]` (a de-identified site is passed on as it comes, with or without it).
pub(super) fn deidentified(sites: &[SiteConfig], deid: bool, problems: &mut Problems) {
    for site in sites {
        let web = matches!(site.protocol, SiteProtocol::Dicomweb(_));
        if web && !site.deidentified && !deid {
            problems.push(format!(
                "site {}: a DICOMweb site that is not de-identified (deidentified = false) needs [deid]: \
                 its data would leave the gateway as it came",
                site.id
            ));
        }
    }
}

fn validate_site(site: raw::Site) -> Result<SiteConfig, Vec<String>> {
    let mut problems = Vec::new();
    let id = SiteId::new(&site.id).map_err(|e| problems.push(format!("id {:?}: {e}", site.id))).ok();
    let timeout_text = site.timeout.clone().unwrap_or_else(|| "30s".into());
    let timeout = humantime::parse_duration(&timeout_text)
        .map_err(|e| problems.push(format!("timeout {timeout_text:?}: {e}")))
        .ok();
    let store = site.store.unwrap_or(false);
    let deidentified = site.deidentified.unwrap_or(false);
    let protocol = match site.protocol.as_deref().unwrap_or("dimse") {
        "dimse" => dimse(site, &mut problems).map(SiteProtocol::Dimse),
        "dicomweb" => dicomweb(site, &mut problems).map(SiteProtocol::Dicomweb),
        other => {
            problems.push(format!("protocol {other:?}: expected \"dimse\" or \"dicomweb\""));
            None
        }
    };
    match (id, timeout, protocol) {
        (Some(id), Some(timeout), Some(protocol)) if problems.is_empty() => {
            Ok(SiteConfig { id, timeout, store, deidentified, protocol })
        }
        _ => Err(problems),
    }
}

/// Keys of the other protocol, named so that a site says one thing.
fn not_for(protocol: &str, keys: &[(&str, bool)], problems: &mut Vec<String>) {
    for (key, present) in keys {
        if *present {
            problems.push(format!("{key} is not a key of a {protocol} site"));
        }
    }
}

fn dimse(site: raw::Site, problems: &mut Vec<String>) -> Option<DimseSiteConfig> {
    not_for(
        "DIMSE",
        &[
            ("url", site.url.is_some()),
            ("auth", site.auth.is_some()),
            ("token_file", site.token_file.is_some()),
            ("token_url", site.token_url.is_some()),
            ("client_id", site.client_id.is_some()),
            ("client_secret_file", site.client_secret_file.is_some()),
            ("scope", site.scope.is_some()),
            ("max_connections", site.max_connections.is_some()),
            ("max_instance_size", site.max_instance_size.is_some()),
        ],
        problems,
    );
    let (Some(ae_title), Some(address), Some(retrieve)) = (site.ae_title, site.address, site.retrieve) else {
        problems.push("a DIMSE site needs ae_title, address and retrieve".into());
        return None;
    };
    let ae_title = AeTitle::new(&ae_title).map_err(|e| problems.push(format!("ae_title {ae_title:?}: {e}"))).ok();
    if address.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
        problems.push(format!("address {address:?} must be host:port"));
    }
    let retrieve = match retrieve.as_str() {
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
    let retrieve_associations = site.retrieve_associations;
    if let Some(retrieve_associations) =
        retrieve_associations.filter(|&n| max_associations > 0 && (n == 0 || n > max_associations))
    {
        problems.push(format!(
            "retrieve_associations = {retrieve_associations}: must be from 1 to max_associations ({max_associations})"
        ));
    }
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
        Some(tls) => match (tls.ca, tls.cert, tls.key) {
            (None, _, _) => {
                problems.push("tls: ca is required (the PACS's certificate is checked against it)".into());
                None
            }
            (Some(ca), Some(cert), Some(key)) => Some(SiteTlsFiles { ca, cert_and_key: Some((cert, key)) }),
            (Some(ca), None, None) => Some(SiteTlsFiles { ca, cert_and_key: None }),
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
    Some(DimseSiteConfig {
        ae_title: ae_title?,
        address,
        retrieve: retrieve?,
        max_associations,
        retrieve_associations,
        max_pdu_length,
        tls,
        move_calling_ae,
    })
}

fn dicomweb(site: raw::Site, problems: &mut Vec<String>) -> Option<DicomwebSiteConfig> {
    not_for(
        "DICOMweb",
        &[
            ("ae_title", site.ae_title.is_some()),
            ("address", site.address.is_some()),
            ("retrieve", site.retrieve.is_some()),
            ("max_associations", site.max_associations.is_some()),
            ("retrieve_associations", site.retrieve_associations.is_some()),
            ("max_pdu_length", site.max_pdu_length.is_some()),
            ("move_calling_ae", site.move_calling_ae.is_some()),
        ],
        problems,
    );
    let Some(url) = site.url else {
        problems.push("a DICOMweb site needs url (its base: url/studies is the studies resource)".into());
        return None;
    };
    let url = url.trim_end_matches('/').to_owned();
    match url.split_once("://") {
        Some(("http" | "https", rest)) if !rest.is_empty() && !rest.contains(['?', '#', ' ']) => {}
        _ => problems.push(format!("url {url:?} must be an http:// or https:// URL without query or fragment")),
    }
    let method = site.auth.as_deref().unwrap_or("none");
    let client_keys = [site.token_url.is_some(), site.client_id.is_some(), site.client_secret_file.is_some()];
    if method != "client-credentials" && (client_keys.contains(&true) || site.scope.is_some()) {
        problems
            .push("token_url, client_id, client_secret_file and scope are for auth = \"client-credentials\"".into());
    }
    let auth = match (method, site.token_file) {
        ("none", None) => Some(OriginAuth::None),
        ("forward", None) => Some(OriginAuth::Forward),
        ("token", Some(file)) => Some(OriginAuth::TokenFile(file)),
        ("client-credentials", None) => match (site.token_url, site.client_id, site.client_secret_file) {
            (Some(token_url), Some(client_id), Some(secret_file))
                if token_url.starts_with("https://") || token_url.starts_with("http://") =>
            {
                Some(OriginAuth::ClientCredentials(ClientCredentials {
                    token_url,
                    client_id,
                    secret_file,
                    scope: site.scope,
                }))
            }
            _ => {
                problems.push(
                    "auth = \"client-credentials\" needs token_url (an http(s) URL), client_id and client_secret_file"
                        .into(),
                );
                None
            }
        },
        ("token", None) => {
            problems.push("auth = \"token\" needs token_file".into());
            None
        }
        ("none" | "forward" | "client-credentials", Some(_)) => {
            problems.push("token_file is only for auth = \"token\"".into());
            None
        }
        (other, _) => {
            problems
                .push(format!("auth {other:?}: expected \"none\", \"forward\", \"token\" or \"client-credentials\""));
            None
        }
    };
    let max_connections = site.max_connections.unwrap_or(16);
    if max_connections == 0 {
        problems.push("max_connections must be at least 1".into());
    }
    let max_instance_text = site.max_instance_size.unwrap_or_else(|| "2GiB".into());
    let max_instance_size =
        parse_size(&max_instance_text).map_err(|e| problems.push(format!("max_instance_size: {e}"))).unwrap_or(0);
    let (ca, cert_and_key) = match site.tls {
        None => (None, None),
        Some(tls) => match (tls.cert, tls.key) {
            (Some(cert), Some(key)) => (tls.ca, Some((cert, key))),
            (None, None) => (tls.ca, None),
            _ => {
                problems.push("tls: cert and key go together".into());
                (None, None)
            }
        },
    };
    if (ca.is_some() || cert_and_key.is_some()) && !url.starts_with("https://") {
        problems.push("tls is for an https:// url".into());
    }
    Some(DicomwebSiteConfig { url, auth: auth?, ca, cert_and_key, max_connections, max_instance_size })
}
