//! Reading a dataset's studies from its sites into the index: one STUDY-level C-FIND per site
//! (the dataset's filter as matching keys; the patient's id, sex, age and birth date and the
//! study's date and instance count returned), then a SERIES-level C-FIND for each study that is
//! new or whose instance count changed (modality, body part, manufacturer), a few at a time.
//! A study stored through the gateway is read again on its own.
//!
//! A site that fails keeps what was last read of it. A site with more studies than
//! `federation.max_matches` is indexed up to that many and marked incomplete in `/datasets`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::StudyInstanceUid;
use futures::{stream, StreamExt};
use pacs_adapter::QueryLevel;

use crate::config::DatasetConfig;
use crate::core::attributes::text_of;
use crate::core::eucaim::index::{Change, Index, SeriesRow, SiteRead, StudyRow};
use crate::core::eucaim::vocabulary;
use crate::core::search::query::{identifier, Scope};
use crate::sites::touched::Touched;
use crate::sites::Site;

/// SERIES-level C-FINDs one site is asked at once during a refresh.
const SERIES_AT_ONCE: usize = 4;

/// The attributes a study's row is made of, returned by the STUDY-level C-FIND.
const STUDY_KEYS: [dicom_core::Tag; 8] = [
    tags::STUDY_INSTANCE_UID,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_BIRTH_DATE,
    tags::STUDY_DATE,
    tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
];

/// What a refresh of one site found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refreshed {
    pub(crate) studies: usize,
    /// Studies whose series were asked for (new or changed).
    pub(crate) series_asked: usize,
    pub(crate) complete: bool,
}

/// Reads every study of `dataset` at `site` again, keeping the series of studies whose
/// instance count did not change.
pub(crate) async fn refresh_site(
    index: &Arc<Index>,
    dataset: &DatasetConfig,
    site: &Site,
) -> anyhow::Result<Refreshed> {
    let began = std::time::Instant::now();
    let touched = Touched::default();
    let found = site
        .find_at_most(&touched, QueryLevel::Study, study_identifier(dataset, None)?)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let known = index.studies(&dataset.id);
    let known = known.as_ref().and_then(|k| k.by_site.get(site.id().as_str()));
    let mut rows = Vec::with_capacity(found.results.len());
    let mut to_ask = Vec::new();
    for result in &found.results {
        let Some(mut row) = study_row(index, site, result) else { continue };
        match known.and_then(|k| k.get(&row.study)) {
            Some(before) if before.instances.is_some() && before.instances == row.instances => {
                row.series = before.series.clone();
                rows.push(row);
            }
            before => {
                let kept = before.cloned();
                to_ask.push((row, kept));
            }
        }
    }
    let series_asked = to_ask.len();
    let asked: Vec<Option<StudyRow>> = stream::iter(to_ask.into_iter().map(|(mut row, before)| {
        let touched = &touched;
        async move {
            // A study whose series cannot be read now keeps what was last read of it (a new
            // one waits for the next refresh).
            match series_rows(site, touched, &row.study).await {
                Ok(series) => {
                    row.series = series;
                    Some(row)
                }
                Err(_) => before,
            }
        }
    }))
    .buffer_unordered(SERIES_AT_ONCE)
    .collect()
    .await;
    rows.extend(asked.into_iter().flatten());
    let refreshed = Refreshed { studies: rows.len(), series_asked, complete: !found.truncated };
    let (dataset_id, site_id) = (dataset.id.clone(), site.id().to_string());
    let index_rows = Change::Whole(rows);
    blocking(index, move |index| {
        let read = SiteRead { at: SystemTime::now(), complete: refreshed.complete, took: began.elapsed() };
        index.replace(&dataset_id, &site_id, index_rows, Some(read))
    })
    .await?;
    Ok(refreshed)
}

/// Reads studies of `dataset` at `site` again (stored through the gateway), a few at a time,
/// into the index in one change: each study's row, or its removal when the site no longer
/// lists it under the dataset's filter. A study that cannot be read is left as it was; how
/// many were is returned.
pub(crate) async fn refresh_studies(
    index: &Arc<Index>,
    dataset: &DatasetConfig,
    site: &Site,
    studies: &[StudyInstanceUid],
) -> anyhow::Result<usize> {
    let touched = Touched::default();
    let read = |study: &StudyInstanceUid| {
        let touched = &touched;
        let study = study.as_str().to_owned();
        async move {
            let found = site
                .find_at_most(touched, QueryLevel::Study, study_identifier(dataset, Some(&study)).ok()?)
                .await
                .ok()?;
            let row = match found.results.first().and_then(|result| study_row(index, site, result)) {
                Some(mut row) => {
                    row.series = series_rows(site, touched, &row.study).await.ok()?;
                    Some(row)
                }
                None => None,
            };
            Some((study, row))
        }
    };
    let read: Vec<Option<(String, Option<StudyRow>)>> =
        stream::iter(studies.iter().map(read)).buffer_unordered(SERIES_AT_ONCE).collect().await;
    let unread = read.iter().filter(|r| r.is_none()).count();
    let changes: Vec<_> = read.into_iter().flatten().collect();
    if !changes.is_empty() {
        let (dataset_id, site_id) = (dataset.id.clone(), site.id().to_string());
        blocking(index, move |index| index.replace(&dataset_id, &site_id, Change::Studies(changes), None)).await?;
    }
    Ok(unread)
}

/// Runs an index write (a commit to its store) off the async runtime.
async fn blocking(
    index: &Arc<Index>,
    write: impl FnOnce(&Index) -> anyhow::Result<()> + Send + 'static,
) -> anyhow::Result<()> {
    let index = index.clone();
    tokio::task::spawn_blocking(move || write(&index)).await?
}

/// The STUDY-level identifier: the dataset's filter as matching keys (and the one study, when
/// given), the row's attributes returned.
fn study_identifier(dataset: &DatasetConfig, study: Option<&str>) -> anyhow::Result<InMemDicomObject> {
    let mut query = dicomweb_model::qido::parse(&dataset.filter).map_err(|e| anyhow::anyhow!("filter: {e}"))?;
    query.include = dicomweb_model::qido::IncludeFields::List(STUDY_KEYS.to_vec());
    let study = study.map(dicomweb_model::StudyInstanceUid::from_peer).transpose()?;
    let scope = Scope { level: QueryLevel::Study, study, series: None };
    Ok(identifier(&scope, &query, false))
}

/// A study's row (its series still to be read) from its STUDY-level match; `None` without a
/// study UID.
fn study_row(index: &Index, site: &Site, result: &InMemDicomObject) -> Option<StudyRow> {
    let study = text_of(result, tags::STUDY_INSTANCE_UID).filter(|uid| !uid.is_empty())?;
    let text = |tag| text_of(result, tag).unwrap_or_default();
    let sex = match text(tags::PATIENT_SEX).trim() {
        "M" => Some('M'),
        "F" => Some('F'),
        "O" => Some('O'),
        _ => None,
    };
    let age_days = vocabulary::age_days(&text(tags::PATIENT_AGE))
        .or_else(|| vocabulary::age_days_between(&text(tags::PATIENT_BIRTH_DATE), &text(tags::STUDY_DATE)));
    // A study without a patient id is a subject of its own.
    let patient = text(tags::PATIENT_ID);
    let subject = match patient.trim() {
        "" => index.subject(site.id().as_str(), &format!("study {study}"), ""),
        id => index.subject(site.id().as_str(), id, text(tags::ISSUER_OF_PATIENT_ID).trim()),
    };
    let instances = text(tags::NUMBER_OF_STUDY_RELATED_INSTANCES).trim().parse().ok();
    Some(StudyRow { site: site.id().to_string(), study, subject, sex, age_days, instances, series: Vec::new() })
}

/// A study's series as the site lists them.
async fn series_rows(site: &Site, touched: &Touched, study: &str) -> Result<Vec<SeriesRow>, crate::sites::Unanswered> {
    let mut identifier = InMemDicomObject::new_empty();
    identifier.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study)));
    for (tag, vr) in [
        (tags::SERIES_INSTANCE_UID, VR::UI),
        (tags::MODALITY, VR::CS),
        (tags::BODY_PART_EXAMINED, VR::CS),
        (tags::MANUFACTURER, VR::LO),
    ] {
        identifier.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
    }
    let found = site.find_at_most(touched, QueryLevel::Series, identifier).await?;
    let mut series: BTreeMap<String, SeriesRow> = BTreeMap::new();
    for result in &found.results {
        let uid = text_of(result, tags::SERIES_INSTANCE_UID).unwrap_or_default();
        series.insert(
            uid,
            SeriesRow {
                modality: text_of(result, tags::MODALITY).map(|m| m.trim().to_uppercase()).filter(|m| !m.is_empty()),
                body_part: text_of(result, tags::BODY_PART_EXAMINED).and_then(|b| vocabulary::normalised_body_part(&b)),
                manufacturer: text_of(result, tags::MANUFACTURER).and_then(|m| vocabulary::read_manufacturer(&m)),
            },
        );
    }
    Ok(series.into_values().collect())
}
