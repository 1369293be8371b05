//! The Basic Application Level Confidentiality Profile (PS3.15 Annex E) applied to a data set,
//! recursively into sequences, with the project's options and keys.
//!
//! How each action code is carried out (the table leaves some choices to the implementation):
//! - X: removed. Z: emptied (a sequence: no items). D: a dummy value of the attribute's VR
//!   ("ANONYMIZED", 19000101, a pseudonymous UID, ...); on a sequence, its items de-identified.
//! - X/Z: emptied. X/D, Z/D, X/Z/D: a dummy value (without the IOD's tables the attribute may
//!   be Type 1).
//! - Overlay Data removed: the whole overlay group (60xx) goes, an Overlay Plane without its
//!   data being invalid.
//!   X/Z/U* (sequences of references): the items de-identified, their UIDs mapped.
//! - K: kept (a sequence: its items de-identified). U: every value mapped to its pseudonym.
//! - C from Retain Longitudinal Temporal Information with Modified Dates: DA and the date of DT
//!   moved back by the patient's shift, TM kept; a value that is not a whole date emptied.
//! - C otherwise (descriptors, device and patient characteristics): the text kept with every
//!   identifying value of the data set (names, IDs, accession number, institution, birth date)
//!   replaced by `[removed]`.
//! - Private attributes: removed (the table's row for odd groups); with Retain Safe Private,
//!   those of PS3.15 Table E.3.10-1 (for their block's creator) are kept, with their creators.
//! - PatientID and PatientName: the patient's pseudonym. Group lengths: removed (they would be
//!   wrong). Pixel data: kept (instances that may show identity in their pixels are withheld by
//!   the caller, see [`crate::burned_in`]).
//! - Text kept from a data set whose character set the parser cannot decode faithfully (ISO 2022
//!   code extensions, or undecodable bytes) is removed unless it is plain ASCII.
//!
//! Every output is stamped: PatientIdentityRemoved = YES, DeidentificationMethod,
//! DeidentificationMethodCodeSequence (113100 and the options' codes, CID 7050) and
//! LongitudinalTemporalInformationModified.

use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

use crate::dates::{shift_da, shift_dt};
use crate::keys::ProjectKeys;
use crate::options::Options;
use crate::table::{row_of, Action};

const DUMMY_TEXT: &str = "ANONYMIZED";
const REDACTED: &str = "[removed]";
const MAX_DEPTH: usize = 32;

/// A UID of the data set and the pseudonym it was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidMapping {
    pub tag: Tag,
    pub original: String,
    pub pseudonym: String,
}

/// What de-identifying one data set produced besides the data set itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// The pseudonyms of the data set's own Study, Series and SOP Instance UIDs (top level).
    pub identity: Vec<UidMapping>,
    /// The patient's pseudonym, when the data set named a patient.
    pub patient: Option<String>,
    /// The site's PatientID and its issuer (IssuerOfPatientID, else the site) the pseudonym
    /// stands for: for the pseudonym map, never for output.
    pub patient_id: Option<(String, String)>,
    /// Elements removed, emptied or replaced (for tests and statistics).
    pub changed: usize,
}

/// De-identification for one project.
#[derive(Debug, Clone)]
pub struct Deidentifier {
    keys: ProjectKeys,
    options: Options,
}

/// The patient a data set belongs to when the data set itself does not say (a series-level
/// search result confined to a study, say): the PatientID and IssuerOfPatientID the site holds,
/// found by the caller. Its dates are shifted by this patient's shift.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownPatient {
    pub id: String,
    pub issuer: Option<String>,
}

/// What is known of the data set while it is processed.
struct Context<'a> {
    keys: &'a ProjectKeys,
    options: &'a Options,
    issuer: String,
    /// The patient's date shift; `None` when the patient is not known (no PatientID in the
    /// data set and none given): then dates cannot be shifted by the patient's own shift, and
    /// are removed. A shift computed from a missing PatientID would be one constant for every
    /// patient, which a client could difference against the same dates shown elsewhere.
    shift_days: Option<i64>,
    /// How many sequences the profile replaces with a dummy (action D: Content Sequence,
    /// Graphic Annotation Sequence, ...) enclose the element being processed.
    within_dummy: std::cell::Cell<usize>,
    identifying: Vec<String>,
    unreliable_text: bool,
    /// The profile removes Overlay Data under these options (then whole overlays go).
    overlays_removed: bool,
}

fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.to_str().ok()?;
    let value = crate::keys::unpadded(&value).to_owned();
    (!value.is_empty()).then_some(value)
}

fn is_text(vr: VR) -> bool {
    matches!(vr, VR::PN | VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC)
}

fn is_temporal(vr: VR) -> bool {
    matches!(vr, VR::DA | VR::DT | VR::TM)
}

/// An element of a repeating overlay group (60xx,eeee).
fn is_overlay(tag: Tag) -> bool {
    (0x6000..=0x60FF).contains(&tag.group()) && tag.group().is_multiple_of(2)
}

/// Person names whose parts of two characters are identifying too (`Li`, `Wu`, `Ng`); such short
/// parts are redacted only as whole words (see [`redact`]).
const PERSON_NAMES: [Tag; 9] = [
    tags::PATIENT_NAME,
    tags::OTHER_PATIENT_NAMES,
    tags::PATIENT_BIRTH_NAME,
    tags::PATIENT_MOTHER_BIRTH_NAME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::PERFORMING_PHYSICIAN_NAME,
    tags::NAME_OF_PHYSICIANS_READING_STUDY,
    tags::PHYSICIANS_OF_RECORD,
    tags::OPERATORS_NAME,
];

/// The data set's own dates, which free text may repeat in any of the forms people write.
const DATES: [Tag; 6] = [
    tags::PATIENT_BIRTH_DATE,
    tags::STUDY_DATE,
    tags::SERIES_DATE,
    tags::ACQUISITION_DATE,
    tags::CONTENT_DATE,
    tags::INSTANCE_CREATION_DATE,
];

/// A date `YYYYMMDD` as it may be written in free text.
fn written_dates(date: &str) -> Vec<String> {
    if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
        return Vec::new();
    }
    let (y, m, d) = (&date[..4], &date[4..6], &date[6..]);
    vec![
        date.to_owned(),
        format!("{y}-{m}-{d}"),
        format!("{y}/{m}/{d}"),
        format!("{y}.{m}.{d}"),
        format!("{d}.{m}.{y}"),
        format!("{d}/{m}/{y}"),
        format!("{m}/{d}/{y}"),
        format!("{d}-{m}-{y}"),
    ]
}

/// The identifying values of a data set, for cleaning free text: every name component (of two
/// characters or more for person names), ID and date of identity three characters or longer,
/// and the data set's dates in their written forms.
fn identifying_values(obj: &InMemDicomObject) -> Vec<String> {
    let sources = [
        tags::PATIENT_NAME,
        tags::PATIENT_ID,
        Tag(0x0010, 0x1000), // Other Patient IDs (retired)
        tags::OTHER_PATIENT_NAMES,
        tags::PATIENT_BIRTH_NAME,
        tags::PATIENT_MOTHER_BIRTH_NAME,
        tags::PATIENT_BIRTH_DATE,
        tags::PATIENT_ADDRESS,
        tags::PATIENT_TELEPHONE_NUMBERS,
        tags::ACCESSION_NUMBER,
        tags::INSTITUTION_NAME,
        tags::INSTITUTION_ADDRESS,
        tags::INSTITUTIONAL_DEPARTMENT_NAME,
        tags::REFERRING_PHYSICIAN_NAME,
        tags::PERFORMING_PHYSICIAN_NAME,
        tags::NAME_OF_PHYSICIANS_READING_STUDY,
        tags::PHYSICIANS_OF_RECORD,
        tags::OPERATORS_NAME,
        tags::REQUESTING_PHYSICIAN,
        Tag(0x0010, 0x1090), // Medical Record Locator (retired)
        tags::STATION_NAME,
    ];
    let mut values: Vec<String> = Vec::new();
    let mut add = |value: &str| {
        if !values.iter().any(|v| v.eq_ignore_ascii_case(value)) {
            values.push(value.to_owned());
        }
    };
    for tag in sources {
        let Some(text) = text_of(obj, tag) else { continue };
        let shortest = if PERSON_NAMES.contains(&tag) { 2 } else { 3 };
        for part in text.split(['^', '=', '\\', ' ', ',']) {
            let part = part.trim();
            if part.chars().count() >= shortest {
                add(part);
            }
        }
    }
    for tag in DATES {
        for written in text_of(obj, tag).map(|date| written_dates(&date)).unwrap_or_default() {
            add(&written);
        }
    }
    // Longest first, so that a name is replaced before a part of it.
    values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    values
}

/// Whether the bytes around `at..end` of `text` end words there (no letter or digit beside).
fn whole_word(text: &str, at: usize, end: usize) -> bool {
    let before = text[..at].chars().next_back().is_none_or(|c| !c.is_alphanumeric());
    let after = text[end..].chars().next().is_none_or(|c| !c.is_alphanumeric());
    before && after
}

/// Replaces every identifying value in a text, ignoring case; values shorter than three
/// characters (a two-letter surname) only where they stand as whole words.
fn redact(text: &str, identifying: &[String]) -> String {
    let mut out = text.to_owned();
    for value in identifying {
        let short = value.chars().count() < 3;
        let lower_value = value.to_lowercase();
        let mut from = 0;
        loop {
            let lower = out.to_lowercase();
            // Lower-casing can change byte lengths outside ASCII: only replace where it did not.
            if lower.len() != out.len() {
                if out.contains(value.as_str()) {
                    out = out.replace(value.as_str(), REDACTED);
                }
                break;
            }
            let Some(at) = lower[from..].find(&lower_value).map(|i| i + from) else { break };
            if short && !whole_word(&out, at, at + value.len()) {
                from = at + value.len();
                continue;
            }
            out.replace_range(at..at + value.len(), REDACTED);
            from = at + REDACTED.len();
        }
    }
    out
}

impl Deidentifier {
    pub fn new(keys: ProjectKeys, options: Options) -> Self {
        Deidentifier { keys, options }
    }

    pub fn keys(&self) -> &ProjectKeys {
        &self.keys
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The pseudonym of a patient of `site` as [`Deidentifier::apply`] writes it.
    pub fn patient_pseudonym(&self, site: &str, issuer: Option<&str>, patient_id: &str) -> String {
        self.keys.patient(issuer.unwrap_or(site), patient_id)
    }

    /// De-identifies a data set held at `site` in place.
    pub fn apply(&self, obj: &mut InMemDicomObject, site: &str) -> Report {
        self.apply_for(obj, site, None)
    }

    /// De-identifies a data set held at `site` in place; `known` is its patient when the data
    /// set has no PatientID of its own (ignored when it has one).
    pub fn apply_for(&self, obj: &mut InMemDicomObject, site: &str, known: Option<&KnownPatient>) -> Report {
        let own_patient = obj.get(tags::PATIENT_ID).is_some();
        let patient_id = text_of(obj, tags::PATIENT_ID).unwrap_or_default();
        let shift_days = match (own_patient, known) {
            (true, _) => Some(self.keys.date_shift_days(&patient_id)),
            (false, Some(known)) => Some(self.keys.date_shift_days(&known.id)),
            (false, None) => None,
        };
        let known_issuer = known.filter(|_| !own_patient).and_then(|k| k.issuer.clone());
        let charset = obj.get(tags::SPECIFIC_CHARACTER_SET).and_then(|e| e.to_multi_str().ok().map(|v| v.to_vec()));
        let unreliable_text = charset
            .as_ref()
            .is_some_and(|sets| sets.len() > 1 || sets.iter().any(|s| s.trim().starts_with("ISO 2022")));
        let context = Context {
            keys: &self.keys,
            options: &self.options,
            issuer: text_of(obj, tags::ISSUER_OF_PATIENT_ID).or(known_issuer).unwrap_or_else(|| site.to_owned()),
            shift_days,
            within_dummy: std::cell::Cell::new(0),
            identifying: identifying_values(obj),
            unreliable_text,
            overlays_removed: row_of(Tag(0x6000, 0x3000)).map(|r| self.options.action(r)) == Some(Action::Remove),
        };
        let mut report = Report::default();
        for tag in [tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID, tags::SOP_INSTANCE_UID] {
            if let Some(original) = text_of(obj, tag) {
                report.identity.push(UidMapping { tag, pseudonym: self.keys.uid(&original), original });
            }
        }
        if obj.get(tags::PATIENT_ID).is_some() || obj.get(tags::PATIENT_NAME).is_some() {
            report.patient = Some(self.keys.patient(&context.issuer, &patient_id));
            report.patient_id = Some((patient_id.clone(), context.issuer.clone()));
        }
        process(&context, obj, 0, &mut report);
        self.stamp(obj);
        report
    }

    fn stamp(&self, obj: &mut InMemDicomObject) {
        obj.put(DataElement::new(tags::PATIENT_IDENTITY_REMOVED, VR::CS, PrimitiveValue::from("YES")));
        // One value per method (LO holds 64 characters; the attribute is multi-valued).
        let mut method = vec!["PS3.15 Annex E Basic Application Level Confidentiality Profile".to_owned()];
        method.extend(self.options.selected().iter().map(|option| option.name.to_owned()));
        obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::Strs(method.into())));
        let code = |value: &str, meaning: &str| {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from(value)),
                DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
                DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from(meaning)),
            ])
        };
        let mut codes = vec![code("113100", "Basic Application Confidentiality Profile")];
        codes.extend(self.options.selected().iter().map(|o| code(o.code, o.meaning)));
        obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(codes)));
        let temporal = if self.options.has("retain-longitudinal-modified-dates") { "MODIFIED" } else { "REMOVED" };
        obj.put(DataElement::new(
            tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED,
            VR::CS,
            PrimitiveValue::from(temporal),
        ));
    }
}

/// Records on a de-identified data set that its pixel data was cleaned of burned-in text
/// (PS3.15 E.3.1, Clean Pixel Data Option): code 113101 added to
/// DeidentificationMethodCodeSequence and the option named in DeidentificationMethod, after
/// what [`Deidentifier::apply`] stamped.
pub fn stamp_clean_pixel_data(obj: &mut InMemDicomObject) {
    let code = InMemDicomObject::from_element_iter([
        DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("113101")),
        DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
        DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from("Clean Pixel Data Option")),
    ]);
    let mut codes: Vec<InMemDicomObject> = obj
        .get(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE)
        .and_then(|e| e.items())
        .map(|items| items.to_vec())
        .unwrap_or_default();
    codes.push(code);
    obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(codes)));
    let mut method: Vec<String> = obj
        .get(tags::DEIDENTIFICATION_METHOD)
        .and_then(|e| e.to_multi_str().ok().map(|values| values.iter().map(|v| v.trim().to_owned()).collect()))
        .unwrap_or_default();
    method.push("clean-pixel-data".to_owned());
    obj.put(DataElement::new(tags::DEIDENTIFICATION_METHOD, VR::LO, PrimitiveValue::Strs(method.into())));
}

fn process(context: &Context<'_>, obj: &mut InMemDicomObject, depth: usize, report: &mut Report) {
    let tags: Vec<Tag> = obj.tags().collect();
    // Retain Safe Private: the private attributes of this data set that Table E.3.10-1 lists
    // (for their block's creator), with those creators; every other private attribute goes.
    let safe_private =
        if context.options.has("retain-safe-private") { crate::safe_private::safe_in(obj) } else { Default::default() };
    for tag in tags {
        if tag.group() % 2 == 1 && !safe_private.contains(&tag) {
            obj.remove_element(tag);
            report.changed += 1;
            continue;
        }
        let Some(element) = obj.take(tag) else { continue };
        if tag.group() % 2 == 1 {
            obj.put(element);
            continue;
        }
        match transform(context, element, depth, report) {
            Some(element) => {
                obj.put(element);
            }
            None => report.changed += 1,
        }
    }
}

/// Every value of an element as text, when it has text values.
fn strings(element: &InMemElement) -> Option<Vec<String>> {
    match element.value() {
        Value::Primitive(PrimitiveValue::Empty) => Some(Vec::new()),
        Value::Primitive(value) => Some(value.to_multi_str().to_vec()),
        _ => None,
    }
}

fn with_strings(tag: Tag, vr: VR, values: Vec<String>) -> InMemElement {
    if values.is_empty() {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Strs(values.into()))
    }
}

fn empty(tag: Tag, vr: VR) -> InMemElement {
    if vr == VR::SQ {
        DataElement::new(tag, VR::SQ, DataSetSequence::<InMemDicomObject>::empty())
    } else {
        DataElement::new(tag, vr, PrimitiveValue::Empty)
    }
}

fn dummy(context: &Context<'_>, element: &InMemElement) -> InMemElement {
    let (tag, vr) = (element.header().tag, element.vr());
    let text = match vr {
        VR::DA => "19000101",
        VR::TM => "000000",
        VR::DT => "19000101000000",
        VR::AS => "000Y",
        VR::IS | VR::DS => "0",
        VR::UI => {
            let mapped = strings(element).unwrap_or_default().iter().map(|u| context.keys.uid(u)).collect();
            return with_strings(tag, vr, mapped);
        }
        VR::PN | VR::LO | VR::SH | VR::ST | VR::LT | VR::UT | VR::UC | VR::CS | VR::AE | VR::UR => DUMMY_TEXT,
        // Binary and numeric values: a zero-length value is the only dummy free of meaning.
        _ => return empty(tag, vr),
    };
    DataElement::new(tag, vr, PrimitiveValue::from(text))
}

/// The items of a sequence de-identified in turn (bounded depth: deeper nesting is removed).
fn sequence(context: &Context<'_>, element: InMemElement, depth: usize, report: &mut Report) -> Option<InMemElement> {
    let tag = element.header().tag;
    if depth >= MAX_DEPTH {
        return None;
    }
    match element.into_value() {
        Value::Sequence(items) => {
            let mut items: Vec<InMemDicomObject> = items.into_items().into_iter().collect();
            for item in &mut items {
                process(context, item, depth + 1, report);
            }
            Some(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)))
        }
        // Not a sequence after all: nothing to descend into.
        _ => None,
    }
}

/// Text values that must not pass: undecodable bytes, or anything but ASCII from a character
/// set the parser does not decode faithfully.
fn unusable_text(context: &Context<'_>, values: &[String]) -> bool {
    values.iter().any(|v| v.contains(['\u{FFFD}', '\u{1B}']) || (context.unreliable_text && !v.is_ascii()))
}

fn clean(context: &Context<'_>, element: InMemElement, depth: usize, report: &mut Report) -> Option<InMemElement> {
    let (tag, vr) = (element.header().tag, element.vr());
    if vr == VR::SQ {
        return sequence(context, element, depth, report);
    }
    if !is_text(vr) && !is_temporal(vr) {
        // Nothing in a number or a code to clean.
        return Some(element);
    }
    let values = strings(&element)?;
    if is_text(vr) && unusable_text(context, &values) {
        return None;
    }
    let shift = context.shift_days.filter(|_| context.options.has("retain-longitudinal-modified-dates"));
    let cleaned: Option<Vec<String>> = match (vr, shift) {
        (VR::DA, Some(days)) => values.iter().map(|v| shift_da(v, days)).collect(),
        (VR::DT, Some(days)) => values.iter().map(|v| shift_dt(v, days)).collect(),
        (VR::TM, Some(_)) => Some(values),
        (VR::DA | VR::DT | VR::TM, _) => None,
        _ => Some(values.iter().map(|v| redact(v, &context.identifying)).collect()),
    };
    report.changed += 1;
    Some(match cleaned {
        Some(values) => with_strings(tag, vr, values),
        None => empty(tag, vr),
    })
}

/// Attributes of coded entries (PS3.3 Table 8.8-1) and of the structure of content items,
/// kept inside a dummy sequence: they say what an item is, not what a report says of a person.
const STRUCTURE: [Tag; 12] = [
    tags::CODE_VALUE,
    tags::CODING_SCHEME_DESIGNATOR,
    tags::CODING_SCHEME_VERSION,
    tags::CODE_MEANING,
    tags::LONG_CODE_VALUE,
    tags::URN_CODE_VALUE,
    tags::MAPPING_RESOURCE,
    tags::CONTEXT_IDENTIFIER,
    tags::CONTEXT_UID,
    tags::MAPPING_RESOURCE_NAME,
    tags::TEMPLATE_IDENTIFIER,
    tags::GRAPHIC_LAYER,
];

/// The prefix of the UIDs the standard defines (SOP classes, coding schemes, templates): never
/// a site's or a caller's, so never mapped.
pub const STANDARD_UID_ROOT: &str = "1.2.840.10008.";

/// An attribute the profile would keep, inside a sequence it replaces with a dummy (action D on
/// a sequence: Content Sequence, Graphic Annotation Sequence, ...). The items keep their
/// structure (codes, enumerated values, numbers) so the instance stays valid, and nothing of
/// what they say: every text (a report's Text Value, a presentation state's Unformatted Text
/// Value, names) becomes a dummy, dates are shifted or become dummies, UIDs are mapped and
/// binary values are emptied. PS3.15's Clean Structured Content and Clean Graphics options,
/// which would keep cleaned text, are not offered.
fn within_dummy(
    context: &Context<'_>,
    element: InMemElement,
    depth: usize,
    report: &mut Report,
) -> Option<InMemElement> {
    let (tag, vr) = (element.header().tag, element.vr());
    if vr == VR::SQ {
        return sequence(context, element, depth, report);
    }
    if STRUCTURE.contains(&tag) {
        return keep_text(context, element);
    }
    report.changed += 1;
    match vr {
        VR::CS | VR::US | VR::SS | VR::UL | VR::SL | VR::FL | VR::FD | VR::DS | VR::IS | VR::AT | VR::UV | VR::SV => {
            Some(element)
        }
        VR::UI => {
            let mapped = strings(&element)?
                .iter()
                .map(|uid| if uid.starts_with(STANDARD_UID_ROOT) { uid.clone() } else { context.keys.uid(uid) })
                .collect();
            Some(with_strings(tag, vr, mapped))
        }
        VR::DA | VR::DT | VR::TM
            if context.shift_days.is_some() && context.options.has("retain-longitudinal-modified-dates") =>
        {
            clean(context, element, depth, report)
        }
        _ => Some(dummy(context, &element)),
    }
}

/// A kept text value, unless its character set cannot be decoded faithfully.
fn keep_text(context: &Context<'_>, element: InMemElement) -> Option<InMemElement> {
    if is_text(element.vr()) && unusable_text(context, &strings(&element)?) {
        return None;
    }
    Some(element)
}

/// An element inside the items of a sequence the profile replaces with a dummy.
fn dummy_sequence(
    context: &Context<'_>,
    element: InMemElement,
    depth: usize,
    report: &mut Report,
) -> Option<InMemElement> {
    context.within_dummy.set(context.within_dummy.get() + 1);
    let out = sequence(context, element, depth, report);
    context.within_dummy.set(context.within_dummy.get() - 1);
    out
}

fn keep(context: &Context<'_>, element: InMemElement, depth: usize, report: &mut Report) -> Option<InMemElement> {
    let vr = element.vr();
    if context.within_dummy.get() > 0 {
        return within_dummy(context, element, depth, report);
    }
    if vr == VR::SQ {
        return sequence(context, element, depth, report);
    }
    keep_text(context, element)
}

fn transform(context: &Context<'_>, element: InMemElement, depth: usize, report: &mut Report) -> Option<InMemElement> {
    let (tag, vr) = (element.header().tag, element.vr());
    if tag.element() == 0x0000 {
        return None;
    }
    if tag == tags::PIXEL_DATA || tag.group() == 0x7FE0 {
        return Some(element);
    }
    if is_overlay(tag) && context.overlays_removed {
        // The profile removes Overlay Data (it may show identity); an Overlay Plane without it
        // is invalid, so the whole overlay group goes.
        return None;
    }
    if tag == tags::PATIENT_ID || tag == tags::PATIENT_NAME {
        let id = strings(&element).and_then(|v| v.first().cloned()).unwrap_or_default();
        let own = if tag == tags::PATIENT_ID { id } else { String::new() };
        report.changed += 1;
        let pseudonym = match (depth, &report.patient) {
            (0, Some(patient)) => patient.clone(),
            _ => context.keys.patient(&context.issuer, &own),
        };
        return Some(DataElement::new(tag, vr, PrimitiveValue::from(pseudonym)));
    }
    let action = match row_of(tag) {
        Some(row) => context.options.action(row),
        None => crate::beyond_table::action(tag).unwrap_or(Action::Keep),
    };
    let changed = |report: &mut Report, element: InMemElement| {
        report.changed += 1;
        Some(element)
    };
    match action {
        Action::Keep => keep(context, element, depth, report),
        Action::Remove => None,
        Action::Zero | Action::RemoveOrZero => changed(report, empty(tag, vr)),
        Action::Dummy if vr == VR::SQ => dummy_sequence(context, element, depth, report),
        Action::Dummy => changed(report, dummy(context, &element)),
        // Without the IOD's tables the attribute may be Type 1: a dummy keeps the instance valid.
        Action::RemoveOrDummy | Action::ZeroOrDummy | Action::RemoveOrZeroOrDummy => {
            if vr == VR::SQ {
                sequence(context, element, depth, report)
            } else {
                changed(report, dummy(context, &element))
            }
        }
        Action::RemoveOrZeroOrUid if vr == VR::SQ => sequence(context, element, depth, report),
        Action::RemoveOrZeroOrUid => changed(report, empty(tag, vr)),
        Action::Uid if vr == VR::SQ => sequence(context, element, depth, report),
        Action::Uid => {
            let mapped = strings(&element).unwrap_or_default().iter().map(|u| context.keys.uid(u)).collect();
            changed(report, with_strings(tag, VR::UI, mapped))
        }
        Action::Clean => clean(context, element, depth, report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> InMemDicomObject {
        let referenced = InMemDicomObject::from_element_iter([
            DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5.6")),
        ]);
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Doe^Jane")),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("MRN-0042")),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from("19610203")),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20240301")),
            DataElement::new(tags::STUDY_TIME, VR::TM, PrimitiveValue::from("101500")),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC77")),
            DataElement::new(tags::INSTITUTION_NAME, VR::LO, PrimitiveValue::from("St Elsewhere")),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("CT chest Jane Doe MRN-0042")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3")),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4.5")),
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, PrimitiveValue::from("1.2.3.9")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(512u16)),
            DataElement::new(Tag(0x0009, 0x0010), VR::LO, PrimitiveValue::from("ACME")),
            DataElement::new(Tag(0x0009, 0x1001), VR::LO, PrimitiveValue::from("Jane's secret")),
            DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![referenced])),
        ])
    }

    fn deidentifier(options: &[&str]) -> Deidentifier {
        Deidentifier::new(ProjectKeys::derive(b"secret", "p"), Options::parse(options).expect("valid"))
    }

    fn all_text(obj: &InMemDicomObject) -> String {
        let mut out = String::new();
        for element in obj.iter() {
            match element.value() {
                Value::Sequence(items) => items.items().iter().for_each(|item| out.push_str(&all_text(item))),
                _ => {
                    if let Ok(text) = element.to_str() {
                        out.push_str(&text);
                        out.push('|');
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_basic_profile_leaves_nothing_identifying() {
        let mut obj = sample();
        let d = deidentifier(&[]);
        let report = d.apply(&mut obj, "site-1");
        let text = all_text(&obj);
        for leak in ["Doe", "Jane", "MRN-0042", "19610203", "20240301", "ACC77", "Elsewhere", "ACME", "1.2.3.4.5.6"] {
            assert!(!text.contains(leak), "{leak} leaked: {text}");
        }
        let uid = |tag| text_of(&obj, tag).expect("present");
        assert_eq!(uid(tags::STUDY_INSTANCE_UID), d.keys().uid("1.2.3"));
        assert_eq!(uid(tags::FRAME_OF_REFERENCE_UID), d.keys().uid("1.2.3.9"));
        assert_eq!(uid(tags::SOP_CLASS_UID), "1.2.840.10008.5.1.4.1.1.2", "classes are not identifying");
        assert_eq!(report.identity.len(), 3);
        assert_eq!(text_of(&obj, tags::PATIENT_ID), report.patient.clone());
        assert_eq!(text_of(&obj, tags::PATIENT_NAME), report.patient);
        assert!(text_of(&obj, tags::STUDY_DATE).is_none(), "emptied");
        assert!(obj.get(tags::STUDY_DATE).is_some(), "type 2: still present");
        assert!(obj.get(Tag(0x0009, 0x1001)).is_none(), "private attributes removed");
        assert_eq!(text_of(&obj, tags::PATIENT_IDENTITY_REMOVED).as_deref(), Some("YES"));
        assert_eq!(text_of(&obj, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(), Some("REMOVED"));
        let referenced = obj.element(tags::REFERENCED_IMAGE_SEQUENCE).expect("kept").items().expect("items")[0].clone();
        assert_eq!(text_of(&referenced, tags::REFERENCED_SOP_INSTANCE_UID), Some(d.keys().uid("1.2.3.4.5.6")));
        assert_eq!(obj.element(tags::ROWS).expect("kept").to_int::<u16>().expect("int"), 512);
    }

    #[test]
    fn options_shift_dates_and_clean_descriptors() {
        let mut obj = sample();
        let d = deidentifier(&["retain-longitudinal-modified-dates", "clean-descriptors"]);
        d.apply(&mut obj, "site-1");
        let shift = d.keys().date_shift_days("MRN-0042");
        assert_eq!(text_of(&obj, tags::STUDY_DATE), crate::dates::shift_date("20240301", shift));
        assert_eq!(text_of(&obj, tags::STUDY_TIME).as_deref(), Some("101500"));
        assert_eq!(text_of(&obj, tags::STUDY_DESCRIPTION).as_deref(), Some("CT chest [removed] [removed] [removed]"));
        assert_eq!(text_of(&obj, tags::LONGITUDINAL_TEMPORAL_INFORMATION_MODIFIED).as_deref(), Some("MODIFIED"));
        let codes = obj.element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).expect("stamped").items().expect("items");
        let values: Vec<String> = codes.iter().filter_map(|c| text_of(c, tags::CODE_VALUE)).collect();
        assert_eq!(values, ["113100", "113107", "113105"]);
    }

    #[test]
    fn text_in_a_character_set_that_cannot_be_decoded_is_removed() {
        let mut obj = sample();
        obj.put(DataElement::new(
            tags::SPECIFIC_CHARACTER_SET,
            VR::CS,
            PrimitiveValue::Strs(vec!["".to_owned(), "ISO 2022 IR 87".to_owned()].into()),
        ));
        obj.put(DataElement::new(tags::SERIES_DESCRIPTION, VR::LO, PrimitiveValue::from("胸部 CT")));
        obj.put(DataElement::new(tags::BODY_PART_EXAMINED, VR::CS, PrimitiveValue::from("CHEST")));
        let d = deidentifier(&["clean-descriptors"]);
        d.apply(&mut obj, "site-1");
        // Series Description is cleaned (kept) under Clean Descriptors, but not in this charset.
        assert!(obj.get(tags::SERIES_DESCRIPTION).is_none());
        assert_eq!(text_of(&obj, tags::BODY_PART_EXAMINED).as_deref(), Some("CHEST"));
    }

    #[test]
    fn an_overlay_goes_whole_and_type_one_candidates_get_dummies() {
        let mut obj = sample();
        obj.put(DataElement::new(Tag(0x6000, 0x0010), VR::US, PrimitiveValue::from(512u16)));
        obj.put(DataElement::new(Tag(0x6000, 0x3000), VR::OW, PrimitiveValue::from(vec![0u8; 4])));
        obj.put(DataElement::new(tags::CONTENT_DATE, VR::DA, PrimitiveValue::from("20240301")));
        deidentifier(&[]).apply(&mut obj, "site-1");
        assert!(obj.get(Tag(0x6000, 0x0010)).is_none() && obj.get(Tag(0x6000, 0x3000)).is_none());
        // Content Date is Z/D: it may be Type 1, so a dummy date rather than none.
        assert_eq!(text_of(&obj, tags::CONTENT_DATE).as_deref(), Some("19000101"));
    }

    #[test]
    fn retain_safe_private_keeps_only_listed_private_attributes() {
        let mut obj = sample();
        obj.put(DataElement::new(Tag(0x0043, 0x0010), VR::LO, PrimitiveValue::from("GEMS_PARM_01")));
        obj.put(DataElement::new(Tag(0x0043, 0x1027), VR::SH, PrimitiveValue::from("0.984:1")));
        deidentifier(&["retain-safe-private"]).apply(&mut obj, "site-1");
        assert_eq!(text_of(&obj, Tag(0x0043, 0x1027)).as_deref(), Some("0.984:1"));
        assert!(obj.get(Tag(0x0043, 0x0010)).is_some(), "its creator stays");
        assert!(obj.get(Tag(0x0009, 0x1001)).is_none() && obj.get(Tag(0x0009, 0x0010)).is_none());
        let codes = obj.element(tags::DEIDENTIFICATION_METHOD_CODE_SEQUENCE).expect("stamped").items().expect("items");
        assert!(codes.iter().any(|c| text_of(c, tags::CODE_VALUE).as_deref() == Some("113111")));
    }

    fn content_item(value_type: &str, value: InMemElement) -> InMemDicomObject {
        let concept = InMemDicomObject::from_element_iter([
            DataElement::new(tags::CODE_VALUE, VR::SH, PrimitiveValue::from("121071")),
            DataElement::new(tags::CODING_SCHEME_DESIGNATOR, VR::SH, PrimitiveValue::from("DCM")),
            DataElement::new(tags::CODE_MEANING, VR::LO, PrimitiveValue::from("Finding")),
        ]);
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::RELATIONSHIP_TYPE, VR::CS, PrimitiveValue::from("CONTAINS")),
            DataElement::new(tags::VALUE_TYPE, VR::CS, PrimitiveValue::from(value_type)),
            DataElement::new(tags::CONCEPT_NAME_CODE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![concept])),
            value,
        ])
    }

    #[test]
    fn report_content_becomes_a_dummy_that_keeps_its_structure() {
        let mut obj = sample();
        let items = vec![
            content_item(
                "TEXT",
                DataElement::new(
                    tags::TEXT_VALUE,
                    VR::UT,
                    PrimitiveValue::from("Mrs Gwendolyn Doe (MRN-0042), seen by Dr Quimby"),
                ),
            ),
            content_item("PNAME", DataElement::new(tags::PERSON_NAME, VR::PN, PrimitiveValue::from("Quimby^Arthur"))),
            content_item("DATE", DataElement::new(tags::DATE, VR::DA, PrimitiveValue::from("20240305"))),
            content_item("UIDREF", DataElement::new(tags::UID, VR::UI, PrimitiveValue::from("1.2.3.77"))),
            content_item("NUM", DataElement::new(tags::NUMERIC_VALUE, VR::DS, PrimitiveValue::from("12.5"))),
        ];
        obj.put(DataElement::new(tags::CONTENT_SEQUENCE, VR::SQ, DataSetSequence::from(items)));
        for options in [&[][..], &["retain-longitudinal-modified-dates", "clean-descriptors"][..]] {
            let mut obj = obj.clone();
            let d = deidentifier(options);
            d.apply(&mut obj, "site-1");
            let text = all_text(&obj);
            for leak in ["Gwendolyn", "Quimby", "MRN-0042", "20240305", "1.2.3.77"] {
                assert!(!text.contains(leak), "{leak} leaked under {options:?}: {text}");
            }
            let content = obj.element(tags::CONTENT_SEQUENCE).expect("kept").items().expect("items").to_vec();
            assert_eq!(content.len(), 5, "the items stay: the report keeps its structure");
            assert_eq!(text_of(&content[0], tags::TEXT_VALUE).as_deref(), Some(DUMMY_TEXT));
            assert_eq!(text_of(&content[0], tags::VALUE_TYPE).as_deref(), Some("TEXT"));
            let concept = content[0].element(tags::CONCEPT_NAME_CODE_SEQUENCE).expect("code").items().expect("items");
            assert_eq!(text_of(&concept[0], tags::CODE_MEANING).as_deref(), Some("Finding"));
            assert_eq!(text_of(&content[3], tags::UID), Some(d.keys().uid("1.2.3.77")));
            assert_eq!(text_of(&content[4], tags::NUMERIC_VALUE).as_deref(), Some("12.5"));
        }
    }

    #[test]
    fn dates_shift_by_the_patient_given_when_the_data_set_names_none() {
        let d = deidentifier(&["retain-longitudinal-modified-dates"]);
        let series = || {
            InMemDicomObject::from_element_iter([
                DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
                DataElement::new(tags::SERIES_DATE, VR::DA, PrimitiveValue::from("20240301")),
            ])
        };
        let known = KnownPatient { id: "MRN-0042".into(), issuer: None };
        let mut shown = series();
        d.apply_for(&mut shown, "site-1", Some(&known));
        let shift = d.keys().date_shift_days("MRN-0042");
        assert_eq!(text_of(&shown, tags::SERIES_DATE), crate::dates::shift_date("20240301", shift));
        assert!(shown.get(tags::PATIENT_ID).is_none(), "the patient is not added to what is shown");
        // The same series with its patient in the data set: the same date.
        let mut full = series();
        full.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from("MRN-0042")));
        d.apply_for(&mut full, "site-1", Some(&KnownPatient { id: "someone else".into(), issuer: None }));
        assert_eq!(text_of(&full, tags::SERIES_DATE), text_of(&shown, tags::SERIES_DATE));
        // No patient at all: no shift can be the patient's own, so the date goes.
        let mut unknown = series();
        d.apply(&mut unknown, "site-1");
        assert_eq!(text_of(&unknown, tags::SERIES_DATE), None);
    }

    #[test]
    fn attributes_the_table_leaves_out_but_that_name_the_archive_are_removed() {
        let mut obj = sample();
        let reference = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3.4")),
            DataElement::new(
                tags::RETRIEVE_URL,
                VR::UR,
                PrimitiveValue::from("https://pacs.st-elsewhere.example/wado/studies/1.2.3"),
            ),
            DataElement::new(tags::RETRIEVE_LOCATION_UID, VR::UI, PrimitiveValue::from("1.2.3.555")),
        ]);
        obj.put(DataElement::new(tags::REFERENCED_SERIES_SEQUENCE, VR::SQ, DataSetSequence::from(vec![reference])));
        obj.put(DataElement::new(tags::HL7_INSTANCE_IDENTIFIER, VR::ST, PrimitiveValue::from("MSG-77^HOSP")));
        let d = deidentifier(&[]);
        d.apply(&mut obj, "site-1");
        let text = all_text(&obj);
        for leak in ["st-elsewhere", "1.2.3.555", "MSG-77"] {
            assert!(!text.contains(leak), "{leak} leaked: {text}");
        }
        let series = obj.element(tags::REFERENCED_SERIES_SEQUENCE).expect("kept").items().expect("items").to_vec();
        assert_eq!(text_of(&series[0], tags::RETRIEVE_LOCATION_UID), Some(d.keys().uid("1.2.3.555")));
    }

    #[test]
    fn redaction_ignores_case_and_prefers_the_longest_value() {
        let identifying = vec!["Elsewhere".to_owned(), "Jane".to_owned()];
        assert_eq!(redact("seen at ST ELSEWHERE by jane", &identifying), "seen at ST [removed] by [removed]");
        // A two-letter surname goes where it is a word, not inside other words.
        let short = vec!["Li".to_owned()];
        assert_eq!(redact("Mr LI, lipid panel (li)", &short), "Mr [removed], lipid panel ([removed])");
    }

    #[test]
    fn clean_descriptors_removes_short_surnames_and_the_data_sets_dates_as_written() {
        let mut obj = sample();
        obj.put(DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from("Li^Wei")));
        obj.put(DataElement::new(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            PrimitiveValue::from("CT for Li born 03.02.1961, seen 2024-03-01; lipids"),
        ));
        deidentifier(&["clean-descriptors"]).apply(&mut obj, "site-1");
        assert_eq!(
            text_of(&obj, tags::STUDY_DESCRIPTION).as_deref(),
            Some("CT for [removed] born [removed], seen [removed]; lipids")
        );
    }
}
