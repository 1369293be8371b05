//! Part-10 framing (PS3.10 §7.1): a 128-byte preamble, "DICM" and the file meta group around a
//! data set. Instances arrive from DIMSE as bare data sets and leave this crate as Part-10
//! bytes; instances to store arrive as Part-10 and go out as bare data sets. The data set bytes
//! are never re-encoded, so an instance passes through exactly as the PACS holds it.

use crate::error::DimseError;

/// Implementation Class UID (0002,0012) of this software.
pub const IMPLEMENTATION_CLASS_UID: &str = "2.25.141211633346490181896820934279979477649";
/// Implementation Version Name (0002,0013).
pub const IMPLEMENTATION_VERSION_NAME: &str = "FEDGW_0_1";

/// The identifying fields of a Part-10 file and where its data set starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part10Header {
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub transfer_syntax_uid: String,
    pub data_set_offset: usize,
}

/// Wraps a data set received in `transfer_syntax_uid` into Part-10 bytes.
pub fn wrap(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
    source_ae_title: &str,
    data_set: &[u8],
) -> Vec<u8> {
    let mut out = file_meta(sop_class_uid, sop_instance_uid, transfer_syntax_uid, source_ae_title, data_set.len());
    out.extend_from_slice(data_set);
    out
}

/// The preamble, "DICM" and a file meta group of ours, in a buffer with room for
/// `data_set_len` more bytes.
pub fn file_meta(
    sop_class_uid: &str,
    sop_instance_uid: &str,
    transfer_syntax_uid: &str,
    source_ae_title: &str,
    data_set_len: usize,
) -> Vec<u8> {
    let mut meta = Vec::with_capacity(256);
    put(&mut meta, 0x0001, b"OB", &[0x00, 0x01]);
    put_text(&mut meta, 0x0002, b"UI", sop_class_uid, 0);
    put_text(&mut meta, 0x0003, b"UI", sop_instance_uid, 0);
    put_text(&mut meta, 0x0010, b"UI", transfer_syntax_uid, 0);
    put_text(&mut meta, 0x0012, b"UI", IMPLEMENTATION_CLASS_UID, 0);
    put_text(&mut meta, 0x0013, b"SH", IMPLEMENTATION_VERSION_NAME, b' ');
    if !source_ae_title.is_empty() {
        put_text(&mut meta, 0x0016, b"AE", source_ae_title, b' ');
    }
    let mut out = Vec::with_capacity(132 + 12 + meta.len() + data_set_len);
    out.extend_from_slice(&[0u8; 128]);
    out.extend_from_slice(b"DICM");
    put(&mut out, 0x0000, b"UL", &(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(&meta);
    out
}

/// Every VR of PS3.5 Table 6.2-1.
const KNOWN_VRS: [[u8; 2]; 34] = [
    *b"AE", *b"AS", *b"AT", *b"CS", *b"DA", *b"DS", *b"DT", *b"FL", *b"FD", *b"IS", *b"LO", *b"LT", *b"OB", *b"OD",
    *b"OF", *b"OL", *b"OV", *b"OW", *b"PN", *b"SH", *b"SL", *b"SQ", *b"SS", *b"ST", *b"SV", *b"TM", *b"UC", *b"UI",
    *b"UL", *b"UN", *b"UR", *b"US", *b"UT", *b"UV",
];

/// The VRs whose explicit-VR header has a 4-byte length (PS3.5 Table 7.1-1).
const LONG_VRS: [[u8; 2]; 13] =
    [*b"OB", *b"OD", *b"OF", *b"OL", *b"OV", *b"OW", *b"SQ", *b"SV", *b"UC", *b"UN", *b"UR", *b"UT", *b"UV"];

/// Reads the file meta group of Part-10 bytes (explicit VR little endian by definition).
pub fn parse_header(bytes: &[u8]) -> Result<Part10Header, DimseError> {
    let invalid = |why: &str| DimseError::InvalidInstance(why.to_owned());
    if bytes.len() < 132 || &bytes[128..132] != b"DICM" {
        return Err(invalid("not a Part-10 file: no DICM prefix after the preamble"));
    }
    let mut pos = 132;
    let (mut sop_class, mut sop_instance, mut transfer_syntax) = (None, None, None);
    let mut group_length = None;
    loop {
        let header = bytes.get(pos..pos + 8).ok_or_else(|| invalid("file meta group is truncated"))?;
        let group = u16::from_le_bytes([header[0], header[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([header[2], header[3]]);
        let vr = &header[4..6];
        // A VR that is none of PS3.5's is refused: a parser that guesses its length form (2 or
        // 4 bytes) would read a different length than this one, possibly one of gigabytes.
        if !KNOWN_VRS.contains(&[vr[0], vr[1]]) {
            return Err(invalid("file meta element with an unknown VR"));
        }
        let (len, value_start) = if LONG_VRS.contains(&[vr[0], vr[1]]) {
            let long = bytes.get(pos + 8..pos + 12).ok_or_else(|| invalid("file meta group is truncated"))?;
            (u32::from_le_bytes([long[0], long[1], long[2], long[3]]) as usize, pos + 12)
        } else {
            (u16::from_le_bytes([header[6], header[7]]) as usize, pos + 8)
        };
        let value = bytes
            .get(value_start..value_start.saturating_add(len))
            .ok_or_else(|| invalid("file meta element runs past the end"))?;
        let text = || String::from_utf8_lossy(value).trim_end_matches(['\0', ' ']).to_owned();
        match element {
            0x0000 if pos == 132 && len == 4 => {
                group_length = Some(u32::from_le_bytes([value[0], value[1], value[2], value[3]]) as usize)
            }
            0x0002 => sop_class = Some(text()),
            0x0003 => sop_instance = Some(text()),
            0x0010 => transfer_syntax = Some(text()),
            _ => {}
        }
        pos = value_start + len;
    }
    // dicom-object reads the group by its length, whatever the elements' groups: where the two
    // readings differ, the data set checked here would not be the one parsed there.
    if group_length.is_some_and(|length| 132 + 12 + length != pos) {
        return Err(invalid("file meta group length disagrees with the group's elements"));
    }
    Ok(Part10Header {
        sop_class_uid: sop_class.ok_or_else(|| invalid("no MediaStorageSOPClassUID"))?,
        sop_instance_uid: sop_instance.ok_or_else(|| invalid("no MediaStorageSOPInstanceUID"))?,
        transfer_syntax_uid: transfer_syntax.ok_or_else(|| invalid("no TransferSyntaxUID"))?,
        data_set_offset: pos,
    })
}

/// Part-10 bytes for what an archive served as an instance without the Part-10 framing (some
/// keep what they were sent as it came, and serve it so: Orthanc does): a file meta group
/// without its preamble gets one; a bare data set gets a header made from its SOP Class and
/// Instance UIDs and its encoding, explicit VR when the bytes after its first tag are a VR (big
/// endian when that tag, group 0008, reads so), else implicit little endian (as DCMTK reads such
/// files). `None` when the bytes are neither.
pub fn reframe(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.get(..2) == Some(&[0x02, 0x00]) {
        let mut framed = Vec::with_capacity(132 + bytes.len());
        framed.extend_from_slice(&[0u8; 128]);
        framed.extend_from_slice(b"DICM");
        framed.extend_from_slice(bytes);
        return parse_header(&framed).is_ok().then_some(framed);
    }
    let explicit = bytes.get(4..6).is_some_and(|vr| KNOWN_VRS.contains(&[vr[0], vr[1]]));
    // Explicit VR Big Endian (retired, but archives keep such files): its first group, 0008,
    // reads as 0800 little endian.
    let big_endian = explicit && bytes.get(..2) == Some(&[0x00, 0x08]);
    let u16_of = |b: [u8; 2]| if big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) };
    let u32_of = |b: [u8; 4]| if big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) };
    let (mut sop_class, mut sop_instance) = (None, None);
    let mut pos = 0usize;
    // The UIDs are among the first elements, in group 0008, before any sequence of undefined
    // length could stop the reading.
    while sop_class.is_none() || sop_instance.is_none() {
        let header = bytes.get(pos..pos + 8)?;
        let (group, element) = (u16_of([header[0], header[1]]), u16_of([header[2], header[3]]));
        if group > 0x0008 {
            return None;
        }
        let (len, value_start) = match explicit {
            true if !KNOWN_VRS.contains(&[header[4], header[5]]) => return None,
            true if LONG_VRS.contains(&[header[4], header[5]]) => {
                let long = bytes.get(pos + 8..pos + 12)?;
                (u32_of([long[0], long[1], long[2], long[3]]), pos + 12)
            }
            true => (u32::from(u16_of([header[6], header[7]])), pos + 8),
            false => (u32::from_le_bytes([header[4], header[5], header[6], header[7]]), pos + 8),
        };
        let value = bytes.get(value_start..value_start.checked_add(usize::try_from(len).ok()?)?)?;
        let text = || Some(std::str::from_utf8(value).ok()?.trim_end_matches(['\0', ' ']).to_owned());
        match (group, element) {
            (0x0008, 0x0016) => sop_class = text(),
            (0x0008, 0x0018) => sop_instance = text(),
            _ => {}
        }
        pos = value_start + value.len();
    }
    let syntax = match (explicit, big_endian) {
        (true, true) => crate::syntax::EXPLICIT_VR_BE,
        (true, false) => "1.2.840.10008.1.2.1",
        (false, _) => "1.2.840.10008.1.2",
    };
    Some(wrap(sop_class.as_deref()?, sop_instance.as_deref()?, syntax, "", bytes))
}

fn put(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &[u8]) {
    out.extend_from_slice(&0x0002u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(vr);
    if vr == b"OB" {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(value);
}

fn put_text(out: &mut Vec<u8>, element: u16, vr: &[u8; 2], value: &str, pad: u8) {
    let mut bytes = value.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(pad);
    }
    put(out, element, vr, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_then_parse_round_trips_and_dicom_object_reads_it() {
        let data_set: Vec<u8> = {
            // (0008,0016) SOPClassUID and (0008,0018) SOPInstanceUID, explicit VR LE.
            let mut d = Vec::new();
            for (element, value) in [(0x0016u16, "1.2.840.10008.5.1.4.1.1.7\0"), (0x0018, "1.2.3.4\0")] {
                d.extend_from_slice(&0x0008u16.to_le_bytes());
                d.extend_from_slice(&element.to_le_bytes());
                d.extend_from_slice(b"UI");
                d.extend_from_slice(&(value.len() as u16).to_le_bytes());
                d.extend_from_slice(value.as_bytes());
            }
            d
        };
        let bytes = wrap("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4", "1.2.840.10008.1.2.1", "SITE", &data_set);
        let header = parse_header(&bytes).expect("parses");
        assert_eq!(header.sop_class_uid, "1.2.840.10008.5.1.4.1.1.7");
        assert_eq!(header.sop_instance_uid, "1.2.3.4");
        assert_eq!(header.transfer_syntax_uid, "1.2.840.10008.1.2.1");
        assert_eq!(&bytes[header.data_set_offset..], &data_set[..]);
        let obj = dicom_object::from_reader(&bytes[128..]).expect("dicom-object reads it");
        assert_eq!(obj.meta().media_storage_sop_instance_uid(), "1.2.3.4");
    }

    /// Fuzzing found it: a Transfer Syntax UID element whose VR was damaged to "UA" passed
    /// here (read with a 2-byte length) while dicom-object read a 4-byte length of 775 MB and
    /// allocated it. Unknown VRs are refused, and every 4-byte-length VR is read as one.
    #[test]
    fn unknown_vrs_are_refused_and_long_vrs_read_as_long() {
        let good = wrap("1.2", "1.3", "1.2.840.10008.1.2", "", &[]);
        let at = good.windows(4).position(|w| w == [0x02, 0x00, 0x10, 0x00]).expect("(0002,0010)");
        let mut damaged = good.clone();
        damaged[at + 4..at + 6].copy_from_slice(b"UA");
        let refused = parse_header(&damaged).expect_err("unknown VR");
        assert!(refused.to_string().contains("unknown VR"), "{refused}");
        // (0002,0100) UR with a 4-byte length of 4 (its reserved bytes zero) before the end.
        let mut long = good[..good.len()].to_vec();
        long.extend_from_slice(&[0x02, 0x00, 0x00, 0x01, b'U', b'R', 0, 0, 4, 0, 0, 0, b'a', b'b', b'c', b'd']);
        grow_group_length(&mut long, 16);
        let data_set_offset = long.len();
        long.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 0, 0]);
        let header = parse_header(&long).expect("UR read with its 4-byte length");
        assert_eq!(header.data_set_offset, data_set_offset);
    }

    /// Adds `more` to the (0002,0000) File Meta Information Group Length that `wrap` writes first.
    fn grow_group_length(file: &mut [u8], more: u32) {
        assert_eq!(&file[132..140], &[0x02, 0x00, 0x00, 0x00, b'U', b'L', 4, 0]);
        let length = u32::from_le_bytes([file[140], file[141], file[142], file[143]]) + more;
        file[140..144].copy_from_slice(&length.to_le_bytes());
    }

    /// Fuzzing found it: a group length that also covered an element of group 0003 after the
    /// meta elements. dicom-object reads the meta group by its length, so its data set began 20
    /// bytes later than the one whose lengths were checked here, and it allocated a claimed
    /// 825 MB. A group length that disagrees with the group's elements is refused.
    #[test]
    fn a_group_length_that_disagrees_with_the_elements_is_refused() {
        let good = wrap("1.2", "1.3", "1.2.840.10008.1.2.1", "", &[0x08, 0x00, 0x16, 0x00, b'U', b'I', 0, 0]);
        assert!(parse_header(&good).is_ok());
        for more in [2u32, 22] {
            let mut longer = good.clone();
            grow_group_length(&mut longer, more);
            let refused = parse_header(&longer).expect_err("group length past the group");
            assert!(refused.to_string().contains("group length"), "{refused}");
        }
        let mut shorter = good.clone();
        shorter[140] -= 4;
        assert!(parse_header(&shorter).is_err(), "group length short of the group");
    }

    /// A data set of (0008,0005), (0008,0016) and (0008,0018), explicit or implicit VR.
    fn bare(explicit: bool) -> Vec<u8> {
        let mut d = Vec::new();
        for (element, vr, value) in [
            (0x0005u16, b"CS", "ISO_IR 100"),
            (0x0016, b"UI", "1.2.840.10008.5.1.4.1.1.7\0"),
            (0x0018, b"UI", "1.2.3.4\0"),
        ] {
            d.extend_from_slice(&0x0008u16.to_le_bytes());
            d.extend_from_slice(&element.to_le_bytes());
            if explicit {
                d.extend_from_slice(vr);
                d.extend_from_slice(&(value.len() as u16).to_le_bytes());
            } else {
                d.extend_from_slice(&(value.len() as u32).to_le_bytes());
            }
            d.extend_from_slice(value.as_bytes());
        }
        d.extend_from_slice(&[0x10, 0x00, 0x10, 0x00]);
        d.extend_from_slice(if explicit { &[b'P', b'N', 0, 0] } else { &[0, 0, 0, 0] });
        d
    }

    #[test]
    fn a_data_set_served_without_its_framing_is_framed_again() {
        for (explicit, syntax) in [(true, "1.2.840.10008.1.2.1"), (false, "1.2.840.10008.1.2")] {
            let data_set = bare(explicit);
            let framed = reframe(&data_set).expect("framed");
            let header = parse_header(&framed).expect("a Part-10 header");
            assert_eq!(
                (header.sop_class_uid.as_str(), header.sop_instance_uid.as_str()),
                ("1.2.840.10008.5.1.4.1.1.7", "1.2.3.4")
            );
            assert_eq!(header.transfer_syntax_uid, syntax);
            assert_eq!(&framed[header.data_set_offset..], &data_set[..]);
            dicom_object::from_reader(&framed[128..]).expect("dicom-object reads it");
        }
        // Explicit VR Big Endian (pydicom's ExplVR_BigEndNoMeta.dcm is such a file).
        let mut big = Vec::new();
        for (element, value) in [(0x0016u16, "1.2.840.10008.5.1.4.1.1.7\0"), (0x0018, "1.2.3.4\0")] {
            big.extend_from_slice(&0x0008u16.to_be_bytes());
            big.extend_from_slice(&element.to_be_bytes());
            big.extend_from_slice(b"UI");
            big.extend_from_slice(&(value.len() as u16).to_be_bytes());
            big.extend_from_slice(value.as_bytes());
        }
        let framed = reframe(&big).expect("framed");
        let header = parse_header(&framed).expect("a Part-10 header");
        assert_eq!(
            (header.sop_instance_uid.as_str(), header.transfer_syntax_uid.as_str()),
            ("1.2.3.4", "1.2.840.10008.1.2.2")
        );
        dicom_object::from_reader(&framed[128..]).expect("dicom-object reads it");
        // A meta group without its preamble gets the preamble back.
        let file = wrap("1.2", "1.3", "1.2.840.10008.1.2.1", "", &bare(true));
        assert_eq!(reframe(&file[132..]).expect("framed"), file);
        // Neither: none.
        assert!(reframe(b"not DICOM at all, not even close").is_none());
        assert!(reframe(&bare(true)[..30]).is_none(), "cut before its SOP Instance UID");
        let mut no_uids = bare(false);
        no_uids.drain(..no_uids.len() - 8);
        assert!(reframe(&no_uids).is_none(), "group 0010 first: no UIDs");
    }

    #[test]
    fn rejects_non_part10_and_truncated_meta() {
        assert!(parse_header(b"short").is_err());
        assert!(parse_header(&[0u8; 200]).is_err());
        let good = wrap("1.2", "1.3", "1.2.840.10008.1.2", "", &[]);
        for cut in [133, 140, 150, good.len() - 3] {
            assert!(parse_header(&good[..cut]).is_err(), "cut at {cut}");
        }
    }
}
