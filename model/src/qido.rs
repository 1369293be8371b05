//! QIDO-RS query parameters (PS3.18 §8.3.4, §10.6.1): attribute matching by keyword or tag
//! (including one level of sequence matching), `includefield`, `limit`, `offset` and
//! `fuzzymatching`, parsed and checked before anything reaches a PACS.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// A matching key: the attribute (a path when it sits in a sequence) and the value to match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchKey {
    pub path: Vec<Tag>,
    pub vr: VR,
    pub value: String,
}

/// What `includefield` asked for beyond the attributes each level always returns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum IncludeFields {
    #[default]
    Default,
    All,
    List(Vec<Tag>),
}

impl IncludeFields {
    /// Asks for `tag` too (nothing changes under `all`).
    pub fn add(&mut self, tag: Tag) {
        match self {
            IncludeFields::All => {}
            IncludeFields::Default => *self = IncludeFields::List(vec![tag]),
            IncludeFields::List(tags) if !tags.contains(&tag) => tags.push(tag),
            IncludeFields::List(_) => {}
        }
    }
}

/// A parsed QIDO-RS query.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct QidoQuery {
    pub matches: Vec<MatchKey>,
    pub include: IncludeFields,
    pub limit: Option<usize>,
    pub offset: usize,
    pub fuzzy_matching: bool,
}

/// A query parameter that cannot be honoured; the message names it and says why, so it can
/// go back to the client as a 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {parameter:?}: {reason}")]
pub struct QidoError {
    pub parameter: String,
    pub reason: String,
}

fn error(parameter: &str, reason: impl Into<String>) -> QidoError {
    QidoError { parameter: parameter.to_owned(), reason: reason.into() }
}

/// An attribute by keyword (`PatientName`) or tag (`00100010`), with its VR.
pub fn attribute(name: &str) -> Option<(Tag, VR)> {
    let tag = if name.len() == 8 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
        let group = u16::from_str_radix(&name[..4], 16).ok()?;
        let element = u16::from_str_radix(&name[4..], 16).ok()?;
        Tag(group, element)
    } else {
        StandardDataDictionary.by_name(name)?.tag()
    };
    let vr = StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()).unwrap_or(VR::UN);
    Some((tag, vr))
}

/// Parses a query string (without the leading `?`).
pub fn parse(query: &str) -> Result<QidoQuery, QidoError> {
    let mut parsed = QidoQuery::default();
    let mut include = Vec::new();
    let mut include_all = false;
    for (name, value) in form_urlencoded::parse(query.as_bytes()) {
        let (name, value) = (name.as_ref(), value.as_ref());
        match name {
            "includefield" => {
                for field in value.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if field == "all" {
                        include_all = true;
                    } else {
                        let (tag, _) =
                            attribute(field).ok_or_else(|| error(name, format!("unknown attribute {field:?}")))?;
                        include.push(tag);
                    }
                }
            }
            "limit" => {
                parsed.limit = Some(value.parse().map_err(|_| error(name, "must be a non-negative integer"))?);
            }
            "offset" => {
                parsed.offset = value.parse().map_err(|_| error(name, "must be a non-negative integer"))?;
            }
            "fuzzymatching" => {
                parsed.fuzzy_matching = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(error(name, "must be true or false")),
                }
            }
            _ => {
                let mut path = Vec::new();
                let mut vr = VR::UN;
                for step in name.split('.') {
                    let (tag, step_vr) = attribute(step).ok_or_else(|| error(name, "unknown attribute"))?;
                    path.push(tag);
                    vr = step_vr;
                }
                // Command (0000), file meta (0002), the illegal odd groups below 0008 and the item
                // delimiters (FFFE) are no attributes of a data set: an identifier holding them
                // cannot be encoded (they would precede its Specific Character Set).
                if path.iter().any(|tag| tag.group() < 0x0008 || tag.group() == 0xFFFE) {
                    return Err(error(name, "not an attribute of a data set"));
                }
                if path.len() > 2 {
                    return Err(error(name, "only one level of sequence matching is supported"));
                }
                if path.len() == 2 && StandardDataDictionary.by_tag(path[0]).map(|e| e.vr().relaxed()) != Some(VR::SQ) {
                    return Err(error(name, "only a sequence attribute may be followed by '.'"));
                }
                if vr == VR::SQ {
                    return Err(error(name, "a sequence cannot be matched by value; name an attribute inside it"));
                }
                if value.is_empty() {
                    // Universal matching (PS3.4 C.2.2.2.3): a return key, as `includefield`.
                    include.push(path[0]);
                    continue;
                }
                if parsed.matches.iter().any(|m| m.path == path) {
                    return Err(error(name, "given more than once"));
                }
                let value = normalize(name, vr, value)?;
                parsed.matches.push(MatchKey { path, vr, value });
            }
        }
    }
    parsed.include = if include_all {
        IncludeFields::All
    } else if include.is_empty() {
        IncludeFields::Default
    } else {
        IncludeFields::List(include)
    };
    Ok(parsed)
}

/// Checks a matching value against its VR and turns QIDO's UID lists (commas) into DICOM's
/// (backslashes).
fn normalize(name: &str, vr: VR, value: &str) -> Result<String, QidoError> {
    // Specific Character Set extends only these VRs (PS3.5 §6.1.2.3); the others are ASCII.
    let extended = matches!(vr, VR::SH | VR::LO | VR::ST | VR::LT | VR::UC | VR::UT | VR::PN);
    if !extended && !value.is_ascii() {
        return Err(error(name, format!("a {vr:?} value can only hold ASCII characters")));
    }
    if value.contains('\\') && vr != VR::UI {
        return Err(error(name, "a backslash is not allowed in a matching value"));
    }
    match vr {
        VR::UI => {
            let uids: Vec<&str> = value.split([',', '\\']).collect();
            for uid in &uids {
                crate::Uid::new(uid).map_err(|e| error(name, format!("{e}")))?;
            }
            Ok(uids.join("\\"))
        }
        VR::DA | VR::TM | VR::DT => {
            let ok = value.split('-').count() <= 2
                && value.chars().all(|c| c.is_ascii_digit() || matches!(c, '-' | '.' | '+' | ':'))
                && value != "-";
            if ok {
                Ok(value.to_owned())
            } else {
                Err(error(name, format!("not a {vr:?} value or range")))
            }
        }
        _ => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    /// Fuzzing found it (`ASLCrusherFlag=g\u{10A}1gReceive+~`): a value beyond ASCII for a VR
    /// that no character set extends made a C-FIND identifier that could not be encoded.
    #[test]
    fn values_beyond_ascii_only_where_a_character_set_applies() {
        let refused = parse("ASLCrusherFlag=g\u{10A}1gReceive+~").expect_err("CS is ASCII only");
        assert_eq!(refused.parameter, "ASLCrusherFlag");
        assert!(refused.reason.contains("ASCII"), "{refused}");
        assert!(parse("StudyDate=2020\u{663}").is_err());
        let accepted = parse("PatientName=M%C3%BCller&StudyDescription=H%C3%A9").expect("PN and LO take UTF-8");
        assert_eq!(accepted.matches[0].value, "Müller");
    }

    /// Fuzzing found it (`00050010=PID=..%2F.\u{4A2}UID=..%2F,.n`): a key in group 0005 (its VR
    /// from the dictionary, LO) made an identifier whose element came before its Specific
    /// Character Set, which could not be encoded.
    #[test]
    fn keys_outside_the_data_set_groups_are_refused() {
        for query in ["00050010=PID=..%2F.\u{4A2}UID=..%2F,.n", "00020010=1.2", "00000100=1", "FFFEE000=1"] {
            let refused = parse(query).expect_err(query);
            assert!(refused.reason.contains("not an attribute"), "{query}: {refused}");
        }
        assert!(parse("00100010=Doe").is_ok());
    }

    #[test]
    fn parses_each_parameter_form() {
        let q = parse("PatientName=Doe*&00080020=20240101-20241231&StudyInstanceUID=1.2.3,1.2.4&includefield=00081030,StudyDescription&includefield=PatientAge&limit=10&offset=5&fuzzymatching=true")
            .expect("valid");
        assert_eq!(q.matches.len(), 3);
        assert_eq!(q.matches[0], MatchKey { path: vec![tags::PATIENT_NAME], vr: VR::PN, value: "Doe*".into() });
        assert_eq!(q.matches[1].path, vec![tags::STUDY_DATE]);
        assert_eq!(q.matches[2].value, "1.2.3\\1.2.4");
        assert_eq!(
            q.include,
            IncludeFields::List(vec![tags::STUDY_DESCRIPTION, tags::STUDY_DESCRIPTION, tags::PATIENT_AGE])
        );
        assert_eq!((q.limit, q.offset, q.fuzzy_matching), (Some(10), 5, true));
        let q = parse("StudyInstanceUID=1.2.3&StudyDescription=&00100020=").expect("valid");
        assert_eq!(q.matches.len(), 1, "an empty value is a return key, not a match");
        assert_eq!(q.include, IncludeFields::List(vec![tags::STUDY_DESCRIPTION, tags::PATIENT_ID]));
        let q = parse("includefield=all&RequestAttributesSequence.ScheduledProcedureStepID=42").expect("valid");
        assert_eq!(q.include, IncludeFields::All);
        assert_eq!(q.matches[0].path, vec![tags::REQUEST_ATTRIBUTES_SEQUENCE, tags::SCHEDULED_PROCEDURE_STEP_ID]);
        assert_eq!(parse("").expect("empty"), QidoQuery::default());
    }

    #[test]
    fn rejects_what_cannot_be_honoured_naming_the_parameter() {
        for (query, parameter) in [
            ("NoSuchKeyword=1", "NoSuchKeyword"),
            ("includefield=Bogus", "includefield"),
            ("limit=-1", "limit"),
            ("offset=ten", "offset"),
            ("fuzzymatching=maybe", "fuzzymatching"),
            ("StudyInstanceUID=1.2.abc", "StudyInstanceUID"),
            ("StudyDate=yesterday", "StudyDate"),
            ("PatientName=a\\b", "PatientName"),
            ("PatientName=a&PatientName=b", "PatientName"),
            ("ReferencedStudySequence=x", "ReferencedStudySequence"),
            ("PatientName.PatientID=x", "PatientName.PatientID"),
            ("0010001=x", "0010001"),
        ] {
            let e = parse(query).expect_err(query);
            assert_eq!(e.parameter, parameter, "{query}");
        }
    }
}

/// The attributes each QIDO-RS level returns whatever `includefield` says (PS3.18 Table
/// 10.6.3-3, study; 10.6.3-4, series; 10.6.3-5, instance). RetrieveURL (0008,1190) is not
/// among them: the gateway writes it.
pub mod required {
    use dicom_core::Tag;
    use dicom_dictionary_std::tags;

    pub const STUDY: &[Tag] = &[
        tags::SPECIFIC_CHARACTER_SET,
        tags::STUDY_DATE,
        tags::STUDY_TIME,
        tags::ACCESSION_NUMBER,
        tags::INSTANCE_AVAILABILITY,
        tags::MODALITIES_IN_STUDY,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::TIMEZONE_OFFSET_FROM_UTC,
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_SEX,
        tags::STUDY_INSTANCE_UID,
        tags::STUDY_ID,
        tags::NUMBER_OF_STUDY_RELATED_SERIES,
        tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
    ];

    pub const SERIES: &[Tag] = &[
        tags::SPECIFIC_CHARACTER_SET,
        tags::MODALITY,
        tags::TIMEZONE_OFFSET_FROM_UTC,
        tags::SERIES_DESCRIPTION,
        tags::SERIES_INSTANCE_UID,
        tags::SERIES_NUMBER,
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        tags::PERFORMED_PROCEDURE_STEP_START_TIME,
    ];

    pub const INSTANCE: &[Tag] = &[
        tags::SPECIFIC_CHARACTER_SET,
        tags::SOP_CLASS_UID,
        tags::SOP_INSTANCE_UID,
        tags::INSTANCE_AVAILABILITY,
        tags::TIMEZONE_OFFSET_FROM_UTC,
        tags::INSTANCE_NUMBER,
        tags::ROWS,
        tags::COLUMNS,
        tags::BITS_ALLOCATED,
        tags::NUMBER_OF_FRAMES,
    ];

    /// Asked for on top of the required ones when `includefield=all`: a C-FIND identifier must
    /// name each attribute it wants, so "all" means the attributes archives commonly index.
    pub const ALL_EXTRA: &[Tag] = &[
        tags::STUDY_DESCRIPTION,
        tags::INSTITUTION_NAME,
        tags::PATIENT_AGE,
        tags::PATIENT_SIZE,
        tags::PATIENT_WEIGHT,
        tags::ADMITTING_DIAGNOSES_DESCRIPTION,
        tags::SOP_CLASSES_IN_STUDY,
        tags::BODY_PART_EXAMINED,
        tags::PROTOCOL_NAME,
        tags::MANUFACTURER,
        tags::STATION_NAME,
        tags::SERIES_DATE,
        tags::SERIES_TIME,
        tags::CONTENT_DATE,
        tags::CONTENT_TIME,
        tags::IMAGE_TYPE,
        tags::ACQUISITION_NUMBER,
    ];
}
