//! `bench-retrieve`: how fast a whole study comes out of a real Orthanc, measured in one run
//! for every path: pacs-adapter (C-GET and C-MOVE, one association or several in parallel),
//! DCMTK getscu and movescu, and Orthanc's own DICOMweb (curl of WADO-RS). Reports medians,
//! ratios and peak memory as a Markdown table.
//!
//! Each adapter measurement runs in a child process (`bench-retrieve adapter ...`) so its peak
//! RSS is its own.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use pacs_adapter::{
    c_move, get, retrieve_parallel, AssociationPool, RetrieveMethod, RetrieveRequest, RetrieveTarget, StoreScp,
    StoreScpOptions,
};
use testbed::gateway::curl_times;
use testbed::median;
use testbed::{MoveDestination, Testbed, TestbedInfo, TestbedOptions};

const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

#[derive(Parser)]
#[command(about = "Study retrieval benchmark against a real Orthanc")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole benchmark and print (and optionally write) the Markdown report.
    Run {
        #[arg(long, default_value_t = 200)]
        slices: u32,
        #[arg(long, default_value_t = 3)]
        runs: usize,
        #[arg(long, default_value = ".testbed/bench")]
        dir: PathBuf,
        /// Write the report here too.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Latency of single exchanges on a pooled association (used by `run`); prints JSON.
    Latency {
        #[arg(long)]
        info: PathBuf,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        quickack: bool,
        #[arg(long, default_value_t = 20)]
        repeat: usize,
    },
    /// One pacs-adapter retrieval (used by `run`); prints JSON.
    Adapter {
        #[arg(long)]
        info: PathBuf,
        #[arg(long)]
        method: String,
        #[arg(long, default_value_t = 1)]
        parallel: usize,
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        nodelay: bool,
    },
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Sample {
    seconds: f64,
    first_instance_seconds: f64,
    instances: usize,
    bytes: u64,
    peak_rss_kib: u64,
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

async fn adapter_run(info: &Path, method: &str, parallel: usize, nodelay: bool) -> anyhow::Result<Sample> {
    let info: TestbedInfo = serde_json::from_str(&std::fs::read_to_string(info)?)?;
    let site = info.site("site-1")?;
    let destination = info.move_destinations.iter().find(|d| d.ae_title == "FEDGWB").context("FEDGWB destination")?;
    let mut endpoint = testbed::endpoints::endpoint(site, &destination.ae_title)?;
    endpoint.max_associations = parallel.max(1);
    endpoint.tcp_nodelay = nodelay;
    let study = dicomweb_model::StudyInstanceUid::new(&info.data.ct.study_uid)?;
    let scp = if method == "move" {
        let options = StoreScpOptions::new(dicomweb_model::AeTitle::new(&destination.ae_title)?);
        Some(StoreScp::spawn(&format!("127.0.0.1:{}", destination.port), options).await?.0)
    } else {
        None
    };
    let began = Instant::now();
    let pool = AssociationPool::new(endpoint);
    let target = RetrieveTarget::study(study);
    let mut stream = if parallel > 1 {
        let method = match &scp {
            Some(scp) => RetrieveMethod::Move(scp.clone()),
            None => RetrieveMethod::Get,
        };
        retrieve_parallel(&pool, &method, target, parallel, None).await?
    } else {
        let request = RetrieveRequest { target, sop_classes: vec![info.data.ct.sop_class_uid.clone()], deadline: None };
        match &scp {
            Some(scp) => c_move(&pool, scp, request).await?,
            None => get(&pool, request).await?,
        }
    };
    let (mut instances, mut bytes) = (0, 0u64);
    let mut first_instance_seconds = 0.0;
    while let Some(instance) = stream.next().await {
        let instance = instance?;
        if instances == 0 {
            first_instance_seconds = began.elapsed().as_secs_f64();
        }
        instances += 1;
        bytes += instance.part10.len() as u64;
    }
    let seconds = began.elapsed().as_secs_f64();
    if instances != info.data.ct.instance_uids.len() {
        bail!("retrieved {instances} of {} instances", info.data.ct.instance_uids.len());
    }
    Ok(Sample { seconds, first_instance_seconds, instances, bytes, peak_rss_kib: peak_rss_kib() })
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Latencies {
    echo_ms: f64,
    find_study_ms: f64,
    get_instance_ms: f64,
}

/// Median latency of C-ECHO, a one-study C-FIND and a one-instance C-GET, each repeated on a
/// pooled association after a first, unmeasured, exchange.
async fn latency_run(info: &Path, quickack: bool, repeat: usize) -> anyhow::Result<Latencies> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let info: TestbedInfo = serde_json::from_str(&std::fs::read_to_string(info)?)?;
    let ct = &info.data.ct;
    let mut endpoint = testbed::endpoints::endpoint(info.site("site-1")?, "FEDGW")?;
    endpoint.tcp_quickack = quickack;
    endpoint.max_associations = 1;
    let pool = AssociationPool::new(endpoint);
    let study = dicomweb_model::StudyInstanceUid::new(&ct.study_uid)?;
    let one = RetrieveTarget::instances(
        study.clone(),
        Some(dicomweb_model::SeriesInstanceUid::new(&ct.series_uid)?),
        vec![dicomweb_model::SopInstanceUid::new(&ct.instance_uids[0])?],
    );
    let mut echo_ms = Vec::new();
    let mut find_ms = Vec::new();
    let mut get_ms = Vec::new();
    for round in 0..=repeat {
        let began = Instant::now();
        pacs_adapter::echo(&pool).await?;
        let echo = began.elapsed();
        let mut identifier = dicom_object::InMemDicomObject::new_empty();
        identifier.put(DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(study.as_str())));
        let began = Instant::now();
        let found = pacs_adapter::find(
            &pool,
            pacs_adapter::FindRequest { level: pacs_adapter::QueryLevel::Study, identifier, deadline: None },
        )
        .await?
        .try_collect_all()
        .await?;
        let find = began.elapsed();
        let began = Instant::now();
        let request =
            RetrieveRequest { target: one.clone(), sop_classes: vec![ct.sop_class_uid.clone()], deadline: None };
        let got = get(&pool, request).await?.try_collect_all().await?;
        let get_one = began.elapsed();
        if found.len() != 1 || got.len() != 1 {
            bail!("expected one study and one instance");
        }
        if round > 0 {
            echo_ms.push(echo.as_secs_f64() * 1e3);
            find_ms.push(find.as_secs_f64() * 1e3);
            get_ms.push(get_one.as_secs_f64() * 1e3);
        }
    }
    Ok(Latencies { echo_ms: median(&echo_ms), find_study_ms: median(&find_ms), get_instance_ms: median(&get_ms) })
}

/// Runs a command under GNU time; returns wall seconds and peak RSS.
fn timed(command: &mut Command) -> anyhow::Result<(f64, u64, String)> {
    let mut wrapped = Command::new("/usr/bin/time");
    wrapped.args(["-f", "BENCH-TIME %e %M"]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        if let Some(value) = value {
            wrapped.env(key, value);
        }
    }
    let began = Instant::now();
    let output = wrapped.output().context("running /usr/bin/time (Debian package time)")?;
    let seconds = began.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    if !output.status.success() {
        bail!("{:?} failed: {}", command.get_program(), stderr.lines().rev().take(5).collect::<Vec<_>>().join(" | "));
    }
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("BENCH-TIME "))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    Ok((seconds, rss, String::from_utf8_lossy(&output.stdout).into_owned()))
}

struct Row {
    name: String,
    seconds: Vec<f64>,
    rss_kib: u64,
}

fn run(slices: u32, runs: usize, dir: &Path, out: Option<&Path>) -> anyhow::Result<()> {
    let movescu_port = testbed::free_port()?;
    let options = TestbedOptions {
        extra_destinations: vec![
            MoveDestination { ae_title: "FEDGWB".into(), port: testbed::free_port()? },
            MoveDestination { ae_title: "MOVESCU".into(), port: movescu_port },
        ],
        ..TestbedOptions::orthanc_sites(dir.to_owned(), 1, slices)
    };
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    let info_path = dir.join("testbed.json");
    std::fs::write(&info_path, serde_json::to_vec(&testbed.info)?)?;
    let site = &testbed.orthanc[0];
    let study = testbed.info.data.ct.study_uid.clone();
    let study_bytes = testbed.info.data.ct.bytes;
    let scratch = dir.join("scratch");
    let self_exe = std::env::current_exe()?;
    let getscu = testbed::dcmtk_tool("getscu")?;
    let movescu = testbed::dcmtk_tool("movescu")?;
    let port = site.dicom_port.to_string();
    let wado = format!("{}/dicom-web/studies/{study}", site.http_url());
    let study_key = format!("StudyInstanceUID={study}");

    type Runner<'a> = Box<dyn Fn() -> anyhow::Result<(f64, u64)> + 'a>;
    let adapter = |method: &'static str, parallel: usize, nodelay: bool| -> Runner<'_> {
        let self_exe = self_exe.clone();
        let info_path = info_path.clone();
        Box::new(move || {
            let (_, _, stdout) = timed(
                Command::new(&self_exe)
                    .args([
                        "adapter",
                        "--method",
                        method,
                        "--parallel",
                        &parallel.to_string(),
                        "--nodelay",
                        &nodelay.to_string(),
                    ])
                    .arg("--info")
                    .arg(&info_path),
            )?;
            let sample: Sample = serde_json::from_str(stdout.trim()).context("adapter output")?;
            Ok((sample.seconds, sample.peak_rss_kib))
        })
    };
    let fresh_dir = |name: &str| -> anyhow::Result<PathBuf> {
        let d = scratch.join(name);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d)?;
        Ok(d)
    };
    let mut methods: Vec<(String, Runner<'_>)> = vec![
        (
            "Orthanc's own DICOMweb, WADO-RS study (curl)".into(),
            Box::new(|| {
                let (s, rss, _) = timed(Command::new("curl").args([
                    "-sf",
                    "-o",
                    "/dev/null",
                    "-H",
                    "Accept: multipart/related; type=\"application/dicom\"",
                    &wado,
                ]))?;
                Ok((s, rss))
            }),
        ),
        ("pacs-adapter C-GET, 1 association".into(), adapter("get", 1, true)),
        ("pacs-adapter C-GET, 1 association, TCP_NODELAY off".into(), adapter("get", 1, false)),
        ("pacs-adapter C-GET, 4 associations (instance-level)".into(), adapter("get", 4, true)),
        ("pacs-adapter C-GET, 8 associations (instance-level)".into(), adapter("get", 8, true)),
        ("pacs-adapter C-MOVE, 1 association".into(), adapter("move", 1, true)),
        ("pacs-adapter C-MOVE, 4 associations (instance-level)".into(), adapter("move", 4, true)),
        ("pacs-adapter C-MOVE, 8 associations (instance-level)".into(), adapter("move", 8, true)),
        (
            "DCMTK getscu".into(),
            Box::new(|| {
                let out = fresh_dir("getscu")?;
                let (s, rss, _) = timed(
                    Command::new(&getscu)
                        .args(["-S", "-aet", "GETSCU", "-aec", &site.ae_title, "127.0.0.1", &port])
                        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &study_key, "-od"])
                        .arg(&out),
                )?;
                Ok((s, rss))
            }),
        ),
        (
            "DCMTK getscu, TCP_NODELAY=1 in its environment".into(),
            Box::new(|| {
                let out = fresh_dir("getscu-nodelay")?;
                let (s, rss, _) = timed(
                    Command::new(&getscu)
                        .env("TCP_NODELAY", "1")
                        .args(["-S", "-aet", "GETSCU", "-aec", &site.ae_title, "127.0.0.1", &port])
                        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &study_key, "-od"])
                        .arg(&out),
                )?;
                Ok((s, rss))
            }),
        ),
        (
            "DCMTK movescu (its own storage SCP)".into(),
            Box::new(|| {
                let out = fresh_dir("movescu")?;
                let (s, rss, _) = timed(
                    Command::new(&movescu)
                        .args(["-S", "-aet", "MOVESCU", "-aem", "MOVESCU", "+P", &movescu_port.to_string()])
                        .args(["-aec", &site.ae_title, "127.0.0.1", &port])
                        .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &study_key, "-od"])
                        .arg(&out),
                )?;
                Ok((s, rss))
            }),
        ),
    ];
    let mut rows: Vec<Row> =
        methods.iter().map(|(name, _)| Row { name: name.clone(), seconds: Vec::new(), rss_kib: 0 }).collect();
    // Warm Orthanc's storage cache once so the first measured method is not penalised.
    (methods[0].1)()?;
    for round in 0..runs {
        for (row, (name, runner)) in rows.iter_mut().zip(methods.iter_mut()) {
            let (seconds, rss) = runner().with_context(|| name.clone())?;
            eprintln!("bench: round {} {name}: {seconds:.3} s, {} MiB", round + 1, rss / 1024);
            row.seconds.push(seconds);
            row.rss_kib = row.rss_kib.max(rss);
        }
    }
    let by_name = |prefix: &str| rows.iter().find(|r| r.name.starts_with(prefix)).map(|r| median(&r.seconds));
    let orthanc = by_name("Orthanc's own").unwrap_or(f64::NAN);
    let getscu_median = by_name("DCMTK getscu").unwrap_or(f64::NAN);
    let mut report = String::new();
    report.push_str(&format!(
        "Study: synthetic CT, {slices} slices of 512x512x16 bit, {:.1} MB, one Orthanc {} site on loopback; \
         {runs} rounds, methods interleaved in each round; median (min-max) wall time.\n\n",
        study_bytes as f64 / 1e6,
        orthanc_version(&site.http_url())
    ));
    report.push_str(
        "| method | median s | min-max s | peak RSS MiB | x getscu | x Orthanc DICOMweb |\n|---|---|---|---|---|---|\n",
    );
    for row in &rows {
        let m = median(&row.seconds);
        let (min, max) = row.seconds.iter().fold((f64::MAX, 0f64), |(a, b), &s| (a.min(s), b.max(s)));
        report.push_str(&format!(
            "| {} | {m:.3} | {min:.3}-{max:.3} | {:.1} | {:.3} | {:.2} |\n",
            row.name,
            row.rss_kib as f64 / 1024.0,
            m / getscu_median,
            m / orthanc
        ));
    }
    report.push_str(
        "\nLatency of single exchanges on a pooled association, median of 20 (ms): the 40 ms a DCMTK-based \
         PACS costs per response unless the receiver acknowledges at once (TCP_QUICKACK).\n\n\
         | TCP_QUICKACK | C-ECHO | C-FIND one study | C-GET one instance |\n|---|---|---|---|\n",
    );
    for quickack in [true, false] {
        let output = Command::new(&self_exe)
            .args(["latency", "--quickack", &quickack.to_string()])
            .arg("--info")
            .arg(&info_path)
            .output()?;
        if !output.status.success() {
            bail!("latency run failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        let l: Latencies = serde_json::from_slice(&output.stdout).context("latency output")?;
        eprintln!("bench: latency quickack={quickack}: {l:?}");
        report.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} |\n",
            if quickack { "on (default)" } else { "off" },
            l.echo_ms,
            l.find_study_ms,
            l.get_instance_ms
        ));
    }
    report.push_str(&gateway_section(site, &study, runs, dir)?);
    println!("{report}");
    if let Some(out) = out {
        std::fs::write(out, &report)?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

/// WADO-RS of the study through `dicomweb-gateway serve` (C-GET from the same Orthanc) and from
/// Orthanc's own DICOMweb, interleaved, with the gateway's peak RSS.
fn gateway_section(site: &testbed::OrthancSite, study: &str, runs: usize, dir: &Path) -> anyhow::Result<String> {
    // No cache: every round retrieves from the PACS (the cache has its own benchmark, bench-cache).
    let gateway = testbed::gateway::GatewayProcess::start(
        dir,
        "bench-gateway",
        &format!(
            "[dimse]\nae_title = \"FEDGWB\"\nlisten = \"127.0.0.1:{}\"\n\
             [[sites]]\nid = \"site-1\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n\
             [cache]\nmemory = \"0B\"\nsearch_ttl = \"0s\"\n[auth]\nmode = \"none\"\n",
            testbed::free_port()?,
            site.ae_title,
            site.dicom_port
        ),
    )?;
    let through_gateway = format!("{}/studies/{study}", gateway.url);
    let direct = format!("{}/dicom-web/studies/{study}", site.http_url());
    let (mut gw, mut orthanc) = (Vec::new(), Vec::new());
    for round in 0..runs {
        orthanc.push(curl_times(&direct, ACCEPT_AS_STORED)?);
        gw.push(curl_times(&through_gateway, ACCEPT_AS_STORED)?);
        eprintln!("bench: round {} WADO-RS gateway {:?} Orthanc {:?}", round + 1, gw[round], orthanc[round]);
    }
    let peak_mib = gateway.peak_rss_mib();
    drop(gateway);
    let column =
        |samples: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| median(&samples.iter().map(pick).collect::<Vec<_>>());
    let (gw_ttfb, gw_total) = (column(&gw, |t| t.0), column(&gw, |t| t.1));
    let (or_ttfb, or_total) = (column(&orthanc, |t| t.0), column(&orthanc, |t| t.1));
    Ok(format!(
        "\nWADO-RS of the whole study (`transfer-syntax=*`, curl), median of {runs}, interleaved: through \
         `dicomweb-gateway serve` (C-GET from the same Orthanc, no cache) and from Orthanc's own DICOMweb.\n\n\
         | path | time to first byte s | total s | peak RSS MiB |\n|---|---|---|---|\n\
         | dicomweb-gateway | {gw_ttfb:.3} | {gw_total:.3} | {:.1} (gateway process) |\n\
         | Orthanc's own DICOMweb | {or_ttfb:.3} | {or_total:.3} | - |\n\
         | ratio gateway / Orthanc | {:.2} | {:.2} | |\n",
        peak_mib,
        gw_ttfb / or_ttfb,
        gw_total / or_total
    ))
}

fn orthanc_version(url: &str) -> String {
    ureq::get(&format!("{url}/system"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v["Version"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "(unknown version)".into())
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Run { slices, runs, dir, out } => run(slices, runs.max(1), &dir, out.as_deref()),
        Cmd::Latency { info, quickack, repeat } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let latencies = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(300), latency_run(&info, quickack, repeat.max(1))).await
            })??;
            println!("{}", serde_json::to_string(&latencies)?);
            Ok(())
        }
        Cmd::Adapter { info, method, parallel, nodelay } => {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let sample = runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(600), adapter_run(&info, &method, parallel, nodelay)).await
            })??;
            println!("{}", serde_json::to_string(&sample)?);
            Ok(())
        }
    }
}
