//! Metadata as the PS3.19 Native DICOM Model (XML), the form PS3.18 Table 10.4.4-1 requires
//! next to DICOM JSON: written from the DICOM JSON of one instance (PS3.18 Annex F), which
//! already carries bulk data references, so the two forms cannot drift apart.

use dicom_core::dictionary::DataDictionary;
use serde_json::{Map, Value};

const NAME_COMPONENTS: [&str; 5] = ["FamilyName", "GivenName", "MiddleName", "NamePrefix", "NameSuffix"];
const NAME_GROUPS: [&str; 3] = ["Alphabetic", "Ideographic", "Phonetic"];

/// `<NativeDicomModel>` of one instance, from its DICOM JSON object.
pub(crate) fn native_dicom_model(json: &[u8]) -> Result<String, serde_json::Error> {
    let object: Map<String, Value> = serde_json::from_slice(json)?;
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<NativeDicomModel xml:space=\"preserve\">");
    attributes(&mut out, &object);
    out.push_str("</NativeDicomModel>\n");
    Ok(out)
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // Characters XML 1.0 cannot carry.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

fn tag_of(key: &str) -> Option<(u16, u16)> {
    // Eight ASCII characters (an origin's key may be anything; slicing must not split one).
    (key.len() == 8 && key.is_ascii())
        .then(|| Some((u16::from_str_radix(&key[..4], 16).ok()?, u16::from_str_radix(&key[4..], 16).ok()?)))?
}

/// The Private Creator of a private data element, from the same data set.
fn private_creator(object: &Map<String, Value>, group: u16, element: u16) -> Option<String> {
    if group.is_multiple_of(2) || element < 0x1000 {
        return None;
    }
    let creator = format!("{group:04X}{:04X}", element >> 8);
    object.get(&creator)?.get("Value")?.get(0)?.as_str().map(str::to_owned)
}

fn attributes(out: &mut String, object: &Map<String, Value>) {
    for (key, attribute) in object {
        let Some((group, element)) = tag_of(key) else { continue };
        // Written into the XML as it is: only one of DICOM's VRs (two capitals), else UN.
        let vr = attribute
            .get("vr")
            .and_then(Value::as_str)
            .filter(|vr| vr.len() == 2 && vr.bytes().all(|b| b.is_ascii_uppercase()))
            .unwrap_or("UN");
        out.push_str(&format!("<DicomAttribute tag=\"{key}\" vr=\"{vr}\""));
        if let Some(creator) = private_creator(object, group, element) {
            out.push_str(" privateCreator=\"");
            escape(&creator, out);
            out.push('"');
        } else if group.is_multiple_of(2) {
            let tag = dicom_core::Tag(group, element);
            if let Some(entry) = dicom_dictionary_std::StandardDataDictionary.by_tag(tag) {
                out.push_str(&format!(" keyword=\"{}\"", entry.alias));
            }
        }
        out.push('>');
        if let Some(uri) = attribute.get("BulkDataURI").and_then(Value::as_str) {
            out.push_str("<BulkData uri=\"");
            escape(uri, out);
            out.push_str("\"/>");
        } else if let Some(data) = attribute.get("InlineBinary").and_then(Value::as_str) {
            out.push_str("<InlineBinary>");
            escape(data, out);
            out.push_str("</InlineBinary>");
        } else if let Some(Value::Array(values)) = attribute.get("Value") {
            for (i, value) in values.iter().enumerate() {
                let number = i + 1;
                match (vr, value) {
                    ("SQ", Value::Object(item)) => {
                        out.push_str(&format!("<Item number=\"{number}\">"));
                        attributes(out, item);
                        out.push_str("</Item>");
                    }
                    ("PN", Value::Object(name)) => person_name(out, number, name),
                    (_, Value::Null) => out.push_str(&format!("<Value number=\"{number}\"/>")),
                    (_, Value::String(text)) => {
                        out.push_str(&format!("<Value number=\"{number}\">"));
                        escape(text, out);
                        out.push_str("</Value>");
                    }
                    (_, other) => out.push_str(&format!("<Value number=\"{number}\">{other}</Value>")),
                }
            }
        }
        out.push_str("</DicomAttribute>");
    }
}

/// `<PersonName>`: each component group split into its five components (PS3.19 A.1.5).
fn person_name(out: &mut String, number: usize, name: &Map<String, Value>) {
    out.push_str(&format!("<PersonName number=\"{number}\">"));
    for group in NAME_GROUPS {
        let Some(text) = name.get(group).and_then(Value::as_str) else { continue };
        out.push_str(&format!("<{group}>"));
        for (component, value) in NAME_COMPONENTS.iter().zip(text.split('^')) {
            if !value.is_empty() {
                out.push_str(&format!("<{component}>"));
                escape(value, out);
                out.push_str(&format!("</{component}>"));
            }
        }
        out.push_str(&format!("</{group}>"));
    }
    out.push_str("</PersonName>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_origins_keys_and_vrs_cannot_break_the_xml() {
        let json = r#"{"001ä010":{"vr":"LO","Value":["a"]},"00100010":{"vr":"\"/><x y=\"","Value":["b"]}}"#;
        let xml = native_dicom_model(json.as_bytes()).expect("written");
        assert!(!xml.contains("<x") && xml.contains("tag=\"00100010\" vr=\"UN\""), "{xml}");
    }

    #[test]
    fn writes_each_kind_of_attribute() {
        let json = br#"{"00080020":{"vr":"DA","Value":["20210607"]},
            "00100010":{"vr":"PN","Value":[{"Alphabetic":"Doe^Jane^^Dr"}]},
            "00200013":{"vr":"IS","Value":[2]},
            "00081115":{"vr":"SQ","Value":[{"0020000E":{"vr":"UI","Value":["1.2"]}}]},
            "00090010":{"vr":"LO","Value":["ACME"]},
            "00091001":{"vr":"LO","Value":["a<b & c"]},
            "00280009":{"vr":"AT","Value":["00181063", null]},
            "7FE00010":{"vr":"OW","BulkDataURI":"http://x/bulkdata/7FE00010?a=1&b=2"},
            "00291010":{"vr":"OB","InlineBinary":"AAEC"}}"#;
        let xml = native_dicom_model(json).expect("valid JSON");
        assert!(
            xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<NativeDicomModel xml:space=\"preserve\">")
        );
        for expected in [
            r#"<DicomAttribute tag="00080020" vr="DA" keyword="StudyDate"><Value number="1">20210607</Value></DicomAttribute>"#,
            r#"<PersonName number="1"><Alphabetic><FamilyName>Doe</FamilyName><GivenName>Jane</GivenName><NamePrefix>Dr</NamePrefix></Alphabetic></PersonName>"#,
            r#"<Value number="1">2</Value>"#,
            r#"<Item number="1"><DicomAttribute tag="0020000E" vr="UI" keyword="SeriesInstanceUID"><Value number="1">1.2</Value></DicomAttribute></Item>"#,
            r#"<DicomAttribute tag="00091001" vr="LO" privateCreator="ACME"><Value number="1">a&lt;b &amp; c</Value></DicomAttribute>"#,
            r#"<Value number="2"/>"#,
            r#"<BulkData uri="http://x/bulkdata/7FE00010?a=1&amp;b=2"/>"#,
            r#"<InlineBinary>AAEC</InlineBinary>"#,
        ] {
            assert!(xml.contains(expected), "{expected}\nin\n{xml}");
        }
        assert!(xml.ends_with("</NativeDicomModel>\n"));
    }
}
