//! Bounds on the content of a DICOM data set (`[dataset_limits]`), checked on its bytes before
//! anything parses it: sequences nested at most `max_sequence_depth` deep (the parser recurses
//! once per level), no value length that claims more bytes than remain (the parser allocates a
//! value's length before reading it), Deflated Explicit VR Little Endian inflated to at most
//! `max_inflated_size`, and frames (rows x columns x samples x bits allocated) computed with
//! checked arithmetic and at most `max_frame_size`. The walk over the element headers is
//! `pacs_adapter::data_set_check` (the adapter also bounds the C-FIND identifiers it reads).

use std::io::Read;

use dicom_dictionary_std::tags;
use dicom_object::{FileDicomObject, InMemDicomObject};

use pacs_adapter::data_set_check::check_data_set_visiting;
pub(crate) use pacs_adapter::data_set_check::{ContentLimitError, Encoding};

use crate::config::DataSetLimitsConfig;

pub(crate) const DEFLATED_EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1.99";

/// Checks an encoded data set (what follows the file meta group) of `transfer_syntax`. A
/// deflated data set is inflated within the bound and checked; it is returned (the Explicit VR
/// Little Endian data set) so that it is not inflated twice.
pub fn check_encoded(
    data_set: &[u8],
    transfer_syntax: &str,
    limits: &DataSetLimitsConfig,
) -> Result<Option<Vec<u8>>, ContentLimitError> {
    check_encoded_visiting(data_set, transfer_syntax, limits, &mut |_, _| {})
}

/// [`check_encoded`], showing `visit` each top-level element as the walk passes it
/// (pacs_adapter::data_set_check::check_data_set_visiting).
fn check_encoded_visiting(
    data_set: &[u8],
    transfer_syntax: &str,
    limits: &DataSetLimitsConfig,
    visit: &mut dyn FnMut(dicom_core::Tag, &[u8]),
) -> Result<Option<Vec<u8>>, ContentLimitError> {
    if transfer_syntax == DEFLATED_EXPLICIT_VR_LE {
        let inflated = inflate(data_set, limits.max_inflated_size)?;
        check_data_set_visiting(&inflated, Encoding::of(""), limits.max_sequence_depth, visit)?;
        return Ok(Some(inflated));
    }
    check_data_set_visiting(data_set, Encoding::of(transfer_syntax), limits.max_sequence_depth, visit)?;
    Ok(None)
}

/// What a data set says it is: its Study, Series and SOP Instance UIDs (top level).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Identity {
    pub(crate) study: Option<String>,
    pub(crate) series: Option<String>,
    pub(crate) instance: Option<String>,
}

/// [`check_encoded`], reading the data set's [`Identity`] on the same walk.
pub(crate) fn check_identified(
    data_set: &[u8],
    transfer_syntax: &str,
    limits: &DataSetLimitsConfig,
) -> Result<Identity, ContentLimitError> {
    let mut identity = Identity::default();
    let mut visit = |tag, value: &[u8]| {
        let slot = match tag {
            tags::STUDY_INSTANCE_UID => &mut identity.study,
            tags::SERIES_INSTANCE_UID => &mut identity.series,
            tags::SOP_INSTANCE_UID => &mut identity.instance,
            _ => return,
        };
        // A UID's value is padded to even length with a NUL (some writers use a space).
        *slot = std::str::from_utf8(value).ok().map(|uid| uid.trim_end_matches(['\0', ' ']).to_owned());
    };
    check_encoded_visiting(data_set, transfer_syntax, limits, &mut visit)?;
    Ok(identity)
}

/// Inflates a raw deflate stream, refusing one that grows past `max` bytes (a deflate bomb is
/// cut there, never held whole).
pub(crate) fn inflate(deflated: &[u8], max: u64) -> Result<Vec<u8>, ContentLimitError> {
    let mut out = Vec::with_capacity(deflated.len().saturating_mul(4).min(max as usize));
    flate2::read::DeflateDecoder::new(deflated)
        .take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| ContentLimitError::Inflate(e.to_string()))?;
    if out.len() as u64 > max {
        return Err(ContentLimitError::InflatedTooLarge(max));
    }
    Ok(out)
}

/// The size of an instance's pixel data once every frame is decoded (frames x rows x columns x
/// samples x bits allocated), checked against `max_frame_size` and `max_decoded_size` before
/// anything decodes it: a transcoder allocates the whole of it.
pub(crate) fn decoded_size(obj: &InMemDicomObject, limits: &DataSetLimitsConfig) -> Result<u64, ContentLimitError> {
    let number = |tag| -> u64 {
        obj.get(tag).and_then(|e| e.to_int::<u64>().ok().or_else(|| e.to_str().ok()?.trim().parse().ok())).unwrap_or(0)
    };
    let samples = number(tags::SAMPLES_PER_PIXEL).max(1);
    let frame = frame_size(
        number(tags::ROWS),
        number(tags::COLUMNS),
        samples,
        number(tags::BITS_ALLOCATED),
        limits.max_frame_size,
    )?;
    let frames = number(tags::NUMBER_OF_FRAMES).max(1);
    let too_large = ContentLimitError::DecodedTooLarge { frames, frame_size: frame, limit: limits.max_decoded_size };
    match frames.checked_mul(frame) {
        Some(total) if total <= limits.max_decoded_size => Ok(total),
        _ => Err(too_large),
    }
}

/// A Part-10 instance parsed, with the size its pixel data takes once decoded (0 when it is not
/// encapsulated, so nothing is decoded), bounded by [`decoded_size`] before anything decodes it.
pub(crate) fn parsed_for_decoding(
    part10: &[u8],
    limits: &DataSetLimitsConfig,
) -> Result<(FileDicomObject<InMemDicomObject>, u64), String> {
    let object = dicom_object::from_reader(part10.get(128..).unwrap_or_default())
        .map_err(|e| format!("the instance cannot be parsed: {e}"))?;
    let encapsulated =
        object.get(tags::PIXEL_DATA).is_some_and(|e| matches!(e.value(), dicom_core::value::Value::PixelSequence(_)));
    if !encapsulated {
        return Ok((object, 0));
    }
    let size = decoded_size(&object, limits).map_err(|e| format!("the instance cannot be decoded here ({e})"))?;
    Ok((object, size))
}

/// The size in bytes of one native frame, checked: no overflow, at most `limit`.
pub(crate) fn frame_size(
    rows: u64,
    columns: u64,
    samples: u64,
    bits: u64,
    limit: u64,
) -> Result<u64, ContentLimitError> {
    let too_large = ContentLimitError::FrameTooLarge { rows, columns, samples, bits, limit };
    let bits_total = rows
        .checked_mul(columns)
        .and_then(|n| n.checked_mul(samples))
        .and_then(|n| n.checked_mul(bits))
        .ok_or_else(|| too_large.clone())?;
    let bytes = bits_total.div_ceil(8);
    if bytes > limit {
        return Err(too_large);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacs_adapter::data_set_check::check_data_set;

    /// An undefined length.
    const UNDEFINED: u32 = 0xFFFF_FFFF;

    const LIMITS: DataSetLimitsConfig = DataSetLimitsConfig {
        max_sequence_depth: 64,
        max_inflated_size: 1 << 20,
        max_frame_size: 1 << 30,
        max_decoded_size: 1 << 30,
        decode_memory: 2 << 30,
    };
    const EXPLICIT_LE: Encoding = Encoding { explicit: true, big_endian: false };
    const IMPLICIT_LE: Encoding = Encoding { explicit: false, big_endian: false };

    fn short(out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }

    fn long_header(out: &mut Vec<u8>, group: u16, element: u16, vr: &[u8; 2], length: u32) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&length.to_le_bytes());
    }

    fn tag_only(out: &mut Vec<u8>, element: u16, length: u32) {
        out.extend_from_slice(&0xFFFEu16.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(&length.to_le_bytes());
    }

    #[test]
    fn a_data_set_says_its_own_uids_at_the_top_level_only() {
        let mut data = Vec::new();
        short(&mut data, 0x0008, 0x0018, b"UI", b"1.2.3\0");
        // A sequence holding an item with another study's UID: not the data set's own.
        long_header(&mut data, 0x0008, 0x1110, b"SQ", UNDEFINED);
        tag_only(&mut data, 0xE000, UNDEFINED);
        short(&mut data, 0x0020, 0x000D, b"UI", b"9.9.9\0");
        tag_only(&mut data, 0xE00D, 0);
        tag_only(&mut data, 0xE0DD, 0);
        short(&mut data, 0x0020, 0x000D, b"UI", b"1.2\0");
        short(&mut data, 0x0020, 0x000E, b"UI", b"1.2.4 ");
        let identity = check_identified(&data, "1.2.840.10008.1.2.1", &LIMITS).expect("within the limits");
        assert_eq!(
            identity,
            Identity { study: Some("1.2".into()), series: Some("1.2.4".into()), instance: Some("1.2.3".into()) }
        );
    }

    /// An Explicit VR Little Endian data set with `depth` sequences, each of one undefined-length
    /// item, nested in one another (Referenced Series Sequence), with a short string innermost.
    fn nested(depth: usize) -> Vec<u8> {
        let mut out = Vec::new();
        short(&mut out, 0x0008, 0x0060, b"CS", b"OT");
        for _ in 0..depth {
            long_header(&mut out, 0x0008, 0x1115, b"SQ", UNDEFINED);
            tag_only(&mut out, 0xE000, UNDEFINED);
        }
        short(&mut out, 0x0020, 0x000E, b"UI", b"1.2.3.4\0");
        for _ in 0..depth {
            tag_only(&mut out, 0xE00D, 0);
            tag_only(&mut out, 0xE0DD, 0);
        }
        out
    }

    fn part10(transfer_syntax: &str, data_set: &[u8]) -> Vec<u8> {
        pacs_adapter::part10::wrap("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4.5", transfer_syntax, "", data_set)
    }

    #[test]
    fn nesting_up_to_the_limit_passes_and_parses_deeper_is_refused() {
        assert_eq!(check_data_set(&nested(64), EXPLICIT_LE, 64), Ok(()));
        assert_eq!(check_data_set(&nested(65), EXPLICIT_LE, 64), Err(ContentLimitError::TooDeep(64)));
        // What passes is parsed by dicom-object on a thread with tokio's blocking stack (2 MiB).
        let bytes = part10("1.2.840.10008.1.2.1", &nested(64));
        let parsed = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || dicom_object::from_reader(&bytes[128..]).is_ok())
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert!(parsed);
    }

    #[test]
    fn a_hostile_depth_is_refused_without_recursion() {
        // 200 000 levels: would overflow any thread's stack in a recursive parser.
        let deep = nested(200_000);
        let result = std::thread::Builder::new()
            .stack_size(64 << 10)
            .spawn(move || check_data_set(&deep, EXPLICIT_LE, 64))
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert_eq!(result, Err(ContentLimitError::TooDeep(64)));
    }

    #[test]
    fn defined_length_sequences_and_implicit_vr_are_walked() {
        // Implicit VR: Referenced Series Sequence of defined length, known from the dictionary.
        let mut item = Vec::new();
        item.extend_from_slice(&0x0020u16.to_le_bytes());
        item.extend_from_slice(&0x000Eu16.to_le_bytes());
        item.extend_from_slice(&8u32.to_le_bytes());
        item.extend_from_slice(b"1.2.3.4\0");
        let mut sequence = Vec::new();
        tag_only(&mut sequence, 0xE000, item.len() as u32);
        sequence.extend_from_slice(&item);
        let mut data = Vec::new();
        data.extend_from_slice(&0x0008u16.to_le_bytes());
        data.extend_from_slice(&0x1115u16.to_le_bytes());
        data.extend_from_slice(&(sequence.len() as u32).to_le_bytes());
        data.extend_from_slice(&sequence);
        assert_eq!(check_data_set(&data, IMPLICIT_LE, 64), Ok(()));
        assert_eq!(check_data_set(&data, IMPLICIT_LE, 0), Err(ContentLimitError::TooDeep(0)));
        // An item claiming more than its sequence holds.
        let mut lying = data.clone();
        lying[12..16].copy_from_slice(&1000u32.to_le_bytes());
        assert!(matches!(check_data_set(&lying, IMPLICIT_LE, 64), Err(ContentLimitError::LengthPastEnd { .. })));
    }

    #[test]
    fn a_length_past_the_end_is_refused_before_parsing() {
        let mut data = Vec::new();
        short(&mut data, 0x0008, 0x0060, b"CS", b"OT");
        long_header(&mut data, 0x7FE0, 0x0010, b"OB", 0xFFFF_FFF0);
        data.extend_from_slice(&[0; 16]);
        assert_eq!(
            check_data_set(&data, EXPLICIT_LE, 64),
            Err(ContentLimitError::LengthPastEnd {
                group: 0x7FE0,
                element: 0x0010,
                length: 0xFFFF_FFF0,
                remaining: 16
            })
        );
        // Inside an item of defined length, the item's end is the bound, not the data set's.
        let mut data = Vec::new();
        long_header(&mut data, 0x0008, 0x1115, b"SQ", UNDEFINED);
        tag_only(&mut data, 0xE000, 10);
        short(&mut data, 0x0008, 0x0060, b"CS", b"ABCDEFGHIJKL");
        tag_only(&mut data, 0xE0DD, 0);
        assert!(matches!(
            check_data_set(&data, EXPLICIT_LE, 64),
            Err(ContentLimitError::LengthPastEnd { group: 0x0008, element: 0x0060, remaining: 2, .. })
        ));
    }

    #[test]
    fn encapsulated_pixel_data_is_walked() {
        let mut data = Vec::new();
        short(&mut data, 0x0028, 0x0010, b"US", &[4, 0]);
        long_header(&mut data, 0x7FE0, 0x0010, b"OB", UNDEFINED);
        tag_only(&mut data, 0xE000, 0);
        tag_only(&mut data, 0xE000, 4);
        data.extend_from_slice(&[1, 2, 3, 4]);
        tag_only(&mut data, 0xE0DD, 0);
        assert_eq!(check_data_set(&data, EXPLICIT_LE, 64), Ok(()));
        let mut truncated = data.clone();
        truncated.truncate(truncated.len() - 8);
        assert!(check_data_set(&truncated, EXPLICIT_LE, 64).is_err());
    }

    #[test]
    fn a_deflate_bomb_is_cut_at_the_bound() {
        use std::io::Write;
        // 64 MiB of one element's zeros deflate to about 64 KiB.
        let mut plain = Vec::new();
        long_header(&mut plain, 0x7FE0, 0x0010, b"OB", 64 << 20);
        plain.resize(plain.len() + (64 << 20), 0);
        let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&plain).expect("deflate");
        let bomb = part10(DEFLATED_EXPLICIT_VR_LE, &encoder.finish().expect("deflate"));
        assert!(bomb.len() < 1 << 20);
        let offset = pacs_adapter::part10::parse_header(&bomb).expect("header").data_set_offset;
        assert_eq!(
            check_encoded(&bomb[offset..], DEFLATED_EXPLICIT_VR_LE, &LIMITS),
            Err(ContentLimitError::InflatedTooLarge(1 << 20))
        );
        let roomy = DataSetLimitsConfig { max_inflated_size: 65 << 20, ..LIMITS };
        let inflated = check_encoded(&bomb[offset..], DEFLATED_EXPLICIT_VR_LE, &roomy).expect("within the bound");
        assert_eq!(inflated.map(|d| d.len()), Some(plain.len()));
        assert!(check_encoded(b"\xff\xff not deflate", DEFLATED_EXPLICIT_VR_LE, &LIMITS).is_err());
    }

    #[test]
    fn frame_sizes_are_checked() {
        assert_eq!(frame_size(512, 512, 1, 16, 1 << 30), Ok(512 * 512 * 2));
        assert_eq!(frame_size(3, 3, 1, 1, 100), Ok(2));
        assert!(matches!(frame_size(65535, 65535, 3, 64, 1 << 30), Err(ContentLimitError::FrameTooLarge { .. })));
        assert!(matches!(
            frame_size(u64::from(u32::MAX), u64::from(u32::MAX), u64::from(u32::MAX), 16, u64::MAX),
            Err(ContentLimitError::FrameTooLarge { .. })
        ));
    }

    /// Fuzzing found it: a data set element with the VR bytes 01H 'A' was read here with a 2-byte
    /// length, and by dicom-object with a 4-byte one of 1.3 GB that it allocated.
    #[test]
    fn an_unknown_vr_is_refused() {
        let mut data = vec![0xA5, 0x8E, 0x3D, 0x0F, 0x01, b'A', 0x10, 0x00];
        data.extend_from_slice(&[0u8; 16]);
        data.extend_from_slice(b"MONOCHROME2 ");
        assert_eq!(
            check_data_set(&data, Encoding::of(""), 64),
            Err(ContentLimitError::Malformed("an element has an unknown VR"))
        );
    }

    /// Fuzzing found it: an SV value of 698 bytes inside an item. dicom-object reads 87 whole
    /// values, counts 698 bytes as read and reads the next header two bytes early, out of step
    /// with the item lengths, until a misread length makes it allocate and fill a value of
    /// hundreds of megabytes, seconds per input.
    #[test]
    fn a_binary_value_that_is_not_whole_numbers_is_refused_unless_nothing_follows() {
        let mut data = Vec::new();
        long_header(&mut data, 0x0008, 0x1140, b"SQ", UNDEFINED);
        tag_only(&mut data, 0xE000, 12 + 10);
        long_header(&mut data, 0x0072, 0x0082, b"SV", 10);
        data.extend_from_slice(&[0; 10]);
        tag_only(&mut data, 0xE0DD, 0);
        assert_eq!(
            check_data_set(&data, EXPLICIT_LE, 64),
            Err(ContentLimitError::PartialValue { group: 0x0072, element: 0x0082, vr: "SV", length: 10, unit: 8 })
        );
        // Implicit VR: the dictionary's VR counts (Rows is US).
        let mut implicit = Vec::new();
        implicit.extend_from_slice(&0x0028u16.to_le_bytes());
        implicit.extend_from_slice(&0x0010u16.to_le_bytes());
        implicit.extend_from_slice(&3u32.to_le_bytes());
        implicit.extend_from_slice(&[0; 3]);
        let mut followed = implicit.clone();
        followed.extend_from_slice(&implicit);
        assert!(matches!(check_data_set(&followed, IMPLICIT_LE, 64), Err(ContentLimitError::PartialValue { .. })));
        // Last in the data set (an odd-length 8-bit image in OW, as some writers leave it).
        assert_eq!(check_data_set(&implicit, IMPLICIT_LE, 64), Ok(()));
        let mut whole = Vec::new();
        short(&mut whole, 0x0028, 0x0010, b"US", &[0, 2]);
        long_header(&mut whole, 0x0072, 0x0082, b"SV", 16);
        whole.extend_from_slice(&[0; 16]);
        assert_eq!(check_data_set(&whole, EXPLICIT_LE, 64), Ok(()));
    }

    #[test]
    fn every_frame_decoded_counts_against_the_bound_before_decoding() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        let image = |frames: &str| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512u16)),
                DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(512u16)),
                DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
                DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from(frames)),
            ])
        };
        assert_eq!(decoded_size(&image("2"), &LIMITS), Ok(2 * 512 * 512 * 2));
        let bounded = DataSetLimitsConfig { max_decoded_size: 100 << 20, ..LIMITS };
        assert_eq!(
            decoded_size(&image("4000"), &bounded),
            Err(ContentLimitError::DecodedTooLarge { frames: 4000, frame_size: 512 * 512 * 2, limit: 100 << 20 })
        );
        assert!(decoded_size(&image("18446744073709551615"), &bounded).is_err(), "no overflow");
    }
}
