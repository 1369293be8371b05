//! A dataset's EUCAIM catalogue record (Tier 1): the EUCAIM DCAT-AP (v2.0) Dataset with its
//! Distribution, as JSON-LD and as Turtle, from the dataset's settings and what its studies
//! hold (counts after the privacy of counts, sexes, modalities, manufacturers, body parts,
//! ages). Codes are the EUCAIM Hyper-Ontology's; docs/EUCAIM.md lists the mandatory
//! properties and where each value comes from. A setting the record cannot do without (the
//! publisher, a contact, where access is requested) is reported missing, never made up.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::config::{AccessCondition, AccessRights, DatasetConfig, EucaimConfig, FixedValue};
use crate::core::eucaim::index::Description;

/// The prefixes the record uses.
const PREFIXES: [(&str, &str); 12] = [
    ("dcat", "http://www.w3.org/ns/dcat#"),
    ("dct", "http://purl.org/dc/terms/"),
    ("dcatap", "http://data.europa.eu/r5r/"),
    ("foaf", "http://xmlns.com/foaf/0.1/"),
    ("vcard", "http://www.w3.org/2006/vcard/ns#"),
    ("cv", "http://data.europa.eu/m8g/"),
    ("dpv", "https://w3id.org/dpv#"),
    ("healthdcatap", "https://w3id.org/healthdcat-ap#"),
    ("eucaim", "https://cancerimage.eu/ontology/EUCAIM#"),
    ("rdfs", "http://www.w3.org/2000/01/rdf-schema#"),
    ("xsd", "http://www.w3.org/2001/XMLSchema#"),
    ("access", "https://eucaim.github.io/eucaim_dcat_ap/releases/controlled-vocabularies/access-conditions/#"),
];

const HEALTH_THEME: &str = "http://publications.europa.eu/resource/authority/data-theme/HEAL";
const EHDS: &str = "http://data.europa.eu/eli/reg/2025/327/oj";
const AUTHORITY: &str = "http://publications.europa.eu/resource/authority/access-right/";
const HEALTH_DATA: &str = "https://hdeu-dcat.acceptance.data.health.europa.eu/resource/authority/";

/// An RDF term of the record.
#[derive(Debug, Clone, PartialEq)]
enum Term {
    /// A prefixed name (`eucaim:SPEC1000009`).
    Name(String),
    Iri(String),
    English(String),
    Typed(String, &'static str),
    Node(Node),
}

/// A resource and its properties, in order; a node without an IRI is a blank node.
#[derive(Debug, Clone, PartialEq, Default)]
struct Node {
    iri: Option<String>,
    types: Vec<&'static str>,
    properties: Vec<(&'static str, Term)>,
}

impl Node {
    fn new(iri: Option<String>, types: &[&'static str]) -> Node {
        Node { iri, types: types.to_vec(), properties: Vec::new() }
    }

    fn add(&mut self, property: &'static str, term: Term) -> &mut Node {
        self.properties.push((property, term));
        self
    }
}

fn name(prefixed: &str) -> Term {
    Term::Name(prefixed.to_owned())
}

fn code(code: &str) -> Term {
    Term::Name(format!("eucaim:{code}"))
}

/// The record of one dataset, or the settings it lacks.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    dataset: Node,
    distribution: Node,
}

/// The Hyper-Ontology condition of a SNOMED diagnosis the search uses.
fn condition_of_diagnosis(code: &str) -> Option<&'static str> {
    match code {
        "SNOMEDCT399068003" => Some("CLIN1000075"),
        "SNOMEDCT254837009" => Some("CLIN1000060"),
        "SNOMEDCT363406005" => Some("CLIN1000057"),
        "SNOMEDCT363358000" => Some("CLIN1000065"),
        "SNOMEDCT363484005" => Some("CLIN1000087"),
        _ => None,
    }
}

fn modality_code(modality: &str) -> Option<&'static str> {
    Some(match modality {
        "CT" => "IMG1000042",
        "MR" => "IMG1000038",
        "PT" => "IMG1000062",
        "NM" => "IMG1000071",
        "US" => "IMG1000035",
        "CR" => "IMG1000024",
        "DX" => "IMG1000028",
        "MG" => "IMG1004455",
        _ => return None,
    })
}

fn manufacturer_code(label: &str) -> Option<&'static str> {
    Some(match label {
        "Siemens" => "IMG1000044",
        "Toshiba" => "IMG1000045",
        "Philips" => "IMG1000046",
        "General Electric" => "IMG1000047",
        _ => return None,
    })
}

fn body_part_code(term: &str) -> Option<&'static str> {
    Some(match term {
        "BREAST" => "BP1000136",
        "COLON" => "BP1000257",
        "LUNG" => "BP1000113",
        "PELVIS" => "BP1000092",
        "PROSTATE" => "BP1000021",
        "ABDOMEN" => "BP1000173",
        "HEAD" => "BP1000120",
        "CHEST" => "BP1000067",
        _ => return None,
    })
}

/// The codes of what the studies show (sexes, modalities, manufacturers, body parts), with
/// those the dataset adds, by property, each once.
fn held_codes(dataset: &DatasetConfig, held: &Description) -> Vec<(&'static str, Vec<String>)> {
    let sexes = held.sexes.iter().filter_map(|sex| match *sex {
        "Female" => Some("COM1000177"),
        "Male" => Some("COM1000180"),
        _ => None,
    });
    let shown: [(&'static str, Vec<&'static str>); 4] = [
        ("hasBirthSex", sexes.collect()),
        ("hasImageModality", held.modalities.iter().filter_map(|m| modality_code(m)).collect()),
        ("hasEquipmentManufacturer", held.manufacturers.iter().filter_map(|m| manufacturer_code(m)).collect()),
        ("hasImageBodyPart", held.body_parts.iter().filter_map(|p| body_part_code(p)).collect()),
    ];
    shown
        .into_iter()
        .map(|(property, codes)| {
            let mut all: Vec<String> = codes.into_iter().map(str::to_owned).collect();
            for added in dataset.catalogue.codes.get(property).into_iter().flatten() {
                if !all.contains(added) {
                    all.push(added.clone());
                }
            }
            let prefixed: &'static str = match property {
                "hasBirthSex" => "eucaim:hasBirthSex",
                "hasImageModality" => "eucaim:hasImageModality",
                "hasEquipmentManufacturer" => "eucaim:hasEquipmentManufacturer",
                _ => "eucaim:hasImageBodyPart",
            };
            (prefixed, all)
        })
        .collect()
}

/// The record's IRI of a dataset.
pub(crate) fn record_iri(eucaim: &EucaimConfig, gateway_root: &str, dataset: &str) -> String {
    let base =
        eucaim.catalogue_url.clone().unwrap_or_else(|| format!("{}/datasets", gateway_root.trim_end_matches('/')));
    format!("{base}/{}", utf8_percent_encode(dataset))
}

fn utf8_percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Builds the record of `dataset`, whose studies are described by `held` (counts as they may
/// be shown: `None` when the privacy of counts leaves them out).
pub(crate) fn record(
    eucaim: &EucaimConfig,
    dataset: &DatasetConfig,
    held: &Description,
    counts: (Option<u64>, Option<u64>),
    iri: String,
) -> Result<Record, Vec<String>> {
    let mut missing = Vec::new();
    let publisher = &eucaim.publisher;
    if publisher.name.is_none() {
        missing.push("eucaim.publisher".to_owned());
    }
    if publisher.email.is_none() && publisher.url.is_none() {
        missing.push("eucaim.publisher_email or eucaim.publisher_url".to_owned());
    }
    let access_url = dataset.catalogue.access_url.clone();
    if access_url.is_none() {
        missing.push(format!("datasets {}: access_url (where access is requested: EUCAIM's Negotiator)", dataset.id));
    }
    let fixed_diagnosis = dataset.fixed.get("SNOMEDCT439401001").and_then(|values| {
        values.iter().find_map(|value| match value {
            FixedValue::Code(code) => condition_of_diagnosis(code),
            FixedValue::Number(_) => None,
        })
    });
    let condition = dataset.catalogue.condition.clone().or(fixed_diagnosis.map(str::to_owned));
    if condition.is_none() {
        missing.push(format!(
            "datasets {}: condition (a EUCAIM condition code, or a fixed SNOMEDCT439401001 diagnosis)",
            dataset.id
        ));
    }
    for (property, codes) in held_codes(dataset, held) {
        if codes.is_empty() {
            missing.push(format!(
                "datasets {}: a code for {property}: no study shows one; set catalogue_codes.{}",
                dataset.id,
                property.trim_start_matches("eucaim:")
            ));
        }
    }
    let (Some(studies), Some(subjects)) = counts else {
        missing.push(format!("datasets {}: its counts are below eucaim.min_count", dataset.id));
        return Err(missing);
    };
    if !missing.is_empty() {
        return Err(missing);
    }
    let catalogue = &dataset.catalogue;
    let tier = catalogue.tier.unwrap_or(if eucaim.secret_file.is_some() { 2 } else { 1 });
    let mut record = Node::new(Some(iri.clone()), &["dcat:Dataset"]);
    record
        .add("dct:identifier", Term::Typed(dataset.id.clone(), "xsd:string"))
        .add("dct:title", Term::English(dataset.name.clone()))
        .add(
            "dct:description",
            Term::English(if dataset.description.is_empty() {
                dataset.name.clone()
            } else {
                dataset.description.clone()
            }),
        )
        .add("dcat:version", Term::Typed(catalogue.version.clone(), "xsd:string"))
        .add(
            "eucaim:interoperabilityLevel",
            code(match tier {
                3 => "SPEC1000010",
                2 => "SPEC1000011",
                _ => "SPEC1000009",
            }),
        )
        .add("dcat:theme", Term::Iri(HEALTH_THEME.into()))
        .add("healthdcatap:healthCategory", Term::Iri(format!("{HEALTH_DATA}healthcategories/EHRS")))
        .add("healthdcatap:healthTheme", Term::Iri(format!("{HEALTH_DATA}health-theme/CANCER_DISEASE")))
        .add("dct:type", code("SPEC1000020"))
        .add("dct:type", name("dpv:PseudonymisedData"))
        .add(
            "dct:accessRights",
            Term::Iri(format!(
                "{AUTHORITY}{}",
                match catalogue.access_rights {
                    AccessRights::Public => "PUBLIC",
                    AccessRights::Restricted => "RESTRICTED",
                    AccessRights::NonPublic => "NON_PUBLIC",
                }
            )),
        )
        .add("dcatap:applicableLegislation", Term::Iri(EHDS.into()));
    let mut contact = Node::new(None, &["vcard:Kind"]);
    contact.add("vcard:fn", Term::English(publisher.name.clone().unwrap_or_default()));
    match (&publisher.contact_email, &publisher.contact_url, &publisher.email, &publisher.url) {
        (Some(email), _, _, _) | (None, None, Some(email), _) => {
            contact.add("vcard:hasEmail", Term::Iri(format!("mailto:{email}")));
        }
        (None, Some(url), _, _) | (None, None, None, Some(url)) => {
            contact.add("vcard:hasURL", Term::Iri(url.clone()));
        }
        (None, None, None, None) => {}
    }
    record.add("dcat:contactPoint", Term::Node(contact));
    let mut publisher_contact = Node::new(None, &["cv:ContactPoint"]);
    if let Some(email) = &publisher.email {
        publisher_contact.add("cv:email", Term::Typed(email.clone(), "xsd:string"));
    }
    if let Some(url) = &publisher.url {
        publisher_contact.add("cv:contactPage", Term::Iri(url.clone()));
    }
    let mut agent = Node::new(None, &["foaf:Agent"]);
    agent.add("foaf:name", Term::English(publisher.name.clone().unwrap_or_default()));
    agent.add("cv:contactPoint", Term::Node(publisher_contact));
    record
        .add("dct:publisher", Term::Node(agent))
        .add("healthdcatap:hasStructuredData", Term::Typed("false".into(), "xsd:boolean"))
        .add("healthdcatap:numberOfUniqueIndividuals", Term::Typed(subjects.to_string(), "xsd:nonNegativeInteger"))
        .add("healthdcatap:numberOfRecords", Term::Typed(studies.to_string(), "xsd:nonNegativeInteger"));
    if let Some(condition) = &condition {
        record.add("eucaim:hasCondition", code(condition));
    }
    record.add("eucaim:collectionMethod", code(&catalogue.collection_method));
    for (property, codes) in held_codes(dataset, held) {
        for one in codes {
            record.add(property, code(&one));
        }
    }
    let mut keywords = catalogue.keywords.clone();
    if keywords.is_empty() {
        keywords = held.modalities.clone();
        keywords.push("medical imaging".into());
    }
    for keyword in keywords {
        record.add("dcat:keyword", Term::English(keyword));
    }
    let provenance = catalogue.provenance.clone().unwrap_or_else(|| {
        "Studies held in the data holder's archives, indexed and served through a DICOMweb gateway \
         that de-identifies every instance as it leaves."
            .into()
    });
    let mut statement = Node::new(None, &["dct:ProvenanceStatement"]);
    statement.add("rdfs:label", Term::English(provenance));
    record.add("dct:provenance", Term::Node(statement));
    if held.studies > 0 && (held.age_min, held.age_max) != (0, 0) {
        record.add("healthdcatap:minTypicalAge", Term::Typed(held.age_min.to_string(), "xsd:nonNegativeInteger"));
        record.add("healthdcatap:maxTypicalAge", Term::Typed(held.age_max.to_string(), "xsd:nonNegativeInteger"));
    }
    if let Some(page) = &catalogue.landing_page {
        record.add("dcat:landingPage", Term::Iri(page.clone()));
    }
    let distribution_iri = format!("{iri}/distribution");
    record.add("dcat:distribution", Term::Iri(distribution_iri.clone()));
    let mut distribution = Node::new(Some(distribution_iri), &["dcat:Distribution"]);
    distribution
        .add("dcat:accessURL", Term::Iri(access_url.unwrap_or_default()))
        .add("dcatap:applicableLegislation", Term::Iri(EHDS.into()))
        .add(
            "dct:rights",
            name(match catalogue.access_condition {
                AccessCondition::Download => "access:DOWNLOAD",
                AccessCondition::InSitu => "access:IN_SITU_PROCESSING",
                AccessCondition::RemoteProcessing => "access:REMOTE_PROCESSING",
            }),
        );
    Ok(Record { dataset: record, distribution })
}

impl Record {
    /// The record as Turtle.
    pub(crate) fn turtle(&self) -> String {
        let mut out = String::new();
        for (prefix, iri) in PREFIXES {
            let _ = writeln!(out, "@prefix {prefix}: <{iri}> .");
        }
        for node in [&self.dataset, &self.distribution] {
            out.push('\n');
            turtle_node(&mut out, node, 0);
            out.push_str(" .\n");
        }
        out
    }

    /// The record as JSON-LD: a graph of the Dataset and its Distribution, with a context of the
    /// record's prefixes.
    pub(crate) fn json_ld(&self) -> Value {
        let context: Map<String, Value> = PREFIXES.iter().map(|(p, iri)| ((*p).to_owned(), json!(iri))).collect();
        json!({
            "@context": context,
            "@graph": [json_node(&self.dataset), json_node(&self.distribution)],
        })
    }
}

fn turtle_term(out: &mut String, term: &Term, depth: usize) {
    match term {
        Term::Name(name) => out.push_str(name),
        Term::Iri(iri) => {
            let _ = write!(out, "<{}>", iri.replace(['<', '>', '"', ' ', '{', '}', '|', '\\', '^', '`'], ""));
        }
        Term::English(text) => {
            let _ = write!(out, "\"{}\"@en", escape(text));
        }
        Term::Typed(text, datatype) => {
            let _ = write!(out, "\"{}\"^^{datatype}", escape(text));
        }
        Term::Node(node) => {
            out.push('[');
            turtle_properties(out, node, depth + 1);
            out.push_str(" ]");
        }
    }
}

fn turtle_node(out: &mut String, node: &Node, depth: usize) {
    if let Some(iri) = &node.iri {
        turtle_term(out, &Term::Iri(iri.clone()), depth);
    }
    turtle_properties(out, node, depth);
}

fn turtle_properties(out: &mut String, node: &Node, depth: usize) {
    let indent = "  ".repeat(depth + 1);
    let mut first = true;
    let mut separator = |out: &mut String| {
        if !first {
            out.push_str(" ;");
        }
        first = false;
        let _ = write!(out, "\n{indent}");
    };
    if !node.types.is_empty() {
        separator(out);
        let _ = write!(out, "a {}", node.types.join(", "));
    }
    for (property, term) in &node.properties {
        separator(out);
        let _ = write!(out, "{property} ");
        turtle_term(out, term, depth);
    }
}

/// A Turtle (and JSON) string's content, escaped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

fn json_term(term: &Term) -> Value {
    match term {
        Term::Name(name) | Term::Iri(name) => json!({ "@id": name }),
        Term::English(text) => json!({ "@value": text, "@language": "en" }),
        Term::Typed(text, datatype) => json!({ "@value": text, "@type": datatype }),
        Term::Node(node) => json_node(node),
    }
}

fn json_node(node: &Node) -> Value {
    let mut object = Map::new();
    if let Some(iri) = &node.iri {
        object.insert("@id".into(), json!(iri));
    }
    if !node.types.is_empty() {
        object.insert("@type".into(), json!(node.types));
    }
    for (property, term) in &node.properties {
        let value = json_term(term);
        match object.get_mut(*property) {
            Some(Value::Array(values)) => values.push(value),
            Some(one) => *one = Value::Array(vec![one.take(), value]),
            None => {
                object.insert((*property).to_owned(), value);
            }
        }
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_and_iris_cannot_break_out() {
        assert_eq!(escape("a \"b\"\n\\"), "a \\\"b\\\"\\n\\\\");
        let mut out = String::new();
        turtle_term(&mut out, &Term::Iri("https://x/> . <evil".into()), 0);
        assert_eq!(out, "<https://x/.evil>");
        assert_eq!(utf8_percent_encode("ds 1/é"), "ds%201%2F%C3%A9");
    }
}
