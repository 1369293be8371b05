//! Application Entity titles (PS3.5 §6.2, VR AE).

use std::fmt;

/// An Application Entity title: 1 to 16 characters of the default repertoire, no backslash, no
/// control characters, not all spaces. Leading and trailing spaces (and the NUL padding some
/// peers send) are not significant and are removed on construction.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AeTitle(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AeTitleError {
    #[error("AE title is empty")]
    Empty,
    #[error("AE title is {0} characters long; at most 16 are allowed")]
    TooLong(usize),
    #[error("AE title contains a backslash or a control or non-ASCII character")]
    BadCharacter,
}

impl AeTitle {
    pub const MAX_LEN: usize = 16;

    pub fn new(raw: &str) -> Result<Self, AeTitleError> {
        let cleaned = raw.trim_matches(|c: char| c == ' ' || c == '\0');
        if cleaned.is_empty() {
            return Err(AeTitleError::Empty);
        }
        if cleaned.len() > Self::MAX_LEN {
            return Err(AeTitleError::TooLong(cleaned.len()));
        }
        if cleaned.chars().any(|c| c == '\\' || !(' '..='~').contains(&c)) {
            return Err(AeTitleError::BadCharacter);
        }
        Ok(AeTitle(cleaned.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AeTitle {
    type Error = AeTitleError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        AeTitle::new(&value)
    }
}

impl From<AeTitle> for String {
    fn from(value: AeTitle) -> Self {
        value.0
    }
}

impl std::str::FromStr for AeTitle {
    type Err = AeTitleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AeTitle::new(s)
    }
}

impl fmt::Display for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for AeTitle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AeTitle({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleans_padding_and_validates() {
        let cases: &[(&str, Result<&str, AeTitleError>)] = &[
            ("FEDGW", Ok("FEDGW")),
            ("  ORTHANC \0", Ok("ORTHANC")),
            ("SITE 1", Ok("SITE 1")),
            ("", Err(AeTitleError::Empty)),
            ("   ", Err(AeTitleError::Empty)),
            ("ABCDEFGHIJKLMNOPQ", Err(AeTitleError::TooLong(17))),
            ("A\\B", Err(AeTitleError::BadCharacter)),
            ("A\tB", Err(AeTitleError::BadCharacter)),
            ("AÉ", Err(AeTitleError::BadCharacter)),
        ];
        for (raw, want) in cases {
            let got = AeTitle::new(raw);
            assert_eq!(got.as_ref().map(AeTitle::as_str), want.as_ref().map(|s| *s), "{raw:?}");
        }
    }
}
