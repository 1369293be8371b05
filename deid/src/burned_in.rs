//! Instances whose pixel data may show identity (names and IDs burned into the image) are
//! withheld: the profile cleans attributes, not pixels.
//!
//! Withheld: BurnedInAnnotation (0028,0301) = YES; or, when it is absent, an instance of a SOP
//! class or modality known to carry burned-in text (secondary capture, ultrasound, visible-light
//! photography and video, scanned documents). BurnedInAnnotation = NO lets any instance pass.

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;

/// SOP classes that often carry burned-in identity (PS3.4 Annex B), by UID prefix.
const SUSPECT_CLASSES: &[&str] = &[
    "1.2.840.10008.5.1.4.1.1.7",     // Secondary Capture (and its multi-frame variants, .7.x)
    "1.2.840.10008.5.1.4.1.1.6.",    // Ultrasound Image, Ultrasound Multi-frame
    "1.2.840.10008.5.1.4.1.1.3.1",   // Ultrasound Multi-frame (retired)
    "1.2.840.10008.5.1.4.1.1.77.1.", // Visible Light images and video
    "1.2.840.10008.5.1.4.1.1.104.1", // Encapsulated PDF
];

const SUSPECT_MODALITIES: &[&str] = &["US", "SC", "XC", "ES", "GM", "SM", "DOC", "OT"];

/// Why an instance is withheld, for the Warning header and the logs (no patient data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Withheld {
    pub reason: &'static str,
}

fn text_of(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag)?.to_str().ok().map(|t| t.trim_matches([' ', '\0']).to_uppercase())
}

/// `Some` when the instance must be withheld.
pub fn check(obj: &InMemDicomObject) -> Option<Withheld> {
    match text_of(obj, tags::BURNED_IN_ANNOTATION).as_deref() {
        Some("YES") => return Some(Withheld { reason: "BurnedInAnnotation is YES" }),
        Some("NO") => return None,
        _ => {}
    }
    let class = text_of(obj, tags::SOP_CLASS_UID).unwrap_or_default();
    if SUSPECT_CLASSES.iter().any(|prefix| class.starts_with(prefix)) {
        return Some(Withheld {
            reason: "a SOP class that may carry burned-in identity, without BurnedInAnnotation = NO",
        });
    }
    let modality = text_of(obj, tags::MODALITY).unwrap_or_default();
    if SUSPECT_MODALITIES.contains(&modality.as_str()) {
        return Some(Withheld {
            reason: "a modality that may carry burned-in identity, without BurnedInAnnotation = NO",
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    fn instance(class: &str, modality: &str, burned_in: Option<&str>) -> InMemDicomObject {
        let mut obj = InMemDicomObject::from_element_iter([
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(class)),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from(modality)),
        ]);
        if let Some(flag) = burned_in {
            obj.put(DataElement::new(tags::BURNED_IN_ANNOTATION, VR::CS, PrimitiveValue::from(flag)));
        }
        obj
    }

    #[test]
    fn flagged_or_suspect_instances_are_withheld_unless_flagged_no() {
        let ct = "1.2.840.10008.5.1.4.1.1.2";
        let sc = "1.2.840.10008.5.1.4.1.1.7";
        assert!(check(&instance(ct, "CT", None)).is_none());
        assert!(check(&instance(ct, "CT", Some("YES"))).is_some());
        assert!(check(&instance(sc, "OT", None)).is_some());
        assert!(check(&instance(sc, "OT", Some("NO"))).is_none());
        assert!(check(&instance("1.2.840.10008.5.1.4.1.1.6.1", "US", None)).is_some());
        assert!(check(&instance(ct, "US", None)).is_some());
    }
}
