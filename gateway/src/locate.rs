//! Where a retrieval goes: the plan (which parts of the target, from which sites) and the
//! stream of instances it yields, one part after the other.
//!
//! The plan comes from the directory when it remembers the study, else from a C-FIND across
//! the request's sites (then remembered when every site answered). A part is retrieved from
//! its first holder (configuration order) whose circuit is closed; a holder that cannot be
//! reached gives way to the next. A remembered plan that yields nothing is forgotten and the
//! target located anew. Every part must yield at least one instance: a part that yields none
//! ends the stream with an error, so a response is never presented as complete without it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicomweb_model::SeriesInstanceUid;
use futures::{stream, Stream, StreamExt};
use pacs_adapter::{DimseError, DimseStream, QueryLevel, RetrieveTarget, RetrievedInstance};

use crate::api::text_of;
use crate::directory::{SeriesRecord, StudyRecord};
use crate::error::ApiError;
use crate::health::is_site_fault;
use crate::site::Unanswered;
use crate::state::{Gateway, SiteScope};

/// Instances of a retrieval, from one or several sites.
pub type Instances = std::pin::Pin<Box<dyn Stream<Item = Result<RetrievedInstance, ApiError>> + Send>>;

/// One part of a retrieval and the sites holding it (indexes into the gateway's sites, in
/// configuration order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub target: RetrieveTarget,
    pub holders: Vec<usize>,
}

/// The parts of a study whose series are held as `series` says: the whole study from its
/// holders when every series has the same ones, else series by series.
fn study_parts(target: &RetrieveTarget, series: &BTreeMap<String, Vec<usize>>) -> Result<Vec<Part>, ApiError> {
    let mut holder_sets = series.values();
    let Some(first) = holder_sets.next() else { return Ok(Vec::new()) };
    if holder_sets.all(|h| h == first) {
        return Ok(vec![Part { target: target.clone(), holders: first.clone() }]);
    }
    series
        .iter()
        .map(|(uid, holders)| {
            let series = SeriesInstanceUid::new(uid).map_err(|e| ApiError::BadRequest(e.to_string()))?;
            Ok(Part { target: RetrieveTarget::series(target.study.clone(), series), holders: holders.clone() })
        })
        .collect()
}

/// The plan the directory's record gives, if it says enough and names sites of the request.
fn remembered_plan(
    gw: &Gateway,
    allowed: &[usize],
    record: &StudyRecord,
    target: &RetrieveTarget,
) -> Option<Vec<Part>> {
    let holders_of = |ids: &[String]| -> Vec<usize> {
        allowed.iter().copied().filter(|&i| ids.iter().any(|id| id == gw.sites[i].id().as_str())).collect()
    };
    let whole = || Some(vec![Part { target: target.clone(), holders: holders_of(&record.sites) }]);
    let series_holders = |uid: &str| record.series.as_ref()?.get(uid).map(|s: &SeriesRecord| holders_of(&s.sites));
    let plan = match (target.level(), &target.series) {
        (QueryLevel::Study, _) => match &record.series {
            Some(series) => {
                let by_series = series.iter().map(|(uid, s)| (uid.clone(), holders_of(&s.sites))).collect();
                study_parts(target, &by_series).ok()
            }
            None if record.sites.len() == 1 => whole(),
            None => None,
        },
        (_, Some(series)) => match series_holders(series.as_str()) {
            Some(holders) => Some(vec![Part { target: target.clone(), holders }]),
            None if record.sites.len() == 1 => whole(),
            None => None,
        },
        (_, None) if record.sites.len() == 1 => whole(),
        (_, None) => None,
    }?;
    (!plan.is_empty() && plan.iter().all(|p| !p.holders.is_empty())).then_some(plan)
}

/// Locates the target by C-FIND across the request's sites (SERIES level for a study, so a
/// study spread over sites is found series by series) and remembers what a complete search
/// shows of a study.
async fn locate_by_find(gw: &Gateway, allowed: &[usize], target: &RetrieveTarget) -> Result<Vec<Part>, ApiError> {
    let level = if target.level() == QueryLevel::Study { QueryLevel::Series } else { target.level() };
    let mut identifier = target.identifier();
    if target.series.is_none() {
        identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from("")));
    }
    if level == QueryLevel::Series {
        identifier.put(DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::Empty));
        identifier.put(DataElement::new(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, PrimitiveValue::Empty));
    }
    let sites: Vec<&crate::state::Site> = allowed.iter().map(|&i| &gw.sites[i]).collect();
    let fan_out = crate::federation::find_everywhere(&sites, level, &identifier).await;
    let complete = fan_out.failures.is_empty() && allowed.len() == gw.sites.len();
    let mut holders: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut seen: BTreeMap<String, SeriesRecord> = BTreeMap::new();
    for (at, found) in &fan_out.results {
        let site = allowed[*at];
        let Some(uid) = text_of(found, tags::SERIES_INSTANCE_UID) else { continue };
        let held = holders.entry(uid.clone()).or_default();
        if !held.contains(&site) {
            held.push(site);
            held.sort_unstable();
        }
        let record = seen.entry(uid).or_default();
        record.modality = record.modality.take().or_else(|| text_of(found, tags::MODALITY));
        let count = text_of(found, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
        // A site's count is the series' count only while that site alone holds it.
        record.instances = if record.sites.is_empty() { count } else { None };
        record.sites.push(gw.sites[site].id().to_string());
    }
    if fan_out.results.is_empty() {
        // Nothing found: a 404 only when every site could answer.
        if !fan_out.failures.is_empty() {
            return Err(fan_out.into_error());
        }
        return Err(ApiError::NotFound("no such study, series or instance".into()));
    }
    if level != QueryLevel::Series || target.series.is_some() {
        let mut all: Vec<usize> = fan_out.results.iter().map(|(at, _)| allowed[*at]).collect();
        all.sort_unstable();
        all.dedup();
        return Ok(vec![Part { target: target.clone(), holders: all }]);
    }
    if complete {
        for record in seen.values_mut() {
            record.sites.sort_by_key(|id| gw.sites.iter().position(|s| s.id().as_str() == id));
        }
        gw.directory.record_series(target.study.as_str(), seen);
    }
    study_parts(target, &holders)
}

/// Starts the retrieval of a part from its first holder that can be reached.
async fn retrieve_part(gw: &Gateway, part: &Part) -> Result<DimseStream<RetrievedInstance>, ApiError> {
    let mut last: Option<Unanswered> = None;
    for &site in &part.holders {
        match gw.sites[site].retrieve(part.target.clone()).await {
            Ok(instances) => return Ok(instances),
            Err(Unanswered::Dimse(e)) if !is_site_fault(&e) => return Err(e.into()),
            Err(unreachable) => {
                tracing::warn!(site = %gw.sites[site].id(), error = %unreachable, "holder unavailable; trying the next");
                last = Some(unreachable);
            }
        }
    }
    Err(last.map(ApiError::from).unwrap_or_else(|| ApiError::NotFound("no site holds it".into())))
}

/// A part's instances, ending in an error when it yields none (a site that listed the part
/// returned nothing of it).
fn at_least_one(part: DimseStream<RetrievedInstance>, what: String) -> Instances {
    let yielded = Arc::new(AtomicBool::new(false));
    let seen = yielded.clone();
    part.map(move |item| {
        if item.is_ok() {
            seen.store(true, Ordering::Relaxed);
        }
        item.map_err(ApiError::from)
    })
    .chain(stream::once(async move { yielded.load(Ordering::Relaxed) }).filter_map(move |yielded| {
        let what = what.clone();
        async move {
            (!yielded).then(|| Err(ApiError::NotFound(format!("{what} listed by a site was not delivered by it"))))
        }
    }))
    .boxed()
}

/// The indexes of the sites a request may use.
fn allowed_sites(gw: &Gateway, scope: &SiteScope) -> Result<Vec<usize>, ApiError> {
    let allowed = gw.sites_for(scope)?;
    Ok(gw.sites.iter().enumerate().filter(|(_, s)| allowed.iter().any(|a| a.id() == s.id())).map(|(i, _)| i).collect())
}

/// Plans the retrieval, starts it and waits for its first instance, so that a missing study is
/// a 404 and a failing PACS a 502 / 503 / 504 before any byte of the response is sent.
pub async fn first_and_rest(
    gw: &Arc<Gateway>,
    scope: &SiteScope,
    target: RetrieveTarget,
) -> Result<(RetrievedInstance, Instances), ApiError> {
    let allowed = allowed_sites(gw, scope)?;
    let study = target.study.as_str().to_owned();
    let remembered = gw.directory.study(&study).and_then(|record| remembered_plan(gw, &allowed, &record, &target));
    let from_directory = remembered.is_some();
    let plan = match remembered {
        Some(plan) => plan,
        None => locate_by_find(gw, &allowed, &target).await?,
    };
    match start(gw, plan).await {
        Ok(Some(started)) => Ok(started),
        Ok(None) | Err(ApiError::Pacs(DimseError::Failed { .. })) if from_directory => {
            // What was remembered is no longer so: locate anew.
            gw.directory.forget(&study);
            let plan = locate_by_find(gw, &allowed, &target).await?;
            start(gw, plan).await?.ok_or_else(|| ApiError::NotFound("no such study, series or instance".into()))
        }
        Ok(None) => Err(ApiError::NotFound("no such study, series or instance".into())),
        Err(e) => Err(e),
    }
}

/// Starts the plan's parts one after the other in one stream; `None` when the first part
/// yields nothing.
async fn start(gw: &Arc<Gateway>, plan: Vec<Part>) -> Result<Option<(RetrievedInstance, Instances)>, ApiError> {
    let mut parts = plan.into_iter();
    let Some(first) = parts.next() else { return Ok(None) };
    let mut first_part = retrieve_part(gw, &first).await?;
    let first_instance = match first_part.next().await {
        Some(Ok(instance)) => instance,
        Some(Err(e)) => return Err(e.into()),
        None => return Ok(None),
    };
    let later_gw = gw.clone();
    let later = stream::iter(parts).then(move |part| {
        let gw = later_gw.clone();
        async move {
            match retrieve_part(&gw, &part).await {
                Ok(instances) => at_least_one(instances, describe(&part.target)),
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        }
    });
    let rest: Instances = Box::pin(first_part.map(|item| item.map_err(ApiError::from)).chain(later.flatten()));
    Ok(Some((first_instance, rest)))
}

fn describe(target: &RetrieveTarget) -> String {
    match target.level() {
        QueryLevel::Study => "a study".into(),
        QueryLevel::Series => "a series".into(),
        QueryLevel::Image => "an instance".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dicomweb_model::StudyInstanceUid;

    #[test]
    fn a_study_held_alike_everywhere_is_one_part_else_one_per_series() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let alike = BTreeMap::from([("1.2.3.1".to_owned(), vec![0, 2]), ("1.2.3.2".to_owned(), vec![0, 2])]);
        assert_eq!(
            study_parts(&study, &alike).expect("plan"),
            vec![Part { target: study.clone(), holders: vec![0, 2] }]
        );
        let spread = BTreeMap::from([("1.2.3.1".to_owned(), vec![0]), ("1.2.3.2".to_owned(), vec![1, 2])]);
        let parts = study_parts(&study, &spread).expect("plan");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].holders, vec![1, 2]);
        assert_eq!(parts[1].target.series.as_ref().map(|s| s.as_str()), Some("1.2.3.2"));
    }
}
