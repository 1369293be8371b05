//! Study and series roll-ups (NumberOfStudyRelatedSeries / Instances, ModalitiesInStudy,
//! NumberOfSeriesRelatedInstances): computed from lower-level C-FINDs when the PACS does not
//! return them (dcmqrscp does not; Orthanc does), and always recomputed over the union when a
//! study or series is held by several sites, counting distinct series and distinct instances.

use std::collections::{BTreeMap, BTreeSet};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::{SeriesInstanceUid, SiteId, SopInstanceUid, StudyInstanceUid};
use futures::StreamExt;
use pacs_adapter::QueryLevel;

use crate::core::attributes::{text_of, uid_of};
use crate::core::directory::Directory;
use crate::core::directory::SeriesRecord;
use crate::core::search::federation::instance_uids_at;
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::Site;

/// How many series of a study have their instances counted at once.
const SERIES_AT_ONCE: usize = 4;

async fn query(
    site: &Site,
    touched: &Touched,
    level: QueryLevel,
    keys: &[(dicom_core::Tag, VR, &str)],
) -> Result<Vec<InMemDicomObject>, Error> {
    let identifier = InMemDicomObject::from_element_iter(
        keys.iter().map(|(tag, vr, value)| DataElement::new(*tag, *vr, PrimitiveValue::from(*value))),
    );
    Ok(site.find_all(touched, level, identifier).await?)
}

/// The distinct SOP Instance UIDs of a series over the given sites (asked at once), and which
/// of the sites hold all of them.
async fn instances_of(
    sites: &[&Site],
    touched: &Touched,
    study: &StudyInstanceUid,
    series: &SeriesInstanceUid,
) -> Result<(BTreeSet<SopInstanceUid>, Vec<SiteId>), Error> {
    let at_each = instance_uids_at(sites, touched, study, series).await?;
    let union: BTreeSet<SopInstanceUid> = at_each.iter().flatten().cloned().collect();
    let complete_at =
        sites.iter().zip(&at_each).filter(|(_, uids)| uids.len() == union.len()).map(|(s, _)| s.id().clone()).collect();
    Ok((union, complete_at))
}

fn put_count(result: &mut InMemDicomObject, tag: dicom_core::Tag, count: u64) {
    result.put(DataElement::new(tag, VR::IS, PrimitiveValue::from(count.to_string())));
}

fn ids(sites: &[&Site]) -> Vec<SiteId> {
    sites.iter().map(|s| s.id().clone()).collect()
}

/// The series of a study over its holders, from one SERIES-level C-FIND per holder (at once),
/// and an IMAGE-level count of distinct instances for each series held by several sites or
/// whose count the PACS does not give.
async fn series_of(
    holding: &[&Site],
    touched: &Touched,
    study: &StudyInstanceUid,
) -> Result<BTreeMap<SeriesInstanceUid, SeriesRecord>, Error> {
    let keys = [
        (tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()),
        (tags::SERIES_INSTANCE_UID, VR::UI, ""),
        (tags::MODALITY, VR::CS, ""),
        (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
    ];
    let answers =
        futures::future::join_all(holding.iter().map(|site| query(site, touched, QueryLevel::Series, &keys))).await;
    let mut series: BTreeMap<SeriesInstanceUid, SeriesRecord> = BTreeMap::new();
    for (site, answer) in holding.iter().zip(answers) {
        for one in answer? {
            let Some(uid) = uid_of(&one, tags::SERIES_INSTANCE_UID) else { continue };
            let entry = series.entry(uid).or_default();
            entry.modality = entry.modality.take().or_else(|| text_of(&one, tags::MODALITY));
            let count = text_of(&one, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
            // A count is only the series' count while one site holds it and lists it once
            // (Orthanc lists a series twice when its study UID came under two Patient IDs).
            entry.instances = if entry.sites.is_empty() { count } else { None };
            if !entry.sites.contains(site.id()) {
                entry.sites.push(site.id().clone());
            }
            entry.complete_at = entry.instances.map(|_| entry.sites.clone());
        }
    }
    let uncounted: Vec<SeriesInstanceUid> =
        series.iter().filter(|(_, s)| s.instances.is_none()).map(|(uid, _)| uid.clone()).collect();
    let counted = futures::stream::iter(uncounted.into_iter().map(|uid| {
        let sites: Vec<&Site> = holding.iter().copied().filter(|h| series[&uid].sites.contains(h.id())).collect();
        async move { instances_of(&sites, touched, study, &uid).await.map(|found| (uid, found)) }
    }))
    .buffer_unordered(SERIES_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    for answer in counted {
        let (uid, (instances, complete_at)) = answer?;
        if let Some(entry) = series.get_mut(&uid) {
            entry.instances = Some(instances.len() as u64);
            entry.complete_at = Some(complete_at);
        }
    }
    Ok(series)
}

/// May roll-ups of a study come from the directory (`read`: not when its UID names two
/// patients' studies), and may what C-FINDs show be remembered (`write`: only from a complete
/// search).
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirectoryUse {
    pub(crate) read: bool,
    pub(crate) write: bool,
}

/// The sites holding a search result, and whether one of them listed it more than once
/// (Orthanc lists a study or series twice when its UID came under two Patient IDs, or under
/// one with and without padding).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Holding<'a> {
    pub(crate) sites: &'a [&'a Site],
    pub(crate) listed_twice: bool,
}

impl Holding<'_> {
    /// Whether the counts a result carries are more than one record's: they are counted anew.
    fn recount(&self) -> bool {
        self.sites.len() > 1 || self.listed_twice
    }
}

/// Fills a study's roll-ups: from the directory when it knows the study's series at exactly
/// these holders, else from C-FINDs. Those the result carries are kept when one site's one
/// record gave them.
pub(crate) async fn fill_study(
    seen: &Directory,
    holding: Holding<'_>,
    touched: &Touched,
    study: &StudyInstanceUid,
    result: &mut InMemDicomObject,
    directory: DirectoryUse,
) -> Result<(), Error> {
    let [no_series, no_instances, no_modalities] =
        [tags::NUMBER_OF_STUDY_RELATED_SERIES, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, tags::MODALITIES_IN_STUDY]
            .map(|tag| text_of(result, tag).is_none());
    let recount = holding.recount();
    if !(recount || no_series || no_instances || no_modalities) {
        return Ok(());
    }
    let holders = ids(holding.sites);
    let remembered = seen.study(study).filter(|r| directory.read && r.sites == holders);
    let series = match remembered.as_ref().and_then(|r| r.rollup_ready()) {
        Some(series) => series.clone(),
        None => {
            let series = series_of(holding.sites, touched, study).await?;
            if directory.write {
                seen.record_series(study, series.clone(), None);
            }
            series
        }
    };
    let mut modalities: Vec<String> = Vec::new();
    for modality in series.values().filter_map(|s| s.modality.as_ref()) {
        if !modalities.contains(modality) {
            modalities.push(modality.clone());
        }
    }
    let instances: u64 = series.values().filter_map(|s| s.instances).sum();
    if recount || no_series {
        put_count(result, tags::NUMBER_OF_STUDY_RELATED_SERIES, series.len() as u64);
    }
    if recount || no_instances {
        put_count(result, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, instances);
    }
    if (recount || no_modalities) && !modalities.is_empty() {
        result.put(DataElement::new(tags::MODALITIES_IN_STUDY, VR::CS, PrimitiveValue::Strs(modalities.into())));
    }
    Ok(())
}

/// Fills NumberOfSeriesRelatedInstances: over the union when several sites hold the series or
/// one listed it twice (from the directory when it knows the series at exactly these holders).
pub(crate) async fn fill_series(
    seen: &Directory,
    holding: Holding<'_>,
    touched: &Touched,
    study: &StudyInstanceUid,
    series: &SeriesInstanceUid,
    result: &mut InMemDicomObject,
    directory: DirectoryUse,
) -> Result<(), Error> {
    if holding.recount() || text_of(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).is_none() {
        let holders = ids(holding.sites);
        let remembered = seen
            .study(study)
            .filter(|_| directory.read)
            .and_then(|r| r.series.as_ref()?.get(series).filter(|s| s.sites == holders).and_then(|s| s.instances));
        let count = match remembered {
            Some(count) => count,
            None => instances_of(holding.sites, touched, study, series).await?.0.len() as u64,
        };
        put_count(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES, count);
    }
    Ok(())
}
