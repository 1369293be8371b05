//! Authentication of bearer tokens (`auth.mode = "jwt"`): a JWT signed by the identity
//! provider, its signature checked against the provider's JWKS (a file, or a URL fetched at
//! start, refreshed every `jwks_refresh` and when a token names a key not yet known, at most
//! every [`REFETCH_AT_MOST_EVERY`]), then `iss`, `aud`, `exp` and `nbf` (with `leeway`). The
//! token's projects are the strings of its `projects_claim`.
//!
//! Only the algorithms of `auth.algorithms` are accepted (RS256 and ES256 unless configured);
//! `alg: none` never is, and a key is only used for its own family, so an HS256 token made with
//! the provider's public key as the secret fails. Symmetric (`oct`) keys in a JWKS are ignored;
//! HS256 takes its secret from `hs256_secret_file` alone.
//!
//! Why a token was refused is logged (never the token); the client learns only that it was.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::config::{JwksSource, JwtConfig};

/// A JWKS URL is not fetched again for an unknown key sooner than this.
pub(crate) const REFETCH_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// The largest JWKS document read, and the most keys kept from it.
const JWKS_MAX_BYTES: usize = 1 << 20;
const JWKS_MAX_KEYS: usize = 100;
/// The largest token looked at.
const TOKEN_MAX_BYTES: usize = 16 * 1024;

/// Who a valid token names and which projects it grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub(crate) subject: String,
    /// The provider that issued the token (`iss`).
    pub(crate) issuer: String,
    /// The client the token was issued to (`azp`, or `client_id`), when it says.
    pub(crate) client: Option<String>,
    pub(crate) projects: Vec<String>,
    /// The token carries `auth.admin_role` in `auth.roles_claim`.
    pub(crate) admin: bool,
}

/// Why a request is not authenticated (the client sees 401 with `WWW-Authenticate`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// No `Authorization: Bearer` header: no error code (RFC 6750 §3.1).
    #[error("no bearer token")]
    Missing,
    /// A token that is not valid; the reason is for the log only.
    #[error("token refused: {0}")]
    Invalid(String),
}

struct VerifyingKey {
    id: Option<String>,
    key: DecodingKey,
    /// The algorithms this key may verify (its family, narrowed by its `alg` when given).
    algorithms: Vec<Algorithm>,
}

#[derive(Default)]
struct KeySet {
    keys: Vec<VerifyingKey>,
}

pub struct Authenticator {
    config: JwtConfig,
    keys: RwLock<Arc<KeySet>>,
    hs256: Option<DecodingKey>,
    client: Option<reqwest::Client>,
    last_fetch: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = self.keys.read().map(|k| k.keys.len()).unwrap_or(0);
        f.debug_struct("Authenticator").field("issuer", &self.config.issuer).field("keys", &keys).finish()
    }
}

/// The algorithms a JWK may verify.
fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::*;
    let family: Vec<Algorithm> = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            jsonwebtoken::jwk::EllipticCurve::P256 => vec![ES256],
            jsonwebtoken::jwk::EllipticCurve::P384 => vec![ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![EdDSA],
        AlgorithmParameters::OctetKey(_) => vec![],
    };
    match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
        Some(named) => family.into_iter().filter(|a| *a == named).collect(),
        None => family,
    }
}

/// Parses a JWKS document, keeping the keys the gateway can use for signatures.
fn parse_jwks(text: &[u8]) -> anyhow::Result<KeySet> {
    #[derive(serde::Deserialize)]
    struct Document {
        keys: Vec<serde_json::Value>,
    }
    let document: Document = serde_json::from_slice(text).map_err(|e| anyhow::anyhow!("not a JWKS document: {e}"))?;
    let mut keys = Vec::new();
    for value in document.keys.into_iter().take(JWKS_MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else { continue };
        if matches!(jwk.common.public_key_use, Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)) {
            continue;
        }
        let algorithms = algorithms_of(&jwk);
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(&jwk) else { continue };
        keys.push(VerifyingKey { id: jwk.common.key_id.clone(), key, algorithms });
    }
    Ok(KeySet { keys })
}

impl Authenticator {
    /// Loads the keys (a `jwks_file` must be valid; a `jwks_url` that cannot be fetched yet is
    /// logged and fetched again when tokens arrive).
    pub(crate) async fn start(config: &JwtConfig) -> anyhow::Result<Arc<Authenticator>> {
        let hs256 = match &config.hs256_secret_file {
            Some(path) => {
                let secret = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read auth.hs256_secret_file {}: {e}", path.display()))?;
                let secret = secret.trim_ascii_end();
                if secret.len() < 32 {
                    anyhow::bail!("auth.hs256_secret_file {} holds fewer than 32 bytes", path.display());
                }
                Some(DecodingKey::from_secret(secret))
            }
            None => None,
        };
        let client = match &config.jwks {
            JwksSource::File(_) => None,
            JwksSource::Url(_) => Some(
                reqwest::Client::builder()
                    .timeout(Duration::from_secs(10))
                    .redirect(reqwest::redirect::Policy::limited(3))
                    .build()?,
            ),
        };
        let authenticator = Arc::new(Authenticator {
            config: config.clone(),
            keys: RwLock::new(Arc::new(KeySet::default())),
            hs256,
            client,
            last_fetch: Mutex::new(None),
        });
        match &config.jwks {
            JwksSource::File(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| anyhow::anyhow!("cannot read auth.jwks_file {}: {e}", path.display()))?;
                let set = parse_jwks(&text).map_err(|e| anyhow::anyhow!("auth.jwks_file {}: {e}", path.display()))?;
                if set.keys.is_empty() && authenticator.hs256.is_none() {
                    anyhow::bail!("auth.jwks_file {} holds no signature key the gateway can use", path.display());
                }
                authenticator.install(set);
            }
            JwksSource::Url(url) => {
                if let Err(e) = authenticator.fetch().await {
                    tracing::error!(url, error = %e, "cannot fetch the JWKS yet: tokens are refused until it is fetched");
                }
                tokio::spawn(refresh(Arc::downgrade(&authenticator), config.jwks_refresh));
            }
        }
        Ok(authenticator)
    }

    fn install(&self, set: KeySet) {
        tracing::info!(keys = set.keys.len(), "token signature keys loaded");
        *self.keys.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
    }

    /// Fetches the JWKS URL (bounded in time and size) and installs its keys.
    async fn fetch(&self) -> anyhow::Result<()> {
        let (Some(client), JwksSource::Url(url)) = (&self.client, &self.config.jwks) else { return Ok(()) };
        *self.last_fetch.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        let mut response = client.get(url).send().await?.error_for_status()?;
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                anyhow::bail!("the JWKS document is larger than {JWKS_MAX_BYTES} bytes");
            }
            body.extend_from_slice(&chunk);
        }
        self.install(parse_jwks(&body)?);
        Ok(())
    }

    /// True when a token naming an unknown key may trigger a fetch now.
    fn may_refetch(&self) -> bool {
        self.client.is_some()
            && self
                .last_fetch
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_none_or(|at| at.elapsed() >= REFETCH_AT_MOST_EVERY)
    }

    /// Checks the `Authorization` header's bearer token.
    pub(crate) async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, Refused> {
        let token = bearer(authorization)?;
        match self.verify(token) {
            Err(Refused::Invalid(why)) if why == UNKNOWN_KEY && self.may_refetch() => {
                if let Err(e) = self.fetch().await {
                    tracing::warn!(error = %e, "cannot fetch the JWKS");
                }
                self.verify(token)
            }
            other => other,
        }
    }

    fn verify(&self, token: &str) -> Result<Identity, Refused> {
        let invalid = |why: &str| Refused::Invalid(why.to_owned());
        let header = jsonwebtoken::decode_header(token).map_err(|e| Refused::Invalid(format!("header: {e}")))?;
        if !self.config.algorithms.contains(&header.alg) {
            return Err(Refused::Invalid(format!("algorithm {:?} is not accepted", header.alg)));
        }
        let mut validation = Validation::new(header.alg);
        validation.algorithms = vec![header.alg];
        validation.leeway = self.config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner()).clone();
        let candidates: Vec<&DecodingKey> = if header.alg == Algorithm::HS256 {
            self.hs256.iter().collect()
        } else {
            keys.keys
                .iter()
                .filter(|k| k.algorithms.contains(&header.alg))
                .filter(|k| header.kid.is_none() || k.id == header.kid)
                .map(|k| &k.key)
                .collect()
        };
        if candidates.is_empty() {
            return Err(invalid(UNKNOWN_KEY));
        }
        let mut last = invalid(UNKNOWN_KEY);
        for key in candidates {
            match jsonwebtoken::decode::<serde_json::Value>(token, key, &validation) {
                Ok(data) => return self.identity(&data.claims),
                Err(e) => last = Refused::Invalid(e.to_string()),
            }
        }
        Err(last)
    }

    fn identity(&self, claims: &serde_json::Value) -> Result<Identity, Refused> {
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Refused::Invalid("no sub claim".into()))?;
        let values: Vec<&str> = match claims.get(&self.config.projects_claim) {
            Some(serde_json::Value::Array(values)) => values.iter().filter_map(|v| v.as_str()).collect(),
            Some(serde_json::Value::String(text)) => text.split_whitespace().collect(),
            _ => Vec::new(),
        };
        let projects = values.into_iter().filter_map(|value| self.project_named(value)).collect();
        let client = ["azp", "client_id"]
            .iter()
            .find_map(|claim| claims.get(*claim).and_then(|c| c.as_str()).filter(|c| !c.is_empty()))
            .map(str::to_owned);
        let admin = self.config.admin_role.as_ref().is_some_and(|role| match claims.get(&self.config.roles_claim) {
            Some(serde_json::Value::Array(values)) => values.iter().any(|v| v.as_str() == Some(role.as_str())),
            Some(serde_json::Value::String(text)) => text.split_whitespace().any(|r| r == role),
            _ => false,
        });
        Ok(Identity { subject: subject.to_owned(), issuer: self.config.issuer.clone(), client, projects, admin })
    }

    /// The project a value of the projects claim names: with a `project_pattern`, the part
    /// between its prefix and suffix (a group's path, `/PROJECT-lung`, read as its name);
    /// without, the value itself.
    fn project_named(&self, value: &str) -> Option<String> {
        let Some((prefix, suffix)) = &self.config.project_pattern else { return Some(value.to_owned()) };
        let name = value.rsplit('/').next().unwrap_or(value);
        let project = name.strip_prefix(prefix.as_str())?.strip_suffix(suffix.as_str())?;
        (!project.is_empty()).then(|| project.to_owned())
    }
}

/// Every configured identity provider; a token is checked by the one its `iss` names, with
/// that provider's keys alone.
#[derive(Debug)]
pub struct Authenticators {
    each: Vec<Arc<Authenticator>>,
}

impl Authenticators {
    pub(crate) async fn start(configs: &[JwtConfig]) -> anyhow::Result<Arc<Authenticators>> {
        let mut each = Vec::with_capacity(configs.len());
        for config in configs {
            each.push(Authenticator::start(config).await?);
        }
        Ok(Arc::new(Authenticators { each }))
    }

    /// Checks the `Authorization` header's bearer token with the keys of the issuer it names.
    pub(crate) async fn authenticate(&self, authorization: Option<&str>) -> Result<Identity, Refused> {
        let token = bearer(authorization)?;
        let named = claimed_issuer(token);
        let Some(issuer) = self.each.iter().find(|a| named.as_deref() == Some(a.config.issuer.as_str())) else {
            return Err(Refused::Invalid("the token's issuer is none of the configured ones".into()));
        };
        issuer.authenticate(authorization).await
    }
}

/// The `iss` a token claims, read before its signature is checked (only to choose whose keys
/// check it; the check itself requires the same `iss`).
fn claimed_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims.get("iss")?.as_str().map(str::to_owned)
}

const UNKNOWN_KEY: &str = "no known key verifies this token";

/// The token of an `Authorization: Bearer ...` header.
fn bearer(authorization: Option<&str>) -> Result<&str, Refused> {
    let value = authorization.ok_or(Refused::Missing)?;
    let (scheme, token) = value.split_once(' ').ok_or(Refused::Missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refused::Missing);
    }
    let token = token.trim();
    if token.is_empty() || token.len() > TOKEN_MAX_BYTES {
        return Err(Refused::Invalid("empty or oversized token".into()));
    }
    Ok(token)
}

/// Fetches the JWKS again every `every`, while the authenticator lives.
async fn refresh(authenticator: std::sync::Weak<Authenticator>, every: Duration) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(10)));
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(authenticator) = authenticator.upgrade() else { return };
        if let Err(e) = authenticator.fetch().await {
            tracing::warn!(error = %e, "cannot refresh the JWKS: the keys already known stay in use");
        }
    }
}

/// Entry points of the fuzz targets: a JWKS document and an `Authorization` header are outside
/// bytes.
#[doc(hidden)]
pub(crate) mod fuzzing {
    use super::*;

    /// An authenticator that knows the keys of `jwks` and an HS256 secret, fetching nothing.
    pub fn authenticator(jwks: &[u8], hs256_secret: &[u8]) -> anyhow::Result<Authenticator> {
        let config = JwtConfig {
            issuer: "https://issuer.invalid".into(),
            audience: "dicomweb".into(),
            jwks: JwksSource::File("jwks.json".into()),
            projects_claim: "projects".into(),
            project_pattern: None,
            algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::HS256, Algorithm::EdDSA],
            hs256_secret_file: None,
            jwks_refresh: Duration::from_secs(3600),
            leeway: Duration::from_secs(60),
            admin_role: Some("gateway-admin".into()),
            roles_claim: "roles".into(),
        };
        Ok(Authenticator {
            config,
            keys: RwLock::new(Arc::new(parse_jwks(jwks)?)),
            hs256: Some(DecodingKey::from_secret(hs256_secret)),
            client: None,
            last_fetch: Mutex::new(None),
        })
    }

    /// The JWKS document read as a fetched one is.
    pub fn jwks(text: &[u8]) -> anyhow::Result<usize> {
        parse_jwks(text).map(|set| set.keys.len())
    }

    /// An `Authorization` header checked as a request's is (without a JWKS fetch).
    pub fn check(authenticator: &Authenticator, authorization: &str) -> Result<Identity, Refused> {
        authenticator.verify(bearer(Some(authorization))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tokens_claimed_issuer_is_read_unverified_only_to_choose_the_keys() {
        use base64::Engine;
        let part = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let token = format!("{}.{}.sig", part(r#"{"alg":"RS256"}"#), part(r#"{"iss":"https://idp.test","sub":"a"}"#));
        assert_eq!(claimed_issuer(&token).as_deref(), Some("https://idp.test"));
        assert_eq!(claimed_issuer("not-a-token"), None);
        assert_eq!(claimed_issuer(&format!("x.{}.y", part("[1]"))), None);
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        assert_eq!(bearer(None), Err(Refused::Missing));
        assert_eq!(bearer(Some("Basic abc")), Err(Refused::Missing));
        assert_eq!(bearer(Some("Bearer abc.def.ghi")), Ok("abc.def.ghi"));
        assert_eq!(bearer(Some("bearer  abc")), Ok("abc"));
        assert!(matches!(bearer(Some("Bearer ")), Err(Refused::Invalid(_))));
    }

    #[test]
    fn symmetric_and_encryption_keys_of_a_jwks_are_not_used() {
        let jwks = br#"{"keys": [
            {"kty": "oct", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "kid": "sym"},
            {"kty": "EC", "crv": "P-256", "use": "enc", "kid": "enc",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "EC", "crv": "P-256", "kid": "sig",
             "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"},
            {"kty": "unknown"}
        ]}"#;
        let set = parse_jwks(jwks).expect("parse");
        assert_eq!(set.keys.len(), 1);
        assert_eq!(set.keys[0].id.as_deref(), Some("sig"));
        assert_eq!(set.keys[0].algorithms, vec![Algorithm::ES256]);
        assert!(parse_jwks(b"[]").is_err());
    }
}
