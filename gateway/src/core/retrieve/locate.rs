//! Where a retrieval goes: the plan (which parts of the target, from which sites) and the
//! stream of instances it yields, parts retrieved side by side and merged as instances arrive.
//!
//! The plan comes from the directory when it remembers the study, or is the whole target from
//! the request's one site when it may use only one, else from a C-FIND across the request's
//! sites (then remembered when every site answered). A part is retrieved from
//! its first holder (configuration order) whose circuit is closed; a holder that cannot be
//! reached gives way to the next. A remembered plan that yields nothing is forgotten and the
//! target located anew. Every part must yield at least one instance: a part that yields none
//! ends the stream with an error, so a response is never presented as complete without it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicomweb_model::{SeriesInstanceUid, SopInstanceUid};
use futures::{stream, FutureExt, Stream, StreamExt};
use pacs_adapter::{DimseError, DimseStream, QueryLevel, RetrieveTarget, RetrievedInstance};

use crate::core::access::{Access, Project};
use crate::core::attributes::text_of;
use crate::core::directory::{SeriesRecord, StudyRecord};
use crate::core::privacy::deidentify::Processed;
use crate::core::retrieve::{Retrieval, Retriever};
use crate::core::Error;
use crate::sites::health::is_site_fault;
use crate::sites::touched::Touched;
use crate::sites::{SiteIndex, Unanswered};

/// One part of a retrieval and the sites holding it (indexes into the gateway's sites, in
/// configuration order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub target: RetrieveTarget,
    pub holders: Vec<SiteIndex>,
}

/// The parts of a study whose series are held as `series` says: the whole study from its
/// holders when every series has the same ones, else series by series.
fn study_parts(target: &RetrieveTarget, series: &BTreeMap<String, Vec<SiteIndex>>) -> Result<Vec<Part>, Error> {
    let mut holder_sets = series.values();
    let Some(first) = holder_sets.next() else { return Ok(Vec::new()) };
    if holder_sets.all(|h| h == first) {
        return Ok(vec![Part { target: target.clone(), holders: first.clone() }]);
    }
    series
        .iter()
        .map(|(uid, holders)| {
            let series = SeriesInstanceUid::new(uid).map_err(|e| Error::BadRequest(e.to_string()))?;
            Ok(Part { target: RetrieveTarget::series(target.study.clone(), series), holders: holders.clone() })
        })
        .collect()
}

/// The plan the directory's record gives, if it says enough and names sites of the request.
fn remembered_plan(
    retriever: &Retriever,
    allowed: &[SiteIndex],
    record: &StudyRecord,
    target: &RetrieveTarget,
) -> Option<Vec<Part>> {
    let holders_of = |ids: &[String]| -> Vec<SiteIndex> {
        allowed.iter().copied().filter(|&i| ids.iter().any(|id| id == retriever.sites[i].id().as_str())).collect()
    };
    let whole = || Some(vec![Part { target: target.clone(), holders: holders_of(&record.sites) }]);
    // The sites to retrieve a series from: those known to hold all of it. A series split
    // across sites, or not known to be whole anywhere, is located anew.
    let whole_at = |series: &SeriesRecord| match (&series.complete_at, series.sites.len()) {
        (_, 1) => Some(holders_of(&series.sites)),
        (Some(complete), _) if !complete.is_empty() => Some(holders_of(complete)),
        _ => None,
    };
    let series_holders = |uid: &str| record.series.as_ref()?.get(uid).map(whole_at);
    let plan = match (target.level(), &target.series) {
        (QueryLevel::Study, _) => match &record.series {
            Some(series) => {
                let by_series: Option<BTreeMap<String, Vec<SiteIndex>>> =
                    series.iter().map(|(uid, s)| Some((uid.clone(), whole_at(s)?))).collect();
                study_parts(target, &by_series?).ok()
            }
            None if record.sites.len() == 1 => whole(),
            None => None,
        },
        (_, Some(series)) => match series_holders(series.as_str()) {
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
async fn locate_by_find(
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
    let complete = fan_out.failures.is_empty() && allowed.len() == retriever.sites.len();
    let mut holders: BTreeMap<String, Vec<SiteIndex>> = BTreeMap::new();
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
        record.instances = text_of(found, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
    }
    // Series held by several sites: which hold all of it, and who holds which instances.
    let mut whole: BTreeMap<String, Vec<SiteIndex>> = BTreeMap::new();
    let mut split: Vec<Part> = Vec::new();
    for (uid, held) in &holders {
        let record = seen.entry(uid.clone()).or_default();
        record.sites = held.iter().map(|&i| retriever.sites[i].id().to_string()).collect();
        if held.len() == 1 {
            record.complete_at = Some(record.sites.clone());
            whole.insert(uid.clone(), held.clone());
            continue;
        }
        let held_sites: Vec<&crate::sites::Site> = held.iter().map(|&i| &retriever.sites[i]).collect();
        let at_each =
            crate::core::search::federation::instance_uids_at(&held_sites, touched, target.study.as_str(), uid).await?;
        let union: std::collections::BTreeSet<&String> = at_each.iter().flatten().collect();
        let complete_at: Vec<SiteIndex> =
            held.iter().zip(&at_each).filter(|(_, uids)| uids.len() == union.len()).map(|(&i, _)| i).collect();
        record.instances = Some(union.len() as u64);
        record.complete_at = Some(complete_at.iter().map(|&i| retriever.sites[i].id().to_string()).collect());
        if !complete_at.is_empty() {
            whole.insert(uid.clone(), complete_at);
            continue;
        }
        split.extend(split_series(target, uid, held, &at_each)?);
    }
    if complete && target.series.is_none() {
        retriever.directory.record_series(target.study.as_str(), seen);
    }
    if split.is_empty() {
        return study_parts(target, &whole);
    }
    // Some series are split: every series is its own part, the split ones one part per site.
    let mut parts: Vec<Part> = whole
        .into_iter()
        .map(|(uid, holders)| {
            let series = SeriesInstanceUid::new(&uid).map_err(|e| Error::BadRequest(e.to_string()))?;
            Ok(Part { target: RetrieveTarget::series(target.study.clone(), series), holders })
        })
        .collect::<Result<_, Error>>()?;
    parts.extend(split);
    Ok(parts)
}

/// A series split instance by instance across `held` (configuration order; `at_each` the UIDs
/// at each): each site contributes the instances no earlier site has.
fn split_series(
    target: &RetrieveTarget,
    series: &str,
    held: &[SiteIndex],
    at_each: &[std::collections::BTreeSet<String>],
) -> Result<Vec<Part>, Error> {
    let series = SeriesInstanceUid::new(series).map_err(|e| Error::BadRequest(e.to_string()))?;
    let mut covered: std::collections::BTreeSet<&String> = Default::default();
    let mut parts = Vec::new();
    for (&site, uids) in held.iter().zip(at_each) {
        let mut new: Vec<SopInstanceUid> = Vec::new();
        for uid in uids {
            if covered.insert(uid) {
                new.push(SopInstanceUid::new(uid).map_err(|e| Error::BadRequest(e.to_string()))?);
            }
        }
        if !new.is_empty() {
            parts.push(Part {
                target: RetrieveTarget::instances(target.study.clone(), Some(series.clone()), new),
                holders: vec![site],
            });
        }
    }
    Ok(parts)
}

/// Starts the retrieval of a part from its first holder that can be reached; the site it
/// comes from, and its instances.
async fn retrieve_part(
    retriever: &Retriever,
    touched: &Touched,
    part: &Part,
) -> Result<(SiteIndex, DimseStream<RetrievedInstance>), Error> {
    let mut last: Option<Unanswered> = None;
    for &site in &part.holders {
        match retriever.sites[site].retrieve(touched, part.target.clone()).await {
            Ok(instances) => return Ok((site, instances)),
            Err(Unanswered::Dimse(e)) if !is_site_fault(&e) => return Err(e.into()),
            Err(unreachable) => {
                tracing::warn!(site = %retriever.sites[site].id(), error = %unreachable, "holder unavailable; trying the next");
                last = Some(unreachable);
            }
        }
    }
    Err(last.map(Error::from).unwrap_or_else(|| Error::NotFound("no site holds it".into())))
}

/// Instances with the index of the site each came from.
type SitedInstances = std::pin::Pin<Box<dyn Stream<Item = Result<(SiteIndex, RetrievedInstance), Error>> + Send>>;

/// A part's instances, ending in an error when it yields none (a site that listed the part
/// returned nothing of it).
fn at_least_one(site: SiteIndex, part: DimseStream<RetrievedInstance>, what: String) -> SitedInstances {
    let yielded = Arc::new(AtomicBool::new(false));
    let seen = yielded.clone();
    part.map(move |item| {
        if item.is_ok() {
            seen.store(true, Ordering::Relaxed);
        }
        item.map(|instance| (site, instance)).map_err(Error::from)
    })
    .chain(
        stream::once(async move { yielded.load(Ordering::Relaxed) }).filter_map(move |yielded| {
            let what = what.clone();
            async move {
                (!yielded).then(|| Err(Error::NotFound(format!("{what} listed by a site was not delivered by it"))))
            }
        }),
    )
    .boxed()
}

/// Each instance from a site checked against `[dataset_limits]` before anything parses it
/// (docs/RELIABILITY.md, Limits): one past them ends the stream with 502.
fn within_limits(instances: SitedInstances, limits: crate::config::DataSetLimitsConfig) -> SitedInstances {
    instances
        .then(move |item| async move {
            let (site, instance) = item?;
            let instance = tokio::task::spawn_blocking(move || {
                let syntax = instance.transfer_syntax_uid.as_str();
                crate::core::dataset_limits::check_encoded(instance.data_set(), syntax, &limits).map(|_| instance)
            })
            .await
            .map_err(|e| Error::Internal(format!("checking an instance failed: {e}")))??;
            Ok((site, instance))
        })
        .boxed()
}

/// The indexes of the sites a request may use.
fn allowed_sites(retriever: &Retriever, scope: &Access) -> Result<Vec<SiteIndex>, Error> {
    let allowed = super::sites_for(&retriever.sites, scope)?;
    Ok(retriever
        .sites
        .iter()
        .enumerate()
        .filter(|(_, s)| allowed.iter().any(|a| a.id() == s.id()))
        .map(|(i, _)| SiteIndex(i))
        .collect())
}

/// The retrieval of a target named as the client sees it (pseudonymous UIDs when
/// de-identifying): from the cache when it holds the whole target, else shared with a request
/// retrieving the same target in the same project, else planned and started; it waits for the
/// first instance, so that a missing study is a 404 and a failing PACS a 502 / 503 / 504 before
/// any byte of the response is sent (docs/CACHE.md).
pub async fn first_and_rest(
    retriever: &Arc<Retriever>,
    scope: &Access,
    target: RetrieveTarget,
) -> Result<Retrieval, Error> {
    let target = match scope.privacy() {
        Some(privacy) => privacy.site_target(&target).await?,
        None => target,
    };
    let key = crate::core::retrieve::cache::TargetKey::new(&scope.project.cache_scope, &target);
    let shown = |uid: &str| match scope.privacy() {
        Some(privacy) => privacy.engine.keys().uid(uid),
        None => uid.to_owned(),
    };
    if let Some(cached) = retriever.cache.cached(&key, shown).await {
        return Ok(cached);
    }
    let (gw_for_flight, scope) = (retriever.clone(), scope.clone());
    retriever
        .cache
        .join_or_start(key, async move { first_and_rest_at_sites(&gw_for_flight, &scope, target).await })
        .await
}

/// The same for a target named by the sites' own UIDs.
pub async fn first_and_rest_at_sites(
    retriever: &Arc<Retriever>,
    scope: &Access,
    target: RetrieveTarget,
) -> Result<Retrieval, Error> {
    let allowed = allowed_sites(retriever, scope)?;
    let study = target.study.as_str().to_owned();
    let remembered =
        retriever.directory.study(&study).and_then(|record| remembered_plan(retriever, &allowed, &record, &target));
    let from_directory = remembered.is_some();
    // A plan taken on trust: remembered, or the only site the request may use (then nothing
    // is to be learnt from a C-FIND first). One that yields nothing is checked by C-FIND.
    let assumed = from_directory || allowed.len() == 1;
    let plan = match remembered {
        Some(plan) => plan,
        None if assumed => vec![Part { target: target.clone(), holders: allowed.clone() }],
        None => locate_by_find(retriever, &scope.touched, &allowed, &target).await?,
    };
    let started = match start(retriever, &scope.touched, plan).await {
        Ok(Some(started)) => started,
        Ok(None) | Err(Error::Pacs(DimseError::Failed { .. }) | Error::NotFound(_)) if assumed => {
            // What was remembered is no longer so, or the one site does not have it: locate
            // anew (a 404 when no site lists it).
            if from_directory {
                retriever.directory.forget(&study);
            }
            let plan = locate_by_find(retriever, &scope.touched, &allowed, &target).await?;
            start(retriever, &scope.touched, plan)
                .await?
                .ok_or_else(|| Error::NotFound("no such study, series or instance".into()))?
        }
        Ok(None) => return Err(Error::NotFound("no such study, series or instance".into())),
        Err(e) => return Err(e),
    };
    let started = noting_stored(retriever, &target, started);
    match scope.privacy() {
        None => {
            let ((_, first), rest) = started;
            Ok(Retrieval {
                first,
                rest: rest.map(|item| item.map(|(_, instance)| instance)).boxed(),
                withheld: 0,
                withheld_reasons: Vec::new(),
                etag: None,
            })
        }
        Some(_) => deidentified(retriever, scope.project.clone(), scope.touched.clone(), started).await,
    }
}

/// A retrieval under way at the sites: its first instance (with the index of the site that
/// sent it) and the rest.
type Started = ((SiteIndex, RetrievedInstance), SitedInstances);

/// The transfer syntaxes a retrieval's instances came in as stored, told to the directory as
/// each new one is seen (a retrieval seldom holds more than one or two).
struct SeenStored {
    retriever: Arc<Retriever>,
    study: String,
    series: Option<String>,
    seen: BTreeSet<String>,
}

impl SeenStored {
    fn note(&mut self, instance: &RetrievedInstance) {
        if !self.seen.contains(instance.transfer_syntax_uid.as_str()) {
            self.seen.insert(instance.transfer_syntax_uid.as_str().to_owned());
            self.retriever.directory.record_stored(&self.study, self.series.as_deref(), &self.seen);
        }
    }
}

/// The retrieval, noting the transfer syntax of each instance as it passes.
fn noting_stored(retriever: &Arc<Retriever>, target: &RetrieveTarget, ((site, first), rest): Started) -> Started {
    let mut seen = SeenStored {
        retriever: retriever.clone(),
        study: target.study.as_str().to_owned(),
        series: target.series.as_ref().map(|s| s.as_str().to_owned()),
        seen: BTreeSet::new(),
    };
    seen.note(&first);
    let rest = rest
        .map(move |item| {
            if let Ok((_, instance)) = &item {
                seen.note(instance);
            }
            item
        })
        .boxed();
    ((site, first), rest)
}

/// The transfer syntaxes instances of a study or series (named as the client sees it) are
/// known to be stored in, from earlier retrievals; empty when nothing is known, and for a
/// single instance (its retrieval shows it before the response starts).
pub async fn known_stored_syntaxes(
    retriever: &Arc<Retriever>,
    scope: &Access,
    target: &RetrieveTarget,
) -> Result<BTreeSet<String>, Error> {
    if !target.instances.is_empty() {
        return Ok(BTreeSet::new());
    }
    let target = match scope.privacy() {
        Some(privacy) => privacy.site_target(target).await?,
        None => target.clone(),
    };
    let Some(record) = retriever.directory.study(target.study.as_str()) else { return Ok(BTreeSet::new()) };
    let only_series = record.series.as_ref().filter(|series| series.len() == 1).and_then(|s| s.keys().next());
    Ok(match &target.series {
        // A study of one series: what its retrievals saw is the series'.
        Some(series) if only_series.is_some_and(|only| only == series.as_str()) => record.stored.study.clone(),
        Some(series) => record.stored.series.get(series.as_str()).cloned().unwrap_or_default(),
        None => record.stored.study.clone(),
    })
}

fn log_withheld(why: &dicomweb_deid::burned_in::Withheld) {
    tracing::info!(reason = why.reason, "instance withheld: its pixels may show identity");
}

/// The retrieval's instances de-identified one by one off the async runtime, in order, the
/// withheld ones left out.
async fn deidentified(
    retriever: &Arc<Retriever>,
    project: Arc<Project>,
    touched: Arc<Touched>,
    ((site, first), rest): Started,
) -> Result<Retrieval, Error> {
    let deid_retriever = retriever.clone();
    let mut processed = stream::once(async move { Ok((site, first)) })
        .chain(rest)
        .then(move |item| {
            let (retriever, project, touched) = (deid_retriever.clone(), project.clone(), touched.clone());
            async move {
                let (site, instance) = item?;
                // The request that retrieves (a flight is its starter's) is the one whose audit
                // line counts the instances cleaned for it.
                let processed = tokio::task::spawn_blocking(move || {
                    let privacy =
                        project.privacy.as_ref().ok_or_else(|| Error::Internal("de-identification is off".into()))?;
                    let (processed, entries) = privacy
                        .instance(&instance, retriever.sites[site].id().as_str())
                        .map_err(|e| Error::Internal(format!("cannot de-identify an instance: {e}")))?;
                    privacy.record_blocking(entries)?;
                    Ok::<_, Error>(processed)
                })
                .await
                .map_err(|e| Error::Internal(e.to_string()))??;
                Ok(match processed {
                    Processed::Cleaned(instance) => {
                        touched.note_cleaned();
                        Processed::Deidentified(instance)
                    }
                    other => other,
                })
            }
        })
        .boxed();
    let (mut withheld, mut withheld_reasons) = (0usize, Vec::<String>::new());
    let first = loop {
        match processed.next().await {
            Some(Ok(Processed::Deidentified(instance) | Processed::Cleaned(instance))) => break instance,
            Some(Ok(Processed::Withheld(why))) => {
                log_withheld(&why);
                withheld += 1;
                if !withheld_reasons.iter().any(|r| r == why.reason) {
                    withheld_reasons.push(why.reason.to_owned());
                }
            }
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::Forbidden(format!(
                    "withheld: {withheld} instance(s) whose pixels may show identity (burned-in annotation): {}",
                    withheld_reasons.join("; ")
                )))
            }
        }
    };
    let rest = processed
        .filter_map(|item| async move {
            match item {
                Ok(Processed::Deidentified(instance) | Processed::Cleaned(instance)) => Some(Ok(instance)),
                Ok(Processed::Withheld(why)) => {
                    log_withheld(&why);
                    None
                }
                Err(e) => Some(Err(e)),
            }
        })
        .boxed();
    Ok(Retrieval { first, rest, withheld, withheld_reasons, etag: None })
}

/// How many parts of a plan are retrieved at once; parts at one site share its association
/// budget, parts at different sites run side by side.
const PARTS_AT_ONCE: usize = 4;

/// Starts the plan's parts, up to [`PARTS_AT_ONCE`] at a time, merged into one stream in the
/// order instances arrive; waits for the first instance. `None` when the plan is empty.
async fn start(retriever: &Arc<Retriever>, touched: &Arc<Touched>, plan: Vec<Part>) -> Result<Option<Started>, Error> {
    let (retriever, touched) = (retriever.clone(), touched.clone());
    let parts = plan.into_iter().map(move |part| {
        let (retriever, touched) = (retriever.clone(), touched.clone());
        async move {
            match retrieve_part(&retriever, &touched, &part).await {
                Ok((site, instances)) => {
                    within_limits(at_least_one(site, instances, describe(&part.target)), retriever.limits)
                }
                Err(e) => stream::once(async move { Err(e) }).boxed(),
            }
        }
    });
    first_of(merged(parts)).await
}

/// Parts (each a future of its stream) merged as their instances arrive, up to
/// [`PARTS_AT_ONCE`] parts polled at a time.
fn merged<P>(parts: impl Iterator<Item = P> + Send + 'static) -> SitedInstances
where
    P: std::future::Future<Output = SitedInstances> + Send + 'static,
{
    stream::iter(parts).map(|part| part.flatten_stream().boxed()).flatten_unordered(PARTS_AT_ONCE).boxed()
}

/// The first instance of a stream and the rest; an error before any instance is the
/// retrieval's error.
async fn first_of(mut instances: SitedInstances) -> Result<Option<Started>, Error> {
    match instances.next().await {
        Some(Ok(first)) => Ok(Some((first, instances))),
        Some(Err(e)) => Err(e),
        None => Ok(None),
    }
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

    fn at(indexes: &[usize]) -> Vec<SiteIndex> {
        indexes.iter().copied().map(SiteIndex).collect()
    }
    use dicomweb_model::StudyInstanceUid;

    #[test]
    fn a_study_held_alike_everywhere_is_one_part_else_one_per_series() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let alike = BTreeMap::from([("1.2.3.1".to_owned(), at(&[0, 2])), ("1.2.3.2".to_owned(), at(&[0, 2]))]);
        assert_eq!(
            study_parts(&study, &alike).expect("plan"),
            vec![Part { target: study.clone(), holders: at(&[0, 2]) }]
        );
        let spread = BTreeMap::from([("1.2.3.1".to_owned(), at(&[0])), ("1.2.3.2".to_owned(), at(&[1, 2]))]);
        let parts = study_parts(&study, &spread).expect("plan");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[1].holders, at(&[1, 2]));
        assert_eq!(parts[1].target.series.as_ref().map(|s| s.as_str()), Some("1.2.3.2"));
    }

    #[test]
    fn a_series_split_instance_by_instance_takes_from_each_site_what_earlier_ones_lack() {
        let study = RetrieveTarget::study(StudyInstanceUid::new("1.2.3").expect("uid"));
        let set = |uids: &[&str]| uids.iter().map(|u| u.to_string()).collect::<std::collections::BTreeSet<_>>();
        let parts = split_series(
            &study,
            "1.2.3.1",
            &at(&[0, 2]),
            &[set(&["1.2.3.1.1", "1.2.3.1.2"]), set(&["1.2.3.1.2", "1.2.3.1.3"])],
        )
        .expect("plan");
        let uids = |p: &Part| p.target.instances.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>();
        assert_eq!(parts.len(), 2);
        assert_eq!(
            (uids(&parts[0]), parts[0].holders.clone()),
            (vec!["1.2.3.1.1".into(), "1.2.3.1.2".into()], at(&[0]))
        );
        assert_eq!((uids(&parts[1]), parts[1].holders.clone()), (vec!["1.2.3.1.3".to_owned()], at(&[2])));
    }

    fn instance(uid: &str) -> RetrievedInstance {
        let mut obj = dicom_object::InMemDicomObject::new_empty();
        obj.put(DataElement::new(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.7"));
        obj.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, uid));
        let file = obj
            .with_meta(
                dicom_object::FileMetaTableBuilder::new()
                    .transfer_syntax("1.2.840.10008.1.2.1")
                    .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                    .media_storage_sop_instance_uid(uid),
            )
            .expect("file meta");
        let mut part10 = Vec::new();
        file.write_all(&mut part10).expect("part 10");
        RetrievedInstance::from_part10(bytes::Bytes::from(part10)).expect("instance")
    }

    type PartFuture = std::pin::Pin<Box<dyn std::future::Future<Output = SitedInstances> + Send>>;

    fn uids(items: &[Result<(SiteIndex, RetrievedInstance), Error>]) -> Vec<String> {
        items
            .iter()
            .map(|item| match item {
                Ok((_, instance)) => instance.sop_instance_uid.as_str().to_owned(),
                Err(e) => format!("error: {e}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn parts_run_side_by_side_and_instances_come_in_the_order_they_arrive() {
        // The first part sends nothing until the second part's first instance has been taken
        // from the merged stream: one part after the other would never get there.
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let slow: PartFuture = Box::pin(async move {
            let _ = released.await;
            stream::iter([Ok((SiteIndex(0), instance("1.2.3.1.1")))]).boxed()
        });
        let fast: PartFuture = Box::pin(async {
            stream::iter([Ok((SiteIndex(2), instance("1.2.3.2.1"))), Ok((SiteIndex(2), instance("1.2.3.2.2")))]).boxed()
        });
        let retrieval = async move {
            let ((site, first), rest) = first_of(merged(vec![slow, fast].into_iter())).await?.expect("an instance");
            release.send(()).expect("the first part waits");
            let rest: Vec<_> = rest.collect().await;
            Ok::<_, Error>((site, first.sop_instance_uid.as_str().to_owned(), uids(&rest)))
        };
        let (site, first, rest) = tokio::time::timeout(std::time::Duration::from_secs(10), retrieval)
            .await
            .expect("no deadlock")
            .expect("ok");
        assert_eq!((site, first.as_str()), (SiteIndex(2), "1.2.3.2.1"));
        assert_eq!(rest, vec!["1.2.3.2.2".to_owned(), "1.2.3.1.1".to_owned()]);
    }

    #[tokio::test]
    async fn a_failing_part_ends_the_merged_stream_in_its_error_and_an_empty_plan_yields_none() {
        let good: PartFuture = Box::pin(async { stream::iter([Ok((SiteIndex(0), instance("1.2.3.1.1")))]).boxed() });
        let bad: PartFuture = Box::pin(async {
            stream::once(async { Err(Error::NotFound("a series listed by a site was not delivered by it".into())) })
                .boxed()
        });
        let all: Vec<_> = merged(vec![good, bad].into_iter()).collect().await;
        let outcomes = uids(&all);
        assert_eq!(outcomes.len(), 2);
        assert!(outcomes.contains(&"1.2.3.1.1".to_owned()));
        assert!(outcomes.iter().any(|o| o.starts_with("error:")), "{outcomes:?}");
        let none: Vec<PartFuture> = Vec::new();
        assert!(first_of(merged(none.into_iter())).await.expect("no error").is_none());
    }
}
