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
    let series_list = match &target.series {
        Some(series) => vec![series.clone()],
        None => {
            let mut identifier = target.identifier();
            identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, ""));
            let found = find(pool, FindRequest { level: QueryLevel::Series, identifier, deadline })
                .await?
                .try_collect_all()
                .await?;
            let mut listed: Vec<SeriesInstanceUid> = Vec::new();
            for series in found
                .iter()
                .filter_map(|f| text_of(f, tags::SERIES_INSTANCE_UID))
                .filter_map(|s| dicomweb_model::Uid::from_peer(&s).ok().map(SeriesInstanceUid::from))
            {
                if !listed.contains(&series) {
                    listed.push(series);
                }
            }
            listed
        }
    };
    let mut planned = Vec::new();
    let mut seen: BTreeSet<SopInstanceUid> = BTreeSet::new();
    for series in series_list {
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
                    planned.push(PlannedInstance { series: series.clone(), sop_instance });
                }
            }
        }
    }
    Ok(planned)
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
    let (planned, sop_classes) = match method {
        RetrieveMethod::Get => {
            let (planned, classes) = futures::future::join(
                list_instances(pool, &target, deadline),
                crate::get::sop_classes_of(pool, &target, deadline),
            )
            .await;
            (planned?, classes?)
        }
        RetrieveMethod::Move(_) => (list_instances(pool, &target, deadline).await?, Vec::new()),
    };
    let targets = split(&target.study, &planned, parallelism);
    let (tx, merged) = DimseStream::channel();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(parallelism.max(1)));
    for target in targets {
        let asked: BTreeSet<SopInstanceUid> = target.instances.iter().cloned().collect();
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
                    let mut missing = asked.clone();
                    while let Some(item) = instances.next().await {
                        if item.as_ref().is_ok_and(|instance| !missing.remove(&instance.sop_instance_uid)) {
                            // A PACS that takes an IMAGE-level request for its whole series
                            // would otherwise send each instance once per sub-request.
                            tracing::warn!(site = %pool.site().id, "an instance not asked for was sent; left out");
                            continue;
                        }
                        let is_err = item.is_err();
                        if tx.send(item).await.is_err() || is_err {
                            return;
                        }
                    }
                    if !missing.is_empty() {
                        let site = pool.site().id.clone();
                        let (asked, sent) = (asked.len(), asked.len() - missing.len());
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
