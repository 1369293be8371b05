//! DICOM TLS (PS3.15 Annex B) against a real Orthanc with `DicomTlsEnabled` and client
//! certificates required: certificates from a throw-away CA made for the test.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use pacs_adapter::{echo, find, AssociationPool, DimseError, FindRequest, QueryLevel, SiteTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use testbed::orthanc::{OrthancSite, OrthancTls};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
    other_ca: PathBuf,
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write PEM");
    path
}

fn ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().expect("key");
    let cert = params.self_signed(&key).expect("CA");
    (cert, key)
}

fn pki(dir: &Path) -> Pki {
    let (ca_cert, ca_key) = ca("test bed CA");
    let mut server = CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    server.subject_alt_names.push(SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    server.distinguished_name.push(DnType::CommonName, "orthanc-tls");
    let server_key = KeyPair::generate().expect("key");
    let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).expect("server cert");
    let mut client = CertificateParams::new(vec!["fedgw".to_owned()]).expect("params");
    client.distinguished_name.push(DnType::CommonName, "FEDGW");
    let client_key = KeyPair::generate().expect("key");
    let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).expect("client cert");
    let (other_ca, _) = ca("some other CA");
    Pki {
        ca: write(dir, "ca.pem", ca_cert.pem()),
        server_cert: write(dir, "server.pem", server_cert.pem()),
        server_key: write(dir, "server.key", server_key.serialize_pem()),
        client_cert: write(dir, "client.pem", client_cert.pem()),
        client_key: write(dir, "client.key", client_key.serialize_pem()),
        other_ca: write(dir, "other-ca.pem", other_ca.pem()),
    }
}

fn pool(site: &OrthancSite, tls: Option<SiteTls>) -> AssociationPool {
    let mut endpoint = testbed::endpoints::endpoint(&site.info(), "FEDGW").expect("endpoint");
    endpoint.connect_timeout = Duration::from_secs(3);
    endpoint.response_timeout = Duration::from_secs(5);
    endpoint.tls = tls;
    AssociationPool::new(endpoint)
}

fn tls(ca: &Path, client: Option<(&Path, &Path)>) -> SiteTls {
    SiteTls {
        config: pacs_adapter::tls::client_config(ca, client).expect("TLS config"),
        server_name: "127.0.0.1".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dicom_tls_with_client_certificates() {
    let dir = std::env::temp_dir().join(format!("dicom-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let keys = pki(&dir);
    let orthanc_tls = OrthancTls {
        certificate: keys.server_cert.clone(),
        private_key: keys.server_key.clone(),
        trusted: keys.ca.clone(),
        require_client_certificate: true,
    };
    let dir2 = dir.clone();
    let ct = testbed::synthetic::write_ct_study(&dir.join("data"), 2, 99).expect("data");
    let files = ct.files.clone();
    let site = tokio::task::spawn_blocking(move || {
        let site = OrthancSite::start(&dir2.join("orthanc"), "tls-site", "ORTHANCTLS", &[], Some(&orthanc_tls))
            .expect("Orthanc with TLS");
        for file in &files {
            site.upload(file).expect("upload").expect("stored");
        }
        site
    })
    .await
    .expect("join");

    // Mutual TLS: echo and a query work, over a pooled association.
    let secure = pool(&site, Some(tls(&keys.ca, Some((&keys.client_cert, &keys.client_key)))));
    echo(&secure).await.expect("C-ECHO over TLS");
    let mut keys_obj = InMemDicomObject::new_empty();
    keys_obj.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(ct.study_uid.as_str())));
    let found = find(&secure, FindRequest { level: QueryLevel::Study, identifier: keys_obj, deadline: None })
        .await
        .expect("C-FIND over TLS")
        .try_collect_all()
        .await
        .expect("completes");
    assert_eq!(found.len(), 1);
    assert_eq!(secure.open_associations(), 1, "the TLS association was reused");

    // Failures: each an error, quickly, with no association left open.
    let cases: Vec<(&str, AssociationPool)> = vec![
        ("no client certificate", pool(&site, Some(tls(&keys.ca, None)))),
        ("server not trusted", pool(&site, Some(tls(&keys.other_ca, Some((&keys.client_cert, &keys.client_key)))))),
        ("plain TCP to a TLS port", pool(&site, None)),
    ];
    for (name, pool) in cases {
        let began = Instant::now();
        let error = echo(&pool).await.expect_err(name);
        assert!(began.elapsed() < Duration::from_secs(8), "{name}: took {:?}", began.elapsed());
        if name == "server not trusted" {
            assert!(matches!(error, DimseError::Tls { .. } | DimseError::Connect { .. }), "{name}: {error:?}");
        }
        assert_eq!(pool.open_associations(), 0, "{name}");
    }
    drop(site);
    let _ = std::fs::remove_dir_all(dir);
}
