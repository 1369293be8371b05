//! Fan-out over the federation's sites and merging by UID.
//!
//! A query goes to every site of the request in parallel, each under its own deadline and
//! association budget. Results are merged by identity, never by position:
//! - a study is (StudyInstanceUID, PatientID): the same study at two sites is one result, and
//!   a study UID reused under two patients (real archives have them) stays two results;
//! - a series is (StudyInstanceUID, SeriesInstanceUID, PatientID); an instance, its
//!   SOPInstanceUID within its series (and patient, where results carry it);
//! - identities compare without padding (`dicomweb_deid::keys::unpadded`): two records of one
//!   site that differ only by it are one result.
//!
//! Conflicting values: the site listed first in the configuration wins; a value a site leaves
//! empty is filled from the next site that has one. Each merged result names the sites that hold
//! it in a private attribute of the gateway (see `SITES_TAG`). A site that fails is reported,
//! never silently dropped.

use std::collections::BTreeSet;

use dicom_core::value::Value;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};
use pacs_adapter::QueryLevel;

use crate::core::attributes::{text_of, uid_of};
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::{Site, Unanswered};

/// Private creator of the gateway's own attributes (0009,00xx block 10).
pub(crate) const PRIVATE_CREATOR_TAG: Tag = Tag(0x0009, 0x0010);
pub(crate) const PRIVATE_CREATOR: &str = "DICOMWEB-GATEWAY";
/// The ids of the sites that hold a result (LO, multi-valued).
pub(crate) const SITES_TAG: Tag = Tag(0x0009, 0x1010);

/// A site that did not answer, and why.
#[derive(Debug)]
pub(crate) struct SiteFailure {
    pub(crate) site: String,
    pub(crate) error: Unanswered,
}

/// Results of one fan-out: each with the index of the site it came from.
#[derive(Debug, Default)]
pub(crate) struct FanOut {
    pub(crate) results: Vec<(usize, InMemDicomObject)>,
    pub(crate) failures: Vec<SiteFailure>,
    /// Sites that had more matches than `federation.max_matches` (their first ones are in
    /// `results`): the answer is partial.
    pub(crate) truncated: Vec<(String, usize)>,
}

impl FanOut {
    /// The error to answer with when no site answered: the first site's error that came from
    /// asking it (502 / 504), or 503 when every site's circuit is open.
    pub(crate) fn into_error(mut self) -> Error {
        if self.failures.is_empty() {
            return Error::NotFound("no site to ask".into());
        }
        let at = self.failures.iter().position(|f| f.error.is_from_site()).unwrap_or(0);
        self.failures.swap_remove(at).error.into()
    }
}

/// Sends the same C-FIND to every site at once; each answers within its own deadline. Sites
/// whose circuit is open are not asked, and are reported as failures.
pub(crate) async fn find_everywhere(
    sites: &[&Site],
    touched: &Touched,
    level: QueryLevel,
    identifier: &InMemDicomObject,
) -> FanOut {
    let queries = sites.iter().enumerate().map(|(index, site)| {
        let identifier = identifier.clone();
        async move { (index, site.find_at_most(touched, level, identifier).await) }
    });
    let mut fan_out = FanOut::default();
    for (index, result) in futures::future::join_all(queries).await {
        match result {
            Ok(found) => {
                if found.truncated {
                    // As many as it gave: federation.max_matches, or fewer when the site could
                    // not be paged past them.
                    fan_out.truncated.push((sites[index].id().to_string(), found.results.len()));
                }
                fan_out.results.extend(found.results.into_iter().map(|r| (index, r)));
            }
            Err(error) => {
                tracing::warn!(site = %sites[index].id(), %error, "site left out of a federated C-FIND");
                fan_out.failures.push(SiteFailure { site: sites[index].id().to_string(), error });
            }
        }
    }
    fan_out
}

/// The SOP Instance UIDs of one series at each of `sites` (asked at once), in the same order.
pub(crate) async fn instance_uids_at(
    sites: &[&Site],
    touched: &Touched,
    study: &StudyInstanceUid,
    series: &SeriesInstanceUid,
) -> Result<Vec<BTreeSet<SopInstanceUid>>, Unanswered> {
    let identifier = InMemDicomObject::from_element_iter([
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study.as_str())),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("")),
    ]);
    let answers = futures::future::join_all(
        sites.iter().map(|site| site.find_all(touched, QueryLevel::Image, identifier.clone())),
    )
    .await;
    answers
        .into_iter()
        .map(|answer| Ok(answer?.iter().filter_map(|i| uid_of(i, tags::SOP_INSTANCE_UID)).collect()))
        .collect()
}

/// What a fan-out's answer lacks, for the response's Warning: each site that did not answer, and
/// each whose matches were cut at `federation.max_matches`. `None` when it is whole.
pub(crate) fn incomplete(failures: &[SiteFailure], truncated: &[(String, usize)]) -> Option<String> {
    if failures.is_empty() && truncated.is_empty() {
        return None;
    }
    let cut = truncated.iter().map(|(site, limit)| {
        format!("site {site} has more than {limit} matches: only its first {limit} are included; narrow the search")
    });
    let reasons: Vec<String> = failures
        .iter()
        .map(|f| match &f.error {
            error @ (Unanswered::Dimse(_) | Unanswered::Web(_)) => {
                format!("site {} did not answer: {}", f.site, error.reason())
            }
            Unanswered::CircuitOpen { open, .. } => format!(
                "site {} was not asked: down after repeated failures ({}), next try in {} s",
                f.site,
                open.last_fault,
                open.retry_in.as_secs()
            ),
            too_many @ Unanswered::TooManyMatches { .. } => too_many.to_string(),
        })
        .chain(cut)
        .collect();
    Some(reasons.join("; "))
}

/// The identity a result is merged on.
fn identity(level: QueryLevel, obj: &InMemDicomObject) -> Vec<String> {
    let uid = |tag| text_of(obj, tag).unwrap_or_default();
    match level {
        QueryLevel::Study => vec![uid(tags::STUDY_INSTANCE_UID), uid(tags::PATIENT_ID)],
        QueryLevel::Series => {
            vec![uid(tags::STUDY_INSTANCE_UID), uid(tags::SERIES_INSTANCE_UID), uid(tags::PATIENT_ID)]
        }
        QueryLevel::Image => vec![
            uid(tags::STUDY_INSTANCE_UID),
            uid(tags::SERIES_INSTANCE_UID),
            uid(tags::SOP_INSTANCE_UID),
            uid(tags::PATIENT_ID),
        ],
    }
}

fn is_empty(element: &DataElement<InMemDicomObject>) -> bool {
    match element.value() {
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(value) => dicomweb_deid::keys::unpadded(&value.to_str()).is_empty(),
        Value::Sequence(sequence) => sequence.items().is_empty(),
        Value::PixelSequence(_) => false,
    }
}

/// One merged result and the indexes of the sites holding it.
#[derive(Debug)]
pub(crate) struct Merged {
    pub(crate) object: InMemDicomObject,
    pub(crate) sites: Vec<usize>,
    /// A site listed it more than once (two records of one site merged): the counts it
    /// carries are one record's, not the whole's.
    pub(crate) listed_twice: bool,
}

/// Merges results by identity (see the module documentation for the rules).
pub(crate) fn merge(level: QueryLevel, mut results: Vec<(usize, InMemDicomObject)>) -> Vec<Merged> {
    // Configuration order decides conflicts: the first site's values are taken first.
    results.sort_by_key(|(site, _)| *site);
    let mut merged: Vec<Merged> = Vec::new();
    let mut index: std::collections::HashMap<Vec<String>, Vec<usize>> = std::collections::HashMap::new();
    for (site, object) in results {
        let key = identity(level, &object);
        // Identities compare without padding, so two records of one site that differ only by
        // it (Orthanc keeps `id11111` and `id11111 ` apart) are one study, as DICOM defines it.
        let at = index.get(&key).and_then(|candidates| candidates.first().copied());
        match at {
            Some(at) => {
                let into = &mut merged[at];
                if into.sites.contains(&site) {
                    into.listed_twice = true;
                } else {
                    into.sites.push(site);
                }
                for element in object.into_iter() {
                    let tag = element.header().tag;
                    let missing = into.object.get(tag).map(is_empty).unwrap_or(true);
                    if missing && !is_empty(&element) {
                        into.object.put(element);
                    }
                }
            }
            None => {
                index.entry(key).or_default().push(merged.len());
                merged.push(Merged { object, sites: vec![site], listed_twice: false });
            }
        }
    }
    merged
}

fn number(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    text_of(obj, tag).and_then(|t| t.trim().parse().ok())
}

/// Sorts merged results in the documented order, so that limit and offset page through the
/// same sequence every time: studies newest first (StudyDate, StudyTime descending), series by
/// SeriesNumber, instances by InstanceNumber; ties broken by identity.
pub(crate) fn sort(level: QueryLevel, merged: &mut [Merged]) {
    merged.sort_by(|a, b| {
        let (x, y) = (&a.object, &b.object);
        let by_identity = identity(level, x).cmp(&identity(level, y));
        match level {
            QueryLevel::Study => {
                let when = |o| {
                    (text_of(o, tags::STUDY_DATE).unwrap_or_default(), text_of(o, tags::STUDY_TIME).unwrap_or_default())
                };
                when(y).cmp(&when(x)).then(by_identity)
            }
            QueryLevel::Series => number(x, tags::SERIES_NUMBER).cmp(&number(y, tags::SERIES_NUMBER)).then(by_identity),
            QueryLevel::Image => {
                number(x, tags::INSTANCE_NUMBER).cmp(&number(y, tags::INSTANCE_NUMBER)).then(by_identity)
            }
        }
    });
}

/// Writes the gateway's own attribute naming the sites that hold a result.
pub(crate) fn mark_sites(object: &mut InMemDicomObject, site_ids: Vec<String>) {
    object.put(DataElement::new(PRIVATE_CREATOR_TAG, VR::LO, PrimitiveValue::from(PRIVATE_CREATOR)));
    object.put(DataElement::new(SITES_TAG, VR::LO, PrimitiveValue::Strs(site_ids.into())));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn study(uid: &str, patient: &str, description: &str, date: &str) -> InMemDicomObject {
        InMemDicomObject::from_element_iter([
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(uid)),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(patient)),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from(description)),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from(date)),
        ])
    }

    #[test]
    fn merges_by_identity_with_the_first_site_winning_and_gaps_filled() {
        let results = vec![
            (1, study("1.2", "P1", "from site 1", "20240101")),
            (0, study("1.2", "P1", "", "20240101")),
            (0, study("1.3", "P1", "only at site 0", "20230101")),
            (1, study("1.2", "P2", "same UID, other patient", "20220101")),
        ];
        let mut merged = merge(QueryLevel::Study, results);
        assert_eq!(merged.len(), 3, "same UID under another patient stays apart");
        sort(QueryLevel::Study, &mut merged);
        let descriptions: Vec<String> =
            merged.iter().map(|m| text_of(&m.object, tags::STUDY_DESCRIPTION).unwrap_or_default()).collect();
        assert_eq!(descriptions, ["from site 1", "only at site 0", "same UID, other patient"]);
        assert_eq!(merged[0].sites, vec![0, 1]);
        assert!(merged.iter().all(|m| !m.listed_twice));
    }

    #[test]
    fn two_records_of_one_site_are_one_result_listed_twice() {
        let results = vec![(0, study("1.2", "P1", "", "20240101")), (0, study("1.2", "P1", "", "20240101"))];
        let merged = merge(QueryLevel::Study, results);
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].sites, vec![0]);
        assert!(merged[0].listed_twice, "its counts are one record's");
    }

    #[test]
    fn what_is_missing_names_each_failed_site() {
        let failures = vec![SiteFailure {
            site: "site-2".into(),
            error: Unanswered::Dimse(pacs_adapter::DimseError::Timeout {
                site: dicomweb_model::SiteId::new("site-2").expect("id"),
                phase: pacs_adapter::Phase::Response,
                after: std::time::Duration::from_secs(1),
            }),
        }];
        assert_eq!(incomplete(&failures, &[]).expect("incomplete"), "site site-2 did not answer: timed out");
        assert!(incomplete(&[], &[]).is_none());
        let cut = incomplete(&[], &[("site-1".into(), 10)]).expect("incomplete");
        assert!(cut.contains("site site-1 has more than 10 matches"));
    }
}
