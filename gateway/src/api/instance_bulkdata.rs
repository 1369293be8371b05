//! Study, series and instance resources asked for as `multipart/related;
//! type="application/octet-stream"`: the bulk data of each instance, the same as its Bulkdata
//! resource (PS3.18 Table 10.4.4-1, where this media type is required, and its Note 2). Each
//! part is one top-level bulk data element, uncompressed (PS3.18 §8.7.3.3), with the
//! BulkDataURI the metadata gives it as its Content-Location.

use axum::body::Body;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use dicom_core::header::Header;
use dicom_core::value::Value;
use dicom_core::VR;
use dicom_dictionary_std::tags;
use futures::{stream, StreamExt};
use pacs_adapter::RetrievedInstance;

use super::accept_ranges;
use crate::config::DataSetLimitsConfig;
use crate::error::ApiError;
use crate::locate::Instances;

/// Binary values larger than this are bulk data; the metadata carries smaller ones inline
/// (the same threshold as its DICOM JSON).
const INLINE_BINARY_MAX: usize = 1024;

/// Whether the client asks for the bulk data: no range that multipart/related;
/// type="application/dicom" satisfies, and one for type="application/octet-stream".
pub fn wanted(headers: &HeaderMap) -> bool {
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

/// The bulk data elements of one instance: (BulkDataURI, bytes), pixel data decoded to Explicit
/// VR Little Endian first when it is encapsulated.
/// Whether the pixel data of an instance is encapsulated (compressed).
pub fn encapsulated(object: &dicom_object::InMemDicomObject) -> bool {
    object.element(tags::PIXEL_DATA).is_ok_and(|e| matches!(e.value(), Value::PixelSequence(_)))
}

fn elements(
    instance: &RetrievedInstance,
    public_url: &str,
    limits: &DataSetLimitsConfig,
) -> Result<Vec<(String, Bytes)>, std::io::Error> {
    use dicom_pixeldata::Transcode;
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    let mut object = dicom_object::from_reader(&instance.part10[128..]).map_err(std::io::Error::other)?;
    if encapsulated(&object) {
        crate::dataset_limits::decoded_size(&object, limits).map_err(|e| {
            std::io::Error::other(format!("the pixel data cannot be decoded here ({e}); ask for application/dicom"))
        })?;
        object.transcode(&EXPLICIT_VR_LITTLE_ENDIAN.erased()).map_err(|e| {
            std::io::Error::other(format!(
                "the pixel data is stored as {} and cannot be decoded here ({e}); ask for application/dicom",
                instance.transfer_syntax_uid
            ))
        })?;
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

async fn parts(
    instance: RetrievedInstance,
    public_url: String,
    limits: DataSetLimitsConfig,
) -> Result<Vec<(String, Bytes)>, std::io::Error> {
    tokio::task::spawn_blocking(move || elements(&instance, &public_url, &limits))
        .await
        .map_err(std::io::Error::other)?
}

/// The response: the first instance's bulk data is made before it starts, so one that cannot
/// be decoded is a 406; a failure later aborts the body.
pub async fn respond(
    first: RetrievedInstance,
    rest: Instances,
    public_url: String,
    limits: DataSetLimitsConfig,
) -> Result<Response, ApiError> {
    let first = parts(first, public_url.clone(), limits).await.map_err(|e| ApiError::NotAcceptable(e.to_string()))?;
    let boundary = super::wado::boundary();
    let part_boundary = boundary.clone();
    let rest = rest.map(|item| item.map_err(std::io::Error::other)).then(move |item| {
        let public_url = public_url.clone();
        async move { parts(item?, public_url, limits).await }
    });
    let content_type = "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1";
    let body = stream::once(async move { Ok(first) })
        .chain(rest)
        .flat_map(move |item| {
            let chunks: Vec<Result<Bytes, std::io::Error>> = match item {
                Ok(elements) => elements
                    .into_iter()
                    .flat_map(|(uri, bytes)| {
                        crate::multipart::part_with_location(&part_boundary, content_type, &uri, bytes)
                    })
                    .map(Ok)
                    .collect(),
                Err(e) => {
                    tracing::warn!(error = %e, "bulk data failed after the response started; aborting it");
                    vec![Err(e)]
                }
            };
            stream::iter(chunks)
        })
        .chain(stream::once({
            let closing = crate::multipart::closing(&boundary);
            async move { Ok(closing) }
        }));
    let content_type = format!("multipart/related; type=\"application/octet-stream\"; boundary={boundary}");
    Ok(([(header::CONTENT_TYPE, content_type)], Body::from_stream(body)).into_response())
}
