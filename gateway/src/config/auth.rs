//! `[auth]` and `[limits]`: who may call (bearer JWTs from an issuer, or nobody checked, on
//! loopback only) and how much one caller may ask.

use std::net::SocketAddr;

use super::problems::Problems;
use super::{raw, AuthMode, GrantConfig, JwksSource, JwtConfig, LimitsConfig};

/// `[auth]`: without it, or with `mode = "none"`, nobody is checked, which is refused unless
/// the gateway listens on loopback.
pub(super) fn auth(raw: Option<raw::Auth>, listen: Option<SocketAddr>, problems: &mut Problems) -> AuthMode {
    let auth = match raw {
        None => AuthMode::None,
        Some(auth) => match auth.mode.as_str() {
            "none" => AuthMode::None,
            "jwt" => issuers(auth, problems).map(AuthMode::Jwt).unwrap_or(AuthMode::None),
            other => {
                problems.push(format!("auth.mode {other:?}: expected \"jwt\" or \"none\""));
                AuthMode::None
            }
        },
    };
    if let (AuthMode::None, Some(listen)) = (&auth, listen) {
        if !listen.ip().is_loopback() {
            problems.push(format!(
                "auth.mode = \"none\" is refused on {listen}: without authentication the gateway listens on a loopback address only"
            ));
        }
    }
    auth
}

/// `[limits]`: each caller's rate, burst and requests at once.
pub(super) fn limits(raw: Option<raw::Limits>, problems: &mut Problems) -> LimitsConfig {
    let requests_per_second = raw.as_ref().and_then(|l| l.requests_per_second).unwrap_or(50);
    let limits = LimitsConfig {
        requests_per_second,
        burst: raw.as_ref().and_then(|l| l.burst).unwrap_or(requests_per_second.saturating_mul(2)),
        concurrent_requests: raw.as_ref().and_then(|l| l.concurrent_requests).unwrap_or(32),
    };
    if limits.requests_per_second == 0 || limits.burst == 0 || limits.concurrent_requests == 0 {
        problems.push("limits: requests_per_second, burst and concurrent_requests must be at least 1");
    }
    limits
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

/// `[auth]`'s identity provider and those of `[[auth.issuers]]`, each issuer once.
fn issuers(mut auth: raw::Auth, problems: &mut Problems) -> Option<Vec<JwtConfig>> {
    let more = std::mem::take(&mut auth.issuers);
    let mut all = vec![validate_jwt(auth, problems)];
    for issuer in more {
        let as_auth = raw::Auth {
            mode: "jwt".into(),
            issuer: issuer.issuer,
            audience: issuer.audience,
            jwks_file: issuer.jwks_file,
            jwks_url: issuer.jwks_url,
            projects_claim: issuer.projects_claim,
            algorithms: issuer.algorithms,
            hs256_secret_file: None,
            jwks_refresh: issuer.jwks_refresh,
            leeway: issuer.leeway,
            admin_role: issuer.admin_role,
            roles_claim: issuer.roles_claim,
            project_pattern: issuer.project_pattern,
            issuers: Vec::new(),
        };
        all.push(validate_jwt(as_auth, problems));
    }
    let all: Option<Vec<JwtConfig>> = all.into_iter().collect();
    if let Some(all) = &all {
        for (i, one) in all.iter().enumerate() {
            if all[..i].iter().any(|earlier| earlier.issuer == one.issuer) {
                problems.push(format!("auth: issuer {:?} is configured twice", one.issuer));
            }
        }
    }
    all
}

/// A `project_pattern` (`PROJECT-{project}`): the text around `{project}`.
fn project_pattern(text: Option<String>, problems: &mut Problems) -> Option<(String, String)> {
    let text = text?;
    match text.split_once("{project}") {
        Some((before, after)) if !after.contains("{project}") => Some((before.to_owned(), after.to_owned())),
        _ => {
            problems.push(format!("auth.project_pattern {text:?}: names {{project}} exactly once"));
            None
        }
    }
}

fn validate_jwt(auth: raw::Auth, problems: &mut Problems) -> Option<JwtConfig> {
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
            problems.push("auth: exactly one of jwks_file and jwks_url is required with mode = \"jwt\"");
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
        (true, None) => problems.push("auth.algorithms names HS256: auth.hs256_secret_file is required"),
        (false, Some(_)) => problems.push("auth.hs256_secret_file is set but auth.algorithms does not name HS256"),
        _ => {}
    }
    if algorithms.is_empty() {
        problems.push("auth.algorithms is empty");
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
        problems.push("auth.issuer is required with mode = \"jwt\"");
    }
    if auth.audience.is_none() {
        problems.push("auth.audience is required with mode = \"jwt\"");
    }
    Some(JwtConfig {
        issuer: auth.issuer?,
        audience: auth.audience?,
        jwks: jwks?,
        projects_claim: auth.projects_claim.unwrap_or_else(|| "projects".to_owned()),
        project_pattern: project_pattern(auth.project_pattern, problems),
        algorithms,
        hs256_secret_file: auth.hs256_secret_file,
        jwks_refresh,
        leeway,
        admin_role: auth.admin_role.filter(|role| !role.is_empty()),
        roles_claim: auth.roles_claim.unwrap_or_else(|| "roles".to_owned()),
    })
}

/// `[[grants]]`: projects granted to named callers until a time.
pub(super) fn grants(
    raw: Vec<raw::Grant>,
    projects: &[super::ProjectConfig],
    problems: &mut Problems,
) -> Vec<GrantConfig> {
    let mut grants = Vec::new();
    for grant in raw {
        if !projects.iter().any(|p| p.id == grant.project) {
            problems.push(format!("grants: no project {:?} is configured", grant.project));
        }
        if grant.subject.trim().is_empty() {
            problems.push("grants: a subject is required");
        }
        let until = humantime::parse_rfc3339_weak(&grant.until)
            .or_else(|_| humantime::parse_rfc3339_weak(&format!("{} 00:00:00", grant.until)))
            .map_err(|_| {
                problems.push(format!(
                    "grants {} / {}: until {:?} is no date (2027-03-31, or 2027-03-31T12:00:00Z)",
                    grant.subject, grant.project, grant.until
                ))
            });
        if let Ok(until) = until {
            grants.push(GrantConfig { subject: grant.subject, issuer: grant.issuer, project: grant.project, until });
        }
    }
    grants
}

#[cfg(test)]
mod tests {
    use super::*;

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
