//! The file as written. Optional keys are `Option` so validation can name what is missing.
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub dimse: Dimse,
    #[serde(default)]
    pub sites: Vec<Site>,
    pub deid: Option<Deid>,
    pub auth: Option<Auth>,
    #[serde(default)]
    pub projects: Vec<Project>,
    pub cache: Option<Cache>,
    pub audit: Option<Audit>,
    pub federation: Option<Federation>,
    pub limits: Option<Limits>,
    pub dataset_limits: Option<DataSetLimits>,
    pub eucaim: Option<Eucaim>,
    #[serde(default)]
    pub datasets: Vec<Dataset>,
    #[serde(default)]
    pub grants: Vec<Grant>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Eucaim {
    pub path: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub refresh: Option<String>,
    pub min_count: Option<u64>,
    pub below_minimum: Option<String>,
    pub round_to: Option<u64>,
    pub publisher: Option<String>,
    pub publisher_email: Option<String>,
    pub publisher_url: Option<String>,
    pub contact_email: Option<String>,
    pub contact_url: Option<String>,
    pub catalogue_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dataset {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub project: Option<String>,
    pub sites: Option<Vec<String>>,
    pub filter: Option<String>,
    #[serde(default)]
    pub fixed: std::collections::BTreeMap<String, FixedValues>,
    pub version: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    pub provenance: Option<String>,
    pub condition: Option<String>,
    pub collection_method: Option<String>,
    pub access_rights: Option<String>,
    pub access_condition: Option<String>,
    pub access_url: Option<String>,
    pub landing_page: Option<String>,
    pub tier: Option<u8>,
    #[serde(default)]
    pub catalogue_codes: std::collections::BTreeMap<String, Vec<String>>,
}

/// A dataset's fixed value of a search key: one code or number, or several.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FixedValues {
    One(FixedValue),
    Many(Vec<FixedValue>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum FixedValue {
    Number(f64),
    Code(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSetLimits {
    pub max_sequence_depth: Option<usize>,
    pub max_inflated_size: Option<String>,
    pub max_frame_size: Option<String>,
    pub max_decoded_size: Option<String>,
    pub decode_memory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub requests_per_second: Option<u32>,
    pub burst: Option<u32>,
    pub concurrent_requests: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Federation {
    pub remember: Option<String>,
    pub remember_studies: Option<u64>,
    pub state_dir: Option<PathBuf>,
    pub echo_interval: Option<String>,
    pub circuit_failures: Option<u32>,
    pub circuit_open: Option<String>,
    pub max_matches: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub base_path: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<ServerTls>,
    /// Largest STOW-RS request body (e.g. "2GiB").
    pub stow_limit: Option<String>,
    pub max_connections: Option<usize>,
    pub header_timeout: Option<String>,
    /// Largest request head (request line and headers), e.g. "64KiB"; more gets 431.
    pub max_header_size: Option<String>,
    /// Longest QIDO-RS query string in bytes; longer gets 414.
    pub max_query_length: Option<usize>,
    /// Most QIDO-RS query parameters; more gets 400.
    pub max_query_parameters: Option<usize>,
    /// Most parts of one STOW-RS request; more gets 413.
    pub stow_max_parts: Option<usize>,
    /// Largest part (instance) of a STOW-RS request, e.g. "1GiB"; larger gets 413.
    pub stow_max_part_size: Option<String>,
    /// This replica's name in audit lines (default: the host name).
    pub replica_id: Option<String>,
    pub max_requests_in_flight: Option<usize>,
    pub queue_wait: Option<String>,
    pub stow_memory: Option<String>,
    /// Where `/metrics` is served instead of the API listener.
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dimse {
    pub ae_title: String,
    pub listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Site {
    pub id: String,
    /// `"dimse"` (the default) or `"dicomweb"`.
    pub protocol: Option<String>,
    pub deidentified: Option<bool>,
    pub ae_title: Option<String>,
    pub address: Option<String>,
    pub retrieve: Option<String>,
    pub url: Option<String>,
    pub auth: Option<String>,
    pub token_file: Option<PathBuf>,
    pub token_url: Option<String>,
    pub client_id: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    pub scope: Option<String>,
    pub max_connections: Option<usize>,
    pub max_instance_size: Option<String>,
    pub max_associations: Option<usize>,
    pub retrieve_associations: Option<usize>,
    pub timeout: Option<String>,
    pub max_pdu_length: Option<String>,
    pub store: Option<bool>,
    pub tls: Option<SiteTls>,
    pub move_calling_ae: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteTls {
    /// Required for DIMSE; for DICOMweb, the system's anchors when absent.
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deid {
    pub profile: String,
    #[serde(default)]
    pub options: Vec<String>,
    pub key_file: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub store: Option<String>,
    /// Whether search results name the sites that hold them (default false).
    pub show_sites: Option<bool>,
    pub burned_in: Option<String>,
    pub burned_in_rules: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    pub mode: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub projects_claim: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub hs256_secret_file: Option<PathBuf>,
    pub jwks_refresh: Option<String>,
    pub leeway: Option<String>,
    /// The role (in `roles_claim`) that makes a caller an administrator.
    pub admin_role: Option<String>,
    pub roles_claim: Option<String>,
    /// How a value of `projects_claim` names a project (`PROJECT-{project}`).
    pub project_pattern: Option<String>,
    /// More identity providers whose tokens are taken, each checked by its own keys.
    #[serde(default)]
    pub issuers: Vec<Issuer>,
}

/// One more identity provider (`[[auth.issuers]]`): `[auth]`'s keys but `mode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Issuer {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub projects_claim: Option<String>,
    pub project_pattern: Option<String>,
    pub algorithms: Option<Vec<String>>,
    pub jwks_refresh: Option<String>,
    pub leeway: Option<String>,
    pub admin_role: Option<String>,
    pub roles_claim: Option<String>,
}

/// A project granted to one caller by the data holder, until a time (`[[grants]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    pub subject: String,
    pub issuer: Option<String>,
    pub project: String,
    pub until: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub id: String,
    pub sites: Vec<String>,
    pub permissions: Vec<String>,
    pub deid_options: Option<Vec<String>>,
    pub show_sites: Option<bool>,
    pub burned_in: Option<String>,
    pub access: Option<String>,
    #[serde(default)]
    pub service_clients: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    pub memory: Option<String>,
    pub disk_dir: Option<PathBuf>,
    pub disk: Option<String>,
    pub ttl: Option<String>,
    pub search_ttl: Option<String>,
    pub transcoded_memory: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    pub path: PathBuf,
    pub fhir_path: Option<PathBuf>,
}
