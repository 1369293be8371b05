//! Checks as data: each case file under `cases/` is a list of requests and what the standard
//! says their answers must be. Adding a search, retrieve or HTTP check is a few lines of TOML.
//!
//! A case names its section of the standard, a request (method, path, query, Accept, other
//! headers) with `{variables}` taken from the test data, the statuses allowed, the media type
//! of a successful answer, and expectations over the answer's items: the data sets of a DICOM
//! JSON answer, the instances of a `multipart/related; type="application/dicom"` answer, or the
//! parts of any other multipart answer.
//!
//! Expectations, one per string:
//! - `count == N` (also `!=`, `>=`, `<=`): how many items;
//! - `each FIELD OP [VALUE]`, `some ...`, `none ...`: over the items, where FIELD is a tag (hex
//!   or keyword), `length` (bytes of a part), `content-type` (a part's essence), `xml-root`
//!   (the name of a part's XML root element) or
//!   `transfer-syntax` (an instance's, or a part's parameter) and OP is `==`, `!=`, `^=`
//!   (starts with), `has` (one of several values), `present`, `absent` or `bulkdata` (a
//!   `BulkDataURI` or `InlineBinary` instead of a value);
//! - `header NAME present|absent|== V|has V` (`has`: a comma-separated token, any case);
//! - `type == V`: the multipart Content-Type's `type` parameter is exactly V (PS3.18 §8.7.3.5:
//!   the parts' media type, its own parameters such as `transfer-syntax` outside the quotes);
//! - `magic jpeg|png|gif`: the body starts with that image format's signature.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::client::{quote, Exchange, WebClient};
use super::dicom_json;
use super::media::MediaType;
use super::multipart;
use crate::{Check, Outcome};

/// The case files, compiled in.
pub const FILES: [(&str, &str); 3] = [
    ("qido", include_str!("../../cases/qido.toml")),
    ("wado", include_str!("../../cases/wado.toml")),
    ("http", include_str!("../../cases/http.toml")),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseFile {
    #[serde(rename = "check")]
    pub checks: Vec<Case>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    pub name: String,
    pub reference: String,
    #[serde(default = "get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: Vec<(String, String)>,
    pub accept: Option<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    #[serde(default = "ok")]
    pub status: Vec<u16>,
    /// No match is allowed to be either 204 or 200 with an empty array.
    #[serde(default)]
    pub no_match: bool,
    /// The essence a successful answer's Content-Type must have.
    pub media: Option<String>,
    /// For multipart answers: the `type` parameter and each part's essence.
    pub part_type: Option<String>,
    #[serde(default)]
    pub expect: Vec<String>,
    /// Why the check accepts what it accepts, where the standard leaves a choice.
    pub note: Option<String>,
    /// The check applies only when the answer carries this header (a feature the standard
    /// leaves optional, such as CORS).
    pub applies_if_header: Option<String>,
    /// Statuses that mean the server does not offer an optional resource: the check does not
    /// apply.
    #[serde(default)]
    pub optional_if_status: Vec<u16>,
    /// An attribute the server returns only if it supports it (PS3.18 §10.6.3.3: includefield
    /// attributes "that are supported by the origin server"): when no result has it, the
    /// check does not apply.
    pub unsupported_if_absent: Option<String>,
}

fn get() -> String {
    "GET".into()
}

fn ok() -> Vec<u16> {
    vec![200]
}

/// Every case of one family.
pub fn load(family: &str) -> anyhow::Result<Vec<Case>> {
    let (_, text) = FILES.iter().find(|(f, _)| *f == family).ok_or_else(|| anyhow::anyhow!("no case file {family}"))?;
    let file: CaseFile = toml::from_str(text).map_err(|e| anyhow::anyhow!("cases/{family}.toml: {e}"))?;
    for case in &file.checks {
        for expectation in &case.expect {
            Expectation::parse(expectation)
                .map_err(|e| anyhow::anyhow!("cases/{family}.toml, {:?}: {expectation:?}: {e}", case.name))?;
        }
    }
    Ok(file.checks)
}

/// A query parameter name or value as RFC 3986 §3.4 lets a query carry it: the characters
/// that matching uses (`*`, `?`, `,`, `-`) as they are, `&`, `=`, `+`, `%`, `#` and anything
/// outside the unreserved and sub-delimiter sets percent-encoded.
pub fn query_encode(text: &str) -> String {
    let mut out = String::new();
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(byte as char),
            b'!' | b'$' | b'\'' | b'(' | b')' | b'*' | b',' | b';' | b':' | b'@' | b'/' | b'?' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Replaces each `{name}` by its value; `Err(name)` names a variable the data does not have.
pub fn substitute(text: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').map(|c| open + c).ok_or_else(|| "unclosed {".to_owned())?;
        let name = &rest[open + 1..close];
        out.push_str(vars.get(name).ok_or_else(|| name.to_owned())?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quantifier {
    Each,
    Some,
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expectation {
    Count(String, String),
    Items(Quantifier, String, String, String),
    Header(String, String, String),
    Type(String),
    Magic(String),
}

impl Expectation {
    fn parse(text: &str) -> Result<Expectation, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let rest = |from: usize| words.get(from..).map(|w| w.join(" ")).unwrap_or_default();
        match words.as_slice() {
            ["count", op, _] if ["==", "!=", ">=", "<="].contains(op) => {
                Ok(Expectation::Count(op.to_string(), rest(2)))
            }
            [q, field, op, ..] if ["each", "some", "none"].contains(q) => {
                let quantifier = match *q {
                    "each" => Quantifier::Each,
                    "some" => Quantifier::Some,
                    _ => Quantifier::None,
                };
                let unary = ["present", "absent", "bulkdata"].contains(op);
                let binary = ["==", "!=", "^=", "has"].contains(op);
                if !(unary && words.len() == 3 || binary && words.len() >= 4) {
                    return Err(format!("unknown operator {op} or wrong operand count"));
                }
                let field = field.to_string();
                if !["length", "content-type", "transfer-syntax", "xml-root"].contains(&field.as_str())
                    && dicom_json::tag(&field).is_none()
                {
                    return Err(format!("unknown field {field}"));
                }
                Ok(Expectation::Items(quantifier, field, op.to_string(), rest(3)))
            }
            ["header", name, op, ..] if ["present", "absent", "==", "has"].contains(op) => {
                Ok(Expectation::Header(name.to_string(), op.to_string(), rest(3)))
            }
            ["type", "==", value] => Ok(Expectation::Type(value.to_string())),
            ["magic", format] if ["jpeg", "png", "gif"].contains(format) => Ok(Expectation::Magic(format.to_string())),
            _ => Err("not an expectation".into()),
        }
    }
}

/// One item of an answer that expectations look at.
enum Item {
    Json(serde_json::Map<String, serde_json::Value>),
    Instance { object: Box<dicom_object::DefaultDicomObject>, transfer_syntax: String },
    Part(multipart::Part),
}

impl Item {
    /// The field's values; `None` when absent.
    fn field(&self, field: &str) -> Option<Vec<String>> {
        match (self, field) {
            (Item::Part(part), "length") => Some(vec![part.body.len().to_string()]),
            (Item::Part(part), "content-type") => {
                part.content_type().and_then(MediaType::parse).map(|m| vec![m.essence])
            }
            (Item::Part(part), "transfer-syntax") => part
                .content_type()
                .and_then(MediaType::parse)
                .and_then(|m| m.param("transfer-syntax").map(|t| vec![t.to_owned()])),
            (Item::Part(part), "xml-root") => xml_root(&part.body).map(|root| vec![root]),
            (Item::Instance { transfer_syntax, .. }, "transfer-syntax") => Some(vec![transfer_syntax.clone()]),
            (Item::Json(set), field) => {
                let tag = dicom_json::tag(field)?;
                dicom_json::has(set, &tag).then(|| dicom_json::values(set, &tag))
            }
            (Item::Instance { object, .. }, field) => {
                let tag = dicom_json::tag(field)?;
                let group = u16::from_str_radix(&tag[..4], 16).ok()?;
                let element = u16::from_str_radix(&tag[4..], 16).ok()?;
                let value = object.get(dicom_core::Tag(group, element))?;
                Some(
                    value
                        .to_str()
                        .map(|s| s.split('\\').map(|v| v.trim_end_matches(['\0', ' ']).to_owned()).collect())
                        .unwrap_or_default(),
                )
            }
            _ => None,
        }
    }

    fn is_bulkdata(&self, field: &str) -> bool {
        match (self, dicom_json::tag(field)) {
            (Item::Json(set), Some(tag)) => {
                dicom_json::member(set, &tag, "BulkDataURI").is_some()
                    || dicom_json::member(set, &tag, "InlineBinary").is_some()
            }
            _ => false,
        }
    }
}

/// The name of the root element of an XML document (after the declaration, comments and
/// processing instructions).
fn xml_root(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let mut rest = text;
    loop {
        let start = rest.find('<')?;
        rest = &rest[start + 1..];
        if rest.starts_with('?') || rest.starts_with('!') {
            continue;
        }
        let end = rest.find(|c: char| c.is_whitespace() || c == '>' || c == '/')?;
        return Some(rest[..end].to_owned());
    }
}

fn compare(values: &[String], op: &str, operand: &str) -> bool {
    let first = values.first().map(String::as_str).unwrap_or("");
    match op {
        "==" => first == operand,
        "!=" => first != operand,
        "^=" => first.starts_with(operand),
        "has" => values.iter().any(|v| v == operand),
        _ => false,
    }
}

/// The answer's items, by its media type; `Err` says why it cannot be read.
fn items(exchange: &Exchange, case: &Case) -> Result<Vec<Item>, String> {
    if exchange.status == 204 || exchange.body.is_empty() {
        return Ok(Vec::new());
    }
    let media = exchange.content_type().and_then(MediaType::parse).ok_or("no valid Content-Type")?;
    if media.essence == "application/dicom+json" || media.essence == "application/json" {
        return Ok(dicom_json::datasets(&exchange.body)?.into_iter().map(Item::Json).collect());
    }
    if media.essence != "multipart/related" {
        return Ok(Vec::new());
    }
    let boundary = media.param("boundary").ok_or("multipart/related without a boundary")?;
    let parts = multipart::parse(&exchange.body, boundary).map_err(|e| e.to_string())?;
    let dicom = case.part_type.as_deref() == Some("application/dicom");
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            if !dicom {
                return Ok(Item::Part(part));
            }
            let body =
                part.body.get(128..).filter(|b| b.starts_with(b"DICM")).ok_or_else(|| {
                    format!("part {} is not a DICOM file (PS3.10): starts {}", i + 1, quote(&part.body))
                })?;
            let object = dicom_object::from_reader(body).map_err(|e| format!("part {} does not parse: {e}", i + 1))?;
            let transfer_syntax = object.meta().transfer_syntax().trim_end_matches('\0').to_owned();
            Ok(Item::Instance { object: Box::new(object), transfer_syntax })
        })
        .collect()
}

/// Runs one case against the server.
pub async fn run(client: &WebClient, case: &Case, vars: &BTreeMap<String, String>) -> Check {
    let check = |outcome, evidence: String| Check::new(case.name.clone(), case.reference.clone(), outcome, evidence);
    let request = (|| -> Result<_, String> {
        let mut target = substitute(&case.path, vars)?;
        if !case.query.is_empty() {
            let pairs: Vec<String> = case
                .query
                .iter()
                .map(|(name, value)| Ok(format!("{}={}", query_encode(name), query_encode(&substitute(value, vars)?))))
                .collect::<Result<_, String>>()?;
            target = format!("{target}?{}", pairs.join("&"));
        }
        let headers: Vec<(String, String)> =
            case.headers.iter().map(|(n, v)| Ok((n.clone(), substitute(v, vars)?))).collect::<Result<_, String>>()?;
        let expect: Vec<(Expectation, String)> = case
            .expect
            .iter()
            .map(|e| {
                let text = substitute(e, vars)?;
                Ok((Expectation::parse(&text)?, text))
            })
            .collect::<Result<_, String>>()?;
        Ok((target, headers, expect))
    })();
    let (target, headers, expect) = match request {
        Ok(request) => request,
        Err(variable) => {
            return check(Outcome::NotApplicable, format!("the test data has no {variable}"));
        }
    };
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let header_refs: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    let exchange = client.send(method, &target, case.accept.as_deref(), &header_refs, None).await;
    if case.optional_if_status.contains(&exchange.status) {
        return check(
            Outcome::NotApplicable,
            format!("the server does not offer this optional resource: {}", exchange.summary()),
        );
    }
    if let Some(header) = &case.applies_if_header {
        if exchange.status != 0 && exchange.header(header).is_none() {
            return check(
                Outcome::NotApplicable,
                format!("no {header}: the server does not offer this; {}", exchange.summary()),
            );
        }
    }
    if let Some(field) = &case.unsupported_if_absent {
        let answered = (200..300).contains(&exchange.status) && exchange.status != 204;
        if answered {
            if let Ok(found) = items(&exchange, case) {
                if !found.is_empty() && found.iter().all(|item| item.field(field).is_none()) {
                    return check(
                        Outcome::NotApplicable,
                        format!(
                            "no result has {field}: the server may not support it (only supported attributes are returned); {}",
                            exchange.summary()
                        ),
                    );
                }
            }
        }
    }
    match judge(&exchange, case, &expect) {
        Ok(detail) => {
            let note = case.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default();
            check(Outcome::Pass, format!("{}{detail}{note}", exchange.summary()))
        }
        Err(why) => check(Outcome::Fail, format!("{why}: {}", exchange.with_body())),
    }
}

/// An error answer's body, when it has one and declares a media type, is what it declares
/// (RFC 9110 §8.3): JSON that parses, text that is UTF-8. The standard leaves it open whether
/// an error carries a body at all (a Status Report "may" or "should" be there).
fn error_body(exchange: &Exchange) -> Result<String, String> {
    let Some(media) = exchange.content_type().and_then(MediaType::parse) else { return Ok(String::new()) };
    if exchange.body.is_empty() {
        return Ok(String::new());
    }
    let json = media.essence == "application/json" || media.essence.ends_with("+json");
    if json && serde_json::from_slice::<serde_json::Value>(&exchange.body).is_err() {
        return Err(format!("the error body is not the {} its Content-Type declares", media.essence));
    }
    if media.essence.starts_with("text/") && std::str::from_utf8(&exchange.body).is_err() {
        return Err(format!("the error body is not the {} text its Content-Type declares", media.essence));
    }
    Ok(", the error body as declared".into())
}

fn judge(exchange: &Exchange, case: &Case, expect: &[(Expectation, String)]) -> Result<String, String> {
    if exchange.status == 0 {
        return Err("no answer".into());
    }
    let empty_json =
        exchange.status == 200 && dicom_json::datasets(&exchange.body).map(|sets| sets.is_empty()).unwrap_or(false);
    if case.no_match {
        return match exchange.status {
            204 => Ok(String::new()),
            200 if empty_json => Ok(String::new()),
            200 => Err("matches where none should be".into()),
            s if case.status.contains(&s) => Ok(String::new()),
            s => Err(format!("status {s}, not 204 or 200 with an empty array")),
        };
    }
    if !case.status.contains(&exchange.status) {
        let allowed: Vec<String> = case.status.iter().map(u16::to_string).collect();
        return Err(format!("status {}, expected {}", exchange.status, allowed.join(" or ")));
    }
    if !(200..300).contains(&exchange.status) {
        return error_body(exchange);
    }
    let media = exchange.content_type().and_then(MediaType::parse);
    if let Some(expected) = &case.media {
        match &media {
            Some(m) if &m.essence == expected => {}
            _ => return Err(format!("Content-Type is not {expected}")),
        }
    }
    if let Some(part_type) = &case.part_type {
        // The type parameter's own essence: a value with parameters inside the quotes is read
        // for its media type, since the checks here are about the parts.
        let declared = media.as_ref().and_then(MediaType::part_type);
        let declared = declared.as_deref().map(|t| t.split(';').next().unwrap_or("").trim());
        if declared != Some(part_type.as_str()) {
            return Err(format!("multipart/related without type=\"{part_type}\" (RFC 2387 §3.1)"));
        }
    }
    let items = items(exchange, case)?;
    if let Some(part_type) = &case.part_type {
        for (i, item) in items.iter().enumerate() {
            if let Item::Part(part) = item {
                let essence = part.content_type().and_then(MediaType::parse).map(|m| m.essence);
                if essence.as_deref() != Some(part_type.as_str()) {
                    return Err(format!("part {} has Content-Type {:?}, not {part_type}", i + 1, part.content_type()));
                }
            }
        }
    }
    for (expectation, text) in expect {
        let holds = match expectation {
            Expectation::Count(op, n) => {
                let n: usize = n.parse().map_err(|_| format!("{text}: {n} is not a count"))?;
                match op.as_str() {
                    "==" => items.len() == n,
                    "!=" => items.len() != n,
                    ">=" => items.len() >= n,
                    _ => items.len() <= n,
                }
            }
            Expectation::Items(quantifier, field, op, operand) => {
                let test = |item: &Item| match op.as_str() {
                    "present" => item.field(field).is_some(),
                    "absent" => item.field(field).is_none(),
                    "bulkdata" => item.is_bulkdata(field),
                    op => item.field(field).is_some_and(|values| compare(&values, op, operand)),
                };
                match quantifier {
                    Quantifier::Each => !items.is_empty() && items.iter().all(test),
                    Quantifier::Some => items.iter().any(test),
                    Quantifier::None => !items.iter().any(test),
                }
            }
            Expectation::Header(name, op, operand) => {
                let value = exchange.header(name);
                match op.as_str() {
                    "present" => value.is_some(),
                    "absent" => value.is_none(),
                    "==" => value == Some(operand.as_str()),
                    _ => value.is_some_and(|v| {
                        v.split(',').any(|t| t.trim().eq_ignore_ascii_case(operand) || t.trim() == "*")
                    }),
                }
            }
            Expectation::Type(value) => {
                media.as_ref().and_then(MediaType::part_type).as_deref() == Some(value.as_str())
            }
            Expectation::Magic(format) => {
                let signature: &[u8] = match format.as_str() {
                    "jpeg" => b"\xff\xd8\xff",
                    "png" => b"\x89PNG\r\n\x1a\n",
                    _ => b"GIF8",
                };
                exchange.body.starts_with(signature)
            }
        };
        if !holds {
            return Err(format!("expected {text} ({} items)", items.len()));
        }
    }
    Ok(if items.is_empty() { String::new() } else { format!(", {} items", items.len()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_case_file_loads_and_each_expectation_parses() {
        for (family, _) in FILES {
            let cases = load(family).unwrap_or_else(|e| panic!("{e}"));
            assert!(!cases.is_empty(), "{family}");
            for case in cases {
                assert!(
                    ["PS3.18 §", "RFC ", "Fetch Standard"].iter().any(|p| case.reference.starts_with(p)),
                    "{}",
                    case.name
                );
            }
        }
    }

    #[test]
    fn parses_expectations_and_refuses_nonsense() {
        assert_eq!(Expectation::parse("count == 2"), Ok(Expectation::Count("==".into(), "2".into())));
        assert!(matches!(
            Expectation::parse("each StudyInstanceUID == 1.2.3"),
            Ok(Expectation::Items(Quantifier::Each, _, _, _))
        ));
        assert!(Expectation::parse("each 7FE00010 bulkdata").is_ok());
        assert!(Expectation::parse("each NoSuchKeyword present").is_err());
        assert!(Expectation::parse("each PatientID ==").is_err());
        assert!(Expectation::parse("header Access-Control-Allow-Origin present").is_ok());
        assert!(Expectation::parse("magic tiff").is_err());
    }

    #[test]
    fn encodes_query_values_leaving_matching_characters() {
        assert_eq!(query_encode("DWC12?"), "DWC12?");
        assert_eq!(query_encode("1.2,3.4"), "1.2,3.4");
        assert_eq!(query_encode("A^B C&D=E+F%"), "A%5EB%20C%26D%3DE%2BF%25");
    }

    #[test]
    fn finds_the_xml_root_element() {
        let xml = b"<?xml version=\"1.0\"?>\n<!-- c --><NativeDicomModel xml:space=\"preserve\"><DicomAttribute/></NativeDicomModel>";
        assert_eq!(xml_root(xml).as_deref(), Some("NativeDicomModel"));
        assert_eq!(xml_root(b"not xml"), None);
    }

    #[test]
    fn substitutes_variables_and_names_a_missing_one() {
        let vars = BTreeMap::from([("study".to_owned(), "1.2".to_owned())]);
        assert_eq!(substitute("/studies/{study}/series", &vars).as_deref(), Ok("/studies/1.2/series"));
        assert_eq!(substitute("/studies/{series}", &vars), Err("series".to_owned()));
    }
}
