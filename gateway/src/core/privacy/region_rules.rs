//! Region rules (`deid.burned_in_rules`): where a known device burns text into its images, as
//! rectangles to blank whatever text detection finds (docs/BURNED-IN.md). A rule names a
//! device by what its instances say of it (Manufacturer, Manufacturer's Model Name, SOP Class,
//! Rows x Columns); every attribute a rule names must match, and Rows and Columns always must.
//! The file is checked when the gateway starts: a rule that names nothing to match or a
//! rectangle outside its image is an error then, not a silent miss later.
//!
//! ```toml
//! [[rules]]
//! name = "Philips CX50, 800x350: header band"
//! manufacturer = "Philips Medical Systems"
//! model = "CX50"
//! rows = 350
//! columns = 800
//! blank = [[0, 0, 800, 60]]   # x, y, width, height
//! ```

use std::path::Path;

use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use serde::Deserialize;

/// A rectangle of pixels: left, top, width, height.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rectangle {
    pub(crate) left: u32,
    pub(crate) top: u32,
    pub(crate) width: u32,
    pub(crate) height: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegionRule {
    pub(crate) name: String,
    manufacturer: Option<String>,
    model: Option<String>,
    sop_class: Option<String>,
    rows: u32,
    columns: u32,
    pub(crate) blank: Vec<Rectangle>,
}

/// Every rule of the file, in its order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RegionRules {
    rules: Vec<RegionRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rules: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    manufacturer: Option<String>,
    model: Option<String>,
    sop_class: Option<String>,
    rows: u32,
    columns: u32,
    blank: Vec<[u32; 4]>,
}

/// A text attribute as rules compare it: padding trimmed, case ignored.
fn normalised(text: &str) -> String {
    text.trim_matches([' ', '\0']).to_lowercase()
}

impl RegionRules {
    /// Reads and checks the rules file; every problem is reported, with the rule's name.
    pub(crate) fn load(path: &Path) -> anyhow::Result<RegionRules> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read deid.burned_in_rules {}: {e}", path.display()))?;
        RegionRules::parse(&text)
            .map_err(|problems| anyhow::anyhow!("deid.burned_in_rules {}: {}", path.display(), problems.join("; ")))
    }

    pub(crate) fn parse(text: &str) -> Result<RegionRules, Vec<String>> {
        let raw: RawFile = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        for rule in raw.rules {
            let name = rule.name.clone();
            if name.trim().is_empty() {
                problems.push("a rule without a name".to_owned());
            }
            if rule.manufacturer.is_none() && rule.model.is_none() && rule.sop_class.is_none() {
                problems.push(format!("rule {name:?} names no device (manufacturer, model or sop_class)"));
            }
            if rule.rows == 0 || rule.columns == 0 {
                problems.push(format!("rule {name:?}: rows and columns must be at least 1"));
            }
            if rule.blank.is_empty() {
                problems.push(format!("rule {name:?} blanks nothing"));
            }
            let mut blank = Vec::new();
            for [left, top, width, height] in rule.blank {
                let inside = width > 0
                    && height > 0
                    && left.checked_add(width).is_some_and(|right| right <= rule.columns)
                    && top.checked_add(height).is_some_and(|bottom| bottom <= rule.rows);
                if !inside {
                    problems.push(format!(
                        "rule {name:?}: rectangle [{left}, {top}, {width}, {height}] is empty or outside its {}x{} image",
                        rule.columns, rule.rows
                    ));
                }
                blank.push(Rectangle { left, top, width, height });
            }
            rules.push(RegionRule {
                name,
                manufacturer: rule.manufacturer.as_deref().map(normalised),
                model: rule.model.as_deref().map(normalised),
                sop_class: rule.sop_class.as_deref().map(normalised),
                rows: rule.rows,
                columns: rule.columns,
                blank,
            });
        }
        if problems.is_empty() {
            Ok(RegionRules { rules })
        } else {
            Err(problems)
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.rules.len()
    }

    /// The rules that match an instance's data set.
    pub(crate) fn matching<'a>(&'a self, object: &'a InMemDicomObject) -> impl Iterator<Item = &'a RegionRule> + 'a {
        let text = |tag| object.get(tag).and_then(|e| e.to_str().ok()).map(|t| normalised(&t));
        let number = |tag| object.get(tag).and_then(|e| e.to_int::<u32>().ok());
        let (manufacturer, model, class) =
            (text(tags::MANUFACTURER), text(tags::MANUFACTURER_MODEL_NAME), text(tags::SOP_CLASS_UID));
        let (rows, columns) = (number(tags::ROWS), number(tags::COLUMNS));
        self.rules.iter().filter(move |rule| {
            let same = |wanted: &Option<String>, found: &Option<String>| wanted.is_none() || wanted == found;
            Some(rule.rows) == rows
                && Some(rule.columns) == columns
                && same(&rule.manufacturer, &manufacturer)
                && same(&rule.model, &model)
                && same(&rule.sop_class, &class)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicom_core::{DataElement, PrimitiveValue, VR};

    const RULES: &str = r#"
[[rules]]
name = "Philips CX50"
manufacturer = "Philips Medical Systems"
model = "CX50"
rows = 350
columns = 800
blank = [[0, 0, 800, 60]]
"#;

    fn instance(manufacturer: &str, rows: u16) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::MANUFACTURER, VR::LO, PrimitiveValue::from(manufacturer)),
            DataElement::new(tags::MANUFACTURER_MODEL_NAME, VR::LO, PrimitiveValue::from("CX50 ")),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(800u16)),
        ])
    }

    #[test]
    fn a_rule_matches_its_device_and_size_only() {
        let rules = RegionRules::parse(RULES).expect("valid");
        assert_eq!(rules.matching(&instance("PHILIPS MEDICAL SYSTEMS", 350)).count(), 1, "case and padding ignored");
        assert_eq!(rules.matching(&instance("Philips Medical Systems", 351)).count(), 0, "another size");
        assert_eq!(rules.matching(&instance("GE", 350)).count(), 0, "another maker");
    }

    #[test]
    fn bad_rules_are_refused_with_their_names() {
        let outside = RULES.replace("[[0, 0, 800, 60]]", "[[0, 0, 801, 60], [10, 10, 0, 5]]");
        let problems = RegionRules::parse(&outside).expect_err("outside");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("Philips CX50") && problems[0].contains("outside"), "{problems:?}");
        let anonymous = "[[rules]]\nname = \"any\"\nrows = 10\ncolumns = 10\nblank = [[0, 0, 5, 5]]\n";
        assert!(RegionRules::parse(anonymous).expect_err("no device")[0].contains("names no device"));
        assert!(RegionRules::parse("[[rules]]\nname = 1\n").is_err());
    }

    #[test]
    fn the_example_rules_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/burned-in-rules.toml");
        assert_eq!(RegionRules::load(&path).expect("valid").len(), 4);
    }
}
