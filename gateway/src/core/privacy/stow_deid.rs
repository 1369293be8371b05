//! A STOW-RS instance when the gateway de-identifies: put into the site's terms before it is
//! stored, so that a caller learns nothing from the values it chooses (docs/DEIDENTIFICATION.md,
//! "Storing").
//!
//! - A UID (any non-standard UI value, at any depth) that is a pseudonym this project handed
//!   out becomes the site's UID it stands for: a result stored against a de-identified study
//!   lands in that study, and its references point at the site's instances. Any other UID is
//!   kept under a value keyed by the project's upload key (`ProjectKeys::stored_uid`), never as
//!   sent: a caller naming a site's UID would otherwise be answered that UID's pseudonym.
//! - PatientID likewise: a patient pseudonym of this project becomes the site's PatientID, with
//!   the issuer it was made with as IssuerOfPatientID when that is not the storing site (so the
//!   instance comes back under the same pseudonym), and any other value a keyed `UP...` token,
//!   so that a chosen MRN never comes back as that patient's pseudonym or date shift.
//! - With shifted dates, every date moves forward by the shift the stored patient's dates will
//!   move back by on the way out: the caller reads back the dates it sent, and learns no shift.

use std::collections::HashMap;

use dicom_core::value::{DataSetSequence, Value};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;
use dicomweb_deid::dates::{shift_da, shift_dt};
use dicomweb_deid::profile::STANDARD_UID_ROOT;

use crate::core::attributes::text_of;
use crate::core::privacy::deidentify::Privacy;
use crate::core::privacy::pseudonyms::Kind;
use crate::core::Error;

/// Deeper nesting is refused before this runs (`dataset_limits`); this is only a backstop.
const MAX_DEPTH: usize = 64;

/// Every non-standard UID of a data set, at any depth.
fn uids(obj: &InMemDicomObject, depth: usize, out: &mut Vec<String>) {
    if depth > MAX_DEPTH {
        return;
    }
    for element in obj.iter() {
        match element.value() {
            Value::Sequence(items) => items.items().iter().for_each(|item| uids(item, depth + 1, out)),
            Value::Primitive(value) if element.vr() == VR::UI => {
                for uid in value.to_multi_str().iter() {
                    let uid = dicomweb_deid::keys::unpadded(uid);
                    if !uid.is_empty() && !uid.starts_with(STANDARD_UID_ROOT) && !out.iter().any(|u| u == uid) {
                        out.push(uid.to_owned());
                    }
                }
            }
            _ => {}
        }
    }
}

/// The site's value of each UID of the data set: a pseudonym of this project's resolved, any
/// other value keyed.
async fn site_uids(privacy: &Privacy, obj: &InMemDicomObject) -> Result<HashMap<String, String>, Error> {
    let mut found = Vec::new();
    uids(obj, 0, &mut found);
    let mut out = HashMap::with_capacity(found.len());
    for uid in found {
        let site = match privacy.lookup(&uid).await? {
            Some(original) if original.kind != Kind::Patient => original.value,
            _ => privacy.engine.keys().stored_uid(&uid),
        };
        out.insert(uid, site);
    }
    Ok(out)
}

/// The site's PatientID for what the caller sent, and the issuer to name with it.
async fn site_patient(privacy: &Privacy, sent: &str) -> Result<(String, Option<String>), Error> {
    Ok(match privacy.lookup(sent).await? {
        Some(original) if original.kind == Kind::Patient => (original.value, original.issuer),
        _ => (privacy.engine.keys().stored_patient(sent), None),
    })
}

/// Rewrites a data set's UIDs (by `site`) and, when `forward_days` is given, moves its dates
/// forward by that many days, at every depth.
fn rewrite(obj: &mut InMemDicomObject, site: &HashMap<String, String>, forward_days: Option<i64>, depth: usize) {
    let tags: Vec<Tag> = obj.tags().collect();
    for tag in tags {
        let Some(element) = obj.take(tag) else { continue };
        let vr = element.vr();
        let rewritten: InMemElement = match element.into_value() {
            Value::Sequence(items) if depth < MAX_DEPTH => {
                let mut items: Vec<InMemDicomObject> = items.into_items().into_iter().collect();
                for item in &mut items {
                    rewrite(item, site, forward_days, depth + 1);
                }
                DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
            }
            Value::Primitive(value) if matches!(vr, VR::UI | VR::DA | VR::DT) => {
                let values: Vec<String> = value
                    .to_multi_str()
                    .iter()
                    .map(|v| {
                        let v = dicomweb_deid::keys::unpadded(v);
                        match (vr, forward_days) {
                            (VR::UI, _) => site.get(v).cloned().unwrap_or_else(|| v.to_owned()),
                            (VR::DA, Some(days)) => shift_da(v, -days).unwrap_or_default(),
                            (VR::DT, Some(days)) => shift_dt(v, -days).unwrap_or_default(),
                            _ => v.to_owned(),
                        }
                    })
                    .collect();
                DataElement::new(tag, vr, PrimitiveValue::Strs(values.into()))
            }
            value => DataElement::new(tag, vr, value),
        };
        obj.put(rewritten);
    }
}

/// Puts an instance a caller stores at `storing_site` into the site's terms (see the module
/// documentation).
pub(crate) async fn into_site_terms(
    privacy: &Privacy,
    obj: &mut InMemDicomObject,
    storing_site: &str,
) -> Result<(), Error> {
    let site = site_uids(privacy, obj).await?;
    let (patient, issuer) = match text_of(obj, tags::PATIENT_ID) {
        Some(sent) => site_patient(privacy, &sent).await?,
        // No PatientID: one the caller did not choose, so that the instance has a patient of
        // its own (and a date shift that belongs to nobody else).
        None => (privacy.engine.keys().stored_patient(""), None),
    };
    obj.put(DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(patient.as_str())));
    // The caller's own issuer is not kept: with it, a chosen issuer and ID would name the
    // pseudonym of that patient at another issuer.
    obj.remove_element(tags::ISSUER_OF_PATIENT_ID);
    if let Some(issuer) = issuer.filter(|issuer| issuer != storing_site) {
        obj.put(DataElement::new(tags::ISSUER_OF_PATIENT_ID, VR::LO, PrimitiveValue::from(issuer)));
    }
    let shifted = privacy.engine.options().has("retain-longitudinal-modified-dates");
    let forward_days = shifted.then(|| privacy.engine.keys().date_shift_days(&patient));
    rewrite(obj, &site, forward_days, 0);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uids_and_dates_are_rewritten_at_every_depth_and_standard_uids_kept() {
        let reference = InMemDicomObject::from_element_iter([
            DataElement::new(tags::REFERENCED_SOP_CLASS_UID, VR::UI, PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.2")),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.7")),
        ]);
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("2.25.1")),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from("20200101")),
            DataElement::new(tags::REFERENCED_IMAGE_SEQUENCE, VR::SQ, DataSetSequence::from(vec![reference])),
        ]);
        let mut found = Vec::new();
        uids(&obj, 0, &mut found);
        found.sort();
        assert_eq!(found, ["2.25.1", "2.25.7"], "standard UIDs are not the caller's");
        let site: HashMap<String, String> =
            [("2.25.1".to_owned(), "1.2.3".to_owned()), ("2.25.7".to_owned(), "1.2.3.7".to_owned())].into();
        rewrite(&mut obj, &site, Some(10), 0);
        assert_eq!(text_of(&obj, tags::STUDY_INSTANCE_UID).as_deref(), Some("1.2.3"));
        assert_eq!(text_of(&obj, tags::STUDY_DATE).as_deref(), Some("20200111"));
        let item = obj.element(tags::REFERENCED_IMAGE_SEQUENCE).expect("kept").items().expect("items")[0].clone();
        assert_eq!(text_of(&item, tags::REFERENCED_SOP_INSTANCE_UID).as_deref(), Some("1.2.3.7"));
        assert_eq!(text_of(&item, tags::REFERENCED_SOP_CLASS_UID).as_deref(), Some("1.2.840.10008.5.1.4.1.1.2"));
    }
}
