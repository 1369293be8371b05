//! Rendered and thumbnail resources (PS3.18 §10.4.1.1.3, §10.4.1.1.5): an instance (or one
//! frame of it) decoded, windowed, scaled into the viewport and written as JPEG or PNG.
//! Thumbnails of a series or study show the middle instance of its first series. A DICOMweb
//! origin passed on is asked for the rendered image or the thumbnail first (relayed as it
//! answers); the instance is retrieved and rendered here only when it has none.
//!
//! Pixel data the gateway cannot decode (a broken codestream) gets a 501
//! saying so: never a wrong picture.

use std::io::Cursor;
use std::sync::Arc;

use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_pixeldata::image::{imageops::FilterType, DynamicImage, ImageFormat};
use dicom_pixeldata::{ConvertOptions, PixelDecoder, VoiLutFunction, VoiLutOption, WindowLevel};
use pacs_adapter::RetrieveTarget;

use super::{accept_ranges, TargetPath};
use crate::config::DataSetLimitsConfig;
use crate::core::access::Access;
use crate::core::pixels::decode_budget::DecodeBudget;
use crate::core::Error;
use crate::http::multipart::OutgoingPart;
use crate::state::Gateway;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jpeg,
    Png,
}

/// The source region of `viewport=vw,vh,sx,sy,sw,sh` (PS3.18 §8.3.5.1.3): its top left corner
/// and size in image pixels (an empty size: to the image's edge); a negative width or height
/// takes the region to the left of or above the corner, flipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Region {
    sx: u32,
    sy: u32,
    sw: Option<i64>,
    sh: Option<i64>,
}

#[derive(Debug, Clone)]
struct Rendering {
    format: Format,
    window: Option<(WindowLevel, VoiLutFunction)>,
    viewport: Option<(u32, u32)>,
    region: Option<Region>,
    quality: u8,
}

/// One side of a region: its start and length along an axis of `extent` pixels, and whether it
/// is flipped; `None` when it leaves the image.
fn span(start: u32, size: Option<i64>, extent: u32) -> Option<(u32, u32, bool)> {
    let size = size.unwrap_or(i64::from(extent) - i64::from(start));
    let (from, length) = if size < 0 { (i64::from(start) + size, -size) } else { (i64::from(start), size) };
    (length > 0 && from >= 0 && from + length <= i64::from(extent)).then_some((from as u32, length as u32, size < 0))
}

/// The source region cut out of the rendered image (400 when it leaves the image).
fn cut(image: DynamicImage, region: Region) -> Result<DynamicImage, Error> {
    let (Some((x, width, flip_x)), Some((y, height, flip_y))) =
        (span(region.sx, region.sw, image.width()), span(region.sy, region.sh, image.height()))
    else {
        return Err(Error::BadRequest(format!(
            "query parameter \"viewport\": the source region lies outside the {}x{} image",
            image.width(),
            image.height()
        )));
    };
    let mut image = image.crop_imm(x, y, width, height);
    if flip_x {
        image = image.fliph();
    }
    if flip_y {
        image = image.flipv();
    }
    Ok(image)
}

fn negotiate(headers: &HeaderMap) -> Result<Format, Error> {
    let ranges = accept_ranges(headers);
    if ranges.is_empty() {
        return Ok(Format::Jpeg);
    }
    for range in &ranges {
        // A rendered series or study is multipart/related of images; its type names them.
        let media_type = match range.media_type.as_str() {
            "multipart/related" => range.parameter("type").unwrap_or("image/jpeg").to_ascii_lowercase(),
            other => other.to_owned(),
        };
        match media_type.as_str() {
            "image/jpeg" | "image/*" | "*/*" => return Ok(Format::Jpeg),
            "image/png" => return Ok(Format::Png),
            _ => {}
        }
    }
    Err(Error::NotAcceptable("rendered images are available as image/jpeg or image/png".into()))
}

fn parse(query: Option<&str>, format: Format, default_viewport: Option<(u32, u32)>) -> Result<Rendering, Error> {
    let bad = |name: &str, why: &str| Error::BadRequest(format!("query parameter {name:?}: {why}"));
    let mut rendering = Rendering { format, window: None, viewport: default_viewport, region: None, quality: 90 };
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "window" => {
                let parts: Vec<&str> = value.split(',').collect();
                let number = |s: &str| s.trim().parse::<f64>().ok();
                let (Some(center), Some(width)) =
                    (parts.first().and_then(|s| number(s)), parts.get(1).and_then(|s| number(s)))
                else {
                    return Err(bad("window", "must be center,width[,function]"));
                };
                if width <= 0.0 {
                    return Err(bad("window", "the width must be positive"));
                }
                let function = match parts.get(2).map(|f| f.trim().to_ascii_lowercase()) {
                    None => VoiLutFunction::Linear,
                    Some(f) if f == "linear" => VoiLutFunction::Linear,
                    Some(f) if f == "linear-exact" => VoiLutFunction::LinearExact,
                    Some(f) if f == "sigmoid" => VoiLutFunction::Sigmoid,
                    Some(_) => return Err(bad("window", "the function must be linear, linear-exact or sigmoid")),
                };
                rendering.window = Some((WindowLevel { center, width }, function));
            }
            "viewport" => {
                let usage = "must be vw,vh[,sx,sy,sw,sh]: a size from 1 to 8192, then a source region";
                let parts: Vec<&str> = value.split(',').map(str::trim).collect();
                let size = |p: &str| p.parse::<u32>().ok().filter(|n| (1..=8192).contains(n));
                let (Some(w), Some(h)) = (parts.first().and_then(|p| size(p)), parts.get(1).and_then(|p| size(p)))
                else {
                    return Err(bad("viewport", usage));
                };
                rendering.viewport = Some((w, h));
                match parts.len() {
                    2 => {}
                    6 => {
                        // Empty parts take their defaults: the corner 0,0, the size to the edge.
                        let corner = |p: &str| if p.is_empty() { Some(0) } else { p.parse::<u32>().ok() };
                        let extent = |p: &str| {
                            if p.is_empty() {
                                Some(None)
                            } else {
                                p.parse::<i64>().ok().filter(|n| *n != 0).map(Some)
                            }
                        };
                        let (Some(sx), Some(sy), Some(sw), Some(sh)) =
                            (corner(parts[2]), corner(parts[3]), extent(parts[4]), extent(parts[5]))
                        else {
                            return Err(bad("viewport", usage));
                        };
                        rendering.region = Some(Region { sx, sy, sw, sh });
                    }
                    _ => return Err(bad("viewport", usage)),
                }
            }
            "quality" => {
                rendering.quality = value
                    .parse::<u8>()
                    .ok()
                    .filter(|q| (1..=100).contains(q))
                    .ok_or_else(|| bad("quality", "must be 1 to 100"))?;
            }
            other => return Err(bad(other, "not a parameter of rendered resources")),
        }
    }
    Ok(rendering)
}

/// The instance parsed for rendering, within `[dataset_limits]`, and how many bytes rendering
/// it decodes: one frame, or every frame when the gateway's own decoder must decode it whole.
fn parsed(
    instance: &pacs_adapter::RetrievedInstance,
    limits: &DataSetLimitsConfig,
) -> Result<(FileDicomObject<InMemDicomObject>, u64), Error> {
    crate::core::dataset_limits::check_encoded(instance.data_set(), instance.transfer_syntax_uid.as_str(), limits)?;
    let mut object = dicom_object::from_reader(&instance.part10[128..])
        .map_err(|e| Error::Pacs(pacs_adapter::DimseError::InvalidInstance(e.to_string())))?;
    // A Number of Frames present without a number (pydicom's single-frame RT dose) means one
    // frame; the decoder refuses the instance otherwise.
    crate::core::pixels::one_frame_when_unnumbered(&mut object);
    let number = |tag, default: u64| object.get(tag).and_then(|e| e.to_int::<u64>().ok()).unwrap_or(default);
    let frame = crate::core::dataset_limits::frame_size(
        number(tags::ROWS, 0),
        number(tags::COLUMNS, 0),
        number(tags::SAMPLES_PER_PIXEL, 1),
        number(tags::BITS_ALLOCATED, 8),
        limits.max_frame_size,
    )?;
    let decoded = if crate::core::pixels::needs_own_decoding(&object) {
        // Every frame is decoded at once: bounded first.
        crate::core::dataset_limits::decoded_size(&object, limits)?
    } else {
        frame
    };
    Ok((object, decoded))
}

/// Parses, decodes (within the gateway's decode budget), windows, scales and encodes one frame
/// (1-based).
async fn render(
    instance: pacs_adapter::RetrievedInstance,
    frame: u32,
    rendering: Rendering,
    limits: DataSetLimitsConfig,
    budget: &DecodeBudget,
) -> Result<Vec<u8>, Error> {
    let (object, size) = tokio::task::spawn_blocking(move || parsed(&instance, &limits))
        .await
        .map_err(|e| Error::Internal(format!("rendering failed: {e}")))??;
    budget
        .decode(size, move || rendered(object, frame, &rendering))
        .await
        .map_err(|e| Error::Internal(format!("rendering failed: {e}")))?
}

/// Decodes, windows, scales and encodes one frame (1-based) of a parsed instance. CPU work:
/// run it blocking.
fn rendered(
    mut object: FileDicomObject<InMemDicomObject>,
    frame: u32,
    rendering: &Rendering,
) -> Result<Vec<u8>, Error> {
    if crate::core::pixels::needs_own_decoding(&object) {
        crate::core::pixels::decode_into(&mut object, "1.2.840.10008.1.2.1")
            .map_err(|e| Error::NotImplemented(e.to_string()))?;
    }
    let ts = object.meta().transfer_syntax().trim_end_matches('\0').to_owned();
    let decoded = object.decode_pixel_data_frame(frame - 1).map_err(|e| {
        Error::NotImplemented(format!("cannot decode this instance's pixel data (transfer syntax {ts}): {e}"))
    })?;
    let mut options = ConvertOptions::new().force_8bit();
    if let Some((window, function)) = rendering.window {
        options = options.with_voi_lut(VoiLutOption::CustomWithFunction(window, function));
    }
    let image = decoded
        .to_dynamic_image_with_options(0, &options)
        .map_err(|e| Error::NotImplemented(format!("cannot render this instance's pixel data: {e}")))?;
    let image = match rendering.region {
        Some(region) => cut(image, region)?,
        None => image,
    };
    let image = match rendering.viewport {
        Some((w, h)) => image.resize(w, h, FilterType::Triangle),
        None => image,
    };
    let mut out = Cursor::new(Vec::new());
    match rendering.format {
        Format::Png => image.write_to(&mut out, ImageFormat::Png),
        Format::Jpeg => {
            // JPEG holds 8-bit grey or RGB only.
            let image = match image {
                DynamicImage::ImageLuma8(_) | DynamicImage::ImageRgb8(_) => image,
                other if other.color().has_color() => DynamicImage::ImageRgb8(other.to_rgb8()),
                other => DynamicImage::ImageLuma8(other.to_luma8()),
            };
            let encoder =
                dicom_pixeldata::image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, rendering.quality);
            image.write_with_encoder(encoder)
        }
    }
    .map_err(|e| Error::NotImplemented(format!("cannot encode the rendered image: {e}")))?;
    Ok(out.into_inner())
}

/// One instance's frame rendered; asked of a DICOMweb origin passed on as `relay` says, when
/// it is to be.
async fn respond(
    gw: &Arc<Gateway>,
    access: &Access,
    target: RetrieveTarget,
    frame: u32,
    rendering: Rendering,
    relay: Option<crate::sites::dicomweb::Relay>,
) -> Result<Response, Error> {
    if let Some(asked) = relay {
        if let Some(relayed) = crate::core::retrieve::origin_relay(&gw.retriever, access, &target, &asked).await? {
            return super::from_origin::relayed(relayed);
        }
    }
    let crate::core::retrieve::Retrieval { first, rest, .. } =
        crate::core::retrieve::retrieve(&gw.retriever, access, target).await?;
    drop(rest);
    let format = rendering.format;
    let limits = gw.config.dataset_limits;
    let bytes = render(first, frame, rendering, limits, &gw.decode_budget).await?;
    let content_type = match format {
        Format::Jpeg => "image/jpeg",
        Format::Png => "image/png",
    };
    Ok(([(header::CONTENT_TYPE, content_type)], bytes).into_response())
}

/// A rendered series or study (PS3.18 §10.4.1.1.3): each instance's first frame rendered, as
/// multipart/related, streamed as instances arrive; a failure part-way aborts the response.
async fn respond_many(
    gw: &Arc<Gateway>,
    access: &Access,
    target: RetrieveTarget,
    rendering: Rendering,
) -> Result<Response, Error> {
    use bytes::Bytes;
    use futures::StreamExt;
    let crate::core::retrieve::Retrieval { first, rest, .. } =
        crate::core::retrieve::retrieve(&gw.retriever, access, target).await?;
    let content_type = match rendering.format {
        Format::Jpeg => "image/jpeg",
        Format::Png => "image/png",
    };
    let (limits, budget) = (gw.config.dataset_limits, gw.decode_budget.clone());
    let parts = futures::stream::once(async move { Ok(first) })
        .chain(rest.map(|item| item.map_err(std::io::Error::other)))
        .then(move |item| {
            let (rendering, budget) = (rendering.clone(), budget.clone());
            async move {
                render(item?, 1, rendering, limits, &budget).await.map_err(|e| std::io::Error::other(e.to_string()))
            }
        })
        .map(move |item| item.map(|image| vec![OutgoingPart::new(content_type, Bytes::from(image))]));
    Ok(crate::http::multipart::response(content_type, "rendering", parts))
}

const THUMBNAIL: (u32, u32) = (128, 128);

pub(crate) async fn instance(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    TargetPath(target): TargetPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let rendering = parse(query.as_deref(), negotiate(&headers)?, None)?;
    let relay = super::from_origin::relay("/rendered".into(), query.as_deref(), &headers);
    respond(&gw, &access, target, 1, rendering, Some(relay)).await
}

pub(crate) async fn frame(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path((study, series, instance, frame)): Path<(String, String, String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let frame = frame
        .parse::<u32>()
        .ok()
        .filter(|f| *f >= 1)
        .ok_or_else(|| Error::BadRequest(format!("frame {frame:?}: a rendered frame is one number from 1")))?;
    let rendering = parse(query.as_deref(), negotiate(&headers)?, None)?;
    let target = super::wado::target(&study, Some(&series), Some(&instance))?;
    let relay = super::from_origin::relay(format!("/frames/{frame}/rendered"), query.as_deref(), &headers);
    respond(&gw, &access, target, frame, rendering, Some(relay)).await
}

pub(crate) async fn instance_thumbnail(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    TargetPath(target): TargetPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let rendering = parse(query.as_deref(), negotiate(&headers)?, Some(THUMBNAIL))?;
    respond(&gw, &access, target, 1, rendering, Some(thumbnail_relay(query.as_deref(), &headers))).await
}

/// A thumbnail asked of a DICOMweb origin passed on: its instance's thumbnail, as the caller
/// asked it (an origin without thumbnails answers 404, and the gateway renders one itself).
fn thumbnail_relay(query: Option<&str>, headers: &HeaderMap) -> crate::sites::dicomweb::Relay {
    super::from_origin::relay("/thumbnail".into(), query, headers)
}

/// The middle instance of a series (or of the first series of a study), for its thumbnail.
async fn representative(
    gw: &Gateway,
    access: &Access,
    study: &str,
    series: Option<&str>,
) -> Result<RetrieveTarget, Error> {
    let named = super::wado::target(study, series, None)?;
    crate::core::retrieve::representative(&gw.retriever, access, named).await
}

pub(crate) async fn series_thumbnail(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path((study, series)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let rendering = parse(query.as_deref(), negotiate(&headers)?, Some(THUMBNAIL))?;
    let target = representative(&gw, &access, &study, Some(&series)).await?;
    respond(&gw, &access, target, 1, rendering, Some(thumbnail_relay(query.as_deref(), &headers))).await
}

pub(crate) async fn study_thumbnail(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    Path(study): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let rendering = parse(query.as_deref(), negotiate(&headers)?, Some(THUMBNAIL))?;
    let target = representative(&gw, &access, &study, None).await?;
    respond(&gw, &access, target, 1, rendering, Some(thumbnail_relay(query.as_deref(), &headers))).await
}

/// A rendered series or study (the path says which).
pub(crate) async fn many(
    State(gw): State<Arc<Gateway>>,
    Extension(access): Extension<Access>,
    TargetPath(target): TargetPath,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let rendering = parse(query.as_deref(), negotiate(&headers)?, None)?;
    respond_many(&gw, &access, target, rendering).await
}
