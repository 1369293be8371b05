//! PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes) as data:
//! for every attribute the table lists, the Basic Profile's action and the action of each option
//! that changes it. The table is the data file `data/ps3.15-table-e.1-1.tsv` (its header names
//! the edition of the standard and where it was parsed from; `scripts/confidentiality-table.py`
//! writes it), compiled in and parsed once.

use std::sync::OnceLock;

use dicom_core::Tag;

/// An action code of Table E.1-1 (PS3.15 Table E.1-1a).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// D: replace with a non-zero length dummy value.
    Dummy,
    /// Z: replace with a zero length value, or a dummy one.
    Zero,
    /// X: remove.
    Remove,
    /// K: keep (sequences: de-identified recursively).
    Keep,
    /// C: clean (replace identifying information with values of similar meaning).
    Clean,
    /// U: replace with a non-zero length UID that is internally consistent.
    Uid,
    /// Z/D: Z unless D is required to keep the instance valid for its IOD.
    ZeroOrDummy,
    /// X/Z: X unless Z is required.
    RemoveOrZero,
    /// X/D: X unless D is required.
    RemoveOrDummy,
    /// X/Z/D: X unless Z or D is required.
    RemoveOrZeroOrDummy,
    /// X/Z/U*: X unless Z or U (for a sequence of UID references) is required.
    RemoveOrZeroOrUid,
}

impl Action {
    fn parse(code: &str) -> Option<Action> {
        Some(match code {
            "D" => Action::Dummy,
            "Z" => Action::Zero,
            "X" => Action::Remove,
            "K" => Action::Keep,
            "C" => Action::Clean,
            "U" => Action::Uid,
            "Z/D" => Action::ZeroOrDummy,
            "X/Z" => Action::RemoveOrZero,
            "X/D" => Action::RemoveOrDummy,
            "X/Z/D" => Action::RemoveOrZeroOrDummy,
            "X/Z/U*" => Action::RemoveOrZeroOrUid,
            _ => return None,
        })
    }
}

/// The options of PS3.15 §E.3 that Table E.1-1 has a column for, in its column order, by the
/// kebab-case names the configuration uses.
pub const TABLE_OPTIONS: [&str; 10] = [
    "retain-safe-private",
    "retain-uids",
    "retain-device-identity",
    "retain-institution-identity",
    "retain-patient-characteristics",
    "retain-longitudinal-full-dates",
    "retain-longitudinal-modified-dates",
    "clean-descriptors",
    "clean-structured-content",
    "clean-graphics",
];

/// Which attributes a row of the table is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagPattern {
    /// One attribute.
    Exact(Tag),
    /// A repeating group such as (60xx,3000): the tag matches where the mask has ones.
    Masked { value: u32, mask: u32 },
    /// Every private attribute (odd group).
    Private,
}

impl TagPattern {
    fn parse(text: &str) -> Option<TagPattern> {
        if text == "PRIVATE" {
            return Some(TagPattern::Private);
        }
        if text.len() != 8 {
            return None;
        }
        let (mut value, mut mask) = (0u32, 0u32);
        for c in text.chars() {
            value <<= 4;
            mask <<= 4;
            if c != 'X' {
                value |= c.to_digit(16)?;
                mask |= 0xF;
            }
        }
        Some(if mask == u32::MAX {
            TagPattern::Exact(Tag((value >> 16) as u16, value as u16))
        } else {
            TagPattern::Masked { value, mask }
        })
    }

    pub fn matches(&self, tag: Tag) -> bool {
        let packed = (u32::from(tag.group()) << 16) | u32::from(tag.element());
        match self {
            TagPattern::Exact(exact) => *exact == tag,
            TagPattern::Masked { value, mask } => packed & mask == *value,
            TagPattern::Private => tag.group() % 2 == 1,
        }
    }
}

/// One row of Table E.1-1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRow {
    pub pattern: TagPattern,
    pub basic: Action,
    /// The action of each option of [`TABLE_OPTIONS`] (same order), where it changes the row.
    pub options: [Option<Action>; 10],
    pub name: String,
}

/// The edition and provenance lines of the data file.
pub fn table_source() -> Vec<&'static str> {
    TABLE_TEXT.lines().take_while(|l| l.starts_with('#')).map(|l| l.trim_start_matches("# ")).collect()
}

const TABLE_TEXT: &str = include_str!("../data/ps3.15-table-e.1-1.tsv");

/// Every row of the table, in tag order.
pub fn table() -> &'static [ProfileRow] {
    static TABLE: OnceLock<Vec<ProfileRow>> = OnceLock::new();
    TABLE.get_or_init(|| {
        parse(TABLE_TEXT).unwrap_or_else(|line| panic!("the compiled-in Table E.1-1 is malformed at: {line}"))
    })
}

/// Parses the data file; the error is the offending line.
fn parse(text: &str) -> Result<Vec<ProfileRow>, String> {
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.starts_with("tag\t") && !l.is_empty()) {
        let cells: Vec<&str> = line.split('\t').collect();
        let [tag, basic, rest @ ..] = cells.as_slice() else { return Err(line.to_owned()) };
        let (options_text, name) = match rest {
            [options @ .., name] if options.len() == TABLE_OPTIONS.len() => (options, name),
            _ => return Err(line.to_owned()),
        };
        let mut options = [None; 10];
        for (slot, code) in options.iter_mut().zip(options_text) {
            if !code.is_empty() {
                *slot = Some(Action::parse(code).ok_or_else(|| line.to_owned())?);
            }
        }
        rows.push(ProfileRow {
            pattern: TagPattern::parse(tag).ok_or_else(|| line.to_owned())?,
            basic: Action::parse(basic).ok_or_else(|| line.to_owned())?,
            options,
            name: (*name).to_owned(),
        });
    }
    Ok(rows)
}

struct Index {
    exact: std::collections::HashMap<Tag, usize>,
    /// Repeating groups, then the private attributes' row.
    patterns: Vec<usize>,
}

fn index() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let rows = table();
        let exact = rows
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r.pattern {
                TagPattern::Exact(tag) => Some((tag, i)),
                _ => None,
            })
            .collect();
        let mut patterns: Vec<usize> =
            (0..rows.len()).filter(|&i| matches!(rows[i].pattern, TagPattern::Masked { .. })).collect();
        patterns.extend((0..rows.len()).filter(|&i| rows[i].pattern == TagPattern::Private));
        Index { exact, patterns }
    })
}

/// The row that applies to an attribute: its own, else a repeating group's, else (odd group)
/// the private attributes' row. `None`: the table does not list it.
pub fn row_of(tag: Tag) -> Option<&'static ProfileRow> {
    let rows = table();
    let index = index();
    if let Some(&i) = index.exact.get(&tag) {
        return Some(&rows[i]);
    }
    index.patterns.iter().map(|&i| &rows[i]).find(|r| r.pattern.matches(tag))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_dictionary_std::tags;

    fn option(name: &str) -> usize {
        TABLE_OPTIONS.iter().position(|o| *o == name).expect("option")
    }

    #[test]
    fn the_whole_table_parses_and_names_its_edition() {
        assert_eq!(table().len(), 621);
        assert!(table_source()[0].starts_with("DICOM PS3.15 2024b, Table E.1-1"), "{:?}", table_source());
    }

    #[test]
    fn rows_say_what_the_standard_says() {
        let name = row_of(tags::PATIENT_NAME).expect("listed");
        assert_eq!(name.basic, Action::Zero);
        let study = row_of(tags::STUDY_INSTANCE_UID).expect("listed");
        assert_eq!((study.basic, study.options[option("retain-uids")]), (Action::Uid, Some(Action::Keep)));
        let date = row_of(tags::ACQUISITION_DATE).expect("listed");
        assert_eq!(date.options[option("retain-longitudinal-modified-dates")], Some(Action::Clean));
        assert_eq!(row_of(tags::ACCESSION_NUMBER).expect("listed").basic, Action::Zero);
        // Not listed: kept by the profile.
        assert!(row_of(tags::ROWS).is_none());
    }

    #[test]
    fn repeating_groups_and_private_attributes() {
        let overlay = row_of(Tag(0x6002, 0x3000)).expect("overlay data");
        assert_eq!(overlay.name, "Overlay Data");
        let private = row_of(Tag(0x0009, 0x1010)).expect("private");
        assert_eq!(
            (private.basic, private.options[option("retain-safe-private")]),
            (Action::Remove, Some(Action::Clean))
        );
        assert!(!TagPattern::Private.matches(Tag(0x0010, 0x0010)));
    }

    #[test]
    fn malformed_lines_are_refused() {
        assert!(parse("00100010\tQ\t\t\t\t\t\t\t\t\t\t\tName").is_err());
        assert!(parse("0010001\tX\t\t\t\t\t\t\t\t\t\t\tName").is_err());
        assert!(parse("00100010\tX\tName").is_err());
    }
}
