//! Study, series and instance resources asked for as `multipart/related;
//! type="application/octet-stream"`: the bulk data of each instance, the same as its Bulkdata
//! resource (PS3.18 Table 10.4.4-1, where this media type is required, and its Note 2). Each
//! part is one top-level bulk data element, uncompressed (PS3.18 §8.7.3.3), with the
//! BulkDataURI the metadata gives it as its Content-Location.

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use futures::{stream, StreamExt};
use pacs_adapter::RetrievedInstance;

use super::accept_ranges;
use crate::config::DataSetLimitsConfig;
use crate::core::pixels::decode_budget::DecodeBudget;
use crate::core::retrieve::Instances;
use crate::core::Error;
use crate::http::multipart::OutgoingPart;

/// Binary values larger than this are bulk data; the metadata carries smaller ones inline
/// (the same threshold as its DICOM JSON).
const INLINE_BINARY_MAX: usize = 1024;

/// Whether the client asks for the bulk data: no range that multipart/related;
/// type="application/dicom" satisfies, and one for type="application/octet-stream".
pub(crate) fn wanted(headers: &HeaderMap) -> bool {
    let ranges = accept_ranges(headers);
    let dicom = ranges.is_empty()
        || ranges.iter().any(|r| match r.media_type.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => r.parameter("type").is_none_or(|t| t.eq_ignore_ascii_case("application/dicom")),
            _ => false,
        });
    !dicom
        && ranges.iter().any(|r| {
            r.media_type == "multipart/related"
                && r.parameter("type").is_some_and(|t| t.eq_ignore_ascii_case("application/octet-stream"))
        })
}

/// Whether the pixel data of an instance is encapsulated (compressed).
pub(crate) fn encapsulated(object: &dicom_object::InMemDicomObject) -> bool {
    object.get(tags::PIXEL_DATA).is_some_and(|e| matches!(e.value(), Value::PixelSequence(_)))
}

/// The bulk data elements of a parsed instance: (BulkDataURI, bytes), its pixel data decoded
/// to Explicit VR Little Endian first when it is encapsulated.
fn elements(
    mut object: FileDicomObject<InMemDicomObject>,
    instance: &RetrievedInstance,
    public_url: &str,
) -> Result<Vec<(String, Bytes)>, std::io::Error> {
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    if encapsulated(&object) {
        crate::core::pixels::decode_into(&mut object, EXPLICIT_VR_LITTLE_ENDIAN.uid())
            .map_err(|e| std::io::Error::other(format!("{e}; ask for application/dicom")))?;
    }
    let study = super::text_of(&object, tags::STUDY_INSTANCE_UID).unwrap_or_default();
    let series = super::text_of(&object, tags::SERIES_INSTANCE_UID).unwrap_or_default();
    let base = format!("{public_url}/studies/{study}/series/{series}/instances/{}/bulkdata", instance.sop_instance_uid);
    let mut out = Vec::new();
    for element in object.iter() {
        let binary = matches!(element.vr(), VR::OB | VR::OD | VR::OF | VR::OL | VR::OV | VR::OW | VR::UN);
        let Value::Primitive(value) = element.value() else { continue };
        let bytes = value.to_bytes();
        let tag = element.tag();
        if binary && (tag == tags::PIXEL_DATA || bytes.len() > INLINE_BINARY_MAX) {
            out.push((format!("{base}/{:04X}{:04X}", tag.group(), tag.element()), Bytes::from(bytes.into_owned())));
        }
    }
    Ok(out)
}

/// One instance's bulk data: parsed and bounded on a blocking thread, decoded within the
/// gateway's decode budget.
async fn parts(
    instance: RetrievedInstance,
    public_url: String,
    limits: DataSetLimitsConfig,
    budget: Arc<DecodeBudget>,
) -> Result<Vec<(String, Bytes)>, std::io::Error> {
    budget
        .decode_instance(instance, limits, "application/dicom", move |object, instance| {
            elements(object, &instance, &public_url)
        })
        .await
}

/// The response: the first instance's bulk data is made before it starts, so one that cannot
/// be decoded is a 406; a failure later aborts the body.
pub(crate) async fn respond(
    first: RetrievedInstance,
    rest: Instances,
    public_url: String,
    limits: DataSetLimitsConfig,
    budget: Arc<DecodeBudget>,
) -> Result<Response, Error> {
    let first = parts(first, public_url.clone(), limits, budget.clone())
        .await
        .map_err(|e| Error::NotAcceptable(e.to_string()))?;
    let rest = rest.map(|item| item.map_err(std::io::Error::other)).then(move |item| {
        let (public_url, budget) = (public_url.clone(), budget.clone());
        async move { parts(item?, public_url, limits, budget).await }
    });
    let content_type = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1";
    let body = stream::once(async move { Ok(first) }).chain(rest).map(move |item| {
        item.map(|elements| {
            elements
                .into_iter()
                .map(|(uri, bytes)| OutgoingPart {
                    content_type: content_type.to_owned(),
                    location: Some(uri),
                    content: bytes,
                })
                .collect()
        })
    });
    Ok(crate::http::multipart::response("application/octet-stream", "bulk data", body))
}
