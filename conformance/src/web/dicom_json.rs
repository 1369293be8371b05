//! Reading DICOM JSON (PS3.18 Annex F) answers: an array of data sets keyed by eight hex digits,
//! each attribute with its `vr` and `Value`, `BulkDataURI` or `InlineBinary`.

use serde_json::Value;

/// One data set of a DICOM JSON answer.
pub type Dataset = serde_json::Map<String, Value>;

/// The data sets of a JSON answer, or why it is not one.
pub fn datasets(body: &[u8]) -> Result<Vec<Dataset>, String> {
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Array(items) = value else { return Err("not a JSON array".into()) };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(map) => Ok(map),
            _ => Err(format!("item {i} is not an object")),
        })
        .collect()
}

/// Whether the attribute is present (with or without a value).
pub fn has(dataset: &serde_json::Map<String, Value>, tag: &str) -> bool {
    dataset.contains_key(tag)
}

/// The attribute's values as text: strings as they are, numbers printed, person names by
/// their alphabetic group.
pub fn values(dataset: &serde_json::Map<String, Value>, tag: &str) -> Vec<String> {
    let Some(Value::Array(values)) = dataset.get(tag).and_then(|a| a.get("Value")) else { return Vec::new() };
    values
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(o) => o.get("Alphabetic").and_then(Value::as_str).map(str::to_owned),
            _ => None,
        })
        .collect()
}

pub fn first(dataset: &serde_json::Map<String, Value>, tag: &str) -> Option<String> {
    values(dataset, tag).into_iter().next()
}

/// The items of a sequence attribute.
pub fn items<'a>(dataset: &'a serde_json::Map<String, Value>, tag: &str) -> Vec<&'a serde_json::Map<String, Value>> {
    match dataset.get(tag).and_then(|a| a.get("Value")) {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
        _ => Vec::new(),
    }
}

/// A member other than `Value` of the attribute (`BulkDataURI`, `InlineBinary`).
pub fn member<'a>(dataset: &'a serde_json::Map<String, Value>, tag: &str, name: &str) -> Option<&'a str> {
    dataset.get(tag).and_then(|a| a.get(name)).and_then(Value::as_str)
}

/// Tags as eight upper-case hex digits, from a keyword this tool uses or from hex.
pub fn tag(name: &str) -> Option<String> {
    if name.len() == 8 && name.chars().all(|c| c.is_ascii_hexdigit()) {
        return Some(name.to_ascii_uppercase());
    }
    let tag = dicom_dictionary_std::StandardDataDictionary.by_name(name)?.tag.inner();
    Some(format!("{:04X}{:04X}", tag.group(), tag.element()))
}

use dicom_core::dictionary::DataDictionary;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_values_of_each_kind() {
        let body = br#"[{"00100010":{"vr":"PN","Value":[{"Alphabetic":"A^B"}]},"00201208":{"vr":"IS","Value":[4]},
            "00080061":{"vr":"CS","Value":["CT","OT"]},"00080090":{"vr":"PN"}}]"#;
        let sets = datasets(body).expect("valid");
        assert_eq!(first(&sets[0], "00100010").as_deref(), Some("A^B"));
        assert_eq!(first(&sets[0], "00201208").as_deref(), Some("4"));
        assert_eq!(values(&sets[0], "00080061"), vec!["CT", "OT"]);
        assert!(has(&sets[0], "00080090") && values(&sets[0], "00080090").is_empty());
        assert!(datasets(b"{}").is_err());
        assert_eq!(tag("StudyInstanceUID").as_deref(), Some("0020000D"));
        assert_eq!(tag("0020000d").as_deref(), Some("0020000D"));
    }
}
