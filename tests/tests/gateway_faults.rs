//! The gateway when its PACS fails: unreachable (502), silent (504), or killed in the middle of
//! a study retrieval (the HTTP response is aborted, never ended as if complete).

use std::io::Read;
use std::time::{Duration, Instant};

use testbed::orthanc::OrthancSite;
use testbed::TestbedInfo;

/// Starts `dicomweb-gateway serve` in-process over one site; returns its base URL.
async fn gateway(site_port: u16, ae: &str, timeout: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}/dicom-web\"\n\
         [dimse]\nae_title = \"FEDGW\"\nlisten = \"127.0.0.1:{}\"\n\
         [[sites]]\nid = \"site\"\nae_title = \"{ae}\"\naddress = \"127.0.0.1:{site_port}\"\nretrieve = \"c-get\"\ntimeout = \"{timeout}\"\n\
         [auth]\nmode = \"none\"\n",
        testbed::free_port().expect("port")
    );
    let config = gateway::config::Config::parse(&text).expect("valid config");
    tokio::spawn(async move {
        let _ = gateway::serve(listener, config, std::future::pending()).await;
    });
    format!("http://127.0.0.1:{port}/dicom-web")
}

/// The status of a GET (a transport error fails the test).
async fn status(url: String) -> u16 {
    tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
        Ok(response) => response.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(e) => panic!("transport error: {e}"),
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_pacs_are_502_and_504() {
    let down = testbed::free_port().expect("port");
    let url = gateway(down, "DOWN", "2s").await;
    let began = Instant::now();
    assert_eq!(status(format!("{url}/studies")).await, 502);
    assert!(began.elapsed() < Duration::from_secs(5));

    // A peer that accepts TCP and never answers the association request.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in silent.incoming().flatten() {
            held.push(stream);
        }
    });
    let url = gateway(silent_port, "SILENT", "1s").await;
    let began = Instant::now();
    assert_eq!(status(format!("{url}/studies")).await, 504);
    assert!(began.elapsed() < Duration::from_secs(5), "{:?}", began.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pacs_dying_mid_study_aborts_the_response() {
    let info = TestbedInfo::from_env().unwrap_or_else(|e| panic!("{e}"));
    let dir = std::env::temp_dir().join(format!("gateway-fault-{}", std::process::id()));
    let files = info.data.ct.files[..80].to_vec();
    let dir2 = dir.clone();
    let mut orthanc = tokio::task::spawn_blocking(move || {
        let site = OrthancSite::start(&dir2, "doomed", "DOOMED", &[], None).expect("Orthanc starts");
        for file in &files {
            site.upload(file).expect("upload").expect("stored");
        }
        site
    })
    .await
    .expect("join");
    let url = gateway(orthanc.dicom_port, "DOOMED", "5s").await;
    let study = info.data.ct.study_uid.clone();
    let request = format!("{url}/studies/{study}");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let reader = tokio::task::spawn_blocking(move || {
        let response = ureq::get(&request)
            .set("Accept", "multipart/related; type=\"application/dicom\"; transfer-syntax=*")
            .call()
            .expect("the response starts");
        assert_eq!(response.status(), 200);
        let mut body = response.into_reader();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0usize;
        let mut signalled = false;
        loop {
            match body.read(&mut buffer) {
                Ok(0) => return Ok(total),
                Ok(n) => {
                    total += n;
                    if !signalled && total > 2 * 1024 * 1024 {
                        let _ = tx.send(());
                        signalled = true;
                        // Read slowly from here on so the PACS dies before the study is through.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
                Err(e) => return Err((total, e.to_string())),
            }
        }
    });
    tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(20)))
        .await
        .expect("join")
        .expect("data arrives");
    orthanc.stop();
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), reader).await.expect("the reader finishes").expect("join");
    match outcome {
        Err((total, _)) => assert!(total < 80 * 525_000, "the error came after the whole study"),
        Ok(total) => panic!("the body ended cleanly after {total} bytes although the PACS died mid-study"),
    }
    let _ = std::fs::remove_dir_all(dir);
}
