//! Query/Retrieve levels and identifiers: the data sets carried by C-FIND, C-GET and C-MOVE
//! requests and C-FIND responses, encoded in the presentation context's transfer syntax.

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

use dicomweb_model::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};

use crate::data_set_check::{check_data_set, Encoding};
use crate::dimse::DimseProtocolError;

/// QueryRetrieveLevel (0008,0052) of the Study Root information model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryLevel {
    Study,
    Series,
    Image,
}

impl QueryLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryLevel::Study => "STUDY",
            QueryLevel::Series => "SERIES",
            QueryLevel::Image => "IMAGE",
        }
    }
}

/// What a C-GET or C-MOVE retrieves: a study, a series of it, or instances of a series.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RetrieveTarget {
    pub study: StudyInstanceUid,
    pub series: Option<SeriesInstanceUid>,
    /// Instances (UID list matching); empty for a whole study or series.
    pub instances: Vec<SopInstanceUid>,
}

impl RetrieveTarget {
    pub fn study(study: StudyInstanceUid) -> Self {
        RetrieveTarget { study, series: None, instances: Vec::new() }
    }

    pub fn series(study: StudyInstanceUid, series: SeriesInstanceUid) -> Self {
        RetrieveTarget { study, series: Some(series), instances: Vec::new() }
    }

    pub fn instances(
        study: StudyInstanceUid,
        series: Option<SeriesInstanceUid>,
        instances: Vec<SopInstanceUid>,
    ) -> Self {
        RetrieveTarget { study, series, instances }
    }

    pub fn level(&self) -> QueryLevel {
        if !self.instances.is_empty() {
            QueryLevel::Image
        } else if self.series.is_some() {
            QueryLevel::Series
        } else {
            QueryLevel::Study
        }
    }

    /// The C-GET / C-MOVE identifier: the level and the unique keys down to it.
    pub fn identifier(&self) -> InMemDicomObject {
        let mut identifier = InMemDicomObject::new_empty();
        identifier.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, self.level().as_str()));
        identifier.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, self.study.as_str()));
        if let Some(series) = &self.series {
            identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, series.as_str()));
        }
        if !self.instances.is_empty() {
            let uids: Vec<String> = self.instances.iter().map(|u| u.as_str().to_owned()).collect();
            identifier.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::Strs(uids.into())));
        }
        identifier
    }
}

/// Sets QueryRetrieveLevel on a C-FIND identifier.
pub fn with_level(mut identifier: InMemDicomObject, level: QueryLevel) -> InMemDicomObject {
    identifier.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level.as_str()));
    identifier
}

pub(crate) fn encode_identifier(
    identifier: &InMemDicomObject,
    transfer_syntax: &str,
) -> Result<Vec<u8>, DimseProtocolError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or(DimseProtocolError::MalformedCommand("identifier transfer syntax unknown"))?;
    let mut out = Vec::new();
    identifier
        .write_dataset_with_ts(&mut out, ts)
        .map_err(|_| DimseProtocolError::MalformedCommand("identifier cannot be encoded"))?;
    Ok(out)
}

pub(crate) fn decode_identifier(bytes: &[u8], transfer_syntax: &str) -> Result<InMemDicomObject, DimseProtocolError> {
    let ts = TransferSyntaxRegistry
        .get(transfer_syntax)
        .ok_or(DimseProtocolError::MalformedCommand("identifier transfer syntax unknown"))?;
    // Walked before it is parsed: a PACS's nesting depth must not exhaust the parser's stack,
    // nor a length it claims be allocated.
    check_data_set(bytes, Encoding::of(transfer_syntax), IDENTIFIER_MAX_DEPTH)
        .map_err(|_| DimseProtocolError::MalformedCommand("identifier data set is malformed or nested too deep"))?;
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|_| DimseProtocolError::MalformedCommand("identifier data set cannot be parsed"))
}

/// The deepest sequence nesting accepted in a C-FIND identifier (as `dataset_limits`' default).
const IDENTIFIER_MAX_DEPTH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::{EXPLICIT_VR_LE, IMPLICIT_VR_LE};

    /// An identifier of `levels` sequences nested in sequences (undefined lengths), implicit VR.
    fn nested_identifier(levels: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..levels {
            // (0008,1115) ReferencedSeriesSequence, then an item, both of undefined length.
            out.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]);
            out.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        out
    }

    /// A PACS's C-FIND response nested a hundred thousand levels deep is refused by the walk
    /// (on a small stack: the parser, recursing per level, would overflow it and abort the
    /// process); one within the bound still reaches the parser.
    #[test]
    fn identifiers_nested_too_deep_are_refused_before_parsing() {
        let deep = nested_identifier(100_000);
        let refused = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || decode_identifier(&deep, IMPLICIT_VR_LE).map(|_| ()))
            .expect("thread")
            .join()
            .expect("no stack overflow");
        assert!(refused.is_err());
        let mut shallow = nested_identifier(3);
        for _ in 0..3 {
            shallow.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]); // item delimitation
            shallow.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]); // sequence delimitation
        }
        assert!(decode_identifier(&shallow, IMPLICIT_VR_LE).is_ok());
    }

    #[test]
    fn retrieve_identifiers_carry_the_keys_of_their_level() {
        let study = StudyInstanceUid::new("1.2.3").expect("uid");
        let series = SeriesInstanceUid::new("1.2.3.4").expect("uid");
        let instances =
            vec![SopInstanceUid::new("1.2.3.4.5").expect("uid"), SopInstanceUid::new("1.2.3.4.6").expect("uid")];
        let target = RetrieveTarget::instances(study.clone(), Some(series.clone()), instances);
        assert_eq!(target.level(), QueryLevel::Image);
        for ts in [EXPLICIT_VR_LE, IMPLICIT_VR_LE] {
            let bytes = encode_identifier(&target.identifier(), ts).expect("encodes");
            let back = decode_identifier(&bytes, ts).expect("decodes");
            let level = back.element(tags::QUERY_RETRIEVE_LEVEL).expect("level").to_str().expect("str");
            assert_eq!(level.trim(), "IMAGE");
            let uids = back.element(tags::SOP_INSTANCE_UID).expect("uids").to_multi_str().expect("strs");
            assert_eq!(uids.len(), 2);
        }
        assert_eq!(RetrieveTarget::series(study.clone(), series).level(), QueryLevel::Series);
        assert_eq!(RetrieveTarget::study(study).level(), QueryLevel::Study);
    }

    #[test]
    fn garbage_identifier_is_an_error_not_a_panic() {
        // An element whose value runs past the end, and one with a nonsense VR.
        for bytes in [&b"\x08\x00\x52\x00CS\x10\x00STUDY"[..], &b"\x08\x00\x52\x00\xff\xff\xff\x7f"[..]] {
            assert!(decode_identifier(bytes, EXPLICIT_VR_LE).is_err());
        }
    }
}
