//! Unique identifiers (PS3.5 §9, VR UI) and one newtype per role a UID plays.

use std::fmt;

/// A syntactically valid UID: components of digits separated by '.', at most 64 characters, no
/// leading zero in a multi-digit component. Trailing NUL or space padding is removed on
/// construction, so two UIDs compare equal whatever padding the peer used.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uid(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UidError {
    #[error("UID is empty")]
    Empty,
    #[error("UID is {0} characters long; at most 64 are allowed")]
    TooLong(usize),
    #[error("UID is not dot-separated digits without leading zeros")]
    Malformed,
}

impl Uid {
    pub const MAX_LEN: usize = 64;

    pub fn new(raw: &str) -> Result<Self, UidError> {
        let cleaned = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if cleaned.is_empty() {
            return Err(UidError::Empty);
        }
        if cleaned.len() > Self::MAX_LEN {
            return Err(UidError::TooLong(cleaned.len()));
        }
        let well_formed = cleaned.split('.').all(|component| {
            !component.is_empty()
                && component.bytes().all(|b| b.is_ascii_digit())
                && !(component.len() > 1 && component.starts_with('0'))
        });
        if !well_formed {
            return Err(UidError::Malformed);
        }
        Ok(Uid(cleaned.to_owned()))
    }

    /// A UID as a peer sent it, accepted when it is 1 to 64 digits and dots even if it breaks
    /// the stricter rules (a leading zero in a component, an empty component). Archives hold
    /// such UIDs; refusing them at the DIMSE edge would lose the instances that carry them.
    pub fn from_peer(raw: &str) -> Result<Self, UidError> {
        let cleaned = raw.trim_end_matches(['\0', ' ']).trim_start_matches(' ');
        if cleaned.is_empty() {
            return Err(UidError::Empty);
        }
        if cleaned.len() > Self::MAX_LEN {
            return Err(UidError::TooLong(cleaned.len()));
        }
        if !cleaned.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(UidError::Malformed);
        }
        Ok(Uid(cleaned.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uid({})", self.0)
    }
}

/// Deserialising accepts what [`Uid::from_peer`] accepts: what the gateway writes down (a
/// directory record, a cache manifest) holds UIDs as the sites sent them, and reading it back
/// must not lose the ones that break the stricter rules.
impl TryFrom<String> for Uid {
    type Error = UidError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Uid::from_peer(&value)
    }
}

impl From<Uid> for String {
    fn from(value: Uid) -> Self {
        value.0
    }
}

impl std::str::FromStr for Uid {
    type Err = UidError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uid::new(s)
    }
}

macro_rules! uid_role {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uid);

        impl $name {
            pub fn new(raw: &str) -> Result<Self, UidError> {
                Uid::new(raw).map($name)
            }
            /// As a peer sent it: see [`Uid::from_peer`].
            pub fn from_peer(raw: &str) -> Result<Self, UidError> {
                Uid::from_peer(raw).map($name)
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
            pub fn as_uid(&self) -> &Uid {
                &self.0
            }
        }

        impl From<Uid> for $name {
            fn from(uid: Uid) -> Self {
                $name(uid)
            }
        }

        impl std::str::FromStr for $name {
            type Err = UidError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::new(s)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.0.as_str())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0.as_str())
            }
        }
    };
}

uid_role!(
    /// StudyInstanceUID (0020,000D).
    StudyInstanceUid
);
uid_role!(
    /// SeriesInstanceUID (0020,000E).
    SeriesInstanceUid
);
uid_role!(
    /// SOPInstanceUID (0008,0018), AffectedSOPInstanceUID in a command.
    SopInstanceUid
);
uid_role!(
    /// SOPClassUID (0008,0016), the abstract syntax of a presentation context.
    SopClassUid
);
uid_role!(
    /// TransferSyntaxUID (0002,0010), the transfer syntax of a presentation context.
    TransferSyntaxUid
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_strips_padding() {
        let cases: &[(&str, Result<&str, UidError>)] = &[
            ("1.2.840.10008.1.2", Ok("1.2.840.10008.1.2")),
            ("1.2.3\0", Ok("1.2.3")),
            ("1.2.3 ", Ok("1.2.3")),
            ("2.25.0", Ok("2.25.0")),
            ("", Err(UidError::Empty)),
            ("1..2", Err(UidError::Malformed)),
            ("1.02", Err(UidError::Malformed)),
            ("1.2.a", Err(UidError::Malformed)),
            (".1.2", Err(UidError::Malformed)),
        ];
        for (raw, want) in cases {
            let got = Uid::new(raw);
            assert_eq!(got.as_ref().map(Uid::as_str), want.as_ref().map(|s| *s), "{raw:?}");
        }
        let long = format!("1.{}", "2".repeat(63));
        assert_eq!(Uid::new(&long), Err(UidError::TooLong(65)));
    }

    #[test]
    fn peers_may_send_uids_that_break_the_stricter_rules() {
        assert_eq!(Uid::from_peer("1.2.03.4\0").map(|u| u.to_string()), Ok("1.2.03.4".into()));
        assert_eq!(Uid::from_peer("1..2").map(|u| u.to_string()), Ok("1..2".into()));
        assert_eq!(Uid::from_peer("1.2.a"), Err(UidError::Malformed));
        assert_eq!(Uid::from_peer(""), Err(UidError::Empty));
    }

    #[test]
    fn what_was_written_down_reads_back_even_when_a_peer_broke_the_rules() {
        let lenient = SeriesInstanceUid::from_peer("1.2.03").expect("digits and dots");
        let json = serde_json::to_string(&lenient).expect("serialises");
        assert_eq!(json, "\"1.2.03\"");
        assert_eq!(serde_json::from_str::<SeriesInstanceUid>(&json).ok(), Some(lenient));
        assert!(serde_json::from_str::<SeriesInstanceUid>("\"1.2.a\"").is_err());
    }

    #[test]
    fn roles_compare_by_value() {
        let a = StudyInstanceUid::new("1.2.3\0").expect("valid");
        let b: StudyInstanceUid = "1.2.3".parse().expect("valid");
        assert_eq!(a, b);
        assert_eq!(format!("{a:?}"), "StudyInstanceUid(1.2.3)");
    }
}
