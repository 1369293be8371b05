//! Retrieve checks that follow a URL the server wrote: the bulk data URI of the pixel data in
//! an instance's metadata (PS3.18 §10.4, Annex F.2.6) and the Retrieve URL of a search result.

use std::collections::BTreeMap;

use super::client::WebClient;
use super::dicom_json as json;
use super::media::MediaType;
use super::multipart;
use crate::{Check, Outcome};

const OCTETS: &str = "multipart/related; type=\"application/octet-stream\"";

pub async fn checks(client: &WebClient, vars: &BTreeMap<String, String>) -> Vec<Check> {
    vec![bulkdata(client, vars).await, retrieve_url(client, vars).await]
}

/// Where the server puts a URL under another base (a proxy's public URL), the check asks it
/// relative to the tool's base when the path matches.
fn relative<'a>(client: &WebClient, url: &'a str) -> Option<&'a str> {
    url.strip_prefix(client.base()).or_else(|| url.find("/studies/").map(|i| &url[i..]))
}

async fn bulkdata(client: &WebClient, vars: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "WADO-RS: pixel data by the BulkDataURI of the metadata";
    const REFERENCE: &str = "PS3.18 §10.4.1, Annex F.2.6";
    let check = |outcome, evidence: String| Check::new(NAME, REFERENCE, outcome, evidence);
    let (Some(study), Some(series), Some(instance)) = (vars.get("study"), vars.get("series"), vars.get("instance"))
    else {
        return check(Outcome::NotApplicable, "no instance to read".into());
    };
    let metadata = client
        .get(&format!("/studies/{study}/series/{series}/instances/{instance}/metadata"), Some("application/dicom+json"))
        .await;
    let Some(set) = json::datasets(&metadata.body).ok().and_then(|s| s.into_iter().next()) else {
        return check(Outcome::Fail, format!("no metadata: {}", metadata.with_body()));
    };
    let Some(uri) = json::member(&set, "7FE00010", "BulkDataURI") else {
        return check(
            Outcome::NotApplicable,
            format!("the metadata carries the pixel data inline or not at all: {}", metadata.summary()),
        );
    };
    let Some(target) = relative(client, uri) else {
        return check(Outcome::Fail, format!("BulkDataURI {uri} is not a URL under the service"));
    };
    let exchange = client.get(target, Some(OCTETS)).await;
    if exchange.status != 200 {
        return check(Outcome::Fail, format!("not 200: {}", exchange.with_body()));
    }
    let media = exchange.content_type().and_then(MediaType::parse);
    let Some(boundary) = media.as_ref().filter(|m| m.essence == "multipart/related").and_then(|m| m.param("boundary"))
    else {
        return check(Outcome::Fail, format!("not multipart/related with a boundary: {}", exchange.summary()));
    };
    match multipart::parse(&exchange.body, boundary) {
        Ok(parts) => {
            let expected = vars.get("pixel_bytes").and_then(|n| n.parse::<usize>().ok());
            let length = parts.first().map(|p| p.body.len());
            if parts.len() != 1 {
                check(Outcome::Fail, format!("{} parts, not one: {}", parts.len(), exchange.summary()))
            } else if expected.is_some() && length != expected {
                check(Outcome::Fail, format!("{length:?} bytes, not {expected:?}: {}", exchange.summary()))
            } else {
                check(Outcome::Pass, format!("{}, one part of {} bytes", exchange.summary(), length.unwrap_or(0)))
            }
        }
        Err(e) => check(Outcome::Fail, format!("{e}: {}", exchange.with_body())),
    }
}

async fn retrieve_url(client: &WebClient, vars: &BTreeMap<String, String>) -> Check {
    const NAME: &str = "QIDO-RS: a study's RetrieveURL retrieves the study";
    const REFERENCE: &str = "PS3.18 §10.6.3.3.1";
    let check = |outcome, evidence: String| Check::new(NAME, REFERENCE, outcome, evidence);
    let Some(study) = vars.get("study") else { return check(Outcome::NotApplicable, "no study".into()) };
    let found = client.get(&format!("/studies?StudyInstanceUID={study}"), Some("application/dicom+json")).await;
    let Some(url) = json::datasets(&found.body).ok().and_then(|s| s.first().and_then(|s| json::first(s, "00081190")))
    else {
        return check(Outcome::Fail, format!("no RetrieveURL: {}", found.with_body()));
    };
    let Some(target) = relative(client, &url) else {
        return check(Outcome::Fail, format!("RetrieveURL {url} is not a URL of the service"));
    };
    if !target.ends_with(&format!("/studies/{study}")) {
        return check(Outcome::Fail, format!("RetrieveURL {url} does not name the study"));
    }
    let exchange = client.get(target, Some("multipart/related; type=\"application/dicom\"; transfer-syntax=*")).await;
    if exchange.status == 200 {
        check(Outcome::Pass, format!("{url} → {}", exchange.summary()))
    } else {
        check(Outcome::Fail, format!("{url}: {}", exchange.with_body()))
    }
}
