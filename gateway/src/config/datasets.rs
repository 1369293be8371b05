//! `[eucaim]` and `[[datasets]]`: what a data holder shares with the EUCAIM federation (the
//! datasets, each some sites' studies, optionally narrowed by a QIDO-style filter), and how the
//! federated search reaches the gateway (docs/EUCAIM.md).

use std::collections::BTreeMap;

use super::problems::Problems;
use super::{raw, ProjectConfig, SiteConfig};
use dicomweb_model::SiteId;

/// `[eucaim]`: the federated-search provider endpoint and the privacy of its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EucaimConfig {
    /// Where Focus POSTs its queries (outside the DICOMweb base path).
    pub path: String,
    /// The secret Focus sends as `Authorization: Secret <secret>`; `None`: the endpoint is off
    /// (404), as a provider without a secret must not answer anyone.
    pub secret_file: Option<std::path::PathBuf>,
    /// How often the datasets' index is refreshed from the sites.
    pub refresh: std::time::Duration,
    /// Counts below this are not answered as they are (0: every count is).
    pub min_count: u64,
    pub below_minimum: BelowMinimum,
    /// Counts are rounded to a multiple of this (1: exact).
    pub round_to: u64,
}

/// What a count below `min_count` becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BelowMinimum {
    /// The dataset is left out of the answer, as one with no matching study.
    Omit,
    /// The count is answered as `min_count`.
    Minimum,
}

/// One dataset a data holder publishes (`[[datasets]]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetConfig {
    /// As in the EUCAIM catalogue: the federated search answers with it.
    pub id: String,
    pub name: String,
    pub description: String,
    /// The project whose access conditions apply to it, when authentication is on.
    pub project: Option<String>,
    /// The sites whose studies it holds (configuration order).
    pub sites: Vec<SiteId>,
    /// A QIDO-RS query string matched at the study level (`ModalitiesInStudy=MR`), empty for
    /// every study of the sites.
    pub filter: String,
    /// Values every study of the dataset has for search keys DICOM cannot answer (a
    /// diagnosis: SNOMEDCT439401001 = SNOMEDCT399068003), by key.
    pub fixed: BTreeMap<String, Vec<FixedValue>>,
}

/// One fixed value: a code, or a number (a year, a marker's value).
#[derive(Debug, Clone, PartialEq)]
pub enum FixedValue {
    Code(String),
    Number(f64),
}

pub(super) fn eucaim(raw: Option<raw::Eucaim>, problems: &mut Problems) -> EucaimConfig {
    let raw = raw.unwrap_or(raw::Eucaim {
        path: None,
        secret_file: None,
        refresh: None,
        min_count: None,
        below_minimum: None,
        round_to: None,
    });
    let path = raw.path.unwrap_or_else(|| "/eucaim/search".into());
    if !path.starts_with('/') || path.len() < 2 || path.contains(['?', '#', '{', '}']) {
        problems.push(format!("eucaim.path {path:?}: a path such as \"/eucaim/search\""));
    }
    let refresh = problems.duration("eucaim.refresh", raw.refresh.as_deref(), "1h");
    if refresh.is_zero() {
        problems.push("eucaim.refresh must be longer than 0s");
    }
    let below_minimum = match raw.below_minimum.as_deref().unwrap_or("omit") {
        "omit" => BelowMinimum::Omit,
        "minimum" => BelowMinimum::Minimum,
        other => {
            problems.push(format!("eucaim.below_minimum {other:?}: expected \"omit\" or \"minimum\""));
            BelowMinimum::Omit
        }
    };
    let round_to = raw.round_to.unwrap_or(1);
    if round_to == 0 {
        problems.push("eucaim.round_to must be at least 1");
    }
    EucaimConfig {
        path,
        secret_file: raw.secret_file,
        refresh,
        min_count: raw.min_count.unwrap_or(0),
        below_minimum,
        round_to,
    }
}

/// The provider's path must not be one of the gateway's other resources.
pub(super) fn path_free(path: &str, base_path: &str, problems: &mut Problems) {
    let taken = ["/healthz", "/readyz", "/metrics", "/datasets"];
    let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
    if taken.contains(&path) || under("/admin") || under(base_path) {
        problems.push(format!("eucaim.path {path:?} is one of the gateway's own resources"));
    }
}

pub(super) fn datasets(
    raw: Vec<raw::Dataset>,
    sites: &[SiteConfig],
    projects: &[ProjectConfig],
    problems: &mut Problems,
) -> Vec<DatasetConfig> {
    let mut datasets: Vec<DatasetConfig> = Vec::new();
    for dataset in raw {
        let id = dataset.id.trim().to_owned();
        if id.is_empty() || id.chars().any(|c| c.is_control()) {
            problems.push(format!("datasets {:?}: an id as in the EUCAIM catalogue", dataset.id));
        }
        if datasets.iter().any(|d| d.id == id) {
            problems.push(format!("datasets {id}: the id is used twice"));
        }
        let project = match &dataset.project {
            Some(name) => match projects.iter().find(|p| &p.id == name) {
                Some(project) => Some(project),
                None => {
                    problems.push(format!("datasets {id}: no project {name:?} is configured"));
                    None
                }
            },
            None => None,
        };
        let mut dataset_sites = Vec::new();
        match &dataset.sites {
            Some(named) => {
                for site in named {
                    match sites.iter().find(|s| s.id.as_str() == site) {
                        Some(found) if project.is_some_and(|p| !p.sites.contains(&found.id)) => {
                            problems.push(format!("datasets {id}: site {site:?} is not one of its project's"))
                        }
                        Some(found) => dataset_sites.push(found.id.clone()),
                        None => problems.push(format!("datasets {id}: no site {site:?} is configured")),
                    }
                }
            }
            None => match project {
                Some(project) => dataset_sites.extend(project.sites.iter().cloned()),
                None => dataset_sites.extend(sites.iter().map(|s| s.id.clone())),
            },
        }
        if dataset_sites.is_empty() && dataset.sites.is_some() {
            problems.push(format!("datasets {id}: names no site"));
        }
        let filter = dataset.filter.unwrap_or_default();
        if let Err(e) = dicomweb_model::qido::parse(&filter) {
            problems.push(format!("datasets {id}: filter: {e}"));
        }
        let fixed = dataset
            .fixed
            .into_iter()
            .map(|(key, values)| {
                let values = match values {
                    raw::FixedValues::One(one) => vec![one],
                    raw::FixedValues::Many(many) => many,
                };
                let values = values
                    .into_iter()
                    .map(|value| match value {
                        raw::FixedValue::Code(code) => FixedValue::Code(code),
                        raw::FixedValue::Number(number) => FixedValue::Number(number),
                    })
                    .collect();
                (key, values)
            })
            .collect();
        datasets.push(DatasetConfig {
            id,
            name: dataset.name,
            description: dataset.description.unwrap_or_default(),
            project: project.map(|p| p.id.clone()),
            sites: dataset_sites,
            filter,
            fixed,
        });
    }
    datasets
}
