//! Reading attributes of a data set as the core compares them.

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

/// A text value of an identifier, without padding; `None` when absent or empty.
pub(crate) fn text_of(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| dicomweb_deid::keys::unpadded(&s).to_owned())
        .filter(|s| !s.is_empty())
}

/// A UID of an identifier in the role the tag gives it, as the peer sent it
/// ([`dicomweb_model::Uid::from_peer`]); `None` when absent, empty or not digits and dots.
pub(crate) fn uid_of<U: From<dicomweb_model::Uid>>(obj: &InMemDicomObject, tag: Tag) -> Option<U> {
    text_of(obj, tag).and_then(|text| dicomweb_model::Uid::from_peer(&text).ok()).map(U::from)
}
