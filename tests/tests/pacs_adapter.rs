//! pacs-adapter against real PACS: Orthanc and DCMTK dcmqrscp from the test bed.
//!
//! Needs a running test bed (`TESTBED_INFO`); `scripts/test.sh` starts one. Each test that uses
//! C-MOVE takes its own destination AE of the test bed, so tests run in parallel safely.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicomweb_model::{SeriesInstanceUid, SopInstanceUid, StudyInstanceUid};
use futures::StreamExt;
use pacs_adapter::{
    c_move, echo, find, get, retrieve_parallel, store, AssociationPool, DimseError, FindRequest, QueryLevel,
    RetrieveMethod, RetrieveRequest, RetrieveTarget, RetrievedInstance, StoreScp, StoreScpOptions,
};
use testbed::endpoints::{data_set_and_syntax, dcmqrscp_files, endpoint};
use testbed::{SiteInfo, SiteKind, TestbedInfo};

fn info() -> TestbedInfo {
    match TestbedInfo::from_env() {
        Ok(info) => info,
        Err(e) => panic!("{e}"),
    }
}

fn pool(site: &SiteInfo, calling_ae: &str) -> AssociationPool {
    AssociationPool::new(endpoint(site, calling_ae).expect("endpoint"))
}

fn pacs_sites(info: &TestbedInfo) -> Vec<&SiteInfo> {
    let sites: Vec<&SiteInfo> = vec![info.site("site-1").expect("site-1"), info.site("dcmqrscp").expect("dcmqrscp")];
    sites
}

/// A storage SCP on the test bed's C-MOVE destination number `n`.
async fn store_scp(info: &TestbedInfo, n: usize) -> (StoreScp, tokio::task::JoinHandle<()>) {
    let destination = &info.move_destinations.iter().find(|d| d.ae_title == format!("FEDGW{n}")).expect("destination");
    let options = StoreScpOptions::new(dicomweb_model::AeTitle::new(&destination.ae_title).expect("ae"));
    let (scp, _, handle) = StoreScp::spawn(&format!("127.0.0.1:{}", destination.port), options).await.expect("bind SCP");
    (scp, handle)
}

fn study(uid: &str) -> StudyInstanceUid {
    StudyInstanceUid::new(uid).expect("uid")
}

fn identifier(elements: &[(dicom_core::Tag, VR, &str)]) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    for (tag, vr, value) in elements {
        obj.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
    }
    obj
}

fn text(obj: &InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
        .unwrap_or_default()
}

async fn find_all(pool: &AssociationPool, level: QueryLevel, keys: InMemDicomObject) -> Vec<InMemDicomObject> {
    let request = FindRequest { level, identifier: keys, deadline: Some(Instant::now() + Duration::from_secs(30)) };
    find(pool, request).await.expect("C-FIND starts").try_collect_all().await.expect("C-FIND completes")
}

/// What the site holds, by SOP Instance UID: (data set bytes, transfer syntax).
fn held_by(site: &SiteInfo, info: &TestbedInfo, uids: &[String]) -> HashMap<String, (Vec<u8>, String)> {
    let mut held = HashMap::new();
    match site.kind {
        SiteKind::Orthanc => {
            let orthanc = testbed::orthanc::Client::new(site.http_url.as_deref().expect("REST url"));
            for uid in uids {
                let file = orthanc.file_of_instance(uid).expect("download from Orthanc");
                let (data_set, ts) = data_set_and_syntax(&file).expect("Orthanc file");
                held.insert(uid.clone(), (data_set.to_vec(), ts));
            }
        }
        SiteKind::Dcmqrscp => {
            let files = dcmqrscp_files(&site.storage_dir).expect("dcmqrscp storage");
            for uid in uids {
                let file = files.get(uid).unwrap_or_else(|| panic!("dcmqrscp holds no {uid}"));
                let (data_set, ts) = data_set_and_syntax(file).expect("dcmqrscp file");
                held.insert(uid.clone(), (data_set.to_vec(), ts));
            }
        }
    }
    let _ = info;
    held
}

fn assert_identical(site: &SiteInfo, retrieved: &[RetrievedInstance], held: &HashMap<String, (Vec<u8>, String)>) {
    let got: HashSet<&str> = retrieved.iter().map(|i| i.sop_instance_uid.as_str()).collect();
    let want: HashSet<&str> = held.keys().map(String::as_str).collect();
    assert_eq!(got, want, "{}: retrieved instances differ from those asked for", site.id);
    assert_eq!(got.len(), retrieved.len(), "{}: an instance arrived twice", site.id);
    for instance in retrieved {
        let (data_set, ts) = &held[instance.sop_instance_uid.as_str()];
        assert_eq!(instance.transfer_syntax_uid.as_str(), ts, "{}: transfer syntax changed", site.id);
        assert!(instance.data_set() == &data_set[..], "{}: {} differs from what the PACS holds", site.id, instance.sop_instance_uid);
        // Our Part-10 framing reads back with an independent parser.
        let parsed = dicom_object::from_reader(&instance.part10[128..]).expect("Part-10 output parses");
        assert_eq!(parsed.meta().transfer_syntax(), ts.as_str());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_every_site() {
    let info = info();
    for site in &info.sites {
        let pool = pool(site, "FEDGW");
        let rtt = echo(&pool).await.unwrap_or_else(|e| panic!("{}: {e}", site.id));
        assert!(rtt < Duration::from_secs(5));
        // The association went back to the pool and is reused by the next echo.
        assert_eq!(pool.idle_associations(), 1);
        echo(&pool).await.expect("second echo");
        assert_eq!(pool.open_associations(), 1, "{}: the second echo reused the association", site.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_at_every_level_with_each_matching_form() {
    let info = info();
    let ct = &info.data.ct;
    let mf = &info.data.multiframe;
    for site in pacs_sites(&info) {
        let pool = pool(site, "FEDGW");
        // STUDY level, wildcard on PatientName.
        let studies = find_all(
            &pool,
            QueryLevel::Study,
            identifier(&[
                (tags::PATIENT_NAME, VR::PN, "Synthetic*"),
                (tags::STUDY_INSTANCE_UID, VR::UI, ""),
                (tags::STUDY_DATE, VR::DA, ""),
            ]),
        )
        .await;
        let found: HashSet<String> = studies.iter().map(|s| text(s, tags::STUDY_INSTANCE_UID)).collect();
        assert_eq!(found, HashSet::from([ct.study_uid.clone(), mf.study_uid.clone()]), "{}: wildcard", site.id);
        // STUDY level, date range.
        for (range, expect) in [("20240101-20241231", 2usize), ("20250101-", 0), ("-20240315", 2)] {
            let studies = find_all(
                &pool,
                QueryLevel::Study,
                identifier(&[
                    (tags::PATIENT_NAME, VR::PN, "Synthetic*"),
                    (tags::STUDY_DATE, VR::DA, range),
                    (tags::STUDY_INSTANCE_UID, VR::UI, ""),
                ]),
            )
            .await;
            assert_eq!(studies.len(), expect, "{}: date range {range}", site.id);
        }
        // STUDY level, UID list matching.
        let list = format!("{}\\{}", ct.study_uid, mf.study_uid);
        let studies = find_all(&pool, QueryLevel::Study, identifier(&[(tags::STUDY_INSTANCE_UID, VR::UI, &list)])).await;
        assert_eq!(studies.len(), 2, "{}: UID list", site.id);
        // SERIES level within the CT study.
        let series = find_all(
            &pool,
            QueryLevel::Series,
            identifier(&[
                (tags::STUDY_INSTANCE_UID, VR::UI, &ct.study_uid),
                (tags::SERIES_INSTANCE_UID, VR::UI, ""),
                (tags::MODALITY, VR::CS, ""),
            ]),
        )
        .await;
        assert_eq!(series.len(), 1, "{}: series", site.id);
        assert_eq!(text(&series[0], tags::SERIES_INSTANCE_UID), ct.series_uid);
        assert_eq!(text(&series[0], tags::MODALITY), "CT");
        // IMAGE level: every slice, streamed one identifier at a time.
        let images = find_all(
            &pool,
            QueryLevel::Image,
            identifier(&[
                (tags::STUDY_INSTANCE_UID, VR::UI, &ct.study_uid),
                (tags::SERIES_INSTANCE_UID, VR::UI, &ct.series_uid),
                (tags::SOP_INSTANCE_UID, VR::UI, ""),
            ]),
        )
        .await;
        let uids: HashSet<String> = images.iter().map(|i| text(i, tags::SOP_INSTANCE_UID)).collect();
        assert_eq!(uids, ct.instance_uids.iter().cloned().collect::<HashSet<_>>(), "{}: image level", site.id);
        // No match is an empty stream, not an error.
        let none = find_all(&pool, QueryLevel::Study, identifier(&[(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3.4.5.6.7.8.9")])).await;
        assert!(none.is_empty());
    }
}

fn targets(info: &TestbedInfo) -> Vec<(&'static str, RetrieveTarget, Vec<String>)> {
    let ct = &info.data.ct;
    let series = SeriesInstanceUid::new(&ct.series_uid).expect("uid");
    let some: Vec<String> = ct.instance_uids[10..13].to_vec();
    vec![
        ("study", RetrieveTarget::study(study(&ct.study_uid)), ct.instance_uids.clone()),
        ("series", RetrieveTarget::series(study(&ct.study_uid), series.clone()), ct.instance_uids.clone()),
        (
            "instances",
            RetrieveTarget::instances(
                study(&ct.study_uid),
                Some(series),
                some.iter().map(|u| SopInstanceUid::new(u).expect("uid")).collect(),
            ),
            some,
        ),
        (
            "multi-frame instance",
            RetrieveTarget::study(study(&info.data.multiframe.study_uid)),
            info.data.multiframe.instance_uids.clone(),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_get_study_series_and_instances_byte_identical() {
    let info = info();
    for site in pacs_sites(&info) {
        let pool = pool(site, "FEDGW");
        for (what, target, expected) in targets(&info) {
            let retrieved = get(&pool, RetrieveRequest::new(target))
                .await
                .unwrap_or_else(|e| panic!("{} {what}: {e}", site.id))
                .try_collect_all()
                .await
                .unwrap_or_else(|e| panic!("{} {what}: {e}", site.id));
            assert_identical(site, &retrieved, &held_by(site, &info, &expected));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_move_study_series_and_instances_byte_identical() {
    let info = info();
    let (scp, server) = store_scp(&info, 1).await;
    for site in pacs_sites(&info) {
        let pool = pool(site, "FEDGW1");
        for (what, target, expected) in targets(&info) {
            let retrieved = c_move(&pool, &scp, RetrieveRequest::new(target))
                .await
                .unwrap_or_else(|e| panic!("{} {what}: {e}", site.id))
                .try_collect_all()
                .await
                .unwrap_or_else(|e| panic!("{} {what}: {e}", site.id));
            assert_identical(site, &retrieved, &held_by(site, &info, &expected));
        }
    }
    server.abort();
}
