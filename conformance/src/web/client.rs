//! The HTTP side of the DICOMweb checks: one request, its answer kept whole, and the evidence a
//! check quotes (request line, status, media type, the first bytes of an unexpected body).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::Method;

/// How many body bytes evidence quotes.
const QUOTED_BYTES: usize = 96;

/// A DICOMweb server under test: its base URL (the `{+SERVICE}` of PS3.18) and an optional
/// bearer token.
#[derive(Debug, Clone)]
pub struct WebClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    /// Query values of these parameters are replaced in evidence (patient identity).
    redact: bool,
}

/// One request and its complete answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub method: Method,
    /// The target relative to the base URL, as sent.
    pub target: String,
    pub accept: Option<String>,
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Set when no answer came (connection refused, timeout, ...).
    pub error: Option<String>,
    redact: bool,
}

impl WebClient {
    pub fn new(base: &str, token: Option<String>, timeout: Duration) -> anyhow::Result<WebClient> {
        let http = reqwest::Client::builder().timeout(timeout).redirect(reqwest::redirect::Policy::none()).build()?;
        Ok(WebClient { http, base: base.trim_end_matches('/').to_owned(), token, redact: false })
    }

    /// From now on, evidence hides the values of patient attributes in query strings: the data
    /// was found on the server, not made by the tool.
    pub fn redact_patient_values(&mut self, redact: bool) {
        self.redact = redact;
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get(&self, target: &str, accept: Option<&str>) -> Exchange {
        self.send(Method::GET, target, accept, &[], None).await
    }

    pub async fn post(&self, target: &str, content_type: &str, accept: Option<&str>, body: Vec<u8>) -> Exchange {
        self.send(Method::POST, target, accept, &[(CONTENT_TYPE.as_str(), content_type)], Some(body)).await
    }

    /// Any request: extra headers by name, an optional body.
    pub async fn send(
        &self,
        method: Method,
        target: &str,
        accept: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Exchange {
        let url = format!("{}{}", self.base, target);
        let mut request = self.http.request(method.clone(), &url);
        if let Some(accept) = accept {
            request = request.header(ACCEPT, accept);
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        for (name, value) in headers {
            if let (Ok(name), Ok(value)) = (HeaderName::try_from(*name), HeaderValue::try_from(*value)) {
                request = request.header(name, value);
            }
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let mut exchange = Exchange {
            method,
            target: target.to_owned(),
            accept: accept.map(str::to_owned),
            status: 0,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: None,
            redact: self.redact,
        };
        match request.send().await {
            Ok(response) => {
                exchange.status = response.status().as_u16();
                exchange.headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => exchange.body = body,
                    Err(e) => exchange.error = Some(format!("reading the body failed: {e}")),
                }
            }
            Err(e) => exchange.error = Some(format!("no answer: {e}")),
        }
        exchange
    }
}

const PATIENT_PARAMETERS: [&str; 6] =
    ["PatientName", "PatientID", "PatientBirthDate", "00100010", "00100020", "00100030"];

fn redacted(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else { return target.to_owned() };
    let pairs: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if PATIENT_PARAMETERS.contains(&name) => format!("{name}=…"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{path}?{}", pairs.join("&"))
}

impl Exchange {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> Option<&str> {
        self.header(CONTENT_TYPE.as_str())
    }

    /// `GET /studies?… → 200 application/dicom+json, 1234 bytes`
    pub fn summary(&self) -> String {
        let target = if self.redact { redacted(&self.target) } else { self.target.clone() };
        let accept = self.accept.as_deref().map(|a| format!(" (Accept: {a})")).unwrap_or_default();
        if let Some(error) = &self.error {
            if self.status == 0 {
                return format!("{} {target}{accept} → {error}", self.method);
            }
        }
        let media = self.content_type().unwrap_or("no Content-Type");
        format!("{} {target}{accept} → {} {media}, {} bytes", self.method, self.status, self.body.len())
    }

    /// The summary and the first bytes of the body, for a failure.
    pub fn with_body(&self) -> String {
        if self.body.is_empty() {
            return self.summary();
        }
        format!("{}; body starts {}", self.summary(), quote(&self.body))
    }
}

/// The first bytes of `bytes`, printable ASCII as is and the rest as `\xNN`.
pub fn quote(bytes: &[u8]) -> String {
    let mut out = String::from("\"");
    for &b in bytes.iter().take(QUOTED_BYTES) {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('"');
    if bytes.len() > QUOTED_BYTES {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_bytes_readably_and_redacts_patient_values() {
        assert_eq!(quote(b"ab\r\n\x00\""), "\"ab\\r\\n\\x00\\\"\"");
        assert!(quote(&[b'a'; 200]).ends_with('…'));
        assert_eq!(redacted("/studies?PatientID=X1&limit=2"), "/studies?PatientID=…&limit=2");
        assert_eq!(redacted("/studies"), "/studies");
    }
}
