//! A QIDO-RS search when the gateway de-identifies: the query is translated into the sites'
//! terms, and what cannot be translated exactly is checked again on the de-identified results.
//!
//! - UIDs (path and matching keys) are pseudonyms: each is replaced by the site's UID it stands
//!   for. One that was never handed out matches nothing (a path UID: 404), and a site's own UID
//!   is no pseudonym: it matches nothing either.
//! - PatientID or PatientName matching a patient's pseudonym becomes PatientID matching the
//!   site's ID; results of another patient with the same ID elsewhere are filtered out.
//!   With wildcards (a viewer's name filter sends `*text*`), they match the pseudonyms the
//!   caller sees, ignoring case: the sites are asked without the key and every de-identified
//!   result is checked here (within `federation.max_matches`).
//! - Dates, when dates are shifted (retain-longitudinal-modified-dates): a DA range in shifted
//!   dates is widened by the largest shift for the sites and checked exactly on the shifted
//!   results. Times are not shifted and match as they are.
//! - Any other attribute the profile removes or replaces is refused (400): matching on it would
//!   reveal what the de-identified results hide.

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicomweb_deid::dates::shift_date;
use dicomweb_deid::keys::MAX_SHIFT_DAYS;
use dicomweb_deid::table::{row_of, Action};
use dicomweb_deid::KnownPatient;
use dicomweb_model::qido::{MatchKey, QidoQuery};
use pacs_adapter::QueryLevel;

use crate::core::attributes::text_of;
use crate::core::privacy::deidentify::Privacy;
use crate::core::privacy::pseudonyms::Kind;
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::Site;

/// A check a de-identified result must pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Filter {
    /// PatientID (as the result shows it) is this pseudonym.
    Patient(String),
    /// The shifted date is within the range (inclusive; open ends empty).
    DateRange { tag: Tag, from: String, to: String },
    /// The value, as the result shows it, matches the wildcard pattern (`*`, `?`), ignoring case.
    Pattern { tag: Tag, pattern: String },
}

/// DICOM wildcard matching (PS3.4 C.2.2.2.4: `*` any run of characters, `?` one), ignoring
/// case: pseudonyms have no case that means anything.
fn wildcard_match(pattern: &str, value: &str) -> bool {
    let pattern: Vec<char> = pattern.to_uppercase().chars().collect();
    let value: Vec<char> = value.to_uppercase().chars().collect();
    // Greedy with backtracking to the last `*`: linear in practice, never exponential.
    let (mut p, mut v, mut star, mut resume) = (0, 0, None, 0);
    while v < value.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == value[v]) {
            p += 1;
            v += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            star = Some(p);
            resume = v;
            p += 1;
        } else if let Some(s) = star {
            p = s + 1;
            resume += 1;
            v = resume;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

fn keyword(tag: Tag) -> String {
    StandardDataDictionary.by_tag(tag).map(|e| e.alias().to_owned()).unwrap_or_else(|| format!("{tag}"))
}

fn refused(tag: Tag, why: &str) -> Error {
    Error::BadRequest(format!("matching on {} is not possible here: {why}", keyword(tag)))
}

const UID_KEYS: [(Tag, Kind); 3] = [
    (tags::STUDY_INSTANCE_UID, Kind::Study),
    (tags::SERIES_INSTANCE_UID, Kind::Series),
    (tags::SOP_INSTANCE_UID, Kind::Instance),
];

/// The sites' UIDs of a list of pseudonyms; `None` when none of them was ever handed out
/// (then nothing can match; a site UID given instead of a pseudonym must not match either).
async fn uid_list(privacy: &Privacy, value: &str, kind: Kind) -> Result<Option<String>, Error> {
    let mut out = Vec::new();
    for pseudonym in value.split('\\') {
        match privacy.resolve(pseudonym, kind).await {
            Ok(original) => out.push(original.value),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok((!out.is_empty()).then(|| out.join("\\")))
}

/// The date range `value` widened into the sites' dates, and the filter for the results.
fn date_key(tag: Tag, value: &str) -> Result<(String, Filter), Error> {
    let (from, to) = match value.split_once('-') {
        Some((from, to)) => (from.trim().to_owned(), to.trim().to_owned()),
        None => (value.trim().to_owned(), value.trim().to_owned()),
    };
    // A shifted date is the site's date moved back by 1 to MAX_SHIFT_DAYS days.
    let widen = |date: &str, days: i64| -> Result<String, Error> {
        if date.is_empty() {
            return Ok(String::new());
        }
        shift_date(date, days)
            .ok_or_else(|| refused(tag, "dates are shifted, so only whole dates (YYYYMMDD) can be matched"))
    };
    let site_range = format!("{}-{}", widen(&from, -1)?, widen(&to, -MAX_SHIFT_DAYS)?);
    Ok((site_range, Filter::DateRange { tag, from, to }))
}

/// Translates the query's matching keys into the sites' terms; returns the checks the
/// de-identified results must pass, or `None` when nothing can match (a UID or patient that
/// was never handed out).
pub(crate) async fn translate(privacy: &Privacy, query: &mut QidoQuery) -> Result<Option<Vec<Filter>>, Error> {
    let options = privacy.engine.options();
    let shifted = options.has("retain-longitudinal-modified-dates");
    let mut filters = Vec::new();
    let mut translated: Vec<MatchKey> = Vec::with_capacity(query.matches.len());
    for key in std::mem::take(&mut query.matches) {
        let tag = *key.path.last().unwrap_or(&Tag(0, 0));
        if key.path.len() == 1 {
            if let Some((_, kind)) = UID_KEYS.iter().find(|(t, _)| *t == tag) {
                let Some(value) = uid_list(privacy, &key.value, *kind).await? else { return Ok(None) };
                translated.push(MatchKey { value, ..key });
                continue;
            }
            if tag == tags::PATIENT_ID || tag == tags::PATIENT_NAME {
                if key.value.contains(['*', '?']) {
                    filters.push(Filter::Pattern { tag, pattern: key.value.clone() });
                    query.include.add(tag);
                    continue;
                }
                let patient = match privacy.resolve(&key.value, Kind::Patient).await {
                    Ok(patient) => patient,
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                };
                filters.push(Filter::Patient(key.value.clone()));
                translated.push(MatchKey { path: vec![tags::PATIENT_ID], vr: VR::LO, value: patient.value });
                continue;
            }
            if key.vr == VR::DA && shifted && row_of(tag).map(|r| options.action(r)) == Some(Action::Clean) {
                let (value, filter) = date_key(tag, &key.value)?;
                filters.push(filter);
                translated.push(MatchKey { value, ..key });
                continue;
            }
            if key.vr == VR::TM && shifted && row_of(tag).map(|r| options.action(r)) == Some(Action::Clean) {
                translated.push(key);
                continue;
            }
        }
        for step in &key.path {
            match row_of(*step).map(|row| options.action(row)) {
                None | Some(Action::Keep) => {}
                Some(_) => return Err(refused(*step, "de-identification removes or replaces it")),
            }
        }
        translated.push(key);
    }
    query.matches = translated;
    Ok(Some(filters))
}

/// The patient of each result (for its pseudonym and date shift), asked of the sites along
/// with every search when de-identifying: a result confined by its path to a study or series
/// does not show the study's patient attributes, and a date shifted without its patient would
/// be shifted by one constant for every patient (docs/DEIDENTIFICATION.md).
pub(crate) const PATIENT_KEYS: [Tag; 2] = [tags::PATIENT_ID, tags::ISSUER_OF_PATIENT_ID];

/// A result's patient, taken out of the result when the resource does not show it (`shown`
/// false): the result is then de-identified for that patient without naming it.
pub(crate) fn take_patient(result: &mut InMemDicomObject, shown: bool) -> Option<KnownPatient> {
    result.get(tags::PATIENT_ID)?;
    let patient = KnownPatient {
        id: text_of(result, tags::PATIENT_ID).unwrap_or_default(),
        issuer: text_of(result, tags::ISSUER_OF_PATIENT_ID),
    };
    if !shown {
        for tag in PATIENT_KEYS {
            result.remove_element(tag);
        }
    }
    Some(patient)
}

/// The one patient a study belongs to at a site that did not name it in a result (a PACS may
/// leave study attributes out of a series-level answer): a study-level C-FIND. `None` when
/// the site names no patient, or more than one (a study UID reused under two patients).
pub(crate) async fn patient_of_study(
    site: &Site,
    touched: &Touched,
    study: &str,
) -> Result<Option<KnownPatient>, Error> {
    let identifier = InMemDicomObject::from_element_iter([
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study)),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::Empty),
        DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::Empty),
    ]);
    let mut patients: Vec<KnownPatient> = Vec::new();
    for mut found in site.find_all(touched, QueryLevel::Study, identifier).await? {
        if let Some(patient) = take_patient(&mut found, false) {
            if !patients.contains(&patient) {
                patients.push(patient);
            }
        }
    }
    Ok(if patients.len() == 1 { patients.pop() } else { None })
}

/// Whether a de-identified result passes every check.
pub(crate) fn passes(result: &InMemDicomObject, filters: &[Filter]) -> bool {
    filters.iter().all(|filter| match filter {
        Filter::Patient(pseudonym) => text_of(result, tags::PATIENT_ID).as_deref() == Some(pseudonym.as_str()),
        Filter::DateRange { tag, from, to } => match text_of(result, *tag) {
            Some(date) => {
                (from.is_empty() || date.as_str() >= from.as_str()) && (to.is_empty() || date.as_str() <= to.as_str())
            }
            None => false,
        },
        Filter::Pattern { tag, pattern } => wildcard_match(pattern, &text_of(result, *tag).unwrap_or_default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shifted_date_range_widens_to_every_possible_site_date() {
        let (range, filter) = date_key(tags::STUDY_DATE, "20200101-20200131").expect("valid");
        assert_eq!(range, format!("20200102-{}", shift_date("20200131", -MAX_SHIFT_DAYS).expect("date")));
        assert_eq!(filter, Filter::DateRange { tag: tags::STUDY_DATE, from: "20200101".into(), to: "20200131".into() });
        let (open, _) = date_key(tags::STUDY_DATE, "-20200131").expect("valid");
        assert!(open.starts_with('-'));
        assert!(date_key(tags::STUDY_DATE, "2020").is_err());
    }

    #[test]
    fn results_pass_only_the_checks_they_meet() {
        let result = InMemDicomObject::from_element_iter([
            dicom_core::DataElement::new(tags::PATIENT_ID, VR::LO, dicom_core::PrimitiveValue::from("PXABC")),
            dicom_core::DataElement::new(tags::STUDY_DATE, VR::DA, dicom_core::PrimitiveValue::from("20200115")),
        ]);
        let in_range = Filter::DateRange { tag: tags::STUDY_DATE, from: "20200101".into(), to: "20200131".into() };
        assert!(passes(&result, &[Filter::Patient("PXABC".into()), in_range]));
        assert!(!passes(&result, &[Filter::Patient("PXOTHER".into())]));
        let after = Filter::DateRange { tag: tags::STUDY_DATE, from: "20200201".into(), to: String::new() };
        assert!(!passes(&result, &[after]));
        let pattern = |p: &str| Filter::Pattern { tag: tags::PATIENT_ID, pattern: p.into() };
        assert!(passes(&result, &[pattern("*abc*")]));
        assert!(passes(&result, &[pattern("PX?BC")]));
        assert!(passes(&result, &[pattern("*")]));
        assert!(!passes(&result, &[pattern("*abd*")]));
        assert!(!passes(&result, &[pattern("PX?")]));
    }

    #[test]
    fn wildcards_match_as_dicom_says() {
        for (pattern, value, expected) in [
            ("*", "", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("*a*a*a*a*a*b", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false),
            ("?", "", false),
            ("do?", "DOE", true),
        ] {
            assert_eq!(wildcard_match(pattern, value), expected, "{pattern} against {value}");
        }
    }
}
