//! Frames (PS3.18 §10.4.1.1.4, `/frames/{list}`) and bulk data (`/bulkdata/{tag}`) of one
//! instance: retrieved from a site holding it, parsed once, and cut into the parts asked for. Native
//! pixel data comes out as application/octet-stream; encapsulated frames in their compressed
//! form with the transfer syntax named when the client accepts it, and otherwise decoded to
//! Explicit VR Little Endian, the default of §8.7.3.3 (406 when the gateway cannot decode).

use std::sync::Arc;

use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use dicom_core::value::Value;
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

use super::{accept_ranges, text_of};
use crate::core::access::Access;
use crate::core::pixels::decode_budget::DecodeBudget;
use crate::core::Error;
use crate::http::multipart::OutgoingPart;
use crate::state::Gateway;

/// One instance, parsed, and the transfer syntax it came in.
struct Instance {
    object: FileDicomObject<InMemDicomObject>,
    transfer_syntax: String,
    /// `[dataset_limits]`.
    limits: crate::config::DataSetLimitsConfig,
}

async fn retrieve_instance(
    gw: &Arc<Gateway>,
    access: &Access,
    study: &str,
    series: &str,
    instance: &str,
) -> Result<Instance, Error> {
    let target = super::wado::target(study, Some(series), Some(instance))?;
    let crate::core::retrieve::Retrieval { first, rest, .. } =
        crate::core::retrieve::retrieve(&gw.retriever, access, target).await?;
    drop(rest);
    let transfer_syntax = first.transfer_syntax_uid.as_str().to_owned();
    let limits = gw.config.dataset_limits;
    let syntax = transfer_syntax.clone();
    let object = tokio::task::spawn_blocking(move || {
        crate::core::dataset_limits::check_encoded(first.data_set(), &syntax, &limits)?;
        dicom_object::from_reader(&first.part10[128..])
            .map_err(|e| Error::Pacs(pacs_adapter::DimseError::InvalidInstance(e.to_string())))
    })
    .await
    .map_err(|e| Error::BadRequest(format!("parsing failed: {e}")))??;
    Ok(Instance { object, transfer_syntax, limits })
}

/// The instance with its pixel data decoded to Explicit VR Little Endian (within the gateway's
/// decode budget), or 406 naming what it is stored as when the gateway cannot decode it.
async fn decoded(instance: Instance, media_type: &str, budget: &DecodeBudget) -> Result<Instance, Error> {
    use dicom_transfer_syntax_registry::entries::EXPLICIT_VR_LITTLE_ENDIAN;
    let stored = instance.transfer_syntax.clone();
    let size = crate::core::dataset_limits::decoded_size(&instance.object, &instance.limits)
        .map_err(|e| Error::NotAcceptable(format!("the frames cannot be decoded here: {e}; ask for {media_type}")))?;
    let mut object = instance.object;
    budget
        .decode(size, move || {
            crate::core::pixels::decode_into(&mut object, EXPLICIT_VR_LITTLE_ENDIAN.uid()).map(|()| object)
        })
        .await
        .map_err(|e| Error::Internal(format!("decoding failed: {e}")))?
        .map(|object| Instance {
            object,
            transfer_syntax: EXPLICIT_VR_LITTLE_ENDIAN.uid().to_owned(),
            limits: instance.limits,
        })
        .map_err(|e| {
            Error::NotAcceptable(format!(
                "the frames are available as {media_type} (transfer syntax {stored}): {e}; \
                 ask for that media type or transfer-syntax=*"
            ))
        })
}

/// The media type of an encapsulated frame of a transfer syntax (PS3.18 Table 8.7.3-2).
fn frame_media_type(transfer_syntax: &str) -> &'static str {
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" | "1.2.840.10008.1.2.4.57" | "1.2.840.10008.1.2.4.70" => {
            "image/jpeg"
        }
        "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81" => "image/jls",
        "1.2.840.10008.1.2.4.90" | "1.2.840.10008.1.2.4.91" => "image/jp2",
        "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203" => "image/jphc",
        "1.2.840.10008.1.2.5" => "image/dicom-rle",
        _ => "application/octet-stream",
    }
}

/// The frame numbers of a `{frames}` path segment: integers from 1, none twice (PS3.18
/// §8.1.5 asks for non-duplicate numbers; a number repeated would make one request answer the
/// same frame without bound), at most [`MAX_FRAMES_PER_REQUEST`].
fn parse_frame_list(list: &str) -> Result<Vec<usize>, Error> {
    let mut wanted = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for n in list.split(',') {
        let n = match n.trim().parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => {
                let shown: String = list.chars().take(40).collect();
                return Err(Error::BadRequest(format!("frame list {shown:?}: frame numbers are integers from 1")));
            }
        };
        if !seen.insert(n) {
            return Err(Error::BadRequest(format!("frame list: frame {n} is asked for twice")));
        }
        if wanted.len() == MAX_FRAMES_PER_REQUEST {
            return Err(Error::BadRequest(format!(
                "frame list: more than {MAX_FRAMES_PER_REQUEST} frames in one request"
            )));
        }
        wanted.push(n);
    }
    Ok(wanted)
}

/// The most frames one request may name. With no number twice and none past the instance's
/// last frame, a request answers at most the instance's pixel data once over; this bound keeps
/// the list itself small too.
pub(crate) const MAX_FRAMES_PER_REQUEST: usize = 10_000;

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<usize> {
    obj.get(tag).and_then(|e| e.to_int::<u32>().ok()).map(|n| n as usize)
}

/// The bytes of each requested frame, and whether they are encapsulated.
fn frames_of(instance: &Instance, wanted: &[usize]) -> Result<(Vec<Bytes>, bool), Error> {
    let obj = &instance.object;
    let pixel_data =
        obj.element(tags::PIXEL_DATA).map_err(|_| Error::NotFound("the instance has no pixel data".into()))?;
    let frames = number(obj, tags::NUMBER_OF_FRAMES)
        .or_else(|| text_of(obj, tags::NUMBER_OF_FRAMES).and_then(|t| t.parse().ok()))
        .unwrap_or(1);
    if let Some(&bad) = wanted.iter().find(|&&n| n > frames) {
        return Err(Error::NotFound(format!("frame {bad} does not exist: the instance has {frames}")));
    }
    match pixel_data.value() {
        Value::PixelSequence(sequence) => {
            let fragments = sequence.fragments();
            let offsets = sequence.offset_table();
            let frame = |n: usize| -> Result<Bytes, Error> {
                if fragments.len() == frames {
                    return Ok(Bytes::copy_from_slice(&fragments[n - 1]));
                }
                if frames == 1 {
                    return Ok(Bytes::from(fragments.concat()));
                }
                if offsets.len() == frames {
                    // Basic Offset Table: byte offsets of each frame's first fragment item,
                    // counted from the first fragment item (8-byte item headers included).
                    let mut position = 0u64;
                    let mut out = Vec::new();
                    let start = u64::from(offsets[n - 1]);
                    let end = offsets.get(n).map(|o| u64::from(*o)).unwrap_or(u64::MAX);
                    for fragment in fragments {
                        if position >= start && position < end {
                            out.extend_from_slice(fragment);
                        }
                        position += 8 + fragment.len() as u64;
                    }
                    return Ok(Bytes::from(out));
                }
                Err(Error::NotAcceptable(
                    "the frames of this instance cannot be told apart (several fragments per frame and no offset table)".into(),
                ))
            };
            Ok((wanted.iter().map(|&n| frame(n)).collect::<Result<_, _>>()?, true))
        }
        Value::Primitive(value) => {
            let bytes = value.to_bytes();
            let rows = number(obj, tags::ROWS).unwrap_or(0);
            let columns = number(obj, tags::COLUMNS).unwrap_or(0);
            let samples = number(obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1);
            let bits = number(obj, tags::BITS_ALLOCATED).unwrap_or(8);
            // Checked: the attributes come from a PACS and may be anything.
            let frame_size = crate::core::dataset_limits::frame_size(
                rows as u64,
                columns as u64,
                samples as u64,
                bits as u64,
                instance.limits.max_frame_size,
            )? as usize;
            if frame_size == 0 || !bits.is_multiple_of(8) {
                return Err(Error::NotAcceptable("frames of this pixel data layout cannot be cut out".into()));
            }
            let frame = |n: usize| -> Result<Bytes, Error> {
                let missing = || Error::NotFound(format!("frame {n} is missing from the pixel data"));
                let start = (n - 1).checked_mul(frame_size).ok_or_else(missing)?;
                let end = start.checked_add(frame_size).ok_or_else(missing)?;
                bytes.get(start..end).map(Bytes::copy_from_slice).ok_or_else(missing)
            };
            Ok((wanted.iter().map(|&n| frame(n)).collect::<Result<_, _>>()?, false))
        }
        Value::Sequence(_) => Err(Error::NotFound("the pixel data is malformed".into())),
    }
}

fn multipart(parts: Vec<(String, Bytes)>) -> Response {
    let parts = parts.into_iter().map(|(content_type, bytes)| OutgoingPart::new(content_type, bytes)).collect();
    crate::http::multipart::response("application/octet-stream", "frames", futures::stream::iter([Ok(parts)]))
}

/// Whether the client takes frames in `media_type` (with `transfer-syntax=*` meaning as stored).
fn acceptable(headers: &HeaderMap, media_type: &str, encapsulated: bool) -> bool {
    let ranges = accept_ranges(headers);
    if ranges.is_empty() {
        return !encapsulated;
    }
    ranges.iter().any(|r| {
        let part_type = r.parameter("type").unwrap_or("application/octet-stream");
        let any_syntax = r.parameter("transfer-syntax") == Some("*");
        match r.media_type.as_str() {
            "*/*" | "multipart/*" => true,
            "multipart/related" => {
                // A part type may be a range itself: dicomweb-client asks `type="*/*"` by default.
                let part_range = part_type
                    .strip_suffix("/*")
                    .is_some_and(|major| major == "*" || media_type.split('/').next() == Some(major));
                part_type == media_type
                    || part_range
                    || (any_syntax && (!encapsulated || part_type == "application/octet-stream"))
            }
            _ => false,
        }
    })
}

pub(crate) async fn frames(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path((study, series, instance, list)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let wanted = parse_frame_list(&list)?;
    // A DICOMweb origin passed on is asked for the frames itself, unless the instance is here.
    let named = super::wado::target(&study, Some(&series), Some(&instance))?;
    let frames = wanted.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(",");
    let asked = super::from_origin::relay(format!("/frames/{frames}"), None, &headers);
    if let Some(relayed) = crate::core::retrieve::origin_relay(&gw.retriever, &access, &named, &asked).await? {
        return super::from_origin::relayed(relayed);
    }
    let mut instance = retrieve_instance(&gw, &access, &study, &series, &instance).await?;
    let (mut frames, mut encapsulated) = frames_of(&instance, &wanted)?;
    let mut media_type =
        if encapsulated { frame_media_type(&instance.transfer_syntax) } else { "application/octet-stream" };
    if encapsulated
        && !acceptable(&headers, media_type, true)
        && acceptable(&headers, "application/octet-stream", false)
    {
        instance = decoded(instance, media_type, &gw.decode_budget).await?;
        (frames, encapsulated) = frames_of(&instance, &wanted)?;
        media_type = "application/octet-stream";
    }
    if !acceptable(&headers, media_type, encapsulated) {
        return Err(Error::NotAcceptable(format!(
            "the frames are available as {media_type} (transfer syntax {}); the gateway does not re-encode pixel data",
            instance.transfer_syntax
        )));
    }
    let content_type = if encapsulated {
        format!("{media_type}; transfer-syntax={}", instance.transfer_syntax)
    } else {
        "application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1".to_owned()
    };
    Ok(multipart(frames.into_iter().map(|f| (content_type.clone(), f)).collect()))
}

pub(crate) async fn bulkdata(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path((study, series, instance, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let tag = (tag.len() == 8)
        .then(|| Some(Tag(u16::from_str_radix(&tag[..4], 16).ok()?, u16::from_str_radix(&tag[4..], 16).ok()?)))
        .flatten()
        .ok_or_else(|| Error::BadRequest(format!("bulk data tag {tag:?} is not 8 hexadecimal digits")))?;
    super::accepts(&headers, &["multipart/related", "application/octet-stream"])?;
    let mut instance = retrieve_instance(&gw, &access, &study, &series, &instance).await?;
    let missing = || Error::NotFound(format!("the instance has no {tag}"));
    let encapsulated = matches!(instance.object.element(tag).map_err(|_| missing())?.value(), Value::PixelSequence(_));
    let media_type = frame_media_type(&instance.transfer_syntax);
    // Encapsulated pixel data as stored when the client takes its media type (or any transfer
    // syntax), else decoded: application/octet-stream alone means Explicit VR Little Endian.
    if encapsulated && !acceptable(&headers, media_type, true) {
        if !acceptable(&headers, "application/octet-stream", false) {
            return Err(Error::NotAcceptable(format!(
                "the pixel data is available as {media_type} (transfer syntax {}) or decoded as application/octet-stream",
                instance.transfer_syntax
            )));
        }
        instance = decoded(instance, media_type, &gw.decode_budget).await?;
    }
    let element = instance.object.element(tag).map_err(|_| missing())?;
    let (bytes, content_type) = match element.value() {
        Value::Primitive(value) => (Bytes::from(value.to_bytes().into_owned()), "application/octet-stream".to_owned()),
        Value::PixelSequence(sequence) => (
            Bytes::from(sequence.fragments().concat()),
            format!("{media_type}; transfer-syntax={}", instance.transfer_syntax),
        ),
        Value::Sequence(_) => return Err(Error::BadRequest(format!("{tag} is a sequence, not bulk data"))),
    };
    Ok(multipart(vec![(content_type, bytes)]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_part_type_may_be_a_range() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(axum::http::header::ACCEPT, value.parse().expect("header"));
            headers
        };
        // dicomweb-client's default for frames.
        let any = accept("multipart/related; type=\"*/*\"");
        assert!(acceptable(&any, "application/octet-stream", false) && acceptable(&any, "image/jpeg", true));
        let images = accept("multipart/related; type=\"image/*\"");
        assert!(acceptable(&images, "image/jp2", true) && !acceptable(&images, "application/octet-stream", false));
        assert!(!acceptable(&accept("multipart/related; type=\"image/jpeg\""), "image/jp2", true));
    }

    #[test]
    fn a_frame_list_names_each_frame_once_within_the_bound() {
        assert_eq!(parse_frame_list("3,1,2").expect("valid"), [3, 1, 2]);
        for bad in ["0", "1,a", "", "1,,2", "-1"] {
            assert!(matches!(parse_frame_list(bad), Err(Error::BadRequest(_))), "{bad}");
        }
        let repeated = parse_frame_list(&["1"; 2000].join(",")).expect_err("duplicates");
        assert!(matches!(&repeated, Error::BadRequest(m) if m.contains("frame 1 is asked for twice")), "{repeated:?}");
        let many: Vec<String> = (1..=MAX_FRAMES_PER_REQUEST + 1).map(|n| n.to_string()).collect();
        assert!(matches!(parse_frame_list(&many.join(",")), Err(Error::BadRequest(m)) if m.contains("more than")));
        assert_eq!(
            parse_frame_list(&many[..MAX_FRAMES_PER_REQUEST].join(",")).expect("at the bound").len(),
            MAX_FRAMES_PER_REQUEST
        );
    }
}
