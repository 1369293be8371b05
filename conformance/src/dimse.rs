//! `dimse`: does a PACS answer the DIMSE services a federation relies on? C-ECHO, Study Root
//! C-FIND at each level with the matching forms the gateway uses, C-GET and C-MOVE of an
//! instance, the transfer syntaxes accepted for retrieval and storage, and concurrent
//! associations; then which `retrieve` mode to configure.
//!
//! Evidence names counts, statuses and transfer syntaxes, never patient data.

use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::{AeTitle, SeriesInstanceUid, SiteId, SopInstanceUid, StudyInstanceUid};
use pacs_adapter::{
    c_move, echo, find, get, AssociationPool, DimseError, FindRequest, QueryLevel, RetrieveRequest, RetrieveTarget,
    SiteEndpoint, StoreScp, StoreScpOptions,
};

use crate::{Check, Outcome};

/// The PACS to check and how to reach it.
#[derive(Debug, Clone)]
pub struct DimseTarget {
    pub ae_title: AeTitle,
    pub address: String,
    pub calling_ae_title: AeTitle,
    /// Where our storage SCP listens for the C-MOVE check; the PACS must know
    /// `calling_ae_title` at this address. No C-MOVE check without it.
    pub move_listen: Option<String>,
    pub timeout: Duration,
    pub associations: usize,
}

/// The checks and the retrieve mode to configure (`None`: neither works).
#[derive(Debug)]
pub struct DimseReport {
    pub checks: Vec<Check>,
    pub recommended_retrieve: Option<&'static str>,
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> Option<String> {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .filter(|s| !s.is_empty())
}

fn keys(elements: &[(dicom_core::Tag, VR, &str)]) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for (tag, vr, value) in elements {
        obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
    }
    obj
}

async fn query(
    pool: &AssociationPool,
    level: QueryLevel,
    identifier: InMemDicomObject,
    timeout: Duration,
) -> Result<Vec<InMemDicomObject>, DimseError> {
    let request = FindRequest { level, identifier, deadline: Some(Instant::now() + timeout) };
    find(pool, request).await?.try_collect_all().await
}

fn failed(name: &str, reference: &'static str, error: &DimseError) -> Check {
    Check::new(name, reference, Outcome::Fail, error.to_string())
}

pub async fn run(target: &DimseTarget, progress: &mut dyn FnMut(&str)) -> DimseReport {
    let mut checks = Vec::new();
    let site = SiteId::new("pacs").expect("a constant, valid site id");
    let mut endpoint =
        SiteEndpoint::new(site, target.calling_ae_title.clone(), target.ae_title.clone(), target.address.clone());
    endpoint.connect_timeout = target.timeout;
    endpoint.response_timeout = target.timeout;
    endpoint.max_associations = target.associations.max(1);
    let pool = AssociationPool::new(endpoint);
    let timeout = target.timeout;

    progress("C-ECHO");
    match echo(&pool).await {
        Ok(rtt) => checks.push(Check::new(
            "C-ECHO",
            "PS3.4 A.4",
            Outcome::Pass,
            format!("{:.1} ms including association set-up", rtt.as_secs_f64() * 1e3),
        )),
        Err(e) => {
            checks.push(failed("C-ECHO", "PS3.4 A.4", &e));
            return DimseReport { checks, recommended_retrieve: None };
        }
    }

    progress("C-FIND at the STUDY level");
    let studies = query(
        &pool,
        QueryLevel::Study,
        keys(&[
            (tags::STUDY_INSTANCE_UID, VR::UI, ""),
            (tags::STUDY_DATE, VR::DA, ""),
            (tags::MODALITIES_IN_STUDY, VR::CS, ""),
            (tags::NUMBER_OF_STUDY_RELATED_SERIES, VR::IS, ""),
            (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""),
        ]),
        timeout,
    )
    .await;
    let studies = match studies {
        Ok(studies) => {
            let with = |tag| studies.iter().filter(|s| text(s, tag).is_some()).count();
            checks.push(Check::new(
                "C-FIND STUDY, universal matching",
                "PS3.4 C.4.1",
                Outcome::Pass,
                format!(
                    "{} studies; ModalitiesInStudy in {}, NumberOfStudyRelatedInstances in {} (the gateway computes missing ones)",
                    studies.len(),
                    with(tags::MODALITIES_IN_STUDY),
                    with(tags::NUMBER_OF_STUDY_RELATED_INSTANCES)
                ),
            ));
            studies
        }
        Err(e) => {
            checks.push(failed("C-FIND STUDY, universal matching", "PS3.4 C.4.1", &e));
            Vec::new()
        }
    };
    // Largest studies first: a typical imaging study is the fairest sample for retrieval.
    let mut by_size: Vec<(u64, String)> = studies
        .iter()
        .filter_map(|s| {
            let size =
                text(s, tags::NUMBER_OF_STUDY_RELATED_INSTANCES).and_then(|n| n.trim().parse().ok()).unwrap_or(0);
            text(s, tags::STUDY_INSTANCE_UID).map(|uid| (size, uid))
        })
        .collect();
    by_size.sort_by_key(|(size, _)| std::cmp::Reverse(*size));
    let study_uids: Vec<String> = by_size.into_iter().map(|(_, uid)| uid).collect();

    progress("C-FIND matching forms");
    let forms: [(&str, &'static str, InMemDicomObject, Option<usize>); 3] = [
        (
            "C-FIND wildcard matching (PatientName=*)",
            "PS3.4 C.2.2.2.4",
            keys(&[(tags::PATIENT_NAME, VR::PN, "*"), (tags::STUDY_INSTANCE_UID, VR::UI, "")]),
            Some(study_uids.len()),
        ),
        (
            "C-FIND range matching (StudyDate=19000101-)",
            "PS3.4 C.2.2.2.5",
            keys(&[(tags::STUDY_DATE, VR::DA, "19000101-"), (tags::STUDY_INSTANCE_UID, VR::UI, "")]),
            None,
        ),
        (
            "C-FIND UID list matching",
            "PS3.4 C.2.2.2.2",
            keys(&[(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                &study_uids.iter().take(2).cloned().collect::<Vec<_>>().join("\\"),
            )]),
            Some(study_uids.len().min(2)),
        ),
    ];
    for (name, reference, identifier, expected) in forms {
        if name.contains("UID list") && study_uids.len() < 2 {
            checks.push(Check::new(name, reference, Outcome::NotApplicable, "fewer than two studies to list"));
            continue;
        }
        match query(&pool, QueryLevel::Study, identifier, timeout).await {
            Ok(found) => match expected {
                Some(n) if found.len() != n => checks.push(Check::new(
                    name,
                    reference,
                    Outcome::Fail,
                    format!("{} matches, expected {n}: '*' matches any value, an empty one included", found.len()),
                )),
                _ => checks.push(Check::new(name, reference, Outcome::Pass, format!("{} matches", found.len()))),
            },
            Err(e) => checks.push(failed(name, reference, &e)),
        }
    }

    if study_uids.is_empty() {
        for (name, reference) in [
            ("C-FIND SERIES", "PS3.4 C.4.1"),
            ("C-FIND IMAGE", "PS3.4 C.4.1"),
            ("C-GET of one instance", "PS3.4 C.4.3"),
            ("C-MOVE of one instance", "PS3.4 C.4.2"),
        ] {
            checks.push(Check::new(name, reference, Outcome::NotApplicable, "the PACS holds no study"));
        }
        return finish(checks, &pool, target).await;
    }

    progress("C-FIND at the SERIES and IMAGE levels");
    // Samples: the first instance of the first series of up to three of the largest studies.
    let mut samples = Vec::new();
    for (n, uid) in study_uids.iter().take(3).enumerate() {
        let Ok(study) = StudyInstanceUid::new(uid) else { continue };
        match first_instance(&pool, &study, timeout).await {
            Ok((series_count, Some((series, image_count, instance)))) => {
                if n == 0 {
                    checks.push(Check::new(
                        "C-FIND SERIES",
                        "PS3.4 C.4.1",
                        Outcome::Pass,
                        format!("{series_count} series in the largest study"),
                    ));
                    checks.push(Check::new(
                        "C-FIND IMAGE",
                        "PS3.4 C.4.1",
                        Outcome::Pass,
                        format!("{image_count} instances in its first series"),
                    ));
                }
                samples.push(RetrieveTarget::instances(study, Some(series), vec![instance]));
            }
            Ok((series_count, None)) if n == 0 => {
                checks.push(Check::new(
                    "C-FIND SERIES",
                    "PS3.4 C.4.1",
                    Outcome::Pass,
                    format!("{series_count} series in the largest study"),
                ));
                checks.push(Check::new(
                    "C-FIND IMAGE",
                    "PS3.4 C.4.1",
                    Outcome::Fail,
                    "no instance found in its first series",
                ));
            }
            Err((level, e)) if n == 0 => {
                checks.push(failed(&format!("C-FIND {level}"), "PS3.4 C.4.1", &e));
            }
            _ => {}
        }
    }
    if samples.is_empty() {
        checks.push(Check::new("C-GET of one instance", "PS3.4 C.4.3", Outcome::NotApplicable, "no instance found"));
        checks.push(Check::new("C-MOVE of one instance", "PS3.4 C.4.2", Outcome::NotApplicable, "no instance found"));
        return finish(checks, &pool, target).await;
    }

    progress("C-GET of one instance");
    let get_outcome = try_samples(&samples, |one| {
        let request =
            RetrieveRequest { target: one, sop_classes: Vec::new(), deadline: Some(Instant::now() + timeout) };
        let pool = pool.clone();
        async move { retrieve_one(get(&pool, request).await).await }
    })
    .await;
    checks.push(sample_check("C-GET of one instance", "PS3.4 C.4.3", get_outcome));

    progress("C-MOVE of one instance");
    match &target.move_listen {
        None => checks.push(Check::new(
            "C-MOVE of one instance",
            "PS3.4 C.4.2",
            Outcome::NotApplicable,
            "no --move-listen: the PACS needs a destination to send to",
        )),
        Some(listen) => {
            let options = StoreScpOptions::new(target.calling_ae_title.clone());
            match StoreScp::spawn(listen, options).await {
                Err(e) => checks.push(Check::new(
                    "C-MOVE of one instance",
                    "PS3.4 C.4.2",
                    Outcome::Fail,
                    format!("cannot listen on {listen}: {e}"),
                )),
                Ok((scp, _, server)) => {
                    let outcome = try_samples(&samples, |one| {
                        let request = RetrieveRequest {
                            target: one,
                            sop_classes: Vec::new(),
                            deadline: Some(Instant::now() + timeout),
                        };
                        let (pool, scp) = (pool.clone(), scp.clone());
                        async move { retrieve_one(c_move(&pool, &scp, request).await).await }
                    })
                    .await;
                    server.abort();
                    let mut check = sample_check("C-MOVE of one instance", "PS3.4 C.4.2", outcome);
                    if check.outcome == Outcome::Fail {
                        // The storage SCP takes sub-operations only from the PACS's AE title
                        // and host; a PACS sending under another AE title needs
                        // `move_calling_ae` in the gateway's configuration.
                        check.evidence.push_str(&format!(
                            " (does the PACS know {} at {listen}, and send its sub-operations as {} from the host of {}?)",
                            target.calling_ae_title, target.ae_title, target.address
                        ));
                    }
                    checks.push(check);
                }
            }
        }
    }
    finish(checks, &pool, target).await
}

/// The series count of a study, and its first series' instance count and first instance.
async fn first_instance(
    pool: &AssociationPool,
    study: &StudyInstanceUid,
    timeout: Duration,
) -> Result<(usize, Option<(SeriesInstanceUid, usize, SopInstanceUid)>), (&'static str, DimseError)> {
    let series = query(
        pool,
        QueryLevel::Series,
        keys(&[
            (tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()),
            (tags::SERIES_INSTANCE_UID, VR::UI, ""),
            (tags::MODALITY, VR::CS, ""),
        ]),
        timeout,
    )
    .await
    .map_err(|e| ("SERIES", e))?;
    let Some(first) =
        series.iter().find_map(|s| text(s, tags::SERIES_INSTANCE_UID)).and_then(|u| SeriesInstanceUid::new(&u).ok())
    else {
        return Ok((series.len(), None));
    };
    let images = query(
        pool,
        QueryLevel::Image,
        keys(&[
            (tags::STUDY_INSTANCE_UID, VR::UI, study.as_str()),
            (tags::SERIES_INSTANCE_UID, VR::UI, first.as_str()),
            (tags::SOP_INSTANCE_UID, VR::UI, ""),
        ]),
        timeout,
    )
    .await
    .map_err(|e| ("IMAGE", e))?;
    let instance =
        images.iter().find_map(|i| text(i, tags::SOP_INSTANCE_UID)).and_then(|u| SopInstanceUid::new(&u).ok());
    Ok((series.len(), instance.map(|i| (first, images.len(), i))))
}

/// Tries the samples in turn until one retrieval works; the failures before it stay in the
/// evidence.
async fn try_samples<F, Fut>(samples: &[RetrieveTarget], retrieve: F) -> (Option<String>, Vec<String>)
where
    F: Fn(RetrieveTarget) -> Fut,
    Fut: std::future::Future<Output = Result<String, String>>,
{
    let mut failures = Vec::new();
    for sample in samples {
        match retrieve(sample.clone()).await {
            Ok(evidence) => return (Some(evidence), failures),
            Err(e) => failures.push(e),
        }
    }
    (None, failures)
}

fn sample_check(name: &str, reference: &'static str, (success, failures): (Option<String>, Vec<String>)) -> Check {
    match success {
        Some(evidence) if failures.is_empty() => Check::new(name, reference, Outcome::Pass, evidence),
        Some(evidence) => Check::new(
            name,
            reference,
            Outcome::Pass,
            format!("{evidence}; {} other sample(s) failed first: {}", failures.len(), failures.join("; ")),
        ),
        None => Check::new(name, reference, Outcome::Fail, failures.join("; ")),
    }
}

async fn retrieve_one(
    started: Result<pacs_adapter::DimseStream<pacs_adapter::RetrievedInstance>, DimseError>,
) -> Result<String, String> {
    let instances = started.map_err(|e| e.to_string())?.try_collect_all().await.map_err(|e| e.to_string())?;
    match instances.as_slice() {
        [one] => Ok(format!("1 instance, {} bytes, transfer syntax {}", one.part10.len(), one.transfer_syntax_uid)),
        other => Err(format!("{} instances arrived for one asked", other.len())),
    }
}

/// Transfer syntaxes, concurrent associations, then the recommendation.
async fn finish(mut checks: Vec<Check>, pool: &AssociationPool, target: &DimseTarget) -> DimseReport {
    let syntaxes = crate::dimse_syntaxes::CT_IMAGE_STORAGE;
    checks.extend(crate::dimse_syntaxes::checks(pool.site(), syntaxes, target.timeout).await);
    let wanted = target.associations.max(1);
    let fresh = AssociationPool::new(pool.site().clone());
    let deadline = Instant::now() + target.timeout;
    let plan = pacs_adapter::syntax::ContextPlan::query();
    // All held at once: the PACS must accept this many associations concurrently.
    let held = futures::future::join_all((0..wanted).map(|_| fresh.acquire(&plan, true, deadline))).await;
    let ok = held.iter().filter(|r| r.is_ok()).count();
    let first_failure = held.iter().find_map(|r| r.as_ref().err().map(|e| e.to_string()));
    for association in held.into_iter().flatten() {
        association.done();
    }
    fresh.close_idle().await;
    let mut evidence = format!("{ok} of {wanted} associations open at once");
    if let Some(e) = first_failure {
        evidence.push_str(&format!("; first refusal: {e}"));
    }
    let outcome = if ok == wanted { Outcome::Pass } else { Outcome::Fail };
    checks.push(Check::new("concurrent associations", "PS3.8 9.1", outcome, evidence));
    pool.close_idle().await;
    let passed = |name: &str| checks.iter().any(|c| c.name == name && c.outcome == Outcome::Pass);
    let recommended_retrieve = if passed("C-GET of one instance") {
        Some("c-get")
    } else if passed("C-MOVE of one instance") {
        Some("c-move")
    } else {
        None
    };
    DimseReport { checks, recommended_retrieve }
}
