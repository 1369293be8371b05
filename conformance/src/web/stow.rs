//! Store (STOW-RS, PS3.18 §10.5): the tool's study stored in one request and the Store
//! Instances Response Module checked (Annex I); then a repeated instance, an instance of
//! another study sent to this one, a part that is not DICOM, and a body that is not multipart.

use super::client::{Exchange, WebClient};
use super::dicom_json as json;
use super::multipart;
use super::seed::{SeedInstance, SeedStudy};
use crate::{Check, Outcome};

const JSON: &str = "application/dicom+json";
const BOUNDARY: &str = "dicomweb-conformance-7d1f";

fn content_type() -> String {
    format!("multipart/related; type=\"application/dicom\"; boundary={BOUNDARY}")
}

async fn store(client: &WebClient, target: &str, instances: &[&SeedInstance]) -> Exchange {
    let parts: Vec<(&str, &[u8])> = instances.iter().map(|i| ("application/dicom", i.part10.as_slice())).collect();
    client.post(target, &content_type(), Some(JSON), multipart::build(BOUNDARY, &parts)).await
}

/// What became of the tool's study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seeded {
    /// Not taken: the checks use data found by searching.
    Refused,
    /// Stored under the UIDs the tool gave it.
    AsSent,
    /// Stored, the response naming the study and its instances with UIDs of the server's own
    /// (a de-identifying server): the study's UID as the server shows it.
    Renamed(String),
}

/// Stores the tool's study. Adds the store check and the response module check.
pub async fn store_seed(client: &WebClient, study: &SeedStudy, checks: &mut Vec<Check>) -> Seeded {
    const NAME: &str = "STOW-RS: store a study (four instances, one request)";
    const RESPONSE: &str = "STOW-RS: response is a Store Instances Response Module naming each instance";
    let instances: Vec<&SeedInstance> = study.instances.iter().collect();
    let exchange = store(client, "/studies", &instances).await;
    let refused = [401, 403, 404, 405, 501].contains(&exchange.status) || exchange.status == 0;
    if refused {
        let why = format!(
            "the server does not take STOW-RS here, so the checks use data found by searching: {}",
            exchange.summary()
        );
        checks.push(Check::new(NAME, "PS3.18 §10.5", Outcome::NotApplicable, why.clone()));
        checks.push(Check::new(RESPONSE, "PS3.18 §10.5.3, Annex I", Outcome::NotApplicable, why));
        return Seeded::Refused;
    }
    let stored = exchange.status == 200;
    checks.push(Check::new(
        NAME,
        "PS3.18 §10.5.3.1",
        if stored { Outcome::Pass } else { Outcome::Fail },
        if stored { exchange.summary() } else { format!("not 200 (all stored): {}", exchange.with_body()) },
    ));
    let renamed = renamed_study(&exchange, &study.study_uid);
    checks.push(match response_module(&exchange, &instances, renamed.is_some()) {
        Ok(detail) => {
            Check::new(RESPONSE, "PS3.18 §10.5.3, Annex I", Outcome::Pass, format!("{}; {detail}", exchange.summary()))
        }
        Err(why) => {
            Check::new(RESPONSE, "PS3.18 §10.5.3, Annex I", Outcome::Fail, format!("{why}: {}", exchange.with_body()))
        }
    });
    match (stored || exchange.status == 202, renamed) {
        (false, _) => Seeded::Refused,
        (true, Some(study)) => Seeded::Renamed(study),
        (true, None) => Seeded::AsSent,
    }
}

/// The study's UID as the server shows it, when the response's Retrieve URL names another
/// study than the one sent: a server that keeps what it stores under UIDs of its own
/// (de-identifying) and gives the URL to retrieve it by.
fn renamed_study(exchange: &Exchange, sent_study: &str) -> Option<String> {
    let module = module(exchange)?;
    let url = json::first(&module, "00081190")?;
    let study = url.split("/studies/").nth(1)?.split('/').next()?.to_owned();
    (!study.is_empty() && study != sent_study).then_some(study)
}

/// Table I.1-1: Retrieve URL (Type 2), and a Referenced SOP Sequence item per stored
/// instance with its class, its UID and its own Retrieve URL (Type 2). `renamed`: the server
/// names the instances with UIDs of its own, so items are matched by class, not by UID.
fn response_module(exchange: &Exchange, instances: &[&SeedInstance], renamed: bool) -> Result<String, String> {
    let media = exchange.content_type().and_then(super::media::MediaType::parse).map(|m| m.essence);
    if media.as_deref() != Some(JSON) {
        return Err(format!("asked for {JSON}, got {media:?}"));
    }
    let module = module(exchange).ok_or("the body is not one DICOM JSON data set")?;
    let module = &module;
    if !json::has(module, "00081190") {
        return Err("no Retrieve URL (0008,1190), Type 2".into());
    }
    let items = json::items(module, "00081199");
    if renamed {
        let mut classes: Vec<String> = items.iter().filter_map(|i| json::first(i, "00081150")).collect();
        let mut sent: Vec<String> = instances.iter().map(|i| i.sop_class_uid.to_owned()).collect();
        classes.sort();
        sent.sort();
        if classes != sent {
            return Err("the Referenced SOP Sequence's classes are not those of the instances sent".into());
        }
        if items.iter().any(|i| !json::has(i, "00081190")) {
            return Err("an item has no Retrieve URL (0008,1190), Type 2".into());
        }
        return Ok(format!(
            "{} referenced, each with its Retrieve URL, under UIDs of the server's own (a de-identifying server)",
            items.len()
        ));
    }
    for instance in instances {
        let item = items
            .iter()
            .find(|i| json::first(i, "00081155").as_deref() == Some(instance.sop_instance_uid.as_str()))
            .ok_or_else(|| format!("Referenced SOP Sequence has no item for {}", instance.sop_instance_uid))?;
        if json::first(item, "00081150").as_deref() != Some(instance.sop_class_uid) {
            return Err("an item's Referenced SOP Class UID is not the instance's".into());
        }
        if !json::has(item, "00081190") {
            return Err("an item has no Retrieve URL (0008,1190), Type 2".into());
        }
    }
    Ok(format!("{} referenced, each with its Retrieve URL", items.len()))
}

/// The response's data set: a JSON object, or an array holding one.
fn module(exchange: &Exchange) -> Option<serde_json::Map<String, serde_json::Value>> {
    match serde_json::from_slice(&exchange.body).ok()? {
        serde_json::Value::Object(map) => Some(map),
        serde_json::Value::Array(items) if items.len() == 1 => items.into_iter().next()?.as_object().cloned(),
        _ => None,
    }
}

fn references(exchange: &Exchange, uid: &str) -> bool {
    module(exchange).is_some_and(|module| {
        ["00081199", "00081198"]
            .iter()
            .flat_map(|seq| json::items(&module, seq))
            .any(|item| json::first(item, "00081155").as_deref() == Some(uid))
    })
}

/// A new instance of the tool's study and one of another study, sent to the tool's study
/// together.
async fn mixed(client: &WebClient, seeded: &SeedStudy, other: &SeedStudy) -> Result<Check, String> {
    let ours = seeded.another_instance().map_err(|e| format!("cannot make test data: {e}"))?;
    let stray = &other.instances[2];
    let exchange = store(client, &format!("/studies/{}", seeded.study_uid), &[&ours, stray]).await;
    let name = "STOW-RS: one instance of the study and one of another: 202 naming each, or 409 storing none";
    let reference = "PS3.18 §10.5.3.1, Annex I";
    // Refusing the whole request is also consistent (409: "unable to store any Instances"),
    // as long as nothing was stored.
    if exchange.status == 409 {
        return Ok(match absent(client, &ours.sop_instance_uid).await {
            Ok(()) => Check::new(
                name,
                reference,
                Outcome::Pass,
                format!("{}, nothing stored (refusing the whole request is also allowed)", exchange.summary()),
            ),
            Err(why) => Check::new(name, reference, Outcome::Fail, format!("409 says nothing was stored, {why}")),
        });
    }
    if exchange.status != 202 {
        return Ok(Check::new(name, reference, Outcome::Fail, format!("not 202 or 409: {}", exchange.with_body())));
    }
    let module = module(&exchange).ok_or_else(|| format!("no response module: {}", exchange.with_body()))?;
    let named = |sequence: &str, uid: &str| {
        json::items(&module, sequence).iter().any(|item| json::first(item, "00081155").as_deref() == Some(uid))
    };
    if !named("00081199", &ours.sop_instance_uid) || !named("00081198", &stray.sop_instance_uid) {
        return Ok(Check::new(
            name,
            reference,
            Outcome::Fail,
            format!(
                "the stored one is not in the Referenced SOP Sequence or the other not in the Failed SOP Sequence: {}",
                exchange.with_body()
            ),
        ));
    }
    Ok(Check::new(
        name,
        reference,
        Outcome::Pass,
        format!("{}, the stored one referenced, the other failed", exchange.summary()),
    ))
}

/// Whether a search still finds no instance with this UID.
async fn absent(client: &WebClient, uid: &str) -> Result<(), String> {
    let found = client.get(&format!("/instances?SOPInstanceUID={uid}"), Some(JSON)).await;
    match found.status {
        204 => Ok(()),
        200 if json::datasets(&found.body).is_ok_and(|s| s.is_empty()) => Ok(()),
        _ => Err(format!("but it was stored: {}", found.summary())),
    }
}

pub async fn checks(client: &WebClient, seeded: Option<&SeedStudy>) -> Vec<Check> {
    let mut checks = Vec::new();
    let names = [
        ("STOW-RS: the same instance stored again", "PS3.18 §10.5.3.1, Annex I"),
        ("STOW-RS: an instance of another study sent to this study is refused", "PS3.18 §10.5.3.1"),
        ("STOW-RS: a part that is not a DICOM file stores nothing", "PS3.18 §10.5.3.1"),
        ("STOW-RS: a body that is not multipart/related is 415", "PS3.18 §10.5.3.1"),
        (
            "STOW-RS: one instance of the study and one of another: 202 naming each, or 409 storing none",
            "PS3.18 §10.5.3.1, Annex I",
        ),
    ];
    let Some(seeded) = seeded else {
        for (name, reference) in names {
            checks.push(Check::new(
                name,
                reference,
                Outcome::NotApplicable,
                "the server did not take the tool's study",
            ));
        }
        return checks;
    };
    let study = &seeded.study_uid;
    let other = match SeedStudy::new() {
        Ok(other) => other,
        Err(e) => {
            for (name, reference) in names {
                checks.push(Check::new(name, reference, Outcome::Fail, format!("cannot make test data: {e}")));
            }
            return checks;
        }
    };
    let check = |i: usize, outcome, evidence: String| Check::new(names[i].0, names[i].1, outcome, evidence);

    // The standard leaves open whether a repeated instance is stored again, accepted with a
    // warning or refused; each answer must still be a response module naming the instance.
    let repeated = &other.instances[0];
    let first = store(client, "/studies", &[repeated]).await;
    let again = store(client, "/studies", &[repeated]).await;
    checks.push(if first.status != 200 {
        check(0, Outcome::Fail, format!("storing a new instance failed: {}", first.with_body()))
    } else if ![200, 202, 409].contains(&again.status) {
        check(0, Outcome::Fail, format!("not 200, 202 or 409: {}", again.with_body()))
    } else if !references(&again, &repeated.sop_instance_uid) {
        check(0, Outcome::Fail, format!("the response names the instance in neither sequence: {}", again.with_body()))
    } else {
        check(
            0,
            Outcome::Pass,
            format!("{} (200, 202 and 409 with the instance named are all allowed)", again.summary()),
        )
    });

    let stray = &other.instances[1];
    let exchange = store(client, &format!("/studies/{study}"), &[stray]).await;
    checks.push(if exchange.status != 409 {
        check(1, Outcome::Fail, format!("not 409 (Study Instance UID mismatch): {}", exchange.with_body()))
    } else {
        match absent(client, &stray.sop_instance_uid).await {
            Ok(()) => check(1, Outcome::Pass, format!("{}, and a search does not find it", exchange.summary())),
            Err(why) => check(1, Outcome::Fail, format!("{}, {why}", exchange.summary())),
        }
    });

    let body = multipart::build(BOUNDARY, &[("application/dicom", b"this is not a DICOM file".as_slice())]);
    let exchange = client.post("/studies", &content_type(), Some(JSON), body).await;
    checks.push(if [400, 409].contains(&exchange.status) {
        check(2, Outcome::Pass, format!("{} (400 bad syntax or 409 conflict both fit)", exchange.summary()))
    } else {
        check(2, Outcome::Fail, format!("not 400 or 409 (nothing could be stored): {}", exchange.with_body()))
    });

    let exchange = client.post("/studies", "text/plain", Some(JSON), b"not multipart".to_vec()).await;
    checks.push(if exchange.status == 415 {
        check(3, Outcome::Pass, exchange.summary())
    } else {
        check(3, Outcome::Fail, format!("not 415 (Unsupported Media Type): {}", exchange.with_body()))
    });

    // Table 10.5.3-1: 202 when "the origin server stored some of the Instances but warnings or
    // failures exist for others"; Annex I: the stored one in the Referenced SOP Sequence, the
    // other in the Failed SOP Sequence.
    checks.push(mixed(client, seeded, &other).await.unwrap_or_else(|why| check(4, Outcome::Fail, why)));
    checks
}
