//! Reading attributes of a data set as the core compares them.

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

/// A text value of an identifier, without padding; `None` when absent or empty.
pub fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| dicomweb_deid::keys::unpadded(&s).to_owned())
        .filter(|s| !s.is_empty())
}
