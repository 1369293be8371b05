//! Media types as PS3.18 §8.7 uses them (RFC 9110 §8.3.1 syntax): the type and subtype,
//! compared case-insensitively, and parameters such as `type`, `boundary` and
//! `transfer-syntax`, quoted or not.

/// A parsed media type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower-cased.
    pub essence: String,
    /// Parameter names lower-cased, values unquoted.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    pub fn parse(text: &str) -> Option<MediaType> {
        let mut rest = text.trim();
        let end = rest.find(';').unwrap_or(rest.len());
        let essence = rest[..end].trim().to_ascii_lowercase();
        if !essence.contains('/') || essence.contains(char::is_whitespace) {
            return None;
        }
        rest = &rest[end..];
        let mut params = Vec::new();
        while let Some(after) = rest.strip_prefix(';') {
            let after = after.trim_start();
            let eq = after.find('=')?;
            let name = after[..eq].trim().to_ascii_lowercase();
            let value_text = &after[eq + 1..];
            let (value, remaining) = if let Some(quoted) = value_text.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = quoted.char_indices();
                let mut end = None;
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, escaped)) = chars.next() {
                                value.push(escaped);
                            }
                        }
                        '"' => {
                            end = Some(i + 1);
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, quoted[end?..].trim_start())
            } else {
                let end = value_text.find(';').unwrap_or(value_text.len());
                (value_text[..end].trim().to_owned(), &value_text[end..])
            };
            params.push((name, value));
            rest = remaining;
        }
        if !rest.trim().is_empty() {
            return None;
        }
        Some(MediaType { essence, params })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The `type` parameter of a multipart type, lower-cased.
    pub fn part_type(&self) -> Option<String> {
        self.param("type").map(str::to_ascii_lowercase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quoted_and_plain_parameters() {
        let m = MediaType::parse(
            "Multipart/Related; type=\"application/dicom\"; boundary=abc;transfer-syntax=1.2.840.10008.1.2.1",
        )
        .expect("valid");
        assert_eq!(m.essence, "multipart/related");
        assert_eq!(m.part_type().as_deref(), Some("application/dicom"));
        assert_eq!(m.param("boundary"), Some("abc"));
        assert_eq!(m.param("transfer-syntax"), Some("1.2.840.10008.1.2.1"));
        let m = MediaType::parse("multipart/related; boundary=\"a;b \\\"c\"").expect("valid");
        assert_eq!(m.param("boundary"), Some("a;b \"c"));
        assert_eq!(MediaType::parse("application/dicom+json").expect("valid").params, vec![]);
        assert!(MediaType::parse("nonsense").is_none());
        assert!(MediaType::parse("a/b; x").is_none());
    }
}
