//! Site identifiers: the short stable names of federated PACS used in URLs, logs and metrics.

use std::fmt;

/// A site id: 1 to 64 characters of `[A-Za-z0-9_-]`, so it is safe in a URL path segment, a
/// Prometheus label and a `Warning` header without escaping.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SiteId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SiteIdError {
    #[error("site id must be 1 to 64 characters long")]
    Length,
    #[error("site id may contain only letters, digits, '-' and '_'")]
    BadCharacter,
}

impl SiteId {
    pub fn new(raw: &str) -> Result<Self, SiteIdError> {
        if raw.is_empty() || raw.len() > 64 {
            return Err(SiteIdError::Length);
        }
        if !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(SiteIdError::BadCharacter);
        }
        Ok(SiteId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SiteId {
    type Error = SiteIdError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        SiteId::new(&value)
    }
}

impl From<SiteId> for String {
    fn from(value: SiteId) -> Self {
        value.0
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_url_safe_names_only() {
        assert_eq!(SiteId::new("site-1").map(|s| s.to_string()), Ok("site-1".into()));
        assert_eq!(SiteId::new("LUNG_2").map(|s| s.to_string()), Ok("LUNG_2".into()));
        assert_eq!(SiteId::new(""), Err(SiteIdError::Length));
        assert_eq!(SiteId::new(&"a".repeat(65)), Err(SiteIdError::Length));
        assert_eq!(SiteId::new("a/b"), Err(SiteIdError::BadCharacter));
        assert_eq!(SiteId::new("a b"), Err(SiteIdError::BadCharacter));
    }
}
