//! The configuration file (TOML): one serde tree that refuses unknown keys, validated once at
//! start-up into typed values, with every problem reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use dicomweb_model::{AeTitle, SiteId};

mod connection_string;
pub use connection_string::ConnectionString;

mod raw {
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
        pub ae_title: String,
        pub address: String,
        pub retrieve: String,
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
        pub ca: PathBuf,
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
}

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
    pub ae_title: AeTitle,
    pub address: String,
    pub retrieve: RetrieveMode,
    pub max_associations: usize,
    /// Associations one study or series retrieval uses at once (instance-level sub-requests
    /// when more than one).
    pub retrieve_associations: usize,
    pub timeout: Duration,
    /// Largest PDU accepted from the site (offered when associating); a PDU claiming more is
    /// refused as its header arrives, never buffered.
    pub max_pdu_length: u32,
    pub store: bool,
    pub tls: Option<SiteTlsFiles>,
    /// The calling AE title the PACS uses for C-MOVE sub-operations, when not `ae_title`.
    pub move_calling_ae: Option<AeTitle>,
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
    Jwt(Box<JwtConfig>),
}

/// How bearer tokens are checked (`[auth]` with `mode = "jwt"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtConfig {
    pub issuer: String,
    pub audience: String,
    pub jwks: JwksSource,
    pub projects_claim: String,
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
    pub dataset_limits: DataSetLimitsConfig,
    pub base_path: String,
    pub public_url: String,
    pub dimse_ae_title: AeTitle,
    pub dimse_listen: SocketAddr,
    pub sites: Vec<SiteConfig>,
    pub deid: Option<DeidConfig>,
    pub auth: AuthMode,
    pub projects: Vec<ProjectConfig>,
    pub cache: CacheConfig,
    pub audit_path: Option<PathBuf>,
    /// The same events as FHIR AuditEvent resources, one per line.
    pub audit_fhir_path: Option<PathBuf>,
    pub federation: FederationConfig,
    pub limits: LimitsConfig,
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
        let mut problems = Vec::new();
        let mut check = |result: Result<(), String>| {
            if let Err(problem) = result {
                problems.push(problem);
            }
        };

        let listen = raw.server.listen.parse::<SocketAddr>();
        check(listen.as_ref().map(|_| ()).map_err(|e| format!("server.listen {:?}: {e}", raw.server.listen)));
        let base_path = raw.server.base_path.unwrap_or_else(|| "/dicom-web".to_owned());
        check(if base_path.starts_with('/') && !base_path.ends_with('/') {
            Ok(())
        } else {
            Err(format!("server.base_path {base_path:?} must start with '/' and not end with one"))
        });
        let stow_limit_text = raw.server.stow_limit.clone().unwrap_or_else(|| "2GiB".into());
        let stow_limit = parse_size(&stow_limit_text);
        check(stow_limit.as_ref().map(|_| ()).map_err(|e| format!("server.stow_limit: {e}")));
        let stow_limit = stow_limit.unwrap_or(0);
        let max_connections = raw.server.max_connections.unwrap_or(1024);
        check(if max_connections > 0 { Ok(()) } else { Err("server.max_connections must be at least 1".into()) });
        let header_timeout_text = raw.server.header_timeout.clone().unwrap_or_else(|| "10s".into());
        let header_timeout = humantime::parse_duration(&header_timeout_text)
            .map_err(|e| format!("server.header_timeout {header_timeout_text:?}: {e}"))
            .and_then(|t| if t.is_zero() { Err("server.header_timeout must be more than 0s".into()) } else { Ok(t) });
        check(header_timeout.as_ref().map(|_| ()).map_err(Clone::clone));
        let header_timeout = header_timeout.unwrap_or_default();
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
        let max_header_size = edge_size("max_header_size", &raw.server.max_header_size, "64KiB", 8 << 10, 1 << 20);
        let max_query_length = edge_count("max_query_length", raw.server.max_query_length, 4096);
        let max_query_parameters = edge_count("max_query_parameters", raw.server.max_query_parameters, 100);
        let stow_max_parts = edge_count("stow_max_parts", raw.server.stow_max_parts, 10_000);
        let stow_max_part_size = edge_size("stow_max_part_size", &raw.server.stow_max_part_size, "2GiB", 1, u64::MAX);
        check(max_header_size.as_ref().map(|_| ()).map_err(Clone::clone));
        for count in [&max_query_length, &max_query_parameters, &stow_max_parts] {
            check(count.as_ref().map(|_| ()).map_err(Clone::clone));
        }
        check(stow_max_part_size.as_ref().map(|_| ()).map_err(Clone::clone));
        let http_limits = HttpLimitsConfig {
            max_header_size: max_header_size.unwrap_or(0) as usize,
            max_query_length: max_query_length.unwrap_or(0),
            max_query_parameters: max_query_parameters.unwrap_or(0),
            stow_max_parts: stow_max_parts.unwrap_or(0),
            stow_max_part_size: stow_max_part_size.unwrap_or(0),
        };
        let replica_id = match raw.server.replica_id.clone() {
            Some(id) => id,
            None => default_replica_id(),
        };
        if replica_id.is_empty()
            || replica_id.len() > 64
            || !replica_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            check(Err(format!(
                "server.replica_id {replica_id:?}: 1 to 64 letters, digits, '.', '-' or '_' (set it when the host name \
                 is not like that)"
            )));
        }
        let mut size_of = |key: &str, text: Option<&String>, default: &str| {
            let size = size_setting(key, text.map(String::as_str).unwrap_or(default));
            check(size.as_ref().map(|_| ()).map_err(Clone::clone));
            size.unwrap_or(0)
        };
        let stow_memory = size_of("server.stow_memory", raw.server.stow_memory.as_ref(), "1GiB");
        let raw_dataset = raw.dataset_limits.as_ref();
        let max_inflated_size = size_of(
            "dataset_limits.max_inflated_size",
            raw_dataset.and_then(|d| d.max_inflated_size.as_ref()),
            "512MiB",
        );
        let max_frame_size =
            size_of("dataset_limits.max_frame_size", raw_dataset.and_then(|d| d.max_frame_size.as_ref()), "1GiB");
        let max_decoded_size =
            size_of("dataset_limits.max_decoded_size", raw_dataset.and_then(|d| d.max_decoded_size.as_ref()), "1GiB");
        let decode_memory =
            size_of("dataset_limits.decode_memory", raw_dataset.and_then(|d| d.decode_memory.as_ref()), "2GiB");
        check(if decode_memory >= max_decoded_size && decode_memory >= 1 << 20 {
            Ok(())
        } else {
            Err("dataset_limits.decode_memory must be at least 1MiB and at least dataset_limits.max_decoded_size \
                 (one decode must fit in it)"
                .into())
        });
        let max_sequence_depth = raw_dataset.and_then(|d| d.max_sequence_depth).unwrap_or(64);
        check(if (1..=1000).contains(&max_sequence_depth) {
            Ok(())
        } else {
            Err("dataset_limits.max_sequence_depth must be 1 to 1000".into())
        });
        let dataset_limits = DataSetLimitsConfig {
            max_sequence_depth,
            max_inflated_size,
            max_frame_size,
            max_decoded_size,
            decode_memory,
        };
        let max_requests_in_flight = raw.server.max_requests_in_flight.unwrap_or(256);
        check(if max_requests_in_flight > 0 {
            Ok(())
        } else {
            Err("server.max_requests_in_flight must be at least 1".into())
        });
        let queue_wait_text = raw.server.queue_wait.clone().unwrap_or_else(|| "1s".into());
        let queue_wait = humantime::parse_duration(&queue_wait_text)
            .map_err(|e| format!("server.queue_wait {queue_wait_text:?}: {e}"));
        check(queue_wait.as_ref().map(|_| ()).map_err(Clone::clone));
        let shedding =
            SheddingConfig { max_requests_in_flight, queue_wait: queue_wait.unwrap_or_default(), stow_memory };
        let tls = raw.server.tls.as_ref().map(|t| ServerTlsFiles {
            cert: t.cert.clone(),
            key: t.key.clone(),
            client_ca: t.client_ca.clone(),
        });
        let public_url = raw.server.public_url.unwrap_or_else(|| {
            let scheme = if raw.server.tls.is_some() { "https" } else { "http" };
            format!("{scheme}://{}{base_path}", raw.server.listen)
        });
        check(if public_url.starts_with("http://") || public_url.starts_with("https://") {
            Ok(())
        } else {
            Err(format!("server.public_url {public_url:?} must be an http(s) URL"))
        });

        let dimse_ae_title = AeTitle::new(&raw.dimse.ae_title);
        check(dimse_ae_title.as_ref().map(|_| ()).map_err(|e| format!("dimse.ae_title: {e}")));
        let metrics_listen = raw
            .server
            .metrics_listen
            .as_deref()
            .map(|text| text.parse::<SocketAddr>().map_err(|e| format!("server.metrics_listen {text:?}: {e}")));
        check(metrics_listen.clone().map(|r| r.map(|_| ())).unwrap_or(Ok(())));
        let metrics_listen = metrics_listen.and_then(Result::ok);
        let dimse_listen = raw.dimse.listen.parse::<SocketAddr>();
        check(dimse_listen.as_ref().map(|_| ()).map_err(|e| format!("dimse.listen {:?}: {e}", raw.dimse.listen)));

        let mut sites = Vec::new();
        for (i, site) in raw.sites.into_iter().enumerate() {
            match validate_site(site) {
                Ok(site) => {
                    if sites.iter().any(|s: &SiteConfig| s.id == site.id) {
                        problems.push(format!("sites[{i}]: id {} is used twice", site.id));
                    }
                    sites.push(site);
                }
                Err(mut site_problems) => {
                    problems.extend(site_problems.drain(..).map(|p| format!("sites[{i}]: {p}")));
                }
            }
        }
        if sites.is_empty() && problems.is_empty() {
            problems.push("no [[sites]]: the gateway needs at least one PACS".to_owned());
        }

        let auth = match raw.auth {
            None => AuthMode::None,
            Some(auth) => match auth.mode.as_str() {
                "none" => AuthMode::None,
                "jwt" => {
                    validate_jwt(auth, &mut problems).map(|jwt| AuthMode::Jwt(Box::new(jwt))).unwrap_or(AuthMode::None)
                }
                other => {
                    problems.push(format!("auth.mode {other:?}: expected \"jwt\" or \"none\""));
                    AuthMode::None
                }
            },
        };
        if auth == AuthMode::None {
            if let Ok(listen) = &listen {
                if !listen.ip().is_loopback() {
                    problems.push(format!(
                        "auth.mode = \"none\" is refused on {listen}: without authentication the gateway listens on a loopback address only"
                    ));
                }
            }
        }

        let mut projects = Vec::new();
        for project in raw.projects {
            let mut permissions = Vec::new();
            for permission in &project.permissions {
                match permission.as_str() {
                    "search" => permissions.push(Permission::Search),
                    "retrieve" => permissions.push(Permission::Retrieve),
                    "store" => permissions.push(Permission::Store),
                    other => problems.push(format!("projects {}: unknown permission {other:?}", project.id)),
                }
            }
            let mut project_sites = Vec::new();
            for site in &project.sites {
                match sites.iter().find(|s| s.id.as_str() == site) {
                    Some(found) => project_sites.push(found.id.clone()),
                    None => problems.push(format!("projects {}: no site {site:?} is configured", project.id)),
                }
            }
            if let Some(options) = &project.deid_options {
                if raw.deid.is_none() {
                    problems.push(format!("projects {}: deid_options needs a [deid] section", project.id));
                }
                if let Err(wrong) = dicomweb_deid::Options::parse(options) {
                    problems.extend(wrong.into_iter().map(|p| format!("projects {}: deid_options: {p}", project.id)));
                }
            }
            if project.id.is_empty() || !project.id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                problems.push(format!(
                    "projects {:?}: an id is letters, digits, '-' and '_' (it is part of URLs)",
                    project.id
                ));
            }
            if projects.iter().any(|p: &ProjectConfig| p.id == project.id) {
                problems.push(format!("projects {}: the id is used twice", project.id));
            }
            let burned_in = project.burned_in.as_deref().and_then(|text| {
                if raw.deid.is_none() {
                    problems.push(format!("projects {}: burned_in needs a [deid] section", project.id));
                }
                BurnedIn::parse(text).map_err(|e| problems.push(format!("projects {}: burned_in {e}", project.id))).ok()
            });
            projects.push(ProjectConfig {
                id: project.id,
                sites: project_sites,
                permissions,
                deid_options: project.deid_options,
                show_sites: project.show_sites,
                burned_in,
            });
        }
        match (&auth, projects.is_empty()) {
            (AuthMode::Jwt(_), true) => {
                problems.push("auth.mode = \"jwt\" needs at least one [[projects]]: tokens grant projects".into())
            }
            (AuthMode::None, false) => problems.push(
                "[[projects]] need auth.mode = \"jwt\": without authentication there is one implicit project over every site"
                    .into(),
            ),
            _ => {}
        }

        let limits = {
            let raw = raw.limits;
            let requests_per_second = raw.as_ref().and_then(|l| l.requests_per_second).unwrap_or(50);
            let limits = LimitsConfig {
                requests_per_second,
                burst: raw.as_ref().and_then(|l| l.burst).unwrap_or(requests_per_second.saturating_mul(2)),
                concurrent_requests: raw.as_ref().and_then(|l| l.concurrent_requests).unwrap_or(32),
            };
            if limits.requests_per_second == 0 || limits.burst == 0 || limits.concurrent_requests == 0 {
                problems.push("limits: requests_per_second, burst and concurrent_requests must be at least 1".into());
            }
            limits
        };

        let deid = raw.deid.map(|deid| {
            if deid.profile != "basic" {
                problems.push(format!("deid.profile {:?}: only \"basic\" (PS3.15 Annex E) exists", deid.profile));
            }
            if let Err(wrong) = dicomweb_deid::Options::parse(&deid.options) {
                problems.extend(wrong.into_iter().map(|p| format!("deid.options: {p}")));
            }
            let store = deid
                .store
                .as_deref()
                .and_then(|store| ConnectionString::parse(store).map_err(|e| problems.push(e)).ok());
            let burned_in = BurnedIn::parse(deid.burned_in.as_deref().unwrap_or("withhold"))
                .map_err(|e| problems.push(format!("deid.burned_in {e}")))
                .unwrap_or(BurnedIn::Withhold);
            DeidConfig {
                options: deid.options,
                key_file: deid.key_file,
                state_dir: deid.state_dir.unwrap_or_else(|| PathBuf::from("state")),
                store,
                show_sites: deid.show_sites.unwrap_or(false),
                burned_in,
                burned_in_rules: deid.burned_in_rules,
            }
        });

        let cache = {
            let raw = raw.cache;
            let memory = raw.as_ref().and_then(|c| c.memory.clone()).unwrap_or_else(|| "512MiB".into());
            let disk = raw.as_ref().and_then(|c| c.disk.clone()).unwrap_or_else(|| "0B".into());
            let ttl = raw.as_ref().and_then(|c| c.ttl.clone()).unwrap_or_else(|| "10m".into());
            let memory_bytes = parse_size(&memory).unwrap_or_else(|e| {
                problems.push(format!("cache.memory: {e}"));
                0
            });
            let disk_bytes = parse_size(&disk).unwrap_or_else(|e| {
                problems.push(format!("cache.disk: {e}"));
                0
            });
            let ttl = humantime::parse_duration(&ttl).unwrap_or_else(|e| {
                problems.push(format!("cache.ttl {ttl:?}: {e}"));
                Duration::ZERO
            });
            let search_ttl_text = raw.as_ref().and_then(|c| c.search_ttl.clone()).unwrap_or_else(|| "30s".into());
            let search_ttl = humantime::parse_duration(&search_ttl_text).unwrap_or_else(|e| {
                problems.push(format!("cache.search_ttl {search_ttl_text:?}: {e}"));
                Duration::ZERO
            });
            let transcoded = raw.as_ref().and_then(|c| c.transcoded_memory.clone()).unwrap_or_else(|| "256MiB".into());
            let transcoded_bytes = parse_size(&transcoded).unwrap_or_else(|e| {
                problems.push(format!("cache.transcoded_memory: {e}"));
                0
            });
            CacheConfig {
                memory_bytes,
                disk_dir: raw.and_then(|c| c.disk_dir),
                disk_bytes,
                ttl,
                search_ttl,
                transcoded_bytes,
            }
        };

        let federation = {
            let raw = raw.federation;
            let mut duration = |key: &str, text: Option<String>, default: &str| {
                let text = text.unwrap_or_else(|| default.into());
                humantime::parse_duration(&text).unwrap_or_else(|e| {
                    problems.push(format!("federation.{key} {text:?}: {e}"));
                    Duration::ZERO
                })
            };
            let remember = duration("remember", raw.as_ref().and_then(|f| f.remember.clone()), "10m");
            let echo_interval = duration("echo_interval", raw.as_ref().and_then(|f| f.echo_interval.clone()), "30s");
            let circuit_open = duration("circuit_open", raw.as_ref().and_then(|f| f.circuit_open.clone()), "30s");
            if echo_interval.is_zero() || circuit_open.is_zero() {
                problems.push("federation.echo_interval and federation.circuit_open must be longer than 0s".into());
            }
            let max_matches = raw.as_ref().and_then(|f| f.max_matches).unwrap_or(10_000);
            if max_matches == 0 {
                problems.push("federation.max_matches must be at least 1".into());
            }
            let circuit_failures = raw.as_ref().and_then(|f| f.circuit_failures).unwrap_or(3);
            if circuit_failures == 0 {
                problems.push("federation.circuit_failures must be at least 1".into());
            }
            FederationConfig {
                remember,
                remember_studies: raw.as_ref().and_then(|f| f.remember_studies).unwrap_or(100_000),
                state_dir: raw
                    .and_then(|f| f.state_dir)
                    .or_else(|| deid.as_ref().map(|d: &DeidConfig| d.state_dir.clone())),
                echo_interval,
                circuit_failures,
                circuit_open,
                max_matches,
            }
        };

        match (listen, dimse_ae_title, dimse_listen) {
            (Ok(listen), Ok(dimse_ae_title), Ok(dimse_listen)) if problems.is_empty() => Ok(Config {
                listen,
                metrics_listen,
                tls,
                stow_limit,
                max_connections,
                header_timeout,
                http_limits,
                replica_id,
                shedding,
                dataset_limits,
                base_path,
                public_url,
                dimse_ae_title,
                dimse_listen,
                sites,
                deid,
                auth,
                projects,
                cache,
                audit_fhir_path: raw.audit.as_ref().and_then(|a| a.fhir_path.clone()),
                audit_path: raw.audit.map(|a| a.path),
                federation,
                limits,
            }),
            _ => Err(problems),
        }
    }
}

/// An `http://` URL whose host is a loopback address (127.0.0.0/8, ::1, localhost).
fn loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn validate_jwt(auth: raw::Auth, problems: &mut Vec<String>) -> Option<JwtConfig> {
    let jwks = match (auth.jwks_file, auth.jwks_url) {
        (Some(file), None) => Some(JwksSource::File(file)),
        (None, Some(url)) if url.starts_with("https://") || loopback_http(&url) => Some(JwksSource::Url(url)),
        (None, Some(url)) if url.starts_with("http://") => {
            problems.push(format!(
                "auth.jwks_url {url:?} is plain http: the keys that decide who may see what must come over https \
                 (plain http is taken only from a loopback address)"
            ));
            None
        }
        (None, Some(url)) => {
            problems.push(format!("auth.jwks_url {url:?} must be an http(s) URL"));
            None
        }
        _ => {
            problems.push("auth: exactly one of jwks_file and jwks_url is required with mode = \"jwt\"".into());
            None
        }
    };
    let mut algorithms = Vec::new();
    for name in auth.algorithms.unwrap_or_else(|| vec!["RS256".into(), "ES256".into()]) {
        use jsonwebtoken::Algorithm::*;
        match name.as_str() {
            "RS256" => algorithms.push(RS256),
            "RS384" => algorithms.push(RS384),
            "RS512" => algorithms.push(RS512),
            "PS256" => algorithms.push(PS256),
            "PS384" => algorithms.push(PS384),
            "PS512" => algorithms.push(PS512),
            "ES256" => algorithms.push(ES256),
            "ES384" => algorithms.push(ES384),
            "EdDSA" => algorithms.push(EdDSA),
            "HS256" => algorithms.push(HS256),
            other => {
                problems.push(format!("auth.algorithms: {other:?} is not a signature algorithm the gateway checks"))
            }
        }
    }
    let hs256 = algorithms.contains(&jsonwebtoken::Algorithm::HS256);
    match (hs256, &auth.hs256_secret_file) {
        (true, None) => problems.push("auth.algorithms names HS256: auth.hs256_secret_file is required".into()),
        (false, Some(_)) => {
            problems.push("auth.hs256_secret_file is set but auth.algorithms does not name HS256".into())
        }
        _ => {}
    }
    if algorithms.is_empty() {
        problems.push("auth.algorithms is empty".into());
    }
    let mut duration = |key: &str, text: Option<String>, default: &str| {
        let text = text.unwrap_or_else(|| default.into());
        humantime::parse_duration(&text)
            .map_err(|e| problems.push(format!("auth.{key} {text:?}: {e}")))
            .unwrap_or_default()
    };
    let jwks_refresh = duration("jwks_refresh", auth.jwks_refresh, "10m");
    let leeway = duration("leeway", auth.leeway, "30s");
    if auth.issuer.is_none() {
        problems.push("auth.issuer is required with mode = \"jwt\"".into());
    }
    if auth.audience.is_none() {
        problems.push("auth.audience is required with mode = \"jwt\"".into());
    }
    Some(JwtConfig {
        issuer: auth.issuer?,
        audience: auth.audience?,
        jwks: jwks?,
        projects_claim: auth.projects_claim.unwrap_or_else(|| "projects".to_owned()),
        algorithms,
        hs256_secret_file: auth.hs256_secret_file,
        jwks_refresh,
        leeway,
        admin_role: auth.admin_role.filter(|role| !role.is_empty()),
        roles_claim: auth.roles_claim.unwrap_or_else(|| "roles".to_owned()),
    })
}

fn validate_site(site: raw::Site) -> Result<SiteConfig, Vec<String>> {
    let mut problems = Vec::new();
    let id = SiteId::new(&site.id).map_err(|e| problems.push(format!("id {:?}: {e}", site.id))).ok();
    let ae_title =
        AeTitle::new(&site.ae_title).map_err(|e| problems.push(format!("ae_title {:?}: {e}", site.ae_title))).ok();
    if site.address.rsplit_once(':').and_then(|(_, port)| port.parse::<u16>().ok()).is_none() {
        problems.push(format!("address {:?} must be host:port", site.address));
    }
    let retrieve = match site.retrieve.as_str() {
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
    let retrieve_associations = site.retrieve_associations.unwrap_or(1);
    if max_associations > 0 && (retrieve_associations == 0 || retrieve_associations > max_associations) {
        problems.push(format!(
            "retrieve_associations = {retrieve_associations}: must be from 1 to max_associations ({max_associations})"
        ));
    }
    let timeout_text = site.timeout.unwrap_or_else(|| "30s".into());
    let timeout = humantime::parse_duration(&timeout_text)
        .map_err(|e| problems.push(format!("timeout {timeout_text:?}: {e}")))
        .ok();
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
        Some(tls) => match (tls.cert, tls.key) {
            (Some(cert), Some(key)) => Some(SiteTlsFiles { ca: tls.ca, cert_and_key: Some((cert, key)) }),
            (None, None) => Some(SiteTlsFiles { ca: tls.ca, cert_and_key: None }),
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
    match (id, ae_title, retrieve, timeout) {
        (Some(id), Some(ae_title), Some(retrieve), Some(timeout)) if problems.is_empty() => Ok(SiteConfig {
            id,
            ae_title,
            address: site.address,
            retrieve,
            max_associations,
            retrieve_associations,
            timeout,
            max_pdu_length,
            store: site.store.unwrap_or(false),
            tls,
            move_calling_ae,
        }),
        _ => Err(problems),
    }
}

/// A size setting that must be more than 0.
fn size_setting(key: &str, text: &str) -> Result<u64, String> {
    match parse_size(text) {
        Ok(0) => Err(format!("{key} must be more than 0")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{key}: {e}")),
    }
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
        assert_eq!(config.sites[1].retrieve, RetrieveMode::CMove);
        assert_eq!(config.sites[1].max_associations, 4);
        assert_eq!((config.sites[0].retrieve_associations, config.sites[1].retrieve_associations), (2, 1));
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
        assert!(!config.replica_id.is_empty(), "the host name by default");
        assert!(config.deid.as_ref().expect("deid").store.is_none(), "the embedded map by default");
        let text = EXAMPLE
            .replace(
                "public_url = \"http://127.0.0.1:8080/dicom-web\"",
                "public_url = \"http://127.0.0.1:8080/dicom-web\"\nreplica_id = \"gw-a\"",
            )
            .replace("state_dir = \"state\"\n", "state_dir = \"state\"\nstore = \"postgres://gw:s3cret@db/gateway\"\n");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(config.replica_id, "gw-a");
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
        let limits = Config::parse(EXAMPLE).expect("valid").http_limits;
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
        let limits = Config::parse(&text).expect("valid").http_limits;
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
        assert_eq!(config.shedding.max_requests_in_flight, 256);
        assert_eq!(config.shedding.queue_wait, Duration::from_secs(1));
        assert_eq!(config.shedding.stow_memory, 1 << 30);
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

    #[test]
    fn site_max_pdu_length() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.sites[0].max_pdu_length, 1 << 20, "1 MiB by default");
        let text = EXAMPLE.replace("store = false", "store = false\nmax_pdu_length = \"64KiB\"");
        assert_eq!(Config::parse(&text).expect("valid").sites[0].max_pdu_length, 64 << 10);
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
        assert!(Config::parse(&text).expect("c-get over TLS is valid").sites[1].tls.is_some());
    }

    #[test]
    fn move_calling_ae() {
        let config = Config::parse(EXAMPLE).expect("valid");
        assert_eq!(config.sites[1].move_calling_ae, None, "the site's ae_title by default");
        let text = EXAMPLE.replace("retrieve = \"c-move\"", "retrieve = \"c-move\"\nmove_calling_ae = \"SITE2_SEND\"");
        let config = Config::parse(&text).expect("valid");
        assert_eq!(config.sites[1].move_calling_ae.as_ref().map(AeTitle::as_str), Some("SITE2_SEND"));
        let text = EXAMPLE
            .replace("retrieve = \"c-move\"", "retrieve = \"c-move\"\nmove_calling_ae = \"THIS-AE-TITLE-IS-TOO-LONG\"")
            .replace("store = false", "store = false\nmove_calling_ae = \"SITE1\"");
        let problems = Config::parse(&text).expect_err("refused");
        assert!(problems.iter().any(|p| p.starts_with("sites[1]: move_calling_ae \"THIS-AE")), "{problems:#?}");
        assert!(problems.iter().any(|p| p.starts_with("sites[0]: move_calling_ae is only for")), "{problems:#?}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("2 GB"), Ok(2_000_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999TiB").is_err());
    }

    #[test]
    fn a_jwks_url_in_plain_http_is_taken_only_from_loopback() {
        for url in ["http://127.0.0.1:8080/jwks.json", "http://localhost/jwks", "http://[::1]:9/k", "http://127.9.9.9"]
        {
            assert!(loopback_http(url), "{url}");
        }
        for url in
            ["http://login.example.org/jwks", "http://127.0.0.1.example.org/", "http://10.0.0.1/", "https://127.0.0.1/"]
        {
            assert!(!loopback_http(url), "{url}");
        }
    }
}
