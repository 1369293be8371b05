//! `[server]` and `[dimse]`: where the gateway listens (HTTP and DIMSE), its URLs, its bounds at
//! the HTTP edge and its shedding, its TLS files and its own AE title.

use std::net::SocketAddr;

use dicomweb_model::AeTitle;

use super::problems::Problems;
use super::{parse_size, raw, HttpLimitsConfig, ServerConfig, ServerTlsFiles, SheddingConfig};

/// `[server]` validated: `None` when `listen` is wrong; every problem is kept either way.
pub(super) fn server(raw: raw::Server, problems: &mut Problems) -> Option<ServerConfig> {
    let listen =
        problems.take(raw.listen.parse::<SocketAddr>().map_err(|e| format!("server.listen {:?}: {e}", raw.listen)));
    let base_path = raw.base_path.clone().unwrap_or_else(|| "/dicom-web".to_owned());
    problems.check(if base_path.starts_with('/') && !base_path.ends_with('/') {
        Ok(())
    } else {
        Err(format!("server.base_path {base_path:?} must start with '/' and not end with one"))
    });
    let stow_limit = problems.size("server.stow_limit", raw.stow_limit.as_deref(), "2GiB");
    let max_connections = raw.max_connections.unwrap_or(1024);
    problems.check(if max_connections > 0 { Ok(()) } else { Err("server.max_connections must be at least 1".into()) });
    let header_timeout_text = raw.header_timeout.clone().unwrap_or_else(|| "10s".into());
    let header_timeout = humantime::parse_duration(&header_timeout_text)
        .map_err(|e| format!("server.header_timeout {header_timeout_text:?}: {e}"))
        .and_then(|t| if t.is_zero() { Err("server.header_timeout must be more than 0s".into()) } else { Ok(t) });
    let header_timeout = problems.take(header_timeout).unwrap_or_default();
    let http_limits = http_limits(&raw, problems);
    let replica_id = raw.replica_id.clone().unwrap_or_else(default_replica_id);
    if replica_id.is_empty()
        || replica_id.len() > 64
        || !replica_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    {
        problems.push(format!(
            "server.replica_id {replica_id:?}: 1 to 64 letters, digits, '.', '-' or '_' (set it when the host name \
             is not like that)"
        ));
    }
    let stow_memory = problems.positive_size("server.stow_memory", raw.stow_memory.as_deref(), "1GiB");
    let max_requests_in_flight = raw.max_requests_in_flight.unwrap_or(256);
    problems.check(if max_requests_in_flight > 0 {
        Ok(())
    } else {
        Err("server.max_requests_in_flight must be at least 1".into())
    });
    let queue_wait = problems.duration("server.queue_wait", raw.queue_wait.as_deref(), "1s");
    let shedding = SheddingConfig { max_requests_in_flight, queue_wait, stow_memory };
    let tls = raw.tls.as_ref().map(|t| ServerTlsFiles {
        cert: t.cert.clone(),
        key: t.key.clone(),
        client_ca: t.client_ca.clone(),
    });
    let public_url = raw.public_url.unwrap_or_else(|| {
        let scheme = if raw.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{base_path}", raw.listen)
    });
    problems.check(if public_url.starts_with("http://") || public_url.starts_with("https://") {
        Ok(())
    } else {
        Err(format!("server.public_url {public_url:?} must be an http(s) URL"))
    });
    let metrics_listen = raw.metrics_listen.as_deref().and_then(|text| {
        problems.take(text.parse::<SocketAddr>().map_err(|e| format!("server.metrics_listen {text:?}: {e}")))
    });
    Some(ServerConfig {
        listen: listen?,
        metrics_listen,
        tls,
        stow_limit,
        max_connections,
        header_timeout,
        http_limits,
        replica_id,
        shedding,
        base_path,
        public_url,
    })
}

/// The bounds on what a request may be before anything parses it.
fn http_limits(raw: &raw::Server, problems: &mut Problems) -> HttpLimitsConfig {
    let edge_size = |key: &str, text: &Option<String>, default: &str, min: u64, max: u64| {
        parse_size(text.as_deref().unwrap_or(default)).map_err(|e| format!("server.{key}: {e}")).and_then(|n| {
            if (min..=max).contains(&n) {
                Ok(n)
            } else {
                Err(format!("server.{key} must be from {min} to {max} bytes"))
            }
        })
    };
    let edge_count = |key: &str, value: Option<usize>, default: usize| match value.unwrap_or(default) {
        0 => Err(format!("server.{key} must be at least 1")),
        n => Ok(n),
    };
    // hyper's smallest read buffer is 8 KiB; a request head of more than 1 MiB is no request.
    let max_header_size = edge_size("max_header_size", &raw.max_header_size, "64KiB", 8 << 10, 1 << 20);
    let max_query_length = edge_count("max_query_length", raw.max_query_length, 4096);
    let max_query_parameters = edge_count("max_query_parameters", raw.max_query_parameters, 100);
    let stow_max_parts = edge_count("stow_max_parts", raw.stow_max_parts, 10_000);
    let stow_max_part_size = edge_size("stow_max_part_size", &raw.stow_max_part_size, "2GiB", 1, u64::MAX);
    HttpLimitsConfig {
        max_header_size: problems.take(max_header_size).unwrap_or(0) as usize,
        max_query_length: problems.take(max_query_length).unwrap_or(0),
        max_query_parameters: problems.take(max_query_parameters).unwrap_or(0),
        stow_max_parts: problems.take(stow_max_parts).unwrap_or(0),
        stow_max_part_size: problems.take(stow_max_part_size).unwrap_or(0),
    }
}

/// `[dimse]`: the gateway's own AE title and where it listens for C-MOVE sub-operations.
pub(super) fn dimse(raw: &raw::Dimse, problems: &mut Problems) -> (Option<AeTitle>, Option<SocketAddr>) {
    let ae_title = problems.take(AeTitle::new(&raw.ae_title).map_err(|e| format!("dimse.ae_title: {e}")));
    let listen =
        problems.take(raw.listen.parse::<SocketAddr>().map_err(|e| format!("dimse.listen {:?}: {e}", raw.listen)));
    (ae_title, listen)
}

/// The host name (what `server.replica_id` defaults to), or a random id when it cannot be read.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if !host.is_empty() {
        return host;
    }
    let mut random = [0u8; 6];
    let _ = std::fs::File::open("/dev/urandom").and_then(|mut r| std::io::Read::read_exact(&mut r, &mut random));
    format!("gw-{}", random.iter().map(|b| format!("{b:02x}")).collect::<String>())
}
