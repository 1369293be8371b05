//! The DICOM JSON Model (PS3.18 Annex F), written by our own encoder: numbers as JSON numbers,
//! person names as objects, small binary values inline (base64), large ones and pixel data as
//! BulkDataURI when the caller can address them, everything escaped by serde_json.
//!
//! One data set is encoded at a time into a byte buffer, so a response streams as it is built.

use base64::Engine;
use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::{Tag, VR};
use dicom_object::InMemDicomObject;
use serde_json::Value as Json;

/// Gives the BulkDataURI of a value by its path of tags, or `None` when it has none (the value
/// is then left out).
pub type BulkDataUri<'a> = &'a dyn Fn(&[Tag]) -> Option<String>;

/// How binary values are written.
pub struct JsonOptions<'a> {
    /// Binary values up to this many bytes are written inline (base64).
    pub inline_binary_max: usize,
    /// Gives the BulkDataURI of a value by its path of tags (sequence items are not numbered
    /// in the path); without it larger values are left out.
    pub bulk_data_uri: Option<BulkDataUri<'a>>,
}

impl std::fmt::Debug for JsonOptions<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonOptions").field("inline_binary_max", &self.inline_binary_max).finish_non_exhaustive()
    }
}

impl Default for JsonOptions<'_> {
    fn default() -> Self {
        JsonOptions { inline_binary_max: 1024, bulk_data_uri: None }
    }
}

/// Appends the JSON object of one data set to `out`.
pub fn write_object(out: &mut Vec<u8>, obj: &InMemDicomObject, options: &JsonOptions) {
    let json = object(obj, options, &mut Vec::new());
    // Writing a serde_json::Value into a Vec cannot fail.
    let _ = serde_json::to_writer(out, &json);
}

/// The JSON object of one data set.
pub fn to_json(obj: &InMemDicomObject, options: &JsonOptions) -> Json {
    object(obj, options, &mut Vec::new())
}

fn object(obj: &InMemDicomObject, options: &JsonOptions, path: &mut Vec<Tag>) -> Json {
    let mut map = serde_json::Map::new();
    for element in obj.iter() {
        let tag = element.header().tag;
        // Group lengths are retired in data sets (PS3.5 §7.2) and say nothing in JSON.
        if tag.element() == 0x0000 {
            continue;
        }
        path.push(tag);
        if let Some(attribute) = attribute(element.vr(), element.value(), options, path) {
            map.insert(format!("{:04X}{:04X}", tag.group(), tag.element()), attribute);
        }
        path.pop();
    }
    Json::Object(map)
}

fn attribute(
    vr: VR,
    value: &Value<InMemDicomObject, dicom_object::mem::InMemFragment>,
    options: &JsonOptions,
    path: &mut Vec<Tag>,
) -> Option<Json> {
    let mut map = serde_json::Map::new();
    map.insert("vr".into(), Json::String(vr.to_string().to_owned()));
    match value {
        Value::Sequence(sequence) => {
            if !sequence.items().is_empty() {
                let items = sequence.items().iter().map(|item| object(item, options, path)).collect();
                map.insert("Value".into(), Json::Array(items));
            }
        }
        Value::PixelSequence(_) => {
            // Encapsulated pixel data is only ever addressed, never inlined.
            let uri = options.bulk_data_uri?(path)?;
            map.insert("BulkDataURI".into(), Json::String(uri));
        }
        Value::Primitive(primitive) => {
            if is_binary(vr) {
                let bytes = primitive.to_bytes();
                if bytes.is_empty() {
                } else if bytes.len() <= options.inline_binary_max && !is_pixel_data(path) {
                    map.insert(
                        "InlineBinary".into(),
                        Json::String(base64::engine::general_purpose::STANDARD.encode(&bytes)),
                    );
                } else {
                    let uri = options.bulk_data_uri?(path)?;
                    map.insert("BulkDataURI".into(), Json::String(uri));
                }
            } else {
                let values = values(vr, primitive);
                if !values.is_empty() {
                    map.insert("Value".into(), Json::Array(values));
                }
            }
        }
    }
    Some(Json::Object(map))
}

fn is_pixel_data(path: &[Tag]) -> bool {
    path.last().is_some_and(|t| *t == Tag(0x7FE0, 0x0010) || *t == Tag(0x7FE0, 0x0008) || *t == Tag(0x7FE0, 0x0009))
}

fn is_binary(vr: VR) -> bool {
    matches!(vr, VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN)
}

/// The "Value" array of a primitive value, per PS3.18 F.2.3.
fn values(vr: VR, value: &PrimitiveValue) -> Vec<Json> {
    if matches!(value, PrimitiveValue::Empty) {
        return Vec::new();
    }
    match vr {
        VR::PN => strings(value).into_iter().map(|s| person_name(&s)).collect(),
        VR::DS => strings(value).into_iter().map(|s| decimal(&s)).collect(),
        VR::IS => strings(value).into_iter().map(|s| integer(&s)).collect(),
        VR::US | VR::SS | VR::UL | VR::SL | VR::SV | VR::UV | VR::FL | VR::FD => binary_numbers(value),
        VR::AT => match value {
            PrimitiveValue::Tags(tags) => {
                tags.iter().map(|t| Json::String(format!("{:04X}{:04X}", t.group(), t.element()))).collect()
            }
            other => strings(other).into_iter().map(Json::String).collect(),
        },
        // Text VRs that never hold multiple values: a backslash is part of the text.
        VR::LT | VR::ST | VR::UT | VR::UR => {
            let text = value.to_str();
            vec![Json::String(text.trim_end_matches([' ', '\0']).to_owned())]
        }
        _ => strings(value).into_iter().map(|s| if s.is_empty() { Json::Null } else { Json::String(s) }).collect(),
    }
}

/// The values as strings, padding removed (NUL for UI, space for the others: not significant).
fn strings(value: &PrimitiveValue) -> Vec<String> {
    match value {
        PrimitiveValue::Strs(values) => values.iter().map(|v| trim(v)).collect(),
        PrimitiveValue::Str(value) => value.split('\\').map(trim).collect(),
        other => other.to_str().split('\\').map(trim).collect(),
    }
}

fn trim(value: &str) -> String {
    value.trim_matches(|c| c == ' ' || c == '\0').to_owned()
}

fn person_name(value: &str) -> Json {
    if value.is_empty() {
        return Json::Null;
    }
    let mut map = serde_json::Map::new();
    for (group, text) in ["Alphabetic", "Ideographic", "Phonetic"].iter().zip(value.split('=')) {
        if !text.is_empty() {
            map.insert((*group).to_owned(), Json::String(text.to_owned()));
        }
    }
    Json::Object(map)
}

fn decimal(value: &str) -> Json {
    if value.is_empty() {
        return Json::Null;
    }
    match value.parse::<f64>().ok().filter(|v| v.is_finite()).and_then(serde_json::Number::from_f64) {
        Some(number) => match value.parse::<i64>() {
            // Keep integers integral ("120", not 120.0).
            Ok(int) => Json::Number(int.into()),
            Err(_) => Json::Number(number),
        },
        // Not a decimal string: keep the text rather than lose or invent a value.
        None => Json::String(value.to_owned()),
    }
}

fn integer(value: &str) -> Json {
    if value.is_empty() {
        return Json::Null;
    }
    match value.parse::<i64>() {
        Ok(int) => Json::Number(int.into()),
        Err(_) => Json::String(value.to_owned()),
    }
}

/// Largest integer a JSON reader using IEEE doubles keeps exactly.
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn binary_numbers(value: &PrimitiveValue) -> Vec<Json> {
    let unsigned = |v: u64| if v <= MAX_SAFE_INTEGER { Json::Number(v.into()) } else { Json::String(v.to_string()) };
    let signed = |v: i64| {
        if v.unsigned_abs() <= MAX_SAFE_INTEGER {
            Json::Number(v.into())
        } else {
            Json::String(v.to_string())
        }
    };
    let float = |v: f64| serde_json::Number::from_f64(v).map(Json::Number).unwrap_or(Json::Null);
    match value {
        PrimitiveValue::U16(v) => v.iter().map(|x| unsigned(u64::from(*x))).collect(),
        PrimitiveValue::I16(v) => v.iter().map(|x| signed(i64::from(*x))).collect(),
        PrimitiveValue::U32(v) => v.iter().map(|x| unsigned(u64::from(*x))).collect(),
        PrimitiveValue::I32(v) => v.iter().map(|x| signed(i64::from(*x))).collect(),
        PrimitiveValue::U64(v) => v.iter().map(|x| unsigned(*x)).collect(),
        PrimitiveValue::I64(v) => v.iter().map(|x| signed(*x)).collect(),
        PrimitiveValue::F32(v) => v.iter().map(|x| float(f64::from(*x))).collect(),
        PrimitiveValue::F64(v) => v.iter().map(|x| float(*x)).collect(),
        PrimitiveValue::U8(v) => v.iter().map(|x| unsigned(u64::from(*x))).collect(),
        other => strings(other).into_iter().map(|s| decimal(&s)).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue};
    use dicom_dictionary_std::tags;
    use serde_json::json;

    fn obj(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
        InMemDicomObject::from_element_iter(elements)
    }

    #[test]
    fn encodes_each_kind_of_value_as_ps3_18_annex_f_says() {
        let item = obj(vec![DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("121320"))]);
        let data = obj(vec![
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane=山田^花子")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3\0")),
            DataElement::new(
                tags::MODALITIES_IN_STUDY,
                VR::CS,
                PrimitiveValue::Strs(["CT".into(), "PT ".into()].into()),
            ),
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("1.25")),
            DataElement::new(tags::KVP, VR::DS, PrimitiveValue::from("120 ")),
            DataElement::new(tags::IMAGE_POSITION_PATIENT, VR::DS, PrimitiveValue::from("-250\\-250.5\\+1e2")),
            DataElement::new(tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, PrimitiveValue::from("201")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512u16)),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("Chest \"quoted\" \\ text")),
            DataElement::new(tags::ADDITIONAL_PATIENT_HISTORY, VR::LT, PrimitiveValue::from("a\\b")),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::Empty),
            DataElement::new(tags::FRAME_INCREMENT_POINTER, VR::AT, PrimitiveValue::from(tags::FRAME_TIME_VECTOR)),
            DataElement::new(
                tags::CONCEPT_NAME_CODE_SEQUENCE,
                VR::SQ,
                Value::Sequence(dicom_core::value::DataSetSequence::from(vec![item])),
            ),
            DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("PRIVATE")),
            DataElement::new(Tag(0x0008, 0x0000), VR::UL, PrimitiveValue::from(10u32)),
        ]);
        let got = to_json(&data, &JsonOptions::default());
        let want = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane", "Ideographic": "山田^花子"}]},
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00080061": {"vr": "CS", "Value": ["CT", "PT"]},
            "00180050": {"vr": "DS", "Value": [1.25]},
            "00180060": {"vr": "DS", "Value": [120]},
            "00200032": {"vr": "DS", "Value": [-250, -250.5, 100.0]},
            "00201208": {"vr": "IS", "Value": [201]},
            "00280010": {"vr": "US", "Value": [512]},
            "00081030": {"vr": "LO", "Value": ["Chest \"quoted\"", "text"]},
            "001021B0": {"vr": "LT", "Value": ["a\\b"]},
            "00080050": {"vr": "SH"},
            "00280009": {"vr": "AT", "Value": ["00181065"]},
            "0040A043": {"vr": "SQ", "Value": [{"00080100": {"vr": "SH", "Value": ["121320"]}}]},
            "00090010": {"vr": "LO", "Value": ["PRIVATE"]},
        });
        assert_eq!(got, want);
        // And the bytes are valid JSON with proper escaping.
        let mut out = Vec::new();
        write_object(&mut out, &data, &JsonOptions::default());
        let reparsed: Json = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(reparsed, want);
    }

    #[test]
    fn binary_values_inline_or_by_reference() {
        let data = obj(vec![
            DataElement::new(Tag(0x0009, 0x1001), VR::OB, PrimitiveValue::from(vec![1u8, 2, 3])),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![0u8; 8])),
            DataElement::new(Tag(0x0009, 0x1002), VR::OB, PrimitiveValue::from(vec![7u8; 2000])),
        ]);
        let uri = |path: &[Tag]| Some(format!("bulk/{:04X}{:04X}", path[0].group(), path[0].element()));
        let with_uri = JsonOptions { inline_binary_max: 1024, bulk_data_uri: Some(&uri) };
        let got = to_json(&data, &with_uri);
        assert_eq!(got["00091001"], json!({"vr": "OB", "InlineBinary": "AQID"}));
        assert_eq!(got["7FE00010"], json!({"vr": "OW", "BulkDataURI": "bulk/7FE00010"}));
        assert_eq!(got["00091002"], json!({"vr": "OB", "BulkDataURI": "bulk/00091002"}));
        // Without a way to address them, large values and pixel data are left out.
        let got = to_json(&data, &JsonOptions::default());
        assert!(got.get("7FE00010").is_none() && got.get("00091002").is_none());
        assert!(got.get("00091001").is_some());
    }

    #[test]
    fn numbers_out_of_json_range_stay_exact() {
        let data = obj(vec![
            DataElement::new(Tag(0x0072, 0x0082), VR::UV, PrimitiveValue::from(u64::MAX)),
            DataElement::new(tags::SLICE_THICKNESS, VR::DS, PrimitiveValue::from("not-a-number")),
        ]);
        let got = to_json(&data, &JsonOptions::default());
        assert_eq!(got["00720082"]["Value"], json!([u64::MAX.to_string()]));
        assert_eq!(got["00180050"]["Value"], json!(["not-a-number"]));
    }
}
