//! The audit trail (`audit.path`): one JSON line per request, each carrying the SHA-256 of the
//! line before it, so that a line removed, changed or inserted breaks the chain, which
//! `dicomweb-gateway audit verify FILE` checks.
//!
//! A line: `time`, `subject` (the token's `sub`; `anonymous` without authentication, null when
//! the request was not authenticated), `project` (the project the request acted in; null when
//! none), `method`, `route` (the template, never the URL), `site` (when addressed under
//! `/sites/{id}`), `resources` (the UIDs of the path, as the client named them: pseudonyms when
//! the gateway de-identifies; the sites' own UIDs are never written), `sites` (the sites
//! contacted), `status`, `outcome` (`complete`, or `aborted` when the body did not reach the
//! client whole), `bytes` (of the body sent), `ms` (until the body ended), `replica` (the
//! gateway process that served it, `server.replica_id`, so that the trails of several replicas
//! can be merged by time), and `prev` (hex
//! SHA-256 of the previous line, all zeros for the first). The chain continues across restarts.
//!
//! A changed line is caught by the line after it; the last line has none, so `verify` prints
//! the hash of the last line: kept elsewhere (a ticket, another machine's log), it anchors the
//! end of the trail too.

pub(crate) mod fhir;

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;
use sha2::{Digest, Sha256};

/// The previous hash of a file's first line.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One request as the audit trail records it.
#[derive(Debug, Clone)]
pub(crate) struct Event<'a> {
    pub(crate) subject: Option<&'a str>,
    pub(crate) project: Option<&'a str>,
    pub(crate) method: &'a str,
    pub(crate) route: &'a str,
    pub(crate) site: Option<&'a str>,
    pub(crate) resources: &'a [String],
    pub(crate) sites: &'a [String],
    pub(crate) status: u16,
    pub(crate) outcome: &'a str,
    pub(crate) bytes: u64,
    pub(crate) ms: u64,
    /// Instances whose burned-in text was cleaned for this request (docs/BURNED-IN.md).
    pub(crate) cleaned: u64,
    /// A federated count query: its id and each dataset's counts as answered
    /// (docs/EUCAIM.md); written only for such a query.
    pub(crate) search: Option<&'a serde_json::Value>,
}

#[derive(Debug)]
pub(crate) struct AuditLog {
    path: PathBuf,
    state: Mutex<(std::fs::File, String)>,
    /// The same events as FHIR AuditEvent resources (`audit.fhir_path`).
    fhir: Option<Mutex<std::fs::File>>,
    /// `server.replica_id`.
    replica: String,
}

fn hash(line: &str) -> String {
    Sha256::digest(line.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

impl AuditLog {
    /// Opens (or creates) the trail, continuing the chain from its last line, and the FHIR
    /// form of it when `fhir_path` is given.
    pub(crate) fn open(path: &Path, fhir_path: Option<&Path>) -> anyhow::Result<AuditLog> {
        let fhir = match fhir_path {
            Some(fhir_path) => Some(Mutex::new(
                crate::core::private_files::options()
                    .create(true)
                    .append(true)
                    .open(fhir_path)
                    .map_err(|e| anyhow::anyhow!("cannot open audit.fhir_path {}: {e}", fhir_path.display()))?,
            )),
            None => None,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            crate::core::private_files::create_dir(dir)?;
        }
        let mut last = GENESIS.to_owned();
        if let Ok(file) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(file).lines() {
                let line = line?;
                if !line.is_empty() {
                    last = hash(&line);
                }
            }
        }
        let file = crate::core::private_files::options()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| anyhow::anyhow!("cannot open audit.path {}: {e}", path.display()))?;
        Ok(AuditLog { path: path.to_owned(), state: Mutex::new((file, last)), fhir, replica: String::new() })
    }

    /// Names the replica (`server.replica_id`) in every line from now on.
    pub(crate) fn replica(mut self, replica: &str) -> AuditLog {
        self.replica = replica.to_owned();
        self
    }

    /// Appends one event. A trail that cannot be written is logged (without the event's
    /// resources) and the request is not affected.
    pub(crate) fn record(&self, event: &Event<'_>) {
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let time = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
        if let Some(fhir) = &self.fhir {
            let resource = crate::core::audit::fhir::audit_event(event, &time, &self.replica);
            let mut file = fhir.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if let Err(e) = writeln!(file, "{resource}") {
                tracing::error!(error = %e, "cannot write the FHIR audit trail");
            }
        }
        let mut line = json!({
            "time": time,
            "subject": event.subject,
            "project": event.project,
            "method": event.method,
            "route": event.route,
            "site": event.site,
            "resources": event.resources,
            "sites": event.sites,
            "status": event.status,
            "outcome": event.outcome,
            "bytes": event.bytes,
            "ms": event.ms,
            "cleaned": event.cleaned,
            "replica": self.replica,
            "prev": state.1,
        });
        if let Some(search) = event.search {
            line["search"] = search.clone();
        }
        let line = line.to_string();
        match writeln!(state.0, "{line}") {
            Ok(()) => state.1 = hash(&line),
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "cannot write the audit trail"),
        }
    }
}

/// An intact trail: how many lines, and the hash of the last one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intact {
    pub lines: usize,
    pub head: String,
}

/// Checks a trail's chain: intact, or the first broken line (1-based) and why.
pub fn verify(path: &Path) -> anyhow::Result<Result<Intact, (usize, String)>> {
    let file = std::fs::File::open(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let mut previous = GENESIS.to_owned();
    let mut count = 0;
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let parsed: serde_json::Value = match serde_json::from_str(&line) {
            Ok(parsed) => parsed,
            Err(_) => return Ok(Err((number, "not a JSON line".into()))),
        };
        if parsed.get("prev").and_then(|p| p.as_str()) != Some(previous.as_str()) {
            return Ok(Err((number, "does not follow the line before it (changed, removed or inserted)".into())));
        }
        previous = hash(&line);
        count += 1;
    }
    Ok(Ok(Intact { lines: count, head: previous }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: u16) -> Event<'static> {
        Event {
            subject: Some("alice"),
            project: Some("lung-ai"),
            method: "GET",
            route: "/dicom-web/studies",
            site: None,
            resources: &[],
            sites: &[],
            status,
            outcome: "complete",
            bytes: 10,
            ms: 3,
            cleaned: 0,
            search: None,
        }
    }

    #[test]
    fn the_chain_holds_across_restarts_and_breaks_where_the_trail_is_changed() {
        let path = std::env::temp_dir().join(format!("audit-test-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&path);
        AuditLog::open(&path, None).expect("open").replica("gw-a").record(&event(200));
        let reopened = AuditLog::open(&path, None).expect("reopen");
        reopened.record(&event(404));
        reopened.record(&event(200));
        let intact = verify(&path).expect("read").expect("intact");
        assert_eq!(intact.lines, 3);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.lines().next().expect("a line").contains(r#""replica":"gw-a""#), "{text}");
        assert_eq!(intact.head, hash(text.lines().last().expect("a line")));
        std::fs::write(&path, text.replacen("\"status\":404", "\"status\":200", 1)).expect("write");
        assert_eq!(verify(&path).expect("read").map_err(|(line, _)| line), Err(3));
        let lines: Vec<&str> = text.lines().collect();
        std::fs::write(&path, format!("{}\n{}\n", lines[0], lines[2])).expect("write");
        assert_eq!(verify(&path).expect("read").map_err(|(line, _)| line), Err(2));
        let _ = std::fs::remove_file(&path);
    }
}
