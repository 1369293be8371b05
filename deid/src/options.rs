//! The PS3.15 §E.3 options a project may select, and the code of each for
//! DeidentificationMethodCodeSequence (CID 7050).

use crate::table::{Action, ProfileRow, TABLE_OPTIONS};

/// An option, by the kebab-case name the configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeidOption {
    pub name: &'static str,
    /// CID 7050 code value (coding scheme DCM) and meaning.
    pub code: &'static str,
    pub meaning: &'static str,
}

/// The options the gateway implements.
pub const SUPPORTED: [DeidOption; 5] = [
    DeidOption {
        name: "retain-longitudinal-modified-dates",
        code: "113107",
        meaning: "Retain Longitudinal Temporal Information Modified Dates Option",
    },
    DeidOption {
        name: "retain-patient-characteristics",
        code: "113108",
        meaning: "Retain Patient Characteristics Option",
    },
    DeidOption { name: "retain-device-identity", code: "113109", meaning: "Retain Device Identity Option" },
    DeidOption { name: "clean-descriptors", code: "113105", meaning: "Clean Descriptors Option" },
    DeidOption { name: "retain-safe-private", code: "113111", meaning: "Retain Safe Private Option" },
];

/// Options of PS3.15 that the gateway knows but does not implement, and why.
pub const NOT_SUPPORTED: [(&str, &str); 7] = [
    ("retain-uids", "would hand out the sites' UIDs, which the federation's pseudonyms exist to hide"),
    ("retain-institution-identity", "not offered by this gateway"),
    ("retain-longitudinal-full-dates", "not offered by this gateway: use retain-longitudinal-modified-dates"),
    ("clean-structured-content", "not implemented: structured content is handled by the basic profile"),
    ("clean-graphics", "not implemented: graphics are removed by the basic profile"),
    ("clean-pixel-data", "set burned_in = \"clean\" (the project's or [deid]'s) instead: docs/BURNED-IN.md"),
    ("clean-recognizable-visual-features", "not implemented"),
];

/// The options a project selected.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    selected: Vec<DeidOption>,
}

impl Options {
    /// Parses option names; every unknown or unsupported name is reported.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Options, Vec<String>> {
        let mut selected = Vec::new();
        let mut problems = Vec::new();
        for name in names {
            let name = name.as_ref();
            if let Some(option) = SUPPORTED.iter().find(|o| o.name == name) {
                if !selected.contains(option) {
                    selected.push(*option);
                }
            } else if let Some((_, why)) = NOT_SUPPORTED.iter().find(|(n, _)| *n == name) {
                problems.push(format!("option {name:?} is not available: {why}"));
            } else {
                let known: Vec<&str> = SUPPORTED.iter().map(|o| o.name).collect();
                problems.push(format!("unknown option {name:?}; available: {}", known.join(", ")));
            }
        }
        if problems.is_empty() {
            Ok(Options { selected })
        } else {
            Err(problems)
        }
    }

    pub fn selected(&self) -> &[DeidOption] {
        &self.selected
    }

    pub fn has(&self, name: &str) -> bool {
        self.selected.iter().any(|o| o.name == name)
    }

    /// The action for a row under these options: an option that keeps the attribute wins
    /// over one that cleans it, and either over the basic profile.
    pub fn action(&self, row: &ProfileRow) -> Action {
        let mut action = row.basic;
        for (column, name) in TABLE_OPTIONS.iter().enumerate() {
            if let (true, Some(code)) = (self.has(name), row.options[column]) {
                if action != Action::Keep {
                    action = code;
                }
            }
        }
        action
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_unsupported_ones_say_why() {
        let options = Options::parse(&["clean-descriptors", "retain-device-identity"]).expect("valid");
        assert!(options.has("clean-descriptors") && !options.has("retain-patient-characteristics"));
        let problems = Options::parse(&["retain-uids", "retain-everything"]).expect_err("refused");
        assert!(problems[0].contains("pseudonyms"), "{problems:?}");
        assert!(problems[1].contains("unknown option"), "{problems:?}");
    }

    #[test]
    fn options_change_the_rows_they_name() {
        let date = crate::table::row_of(dicom_dictionary_std::tags::ACQUISITION_DATE).expect("listed");
        assert_eq!(Options::default().action(date), Action::RemoveOrZero);
        let shifted = Options::parse(&["retain-longitudinal-modified-dates"]).expect("valid");
        assert_eq!(shifted.action(date), Action::Clean);
        let serial = crate::table::row_of(dicom_dictionary_std::tags::DEVICE_SERIAL_NUMBER).expect("listed");
        assert_eq!(Options::parse(&["retain-device-identity"]).expect("valid").action(serial), Action::Keep);
    }
}
