//! Pixel data decoded out of its compressed transfer syntax: the one place that turns an
//! instance stored compressed (JPEG, JPEG-LS, JPEG 2000, HTJ2K, RLE) into an uncompressed one
//! and makes its Image Pixel module tell the truth about the result.
//!
//! The decoders are dicom-rs's: pure Rust for JPEG and RLE, OpenJPEG (C, built in) for JPEG
//! 2000, CharLS (C++, built in) for JPEG-LS; and OpenJPH (C++, Debian's libopenjph) for HTJ2K,
//! which decodes the HT block coder faster than OpenJPEG does (BENCHMARKS.md). What the
//! decoder's output needs from the data set, and dicom-rs does not do:
//! - Photometric Interpretation: JPEG and JPEG 2000 decoders undo their colour transform and
//!   give RGB; RLE and JPEG-LS give the samples as stored, so their YBR_FULL stays YBR_FULL.
//! - JPEG whose Photometric Interpretation is RGB holds RGB samples, with no colour transform
//!   to undo (PS3.5 8.2.1), whatever its markers suggest: the JPEG decoder dicom-rs calls
//!   guesses YCbCr from the markers and gives wrong colours, so such JPEG is decoded here with
//!   the transform turned off, as DCMTK and GDCM decode it.
//! - RLE of 32-bit samples (RT Dose), which dicom-rs refuses, is decoded here (PS3.5 G).
//! - 12-bit JPEG Extended (grey), which the pure-Rust decoders refuse, is decoded here by
//!   libjpeg-turbo (crate dicomweb-jpeg12).
//! - Planar Configuration: every decoder gives colour-by-pixel, so 0.
//! - Lossy Image Compression: a source that was compressed lossily stays marked so, with its
//!   method (PS3.3 C.7.6.1.1.5), whether or not the archive had marked it.
//! - An empty Number of Frames (some single-frame files) means one frame.

pub(crate) mod decode_budget;
pub(crate) mod rle;

use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::{FileDicomObject, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// Why an instance's pixel data could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("pixel data in transfer syntax {transfer_syntax} cannot be decoded here: {reason}")]
pub struct Undecodable {
    pub(crate) transfer_syntax: String,
    pub(crate) reason: String,
}

/// The compression method a transfer syntax's pixel data was lossily compressed with, when
/// the encoded bytes say it was (`first_fragment`: the start of the first frame).
pub(crate) fn lossy_method(transfer_syntax: &str, first_fragment: &[u8]) -> Option<&'static str> {
    match transfer_syntax {
        // JPEG Baseline and Extended are lossy by definition.
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => Some("ISO_10918_1"),
        "1.2.840.10008.1.2.4.81" => jpeg_ls_near(first_fragment).filter(|&near| near > 0).map(|_| "ISO_14495_1"),
        "1.2.840.10008.1.2.4.91" => irreversible_wavelet(first_fragment).filter(|&lossy| lossy).map(|_| "ISO_15444_1"),
        // HTJ2K's own defined term (PS3.3 C.7.6.1.1.5.1).
        "1.2.840.10008.1.2.4.203" => {
            irreversible_wavelet(first_fragment).filter(|&lossy| lossy).map(|_| "ISO_15444_15")
        }
        _ => None,
    }
}

/// The marker segment `wanted` of a JPEG-family header, walked segment by segment from the
/// start-of-image / start-of-codestream marker `start` (so bytes inside other segments are never
/// mistaken for a marker), up to the first of `stops`; its bytes from the marker on.
fn marker_segment<'a>(bytes: &'a [u8], start: u8, wanted: u8, stops: &[u8]) -> Option<&'a [u8]> {
    let mut at = bytes.windows(2).position(|w| w == [0xFF, start])? + 2;
    while at + 4 <= bytes.len() {
        if bytes[at] != 0xFF {
            return None;
        }
        let marker = bytes[at + 1];
        if marker == wanted {
            return Some(&bytes[at..]);
        }
        if stops.contains(&marker) {
            return None;
        }
        let length = u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]) as usize;
        at += 2 + length;
    }
    None
}

/// The NEAR parameter of a JPEG-LS frame's first scan (ISO 14495-1 C.2.3).
fn jpeg_ls_near(bytes: &[u8]) -> Option<u8> {
    let sos = marker_segment(bytes, 0xD8, 0xDA, &[0xD9])?;
    // SOS: marker, length (2), component count Ns (1), Ns x (id, mapping table) (2), NEAR.
    let count = *sos.get(4)? as usize;
    sos.get(5 + 2 * count).copied()
}

/// Whether a JPEG 2000 codestream uses the irreversible 9-7 wavelet (lossy), from its COD
/// marker segment (ISO 15444-1 A.6.1), found before the first tile-part.
fn irreversible_wavelet(bytes: &[u8]) -> Option<bool> {
    let cod = marker_segment(bytes, 0x4F, 0x52, &[0x90, 0x93, 0xD9])?;
    // COD: marker, Lcod (2), Scod (1), SGcod (4), then SPcod: decomposition levels, code-block
    // width and height, code-block style, wavelet transformation (0: 9-7 irreversible).
    cod.get(13).map(|&wavelet| wavelet == 0)
}

/// The first fragment of encapsulated pixel data (after the offset table), if any.
fn first_fragment(object: &InMemDicomObject) -> Option<Vec<u8>> {
    match object.get(tags::PIXEL_DATA)?.value() {
        Value::PixelSequence(sequence) => sequence.fragments().first().map(|f| f.iter().take(4096).copied().collect()),
        _ => None,
    }
}

fn text(object: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    object.get(tag)?.to_str().ok().map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
}

/// An error with the chain of its causes: the decoders' own words are in the innermost.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        cause = inner.source();
    }
    text
}

/// An empty Number of Frames means one frame: removed, so the decoders read one.
pub(crate) fn one_frame_when_unnumbered(object: &mut InMemDicomObject) {
    if object.get(tags::NUMBER_OF_FRAMES).is_some_and(|e| e.to_int::<u32>().is_err()) {
        object.remove_element(tags::NUMBER_OF_FRAMES);
    }
}

/// Decodes an instance's pixel data into the uncompressed transfer syntax `target` (CPU work:
/// call it off the async runtime, after bounding the decoded size). Instances already
/// uncompressed only change their transfer syntax.
pub fn decode_into(object: &mut FileDicomObject<InMemDicomObject>, target: &str) -> Result<(), Undecodable> {
    use dicom_pixeldata::Transcode;
    let source = object.meta().transfer_syntax().trim_end_matches('\0').to_owned();
    let undecodable = |reason: String| Undecodable { transfer_syntax: source.clone(), reason };
    let syntax = TransferSyntaxRegistry.get(target).ok_or_else(|| undecodable(format!("{target} is not known")))?;
    let encapsulated = TransferSyntaxRegistry.get(&source).is_some_and(|ts| ts.is_encapsulated_pixel_data());
    let photometric = text(object, tags::PHOTOMETRIC_INTERPRETATION);
    let lossy = first_fragment(object).and_then(|fragment| lossy_method(&source, &fragment));
    one_frame_when_unnumbered(object);
    match own_decoder(&source, object) {
        Some(decode) => {
            decode(object).map_err(undecodable)?;
            object.update_meta(|meta| meta.set_transfer_syntax(syntax));
        }
        None => object.transcode(syntax).map_err(|e| undecodable(with_causes(&e)))?,
    }
    if !encapsulated {
        return Ok(());
    }
    let samples = object.get(tags::SAMPLES_PER_PIXEL).and_then(|e| e.to_int::<u16>().ok()).unwrap_or(1);
    if samples > 1 {
        object.put(DataElement::new(tags::PLANAR_CONFIGURATION, VR::US, PrimitiveValue::from(0u16)));
        // RLE and JPEG-LS carry the samples as they were given: no colour transform to undo.
        let untransformed =
            matches!(source.as_str(), "1.2.840.10008.1.2.5" | "1.2.840.10008.1.2.4.80" | "1.2.840.10008.1.2.4.81");
        if let (true, Some(photometric)) = (untransformed, photometric) {
            object.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from(photometric)));
        }
    }
    if let Some(method) = lossy {
        mark_lossy(object, method);
    }
    Ok(())
}

/// Whether the pixel data must be decoded by [`decode_into`] before dicom-rs decodes frames
/// of it: RGB JPEG (dicom-rs would give wrong colours), 32-bit RLE and 12-bit JPEG (it refuses
/// them), HTJ2K (decoded by OpenJPH here).
pub(crate) fn needs_own_decoding(object: &FileDicomObject<InMemDicomObject>) -> bool {
    own_decoder(object.meta().transfer_syntax().trim_end_matches('\0'), object).is_some()
}

/// A decoder of the gateway's own: the pixel data of the data set replaced by native samples.
type OwnDecoder = fn(&mut InMemDicomObject) -> Result<(), String>;

/// The gateway's own decoder for pixel data dicom-rs decodes wrongly or not at all.
fn own_decoder(transfer_syntax: &str, object: &InMemDicomObject) -> Option<OwnDecoder> {
    if is_untransformed_jpeg(transfer_syntax, object) {
        Some(decode_untransformed_jpeg)
    } else if is_wide_rle(transfer_syntax, object) {
        Some(decode_rle)
    } else if is_twelve_bit_jpeg(transfer_syntax, object) {
        Some(decode_twelve_bit_jpeg)
    } else if is_htj2k(transfer_syntax) {
        Some(decode_htj2k)
    } else {
        None
    }
}

/// What the gateway's own decoders read of an encapsulated data set: the frames' geometry and
/// the fragments.
struct Encapsulated {
    frames: usize,
    rows: usize,
    columns: usize,
    samples: usize,
    /// Bytes of one decoded sample.
    bytes: usize,
    fragments: Vec<Vec<u8>>,
}

fn encapsulated(object: &InMemDicomObject) -> Result<Encapsulated, String> {
    let number = |tag| object.get(tag).and_then(|e| e.to_int::<usize>().ok());
    let fragments = match object.element(tags::PIXEL_DATA).map_err(|e| e.to_string())?.value() {
        Value::PixelSequence(sequence) => sequence.fragments().to_vec(),
        _ => return Err("no encapsulated pixel data".into()),
    };
    Ok(Encapsulated {
        frames: number(tags::NUMBER_OF_FRAMES).unwrap_or(1).max(1),
        rows: number(tags::ROWS).unwrap_or(0),
        columns: number(tags::COLUMNS).unwrap_or(0),
        samples: number(tags::SAMPLES_PER_PIXEL).unwrap_or(1),
        bytes: number(tags::BITS_ALLOCATED).unwrap_or(8).div_ceil(8),
        fragments,
    })
}

/// Grey JPEG Extended of more than 8 bits (12-bit samples in 16 allocated).
fn is_twelve_bit_jpeg(transfer_syntax: &str, object: &InMemDicomObject) -> bool {
    let number = |tag| object.get(tag).and_then(|e| e.to_int::<u16>().ok());
    transfer_syntax == "1.2.840.10008.1.2.4.51"
        && number(tags::SAMPLES_PER_PIXEL).unwrap_or(1) == 1
        && number(tags::BITS_ALLOCATED) == Some(16)
}

/// Each frame's encoded bytes: one frame per fragment, or every fragment one frame when there
/// is one (`what` names the encoding in the error).
fn frame_fragments(frames: usize, fragments: Vec<Vec<u8>>, what: &str) -> Result<Vec<Vec<u8>>, String> {
    match (frames, fragments.len()) {
        (1, _) => Ok(vec![fragments.concat()]),
        (frames, count) if frames == count => Ok(fragments),
        (frames, count) => Err(format!("{count} {what} fragments for {frames} frames")),
    }
}

/// Decodes 12-bit grey JPEG into native pixel data.
fn decode_twelve_bit_jpeg(object: &mut InMemDicomObject) -> Result<(), String> {
    let Encapsulated { frames, rows, columns, fragments, .. } = encapsulated(object)?;
    let encoded = frame_fragments(frames, fragments, "JPEG")?;
    let mut pixels = Vec::with_capacity(frames * rows * columns * 2);
    for (frame, jpeg) in encoded.iter().enumerate() {
        let samples = dicomweb_jpeg12::decode_grey(jpeg, rows, columns).map_err(|e| format!("frame {frame}: {e}"))?;
        pixels.extend(samples.iter().flat_map(|sample| sample.to_le_bytes()));
    }
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels)));
    Ok(())
}

/// HTJ2K, whichever of its three syntaxes.
fn is_htj2k(transfer_syntax: &str) -> bool {
    matches!(transfer_syntax, "1.2.840.10008.1.2.4.201" | "1.2.840.10008.1.2.4.202" | "1.2.840.10008.1.2.4.203")
}

/// Decodes HTJ2K into native pixel data with OpenJPH (crate dicomweb-htj2k), which decodes
/// the HT block coder faster than OpenJPEG. A colour transform in the codestream is undone,
/// so YBR_RCT and YBR_ICT become RGB, as after JPEG 2000.
fn decode_htj2k(object: &mut InMemDicomObject) -> Result<(), String> {
    let Encapsulated { frames, rows, columns, samples, bytes, fragments } = encapsulated(object)?;
    let frame = dicomweb_htj2k::Frame { rows, columns, samples_per_pixel: samples, bits_allocated: bytes * 8 };
    let encoded = frame_fragments(frames, fragments, "HTJ2K")?;
    let mut pixels = Vec::with_capacity(frames * rows * columns * samples * bytes);
    for (n, codestream) in encoded.iter().enumerate() {
        pixels.extend(dicomweb_htj2k::decode_frame(codestream, frame).map_err(|e| format!("frame {n}: {e}"))?);
    }
    let vr = if bytes > 1 { VR::OW } else { VR::OB };
    object.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixels)));
    if matches!(text(object, tags::PHOTOMETRIC_INTERPRETATION).as_deref(), Some("YBR_RCT" | "YBR_ICT")) {
        object.put(DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("RGB")));
    }
    Ok(())
}

/// RLE of samples wider than 16 bits.
fn is_wide_rle(transfer_syntax: &str, object: &InMemDicomObject) -> bool {
    transfer_syntax == "1.2.840.10008.1.2.5"
        && object.get(tags::BITS_ALLOCATED).and_then(|e| e.to_int::<u16>().ok()).is_some_and(|bits| bits > 16)
}

/// One PackBits segment of an RLE frame (PS3.5 G.3.1) into `out`, which it must fill exactly.
fn unpack_bits(segment: &[u8], out: &mut [u8]) -> Result<(), String> {
    let (mut read, mut written) = (0, 0);
    while written < out.len() {
        let &header = segment.get(read).ok_or("an RLE segment ends early")?;
        read += 1;
        let header = header as i8;
        if header >= 0 {
            let count = header as usize + 1;
            let literal = segment.get(read..read + count).ok_or("an RLE segment ends early")?;
            out.get_mut(written..written + count).ok_or("an RLE segment decodes too long")?.copy_from_slice(literal);
            read += count;
            written += count;
        } else if header != -128 {
            let count = 1 - header as isize;
            let &value = segment.get(read).ok_or("an RLE segment ends early")?;
            out.get_mut(written..written + count as usize).ok_or("an RLE segment decodes too long")?.fill(value);
            read += 1;
            written += count as usize;
        }
    }
    Ok(())
}

/// Decodes RLE pixel data of any sample width into native pixel data (colour-by-pixel): each
/// frame is one fragment of a 64-byte header (segment count and offsets) and its segments, one
/// per byte of each sample, most significant first (PS3.5 G.2, G.5).
fn decode_rle(object: &mut InMemDicomObject) -> Result<(), String> {
    let Encapsulated { frames, rows, columns, samples, bytes, fragments } = encapsulated(object)?;
    let pixels_per_frame = rows * columns;
    if fragments.len() != frames {
        return Err(format!("{} RLE fragments for {frames} frames", fragments.len()));
    }
    let frame_size = pixels_per_frame * samples * bytes;
    let mut pixels = vec![0u8; frames * frame_size];
    let mut plane = vec![0u8; pixels_per_frame];
    for (frame, fragment) in fragments.iter().enumerate() {
        let word = |at: usize| fragment.get(at..at + 4).map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]) as usize);
        let segments = word(0).ok_or("an RLE frame without its header")?;
        if segments != samples * bytes {
            return Err(format!("{segments} RLE segments for {samples} samples of {bytes} bytes"));
        }
        let output = &mut pixels[frame * frame_size..(frame + 1) * frame_size];
        for segment in 0..segments {
            let start = word(4 + 4 * segment).ok_or("an RLE header ends early")?;
            let end = if segment + 1 < segments {
                word(8 + 4 * segment).ok_or("an RLE header ends early")?
            } else {
                fragment.len()
            };
            let encoded = fragment.get(start..end.max(start)).ok_or("an RLE segment offset past its frame")?;
            unpack_bits(encoded, &mut plane)?;
            let (sample, byte) = (segment / bytes, bytes - 1 - segment % bytes);
            for (pixel, &value) in plane.iter().enumerate() {
                output[(pixel * samples + sample) * bytes + byte] = value;
            }
        }
    }
    // Samples wider than a byte are OW in an explicit VR syntax (PS3.5 A.2).
    let vr = if bytes > 1 { VR::OW } else { VR::OB };
    object.put(DataElement::new(tags::PIXEL_DATA, vr, PrimitiveValue::from(pixels)));
    Ok(())
}

/// 8-bit colour JPEG stored as RGB (no colour transform in its samples).
fn is_untransformed_jpeg(transfer_syntax: &str, object: &InMemDicomObject) -> bool {
    let number = |tag| object.get(tag).and_then(|e| e.to_int::<u16>().ok());
    matches!(transfer_syntax, "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51")
        && number(tags::SAMPLES_PER_PIXEL) == Some(3)
        && number(tags::BITS_ALLOCATED) == Some(8)
        && text(object, tags::PHOTOMETRIC_INTERPRETATION).as_deref() == Some("RGB")
}

/// Decodes every frame of 8-bit RGB JPEG without a colour transform into native pixel data
/// (colour-by-pixel). Frames follow one another in the fragments; each starts at an SOI.
fn decode_untransformed_jpeg(object: &mut InMemDicomObject) -> Result<(), String> {
    let Encapsulated { frames, rows, columns, fragments, .. } = encapsulated(object)?;
    let frame_size = rows * columns * 3;
    let encoded = fragments.concat();
    let mut pixels = Vec::with_capacity(frames * frame_size);
    let mut at = 0;
    for frame in 0..frames {
        let start =
            memchr::memmem::find(&encoded[at..], &[0xFF, 0xD8]).ok_or_else(|| format!("frame {frame} is missing"))?;
        let mut cursor = std::io::Cursor::new(&encoded[at + start..]);
        let mut decoder = jpeg_decoder::Decoder::new(&mut cursor);
        // "RGB": the samples interleaved as they are (its `None` gives them plane by plane).
        decoder.set_color_transform(jpeg_decoder::ColorTransform::RGB);
        let decoded = decoder.decode().map_err(|e| format!("JPEG decoding failure on frame {frame}: {e}"))?;
        if decoded.len() != frame_size {
            return Err(format!("frame {frame} decodes to {} bytes, not {frame_size}", decoded.len()));
        }
        pixels.extend_from_slice(&decoded);
        at += start + cursor.position() as usize;
    }
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OB, PrimitiveValue::from(pixels)));
    Ok(())
}

/// Lossy Image Compression "01", and the method added to Lossy Image Compression Method when
/// it is not named there yet.
fn mark_lossy(object: &mut InMemDicomObject, method: &str) {
    object.put(DataElement::new(tags::LOSSY_IMAGE_COMPRESSION, VR::CS, PrimitiveValue::from("01")));
    let mut methods: Vec<String> = object
        .get(tags::LOSSY_IMAGE_COMPRESSION_METHOD)
        .and_then(|e| e.to_multi_str().ok().map(|m| m.iter().map(|s| s.trim().to_owned()).collect()))
        .unwrap_or_default();
    if !methods.iter().any(|m| m == method) {
        methods.push(method.to_owned());
        object.put(DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION_METHOD,
            VR::CS,
            PrimitiveValue::Strs(methods.into()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_codestreams_are_told_from_lossless_ones() {
        // SOC, then COD: Lcod 12, Scod 0, SGcod (LRCP, 1 layer, MCT 0), 5 levels, 4x4 code
        // blocks (2, 2), style 0, then the wavelet.
        // A SIZ-like segment first whose content holds FF 52, which is no marker there.
        let cod = |wavelet: u8| {
            [0xFF, 0x4F, 0xFF, 0x51, 0, 4, 0xFF, 0x52, 0xFF, 0x52, 0, 12, 0, 0, 0, 1, 0, 5, 2, 2, 0, wavelet].to_vec()
        };
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.91", &cod(0)), Some("ISO_15444_1"));
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.91", &cod(1)), None);
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.203", &cod(0)), Some("ISO_15444_15"));
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.90", &cod(0)), None, "a lossless-only syntax");
        // SOS with one component (id 1, table 0), then NEAR.
        let sos = |near: u8| [0xFF, 0xD8, 0xFF, 0xDA, 0, 8, 1, 1, 0, near, 0, 0].to_vec();
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.81", &sos(2)), Some("ISO_14495_1"));
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.81", &sos(0)), None);
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.50", &[]), Some("ISO_10918_1"));
        assert_eq!(lossy_method("1.2.840.10008.1.2.4.91", &[0xFF, 0x4F]), None, "no COD: not known to be lossy");
    }

    #[test]
    fn rle_of_32_bit_samples_decodes_most_significant_byte_first() {
        // Two pixels of one 32-bit sample: 0x01020304 and 0x01020305. Segment 0 holds the most
        // significant bytes (a run: 01 01), segments 1-3 literals.
        let segments: [&[u8]; 4] = [&[0xFF, 0x01], &[0x01, 0x02, 0x02], &[0x01, 0x03, 0x03], &[0x01, 0x04, 0x05]];
        let mut fragment = vec![0u8; 64];
        fragment[0..4].copy_from_slice(&4u32.to_le_bytes());
        let mut at = 64u32;
        for (n, segment) in segments.iter().enumerate() {
            fragment[4 + 4 * n..8 + 4 * n].copy_from_slice(&at.to_le_bytes());
            fragment.extend_from_slice(segment);
            at += segment.len() as u32;
        }
        let mut object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(2u16)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(32u16)),
            DataElement::new(
                tags::PIXEL_DATA,
                VR::OB,
                dicom_core::value::PixelFragmentSequence::new(vec![], vec![fragment]),
            ),
        ]);
        decode_rle(&mut object).expect("decodes");
        let pixels = object.element(tags::PIXEL_DATA).expect("pixels").to_bytes().expect("bytes").into_owned();
        assert_eq!(pixels, [0x04, 0x03, 0x02, 0x01, 0x05, 0x03, 0x02, 0x01]);
        let mut short = [0u8; 3];
        assert!(unpack_bits(&[0x01, 0x07], &mut short).is_err(), "a literal past the segment's end");
    }

    #[test]
    fn a_second_method_is_added_not_replaced() {
        let mut object = InMemDicomObject::from_element_iter([DataElement::new(
            tags::LOSSY_IMAGE_COMPRESSION_METHOD,
            VR::CS,
            PrimitiveValue::from("ISO_10918_1"),
        )]);
        mark_lossy(&mut object, "ISO_15444_1");
        mark_lossy(&mut object, "ISO_15444_1");
        let methods =
            object.element(tags::LOSSY_IMAGE_COMPRESSION_METHOD).expect("methods").to_multi_str().expect("text");
        assert_eq!(methods.as_ref(), ["ISO_10918_1", "ISO_15444_1"]);
        assert_eq!(text(&object, tags::LOSSY_IMAGE_COMPRESSION).as_deref(), Some("01"));
    }
}
