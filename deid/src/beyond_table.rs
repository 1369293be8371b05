//! Attributes that carry identity but that PS3.15 Table E.1-1 does not list, and what the
//! profile does with each. The table is silent on them, so without this list they would be kept;
//! each is here for the reason given beside it.

use dicom_core::Tag;

use crate::table::Action;

/// (attribute, action, why).
pub const ROWS: [(Tag, Action, &str); 11] = [
    // URLs and URIs name the archive's host and its own UIDs (KOS and SR evidence, references).
    (Tag(0x0008, 0x1190), Action::Remove, "Retrieve URL: the archive's host and UIDs"),
    (Tag(0x0040, 0xE010), Action::Remove, "Retrieve URI: the archive's host and UIDs"),
    // A UID: mapped like every other, so that a reference that needs one stays valid (in a
    // KOS it may stand in for the removed Retrieve AE Title and URL).
    (Tag(0x0040, 0xE011), Action::Uid, "Retrieve Location UID: names the archive"),
    (Tag(0x0040, 0xE001), Action::Remove, "HL7 Instance Identifier: the hospital's HL7 message"),
    (Tag(0x0040, 0xE030), Action::Remove, "Repository Unique ID: the hospital's document repository"),
    (Tag(0x0040, 0xE031), Action::Remove, "Home Community ID: the hospital's community"),
    (Tag(0x0010, 0x0024), Action::Remove, "Issuer of Patient ID Qualifiers Sequence: the hospital"),
    (Tag(0x0008, 0x0051), Action::Remove, "Issuer of Accession Number Sequence: the hospital"),
    (Tag(0x0040, 0x0031), Action::Remove, "Local Namespace Entity ID: an issuer of identifiers"),
    (Tag(0x0040, 0x0032), Action::Remove, "Universal Entity ID: an issuer of identifiers"),
    (Tag(0x0040, 0x0033), Action::Remove, "Universal Entity ID Type: goes with the ID"),
];

/// The action for an attribute the table does not list, when this list has one.
pub fn action(tag: Tag) -> Option<Action> {
    ROWS.iter().find(|(t, _, _)| *t == tag).map(|(_, action, _)| *action)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_one_the_standard_table_leaves_out() {
        for (tag, _, why) in ROWS {
            assert!(crate::table::row_of(tag).is_none(), "{tag} ({why}) is in Table E.1-1: its row applies");
        }
    }
}
