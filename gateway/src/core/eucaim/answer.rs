//! The provider's answer to a count query: one collection per dataset with a matching study
//! (every dataset for the empty query), its counts of studies and of distinct subjects after
//! the privacy of counts (`[eucaim] min_count`, `below_minimum`, `round_to`), and its static
//! description (age range, sexes, modalities, body parts over all its studies), in the shape
//! EUCAIM's explorer reads (docs/EUCAIM.md).

use std::collections::{BTreeSet, HashSet};

use serde_json::{json, Value};

use crate::config::{BelowMinimum, DatasetConfig, EucaimConfig};
use crate::core::eucaim::index::{DatasetStudies, Description};
use crate::core::eucaim::query::{holds, Query};
use crate::core::eucaim::vocabulary::{sex_label, years};

/// What one dataset contributed to an answer, for the audit.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Counted {
    pub(crate) dataset: String,
    /// As sent; `None` when the dataset was left out for its counts.
    pub(crate) studies: Option<u64>,
    pub(crate) subjects: Option<u64>,
    /// The counts were changed by the privacy of counts (raised, left out or rounded).
    pub(crate) changed: bool,
}

/// The answer's JSON object and what each dataset contributed.
pub(crate) fn answer(
    query: &Query,
    datasets: &[(&DatasetConfig, &DatasetStudies)],
    privacy: &EucaimConfig,
) -> (Value, Vec<Counted>) {
    let mut collections = Vec::new();
    let mut counted = Vec::new();
    for (dataset, studies) in datasets {
        let mut matching = 0u64;
        let mut subjects: HashSet<&str> = HashSet::new();
        for row in studies.rows() {
            if query.is_empty() || holds(&query.root, row, &dataset.fixed) {
                matching += 1;
                subjects.insert(&row.subject);
            }
        }
        if matching == 0 && !query.is_empty() {
            continue;
        }
        let (studies_count, subjects_count) = (private(matching, privacy), private(subjects.len() as u64, privacy));
        let changed = studies_count != Some(matching) || subjects_count != Some(subjects.len() as u64);
        let (Some(studies_count), Some(subjects_count)) = (studies_count, subjects_count) else {
            counted.push(Counted { dataset: dataset.id.clone(), studies: None, subjects: None, changed });
            continue;
        };
        counted.push(Counted {
            dataset: dataset.id.clone(),
            studies: Some(studies_count),
            subjects: Some(subjects_count),
            changed,
        });
        collections.push(collection(dataset, studies, studies_count, subjects_count));
    }
    (json!({ "collections": collections }), counted)
}

/// A count as answered: left out (`None`) or raised when below the minimum, then rounded.
/// The empty dataset's 0 is answered as it is.
pub(crate) fn private(count: u64, privacy: &EucaimConfig) -> Option<u64> {
    if count == 0 {
        return Some(0);
    }
    let count = match privacy.below_minimum {
        _ if count >= privacy.min_count => count,
        BelowMinimum::Omit => return None,
        BelowMinimum::Minimum => privacy.min_count,
    };
    let step = privacy.round_to.max(1);
    // To the nearest multiple, never down to 0.
    Some((((count + step / 2) / step) * step).max(step))
}

/// A dataset's collection object: every field the explorer reads, present.
fn collection(dataset: &DatasetConfig, studies: &DatasetStudies, studies_count: u64, subjects_count: u64) -> Value {
    let description = describe(studies);
    json!({
        "id": dataset.id,
        "name": dataset.name,
        "description": dataset.description,
        "studies_count": studies_count,
        "subjects_count": subjects_count,
        "age_range": { "min": description.age_min, "max": description.age_max },
        "gender": description.sexes,
        "modality": description.modalities,
        "modalities": description.modalities,
        "body_parts": description.body_parts,
    })
}

/// What a snapshot of a dataset's studies holds (made once per snapshot).
pub(crate) fn describe(studies: &DatasetStudies) -> Description {
    studies.described.get_or_init(|| describe_now(studies)).clone()
}

fn describe_now(studies: &DatasetStudies) -> Description {
    let mut subjects: HashSet<&str> = HashSet::new();
    let (mut ages, mut sexes, mut modalities, mut body_parts, mut manufacturers) =
        (Vec::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    let mut count = 0u64;
    for row in studies.rows() {
        count += 1;
        subjects.insert(&row.subject);
        if let Some(days) = row.age_days {
            ages.push(years(days).floor() as u64);
        }
        sexes.insert(sex_label(row.sex));
        for series in &row.series {
            if let Some(modality) = &series.modality {
                modalities.insert(modality.clone());
            }
            body_parts.insert(series.body_part.clone().unwrap_or_else(|| "Unknown".into()));
            if let Some(manufacturer) = series.manufacturer {
                manufacturers.insert(manufacturer.label());
            }
        }
    }
    Description {
        studies: count,
        subjects: subjects.len() as u64,
        age_min: ages.iter().copied().min().unwrap_or(0),
        age_max: ages.iter().copied().max().unwrap_or(0),
        sexes: sexes.into_iter().collect(),
        modalities: modalities.into_iter().collect(),
        body_parts: body_parts.into_iter().collect(),
        manufacturers: manufacturers.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::eucaim::index::{SeriesRow, StudyRow};

    fn config(min_count: u64, below_minimum: BelowMinimum, round_to: u64) -> EucaimConfig {
        EucaimConfig { min_count, below_minimum, round_to, ..EucaimConfig::for_tests() }
    }

    #[test]
    fn counts_below_the_minimum_are_left_out_or_raised_then_rounded() {
        let off = config(0, BelowMinimum::Omit, 1);
        assert_eq!((private(0, &off), private(3, &off)), (Some(0), Some(3)));
        let omit = config(5, BelowMinimum::Omit, 1);
        assert_eq!((private(4, &omit), private(5, &omit)), (None, Some(5)));
        let raise = config(5, BelowMinimum::Minimum, 1);
        assert_eq!(private(1, &raise), Some(5));
        let round = config(0, BelowMinimum::Omit, 10);
        assert_eq!((private(14, &round), private(15, &round), private(2, &round)), (Some(10), Some(20), Some(10)));
    }

    fn studies(rows: Vec<StudyRow>) -> DatasetStudies {
        let mut studies = DatasetStudies::default();
        for row in rows {
            std::sync::Arc::make_mut(studies.by_site.entry(row.site.clone()).or_default())
                .insert(row.study.clone(), row);
        }
        studies
    }

    fn row(study: &str, subject: &str, sex: Option<char>, modality: &str) -> StudyRow {
        StudyRow {
            site: "a".into(),
            study: study.into(),
            subject: subject.into(),
            sex,
            age_days: Some(18_263),
            instances: None,
            series: vec![SeriesRow { modality: Some(modality.into()), body_part: None, manufacturer: None }],
        }
    }

    #[test]
    fn a_dataset_with_a_match_is_one_collection_with_every_field() {
        let dataset =
            DatasetConfig { name: "One".into(), description: "d".into(), ..DatasetConfig::with_defaults("ds-1", &[]) };
        let held =
            studies(vec![row("1", "p1", Some('M'), "MR"), row("2", "p1", Some('M'), "CT"), row("3", "p2", None, "MR")]);
        let mr = Query::parse(&json!({"ast": {"operand": "OR", "children": [{"operand": "AND", "children": [
            {"operand": "OR", "children": [{"key": "RID10311", "type": "EQUALS", "value": "RID10312"}]}]}]}}))
        .expect("query");
        let (answered, counted) = answer(&mr, &[(&dataset, &held)], &config(0, BelowMinimum::Omit, 1));
        let one = &answered["collections"][0];
        assert_eq!((one["studies_count"].as_u64(), one["subjects_count"].as_u64()), (Some(2), Some(2)));
        assert_eq!(one["gender"], json!(["Male", "Unknown"]));
        assert_eq!(one["modality"], json!(["CT", "MR"]), "a dataset's description, not the query's");
        assert_eq!(one["body_parts"], json!(["Unknown"]));
        assert_eq!(one["age_range"], json!({"min": 50, "max": 50}));
        assert_eq!(counted[0].studies, Some(2));
        let pet = Query::parse(&json!({"ast": {"operand": "OR", "children": [{"operand": "AND", "children": [
            {"operand": "OR", "children": [{"key": "RID10311", "type": "EQUALS", "value": "RID10337"}]}]}]}}))
        .expect("query");
        let (none, _) = answer(&pet, &[(&dataset, &held)], &config(0, BelowMinimum::Omit, 1));
        assert_eq!(none, json!({"collections": []}));
        let (suppressed, counted) = answer(&mr, &[(&dataset, &held)], &config(3, BelowMinimum::Omit, 1));
        assert_eq!(suppressed, json!({"collections": []}));
        assert!(counted[0].changed && counted[0].studies.is_none());
    }
}
