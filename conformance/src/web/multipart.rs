//! A strict reader of a whole `multipart/related` body (RFC 2046 §5.1, RFC 2387, as PS3.18
//! §8.7.1 uses it): every part between the opening delimiter and the closing one, each with
//! its headers. A body without its closing delimiter is an error, so a truncated answer is
//! never counted as a complete one.

use memchr::memmem;

/// One part: header names lower-cased, and its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Part {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header("content-type")
    }
}

/// Why a body is not a well-formed multipart body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultipartError {
    NoOpeningDelimiter,
    NoClosingDelimiter,
    BadHeaders(usize),
}

impl std::fmt::Display for MultipartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MultipartError::NoOpeningDelimiter => write!(f, "no delimiter line for the boundary"),
            MultipartError::NoClosingDelimiter => write!(f, "no closing delimiter (body truncated?)"),
            MultipartError::BadHeaders(n) => write!(f, "malformed headers in part {n}"),
        }
    }
}

/// Splits `body` into its parts, `boundary` being the Content-Type's parameter.
pub fn parse(body: &[u8], boundary: &str) -> Result<Vec<Part>, MultipartError> {
    let delimiter = format!("--{boundary}").into_bytes();
    // The first delimiter may open the body or follow a preamble ending in CRLF.
    let first = if body.starts_with(&delimiter) {
        0
    } else {
        let mut with_crlf = b"\r\n".to_vec();
        with_crlf.extend_from_slice(&delimiter);
        memmem::find(body, &with_crlf).ok_or(MultipartError::NoOpeningDelimiter)? + 2
    };
    let mut body_end = b"\r\n".to_vec();
    body_end.extend_from_slice(&delimiter);
    let mut parts = Vec::new();
    let mut at = first + delimiter.len();
    loop {
        let rest = &body[at..];
        if rest.starts_with(b"--") {
            return Ok(parts);
        }
        // Transport padding (spaces, tabs) then CRLF end the delimiter line.
        let line_end = memmem::find(rest, b"\r\n").ok_or(MultipartError::NoClosingDelimiter)?;
        if !rest[..line_end].iter().all(|b| *b == b' ' || *b == b'\t') {
            return Err(MultipartError::BadHeaders(parts.len() + 1));
        }
        let start = at + line_end + 2;
        let end =
            memmem::find(&body[start..], &body_end).map(|i| start + i).ok_or(MultipartError::NoClosingDelimiter)?;
        parts.push(part(&body[start..end]).ok_or(MultipartError::BadHeaders(parts.len() + 1))?);
        at = end + body_end.len();
    }
}

fn part(bytes: &[u8]) -> Option<Part> {
    let (head, body) = if bytes.starts_with(b"\r\n") {
        (&bytes[..0], &bytes[2..])
    } else {
        let split = memmem::find(bytes, b"\r\n\r\n")?;
        (&bytes[..split], &bytes[split + 4..])
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut headers = Vec::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
    Some(Part { headers, body: body.to_vec() })
}

/// A body of `parts` (content type, content) under `boundary`.
pub fn build(boundary: &str, parts: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (content_type, content) in parts {
        out.extend_from_slice(format!("--{boundary}\r\nContent-Type: {content_type}\r\n\r\n").as_bytes());
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_builds_and_refuses_truncation() {
        let body = build("XyZ", &[("application/dicom", b"one\r\n--Xy"), ("text/plain", b"")]);
        let parts = parse(&body, "XyZ").expect("well formed");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].body, b"one\r\n--Xy");
        assert_eq!(parts[0].content_type(), Some("application/dicom"));
        assert_eq!(parts[1].body, b"");
        assert_eq!(parse(&body[..body.len() - 9], "XyZ"), Err(MultipartError::NoClosingDelimiter));
        assert_eq!(parse(b"nothing here", "XyZ"), Err(MultipartError::NoOpeningDelimiter));
    }

    #[test]
    fn accepts_a_preamble_and_a_part_without_headers() {
        let body = b"preamble\r\n--b\r\n\r\ncontent\r\n--b--";
        let parts = parse(body, "b").expect("well formed");
        assert_eq!(parts, vec![Part { headers: vec![], body: b"content".to_vec() }]);
    }
}
