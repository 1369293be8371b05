//! Parallel retrieval: a study or series fetched as concurrent instance-level C-GET or C-MOVE
//! sub-requests over several associations of the site's budget, merged into one stream in the
//! order instances arrive.
//!
//! One association moves one instance per DIMSE round trip; a PACS serves several
//! associations at once, so splitting the work is where retrieval time is won.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use futures::StreamExt;

use dicomweb_model::{SeriesInstanceUid, SopInstanceUid};

use crate::c_move::c_move;
use crate::error::{DimseError, Operation};
use crate::find::{find, FindRequest};
use crate::get::{get, RetrieveRequest};
use crate::instance::RetrievedInstance;
use crate::pool::AssociationPool;
use crate::query::{QueryLevel, RetrieveTarget};
use crate::store_scp::StoreScp;
use crate::stream::DimseStream;

/// How instances are retrieved from a site.
#[derive(Debug, Clone)]
pub enum RetrieveMethod {
    Get,
    Move(StoreScp),
}

/// One instance of a retrieval plan, as an IMAGE-level C-FIND reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedInstance {
    pub series: SeriesInstanceUid,
    pub sop_instance: SopInstanceUid,
}

/// Lists the instances a target covers, each once. Study Root C-FIND is hierarchical (PS3.4
/// §C.4.1.3.1.1): an IMAGE-level query must name its series, so for a whole study the series
/// are found first with a SERIES-level query, then each is listed. A PACS may list a series more
/// than once: Orthanc keeps a study UID that arrived under two Patient IDs as two studies, and
/// answers a SERIES-level query with the series of each, while an IMAGE-level query for the
/// series lists the instances of both.
pub async fn list_instances(
    pool: &AssociationPool,
    target: &RetrieveTarget,
    deadline: Option<Instant>,
) -> Result<Vec<PlannedInstance>, DimseError> {
    let series = match &target.series {
        Some(series) => vec![series.clone()],
        None => series_of(pool, target, None, deadline).await?.into_keys().collect(),
    };
    Ok(instances_of(pool, target, series, deadline).await?.0)
}

/// The series of `target`'s study (or the one named in `only`), each once, with the number of
/// instances the PACS says it holds when it says (summed over the records of a series listed
/// twice).
async fn series_of(
    pool: &AssociationPool,
    target: &RetrieveTarget,
    only: Option<&SeriesInstanceUid>,
    deadline: Option<Instant>,
) -> Result<BTreeMap<SeriesInstanceUid, Option<usize>>, DimseError> {
    let mut identifier = RetrieveTarget::study(target.study.clone()).identifier();
    identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, only.map_or("", |s| s.as_str())));
    identifier.put(DataElement::new(tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""));
    let found =
        find(pool, FindRequest { level: QueryLevel::Series, identifier, deadline }).await?.try_collect_all().await?;
    let mut series: BTreeMap<SeriesInstanceUid, Option<usize>> = BTreeMap::new();
    for record in &found {
        let Some(uid) = text_of(record, tags::SERIES_INSTANCE_UID)
            .and_then(|s| dicomweb_model::Uid::from_peer(&s).ok().map(SeriesInstanceUid::from))
        else {
            continue;
        };
        let count = text_of(record, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
        series.entry(uid).and_modify(|c| *c = c.zip(count).map(|(a, b)| a + b)).or_insert(count);
    }
    Ok(series)
}

/// The instances of each of `series` (of `target`'s study; those `target` names, when it names
/// some), each once, and how many each series listed.
async fn instances_of(
    pool: &AssociationPool,
    target: &RetrieveTarget,
    series: Vec<SeriesInstanceUid>,
    deadline: Option<Instant>,
) -> Result<(Vec<PlannedInstance>, BTreeMap<SeriesInstanceUid, usize>), DimseError> {
    let mut planned = Vec::new();
    let mut listed: BTreeMap<SeriesInstanceUid, usize> = BTreeMap::new();
    let mut seen: BTreeSet<SopInstanceUid> = BTreeSet::new();
    for series in series {
        // SOPClassUID is not asked for here: Orthanc answers it by reading every file, which
        // doubles the time of the query. The classes come from the study level instead.
        let mut identifier =
            RetrieveTarget::instances(target.study.clone(), Some(series.clone()), target.instances.clone())
                .identifier();
        identifier.put(DataElement::new(tags::QUERY_RETRIEVE_LEVEL, VR::CS, "IMAGE"));
        if target.instances.is_empty() {
            identifier.put(DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, ""));
        }
        let mut matches = find(pool, FindRequest { level: QueryLevel::Image, identifier, deadline }).await?;
        while let Some(found) = matches.next().await {
            let found = found?;
            if let Some(sop_instance) = text_of(&found, tags::SOP_INSTANCE_UID)
                .and_then(|s| dicomweb_model::Uid::from_peer(&s).ok().map(SopInstanceUid::from))
            {
                if seen.insert(sop_instance.clone()) {
                    *listed.entry(series.clone()).or_default() += 1;
                    planned.push(PlannedInstance { series: series.clone(), sop_instance });
                }
            }
        }
    }
    Ok((planned, listed))
}

/// The sub-requests of a study or series: its instances, listed, split into at most `parts`
/// instance-level requests; a series whose listing falls short of the count the PACS gives
/// for it (a PACS that caps its C-FIND answers) is asked for whole instead, so that nothing
/// left off a listing is left out of the retrieval.
async fn sub_requests(
    pool: &AssociationPool,
    target: &RetrieveTarget,
    parts: usize,
    deadline: Option<Instant>,
) -> Result<Vec<RetrieveTarget>, DimseError> {
    let (counts, (planned, listed)) = match &target.series {
        // The series' count is asked for beside its listing.
        Some(series) => {
            let (counts, listing) = futures::future::join(
                series_of(pool, target, Some(series), deadline),
                instances_of(pool, target, vec![series.clone()], deadline),
            )
            .await;
            (counts?, listing?)
        }
        None => {
            let counts = series_of(pool, target, None, deadline).await?;
            let listing = instances_of(pool, target, counts.keys().cloned().collect(), deadline).await?;
            (counts, listing)
        }
    };
    let short: BTreeSet<&SeriesInstanceUid> = counts
        .iter()
        .filter(|(series, count)| count.is_some_and(|n| n > listed.get(*series).copied().unwrap_or(0)))
        .map(|(series, _)| series)
        .collect();
    let whole: Vec<PlannedInstance> = planned.iter().filter(|p| !short.contains(&p.series)).cloned().collect();
    let mut targets = split(&target.study, &whole, parts);
    if !short.is_empty() {
        tracing::warn!(site = %pool.site().id, series = short.len(), "a listing of instances fell short of its count; those series are retrieved whole");
    }
    targets.extend(short.into_iter().map(|series| RetrieveTarget::series(target.study.clone(), series.clone())));
    Ok(targets)
}

pub(crate) fn text_of(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|s| !s.is_empty())
}

/// Splits instances into at most `parts` instance-level targets, never mixing series (Study
/// Root IMAGE-level keys name one series), sizes as even as the series allow.
pub fn split(
    study: &dicomweb_model::StudyInstanceUid,
    instances: &[PlannedInstance],
    parts: usize,
) -> Vec<RetrieveTarget> {
    let parts = parts.max(1);
    let mut by_series: BTreeMap<&SeriesInstanceUid, Vec<SopInstanceUid>> = BTreeMap::new();
    for instance in instances {
        by_series.entry(&instance.series).or_default().push(instance.sop_instance.clone());
    }
    let chunk = instances.len().div_ceil(parts).max(1);
    let mut targets = Vec::new();
    for (series, uids) in by_series {
        for piece in uids.chunks(chunk) {
            targets.push(RetrieveTarget::instances(study.clone(), Some(series.clone()), piece.to_vec()));
        }
    }
    targets
}

/// Retrieves `target` as up to `parallelism` concurrent instance-level sub-requests. The
/// merged stream ends with an `Err` if any sub-request did not complete.
pub async fn retrieve_parallel(
    pool: &AssociationPool,
    method: &RetrieveMethod,
    target: RetrieveTarget,
    parallelism: usize,
    deadline: Option<Instant>,
) -> Result<DimseStream<RetrievedInstance>, DimseError> {
    let (targets, sop_classes) = match method {
        RetrieveMethod::Get => {
            let (targets, classes) = futures::future::join(
                sub_requests(pool, &target, parallelism, deadline),
                crate::get::sop_classes_of(pool, &target, deadline),
            )
            .await;
            (targets?, classes?)
        }
        RetrieveMethod::Move(_) => (sub_requests(pool, &target, parallelism, deadline).await?, Vec::new()),
    };
    let (tx, merged) = DimseStream::channel();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    for target in targets {
        // What the sub-request names and has not had yet (a series asked for whole names none).
        let mut missing: BTreeSet<SopInstanceUid> = target.instances.iter().cloned().collect();
        let asked = missing.len();
        let request = RetrieveRequest { target, sop_classes: sop_classes.clone(), deadline };
        let (pool, method, tx, limit) = (pool.clone(), method.clone(), tx.clone(), limit.clone());
        // Each sub-request forwards its own instances, so one waiting for a free association
        // never holds up the instances of another.
        tokio::spawn(async move {
            let Ok(_permit) = limit.acquire_owned().await else { return };
            if tx.is_closed() {
                return;
            }
            let (started, operation) = match method {
                RetrieveMethod::Get => (get(&pool, request).await, Operation::Get),
                RetrieveMethod::Move(scp) => (c_move(&pool, &scp, request).await, Operation::Move),
            };
            match started {
                Ok(mut instances) => {
                    while let Some(item) = instances.next().await {
                        if asked > 0 && item.as_ref().is_ok_and(|instance| !missing.remove(&instance.sop_instance_uid))
                        {
                            // A PACS that takes an IMAGE-level request for its whole series
                            // would otherwise send each instance once per sub-request.
                            tracing::warn!(site = %pool.site().id, "an instance not asked for, or sent again; left out");
                            continue;
                        }
                        let is_err = item.is_err();
                        if tx.send(item).await.is_err() || is_err {
                            return;
                        }
                    }
                    if !missing.is_empty() {
                        let site = pool.site().id.clone();
                        let sent = asked - missing.len();
                        let _ = tx.send(Err(DimseError::NotAllSent { site, operation, asked, sent })).await;
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                }
            }
        });
    }
    Ok(merged)
}
