//! What the gateway tells the person who started it: the start-up summary (where it serves,
//! its sites and whether they answer, projects, de-identification, cache) and the shutdown.
//! Plain lines on stderr, or log events when the logs are JSON, so that a log collector reads
//! one format.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::{AuthMode, Config};
use crate::state::Gateway;

static AS_LOG_EVENTS: AtomicBool = AtomicBool::new(false);

/// From now on, announcements are log events (for JSON logs).
pub fn announce_as_log_events() {
    AS_LOG_EVENTS.store(true, Ordering::Relaxed);
}

/// One line for the person who started the gateway.
pub fn say(line: &str) {
    if AS_LOG_EVENTS.load(Ordering::Relaxed) {
        tracing::info!(target: "dicomweb_gateway::startup", "{line}");
    } else {
        eprintln!("dicomweb-gateway: {line}");
    }
}

/// A warning for the same person.
pub fn warn(line: &str) {
    if AS_LOG_EVENTS.load(Ordering::Relaxed) {
        tracing::warn!(target: "dicomweb_gateway::startup", "{line}");
    } else {
        eprintln!("dicomweb-gateway: WARNING: {line}");
    }
}

fn size(bytes: u64) -> String {
    match bytes {
        0 => "off".into(),
        b if b % (1 << 30) == 0 => format!("{} GiB", b >> 30),
        b if b % (1 << 20) == 0 => format!("{} MiB", b >> 20),
        b => format!("{b} bytes"),
    }
}

/// The summary of the configuration, once the gateway listens on `local`.
pub fn summary(config: &Config, local: std::net::SocketAddr) {
    say(&format!(
        "serving DICOMweb at {} (listening on {local}) over {} site(s): {}; Ctrl-C stops",
        config.server.public_url,
        config.sites.len(),
        config.sites.iter().map(|s| format!("{} ({})", s.id, s.location())).collect::<Vec<_>>().join(", "),
    ));
    let federation = &config.federation;
    say(&format!(
        "where studies live is remembered for {} ({}); sites get a C-ECHO every {}, a site's circuit opens after {} \
         consecutive failures; health at {}/admin/sites",
        humantime::format_duration(federation.remember),
        match &federation.state_dir {
            Some(dir) => format!("kept in {}", dir.join("federation.redb").display()),
            None => "in memory only".into(),
        },
        humantime::format_duration(federation.echo_interval),
        federation.circuit_failures,
        config.server.public_url.strip_suffix(&config.server.base_path).unwrap_or(&config.server.public_url),
    ));
    match &config.deid {
        Some(deid) => say(&format!(
            "de-identifying every response (PS3.15 Annex E basic profile{}{}); pseudonyms, each project's own, kept in \
             {}",
            deid.options.iter().map(|o| format!(", {o}")).collect::<String>(),
            config
                .projects
                .iter()
                .filter_map(|p| p.deid_options.as_ref().map(|o| format!("; project {}: [{}]", p.id, o.join(", "))))
                .collect::<String>(),
            match &deid.store {
                Some(url) => format!("PostgreSQL at {url}"),
                None => deid.state_dir.join("pseudonyms.redb").display().to_string(),
            },
        )),
        None => warn("no [deid] section: responses carry the sites' data, identifying values included, unchanged"),
    }
    let cache = &config.cache;
    say(&format!(
        "cache: memory {}, disk {}; a completed retrieval is trusted for {}, a search answer for {}",
        size(cache.memory_bytes),
        match &cache.disk_dir {
            Some(dir) if cache.disk_bytes > 0 => format!("{} in {}", size(cache.disk_bytes), dir.display()),
            _ => "off".into(),
        },
        humantime::format_duration(cache.ttl),
        humantime::format_duration(cache.search_ttl),
    ));
    match &config.auth {
        AuthMode::None => warn(&format!(
            "auth.mode = \"none\": every caller on {local} is let in, without a token, to every site (one implicit \
             project); use it on a machine of your own only"
        )),
        AuthMode::Jwt(issuers) => say(&format!(
            "bearer tokens of {} required; {} project(s): {}",
            issuers
                .iter()
                .map(|jwt| format!(
                    "{} for audience {} ({})",
                    jwt.issuer,
                    jwt.audience,
                    jwt.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", ")
                ))
                .collect::<Vec<_>>()
                .join(", or "),
            config.projects.len(),
            config
                .projects
                .iter()
                .map(|p| format!(
                    "{} ({} site(s): {})",
                    p.id,
                    p.sites.len(),
                    p.permissions.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("+")
                ))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

/// Once every site has answered its first C-ECHO or missed it (its timeout, at most), says
/// which sites answer.
pub(crate) async fn report_reachability(gw: Arc<Gateway>) {
    let longest = gw.sites.iter().map(|s| s.config.timeout).max().unwrap_or_default();
    let deadline = Instant::now() + longest + Duration::from_secs(1);
    while Instant::now() < deadline && gw.sites.iter().any(|s| s.health.report().last_echo.is_none()) {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut answering = Vec::new();
    let mut silent = Vec::new();
    for site in gw.sites.iter() {
        match site.health.report().last_echo {
            Some((_, Ok(latency))) => answering.push(format!("{} ({:.1} ms)", site.id(), latency.as_secs_f64() * 1e3)),
            Some((_, Err(reason))) => silent.push(format!("{} ({reason})", site.id())),
            None => silent.push(format!("{} (no answer yet)", site.id())),
        }
    }
    say(&format!(
        "{} of {} site(s) answer C-ECHO{}{}",
        answering.len(),
        gw.sites.len(),
        if answering.is_empty() { "" } else { ": " },
        answering.join(", ")
    ));
    if !silent.is_empty() {
        warn(&format!(
            "not answering: {}; searches name such a site in a Warning header and retrievals use another holder, \
             until it answers (check its address, AE titles and that it knows this gateway's AE title)",
            silent.join(", ")
        ));
    }
}
