//! `dicomweb-gateway check`: read every file the configuration names as the gateway will (TLS
//! certificates and keys, the JWKS file), then echo every configured site (C-ECHO, or a
//! QIDO-RS search for one study) and print what an administrator needs to see (site, AE,
//! address or URL, reachable, latency, retrieve method).

use std::process::ExitCode;

use crate::config::{AuthMode, Config, JwksSource, SiteProtocol};

/// Every problem with the files the configuration names, each with its key.
pub async fn files_named(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(tls) = &config.server.tls {
        if let Err(e) = crate::http::https::server_config(tls) {
            problems.push(format!("server.tls: {e:#}"));
        }
    }
    for (i, site) in config.sites.iter().enumerate() {
        // Building the site reads its TLS files (and nothing is sent).
        if let Err(e) = crate::sites::protocol(config, site, None) {
            problems.push(format!("sites[{i}] ({}).tls: {e}", site.id));
        }
    }
    if let AuthMode::Jwt(issuers) = &config.auth {
        // A JWKS URL is not fetched here: `check` sends nothing but C-ECHOes.
        for jwt in issuers.iter().filter(|jwt| matches!(jwt.jwks, JwksSource::File(_))) {
            if let Err(e) = crate::http::auth::Authenticator::start(jwt).await {
                problems.push(format!("auth ({}): {e:#}", jwt.issuer));
            }
        }
    }
    problems
}

/// Checks the files, then (unless `config_only`) C-ECHOes every site; failure when anything
/// fails.
pub async fn run(config: &Config, config_only: bool) -> ExitCode {
    let problems = files_named(config).await;
    for problem in &problems {
        eprintln!("configuration: {problem}");
    }
    if config_only {
        if problems.is_empty() {
            println!("configuration valid: {} site(s), every file it names read", config.sites.len());
            return ExitCode::SUCCESS;
        }
        return ExitCode::FAILURE;
    }
    let echoed = echo_table(config).await;
    if problems.is_empty() {
        echoed
    } else {
        ExitCode::FAILURE
    }
}

async fn echo_table(config: &Config) -> ExitCode {
    let checks = config.sites.iter().map(|site| async move {
        let result = match crate::sites::protocol(config, site, None) {
            Ok(protocol) => protocol.echo_once().await,
            Err(e) => Err(format!("configuration: {e}")),
        };
        (site, result)
    });
    let results = futures::future::join_all(checks).await;
    let rows: Vec<[String; 6]> = results
        .iter()
        .map(|(site, result)| {
            let (reachable, latency) = match result {
                Ok(rtt) => ("yes".to_owned(), format!("{:.1} ms", rtt.as_secs_f64() * 1000.0)),
                Err(e) => (format!("no: {e}"), "-".to_owned()),
            };
            let (ae, address, retrieve) = match &site.protocol {
                SiteProtocol::Dimse(dimse) => {
                    (dimse.ae_title.to_string(), dimse.address.clone(), dimse.retrieve.to_string())
                }
                SiteProtocol::Dicomweb(web) => ("-".to_owned(), web.url.clone(), "wado-rs".to_owned()),
            };
            [site.id.to_string(), ae, address, reachable, latency, retrieve]
        })
        .collect();
    let header = ["SITE", "AE", "ADDRESS", "REACHABLE", "LATENCY", "RETRIEVE"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row.iter().zip(widths).map(|(cell, w)| format!("{cell:<w$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    if failed > 0 {
        eprintln!("{failed} of {} sites failed the C-ECHO", results.len());
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
