//! `dicomweb-gateway datasets describe`: every dataset's EUCAIM catalogue record, written as
//! JSON-LD (`{id}.jsonld`) and Turtle (`{id}.ttl`) after reading the datasets from their sites
//! (docs/EUCAIM.md). It opens the gateway's state directory, so it runs while the gateway is
//! stopped; a running gateway serves the same records at `/datasets/{id}/catalogue`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::Config;
use crate::core::eucaim::Datasets;

/// Writes the records into `out`; the files written, or what the configuration lacks.
pub async fn describe(config: &Config, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let datasets = Datasets::open(config)?.ok_or_else(|| anyhow::anyhow!("the configuration has no [[datasets]]"))?;
    let sites = Arc::new(crate::state::sites(config, None)?);
    datasets.refresh_now(&sites).await;
    std::fs::create_dir_all(out).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    let root = gateway_root(config);
    let mut written = Vec::new();
    let mut missing = Vec::new();
    for dataset in &config.datasets {
        match datasets.record(&dataset.id, &root) {
            Some(Ok(record)) => {
                let stem = file_stem(&dataset.id);
                let json_ld = out.join(format!("{stem}.jsonld"));
                std::fs::write(&json_ld, serde_json::to_string_pretty(&record.json_ld())? + "\n")?;
                let turtle = out.join(format!("{stem}.ttl"));
                std::fs::write(&turtle, record.turtle())?;
                written.extend([json_ld, turtle]);
            }
            Some(Err(lacks)) => missing.extend(lacks),
            None => {}
        }
    }
    if !missing.is_empty() {
        anyhow::bail!("no catalogue record can be written without:\n  - {}", missing.join("\n  - "));
    }
    Ok(written)
}

/// The gateway's public URL without its DICOMweb base path.
pub(crate) fn gateway_root(config: &Config) -> String {
    let public = &config.server.public_url;
    public.strip_suffix(&config.server.base_path).unwrap_or(public).to_owned()
}

/// A dataset id as a file name: characters other than letters, digits, `-`, `_` and `.` as `_`.
fn file_stem(id: &str) -> String {
    let stem: String =
        id.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '_' }).collect();
    if stem.starts_with('.') {
        format!("_{stem}")
    } else {
        stem
    }
}
