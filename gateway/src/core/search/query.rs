//! A QIDO-RS search (PS3.18 §10.6) over the request's sites: the C-FIND identifier a query
//! becomes at its level, the fan-out and merge, de-identification's filtering of what matched,
//! the roll-ups a PACS leaves out, RetrieveURL, and what the directory learns from a complete
//! search. Required attributes are always returned (empty when the PACS has no value).

use std::collections::HashMap;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicomweb_deid::KnownPatient;
use dicomweb_model::qido::{self, required, IncludeFields, QidoQuery};
use dicomweb_model::{SeriesInstanceUid, SiteId, StudyInstanceUid};
use futures::StreamExt;
use pacs_adapter::{QueryLevel, RetrieveTarget};

use crate::core::access::Access;
use crate::core::attributes::{text_of, uid_of};
use crate::core::directory::Directory;
use crate::core::privacy::qido_deid;
use crate::core::search::federation::{find_everywhere, incomplete, mark_sites, merge, sort, Merged};
use crate::core::search::rollup::{self, DirectoryUse, Holding};
use crate::core::Error;
use crate::sites::touched::Touched;
use crate::sites::Site;

/// Which resource was asked: the level, and the UIDs that scope it.
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    pub(crate) level: QueryLevel,
    pub(crate) study: Option<StudyInstanceUid>,
    pub(crate) series: Option<SeriesInstanceUid>,
}

/// What a search may use: the gateway's sites (each piece of the request uses those it may),
/// whether the request reaches every site of the federation (what it sees of where data lives
/// is then the whole picture, and may be remembered), and the directory.
pub(crate) struct Federation<'a> {
    pub(crate) sites: &'a [Site],
    pub(crate) whole: bool,
    pub(crate) directory: &'a Directory,
}

/// A search's answer: the results in order, and what it lacks (sites that did not answer or
/// whose matches were cut), for the response's Warning.
#[derive(Debug, Default)]
pub(crate) struct Answer {
    pub(crate) results: Vec<InMemDicomObject>,
    pub(crate) sites_missing: Option<String>,
}

/// The attributes a resource returns (PS3.18 Table 10.6.3-2): those of its level, and of the
/// levels above it that its URL does not fix.
pub(crate) fn returned_attributes(scope: &Scope) -> Vec<Tag> {
    let mut attributes: Vec<Tag> = Vec::new();
    if scope.study.is_none() {
        attributes.extend(required::STUDY);
    }
    if scope.level != QueryLevel::Study && scope.series.is_none() {
        attributes.extend(required::SERIES);
    }
    if scope.level == QueryLevel::Image {
        attributes.extend(required::INSTANCE);
    }
    if scope.level != QueryLevel::Study {
        // Every result names where it belongs.
        attributes.extend([tags::STUDY_INSTANCE_UID, tags::SERIES_INSTANCE_UID]);
    }
    attributes
}

/// Keys of the series and image levels (PS3.4 C.6.2.1, Study Root). Named by includefield at
/// a level above theirs they are not asked for: "Series or Instance Level Attributes contained
/// in includefield parameters shall not be returned" (PS3.18 §10.6.3.3.1), and likewise
/// instance attributes for series (§10.6.3.3.2).
const SERIES_LEVEL: &[Tag] = &[
    tags::MODALITY,
    tags::SERIES_DESCRIPTION,
    tags::SERIES_INSTANCE_UID,
    tags::SERIES_NUMBER,
    tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    tags::PERFORMED_PROCEDURE_STEP_START_DATE,
    tags::PERFORMED_PROCEDURE_STEP_START_TIME,
    tags::SERIES_DATE,
    tags::SERIES_TIME,
    tags::BODY_PART_EXAMINED,
    tags::PROTOCOL_NAME,
];
const IMAGE_LEVEL: &[Tag] = &[
    tags::SOP_CLASS_UID,
    tags::SOP_INSTANCE_UID,
    tags::INSTANCE_NUMBER,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::NUMBER_OF_FRAMES,
    tags::CONTENT_DATE,
    tags::CONTENT_TIME,
    tags::IMAGE_TYPE,
    tags::ACQUISITION_NUMBER,
];

/// Whether `tag` belongs to a level below `level`.
fn below(level: QueryLevel, tag: Tag) -> bool {
    match level {
        QueryLevel::Study => SERIES_LEVEL.contains(&tag) || IMAGE_LEVEL.contains(&tag),
        QueryLevel::Series => IMAGE_LEVEL.contains(&tag),
        _ => false,
    }
}

fn vr_of(tag: Tag) -> VR {
    StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()).unwrap_or(VR::UN)
}

/// The C-FIND identifier: scope UIDs and matching keys with values, return keys empty.
/// `patient`: the result's patient asked for too (de-identifying, every result's pseudonym
/// and date shift need it, whether the resource shows it or not).
pub(crate) fn identifier(scope: &Scope, query: &QidoQuery, patient: bool) -> InMemDicomObject {
    let mut identifier = InMemDicomObject::new_empty();
    for key in &query.matches {
        match key.path.as_slice() {
            [tag] => identifier.put(DataElement::new(*tag, key.vr, PrimitiveValue::from(key.value.as_str()))),
            [sequence, tag] => {
                let item = InMemDicomObject::from_element_iter([DataElement::new(
                    *tag,
                    key.vr,
                    PrimitiveValue::from(key.value.as_str()),
                )]);
                identifier.put(DataElement::new(*sequence, VR::SQ, DataSetSequence::from(vec![item])))
            }
            _ => None,
        };
    }
    // Matching values beyond ASCII go to the PACS in UTF-8, and the identifier says so (PS3.5
    // §6.1.2.3); without it the identifier cannot be encoded in the default repertoire.
    if query.matches.iter().any(|key| !key.value.is_ascii()) {
        identifier.put(DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")));
    }
    if let Some(study) = &scope.study {
        identifier.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study.as_str())));
    }
    if let Some(series) = &scope.series {
        identifier.put(DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(series.as_str())));
    }
    let mut returned = returned_attributes(scope);
    let included: &[Tag] = match &query.include {
        IncludeFields::Default => &[],
        IncludeFields::All => required::ALL_EXTRA,
        IncludeFields::List(list) => list,
    };
    returned.extend(included.iter().filter(|tag| !below(scope.level, **tag)));
    if patient {
        returned.extend(qido_deid::PATIENT_KEYS);
    }
    for tag in returned {
        if identifier.get(tag).is_none() {
            identifier.put(DataElement::new(tag, vr_of(tag), PrimitiveValue::Empty));
        }
    }
    identifier
}

/// The C-FIND identifiers a query string becomes at each search level, as the handlers build
/// them: the entry point of the fuzz targets (a query string is outside bytes).
#[doc(hidden)]
pub fn identifiers_for_fuzzing(raw_query: &str) -> Result<Vec<InMemDicomObject>, qido::QidoError> {
    let query = qido::parse(raw_query)?;
    let scopes = [
        Scope { level: QueryLevel::Study, study: None, series: None },
        Scope { level: QueryLevel::Series, study: StudyInstanceUid::new("1.2.3").ok(), series: None },
        Scope {
            level: QueryLevel::Image,
            study: StudyInstanceUid::new("1.2.3").ok(),
            series: SeriesInstanceUid::new("1.2.3.4").ok(),
        },
    ];
    Ok(scopes.iter().map(|scope| identifier(scope, &query, true)).collect())
}

/// How many results are completed concurrently.
const COMPLETING_AT_ONCE: usize = 16;

/// The pieces of the request (crate::core::access::Handling) a search is for, each with the
/// scope in its sites' terms: a scope confined to a study is for the one piece that holds it
/// (de-identifying, the UIDs of its path are pseudonyms the gateway handed out, or else UIDs of
/// the sites passed on as they come); an unconfined one is for every piece.
pub(crate) async fn in_site_terms(
    sites: &[Site],
    access: &Access,
    scope: Scope,
) -> Result<Vec<(Access, Scope)>, Error> {
    let Some(study) = &scope.study else {
        return Ok(access.pieces(sites)?.into_iter().map(|piece| (piece, scope.clone())).collect());
    };
    let named = RetrieveTarget { study: study.clone(), series: scope.series.clone(), instances: Vec::new() };
    let (piece, target) = crate::core::retrieve::in_site_terms(sites, access, &named).await?;
    Ok(vec![(piece, Scope { level: scope.level, study: Some(target.study), series: target.series })])
}

/// A search over the request's pieces, their answers joined: each piece's results in order,
/// the pieces one after the other, `offset` and `limit` applied to the whole. Every site of
/// every piece failing is an error; any fewer, a Warning.
pub(crate) async fn search(
    federation: &Federation<'_>,
    pieces: Vec<(Access, Scope)>,
    query: QidoQuery,
) -> Result<Answer, Error> {
    if let [(access, scope)] = pieces.as_slice() {
        return search_piece(federation, access, scope.clone(), query).await?.into_answer();
    }
    // Each piece is asked for everything up to the end of the window.
    let mut asked = query.clone();
    asked.offset = 0;
    asked.limit = query.limit.map(|limit| limit.saturating_add(query.offset));
    let mut joined = Answer::default();
    let mut unanswered = Vec::new();
    let mut missing = Vec::new();
    // The pieces are asked side by side; their answers are joined in order.
    let answers = futures::future::join_all(
        pieces.iter().map(|(access, scope)| search_piece(federation, access, scope.clone(), asked.clone())),
    )
    .await;
    for piece in answers {
        let piece = piece?;
        joined.results.extend(piece.answer.results);
        missing.extend(piece.answer.sites_missing);
        unanswered.extend(piece.unanswered);
    }
    if unanswered.len() == pieces.len() {
        if let Some(first) = unanswered.into_iter().next() {
            return Err(first);
        }
    }
    joined.results = joined.results.into_iter().skip(query.offset).take(query.limit.unwrap_or(usize::MAX)).collect();
    joined.sites_missing = (!missing.is_empty()).then(|| missing.join("; "));
    Ok(joined)
}

/// One piece's answer, and the error when none of its sites answered.
struct PieceAnswer {
    answer: Answer,
    unanswered: Option<Error>,
}

impl PieceAnswer {
    fn into_answer(self) -> Result<Answer, Error> {
        match self.unanswered {
            Some(error) => Err(error),
            None => Ok(self.answer),
        }
    }
}

/// The search at the sites of one piece of the request, `scope` in their terms.
async fn search_piece(
    federation: &Federation<'_>,
    access: &Access,
    scope: Scope,
    mut query: QidoQuery,
) -> Result<PieceAnswer, Error> {
    // De-identifying: the query in the sites' terms (the scope is already), and the checks its
    // results must pass.
    let filters = match access.privacy() {
        Some(privacy) => match qido_deid::translate(privacy, &mut query).await? {
            Some(filters) => filters,
            None => return Ok(PieceAnswer { answer: Answer::default(), unanswered: None }),
        },
        None => Vec::new(),
    };
    let sites = &crate::core::retrieve::sites_for(federation.sites, access)?;
    if scope.level == QueryLevel::Image && scope.study.is_none() && query.matches.is_empty() && sites.len() > 1 {
        // Every instance of every site: refused rather than answered in part (docs/ACCESS.md).
        return Err(Error::BadRequest(
            "searching for instances across sites needs a matching key (e.g. StudyInstanceUID, Modality) \
             or a study in the path"
                .into(),
        ));
    }
    // Whether the resource shows the patient; de-identifying, every result's patient is asked
    // for all the same.
    let shows_patient = identifier(&scope, &query, false).get(tags::PATIENT_ID).is_some();
    let identifier = identifier(&scope, &query, access.privacy().is_some());
    let fan_out = find_everywhere(sites, &access.touched, scope.level, &identifier).await;
    if fan_out.failures.len() == sites.len() {
        // Every site failed: there is no answer to give, partial or not.
        let answer = Answer { results: Vec::new(), sites_missing: incomplete(&fan_out.failures, &fan_out.truncated) };
        return Ok(PieceAnswer { answer, unanswered: Some(fan_out.into_error()) });
    }
    // What this search shows of where data lives can be remembered only when it is complete:
    // every site asked and answering, and no filter but UIDs (docs/FEDERATION.md).
    let rememberable = federation.whole && fan_out.failures.is_empty() && matches_uids_only(&query);
    let mut sites_missing = incomplete(&fan_out.failures, &fan_out.truncated);
    let mut merged = merge(scope.level, fan_out.results);
    sort(scope.level, &mut merged);
    // Each result with its patient (de-identifying): from the result, else from its study.
    let mut with_patients: Vec<(Merged, Option<KnownPatient>)> = Vec::with_capacity(merged.len());
    // A result whose completion needs a site that then fails is left out, and the answer
    // says so, as for a site that failed the search itself.
    let mut left_out = LeftOut::default();
    // Each study's patient, or None when its site failed to say.
    let mut of_study: HashMap<String, Option<Option<KnownPatient>>> = HashMap::new();
    for mut one in merged {
        let mut patient = None;
        if access.privacy().is_some() {
            patient = qido_deid::take_patient(&mut one.object, shows_patient);
            let study =
                text_of(&one.object, tags::STUDY_INSTANCE_UID).or_else(|| scope.study.as_ref().map(|s| s.to_string()));
            if let (None, Some(study), Some(&site)) = (&patient, study, one.sites.first()) {
                if !of_study.contains_key(&study) {
                    let found = qido_deid::patient_of_study(sites[site], &access.touched, &study).await;
                    of_study.insert(study.clone(), left_out.unless_failed(found)?);
                }
                match &of_study[&study] {
                    Some(found) => patient = found.clone(),
                    None => {
                        left_out.results += 1;
                        continue;
                    }
                }
            }
        }
        with_patients.push((one, patient));
    }
    let mut merged = with_patients;
    if let (Some(privacy), false) = (access.privacy(), filters.is_empty()) {
        merged.retain(|(m, patient)| {
            let mut shown = m.object.clone();
            let site = m.sites.first().map(|&s| sites[s].id().to_string()).unwrap_or_default();
            privacy.engine.apply_for(&mut shown, &site, patient.as_ref());
            qido_deid::passes(&shown, &filters)
        });
    }
    // A study UID under two patients is not remembered: a retrieval by it must reach every
    // site of both, so it is always located anew.
    let reused = reused_study_uids(&merged);
    if rememberable && scope.level == QueryLevel::Study {
        remember_studies(federation, &merged, &reused);
    }
    let whole_list = query.offset == 0 && query.limit.is_none_or(|limit| limit >= merged.len());
    let window: Vec<_> = merged.into_iter().skip(query.offset).take(query.limit.unwrap_or(usize::MAX)).collect();
    // Results are completed (roll-ups may take more C-FINDs) several at a time, in order; the
    // sites' association budgets bound how many queries actually run at once.
    let completed = futures::stream::iter(window.into_iter().map(|(merged, patient)| {
        let holding: Vec<&Site> = merged.sites.iter().map(|&s| sites[s]).collect();
        let (scope, reused) = (&scope, &reused);
        async move {
            let mut result = merged.object;
            let study = text_of(&result, tags::STUDY_INSTANCE_UID).unwrap_or_default();
            let single = !reused.contains(&study);
            let directory = DirectoryUse { read: single, write: single && rememberable };
            let held = Holding { sites: &holding, listed_twice: merged.listed_twice };
            complete(federation.directory, held, &access.touched, scope, &mut result, directory).await?;
            let entries = match access.privacy() {
                Some(privacy) => privacy.data_set(
                    &mut result,
                    holding.first().map(|s| s.id().as_str()).unwrap_or(""),
                    patient.as_ref(),
                ),
                None => Vec::new(),
            };
            put_retrieve_url(access, scope, &mut result);
            mark_sites(&mut result, holding.iter().map(|s| s.id().to_string()).collect());
            Ok::<_, Error>((result, entries))
        }
    }))
    .buffered(COMPLETING_AT_ONCE)
    .collect::<Vec<_>>()
    .await;
    let mut kept = Vec::with_capacity(completed.len());
    for one in completed {
        if let Some(one) = left_out.unless_failed(one)? {
            kept.push(one);
        } else {
            left_out.results += 1;
        }
    }
    let (completed, entries): (Vec<InMemDicomObject>, Vec<_>) = kept.into_iter().unzip();
    if let Some(privacy) = access.privacy() {
        // Every pseudonym in the response resolves before the client sees it.
        privacy.record(entries.into_iter().flatten().collect()).await?;
    }
    // (Results are in the sites' terms only without de-identification; a list with results
    // left out is not the study's whole list.)
    let whole_list = whole_list && left_out.results == 0;
    if rememberable && whole_list && scope.level == QueryLevel::Series && access.privacy().is_none() {
        if let Some(study) = &scope.study {
            remember_series(federation.directory, study, &completed);
        }
    }
    let mut results = completed;
    if !access.project.show_sites {
        // Site ids name institutions (docs/ACCESS.md): the project does not show them.
        for result in &mut results {
            result.remove_element(crate::core::search::federation::SITES_TAG);
            result.remove_element(crate::core::search::federation::PRIVATE_CREATOR_TAG);
        }
    }
    if let Some(said) = left_out.said() {
        sites_missing = Some(match sites_missing {
            Some(missing) => format!("{missing}; {said}"),
            None => said,
        });
    }
    Ok(PieceAnswer { answer: Answer { results, sites_missing }, unanswered: None })
}

/// The results of a search left out because a site failed the queries that complete them
/// (their patient, their roll-ups), and why.
#[derive(Default)]
struct LeftOut {
    results: usize,
    reasons: Vec<String>,
}

impl LeftOut {
    /// The value, or `None` when a site failed (its reason kept); any other error stays one.
    fn unless_failed<T>(&mut self, outcome: Result<T, Error>) -> Result<Option<T>, Error> {
        match outcome {
            Ok(value) => Ok(Some(value)),
            Err(e) => {
                let reason = e.as_site_failure().ok_or(e)?;
                if !self.reasons.contains(&reason) {
                    self.reasons.push(reason);
                }
                Ok(None)
            }
        }
    }

    /// What the Warning says of them, when any was left out.
    fn said(&self) -> Option<String> {
        (self.results > 0).then(|| {
            format!(
                "{} result(s) left out: a site failed while they were completed ({})",
                self.results,
                self.reasons.join("; ")
            )
        })
    }
}

/// True when the search matches on nothing but UIDs: then a site that holds a study returns it.
fn matches_uids_only(query: &QidoQuery) -> bool {
    query.matches.iter().all(|key| {
        matches!(key.path.as_slice(), [tags::STUDY_INSTANCE_UID | tags::SERIES_INSTANCE_UID | tags::SOP_INSTANCE_UID])
    })
}

/// The study UIDs that name more than one merged result (the same UID under two patients).
fn reused_study_uids(merged: &[(Merged, Option<KnownPatient>)]) -> std::collections::HashSet<String> {
    let mut seen = std::collections::HashSet::new();
    merged
        .iter()
        .filter_map(|(m, _)| text_of(&m.object, tags::STUDY_INSTANCE_UID))
        .filter(|study| !seen.insert(study.clone()))
        .collect()
}

/// Remembers which sites hold each study of a complete study-level search.
fn remember_studies(
    federation: &Federation<'_>,
    merged: &[(Merged, Option<KnownPatient>)],
    reused: &std::collections::HashSet<String>,
) {
    for (one, _) in merged {
        if reused.contains(text_of(&one.object, tags::STUDY_INSTANCE_UID).as_deref().unwrap_or("")) {
            continue;
        }
        if let Some(study) = uid_of::<StudyInstanceUid>(&one.object, tags::STUDY_INSTANCE_UID) {
            let holders = one.sites.iter().map(|&i| federation.sites[i].id().clone()).collect();
            federation.directory.record_sites(&study, holders);
        }
    }
}

/// Remembers the series of a study from a complete series-level search of it, with their
/// holders, modality and (union) instance count.
fn remember_series(directory: &Directory, study: &StudyInstanceUid, results: &[InMemDicomObject]) {
    let mut series = std::collections::BTreeMap::new();
    for result in results {
        let Some(uid) = uid_of::<SeriesInstanceUid>(result, tags::SERIES_INSTANCE_UID) else { continue };
        let sites: Vec<SiteId> =
            match result.element(crate::core::search::federation::SITES_TAG).map(|e| e.to_multi_str()) {
                Ok(Ok(sites)) => sites.iter().filter_map(|s| SiteId::new(s.trim()).ok()).collect(),
                _ => continue,
            };
        let complete_at = (sites.len() == 1).then(|| sites.clone());
        let record = crate::core::directory::SeriesRecord {
            sites,
            modality: text_of(result, tags::MODALITY),
            instances: text_of(result, tags::NUMBER_OF_SERIES_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok()),
            complete_at,
        };
        if series.insert(uid, record).is_some() {
            // The same series UID twice (under two patients): too unusual to remember.
            return;
        }
    }
    directory.record_series(study, series, None);
}

/// Writes RetrieveURL from the result's own UIDs (pseudonyms when de-identifying; the scope's,
/// pseudonymised, where the result leaves one out).
fn put_retrieve_url(access: &Access, scope: &Scope, result: &mut InMemDicomObject) {
    let shown = |uid: &str| match access.privacy() {
        Some(privacy) => privacy.engine.keys().uid(uid),
        None => uid.to_owned(),
    };
    let study = text_of(result, tags::STUDY_INSTANCE_UID)
        .or_else(|| scope.study.as_ref().map(|s| shown(s.as_str())))
        .unwrap_or_default();
    let series =
        text_of(result, tags::SERIES_INSTANCE_UID).or_else(|| scope.series.as_ref().map(|s| shown(s.as_str())));
    let base = format!("{}/studies/{study}", access.base_url);
    let url = match (scope.level, &series, text_of(result, tags::SOP_INSTANCE_UID)) {
        (QueryLevel::Study, _, _) => base,
        (QueryLevel::Series, Some(series), _) => format!("{base}/series/{series}"),
        (QueryLevel::Image, Some(series), Some(instance)) => format!("{base}/series/{series}/instances/{instance}"),
        _ => base,
    };
    result.put(DataElement::new(tags::RETRIEVE_URL, VR::UR, PrimitiveValue::from(url)));
}

/// A result without any attribute of VR UR, as the site says or by the dictionary (whatever
/// VR the site says), at any depth.
fn without_urls(result: &mut InMemDicomObject) {
    use dicom_core::header::Header;
    result.retain(|element| element.vr() != VR::UR && vr_of(element.tag()) != VR::UR);
    let sequences: Vec<Tag> = result.iter().filter(|e| e.vr() == VR::SQ).map(|e| e.tag()).collect();
    for tag in sequences {
        result.update_value(tag, |value| {
            if let dicom_core::value::Value::Sequence(items) = value {
                items.items_mut().iter_mut().for_each(without_urls);
            }
        });
    }
}

/// Makes a C-FIND result a QIDO-RS result: without QueryRetrieveLevel, with every required
/// attribute (empty when unknown, but for ModalitiesInStudy) and roll-ups computed when
/// missing or more than one record's.
async fn complete(
    directory_of: &Directory,
    holding: Holding<'_>,
    touched: &Touched,
    scope: &Scope,
    result: &mut InMemDicomObject,
    directory: DirectoryUse,
) -> Result<(), Error> {
    result.remove_element(tags::QUERY_RETRIEVE_LEVEL);
    // Some PACS (Orthanc) add their own AE as RetrieveAETitle: meaningless to a DICOMweb client
    // and a detail of the site behind the gateway.
    result.remove_element(tags::RETRIEVE_AE_TITLE);
    // Nor does any URL of the site reach the client (a Retrieve URI, a RetrieveURL in a
    // sequence, an origin's RetrieveURL): the gateway writes its own RetrieveURL.
    without_urls(result);
    let study = uid_of::<StudyInstanceUid>(result, tags::STUDY_INSTANCE_UID).or_else(|| scope.study.clone());
    let series = uid_of::<SeriesInstanceUid>(result, tags::SERIES_INSTANCE_UID).or_else(|| scope.series.clone());
    match (scope.level, &study, &series) {
        (QueryLevel::Study, Some(study), _) => {
            rollup::fill_study(directory_of, holding, touched, study, result, directory).await?;
        }
        (QueryLevel::Series, Some(study), Some(series)) => {
            rollup::fill_series(directory_of, holding, touched, study, series, result, directory).await?;
        }
        _ => {}
    }
    for tag in returned_attributes(scope) {
        if result.get(tag).is_none() {
            result.put(DataElement::new(tag, vr_of(tag), PrimitiveValue::Empty));
        }
    }
    // A study none of whose series names its Modality has no ModalitiesInStudy to tell:
    // left out rather than sent empty (`{"vr": "CS"}`), which stops stock viewers (OHIF 3.x
    // reads its Value's length) from listing any study of the answer (docs/VIEWER.md).
    if scope.level == QueryLevel::Study && text_of(result, tags::MODALITIES_IN_STUDY).is_none() {
        result.remove_element(tags::MODALITIES_IN_STUDY);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(level: QueryLevel, query: &str) -> InMemDicomObject {
        let scope = Scope { level, study: None, series: None };
        identifier(&scope, &qido::parse(query).expect("valid query"), false)
    }

    #[test]
    fn a_sites_urls_are_left_out_of_its_results_at_any_depth() {
        let item = InMemDicomObject::from_element_iter([
            DataElement::new(tags::RETRIEVE_URL, VR::UR, PrimitiveValue::from("https://site/x")),
            DataElement::new(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2.3")),
        ]);
        let mut result = InMemDicomObject::from_element_iter([
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from("1.2")),
            DataElement::new(tags::RETRIEVE_URL, VR::UR, PrimitiveValue::from("https://site/studies/1.2")),
            // A URL under another VR: known by the dictionary.
            DataElement::new(tags::RETRIEVE_URI, VR::LO, PrimitiveValue::from("https://site/y")),
            DataElement::new(
                tags::REFERENCED_SERIES_SEQUENCE,
                VR::SQ,
                dicom_core::value::DataSetSequence::from(vec![item]),
            ),
        ]);
        without_urls(&mut result);
        assert!(result.get(tags::RETRIEVE_URL).is_none() && result.get(tags::RETRIEVE_URI).is_none());
        let Some(dicom_core::value::Value::Sequence(items)) =
            result.get(tags::REFERENCED_SERIES_SEQUENCE).map(|e| e.value())
        else {
            panic!("the sequence stays")
        };
        assert!(items.items()[0].get(tags::RETRIEVE_URL).is_none());
        assert!(items.items()[0].get(tags::REFERENCED_SOP_INSTANCE_UID).is_some(), "what is not a URL stays");
        assert!(result.get(tags::STUDY_INSTANCE_UID).is_some());
    }

    #[test]
    fn includefield_of_a_lower_level_is_not_asked_for() {
        let study = asked(QueryLevel::Study, "includefield=SeriesInstanceUID&includefield=StudyDescription");
        assert!(study.get(tags::SERIES_INSTANCE_UID).is_none());
        assert!(study.get(tags::STUDY_DESCRIPTION).is_some());
        let all = asked(QueryLevel::Study, "includefield=all");
        assert!(all.get(tags::BODY_PART_EXAMINED).is_none() && all.get(tags::IMAGE_TYPE).is_none());
        let series = asked(QueryLevel::Series, "includefield=SOPInstanceUID&includefield=StudyDescription");
        assert!(series.get(tags::SOP_INSTANCE_UID).is_none());
        assert!(series.get(tags::STUDY_DESCRIPTION).is_some());
        let image = asked(QueryLevel::Image, "includefield=all");
        assert!(image.get(tags::IMAGE_TYPE).is_some() && image.get(tags::BODY_PART_EXAMINED).is_some());
    }

    /// Fuzzing found it: a matching value beyond ASCII made an identifier that could not be
    /// encoded, so the C-FIND failed at every site. Values of VRs a character set extends go in
    /// UTF-8 (the others are refused by the query parser).
    #[test]
    fn a_matching_value_beyond_ascii_is_sent_in_utf8() {
        let raw = "PatientName=M%C3%BCller&StudyDescription=g\u{10A}1";
        let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
        for level in [QueryLevel::Study, QueryLevel::Series, QueryLevel::Image] {
            let identifier = asked(level, raw);
            assert_eq!(text_of(&identifier, tags::SPECIFIC_CHARACTER_SET).as_deref(), Some("ISO_IR 192"));
            let mut encoded = Vec::new();
            identifier.write_dataset_with_ts(&mut encoded, &ts).expect("the identifier encodes");
            let read = InMemDicomObject::read_dataset_with_ts(encoded.as_slice(), &ts).expect("and reads back");
            assert_eq!(text_of(&read, tags::PATIENT_NAME).as_deref(), Some("Müller"));
        }
        // ASCII-only queries stay in the default repertoire.
        assert_eq!(text_of(&asked(QueryLevel::Study, "PatientName=Doe"), tags::SPECIFIC_CHARACTER_SET), None);
    }
}
