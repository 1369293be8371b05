//! Where a retrieval's instances are: the plan, one or more parts of the target, each with the
//! sites that hold it (configuration order). From the directory when it remembers the study (a
//! study held alike everywhere is one part, else one part per series, and a series split
//! across sites instance by instance), else from a C-FIND across the request's sites (then
//! remembered when every site asked answered; a record of some sites plans only for requests
//! within them).

use std::collections::BTreeMap;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicomweb_model::{SeriesInstanceUid, SiteId, SopInstanceUid};
use pacs_adapter::{QueryLevel, RetrieveTarget};

use crate::core::access::Access;
use crate::core::attributes::{text_of, uid_of};
use crate::core::directory::{SeriesRecord, StudyRecord};
use crate::core::retrieve::Retriever;
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::SiteIndex;

/// One part of a retrieval and the sites holding it (indexes into the gateway's sites, in
/// configuration order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) target: RetrieveTarget,
    pub(crate) holders: Vec<SiteIndex>,
}

/// The parts of a study whose series are held as `series` says: the whole study from its
/// holders when every series has the same ones, else series by series.
pub(super) fn study_parts(target: &RetrieveTarget, series: &BTreeMap<SeriesInstanceUid, Vec<SiteIndex>>) -> Vec<Part> {
    let mut holder_sets = series.values();
    let Some(first) = holder_sets.next() else { return Vec::new() };
    if holder_sets.all(|h| h == first) {
        return vec![Part { target: target.clone(), holders: first.clone() }];
    }
    series
        .iter()
        .map(|(uid, holders)| Part {
            target: RetrieveTarget::series(target.study.clone(), uid.clone()),
            holders: holders.clone(),
        })
        .collect()
}

/// The plan the directory's record gives, if it says enough and names sites of the request.
pub(super) fn remembered_plan(
    retriever: &Retriever,
    allowed: &[SiteIndex],
    record: &StudyRecord,
    target: &RetrieveTarget,
) -> Option<Vec<Part>> {
    if !record.covers(allowed.iter().map(|&i| retriever.sites[i].id())) {
        // Some of the request's sites were not asked when the study was seen.
        return None;
    }
    let holders_of = |ids: &[SiteId]| -> Vec<SiteIndex> {
        allowed.iter().copied().filter(|&i| ids.contains(retriever.sites[i].id())).collect()
    };
    let whole = || Some(vec![Part { target: target.clone(), holders: holders_of(&record.sites) }]);
    // The sites to retrieve a series from: those known to hold all of it. A series split
    // across sites, or not known to be whole anywhere, is located anew.
    let whole_at = |series: &SeriesRecord| match (&series.complete_at, series.sites.len()) {
        (_, 1) => Some(holders_of(&series.sites)),
        (Some(complete), _) if !complete.is_empty() => Some(holders_of(complete)),
        _ => None,
    };
    let series_holders = |uid: &SeriesInstanceUid| record.series.as_ref()?.get(uid).map(whole_at);
    let plan = match (target.level(), &target.series) {
        (QueryLevel::Study, _) => match &record.series {
            Some(series) => {
                let by_series: Option<BTreeMap<SeriesInstanceUid, Vec<SiteIndex>>> =
                    series.iter().map(|(uid, s)| Some((uid.clone(), whole_at(s)?))).collect();
                Some(study_parts(target, &by_series?))
            }
            None if record.sites.len() == 1 => whole(),
            None => None,
        },
        (_, Some(series)) => match series_holders(series) {
            Some(Some(holders)) => Some(vec![Part { target: target.clone(), holders }]),
            Some(None) => None,
            None if record.sites.len() == 1 => whole(),
            None => None,
        },
        (_, None) if record.sites.len() == 1 => whole(),
        (_, None) => None,
    }?;
    (!plan.is_empty() && plan.iter().all(|p| !p.holders.is_empty())).then_some(plan)
}

/// Locates the target by C-FIND across the request's sites: SERIES level for a study or a
/// series (so that a study spread over sites is found series by series), and for a series held
/// by several sites, IMAGE level at each, so that a series split instance by instance is
/// retrieved from each site holding part of it. What a complete search shows of a study is
/// remembered.
pub(super) async fn locate_by_find(
    retriever: &Retriever,
    touched: &Touched,
    allowed: &[SiteIndex],
    target: &RetrieveTarget,
) -> Result<Vec<Part>, Error> {
    let level = if target.level() == QueryLevel::Image { QueryLevel::Image } else { QueryLevel::Series };
    let mut identifier = target.identifier();
    identifier.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, PrimitiveValue::from(level.as_str())));
    if target.series.is_none() {
        identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("")));
    }
    if level == QueryLevel::Series {
        identifier.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::Empty));
        identifier.put(DataElement::new(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, PrimitiveValue::Empty));
    }
    let sites: Vec<&crate::sites::Site> = allowed.iter().map(|&i| &retriever.sites[i]).collect();
    let fan_out = crate::core::search::federation::find_everywhere(&sites, touched, level, &identifier).await;
    if let Some((site, limit)) = fan_out.truncated.first() {
        // A plan from part of a site's answer could miss what a retrieval must deliver.
        return Err(Error::BadRequest(format!(
            "site {site} has more than {limit} series or instances for this retrieval (federation.max_matches)"
        )));
    }
    if fan_out.results.is_empty() {
        // Nothing found: a 404 only when every site could answer.
        if !fan_out.failures.is_empty() {
            return Err(fan_out.into_error());
        }
        return Err(Error::NotFound("no such study, series or instance".into()));
    }
    if level == QueryLevel::Image {
        // Any site holding the instance will do.
        let mut all: Vec<SiteIndex> = fan_out.results.iter().map(|(at, _)| allowed[*at]).collect();
        all.sort_unstable();
        all.dedup();
        return Ok(vec![Part { target: target.clone(), holders: all }]);
    }
    // Remembered when every site asked answered: for every site, or for the request's sites.
    let complete = fan_out.failures.is_empty();
    let asked = (allowed.len() < retriever.sites.len())
        .then(|| allowed.iter().map(|&i| retriever.sites[i].id().clone()).collect());
    let mut holders: BTreeMap<SeriesInstanceUid, Vec<SiteIndex>> = BTreeMap::new();
    let mut seen: BTreeMap<SeriesInstanceUid, SeriesRecord> = BTreeMap::new();
    // Series a site listed more than once (Orthanc does, for a study UID under two Patient
    // IDs): no one answer counts their instances.
    let mut listed_twice: std::collections::BTreeSet<SeriesInstanceUid> = Default::default();
    // What each site says it holds of each series (summed over a series it listed twice).
    let mut counts: BTreeMap<(SeriesInstanceUid, SiteIndex), Option<u64>> = BTreeMap::new();
    for (at, found) in &fan_out.results {
        let site = allowed[*at];
        let Some(uid) = uid_of::<SeriesInstanceUid>(found, tags::SERIES_INSTANCE_UID) else { continue };
        let held = holders.entry(uid.clone()).or_default();
        if held.contains(&site) {
            listed_twice.insert(uid.clone());
        } else {
            held.push(site);
            held.sort_unstable();
        }
        let count = text_of(found, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
        counts.entry((uid.clone(), site)).and_modify(|c| *c = c.zip(count).map(|(a, b)| a + b)).or_insert(count);
        let record = seen.entry(uid).or_default();
        record.modality = record.modality.take().or_else(|| text_of(found, tags::MODALITY));
        record.instances = count;
    }
    // Series held by several sites (or listed twice by one): which hold all of it, and who
    // holds which instances.
    let mut whole: BTreeMap<SeriesInstanceUid, Vec<SiteIndex>> = BTreeMap::new();
    let mut split: Vec<Part> = Vec::new();
    for (uid, held) in &holders {
        let record = seen.entry(uid.clone()).or_default();
        record.sites = held.iter().map(|&i| retriever.sites[i].id().clone()).collect();
        if held.len() == 1 && !listed_twice.contains(uid) {
            record.complete_at = Some(record.sites.clone());
            whole.insert(uid.clone(), held.clone());
            continue;
        }
        let held_sites: Vec<&crate::sites::Site> = held.iter().map(|&i| &retriever.sites[i]).collect();
        let at_each =
            crate::core::search::federation::instance_uids_at(&held_sites, touched, &target.study, uid).await?;
        let listed_short = held.iter().zip(&at_each).any(|(&site, uids)| {
            counts.get(&(uid.clone(), site)).copied().flatten().is_some_and(|n| n > uids.len() as u64)
        });
        if listed_short {
            // A site listed fewer instances than it says it holds (a PACS that caps its C-FIND
            // answers): what it left off is known to nobody, so the series is asked whole of
            // every holder, each instance passed on once (parts.rs), and located anew next time.
            record.instances = None;
            record.complete_at = None;
            let whole_series = RetrieveTarget::series(target.study.clone(), uid.clone());
            split.extend(held.iter().map(|&site| Part { target: whole_series.clone(), holders: vec![site] }));
            continue;
        }
        let union: std::collections::BTreeSet<&SopInstanceUid> = at_each.iter().flatten().collect();
        let complete_at: Vec<SiteIndex> =
            held.iter().zip(&at_each).filter(|(_, uids)| uids.len() == union.len()).map(|(&i, _)| i).collect();
        record.instances = Some(union.len() as u64);
        record.complete_at = Some(complete_at.iter().map(|&i| retriever.sites[i].id().clone()).collect());
        if !complete_at.is_empty() {
            whole.insert(uid.clone(), complete_at);
            continue;
        }
        split.extend(split_series(target, uid, held, &at_each));
    }
    if complete && target.series.is_none() {
        retriever.directory.record_series(&target.study, seen, asked);
    }
    if split.is_empty() {
        return Ok(study_parts(target, &whole));
    }
    // Some series are split: every series is its own part, the split ones one part per site.
    let mut parts: Vec<Part> = whole
        .into_iter()
        .map(|(uid, holders)| Part { target: RetrieveTarget::series(target.study.clone(), uid), holders })
        .collect();
    parts.extend(split);
    Ok(parts)
}

/// A series split instance by instance across `held` (configuration order; `at_each` the UIDs
/// at each): each site contributes the instances no earlier site has.
pub(super) fn split_series(
    target: &RetrieveTarget,
    series: &SeriesInstanceUid,
    held: &[SiteIndex],
    at_each: &[std::collections::BTreeSet<SopInstanceUid>],
) -> Vec<Part> {
    let mut covered: std::collections::BTreeSet<&SopInstanceUid> = Default::default();
    let mut parts = Vec::new();
    for (&site, uids) in held.iter().zip(at_each) {
        let mut new: Vec<SopInstanceUid> = Vec::new();
        for uid in uids {
            if covered.insert(uid) {
                new.push(uid.clone());
            }
        }
        if !new.is_empty() {
            parts.push(Part {
                target: RetrieveTarget::instances(target.study.clone(), Some(series.clone()), new),
                holders: vec![site],
            });
        }
    }
    parts
}

/// The plan for `target` (a study, or a series or an instance of it) taken from the plan
/// for its whole study; `None` when the study's plan does not name it.
pub(super) fn narrowed(study_plan: &[Part], target: &RetrieveTarget) -> Option<Vec<Part>> {
    if let [Part { target: whole, holders }] = study_plan {
        if whole.series.is_none() {
            // Held alike everywhere: the target is wherever the study is.
            return Some(vec![Part { target: target.clone(), holders: holders.clone() }]);
        }
    }
    let series = target.series.as_ref()?;
    let of_series: Vec<&Part> = study_plan.iter().filter(|p| p.target.series.as_ref() == Some(series)).collect();
    match (of_series.as_slice(), target.instances.as_slice()) {
        ([], _) => None,
        // The series whole from its holders.
        ([part], _) if part.target.instances.is_empty() => {
            Some(vec![Part { target: target.clone(), holders: part.holders.clone() }])
        }
        // Split across sites instance by instance: the series is its parts...
        (parts, []) => Some(parts.iter().map(|&p| p.clone()).collect()),
        // ...and one instance is at the site its part names.
        (parts, [instance]) => parts
            .iter()
            .find(|p| p.target.instances.contains(instance))
            .map(|p| vec![Part { target: target.clone(), holders: p.holders.clone() }]),
        _ => None,
    }
}

/// The indexes of the sites a request may use.
pub(super) fn allowed_sites(retriever: &Retriever, scope: &Access) -> Result<Vec<SiteIndex>, Error> {
    let allowed = super::sites_for(&retriever.sites, scope)?;
    Ok(retriever
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| allowed.iter().any(|a| a.id() == s.id()))
        .map(|(i, _)| SiteIndex(i))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(indexes: &[usize]) -> Vec<SiteIndex> {
        indexes.iter().copied().map(SiteIndex).collect()
    }
    use dicomweb_model::StudyInstanceUid;

    fn series(uid: &str) -> SeriesInstanceUid {
        SeriesInstanceUid::new(uid).expect("uid")
    }

    #[test]
    fn a_study_held_alike_everywhere_is_one_part_else_one_per_series() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let alike = BTreeMap::from([(series("1.2.3.1"), at(&[0, 2])), (series("1.2.3.2"), at(&[0, 2]))]);
        assert_eq!(study_parts(&study, &alike), vec![Part { target: study.clone(), holders: at(&[0, 2]) }]);
        let spread = BTreeMap::from([(series("1.2.3.1"), at(&[0])), (series("1.2.3.2"), at(&[1, 2]))]);
        let parts = study_parts(&study, &spread);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].holders, at(&[1, 2]));
        assert_eq!(parts[1].target.series.as_ref().map(|s| s.as_str()), Some("1.2.3.2"));
    }

    #[test]
    fn a_series_split_instance_by_instance_takes_from_each_site_what_earlier_ones_lack() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let set = |uids: &[&str]| {
            uids.iter().map(|u| SopInstanceUid::new(u).expect("uid")).collect::<std::collections::BTreeSet<_>>()
        };
        let parts = split_series(
            &study,
            &series("1.2.3.1"),
            &at(&[0, 2]),
            &[set(&["1.2.3.1.1", "1.2.3.1.2"]), set(&["1.2.3.1.2", "1.2.3.1.3"])],
        );
        let uids = |p: &Part| p.target.instances.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (uids(&parts[0]), parts[0].holders.clone()),
            (vec!["1.2.3.1.1".into(), "1.2.3.1.2".into()], at(&[0]))
        );
        assert_eq!((uids(&parts[1]), parts[1].holders.clone()), (vec!["1.2.3.1.3".to_owned()], at(&[2])));
    }

    #[test]
    fn a_series_or_an_instance_is_planned_from_its_studys_plan() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let instance = |series_uid: &str, sop: &str| {
            RetrieveTarget::instances(
                study.study.clone(),
                Some(series(series_uid)),
                vec![SopInstanceUid::new(sop).expect("uid")],
            )
        };
        let one = RetrieveTarget::instances(study.study.clone(), Some(series("1.2.3.1")), vec![]);
        // Held alike: wherever the study is.
        let alike = vec![Part { target: study.clone(), holders: at(&[1]) }];
        assert_eq!(narrowed(&alike, &instance("1.2.3.9", "1.2.3.9.1")).expect("planned")[0].holders, at(&[1]));
        // Series by series, one split instance by instance.
        let mut spread =
            vec![Part { target: RetrieveTarget::series(study.study.clone(), series("1.2.3.1")), holders: at(&[0]) }];
        spread.extend(split_series(
            &study,
            &series("1.2.3.2"),
            &at(&[1, 2]),
            &[
                [SopInstanceUid::new("1.2.3.2.1").expect("uid")].into(),
                [SopInstanceUid::new("1.2.3.2.2").expect("uid")].into(),
            ],
        ));
        assert_eq!(narrowed(&spread, &one).expect("planned"), vec![Part { target: one.clone(), holders: at(&[0]) }]);
        let at_2 = narrowed(&spread, &instance("1.2.3.2", "1.2.3.2.2")).expect("planned");
        assert_eq!((at_2.len(), at_2[0].holders.clone()), (1, at(&[2])));
        let split = RetrieveTarget::series(study.study.clone(), series("1.2.3.2"));
        assert_eq!(narrowed(&spread, &split).expect("planned").len(), 2);
        assert!(narrowed(&spread, &instance("1.2.3.2", "1.2.3.2.9")).is_none(), "no site lists it");
        assert!(narrowed(&spread, &instance("1.2.3.7", "1.2.3.7.1")).is_none(), "no such series");
    }
}
