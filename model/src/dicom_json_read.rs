//! Reading the DICOM JSON Model (PS3.18 Annex F): one data set from the JSON object a DICOMweb
//! origin answered a search or a metadata request with. Values the object only addresses
//! (BulkDataURI) are left out: whoever needs them retrieves them. A peer's answer is outside
//! input: every malformed piece is an error naming the attribute, never a panic, and nesting is
//! bounded.

use base64::Engine;
use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_object::InMemDicomObject;
use serde_json::Value as Json;

/// Sequences nested in sequences, at most, in what is read.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JsonReadError {
    #[error("a data set is not a JSON object")]
    NotAnObject,
    #[error("attribute key {0:?} is not eight hexadecimal digits")]
    BadKey(String),
    #[error("attribute {0}: no or an unknown vr")]
    BadVr(String),
    #[error("attribute {0}: a value does not fit its vr")]
    BadValue(String),
    #[error("sequences are nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// One data set from its DICOM JSON object.
pub fn read_object(json: &Json) -> Result<InMemDicomObject, JsonReadError> {
    object(json, 0)
}

/// Each element of the JSON array `text`, parsed and handed to `each` one at a time, in order:
/// an answer of thousands of objects is never held parsed whole (parsed JSON takes several
/// times the memory of its text). Fails when `text` is not one JSON array, or with `each`'s
/// message where it refuses an element.
pub fn each_in_array<F>(text: &[u8], each: F) -> Result<(), serde_json::Error>
where
    F: FnMut(Json) -> Result<(), String>,
{
    struct Each<F>(F);
    impl<'de, F: FnMut(Json) -> Result<(), String>> serde::de::Visitor<'de> for Each<F> {
        type Value = ();

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON array")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(mut self, mut items: A) -> Result<(), A::Error> {
            while let Some(item) = items.next_element::<Json>()? {
                (self.0)(item).map_err(<A::Error as serde::de::Error>::custom)?;
            }
            Ok(())
        }
    }
    let mut text = serde_json::Deserializer::from_slice(text);
    serde::Deserializer::deserialize_seq(&mut text, Each(each))?;
    text.end()
}

fn object(json: &Json, depth: usize) -> Result<InMemDicomObject, JsonReadError> {
    if depth > MAX_DEPTH {
        return Err(JsonReadError::TooDeep);
    }
    let Json::Object(map) = json else { return Err(JsonReadError::NotAnObject) };
    let mut obj = InMemDicomObject::new_empty();
    for (key, attribute) in map {
        let tag = tag_of(key).ok_or_else(|| JsonReadError::BadKey(key.clone()))?;
        if let Some(element) = element(tag, key, attribute, depth)? {
            obj.put(element);
        }
    }
    Ok(obj)
}

fn tag_of(key: &str) -> Option<Tag> {
    if key.len() != 8 || !key.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let group = u16::from_str_radix(&key[..4], 16).ok()?;
    let element = u16::from_str_radix(&key[4..], 16).ok()?;
    Some(Tag(group, element))
}

fn element(
    tag: Tag,
    key: &str,
    attribute: &Json,
    depth: usize,
) -> Result<Option<DataElement<InMemDicomObject>>, JsonReadError> {
    let bad_value = || JsonReadError::BadValue(key.to_owned());
    let vr = attribute
        .get("vr")
        .and_then(Json::as_str)
        .and_then(|vr| vr.parse::<VR>().ok())
        .ok_or_else(|| JsonReadError::BadVr(key.to_owned()))?;
    if attribute.get("BulkDataURI").is_some() {
        return Ok(None);
    }
    if let Some(inline) = attribute.get("InlineBinary") {
        let text = inline.as_str().ok_or_else(bad_value)?;
        let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| bad_value())?;
        return Ok(Some(DataElement::new(tag, vr, PrimitiveValue::U8(bytes.into()))));
    }
    let values: &[Json] = match attribute.get("Value") {
        None | Some(Json::Null) => &[],
        Some(Json::Array(values)) => values,
        Some(_) => return Err(bad_value()),
    };
    if vr == VR::SQ {
        let items = values.iter().map(|item| object(item, depth + 1)).collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(DataElement::new(tag, vr, DataSetSequence::from(items))));
    }
    if values.is_empty() {
        return Ok(Some(DataElement::new(tag, vr, PrimitiveValue::Empty)));
    }
    let value = primitive(vr, values).ok_or_else(bad_value)?;
    Ok(Some(DataElement::new(tag, vr, value)))
}

/// The primitive value of a "Value" array (PS3.18 F.2.3), `None` when a value does not fit.
fn primitive(vr: VR, values: &[Json]) -> Option<PrimitiveValue> {
    let numbers = || values.iter().map(number);
    Some(match vr {
        VR::PN => PrimitiveValue::Strs(values.iter().map(person_name).collect::<Option<_>>()?),
        VR::US => PrimitiveValue::U16(numbers().map(|n| n?.as_u64()?.try_into().ok()).collect::<Option<_>>()?),
        VR::SS => PrimitiveValue::I16(numbers().map(|n| n?.as_i64()?.try_into().ok()).collect::<Option<_>>()?),
        VR::UL => PrimitiveValue::U32(numbers().map(|n| n?.as_u64()?.try_into().ok()).collect::<Option<_>>()?),
        VR::SL => PrimitiveValue::I32(numbers().map(|n| n?.as_i64()?.try_into().ok()).collect::<Option<_>>()?),
        VR::UV => PrimitiveValue::U64(numbers().map(|n| n?.as_u64()).collect::<Option<_>>()?),
        VR::SV => PrimitiveValue::I64(numbers().map(|n| n?.as_i64()).collect::<Option<_>>()?),
        VR::FL => PrimitiveValue::F32(numbers().map(|n| Some(n?.as_f64()? as f32)).collect::<Option<_>>()?),
        VR::FD => PrimitiveValue::F64(numbers().map(|n| n?.as_f64()).collect::<Option<_>>()?),
        VR::AT => PrimitiveValue::Tags(values.iter().map(|v| tag_of(v.as_str()?)).collect::<Option<_>>()?),
        // Everything else is text: strings, and DS / IS as numbers or strings.
        _ => PrimitiveValue::Strs(values.iter().map(text).collect::<Option<_>>()?),
    })
}

/// A number as JSON gives it, or as a string (what the writer uses past 2^53).
fn number(value: &Json) -> Option<serde_json::Number> {
    match value {
        Json::Number(n) => Some(n.clone()),
        Json::String(s) => s.trim().parse::<serde_json::Number>().ok(),
        _ => None,
    }
}

fn text(value: &Json) -> Option<String> {
    match value {
        Json::Null => Some(String::new()),
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A person name's groups joined as DICOM writes them (`Alphabetic=Ideographic=Phonetic`).
fn person_name(value: &Json) -> Option<String> {
    match value {
        Json::Null => Some(String::new()),
        Json::Object(groups) => {
            let group = |name: &str| groups.get(name).and_then(Json::as_str).unwrap_or("");
            let joined = [group("Alphabetic"), group("Ideographic"), group("Phonetic")].join("=");
            Some(joined.trim_end_matches('=').to_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dicom_json::{to_json, JsonOptions};
    use dicom_dictionary_std::tags;

    #[test]
    fn each_element_of_an_array_is_handed_on_in_order_and_anything_else_fails() {
        let mut seen = Vec::new();
        each_in_array(br#"[{"a": 1}, {"b": [2, 3]}, 4]"#, |item| {
            seen.push(item);
            Ok(())
        })
        .expect("an array");
        assert_eq!(seen, vec![serde_json::json!({"a": 1}), serde_json::json!({"b": [2, 3]}), serde_json::json!(4)]);
        for not_one_array in [&br#"{"a": 1}"#[..], b"[1, 2", b"[1] [2]", b"[1,]", b""] {
            assert!(each_in_array(not_one_array, |_| Ok(())).is_err(), "{:?}", String::from_utf8_lossy(not_one_array));
        }
        let mut handed = 0;
        let refused = each_in_array(b"[1, 2, 3]", |item| {
            handed += 1;
            if item == 2 {
                Err("not this one".into())
            } else {
                Ok(())
            }
        })
        .expect_err("refused");
        assert!(refused.to_string().contains("not this one"), "{refused}");
        assert_eq!(handed, 2, "nothing past the refused element");
    }

    fn sample() -> InMemDicomObject {
        let item = InMemDicomObject::from_element_iter([DataElement::new(
            tags::CODE_VALUE,
            VR::SH,
            PrimitiveValue::from("T-D1100"),
        )]);
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane=山田^花子")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3")),
            DataElement::new(
                tags::MODALITIES_IN_STUDY,
                VR::CS,
                PrimitiveValue::Strs(["CT".into(), "SR".into()].into()),
            ),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512_u16)),
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("1.25")),
            DataElement::new(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, PrimitiveValue::from("200")),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::Empty),
            DataElement::new(tags::ANATOMIC_REGION_SEQUENCE, VR::SQ, DataSetSequence::from(vec![item])),
            DataElement::new(
                tags::FRAME_INCREMENT_POINTER,
                VR::AT,
                PrimitiveValue::Tags(dicom_core::smallvec::smallvec![tags::FRAME_TIME]),
            ),
            DataElement::new(Tag(0x0009, 0x1001), VR::OB, PrimitiveValue::U8(vec![1, 2, 3, 4].into())),
        ])
    }

    #[test]
    fn what_the_writer_writes_reads_back() {
        let json = to_json(&sample(), &JsonOptions::default());
        let read = read_object(&json).expect("reads");
        assert_eq!(to_json(&read, &JsonOptions::default()), json);
        let text = |tag| read.get(tag).and_then(|e| e.to_str().ok()).map(|s| s.into_owned());
        assert_eq!(text(tags::PATIENT_NAME).as_deref(), Some("Doe^Jane=山田^花子"));
        assert_eq!(read.get(tags::ROWS).and_then(|e| e.to_int::<u16>().ok()), Some(512));
    }

    #[test]
    fn addressed_values_are_left_out_and_nulls_are_empty() {
        let json = serde_json::json!({
            "7FE00010": {"vr": "OW", "BulkDataURI": "http://origin/bulk/1"},
            "00100010": {"vr": "PN", "Value": [null]},
            "00080060": {"vr": "CS"},
        });
        let read = read_object(&json).expect("reads");
        assert!(read.get(tags::PIXEL_DATA).is_none());
        assert_eq!(read.element(tags::PATIENT_NAME).expect("kept").to_str().expect("text"), "");
        assert_eq!(read.element(tags::MODALITY).expect("kept").value().primitive(), Some(&PrimitiveValue::Empty));
    }

    #[test]
    fn malformed_answers_are_errors_not_panics() {
        let cases = [
            serde_json::json!([]),
            serde_json::json!({"0010": {"vr": "PN"}}),
            serde_json::json!({"00100010": {"Value": ["x"]}}),
            serde_json::json!({"00100010": {"vr": "XX"}}),
            serde_json::json!({"00280010": {"vr": "US", "Value": [70000]}}),
            serde_json::json!({"00280010": {"vr": "US", "Value": ["many"]}}),
            serde_json::json!({"00100010": {"vr": "PN", "Value": "Doe"}}),
            serde_json::json!({"00100010": {"vr": "PN", "Value": [3]}}),
            serde_json::json!({"00091001": {"vr": "OB", "InlineBinary": "not base64!"}}),
            serde_json::json!({"00081032": {"vr": "SQ", "Value": [1]}}),
        ];
        for case in cases {
            assert!(read_object(&case).is_err(), "{case}");
        }
        let mut deep = serde_json::json!({});
        for _ in 0..=MAX_DEPTH + 1 {
            deep = serde_json::json!({"00081032": {"vr": "SQ", "Value": [deep]}});
        }
        assert_eq!(read_object(&deep).err(), Some(JsonReadError::TooDeep));
    }
}
