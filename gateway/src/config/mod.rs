//! The configuration file (TOML): one serde tree that refuses unknown keys (`raw.rs`),
//! validated once at start-up into typed values, one validator per section (`server.rs`,
//! `dataset_limits.rs`, `sites.rs`, `auth.rs`, `projects.rs`, `deid.rs`, `cache.rs`,
//! `federation.rs`) sharing one collector of problems (`problems.rs`), so that every problem is
//! reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicomweb_model::{AeTitle, SiteId};

mod auth;
mod cache;
mod connection_string;
mod dataset_limits;
mod datasets;
mod deid;
mod federation;
mod problems;
mod projects;
mod server;
mod sites;

pub use connection_string::ConnectionString;
pub use datasets::{AccessRights, BelowMinimum, Catalogue, DatasetConfig, EucaimConfig, FixedValue, Publisher};
use problems::Problems;

mod raw;

/// How a site's instances are retrieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetrieveMode {
    CGet,
    CMove,
}

impl fmt::Display for RetrieveMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RetrieveMode::CGet => "c-get",
            RetrieveMode::CMove => "c-move",
        })
    }
}

#[derive(Debug, Clone)]
pub struct SiteTlsFiles {
    pub ca: PathBuf,
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
}

#[derive(Debug, Clone)]
pub struct SiteConfig {
    pub id: SiteId,
    /// The deadline of each wait on the site (a response, a PDU, an HTTP answer).
    pub timeout: Duration,
    pub store: bool,
    /// The site's data is de-identified already (another gateway de-identifying inside its
    /// hospital): passed on as it comes, its pseudonyms unchanged (docs/TWO-TIER.md).
    pub deidentified: bool,
    pub protocol: SiteProtocol,
}

impl SiteConfig {
    /// The site's DIMSE settings, when it is reached by DIMSE.
    pub fn dimse(&self) -> Option<&DimseSiteConfig> {
        match &self.protocol {
            SiteProtocol::Dimse(dimse) => Some(dimse),
            SiteProtocol::Dicomweb(_) => None,
        }
    }

    /// Where the site is, for people: `AE at host:port`, or the DICOMweb URL.
    pub fn location(&self) -> String {
        match &self.protocol {
            SiteProtocol::Dimse(dimse) => format!("{} at {}", dimse.ae_title, dimse.address),
            SiteProtocol::Dicomweb(web) => web.url.clone(),
        }
    }
}

/// How a site is reached (`protocol`, default `"dimse"`).
#[derive(Debug, Clone)]
pub enum SiteProtocol {
    Dimse(DimseSiteConfig),
    Dicomweb(DicomwebSiteConfig),
}

#[derive(Debug, Clone)]
pub struct DimseSiteConfig {
    pub ae_title: AeTitle,
    pub address: String,
    pub retrieve: RetrieveMode,
    pub max_associations: usize,
    /// Associations one study or series retrieval uses at once (instance-level sub-requests
    /// when more than one); `None`: chosen by the site's round trip (crate::sites).
    pub retrieve_associations: Option<usize>,
    /// Largest PDU accepted from the site (offered when associating); a PDU claiming more is
    /// refused as its header arrives, never buffered.
    pub max_pdu_length: u32,
    pub tls: Option<SiteTlsFiles>,
    /// The calling AE title the PACS uses for C-MOVE sub-operations, when not `ae_title`.
    pub move_calling_ae: Option<AeTitle>,
}

/// A DICOMweb origin (PS3.18): another gateway, an archive or a cloud store.
#[derive(Debug, Clone)]
pub struct DicomwebSiteConfig {
    /// The base URL: its `/studies` is the studies resource.
    pub url: String,
    pub auth: OriginAuth,
    /// The CA certificates the origin's must chain to (instead of the system's), PEM.
    pub ca: Option<PathBuf>,
    /// The gateway's client certificate and key (PEM), for origins that ask for one.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// Requests to the origin at once.
    pub max_connections: usize,
    /// The largest instance read from it (one is held at a time per retrieval).
    pub max_instance_size: u64,
}

/// The gateway's client at an identity provider (`token_url`, `client_id`,
/// `client_secret_file`, `scope`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCredentials {
    pub token_url: String,
    pub client_id: String,
    /// The client secret, one line, read when a token is fetched.
    pub secret_file: PathBuf,
    pub scope: Option<String>,
}

/// How the gateway authenticates to a DICOMweb origin (`auth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginAuth {
    /// `"none"`.
    None,
    /// `"forward"`: the caller's own bearer token; the origin decides what the caller sees.
    Forward,
    /// `"token"` with `token_file`: a token of the gateway's own, re-read when the file changes.
    TokenFile(PathBuf),
    /// `"client-credentials"`: a token of the gateway's own from the identity provider (OAuth
    /// 2.0 client credentials grant, RFC 6749 §4.4), fetched again before it expires.
    ClientCredentials(ClientCredentials),
}

/// The range of `[[sites]] max_pdu_length`: from what PS3.8 lets a peer offer at least, to
/// what one association may make the gateway hold in memory per PDU.
pub const SITE_MAX_PDU_RANGE: std::ops::RangeInclusive<u64> = 4096..=(64 << 20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Search,
    Retrieve,
    Store,
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::Search => "search",
            Permission::Retrieve => "retrieve",
            Permission::Store => "store",
        })
    }
}

#[derive(Debug, Clone)]
pub struct ProjectConfig {
    pub id: String,
    pub sites: Vec<SiteId>,
    pub permissions: Vec<Permission>,
    /// The PS3.15 options of this project's de-identification; `None`: those of `[deid]`.
    pub deid_options: Option<Vec<String>>,
    /// Whether its search results name the sites that hold them; `None`: `deid.show_sites`
    /// when de-identifying (false by default), else true.
    pub show_sites: Option<bool>,
    /// What becomes of instances whose pixels may show identity; `None`: `deid.burned_in`.
    pub burned_in: Option<BurnedIn>,
    /// How its callers may use the data (EUCAIM's access conditions; docs/ACCESS.md).
    pub access: AccessCondition,
    /// Under `remote-processing`: the token subjects (service clients) that may have the data.
    pub service_clients: Vec<String>,
}

/// EUCAIM's access conditions: what a project's callers may have of the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessCondition {
    /// Everything: search, view and download.
    Download,
    /// Viewing in place: search, metadata and what a viewer draws (rendered images, thumbnails,
    /// frames), no instance or bulk data to take away.
    InSitu,
    /// Processing by named services only: data to the project's service clients, none to people.
    RemoteProcessing,
}

impl AccessCondition {
    pub(crate) fn parse(text: &str) -> Result<AccessCondition, String> {
        match text {
            "download" => Ok(AccessCondition::Download),
            "in-situ" => Ok(AccessCondition::InSitu),
            "remote-processing" => Ok(AccessCondition::RemoteProcessing),
            other => Err(format!("{other:?}: expected \"download\", \"in-situ\" or \"remote-processing\"")),
        }
    }
}

/// What becomes of an instance whose pixels may show identity (docs/BURNED-IN.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BurnedIn {
    /// Withheld, named in a Warning (the default).
    Withhold,
    /// Its burned-in text blanked (crate::core::privacy::clean_pixels); withheld when that cannot be done.
    Clean,
}

impl BurnedIn {
    fn parse(text: &str) -> Result<BurnedIn, String> {
        match text {
            "withhold" => Ok(BurnedIn::Withhold),
            "clean" => Ok(BurnedIn::Clean),
            other => Err(format!("{other:?} is neither \"withhold\" nor \"clean\"")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMode {
    None,
    /// Bearer tokens of `[auth]`'s identity provider and of each `[[auth.issuers]]`.
    Jwt(Vec<JwtConfig>),
}

/// A project granted to one caller until a time (`[[grants]]`): access the data holder gave
/// through EUCAIM's negotiation, ending on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantConfig {
    /// The token's `sub`.
    pub subject: String,
    /// The token's `iss`; `None`: any configured issuer's.
    pub issuer: Option<String>,
    pub project: String,
    pub until: std::time::SystemTime,
}

/// How bearer tokens are checked (`[auth]` with `mode = "jwt"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub projects_claim: String,
    /// How a value of `projects_claim` names a project: the text before and after
    /// `{project}` (`PROJECT-{project}` for EUCAIM's `groups`); `None`: values are project ids.
    pub project_pattern: Option<(String, String)>,
    /// The signature algorithms accepted (RS256 and ES256 unless configured).
    pub algorithms: Vec<jsonwebtoken::Algorithm>,
    /// The shared secret of HS256 tokens, only when `algorithms` names HS256.
    pub hs256_secret_file: Option<PathBuf>,
    /// How often a `jwks_url` is fetched again.
    pub jwks_refresh: Duration,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
    /// The role that makes a caller an administrator (site addresses, `/metrics`,
    /// `/admin/cache`); `None`: no caller is one.
    pub admin_role: Option<String>,
    /// The claim holding a token's roles (an array, or words separated by spaces).
    pub roles_claim: String,
}

/// Per-caller limits (`[limits]`); a caller is a token's subject. Without authentication
/// there is one caller and no per-caller limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub requests_per_second: u32,
    pub burst: u32,
    pub concurrent_requests: u32,
}

/// What the gateway takes on at once (`[server]`): DICOMweb requests in flight, how long one
/// more waits for a free slot before it is shed with 503, and the bytes of STOW-RS bodies held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SheddingConfig {
    pub max_requests_in_flight: usize,
    pub queue_wait: Duration,
    pub stow_memory: u64,
}

/// Bounds on the content of DICOM data sets (`[dataset_limits]`), received by STOW-RS or
/// retrieved from a PACS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataSetLimitsConfig {
    /// Sequences nested in sequences, at most.
    pub max_sequence_depth: usize,
    /// Largest data set after inflating Deflated Explicit VR Little Endian.
    pub max_inflated_size: u64,
    /// Largest frame (rows x columns x samples x bits allocated) cut out or decoded.
    pub max_frame_size: u64,
    /// Largest pixel data decoded at once (every frame of an instance transcoded).
    pub max_decoded_size: u64,
    /// Decoded pixel data every decode in flight may hold together (crate::core::pixels::decode_budget).
    pub decode_memory: u64,
}

impl DataSetLimitsConfig {
    /// The bounds when `[dataset_limits]` says nothing.
    pub const DEFAULTS: DataSetLimitsConfig = DataSetLimitsConfig {
        max_sequence_depth: 64,
        max_inflated_size: 512 << 20,
        max_frame_size: 1 << 30,
        max_decoded_size: 1 << 30,
        decode_memory: 2 << 30,
    };
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksSource {
    File(PathBuf),
    Url(String),
}

#[derive(Debug, Clone)]
pub struct DeidConfig {
    pub options: Vec<String>,
    pub key_file: PathBuf,
    pub state_dir: PathBuf,
    /// The shared pseudonym map (PostgreSQL); `None`: the embedded one in `state_dir`.
    pub store: Option<ConnectionString>,
    /// Whether search results name the sites that hold them (the gateway's (0009,1010)):
    /// site ids name institutions, which the profile otherwise removes.
    pub show_sites: bool,
    /// What becomes of instances whose pixels may show identity, unless a project says.
    pub burned_in: BurnedIn,
    /// The region rules file for cleaning (crate::core::privacy::region_rules).
    pub burned_in_rules: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct CacheConfig {
    pub memory_bytes: u64,
    pub disk_dir: Option<PathBuf>,
    pub disk_bytes: u64,
    pub ttl: Duration,
    /// How long a QIDO-RS answer is reused for the same search in the same project.
    pub search_ttl: Duration,
    /// Instances kept as transcoded to an uncompressed syntax (crate::core::retrieve::transcoded_cache).
    pub transcoded_bytes: u64,
}

/// HTTPS: the certificate chain and key, and a CA bundle when client certificates are required.
#[derive(Debug, Clone)]
pub struct ServerTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Bounds on what a client sends at the HTTP edge (`[server]`), each refused with its status
/// before it costs more than the bound: the request head (431), a QIDO-RS query string's length
/// (414) and parameters (400), a STOW-RS request's parts and part size (413).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimitsConfig {
    pub max_header_size: usize,
    pub max_query_length: usize,
    pub max_query_parameters: usize,
    pub stow_max_parts: usize,
    pub stow_max_part_size: u64,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub dimse: DimseConfig,
    pub dataset_limits: DataSetLimitsConfig,
    pub sites: Vec<SiteConfig>,
    pub deid: Option<DeidConfig>,
    pub auth: AuthMode,
    pub projects: Vec<ProjectConfig>,
    pub cache: CacheConfig,
    pub audit: AuditConfig,
    pub federation: FederationConfig,
    pub limits: LimitsConfig,
    /// The EUCAIM federated-search provider (docs/EUCAIM.md).
    pub eucaim: EucaimConfig,
    /// The datasets published to EUCAIM.
    pub datasets: Vec<DatasetConfig>,
    /// Projects granted to named callers until a time.
    pub grants: Vec<GrantConfig>,
}

/// `[server]`: where the gateway serves HTTP and its bounds at the edge.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Where `/metrics` is served; `None`: on `listen`, to administrators (docs/ACCESS.md).
    pub metrics_listen: Option<SocketAddr>,
    pub tls: Option<ServerTlsFiles>,
    /// Largest STOW-RS request body in bytes; larger ones get 413 without being read.
    pub stow_limit: u64,
    /// Client connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The time a client has to send a request's headers (HTTP/1.1) before it is dropped.
    pub header_timeout: Duration,
    pub http_limits: HttpLimitsConfig,
    /// This process's name in audit lines, so that several replicas' trails can be merged.
    pub replica_id: String,
    pub shedding: SheddingConfig,
    pub base_path: String,
    pub public_url: String,
}

/// `[dimse]`: the gateway's own AE title, and where it listens for C-MOVE sub-operations.
#[derive(Debug, Clone)]
pub struct DimseConfig {
    pub ae_title: AeTitle,
    pub listen: SocketAddr,
}

/// `[audit]`: the audit trail, and the same events as FHIR AuditEvent resources, one per line.
#[derive(Debug, Clone, Default)]
pub struct AuditConfig {
    pub path: Option<PathBuf>,
    pub fhir_path: Option<PathBuf>,
}

/// How the federation remembers what sites hold and watches their health (`[federation]`).
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// How long what a site was seen to hold (locations, roll-up counts) is trusted; zero turns
    /// remembering off.
    pub remember: Duration,
    /// At most this many studies are remembered in memory.
    pub remember_studies: u64,
    /// The embedded store of remembered locations; `None`: memory only.
    pub state_dir: Option<PathBuf>,
    /// Every site is sent a C-ECHO this often.
    pub echo_interval: Duration,
    /// Consecutive faults that open a site's circuit.
    pub circuit_failures: u32,
    /// How long an open circuit keeps requests away before a probe.
    pub circuit_open: Duration,
    /// The most matches of one C-FIND collected from a site; a search past it answers the
    /// first ones with a Warning, a count or listing past it is refused.
    pub max_matches: usize,
}

/// Everything wrong with a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "configuration {} is not valid:", self.path.display())?;
        for problem in &self.problems {
            writeln!(f, "  - {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let fail = |problem: String| ConfigError { path: path.to_owned(), problems: vec![problem] };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
        Config::parse(&text).map_err(|problems| ConfigError { path: path.to_owned(), problems })
    }

    pub fn parse(text: &str) -> Result<Config, Vec<String>> {
        let raw: raw::Config = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Problems::default();
        let server = server::server(raw.server, &mut problems);
        let dataset_limits = dataset_limits::dataset_limits(raw.dataset_limits.as_ref(), &mut problems);
        let (dimse_ae_title, dimse_listen) = server::dimse(&raw.dimse, &mut problems);
        let sites = sites::sites(raw.sites, &mut problems);
        sites::deidentified(&sites, raw.deid.is_some(), &mut problems);
        let auth = auth::auth(raw.auth, server.as_ref().map(|s| s.listen), &mut problems);
        let projects = projects::projects(raw.projects, &sites, raw.deid.is_some(), &auth, &mut problems);
        let limits = auth::limits(raw.limits, &mut problems);
        let deid = deid::deid(raw.deid, &mut problems);
        let cache = cache::cache(raw.cache, &mut problems);
        let federation = federation::federation(raw.federation, deid.as_ref(), &mut problems);
        let eucaim = datasets::eucaim(raw.eucaim, &mut problems);
        let datasets = datasets::datasets(raw.datasets, &sites, &projects, &mut problems);
        let grants = auth::grants(raw.grants, &projects, &mut problems);
        if !grants.is_empty() && matches!(auth, AuthMode::None) {
            problems.push("[[grants]] need auth.mode = \"jwt\": they name token subjects");
        }
        if let Some(server) = &server {
            datasets::path_free(&eucaim.path, &server.base_path, &mut problems);
        }
        match (server, dimse_ae_title, dimse_listen) {
            (Some(server), Some(ae_title), Some(dimse_listen)) if problems.is_empty() => Ok(Config {
                server,
                dimse: DimseConfig { ae_title, listen: dimse_listen },
                dataset_limits,
                sites,
                deid,
                auth,
                projects,
                cache,
                audit: AuditConfig {
                    fhir_path: raw.audit.as_ref().and_then(|a| a.fhir_path.clone()),
                    path: raw.audit.map(|a| a.path),
                },
                federation,
                limits,
                eucaim,
                datasets,
                grants,
            }),
            _ => Err(problems.into_vec()),
        }
    }
}

/// Parses sizes like `512MiB`, `10GiB`, `100MB`, `4096` (bytes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "TiB" => 1 << 40,
        other => return Err(format!("{text:?}: unknown unit {other:?} (B, KB, MB, GB, KiB, MiB, GiB, TiB)")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[server]
listen = "127.0.0.1:8080"
base_path = "/dicom-web"
public_url = "http://127.0.0.1:8080/dicom-web"

[dimse]
ae_title = "FEDGW"
listen = "127.0.0.1:11200"

[[sites]]
id = "site-1"
ae_title = "SITE1"
address = "127.0.0.1:11111"
retrieve = "c-get"
max_associations = 4
retrieve_associations = 2
timeout = "30s"
store = false

[[sites]]
id = "site-2"
ae_title = "SITE2"
address = "127.0.0.1:11112"
retrieve = "c-move"

[deid]
profile = "basic"
options = ["retain-longitudinal-modified-dates"]
key_file = "state/deid.key"
state_dir = "state"

[auth]
mode = "jwt"
issuer = "https://login.example.org"
audience = "dicomweb-gateway"
jwks_file = "jwks.json"
projects_claim = "projects"

[[projects]]
id = "lung-ai"
sites = ["site-1", "site-2"]
permissions = ["search", "retrieve"]

[cache]
memory = "512MiB"
disk_dir = "cache"
disk = "10GiB"
ttl = "10m"

[audit]
path = "audit.jsonl"

[federation]
remember = "10m"
remember_studies = 100000
echo_interval = "30s"
circuit_failures = 3
circuit_open = "30s"
"#;

    #[test]
    fn the_design_example_is_valid() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.sites.len(), 2);
        assert_eq!(config.sites[1].dimse().expect("DIMSE").retrieve, RetrieveMode::CMove);
        assert_eq!(config.sites[1].dimse().expect("DIMSE").max_associations, 4);
        assert_eq!(
            (
                config.sites[0].dimse().expect("DIMSE").retrieve_associations,
                config.sites[1].dimse().expect("DIMSE").retrieve_associations
            ),
            (Some(2), None),
            "chosen by the round trip unless configured"
        );
        assert_eq!(config.sites[0].timeout, Duration::from_secs(30));
        assert_eq!(config.cache.memory_bytes, 512 << 20);
        assert_eq!(config.cache.disk_bytes, 10 << 30);
        assert!(matches!(config.auth, AuthMode::Jwt(_)));
        assert_eq!(config.projects[0].sites.len(), 2);
        assert_eq!(config.federation.state_dir, Some(PathBuf::from("state")), "deid.state_dir by default");
        assert_eq!(config.federation.circuit_failures, 3);
    }

    #[test]
    fn one_decode_must_fit_in_the_decode_memory() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!((config.dataset_limits.max_decoded_size, config.dataset_limits.decode_memory), (1 << 30, 2 << 30));
        let text = format!("{EXAMPLE}\n[dataset_limits]\nmax_decoded_size = \"64MiB\"\ndecode_memory = \"32MiB\"\n");
        let problems = Config::parse(&text).expect_err("smaller than one decode");
        assert!(problems.iter().any(|p| p.contains("dataset_limits.decode_memory")), "{problems:?}");
    }

    #[test]
    fn unknown_keys_are_errors() {
        let text = EXAMPLE.replace("store = false", "store = false\nstor = true");
        let problems = Config::parse(&text).expect_err("unknown key");
        assert!(problems[0].contains("stor"), "{problems:?}");
    }

    #[test]
    fn replica_id_and_the_shared_pseudonym_map() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert!(!config.server.replica_id.is_empty(), "the host name by default");
        assert!(config.deid.as_ref().expect("deid").store.is_none(), "the embedded map by default");
        let text = EXAMPLE
            .replace(
                "public_url = \"http://127.0.0.1:8080/dicom-web\"",
                "public_url = \"http://127.0.0.1:8080/dicom-web\"\nreplica_id = \"gw-a\"",
            )
            .replace("state_dir = \"state\"\n", "state_dir = \"state\"\nstore = \"postgres://gw:s3cret@db/gateway\"\n");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(config.server.replica_id, "gw-a");
        assert_eq!(config.deid.expect("deid").store.expect("store").to_string(), "postgres://gw:***@db/gateway");
        let text = text.replace("\"gw-a\"", "\"gw a\"").replace("postgres://gw:s3cret@db/gateway", "pseudonyms.redb");
        let problems = Config::parse(&text).expect_err("refused").join("\n");
        assert!(problems.contains("server.replica_id \"gw a\""), "{problems}");
        assert!(problems.contains("deid.store must be a PostgreSQL connection string"), "{problems}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = EXAMPLE
            .replace("ae_title = \"SITE1\"", "ae_title = \"THIS-AE-TITLE-IS-TOO-LONG\"")
            .replace("retrieve = \"c-move\"", "retrieve = \"c-fetch\"")
            .replace("sites = [\"site-1\", \"site-2\"]", "sites = [\"site-9\"]")
            .replace("memory = \"512MiB\"", "memory = \"lots\"");
        let problems = Config::parse(&text).expect_err("invalid");
        assert_eq!(problems.len(), 4, "{problems:#?}");
    }

    #[test]
    fn http_edge_limits() {
        let limits = Config::parse(EXAMPLE).expect("valid").server.http_limits;
        assert_eq!(
            limits,
            HttpLimitsConfig {
                max_header_size: 64 << 10,
                max_query_length: 4096,
                max_query_parameters: 100,
                stow_max_parts: 10_000,
                stow_max_part_size: 2 << 30,
            }
        );
        let set =
            |keys: &str| EXAMPLE.replace("base_path = \"/dicom-web\"", &format!("base_path = \"/dicom-web\"\n{keys}"));
        let text = set(
            "max_header_size = \"16KiB\"\nmax_query_length = 100\nstow_max_parts = 5\nstow_max_part_size = \"1MiB\"",
        );
        let limits = Config::parse(&text).expect("valid").server.http_limits;
        assert_eq!((limits.max_header_size, limits.max_query_length), (16 << 10, 100));
        assert_eq!((limits.stow_max_parts, limits.stow_max_part_size), (5, 1 << 20));
        let text = set("max_header_size = \"1KiB\"\nmax_query_length = 0\nmax_query_parameters = 0\nstow_max_parts = 0\nstow_max_part_size = \"many\"");
        let problems = Config::parse(&text).expect_err("invalid");
        for key in
            ["max_header_size", "max_query_length", "max_query_parameters", "stow_max_parts", "stow_max_part_size"]
        {
            assert!(problems.iter().any(|p| p.contains(key)), "{key}: {problems:#?}");
        }
    }

    #[test]
    fn no_auth_only_on_loopback() {
        let text = EXAMPLE
            .replace("mode = \"jwt\"", "mode = \"none\"")
            .replace("listen = \"127.0.0.1:8080\"", "listen = \"0.0.0.0:8080\"");
        let problems = Config::parse(&text).expect_err("refused");
        assert!(problems.iter().any(|p| p.contains("loopback")), "{problems:?}");
    }

    #[test]
    fn shedding_and_data_set_limits() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.server.shedding.max_requests_in_flight, 256);
        assert_eq!(config.server.shedding.queue_wait, Duration::from_secs(1));
        assert_eq!(config.server.shedding.stow_memory, 1 << 30);
        assert_eq!(config.dataset_limits.max_sequence_depth, 64);
        assert_eq!(config.dataset_limits.max_inflated_size, 512 << 20);
        let text = EXAMPLE.replace(
            "base_path = \"/dicom-web\"",
            "base_path = \"/dicom-web\"\nmax_requests_in_flight = 0\nqueue_wait = \"soon\"\nstow_memory = \"0\"",
        ) + "\n[dataset_limits]\nmax_sequence_depth = 0\nmax_inflated_size = \"lots\"\n";
        let problems = Config::parse(&text).expect_err("invalid");
        for key in ["max_requests_in_flight", "queue_wait", "stow_memory", "max_sequence_depth", "max_inflated_size"] {
            assert!(problems.iter().any(|p| p.contains(key)), "{key}: {problems:#?}");
        }
    }

    /// The example with site-2 a DICOMweb site (the given keys) and `[deid]` kept or not.
    fn with_dicomweb_site(keys: &str, deid: bool) -> Result<Config, Vec<String>> {
        let dimse_site_2 = "ae_title = \"SITE2\"\naddress = \"127.0.0.1:11112\"\nretrieve = \"c-move\"\n";
        let mut text = EXAMPLE.replace(dimse_site_2, &format!("protocol = \"dicomweb\"\n{keys}\n"));
        if !deid {
            let at = text.find("[deid]").expect("deid");
            let end = text[at..].find("[auth]").expect("auth") + at;
            text.replace_range(at..end, "");
        }
        Config::parse(&text)
    }

    #[test]
    fn dicomweb_sites() {
        let config = with_dicomweb_site(
            "url = \"https://edge.example/dicom-web/\"\ndeidentified = true\nauth = \"forward\"\nmax_connections = 8\n\
             tls = { ca = \"edge-ca.pem\" }",
            false,
        )
        .expect("valid");
        let SiteProtocol::Dicomweb(web) = &config.sites[1].protocol else { panic!("a DICOMweb site") };
        assert_eq!(web.url, "https://edge.example/dicom-web", "no trailing slash");
        assert_eq!((web.auth.clone(), web.max_connections, web.max_instance_size), (OriginAuth::Forward, 8, 2 << 30));
        assert_eq!(web.ca.as_deref(), Some(Path::new("edge-ca.pem")));
        assert!(config.sites[1].deidentified && config.sites[1].dimse().is_none());
        let token =
            with_dicomweb_site("url = \"http://a/dw\"\nauth = \"token\"\ntoken_file = \"t\"", true).expect("valid");
        let SiteProtocol::Dicomweb(web) = &token.sites[1].protocol else { panic!("a DICOMweb site") };
        assert_eq!(web.auth, OriginAuth::TokenFile(PathBuf::from("t")));
        let grant = "url = \"http://a/dw\"\nauth = \"client-credentials\"\ntoken_url = \"https://idp/token\"\n\
                     client_id = \"central\"\nclient_secret_file = \"secret\"\nscope = \"dicomweb\"";
        let granted = with_dicomweb_site(grant, true).expect("valid");
        let SiteProtocol::Dicomweb(web) = &granted.sites[1].protocol else { panic!("a DICOMweb site") };
        assert!(
            matches!(&web.auth, OriginAuth::ClientCredentials(c) if c.client_id == "central" && c.scope.as_deref() == Some("dicomweb"))
        );
        // A de-identified site in a de-identifying gateway: passed on (a mixed federation).
        with_dicomweb_site("url = \"http://a/dw\"\ndeidentified = true", true).expect("valid");
        let refused: &[(&str, bool, &str)] = &[
            ("url = \"ftp://a/dw\"", true, "must be an http:// or https:// URL"),
            ("auth = \"none\"", true, "needs url"),
            ("url = \"http://a/dw\"\nauth = \"token\"", true, "needs token_file"),
            ("url = \"http://a/dw\"\nauth = \"basic\"", true, "auth \"basic\""),
            ("url = \"http://a/dw\"\nauth = \"client-credentials\"\nclient_id = \"c\"", true, "needs token_url"),
            ("url = \"http://a/dw\"\nauth = \"forward\"\nscope = \"s\"", true, "are for auth = \"client-credentials\""),
            ("url = \"http://a/dw\"\nae_title = \"X\"", true, "ae_title is not a key of a DICOMweb site"),
            ("url = \"http://a/dw\"\ntls = { ca = \"ca.pem\" }", true, "tls is for an https:// url"),
            ("url = \"http://a/dw\"", false, "needs [deid]"),
        ];
        for (keys, deid, why) in refused {
            let problems = with_dicomweb_site(keys, *deid).expect_err(keys);
            assert!(problems.iter().any(|p| p.contains(why)), "{keys}: {problems:#?}");
        }
        let problems =
            Config::parse(&EXAMPLE.replace("ae_title = \"SITE2\"", "url = \"http://a\"")).expect_err("mixed");
        assert!(problems.iter().any(|p| p.contains("url is not a key of a DIMSE site")), "{problems:#?}");
    }

    #[test]
    fn site_max_pdu_length() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.sites[0].dimse().expect("DIMSE").max_pdu_length, 1 << 20, "1 MiB by default");
        let text = EXAMPLE.replace("store = false", "store = false\nmax_pdu_length = \"64KiB\"");
        assert_eq!(Config::parse(&text).expect("valid").sites[0].dimse().expect("DIMSE").max_pdu_length, 64 << 10);
        for refused in ["\"1KiB\"", "\"4GiB\"", "\"big\""] {
            let text = EXAMPLE.replace("store = false", &format!("store = false\nmax_pdu_length = {refused}"));
            let problems = Config::parse(&text).expect_err("refused");
            assert!(problems.iter().any(|p| p.contains("max_pdu_length")), "{refused}: {problems:#?}");
        }
    }

    #[test]
    fn c_move_over_tls_is_refused() {
        let tls = "tls = { ca = \"site-2-ca.pem\" }";
        let text = EXAMPLE.replace("retrieve = \"c-move\"", &format!("retrieve = \"c-move\"\n{tls}"));
        // The refused site is left out, so the project naming it is refused too.
        let problems = Config::parse(&text).expect_err("refused");
        assert!(problems[0].starts_with("sites[1]: retrieve = \"c-move\" with tls"), "{problems:#?}");
        assert!(problems[0].contains("use c-get over TLS"), "{problems:#?}");
        let text = EXAMPLE.replace("retrieve = \"c-move\"", &format!("retrieve = \"c-get\"\n{tls}"));
        assert!(Config::parse(&text).expect("c-get over TLS is valid").sites[1].dimse().expect("DIMSE").tls.is_some());
    }

    #[test]
    fn move_calling_ae() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.sites[1].dimse().expect("DIMSE").move_calling_ae, None, "the site's ae_title by default");
        let text = EXAMPLE.replace("retrieve = \"c-move\"", "retrieve = \"c-move\"\nmove_calling_ae = \"SITE2_SEND\"");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(
            config.sites[1].dimse().expect("DIMSE").move_calling_ae.as_ref().map(AeTitle::as_str),
            Some("SITE2_SEND")
        );
        let text = EXAMPLE
            .replace("retrieve = \"c-move\"", "retrieve = \"c-move\"\nmove_calling_ae = \"THIS-AE-TITLE-IS-TOO-LONG\"")
            .replace("store = false", "store = false\nmove_calling_ae = \"SITE1\"");
        let problems = Config::parse(&text).expect_err("refused");
        assert!(problems.iter().any(|p| p.starts_with("sites[1]: move_calling_ae \"THIS-AE")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("sites[0]: move_calling_ae is only for")), "{problems:#?}");
    }

    /// EXAMPLE with a EUCAIM data holder's sections added (and `extra` after them).
    fn eucaim(extra: &str) -> String {
        let text = EXAMPLE.replace(
            "projects_claim = \"projects\"",
            "projects_claim = \"groups\"\nproject_pattern = \"PROJECT-{project}\"\n\n\
             [[auth.issuers]]\nissuer = \"https://aai.example.org\"\naudience = \"dicomweb-gateway\"\n\
             jwks_file = \"other-jwks.json\"",
        );
        let text = text.replace(
            "permissions = [\"search\", \"retrieve\"]",
            "permissions = [\"search\", \"retrieve\"]\naccess = \"in-situ\"",
        );
        format!(
            "{text}\n[eucaim]\nsecret_file = \"search.secret\"\nmin_count = 5\nround_to = 10\n\n\
             [[datasets]]\nid = \"ds-1\"\nname = \"One\"\nproject = \"lung-ai\"\nfilter = \"ModalitiesInStudy=CT\"\n\
             fixed = {{ SNOMEDCT439401001 = \"SNOMEDCT363358000\", SNOMEDCT432213005 = [2019, 2020] }}\n\n\
             [[grants]]\nsubject = \"alice\"\nproject = \"lung-ai\"\nuntil = \"2027-03-31\"\n{extra}"
        )
    }

    #[test]
    fn a_eucaim_data_holder_is_configured() {
        let config = Config::parse(&eucaim("")).expect("valid");
        let AuthMode::Jwt(issuers) = &config.auth else { panic!("jwt") };
        assert_eq!(issuers.len(), 2);
        assert_eq!(issuers[0].project_pattern, Some(("PROJECT-".into(), String::new())));
        assert_eq!(config.projects[0].access, AccessCondition::InSitu);
        let dataset = &config.datasets[0];
        assert_eq!(dataset.sites.len(), 2, "its project's sites");
        assert_eq!(dataset.catalogue.access_condition, AccessCondition::InSitu, "its project's access");
        assert_eq!(dataset.fixed["SNOMEDCT432213005"], vec![FixedValue::Number(2019.0), FixedValue::Number(2020.0)]);
        assert_eq!(
            (config.eucaim.min_count, config.eucaim.round_to, config.eucaim.path.as_str()),
            (5, 10, "/eucaim/search")
        );
        assert_eq!(config.grants[0].subject, "alice");
    }

    #[test]
    fn a_eucaim_data_holder_s_mistakes_are_named() {
        for (extra, named) in [
            ("\n[[grants]]\nsubject = \"bob\"\nproject = \"nowhere\"\nuntil = \"2027-01-01\"", "grants: no project"),
            ("\n[[grants]]\nsubject = \"bob\"\nproject = \"lung-ai\"\nuntil = \"next year\"", "is no date"),
            ("\n[[datasets]]\nid = \"ds-1\"\nname = \"Again\"", "the id is used twice"),
            ("\n[[datasets]]\nid = \"ds-2\"\nname = \"T\"\nsites = [\"site-9\"]", "no site \"site-9\""),
            ("\n[[datasets]]\nid = \"ds-3\"\nname = \"T\"\nfilter = \"NoSuchKeyword=1\"", "filter"),
            ("\n[[datasets]]\nid = \"ds-4\"\nname = \"T\"\ncatalogue_codes = { hasColour = [\"X1\"] }", "catalogue_codes.hasColour"),
            ("\n[[datasets]]\nid = \"ds-6\"\nname = \"T\"\ncollection_method = \"SPEC> . <x\"", "collection_method"),
            ("\n[[datasets]]\nid = \"ds-5\"\nname = \"T\"\nproject = \"lung-ai\"\naccess_condition = \"download\"", "differs from its project"),
            ("\n[[projects]]\nid = \"fem\"\nsites = [\"site-1\"]\npermissions = [\"search\"]\naccess = \"remote-processing\"", "needs service_clients"),
            ("\n[[projects]]\nid = \"odd\"\nsites = [\"site-1\"]\npermissions = [\"search\"]\naccess = \"borrow\"", "projects odd: access"),
        ] {
            let problems = Config::parse(&eucaim(extra)).expect_err(named);
            assert!(problems.iter().any(|p| p.contains(named)), "{named}: {problems:#?}");
        }
        let path = eucaim("").replace("round_to = 10", "round_to = 10\npath = \"/dicom-web/studies\"");
        assert!(Config::parse(&path).expect_err("taken").iter().any(|p| p.contains("eucaim.path")));
        let pattern = eucaim("").replace("PROJECT-{project}", "PROJECT-{project}-{project}");
        assert!(Config::parse(&pattern).expect_err("twice").iter().any(|p| p.contains("project_pattern")));
        let twice = eucaim("").replace("https://aai.example.org", "https://login.example.org");
        assert!(Config::parse(&twice).expect_err("twice").iter().any(|p| p.contains("configured twice")));
        let without_auth = eucaim("").replace("mode = \"jwt\"", "mode = \"none\"");
        assert!(Config::parse(&without_auth).is_err(), "grants and projects need authentication");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }
}
