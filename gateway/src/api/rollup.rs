//! Study and series roll-ups (NumberOfStudyRelatedSeries / Instances, ModalitiesInStudy,
//! NumberOfSeriesRelatedInstances): computed from lower-level C-FINDs when the PACS does not
//! return them (dcmqrscp does not; Orthanc does), and always recomputed over the union when a
//! study or series is held by several sites, counting distinct series and distinct instances.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_adapter::{find, FindRequest, QueryLevel};

use super::text_of;
use crate::error::ApiError;
use crate::state::Site;

async fn query(
    site: &Site,
    level: QueryLevel,
    keys: &[(dicom_core::Tag, VR, &str)],
) -> Result<Vec<InMemDicomObject>, ApiError> {
    let identifier = InMemDicomObject::from_element_iter(
        keys.iter().map(|(tag, vr, value)| DataElement::new(*tag, *vr, PrimitiveValue::from(*value))),
    );
    let deadline = Some(Instant::now() + site.config.timeout * 2);
    Ok(find(&site.pool, FindRequest { level, identifier, deadline }).await?.try_collect_all().await?)
}

/// The distinct SOP Instance UIDs of a series over the given sites.
async fn instances_of(sites: &[&Site], study: &str, series: &str) -> Result<BTreeSet<String>, ApiError> {
    let keys = [
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, series),
        (tags::SOP_INSTANCE_UID, VR::UI, ""),
    ];
    let mut uids = BTreeSet::new();
    for site in sites {
        uids.extend(
            query(site, QueryLevel::Image, &keys).await?.iter().filter_map(|i| text_of(i, tags::SOP_INSTANCE_UID)),
        );
    }
    Ok(uids)
}

fn put_count(result: &mut InMemDicomObject, tag: dicom_core::Tag, count: usize) {
    result.put(DataElement::new(tag, VR::IS, PrimitiveValue::from(count.to_string())));
}

/// One series of a study across the holding sites: its modality, and for each site holding it
/// (by index) the instance count that site reports, if any.
type SeriesCopies = (Option<String>, Vec<(usize, Option<usize>)>);

pub async fn fill_study(holding: &[&Site], study: &str, result: &mut InMemDicomObject) -> Result<(), ApiError> {
    let [no_series, no_instances, no_modalities] =
        [tags::NUMBER_OF_STUDY_RELATED_SERIES, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, tags::MODALITIES_IN_STUDY]
            .map(|tag| text_of(result, tag).is_none());
    let federated = holding.len() > 1;
    if !(federated || no_series || no_instances || no_modalities) {
        return Ok(());
    }
    let keys = [
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, ""),
        (tags::MODALITY, VR::CS, ""),
        (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
    ];
    let mut series: BTreeMap<String, SeriesCopies> = BTreeMap::new();
    for (index, site) in holding.iter().enumerate() {
        for one in query(site, QueryLevel::Series, &keys).await? {
            let Some(uid) = text_of(&one, tags::SERIES_INSTANCE_UID) else { continue };
            let entry = series.entry(uid).or_default();
            entry.0 = entry.0.take().or_else(|| text_of(&one, tags::MODALITY));
            let count = text_of(&one, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok());
            entry.1.push((index, count));
        }
    }
    let mut modalities: Vec<String> = Vec::new();
    let mut instances = 0usize;
    for (uid, (modality, copies)) in &series {
        if let Some(modality) = modality {
            if !modalities.contains(modality) {
                modalities.push(modality.clone());
            }
        }
        instances += match copies.as_slice() {
            [(_, Some(n))] => *n,
            // Held by several sites, or a count the PACS does not give: count distinct instances.
            _ => {
                let sites: Vec<&Site> = copies.iter().map(|(i, _)| holding[*i]).collect();
                instances_of(&sites, study, uid).await?.len()
            }
        };
    }
    if federated || no_series {
        put_count(result, tags::NUMBER_OF_STUDY_RELATED_SERIES, series.len());
    }
    if federated || no_instances {
        put_count(result, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, instances);
    }
    if (federated || no_modalities) && !modalities.is_empty() {
        result.put(DataElement::new(tags::MODALITIES_IN_STUDY, VR::CS, PrimitiveValue::Strs(modalities.into())));
    }
    Ok(())
}

pub async fn fill_series(
    holding: &[&Site],
    study: &str,
    series: &str,
    result: &mut InMemDicomObject,
) -> Result<(), ApiError> {
    if holding.len() > 1 || text_of(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).is_none() {
        let count = instances_of(holding, study, series).await?.len();
        put_count(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES, count);
    }
    Ok(())
}
