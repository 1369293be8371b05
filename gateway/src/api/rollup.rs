//! Study and series roll-ups (NumberOfStudyRelatedSeries / Instances, ModalitiesInStudy,
//! NumberOfSeriesRelatedInstances) computed from lower-level C-FINDs when the PACS does not
//! return them (dcmqrscp does not; Orthanc does).

use std::time::Instant;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_adapter::{find, FindRequest, QueryLevel};

use super::text_of;
use crate::error::ApiError;
use crate::state::Gateway;

async fn query(
    gw: &Gateway,
    level: QueryLevel,
    keys: &[(dicom_core::Tag, VR, &str)],
) -> Result<Vec<InMemDicomObject>, ApiError> {
    let identifier = InMemDicomObject::from_element_iter(
        keys.iter().map(|(tag, vr, value)| DataElement::new(*tag, *vr, PrimitiveValue::from(*value))),
    );
    let deadline = Some(Instant::now() + gw.site.config.timeout * 2);
    Ok(find(&gw.site.pool, FindRequest { level, identifier, deadline }).await?.try_collect_all().await?)
}

async fn count_instances(gw: &Gateway, study: &str, series: &str) -> Result<usize, ApiError> {
    let keys = [
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, series),
        (tags::SOP_INSTANCE_UID, VR::UI, ""),
    ];
    Ok(query(gw, QueryLevel::Image, &keys).await?.len())
}

pub async fn fill_study(gw: &Gateway, study: &str, result: &mut InMemDicomObject) -> Result<(), ApiError> {
    let [no_series, no_instances, no_modalities] =
        [tags::NUMBER_OF_STUDY_RELATED_SERIES, tags::NUMBER_OF_STUDY_RELATED_INSTANCES, tags::MODALITIES_IN_STUDY]
            .map(|tag| text_of(result, tag).is_none());
    if !(no_series || no_instances || no_modalities) {
        return Ok(());
    }
    let keys = [
        (tags::STUDY_INSTANCE_UID, VR::UI, study),
        (tags::SERIES_INSTANCE_UID, VR::UI, ""),
        (tags::MODALITY, VR::CS, ""),
        (tags::NUMBER_OF_SERIES_RELATED_INSTANCES, VR::IS, ""),
    ];
    let series = query(gw, QueryLevel::Series, &keys).await?;
    let mut modalities: Vec<String> = Vec::new();
    let mut instances = 0usize;
    for one in &series {
        if let Some(modality) = text_of(one, tags::MODALITY) {
            if !modalities.contains(&modality) {
                modalities.push(modality);
            }
        }
        let counted =
            text_of(one, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse::<usize>().ok());
        instances += match (counted, text_of(one, tags::SERIES_INSTANCE_UID)) {
            (Some(n), _) => n,
            (None, Some(uid)) => count_instances(gw, study, &uid).await?,
            (None, None) => 0,
        };
    }
    if no_series {
        result.put(DataElement::new(
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            VR::IS,
            PrimitiveValue::from(series.len().to_string()),
        ));
    }
    if no_instances {
        result.put(DataElement::new(
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
            VR::IS,
            PrimitiveValue::from(instances.to_string()),
        ));
    }
    if no_modalities && !modalities.is_empty() {
        result.put(DataElement::new(tags::MODALITIES_IN_STUDY, VR::CS, PrimitiveValue::Strs(modalities.into())));
    }
    Ok(())
}

pub async fn fill_series(
    gw: &Gateway,
    study: &str,
    series: &str,
    result: &mut InMemDicomObject,
) -> Result<(), ApiError> {
    if text_of(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).is_none() {
        let n = count_instances(gw, study, series).await?;
        result.put(DataElement::new(
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
            VR::IS,
            PrimitiveValue::from(n.to_string()),
        ));
    }
    Ok(())
}
