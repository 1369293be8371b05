//! A federated count query as EUCAIM's explorer builds it and Focus delivers it: an AND/OR tree
//! of conditions on coded keys (`{"ast": {...}, "id": "..."}`), read strictly for its shape and
//! leniently for its content; and whether one indexed study satisfies it.
//!
//! Study-level keys (sex, age, a dataset's fixed values) are asked of the study; series-level
//! keys (modality, body part, manufacturer) of its series, and the series conditions of one AND
//! must hold on one and the same series, as in EUCAIM's reference provider. A key or a value
//! the gateway does not know makes its condition false, never the query an error.

use serde_json::Value;

use crate::config::FixedValue;
use crate::core::eucaim::index::{SeriesRow, StudyRow};
use crate::core::eucaim::vocabulary::{self as codes, years};

/// Why a request body is not a query (the provider answers 422, as EUCAIM's reference does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a federated search query: {0}")]
pub(crate) struct Malformed(pub(crate) String);

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// The query's id as the explorer made it (`<uuid>__search__<uuid>`), for the audit.
    pub(crate) id: Option<String>,
    pub(crate) root: Node,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    /// AND (`all`) or OR of the children; an empty group sets no condition.
    Group {
        all: bool,
        children: Vec<Node>,
    },
    Leaf {
        key: String,
        condition: Condition,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Condition {
    Equals(Value),
    NotEquals(Value),
    In(Value),
    Between(Value),
    LowerThan(Value),
    GreaterThan(Value),
    Contains(Value),
}

/// The deepest tree read: the explorer's are three levels deep.
const MAX_DEPTH: usize = 32;
/// The most groups, conditions and values of `IN` lists read in one query: each is tested
/// against every study, so this bounds a query's work (the explorer's have a few dozen).
const MAX_NODES: usize = 1_000;

impl Query {
    /// Reads the body's JSON object: `ast` (a group) and an optional `id`.
    pub(crate) fn parse(body: &Value) -> Result<Query, Malformed> {
        let object = body.as_object().ok_or_else(|| Malformed("the body is not a JSON object".into()))?;
        let ast = object.get("ast").ok_or_else(|| Malformed("no \"ast\"".into()))?;
        if !ast.is_object() {
            return Err(Malformed("\"ast\" is not an object".into()));
        }
        let mut nodes = 0;
        let root = node(ast, 0, &mut nodes)?;
        let id = object.get("id").and_then(Value::as_str).map(str::to_owned);
        Ok(Query { id, root })
    }

    /// True for the empty query (every dataset, every study).
    pub(crate) fn is_empty(&self) -> bool {
        matches!(&self.root, Node::Group { children, .. } if children.is_empty())
    }
}

fn node(value: &Value, depth: usize, nodes: &mut usize) -> Result<Node, Malformed> {
    *nodes += 1;
    if depth > MAX_DEPTH || *nodes > MAX_NODES {
        return Err(Malformed(format!("more than {MAX_DEPTH} levels or {MAX_NODES} conditions")));
    }
    let object = value.as_object().ok_or_else(|| Malformed("a child is not an object".into()))?;
    if let Some(operand) = object.get("operand") {
        let all = match operand.as_str() {
            Some("AND") => true,
            Some("OR") => false,
            _ => return Err(Malformed("an operand other than AND and OR".into())),
        };
        let children = object
            .get("children")
            .and_then(Value::as_array)
            .ok_or_else(|| Malformed("a group without a \"children\" array".into()))?;
        let children = children.iter().map(|child| node(child, depth + 1, nodes)).collect::<Result<_, _>>()?;
        return Ok(Node::Group { all, children });
    }
    let key = object
        .get("key")
        .and_then(Value::as_str)
        .ok_or_else(|| Malformed("a condition without a string \"key\"".into()))?;
    let value = object.get("value").cloned().unwrap_or(Value::Null);
    if let Value::Array(values) = &value {
        *nodes += values.len();
        if *nodes > MAX_NODES {
            return Err(Malformed(format!("more than {MAX_NODES} conditions and values")));
        }
    }
    let condition = match object.get("type").and_then(Value::as_str) {
        Some("EQUALS") => Condition::Equals(value),
        Some("NOT_EQUALS") => Condition::NotEquals(value),
        Some("IN") => Condition::In(value),
        Some("BETWEEN") => Condition::Between(value),
        Some("LOWER_THAN") => Condition::LowerThan(value),
        Some("GREATER_THAN") => Condition::GreaterThan(value),
        Some("CONTAINS") => Condition::Contains(value),
        _ => return Err(Malformed("a condition of no known type".into())),
    };
    Ok(Node::Leaf { key: key.to_owned(), condition })
}

/// A request body read as the provider reads it, and the query (if it is one) tried on a
/// study: the entry point of the fuzz target (the body is outside bytes).
#[doc(hidden)]
pub fn parse_for_fuzzing(body: &[u8]) -> bool {
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return false };
    let Ok(query) = Query::parse(&value) else { return false };
    let study = StudyRow {
        site: "s".into(),
        study: "1.2".into(),
        subject: "p".into(),
        sex: Some('F'),
        age_days: Some(20_000),
        instances: Some(1),
        series: vec![SeriesRow { modality: Some("MR".into()), body_part: Some("BREAST".into()), manufacturer: None }],
    };
    holds(&query.root, &study, &Fixed::new())
}

/// Whether a study (of a dataset whose fixed values are `fixed`) satisfies `node`.
pub(crate) fn holds(node: &Node, study: &StudyRow, fixed: &Fixed) -> bool {
    match node {
        Node::Leaf { key, condition } if series_level(key) => {
            study.series.iter().any(|series| on_series(key, condition, series))
        }
        Node::Leaf { key, condition } => on_study(key, condition, study, fixed),
        Node::Group { children, .. } if children.is_empty() => true,
        Node::Group { all: false, children } => children.iter().any(|child| holds(child, study, fixed)),
        Node::Group { all: true, children } => {
            // The conditions on series hold together on one series (no allocation: this runs
            // for every study of every dataset).
            children.iter().filter(|c| !only_series(c)).all(|child| holds(child, study, fixed))
                && (!children.iter().any(only_series)
                    || study
                        .series
                        .iter()
                        .any(|series| children.iter().filter(|c| only_series(c)).all(|c| holds_on_series(c, series))))
        }
    }
}

/// A dataset's fixed values, by search key.
pub(crate) type Fixed = std::collections::BTreeMap<String, Vec<FixedValue>>;

fn series_level(key: &str) -> bool {
    matches!(key, codes::MODALITY | codes::BODY_PART | codes::MANUFACTURER)
}

fn only_series(node: &Node) -> bool {
    match node {
        Node::Leaf { key, .. } => series_level(key),
        Node::Group { children, .. } => !children.is_empty() && children.iter().all(only_series),
    }
}

fn holds_on_series(node: &Node, series: &SeriesRow) -> bool {
    match node {
        Node::Leaf { key, condition } => on_series(key, condition, series),
        Node::Group { children, .. } if children.is_empty() => true,
        Node::Group { all: true, children } => children.iter().all(|c| holds_on_series(c, series)),
        Node::Group { all: false, children } => children.iter().any(|c| holds_on_series(c, series)),
    }
}

fn on_series(key: &str, condition: &Condition, series: &SeriesRow) -> bool {
    match key {
        codes::MODALITY => {
            by_code(condition, |code| Some(codes::modality(code)? == series.modality.as_deref().unwrap_or_default()))
        }
        codes::BODY_PART => by_code(condition, |code| {
            let part = series.body_part.as_deref().unwrap_or_default();
            Some(codes::body_parts(code)?.contains(&part))
        }),
        codes::MANUFACTURER => by_code(condition, |code| Some(Some(codes::manufacturer(code)?) == series.manufacturer)),
        _ => false,
    }
}

fn on_study(key: &str, condition: &Condition, study: &StudyRow, fixed: &Fixed) -> bool {
    match key {
        codes::SEX => by_code(condition, |code| Some(codes::sex(code)? == study.sex)),
        codes::AGE => study.age_days.is_some_and(|days| by_number(condition, years(days).floor())),
        _ => match fixed.get(key) {
            Some(values) => values.iter().any(|value| match value {
                FixedValue::Code(code) => by_code(condition, |asked| Some(asked == code)),
                FixedValue::Number(number) => by_number(condition, *number),
            }),
            None => false,
        },
    }
}

/// A condition on codes, `matches` telling whether a code matches (`None`: a code not known).
fn by_code(condition: &Condition, matches: impl Fn(&str) -> Option<bool>) -> bool {
    let is = |value: &Value| value.as_str().and_then(&matches);
    match condition {
        Condition::Equals(value) => is(value) == Some(true),
        Condition::NotEquals(value) => is(value) == Some(false),
        Condition::In(Value::Array(values)) => values.iter().any(|value| is(value) == Some(true)),
        _ => false,
    }
}

/// A condition on a number. A range's `max` of 0 above a `min` is open (the explorer sends
/// "40 or more" as `{min: 40, max: 0}`).
fn by_number(condition: &Condition, number: f64) -> bool {
    let bound = |value: &Value, key: &str| value.as_f64().or_else(|| value.get(key).and_then(Value::as_f64));
    match condition {
        Condition::Between(range) => {
            let (Some(min), Some(max)) = (bound(range, "min"), bound(range, "max")) else { return false };
            let max = if max == 0.0 && min > 0.0 { f64::INFINITY } else { max };
            min <= number && number <= max
        }
        Condition::Equals(value) => value.as_f64() == Some(number),
        Condition::NotEquals(value) => value.as_f64().is_some_and(|v| v != number),
        Condition::LowerThan(value) => bound(value, "max").is_some_and(|max| number < max),
        Condition::GreaterThan(value) => bound(value, "min").is_some_and(|min| number > min),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::eucaim::vocabulary::Manufacturer;
    use serde_json::json;

    fn series(modality: &str, body_part: &str, manufacturer: Manufacturer) -> SeriesRow {
        SeriesRow {
            modality: Some(modality.into()),
            body_part: Some(body_part.into()),
            manufacturer: Some(manufacturer),
        }
    }

    fn study(sex: Option<char>, age_years: Option<u32>, series: Vec<SeriesRow>) -> StudyRow {
        StudyRow {
            site: "site-1".into(),
            study: "1.2.3".into(),
            subject: "s".into(),
            sex,
            age_days: age_years.map(|y| (f64::from(y) * 365.25).ceil() as u32),
            instances: Some(1),
            series,
        }
    }

    fn leaf(key: &str, kind: &str, value: Value) -> Value {
        json!({"key": key, "type": kind, "value": value})
    }

    fn query(rows: Vec<Vec<Value>>) -> Query {
        let rows: Vec<Value> = rows
            .into_iter()
            .map(|criteria| {
                let criteria: Vec<Value> =
                    criteria.into_iter().map(|c| json!({"operand": "OR", "children": [c]})).collect();
                json!({"operand": "AND", "children": criteria})
            })
            .collect();
        Query::parse(&json!({"ast": {"operand": "OR", "children": rows}, "id": "q1__search__q2"})).expect("query")
    }

    fn none() -> Fixed {
        Fixed::new()
    }

    #[test]
    fn the_explorers_tree_is_read_and_bad_shapes_are_refused() {
        let empty = Query::parse(&json!({"ast": {"operand": "OR", "children": []}, "id": "x"})).expect("empty");
        assert!(empty.is_empty() && empty.id.as_deref() == Some("x"));
        for bad in [
            json!([]),
            json!({"id": "x"}),
            json!({"ast": []}),
            json!({"ast": {"operand": "XOR", "children": []}}),
            json!({"ast": {"operand": "OR"}}),
            json!({"ast": {"operand": "OR", "children": [1]}}),
            json!({"ast": {"operand": "OR", "children": [{"key": "RID10311", "type": "LIKE", "value": "x"}]}}),
            json!({"ast": {"operand": "OR", "children": [{"type": "EQUALS", "value": "x"}]}}),
        ] {
            assert!(Query::parse(&bad).is_err(), "{bad}");
        }
        let mut deep = json!({"operand": "OR", "children": []});
        for _ in 0..40 {
            deep = json!({"operand": "AND", "children": [deep]});
        }
        assert!(Query::parse(&json!({"ast": deep})).is_err(), "too deep");
        let many: Vec<String> = (0..MAX_NODES).map(|n| format!("RID{n}")).collect();
        let long_in = json!({"ast": {"operand": "OR", "children": [{"key": "RID10311", "type": "IN", "value": many}]}});
        assert!(Query::parse(&long_in).is_err(), "an IN list past the bound");
    }

    #[test]
    fn series_conditions_of_one_row_hold_on_one_series() {
        let ct_lung = series("CT", "CHEST", Manufacturer::Siemens);
        let mr_prostate = series("MR", "PROSTATE", Manufacturer::Philips);
        let both = study(Some('M'), Some(64), vec![ct_lung, mr_prostate]);
        let mr = leaf(codes::MODALITY, "EQUALS", json!("RID10312"));
        let prostate = leaf(codes::BODY_PART, "EQUALS", json!("SNOMEDCT41216001"));
        let lung = leaf(codes::BODY_PART, "EQUALS", json!("SNOMEDCT39607008"));
        assert!(holds(&query(vec![vec![mr.clone(), prostate]]).root, &both, &none()));
        assert!(!holds(&query(vec![vec![mr.clone(), lung.clone()]]).root, &both, &none()), "no MR of the lung");
        // Two rows (OR): either.
        assert!(holds(&query(vec![vec![mr], vec![lung]]).root, &both, &none()));
        let philips_ct = vec![
            leaf(codes::MODALITY, "EQUALS", json!("RID10321")),
            leaf(codes::MANUFACTURER, "EQUALS", json!("birnlex_3065")),
        ];
        assert!(!holds(&query(vec![philips_ct]).root, &both, &none()));
    }

    #[test]
    fn values_of_a_criterion_are_or_and_unknown_ones_are_false() {
        let one = study(Some('F'), Some(50), vec![series("MR", "BREAST", Manufacturer::GeneralElectric)]);
        let values = |codes: &[&str]| {
            let leaves: Vec<Value> = codes.iter().map(|c| leaf(codes::MODALITY, "EQUALS", json!(c))).collect();
            json!({"ast": {"operand": "OR", "children": [{"operand": "AND", "children": [
                {"operand": "OR", "children": leaves}]}]}})
        };
        let parse = |v: Value| Query::parse(&v).expect("query").root;
        assert!(holds(&parse(values(&["RID10321", "RID10312"])), &one, &none()));
        assert!(!holds(&parse(values(&["RID10321"])), &one, &none()));
        assert!(!holds(&parse(values(&["RID99999"])), &one, &none()), "an unknown code");
        let unknown_key = query(vec![vec![leaf("SNOMEDCT999", "EQUALS", json!("x"))]]);
        assert!(!holds(&unknown_key.root, &one, &none()));
        let female = query(vec![vec![leaf(codes::SEX, "EQUALS", json!("SNOMEDCT248152002"))]]);
        let unknown_sex = query(vec![vec![leaf(codes::SEX, "EQUALS", json!("SNOMEDCT261665006"))]]);
        assert!(holds(&female.root, &one, &none()) && !holds(&unknown_sex.root, &one, &none()));
        let no_sex = study(None, None, vec![]);
        assert!(holds(&unknown_sex.root, &no_sex, &none()));
        let not_mr = query(vec![vec![leaf(codes::MODALITY, "NOT_EQUALS", json!("RID10312"))]]);
        assert!(!holds(&not_mr.root, &one, &none()));
        let in_list = query(vec![vec![leaf(codes::MODALITY, "IN", json!(["RID10321", "RID10312"]))]]);
        assert!(holds(&in_list.root, &one, &none()));
    }

    #[test]
    fn ages_match_in_whole_years_with_open_bounds() {
        let age = |range: Value| query(vec![vec![leaf(codes::AGE, "BETWEEN", range)]]).root;
        let at = |years: u32| study(None, Some(years), vec![]);
        assert!(holds(&age(json!({"min": 40.0, "max": 70.0})), &at(40), &none()));
        assert!(holds(&age(json!({"min": 40.0, "max": 70.0})), &at(70), &none()));
        assert!(!holds(&age(json!({"min": 40.0, "max": 70.0})), &at(71), &none()));
        assert!(holds(&age(json!({"min": 40.0, "max": 0.0})), &at(95), &none()), "40 or more");
        assert!(holds(&age(json!({"min": 0.0, "max": 60.0})), &at(3), &none()), "60 or less");
        assert!(!holds(&age(json!({"min": 0.0, "max": 60.0})), &study(None, None, vec![]), &none()), "no age");
        let lower = query(vec![vec![leaf(codes::AGE, "LOWER_THAN", json!(50.0))]]).root;
        assert!(holds(&lower, &at(49), &none()) && !holds(&lower, &at(50), &none()));
    }

    #[test]
    fn keys_dicom_cannot_answer_match_a_datasets_fixed_values() {
        let diagnosis = "SNOMEDCT439401001";
        let prostate_cancer = query(vec![vec![leaf(diagnosis, "EQUALS", json!("SNOMEDCT399068003"))]]).root;
        let fixed: Fixed = Fixed::from([(diagnosis.to_owned(), vec![FixedValue::Code("SNOMEDCT399068003".into())])]);
        let any = study(Some('M'), Some(70), vec![]);
        assert!(holds(&prostate_cancer, &any, &fixed));
        assert!(!holds(&prostate_cancer, &any, &none()), "clinical data the dataset does not declare");
        let year = "SNOMEDCT432213005";
        let fixed: Fixed = Fixed::from([(year.to_owned(), vec![FixedValue::Number(2019.0)])]);
        let years = |min: f64, max: f64| query(vec![vec![leaf(year, "BETWEEN", json!({"min": min, "max": max}))]]).root;
        assert!(holds(&years(2018.0, 2020.0), &any, &fixed) && !holds(&years(2020.0, 2021.0), &any, &fixed));
    }
}
