//! The walk over a DICOM data set's element headers that bounds it before anything parses it:
//! sequences nested at most `max_depth` deep (dicom-object's parser recurses once per level),
//! no value length that claims more bytes than remain (the parser allocates a value's length
//! before reading it), VRs of PS3.5 only, and binary values of whole numbers and tags (the
//! parser reads the whole ones and counts the rest as read, then reads on out of step). The walk keeps its own stack: a hostile nesting
//! depth cannot exhaust the thread's. Used for instances (by the gateway, with its
//! configured bounds) and for the C-FIND identifiers a PACS sends.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

use crate::syntax::{EXPLICIT_VR_BE, IMPLICIT_VR_LE};

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Why a data set is refused. Messages name tags and sizes, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContentLimitError {
    #[error("sequences are nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("element ({group:04X},{element:04X}) claims {length} bytes where {remaining} remain")]
    LengthPastEnd { group: u16, element: u16, length: u32, remaining: usize },
    #[error("the deflated data set inflates to more than {0} bytes")]
    InflatedTooLarge(u64),
    #[error("the deflated data set cannot be inflated: {0}")]
    Inflate(String),
    #[error("the data set is malformed: {0}")]
    Malformed(&'static str),
    #[error("element ({group:04X},{element:04X}) of VR {vr} has {length} bytes, not a multiple of {unit}")]
    PartialValue { group: u16, element: u16, vr: &'static str, length: u32, unit: u32 },
    #[error(
        "a frame of {rows} rows x {columns} columns x {samples} samples x {bits} bits is larger than {limit} bytes"
    )]
    FrameTooLarge { rows: u64, columns: u64, samples: u64, bits: u64, limit: u64 },
    #[error("{frames} frames of {frame_size} bytes decode to more than {limit} bytes")]
    DecodedTooLarge { frames: u64, frame_size: u64, limit: u64 },
}

/// How the data set after the file meta group is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    pub explicit: bool,
    pub big_endian: bool,
}

impl Encoding {
    /// The encoding of a transfer syntax's data set (after inflating, for the deflated one).
    pub fn of(transfer_syntax: &str) -> Encoding {
        match transfer_syntax {
            IMPLICIT_VR_LE => Encoding { explicit: false, big_endian: false },
            EXPLICIT_VR_BE => Encoding { explicit: true, big_endian: true },
            _ => Encoding { explicit: true, big_endian: false },
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Container {
    /// A sequence's items; `explicit` is the encoding of their content.
    Sequence {
        end: Option<usize>,
        explicit: bool,
    },
    Item {
        end: Option<usize>,
        explicit: bool,
    },
    /// Encapsulated pixel data: items of raw bytes.
    Fragments,
}

impl Container {
    fn end(&self) -> Option<usize> {
        match self {
            Container::Sequence { end, .. } | Container::Item { end, .. } => *end,
            Container::Fragments => None,
        }
    }
}

/// Walks every element header of a data set (without its file meta group) and checks nesting
/// depth and lengths.
pub fn check_data_set(data: &[u8], encoding: Encoding, max_depth: usize) -> Result<(), ContentLimitError> {
    check_data_set_visiting(data, encoding, max_depth, &mut |_, _| {})
}

/// [`check_data_set`], showing `visit` each top-level element of defined length outside any
/// sequence (its tag and value bytes) as the walk passes it: what the data set says it is
/// (its UIDs), read on the walk that bounds it.
pub fn check_data_set_visiting(
    data: &[u8],
    encoding: Encoding,
    max_depth: usize,
    visit: &mut dyn FnMut(Tag, &[u8]),
) -> Result<(), ContentLimitError> {
    let u16_at = |at: usize| {
        let b = [data[at], data[at + 1]];
        if encoding.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |at: usize| {
        let b = [data[at], data[at + 1], data[at + 2], data[at + 3]];
        if encoding.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let mut stack: Vec<Container> = Vec::new();
    let mut depth = 0usize;
    let mut pos = 0usize;
    loop {
        // Containers of defined length that end here are closed.
        while let Some(top) = stack.last() {
            if top.end() != Some(pos) {
                break;
            }
            if matches!(top, Container::Sequence { .. }) {
                depth -= 1;
            }
            stack.pop();
        }
        let limit = stack.iter().rev().find_map(Container::end).unwrap_or(data.len());
        let remaining = limit - pos;
        if remaining == 0 {
            return if stack.is_empty() {
                Ok(())
            } else {
                Err(ContentLimitError::Malformed("it ends inside a sequence"))
            };
        }
        if remaining < 8 {
            // Trailing bytes after the last element are the parser's to judge; inside a
            // container they are an error.
            return if stack.is_empty() {
                Ok(())
            } else {
                Err(ContentLimitError::Malformed("an element header is truncated"))
            };
        }
        let (group, element) = (u16_at(pos), u16_at(pos + 2));
        let past_end =
            |length: u32, remaining: usize| ContentLimitError::LengthPastEnd { group, element, length, remaining };
        if group == 0xFFFE {
            let length = u32_at(pos + 4);
            pos += 8;
            let remaining = limit - pos;
            match (element, stack.last().copied()) {
                (0xE000, Some(Container::Fragments)) => {
                    if length as usize > remaining {
                        return Err(past_end(length, remaining));
                    }
                    pos += length as usize;
                }
                (0xE000, Some(Container::Sequence { explicit, .. })) => {
                    let end = if length == UNDEFINED {
                        None
                    } else if length as usize > remaining {
                        return Err(past_end(length, remaining));
                    } else {
                        Some(pos + length as usize)
                    };
                    stack.push(Container::Item { end, explicit });
                }
                (0xE00D, Some(Container::Item { end: None, .. })) => {
                    stack.pop();
                }
                // A delimiter inside a container of defined length is redundant.
                (0xE00D, Some(Container::Item { .. })) | (0xE0DD, Some(Container::Sequence { end: Some(_), .. })) => {}
                (0xE0DD, Some(Container::Sequence { end: None, .. })) => {
                    depth -= 1;
                    stack.pop();
                }
                (0xE0DD, Some(Container::Fragments)) => {
                    stack.pop();
                }
                _ => return Err(ContentLimitError::Malformed("an item or delimiter is out of place")),
            }
            continue;
        }
        if matches!(stack.last(), Some(Container::Sequence { .. } | Container::Fragments)) {
            return Err(ContentLimitError::Malformed("an element stands where an item belongs"));
        }
        let explicit = match stack.last() {
            Some(Container::Item { explicit, .. }) => *explicit,
            _ => encoding.explicit,
        };
        let (vr, length, header) = if explicit {
            let vr = VR::from_binary([data[pos + 4], data[pos + 5]]);
            // An unknown VR leaves its length form (2 or 4 bytes) to a guess, and the parser's
            // guess may be a length of gigabytes, allocated before reading (found by fuzzing).
            if vr.is_none() {
                return Err(ContentLimitError::Malformed("an element has an unknown VR"));
            }
            let long = matches!(
                vr,
                Some(
                    VR::OB
                        | VR::OD
                        | VR::OF
                        | VR::OL
                        | VR::OV
                        | VR::OW
                        | VR::SQ
                        | VR::SV
                        | VR::UC
                        | VR::UN
                        | VR::UR
                        | VR::UT
                        | VR::UV
                )
            );
            if long {
                if remaining < 12 {
                    return Err(ContentLimitError::Malformed("an element header is truncated"));
                }
                (vr, u32_at(pos + 8), 12)
            } else {
                (vr, u32::from(u16_at(pos + 6)), 8)
            }
        } else {
            // The VR the parser will take: the dictionary's, the commoner one where it depends
            // on context.
            let vr = StandardDataDictionary.by_tag(Tag(group, element)).map(|e| e.vr().relaxed());
            (vr, u32_at(pos + 4), 8)
        };
        pos += header;
        let remaining = limit - pos;
        let mut open = |container: Container, stack: &mut Vec<Container>| {
            if matches!(container, Container::Sequence { .. }) {
                depth += 1;
                if depth > max_depth {
                    return Err(ContentLimitError::TooDeep(max_depth));
                }
            }
            stack.push(container);
            Ok(())
        };
        if length == UNDEFINED {
            let container = match (explicit, vr) {
                (true, Some(VR::SQ)) | (false, _) if (group, element) != (0x7FE0, 0x0010) => {
                    Container::Sequence { end: None, explicit }
                }
                // Unknown content of undefined length is Implicit VR Little Endian (PS3.5 §6.2.2).
                (true, Some(VR::UN)) => Container::Sequence { end: None, explicit: false },
                (_, Some(VR::OB | VR::OW)) | (false, _) => Container::Fragments,
                _ => return Err(ContentLimitError::Malformed("an element of this VR has an undefined length")),
            };
            open(container, &mut stack)?;
            continue;
        }
        if length as usize > remaining {
            return Err(past_end(length, remaining));
        }
        if let Some((vr, unit)) = vr.and_then(|vr| Some((vr, binary_unit(vr)?))) {
            // A broken tail is harmless only where nothing follows it to be read out of step.
            let last = stack.is_empty() && pos + length as usize == data.len();
            if length % unit != 0 && !last {
                return Err(ContentLimitError::PartialValue { group, element, vr: vr.to_string(), length, unit });
            }
        }
        if vr == Some(VR::SQ) {
            open(Container::Sequence { end: Some(pos + length as usize), explicit }, &mut stack)?;
        } else {
            if stack.is_empty() {
                visit(Tag(group, element), &data[pos..pos + length as usize]);
            }
            pos += length as usize;
        }
    }
}

/// The size of one value of a binary VR that the parser reads as whole numbers (or tags).
fn binary_unit(vr: VR) -> Option<u32> {
    match vr {
        VR::US | VR::SS | VR::OW => Some(2),
        VR::UL | VR::SL | VR::FL | VR::OF | VR::OL | VR::AT => Some(4),
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => Some(8),
        _ => None,
    }
}
