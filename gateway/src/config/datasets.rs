//! `[eucaim]` and `[[datasets]]`: what a data holder shares with the EUCAIM federation (the
//! datasets, each some sites' studies, optionally narrowed by a QIDO-style filter), and how the
//! federated search reaches the gateway (docs/EUCAIM.md).

use std::collections::BTreeMap;

use super::problems::Problems;
use super::{raw, AccessCondition, ProjectConfig, SiteConfig};
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
    /// Who publishes the datasets, for their catalogue records.
    pub publisher: Publisher,
    /// Where the catalogue records are published (their IRIs are `{catalogue_url}/{id}`);
    /// `None`: the gateway's own `/datasets`.
    pub catalogue_url: Option<String>,
}

/// The data holder as its catalogue records name it (`[eucaim]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publisher {
    pub name: Option<String>,
    pub email: Option<String>,
    pub url: Option<String>,
    /// The contact point for the datasets; `None`: the publisher's.
    pub contact_email: Option<String>,
    pub contact_url: Option<String>,
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
    /// What its catalogue record says beyond what the studies show.
    pub catalogue: Catalogue,
}

/// A dataset's catalogue record settings (EUCAIM DCAT-AP, docs/EUCAIM.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalogue {
    pub version: String,
    pub keywords: Vec<String>,
    pub provenance: Option<String>,
    /// A EUCAIM Hyper-Ontology condition code (CLIN...); `None`: from a fixed diagnosis.
    pub condition: Option<String>,
    /// A EUCAIM collection method code (SPEC1000003, only images, unless set).
    pub collection_method: String,
    pub access_rights: AccessRights,
    pub access_condition: AccessCondition,
    /// Where access is requested (EUCAIM's Negotiator).
    pub access_url: Option<String>,
    pub landing_page: Option<String>,
    /// EUCAIM's tier of the dataset (1 catalogue, 2 federated search, 3 data); `None`: 2 when
    /// the federated search is offered, else 1.
    pub tier: Option<u8>,
    /// Hyper-Ontology codes added to what the studies show, by property (`hasBirthSex`,
    /// `hasImageModality`, `hasEquipmentManufacturer`, `hasImageBodyPart`): for what DICOM
    /// does not say, or says in words the record has no code for.
    pub codes: BTreeMap<String, Vec<String>>,
}

/// The record's properties whose codes a dataset may add to.
pub const CATALOGUE_CODE_PROPERTIES: [&str; 4] =
    ["hasBirthSex", "hasImageModality", "hasEquipmentManufacturer", "hasImageBodyPart"];

/// DCAT's access rights (the EU Publications Office's vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessRights {
    Public,
    Restricted,
    NonPublic,
}

impl AccessRights {
    fn parse(text: &str) -> Result<AccessRights, String> {
        match text {
            "public" => Ok(AccessRights::Public),
            "restricted" => Ok(AccessRights::Restricted),
            "non-public" => Ok(AccessRights::NonPublic),
            other => Err(format!("{other:?}: expected \"public\", \"restricted\" or \"non-public\"")),
        }
    }
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
        publisher: None,
        publisher_email: None,
        publisher_url: None,
        contact_email: None,
        contact_url: None,
        catalogue_url: None,
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
    for (key, url) in [
        ("eucaim.publisher_url", &raw.publisher_url),
        ("eucaim.contact_url", &raw.contact_url),
        ("eucaim.catalogue_url", &raw.catalogue_url),
    ] {
        if url.as_deref().is_some_and(|u| !(u.starts_with("https://") || u.starts_with("http://"))) {
            problems.push(format!("{key}: an http(s) URL"));
        }
    }
    EucaimConfig {
        path,
        secret_file: raw.secret_file,
        refresh,
        min_count: raw.min_count.unwrap_or(0),
        below_minimum,
        round_to,
        publisher: Publisher {
            name: raw.publisher,
            email: raw.publisher_email,
            url: raw.publisher_url,
            contact_email: raw.contact_email,
            contact_url: raw.contact_url,
        },
        catalogue_url: raw.catalogue_url.map(|u| u.trim_end_matches('/').to_owned()),
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
        let access_rights = AccessRights::parse(dataset.access_rights.as_deref().unwrap_or("restricted"))
            .map_err(|e| problems.push(format!("datasets {id}: access_rights {e}")))
            .unwrap_or(AccessRights::Restricted);
        let access_condition = match (&dataset.access_condition, project) {
            (Some(text), _) => AccessCondition::parse(text)
                .map_err(|e| problems.push(format!("datasets {id}: access_condition {e}")))
                .unwrap_or(AccessCondition::Download),
            (None, Some(project)) => project.access,
            (None, None) => AccessCondition::Download,
        };
        if let (Some(text), Some(project)) = (&dataset.access_condition, project) {
            if AccessCondition::parse(text).is_ok_and(|condition| condition != project.access) {
                problems.push(format!("datasets {id}: access_condition differs from its project's access"));
            }
        }
        if dataset.tier.is_some_and(|tier| !(1..=3).contains(&tier)) {
            problems.push(format!("datasets {id}: tier is 1, 2 or 3"));
        }
        let catalogue = Catalogue {
            version: dataset.version.unwrap_or_else(|| "1".into()),
            keywords: dataset.keywords,
            provenance: dataset.provenance,
            condition: dataset.condition,
            collection_method: dataset.collection_method.unwrap_or_else(|| "SPEC1000003".into()),
            access_rights,
            access_condition,
            access_url: dataset.access_url,
            landing_page: dataset.landing_page,
            tier: dataset.tier,
            codes: dataset.catalogue_codes,
        };
        for (property, codes) in &catalogue.codes {
            if !CATALOGUE_CODE_PROPERTIES.contains(&property.as_str()) {
                problems.push(format!(
                    "datasets {id}: catalogue_codes.{property}: one of {}",
                    CATALOGUE_CODE_PROPERTIES.join(", ")
                ));
            }
            if let Some(bad) = codes.iter().find(|c| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric())) {
                problems.push(format!("datasets {id}: catalogue_codes.{property}: {bad:?} is no Hyper-Ontology code"));
            }
        }
        let no_code = |c: &String| c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric());
        for (key, value) in
            [("condition", catalogue.condition.as_ref()), ("collection_method", Some(&catalogue.collection_method))]
        {
            if let Some(value) = value.filter(|v| no_code(v)) {
                problems.push(format!("datasets {id}: {key} {value:?} is no Hyper-Ontology code"));
            }
        }
        datasets.push(DatasetConfig {
            catalogue,
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

impl DatasetConfig {
    /// A dataset of one site with the defaults of the configuration file (benchmarks).
    pub(crate) fn synthetic(id: &str, site: &str) -> anyhow::Result<DatasetConfig> {
        let mut dataset = DatasetConfig::with_defaults(id, &[]);
        dataset.sites = vec![SiteId::new(site)?];
        Ok(dataset)
    }

    /// A dataset of `sites` with the defaults of the configuration file.
    pub(crate) fn with_defaults(id: &str, sites: &[&str]) -> DatasetConfig {
        DatasetConfig {
            id: id.into(),
            name: id.into(),
            description: String::new(),
            project: None,
            sites: sites.iter().map(|s| SiteId::new(s).expect("site id")).collect(),
            filter: String::new(),
            fixed: BTreeMap::new(),
            catalogue: Catalogue {
                version: "1".into(),
                keywords: Vec::new(),
                provenance: None,
                condition: None,
                collection_method: "SPEC1000003".into(),
                access_rights: AccessRights::Restricted,
                access_condition: AccessCondition::Download,
                access_url: None,
                landing_page: None,
                tier: None,
                codes: BTreeMap::new(),
            },
        }
    }
}

#[cfg(test)]
impl EucaimConfig {
    /// `[eucaim]` with the defaults of the configuration file.
    pub(crate) fn for_tests() -> EucaimConfig {
        eucaim(None, &mut Problems::default())
    }
}
