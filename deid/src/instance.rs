//! One instance de-identified from its encoded data set to an encoded data set.
//!
//! Pixel data is most of an instance and the profile keeps it as it is, so when it is the data
//! set's last element (the usual layout) only the elements before it are parsed, de-identified
//! and written again, and the pixel data bytes follow unchanged: no decoding, one copy, or none
//! when the caller puts the rewritten front where the old one was ([`rewrite`]). Any other
//! layout, or a transfer syntax that is not little endian and undeflated, goes through a full
//! parse.

use dicom_encoding::TransferSyntax;
use dicom_object::InMemDicomObject;

use crate::burned_in::{self, Withheld};
use crate::profile::{Deidentifier, Report};

const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const PIXEL_DATA: [u8; 4] = [0xE0, 0x7F, 0x10, 0x00];
const SEQUENCE_DELIMITER: [u8; 8] = [0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0];
const ITEM: [u8; 4] = [0xFE, 0xFF, 0x00, 0xE0];

/// What became of an instance.
#[derive(Debug)]
pub enum Outcome {
    /// `prefix` followed by the de-identified data set, encoded in the same transfer syntax,
    /// and what was done.
    Deidentified { bytes: Vec<u8>, object: Box<InMemDicomObject>, report: Report },
    /// Withheld: its pixels may show identity.
    Withheld(Withheld),
}

/// What became of an instance, its pixel data not copied.
#[derive(Debug)]
pub enum Rewrite {
    /// `prefix` and the de-identified elements, to be followed by the data set's bytes from
    /// `unchanged_from` on (the pixel data; the data set's length when all of it was rewritten).
    Rewritten { front: Vec<u8>, unchanged_from: usize, object: Box<InMemDicomObject>, report: Report },
    /// Withheld: its pixels may show identity.
    Withheld(Withheld),
}

impl Rewrite {
    /// The whole de-identified instance, in one buffer.
    fn joined(self, data_set: &[u8]) -> Outcome {
        match self {
            Rewrite::Rewritten { mut front, unchanged_from, object, report } => {
                front.reserve_exact(data_set.len() - unchanged_from);
                front.extend_from_slice(&data_set[unchanged_from..]);
                Outcome::Deidentified { bytes: front, object, report }
            }
            Rewrite::Withheld(withheld) => Outcome::Withheld(withheld),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("cannot read the data set: {0}")]
    Read(String),
    #[error("cannot write the de-identified data set: {0}")]
    Write(String),
}

/// The offset of the top-level Pixel Data element when it is the last element of `data_set`
/// (little endian, explicit or implicit VR), checked by its header: its length reaches exactly
/// the end, or (encapsulated) its first item follows and a sequence delimiter ends the data set.
/// (The caller also checks that the elements before it parse without another Pixel Data.)
pub fn trailing_pixel_data(data_set: &[u8], explicit_vr: bool) -> Option<usize> {
    let header = if explicit_vr { 12 } else { 8 };
    // From the front: the real header comes after the other elements (a few kilobytes), and a
    // match inside some other element's value fails the checks below.
    for at in memchr::memmem::find_iter(data_set, &PIXEL_DATA) {
        if at % 2 != 0 || at + header > data_set.len() {
            continue;
        }
        let length_at = if explicit_vr {
            let vr = &data_set[at + 4..at + 6];
            if !(vr == b"OB" || vr == b"OW") || data_set[at + 6..at + 8] != [0, 0] {
                continue;
            }
            at + 8
        } else {
            at + 4
        };
        let length = u32::from_le_bytes([
            data_set[length_at],
            data_set[length_at + 1],
            data_set[length_at + 2],
            data_set[length_at + 3],
        ]);
        let fits = if length == u32::MAX {
            encapsulated_end(data_set, at + header) == Some(data_set.len())
        } else {
            at + header + length as usize == data_set.len()
        };
        if fits {
            return Some(at);
        }
    }
    None
}

/// Where encapsulated pixel data whose first item starts at `from` ends: its items walked by
/// their headers up to and including the sequence delimiter. `None` when the bytes are not a
/// well-formed item sequence. Only an exact walk tells where the pixel data ends: a data set
/// whose last element is some other sequence of undefined length (a Digital Signatures
/// Sequence, a private sequence in a high group) ends with a delimiter too.
fn encapsulated_end(data_set: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let header = data_set.get(at..at + 8)?;
        let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if header[..4] == SEQUENCE_DELIMITER[..4] {
            return (length == 0).then_some(at + 8);
        }
        if header[..4] != ITEM || length == u32::MAX as usize {
            return None;
        }
        at = at.checked_add(8)?.checked_add(length)?;
    }
}

/// De-identifies one instance's data set, encoded in `ts`, held at `site`, writing it after
/// `prefix` (a preamble and file meta group, say: one buffer, the pixel data copied once).
/// An instance whose pixels may show identity is withheld (crate::burned_in).
pub fn deidentify(
    deidentifier: &Deidentifier,
    data_set: &[u8],
    ts: &TransferSyntax,
    site: &str,
    prefix: Vec<u8>,
) -> Result<Outcome, InstanceError> {
    Ok(rewrite_with(deidentifier, data_set, ts, site, prefix, Pixels::AsStored)?.joined(data_set))
}

/// The same, the bytes that stay unchanged (the pixel data) left where they are: the caller
/// puts the rewritten front before them.
pub fn rewrite(
    deidentifier: &Deidentifier,
    data_set: &[u8],
    ts: &TransferSyntax,
    site: &str,
    prefix: Vec<u8>,
) -> Result<Rewrite, InstanceError> {
    rewrite_with(deidentifier, data_set, ts, site, prefix, Pixels::AsStored)
}

/// The same for an instance whose pixel data the caller has cleaned of burned-in text (PS3.15
/// E.3.1, Clean Pixel Data Option): not withheld for it, and its DeidentificationMethodCodeSequence
/// and DeidentificationMethod say the option was applied (code 113101).
pub fn deidentify_cleaned(
    deidentifier: &Deidentifier,
    data_set: &[u8],
    ts: &TransferSyntax,
    site: &str,
    prefix: Vec<u8>,
) -> Result<Outcome, InstanceError> {
    Ok(rewrite_with(deidentifier, data_set, ts, site, prefix, Pixels::Cleaned)?.joined(data_set))
}

/// What was done to an instance's pixel data before it was de-identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pixels {
    AsStored,
    Cleaned,
}

fn rewrite_with(
    deidentifier: &Deidentifier,
    data_set: &[u8],
    ts: &TransferSyntax,
    site: &str,
    prefix: Vec<u8>,
    pixels_were: Pixels,
) -> Result<Rewrite, InstanceError> {
    let deflated = matches!(ts.codec(), dicom_encoding::Codec::Dataset(_));
    let little_endian_plain = ts.endianness() == dicom_encoding::Endianness::Little && !deflated;
    let explicit_vr = ts.uid() != IMPLICIT_VR_LE;
    let split = if little_endian_plain { trailing_pixel_data(data_set, explicit_vr) } else { None };
    let read_head = |at: usize| {
        InMemDicomObject::read_dataset_with_ts(&data_set[..at], ts)
            .ok()
            // Pixel data before the split: the bytes found were not the last element after all.
            .filter(|head| head.get(dicom_dictionary_std::tags::PIXEL_DATA).is_none())
            .map(|head| (head, at))
    };
    let (mut object, unchanged_from) = match split.and_then(read_head) {
        Some(split) => split,
        None => (
            InMemDicomObject::read_dataset_with_ts(data_set, ts).map_err(|e| InstanceError::Read(e.to_string()))?,
            data_set.len(),
        ),
    };
    if pixels_were == Pixels::AsStored {
        if let Some(withheld) = burned_in::check(&object) {
            return Ok(Rewrite::Withheld(withheld));
        }
    }
    let report = deidentifier.apply(&mut object, site);
    if pixels_were == Pixels::Cleaned {
        crate::profile::stamp_clean_pixel_data(&mut object);
    }
    let mut front = prefix;
    front.reserve(unchanged_from + 1024);
    object.write_dataset_with_ts(&mut front, ts).map_err(|e| InstanceError::Write(e.to_string()))?;
    Ok(Rewrite::Rewritten { front, unchanged_from, object: Box::new(object), report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_leaves_the_pixel_data_where_it_is_and_joins_to_the_whole_instance() {
        use dicom_core::{DataElement, PrimitiveValue, VR};
        use dicom_dictionary_std::tags;
        use dicom_encoding::TransferSyntaxIndex;
        let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get("1.2.840.10008.1.2.1").expect("ts");
        let pixels: Vec<u8> = (0..4096u32).map(|i| (i % 251) as u8).collect();
        let object = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3")),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(pixels.clone())),
        ]);
        let mut data_set = Vec::new();
        object.write_dataset_with_ts(&mut data_set, ts).expect("written");
        let deidentifier = Deidentifier::new(
            crate::keys::ProjectKeys::derive(b"secret", "p"),
            crate::options::Options::parse(&[] as &[&str]).expect("options"),
        );
        let Rewrite::Rewritten { front, unchanged_from, .. } =
            rewrite(&deidentifier, &data_set, ts, "site", b"PREFIX".to_vec()).expect("rewritten")
        else {
            panic!("withheld")
        };
        // The pixel data element, header and value, is what follows unchanged.
        assert_eq!(&data_set[unchanged_from + 12..], &pixels[..]);
        assert!(front.starts_with(b"PREFIX"));
        assert!(!front.windows(8).any(|w| w == b"Doe^Jane"));
        let Outcome::Deidentified { bytes, .. } =
            deidentify(&deidentifier, &data_set, ts, "site", b"PREFIX".to_vec()).expect("deidentified")
        else {
            panic!("withheld")
        };
        assert_eq!(bytes, [&front[..], &data_set[unchanged_from..]].concat());
    }

    #[test]
    fn pixel_data_is_found_only_where_it_ends_the_data_set() {
        // (0028,0010) US 2, then (7FE0,0010) OW 4 bytes.
        let mut explicit = vec![0x28, 0x00, 0x10, 0x00, b'U', b'S', 2, 0, 0, 2];
        let at = explicit.len();
        explicit.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
        assert_eq!(trailing_pixel_data(&explicit, true), Some(at));
        // Something after the pixel data: no split.
        let mut trailing = explicit.clone();
        trailing.extend_from_slice(&[0xFC, 0xFF, 0xFC, 0xFF, b'O', b'B', 0, 0, 0, 0, 0, 0]);
        assert_eq!(trailing_pixel_data(&trailing, true), None);
        // The tag's bytes inside the pixel data itself are not taken for its header.
        let mut inside = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0, 8, 0, 0, 0];
        inside.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, 9, 9, 9, 9]);
        assert_eq!(trailing_pixel_data(&inside, true), Some(0));
        // Encapsulated: an item follows, a sequence delimiter ends.
        let mut encapsulated = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF];
        encapsulated.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        encapsulated.extend_from_slice(&SEQUENCE_DELIMITER);
        assert_eq!(trailing_pixel_data(&encapsulated, true), Some(0));
        // Encapsulated pixel data followed by another element that ends with a delimiter (a
        // private sequence of undefined length): not the last element, so no split.
        let mut followed = encapsulated.clone();
        followed.extend_from_slice(&[0xE1, 0x7F, 0x10, 0x10, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        followed.extend_from_slice(&SEQUENCE_DELIMITER);
        assert_eq!(trailing_pixel_data(&followed, true), None);
        // Implicit VR.
        let implicit = [0xE0, 0x7F, 0x10, 0x00, 2, 0, 0, 0, 7, 7];
        assert_eq!(trailing_pixel_data(&implicit, false), Some(0));
    }
}
