//! `deid.store`: where the pseudonym map lives when replicas share it (PostgreSQL), checked
//! when the configuration is read and never printed with its password.

use std::str::FromStr;

/// A PostgreSQL connection string (URL or key=value form); its password never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString(String);

impl ConnectionString {
    /// Checks the form (`postgres://` or `postgresql://` URL, or key=value pairs).
    pub fn parse(text: &str) -> Result<ConnectionString, String> {
        let url = text.starts_with("postgres://") || text.starts_with("postgresql://");
        if !url && !text.contains('=') {
            return Err("deid.store must be a PostgreSQL connection string (postgres://user@host/database)".into());
        }
        postgres::Config::from_str(text)
            .map_err(|e| format!("deid.store {}: {e}", redact(text)))
            .map(|_| ConnectionString(text.to_owned()))
    }

    /// The connection string itself, password and all: only for connecting.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&redact(&self.0))
    }
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionString({})", redact(&self.0))
    }
}

/// The connection string with any password replaced by `***`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_owned();
    if let Some(rest) = text.split_once("://").map(|(_, rest)| rest) {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        if let Some(at) = rest[..authority_end].rfind('@') {
            if let Some(colon) = rest[..at].find(':') {
                let scheme_len = text.len() - rest.len();
                out.replace_range(scheme_len + colon + 1..scheme_len + at, "***");
            }
        }
    }
    // `password=` as a key=value pair or a URL parameter.
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("password=") {
        let value = at + "password=".len();
        redacted.push_str(&rest[..value]);
        redacted.push_str("***");
        let quoted = rest[value..].starts_with('\'');
        let end = if quoted {
            rest[value + 1..].find('\'').map(|e| value + e + 2).unwrap_or(rest.len())
        } else {
            rest[value..].find([' ', '&']).map(|e| value + e).unwrap_or(rest.len())
        };
        rest = &rest[end..];
    }
    redacted.push_str(rest);
    redacted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted_in_every_form() {
        assert_eq!(redact("postgres://gw:s3cret@db:5432/gateway"), "postgres://gw:***@db:5432/gateway");
        assert_eq!(redact("postgresql://gw@db/gateway"), "postgresql://gw@db/gateway");
        assert_eq!(redact("postgres://gw:p%40ss@db/gw?sslmode=disable"), "postgres://gw:***@db/gw?sslmode=disable");
        assert_eq!(redact("postgres://db/gw?password=abc&user=gw"), "postgres://db/gw?password=***&user=gw");
        assert_eq!(redact("host=db user=gw password=abc dbname=gw"), "host=db user=gw password=*** dbname=gw");
        assert_eq!(redact("host=db password='a b' user=gw"), "host=db password=*** user=gw");
        let parsed = ConnectionString::parse("postgres://gw:s3cret@db/gateway").expect("valid");
        assert!(!format!("{parsed} {parsed:?}").contains("s3cret"));
    }

    #[test]
    fn connection_strings_are_checked() {
        assert!(ConnectionString::parse("state/pseudonyms.redb").is_err());
        assert!(ConnectionString::parse("postgres://gw@db/gateway").is_ok());
        let wrong = ConnectionString::parse("postgres://gw:s3cret@db:notaport/gateway").expect_err("bad port");
        assert!(!wrong.contains("s3cret"), "{wrong}");
    }
}
