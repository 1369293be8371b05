//! What a DICOMweb origin passed on answered (crate::core::retrieve::origin), as the response:
//! - metadata, written with the gateway's own URLs: a top-level BulkDataURI becomes the
//!   gateway's `.../bulkdata/{tag}` of the instance, which retrieves the value through the
//!   gateway (and its cache); one inside a sequence is left out, as in the metadata the gateway
//!   makes itself (it has no URL for it). A top-level RetrieveURL becomes the gateway's URL of
//!   the instance; every other value of VR UR (a Pixel Data Provider URL, a Retrieve URI, a
//!   RetrieveURL in a sequence) is left out, as it names where the origin keeps things: of VR UR
//!   as the origin says, or by the dictionary whatever it says. Nothing of the origin's address
//!   reaches the client through them. An attribute without one of DICOM's VRs is left out.
//! - frames and rendered images, relayed as they arrive with the origin's Content-Type (and
//!   `Content-Security-Policy: sandbox`, so that a browser runs nothing an origin sent); an
//!   answer that breaks off aborts the response, never closed as if complete.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicomweb_model::Uid;
use futures::{stream, StreamExt};
use serde_json::Value;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::core::Error;
use crate::http::multipart::OutgoingPart;
use crate::sites::dicomweb::{Relay, Relayed};

/// What of an instance to ask the origin: `suffix` below the instance's URL, with the
/// request's query string and Accept.
pub(crate) fn relay(suffix: String, query: Option<&str>, headers: &HeaderMap) -> Relay {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    Relay { suffix, query: query.map(str::to_owned), accept }
}

/// The origin's answer relayed.
pub(crate) fn relayed(relayed: Relayed) -> Result<Response, Error> {
    let content_type = HeaderValue::from_str(&relayed.content_type)
        .map_err(|_| Error::Internal("the origin's Content-Type is not a header value".into()))?;
    let body = relayed.body.map(|chunk| {
        chunk.map_err(|e| {
            tracing::warn!(error = %e, "a relayed answer failed after the response started; aborting it");
            std::io::Error::other(e.to_string())
        })
    });
    // Whatever the origin sent (a rendered report may be text/html), a browser shows it
    // sandboxed: no script of an origin runs as a page of the gateway's.
    let sandboxed = HeaderValue::from_static("sandbox");
    Ok(([(header::CONTENT_TYPE, content_type), (header::CONTENT_SECURITY_POLICY, sandboxed)], Body::from_stream(body))
        .into_response())
}

/// Metadata (an origin's DICOM JSON text, checked): DICOM JSON, or one PS3.19 part per object
/// when `xml`. One object is held parsed at a time.
pub(crate) fn metadata(json: &[u8], public_url: &str, xml: bool) -> Result<Response, Error> {
    let (mut written, mut parts) = (Vec::with_capacity(json.len() + json.len() / 8), Vec::new());
    written.push(b'[');
    dicomweb_model::dicom_json_read::each_in_array(json, |mut object| {
        with_own_urls(&mut object, public_url);
        if xml {
            // One that cannot be written so breaks the response off there, as it would be written.
            let xml = serde_json::to_vec(&object)
                .map_err(std::io::Error::other)
                .and_then(|json| super::metadata_xml::native_dicom_model(&json).map_err(std::io::Error::other));
            parts.push(xml.map(|xml| vec![OutgoingPart::new("application/dicom+xml", Bytes::from(xml))]));
            return Ok(());
        }
        if written.len() > 1 {
            written.push(b',');
        }
        serde_json::to_writer(&mut written, &object).map_err(|e| e.to_string())
    })
    .map_err(|e| Error::Internal(format!("the origin's metadata, checked, cannot be read again: {e}")))?;
    written.push(b']');
    if xml {
        return Ok(crate::http::multipart::response("application/dicom+xml", "metadata", stream::iter(parts)));
    }
    Ok(([(header::CONTENT_TYPE, "application/dicom+json")], written).into_response())
}

/// Rewrites one object's BulkDataURIs and URLs (see the module's documentation).
fn with_own_urls(object: &mut Value, public_url: &str) {
    let uid = |tag: &str| {
        let value = object.pointer(&format!("/{tag}/Value/0"))?.as_str()?;
        Uid::from_peer(value).ok().map(|uid| uid.as_str().to_owned())
    };
    let instance_url = match (uid("0020000D"), uid("0020000E"), uid("00080018")) {
        (Some(study), Some(series), Some(instance)) => {
            Some(format!("{public_url}/studies/{study}/series/{series}/instances/{instance}"))
        }
        _ => None,
    };
    let base = instance_url.as_ref().map(|url| format!("{url}/bulkdata"));
    let Some(attributes) = object.as_object_mut() else { return };
    attributes.retain(|key, attribute| {
        has_a_vr(attribute) && (!is_url(key, attribute) || (key == RETRIEVE_URL && instance_url.is_some()))
    });
    if let (Some(url), Some(retrieve_url)) = (&instance_url, attributes.get_mut(RETRIEVE_URL)) {
        *retrieve_url = serde_json::json!({ "vr": "UR", "Value": [url] });
    }
    for (key, attribute) in attributes.iter_mut() {
        let Some(attribute) = attribute.as_object_mut() else { continue };
        if attribute.contains_key("BulkDataURI") {
            let is_tag = key.len() == 8 && key.bytes().all(|b| b.is_ascii_hexdigit());
            match &base {
                Some(base) if is_tag => {
                    attribute.insert("BulkDataURI".into(), Value::String(format!("{base}/{}", key.to_uppercase())));
                }
                _ => {
                    attribute.remove("BulkDataURI");
                }
            }
        }
        if let Some(items) = items_of(attribute) {
            items.iter_mut().for_each(without_bulk_data_uris);
        }
    }
}

/// The values of an attribute that are objects: a sequence's items, a person name's groups,
/// or whatever an origin put there (each walked as an item).
fn items_of(attribute: &mut serde_json::Map<String, Value>) -> Option<&mut Vec<Value>> {
    attribute.get_mut("Value")?.as_array_mut()
}

/// RetrieveURL's key in DICOM JSON.
const RETRIEVE_URL: &str = "00081190";

/// Whether an attribute is a URL: of VR UR as the origin says, or by the dictionary whatever
/// VR the origin says.
fn is_url(key: &str, attribute: &Value) -> bool {
    let by_dictionary = || {
        let tag = u32::from_str_radix(key, 16).ok().filter(|_| key.len() == 8)?;
        let entry = StandardDataDictionary.by_tag(Tag((tag >> 16) as u16, tag as u16))?;
        Some(entry.vr().relaxed() == VR::UR)
    };
    attribute.get("vr").and_then(Value::as_str) == Some("UR") || by_dictionary().unwrap_or(false)
}

/// Whether an attribute names one of DICOM's VRs (PS3.18 F.2.3): what names none is not DICOM
/// JSON, and is left out rather than passed on.
fn has_a_vr(attribute: &Value) -> bool {
    attribute.get("vr").and_then(Value::as_str).is_some_and(|vr| vr.parse::<VR>().is_ok())
}

/// An item (of a sequence, or any object among an attribute's values) without any
/// BulkDataURI or URL, at any depth. What is not an attribute (a person name's "Alphabetic"
/// text) stays; an object without a VR does not.
fn without_bulk_data_uris(item: &mut Value) {
    let Some(attributes) = item.as_object_mut() else { return };
    attributes.retain(|key, attribute| !is_url(key, attribute) && (has_a_vr(attribute) || !attribute.is_object()));
    for attribute in attributes.values_mut().filter_map(Value::as_object_mut) {
        attribute.remove("BulkDataURI");
        if let Some(items) = items_of(attribute) {
            items.iter_mut().for_each(without_bulk_data_uris);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bulk_data_uris_become_the_gateways_and_nested_ones_are_left_out() {
        let mut object = json!({
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
            "00080018": {"vr": "UI", "Value": ["1.2.3.4.5"]},
            "7fe00010": {"vr": "OW", "BulkDataURI": "https://edge.hospital/dicom-web/studies/1.2.3/bulk/7fe00010"},
            "00540016": {"vr": "SQ", "Value": [
                {"00280006": {"vr": "OB", "BulkDataURI": "https://edge.hospital/nested"},
                 "00400275": {"vr": "SQ", "Value": [{"00080100": {"vr": "OB", "BulkDataURI": "https://edge.hospital/deeper"}}]}}
            ]},
            "../../x": {"vr": "OB", "BulkDataURI": "https://edge.hospital/odd"},
            "00081190": {"vr": "UR", "Value": ["https://edge.hospital/dicom-web/studies/1.2.3"]},
            "00287FE0": {"vr": "UR", "Value": ["https://jpip.edge.hospital/1.2.3.4.5"]},
            "00081115": {"vr": "SQ", "Value": [{"00081190": {"vr": "UR", "Value": ["https://edge.hospital/s"]}}]}
        });
        with_own_urls(&mut object, "http://gw/dicom-web");
        assert_eq!(
            object["7fe00010"]["BulkDataURI"],
            "http://gw/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5/bulkdata/7FE00010"
        );
        let text = object.to_string();
        assert!(!text.contains("edge.hospital"), "{text}");
        assert_eq!(object["00540016"]["Value"][0]["00280006"], json!({"vr": "OB"}));
        assert_eq!(
            object["00081190"]["Value"][0],
            "http://gw/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5"
        );
        assert!(object.get("00287FE0").is_none() && object["00081115"]["Value"][0].get("00081190").is_none());
    }

    #[tokio::test]
    async fn metadata_is_written_object_by_object_with_the_gateways_urls() {
        let object = |instance: &str| {
            json!({
                "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
                "0020000E": {"vr": "UI", "Value": ["1.2.3.4"]},
                "00080018": {"vr": "UI", "Value": [instance]},
                "00081190": {"vr": "UR", "Value": ["https://edge.hospital/x"]}
            })
        };
        let text = serde_json::to_vec(&json!([object("1.5"), object("1.6")])).expect("json");
        let response = metadata(&text, "http://gw", false).expect("written");
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await.expect("body");
        let written: Value = serde_json::from_slice(&body).expect("one JSON array");
        assert_eq!(written.as_array().map(Vec::len), Some(2));
        assert_eq!(written[1]["00081190"]["Value"][0], "http://gw/studies/1.2.3/series/1.2.3.4/instances/1.6");
        let none = metadata(b"[]", "http://gw", false).expect("written");
        assert_eq!(&axum::body::to_bytes(none.into_body(), usize::MAX).await.expect("body")[..], b"[]");
    }

    #[test]
    fn a_url_under_another_vr_and_an_attribute_without_a_vr_are_left_out() {
        let mut object = json!({
            "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00287FE0": {"vr": "LO", "Value": ["https://jpip.edge.hospital/1"]},
            "00287fe0": {"vr": "UT", "Value": ["https://jpip.edge.hospital/2"]},
            "00081115": {"vr": "SQ", "Value": [{"0040E010": {"vr": "ST", "Value": ["https://edge.hospital/3"]}}]},
            "00100020": {"vr": "\"><x>", "Value": ["https://edge.hospital/4"]},
            "00100030": {"Value": ["19700101"]},
            "00080060": {"vr": "CS", "Value": ["CT"]}
        });
        with_own_urls(&mut object, "http://gw/dicom-web");
        assert!(!object.to_string().contains("edge.hospital"), "{object}");
        assert_eq!(object["00080060"]["Value"][0], "CT", "what is neither stays");
        assert!(object.get("00100030").is_none(), "no vr, no attribute");
        let mut named = json!({
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "PX1"}]},
            "00081115": {"vr": "SQ", "Value": [{"0040A123": {"vr": "PN", "Value": [{"Alphabetic": "PX2"}]}}]}
        });
        let before = named.clone();
        with_own_urls(&mut named, "http://gw/dicom-web");
        assert_eq!(named, before, "a person name's value is an object, not an item");
    }

    #[test]
    fn an_object_without_its_uids_keeps_no_bulk_data_uri() {
        let mut object = json!({"7FE00010": {"vr": "OW", "BulkDataURI": "https://edge.hospital/x"}});
        with_own_urls(&mut object, "http://gw/dicom-web");
        assert_eq!(object["7FE00010"], json!({"vr": "OW"}));
    }
}
