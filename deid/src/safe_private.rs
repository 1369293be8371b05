//! PS3.15 Table E.3.10-1 (Safe Private Attributes) as data, for the Retain Safe Private
//! option: a private attribute is kept when its group, its element within the private block
//! and its block's private creator are listed. The table is `data/ps3.15-table-e.3.10-1.tsv`
//! (edition and provenance in its header; `scripts/safe-private-table.py` writes it).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use dicom_core::Tag;
use dicom_object::InMemDicomObject;

const TABLE_TEXT: &str = include_str!("../data/ps3.15-table-e.3.10-1.tsv");

/// (group, element within the block, private creator) of every listed attribute.
fn table() -> &'static HashSet<(u16, u8, String)> {
    static TABLE: OnceLock<HashSet<(u16, u8, String)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        TABLE_TEXT
            .lines()
            .filter(|l| !l.starts_with('#') && !l.starts_with("group\t") && !l.is_empty())
            .filter_map(|line| {
                let mut cells = line.split('\t');
                let group = u16::from_str_radix(cells.next()?, 16).ok()?;
                let element = u8::from_str_radix(cells.next()?, 16).ok()?;
                Some((group, element, cells.next()?.trim().to_owned()))
            })
            .collect()
    })
}

/// How many attributes the table lists.
pub fn listed() -> usize {
    table().len()
}

/// The private attributes of one data set (not its items) that are safe to keep, with the
/// private creator elements of their blocks.
pub fn safe_in(obj: &InMemDicomObject) -> HashSet<Tag> {
    let mut creators: HashMap<(u16, u8), String> = HashMap::new();
    for element in obj.iter() {
        let tag = element.header().tag;
        if tag.group() % 2 == 1 && (0x10..=0xFF).contains(&tag.element()) {
            if let Ok(creator) = element.to_str() {
                creators.insert((tag.group(), tag.element() as u8), creator.trim_matches([' ', '\0']).to_owned());
            }
        }
    }
    let mut safe = HashSet::new();
    for element in obj.iter() {
        let tag = element.header().tag;
        if tag.group() % 2 == 0 || tag.element() < 0x1000 {
            continue;
        }
        let block = (tag.element() >> 8) as u8;
        let Some(creator) = creators.get(&(tag.group(), block)) else { continue };
        if table().contains(&(tag.group(), tag.element() as u8, creator.clone())) {
            safe.insert(tag);
            safe.insert(Tag(tag.group(), u16::from(block)));
        }
    }
    safe
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    #[test]
    fn only_listed_attributes_of_the_listed_creator_are_safe() {
        assert!(listed() > 100);
        let obj = InMemDicomObject::from_element_iter([
            DataElement::new(Tag(0x0043, 0x0010), VR::LO, PrimitiveValue::from("GEMS_PARM_01")),
            DataElement::new(Tag(0x0043, 0x1027), VR::SH, PrimitiveValue::from("0.984:1")),
            DataElement::new(Tag(0x0043, 0x1028), VR::LO, PrimitiveValue::from("not listed")),
            DataElement::new(Tag(0x0045, 0x0011), VR::LO, PrimitiveValue::from("SOMEONE ELSE")),
            DataElement::new(Tag(0x0045, 0x1101), VR::SS, PrimitiveValue::from(3i16)),
        ]);
        let safe = safe_in(&obj);
        assert_eq!(safe, HashSet::from([Tag(0x0043, 0x0010), Tag(0x0043, 0x1027)]));
    }
}
