//! The audit trail's events as FHIR R4 AuditEvent resources (IHE Basic Audit Log Patterns),
//! one JSON resource per line (`audit.fhir_path`), for an audit repository that takes FHIR.
//!
//! - `type`: DICOM's Query (110112) for QIDO-RS, Export (110106) for what leaves the gateway
//!   (WADO-RS), Import (110107) for STOW-RS; `subtype` the RESTful interaction.
//! - `agent`: the caller (the token's subject, requestor) and the gateway.
//! - `entity`: the study, series and instance UIDs of the path as the client named them
//!   (pseudonyms when de-identifying; the sites' own UIDs never), and the project and the sites
//!   contacted as details.
//! - `outcome`: 0 for a complete 2xx/3xx answer, 4 for a client error, 8 for a server error or
//!   a body that did not reach the client whole.

use serde_json::{json, Value as Json};

use crate::core::audit::Event;

const DCM: &str = "http://dicom.nema.org/resources/ontology/DCM";

/// The AuditEvent of one request, recorded at `time` (RFC 3339).
pub(crate) fn audit_event(event: &Event<'_>, time: &str, replica: &str) -> Json {
    let (code, display, interaction, action) = match (event.method, event.route) {
        ("POST", _) => ("110107", "Import", "create", "C"),
        (_, route) if route.ends_with("/studies") || route.ends_with("/series") || route.ends_with("/instances") => {
            ("110112", "Query", "search-type", "E")
        }
        _ => ("110106", "Export", "read", "R"),
    };
    let outcome = match event.status {
        500.. => "8",
        _ if event.outcome != "complete" => "8",
        400..=499 => "4",
        _ => "0",
    };
    let entities: Vec<Json> = event
        .resources
        .iter()
        .map(|uid| {
            json!({
                "what": {"identifier": {"system": "urn:dicom:uid", "value": format!("urn:oid:{uid}")}},
                "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "3", "display": "Report"},
            })
        })
        .chain(std::iter::once(json!({
            "what": {"display": "request"},
            "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2", "display": "System Object"},
            "detail": [
                {"type": "route", "valueString": event.route},
                {"type": "project", "valueString": event.project.unwrap_or("")},
                {"type": "sites", "valueString": event.sites.join(",")},
                {"type": "bytes", "valueString": event.bytes.to_string()},
            ],
        })))
        .collect();
    json!({
        "resourceType": "AuditEvent",
        "type": {"system": DCM, "code": code, "display": display},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": interaction}],
        "action": action,
        "recorded": time,
        "outcome": outcome,
        "outcomeDesc": format!("HTTP {}, {} in {} ms", event.status, event.outcome, event.ms),
        "agent": [
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP", "display": "information recipient"}]},
                "who": {"identifier": {"value": event.subject.unwrap_or("unauthenticated")}},
                "requestor": true,
            },
            {
                "type": {"coding": [{"system": DCM, "code": "110153", "display": "Source Role ID"}]},
                "who": {"display": "dicomweb-gateway"},
                "requestor": false,
            },
        ],
        "source": {
            "site": replica,
            "observer": {"display": "dicomweb-gateway"},
            "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type", "code": "4", "display": "Application Server"}],
        },
        "entity": entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_retrievals_and_stores_have_their_dicom_event_types() {
        let resources = vec!["2.25.7".to_owned()];
        let sites = vec!["site-1".to_owned()];
        let mut event = Event {
            subject: Some("alice"),
            project: Some("lung"),
            method: "GET",
            route: "/dicom-web/studies/{study}/series",
            site: None,
            resources: &resources,
            sites: &sites,
            status: 200,
            outcome: "complete",
            bytes: 10,
            ms: 3,
            cleaned: 0,
            search: None,
        };
        let query = audit_event(&event, "2026-11-28T00:00:00Z", "gw-b");
        assert_eq!(query["source"]["site"], "gw-b");
        assert_eq!(query["type"]["code"], "110112");
        assert_eq!(query["outcome"], "0");
        assert_eq!(query["agent"][0]["who"]["identifier"]["value"], "alice");
        assert_eq!(query["entity"][0]["what"]["identifier"]["value"], "urn:oid:2.25.7");
        event.route = "/dicom-web/studies/{study}";
        event.outcome = "aborted";
        let export = audit_event(&event, "2026-11-28T00:00:00Z", "gw-b");
        assert_eq!((export["type"]["code"].as_str(), export["outcome"].as_str()), (Some("110106"), Some("8")));
        event.method = "POST";
        event.status = 403;
        event.outcome = "complete";
        let import = audit_event(&event, "2026-11-28T00:00:00Z", "gw-b");
        assert_eq!((import["type"]["code"].as_str(), import["outcome"].as_str()), (Some("110107"), Some("4")));
    }
}
