//! `bench-cache`: the gateway's retrieval cache on the synthetic CT from one real Orthanc,
//! each comparison side by side in one run, rounds interleaved:
//!
//! - cold WADO-RS study through a fresh gateway (de-identifying) against DCMTK getscu and
//!   Orthanc's own DICOMweb, and its time to first byte against the time a C-GET of the study
//!   from a fresh association takes to receive its fifth instance;
//! - warm WADO-RS study (the same gateway, second request) against Orthanc's own DICOMweb;
//! - warm study metadata (asked before) against Orthanc's own DICOMweb metadata;
//! - many concurrent clients fetching single instances, warm, from the gateway and from
//!   Orthanc's own DICOMweb: throughput and latency percentiles;
//! - the gateway's peak RSS.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use testbed::gateway::{curl_times as curl, GatewayProcess};
use testbed::median;
use testbed::{Testbed, TestbedOptions};

const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

#[derive(Parser)]
#[command(about = "Retrieval cache benchmark against a real Orthanc")]
struct Cli {
    #[arg(long, default_value_t = 200)]
    slices: u32,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent clients of the load test.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds of each load test.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value = ".testbed/bench-cache")]
    dir: PathBuf,
    /// Write the report here too.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only stream the study through a gateway with this memory cache (e.g. 32MiB) twice and
    /// report its peak RSS (for a large study: `--slices 2000` is about 1 GB).
    #[arg(long)]
    rss_only: Option<String>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn json(url: &str) -> anyhow::Result<serde_json::Value> {
    let text = ureq::get(url).set("Accept", "application/dicom+json").call()?.into_string()?;
    Ok(serde_json::from_str(&text)?)
}

fn value(result: &serde_json::Value, tag: &str) -> String {
    result[tag]["Value"][0].as_str().unwrap_or_default().to_owned()
}

/// The gateway's name of the CT study and the URLs of its instances.
fn ct_urls(base: &str, instances: u64) -> anyhow::Result<(String, Vec<String>)> {
    let studies = json(&format!("{base}/studies?ModalitiesInStudy=CT&includefield=NumberOfStudyRelatedInstances"))?;
    let study = studies
        .as_array()
        .and_then(|all| all.iter().find(|s| s["00201208"]["Value"][0].as_u64() == Some(instances)))
        .map(|s| value(s, "0020000D"))
        .context("the CT study is not listed")?;
    let listed = json(&format!("{base}/studies/{study}/instances"))?;
    let urls = listed
        .as_array()
        .context("instances")?
        .iter()
        .map(|i| format!("{base}/studies/{study}/series/{}/instances/{}", value(i, "0020000E"), value(i, "00080018")))
        .collect();
    Ok((study, urls))
}

struct Load {
    requests: usize,
    bytes: u64,
    seconds: f64,
    latencies: Vec<f64>,
    failures: usize,
}

/// `clients` threads fetching `urls` round-robin for `seconds`.
fn load(urls: &[String], clients: usize, seconds: u64) -> Load {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let totals = Arc::new(Mutex::new((0usize, 0u64, 0usize)));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (latencies, totals) = (latencies.clone(), totals.clone());
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                let (mut mine, mut count, mut bytes, mut failures) = (Vec::new(), 0, 0u64, 0);
                let mut next = client;
                while Instant::now() < deadline {
                    let url = &urls[next % urls.len()];
                    next += clients;
                    let start = Instant::now();
                    match agent.get(url).set("Accept", ACCEPT_AS_STORED).call() {
                        Ok(response) => {
                            let mut body = Vec::new();
                            if std::io::Read::read_to_end(&mut response.into_reader(), &mut body).is_ok() {
                                mine.push(start.elapsed().as_secs_f64());
                                count += 1;
                                bytes += body.len() as u64;
                            } else {
                                failures += 1;
                            }
                        }
                        Err(_) => failures += 1,
                    }
                }
                latencies.lock().expect("latencies").extend(mine);
                let mut totals = totals.lock().expect("totals");
                totals.0 += count;
                totals.1 += bytes;
                totals.2 += failures;
            });
        }
    });
    let seconds = began.elapsed().as_secs_f64();
    let mut latencies = Arc::try_unwrap(latencies).map(|m| m.into_inner().unwrap_or_default()).unwrap_or_default();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let (requests, bytes, failures) = *totals.lock().expect("totals");
    Load { requests, bytes, seconds, latencies, failures }
}

/// Seconds until the fifth instance of a C-GET of the study arrives, from a fresh pool (a new
/// association and the SOP-class lookup, as a gateway's cold retrieval does).
fn fifth_instance_s(site: &testbed::SiteInfo, study: &str) -> anyhow::Result<f64> {
    use futures::StreamExt;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let target = pacs_adapter::RetrieveTarget::study(dicomweb_model::StudyInstanceUid::new(study)?);
        let began = Instant::now();
        let pool = pacs_adapter::AssociationPool::new(testbed::endpoints::endpoint(site, "FEDGWB")?);
        let mut instances = pacs_adapter::get(&pool, pacs_adapter::RetrieveRequest::new(target)).await?;
        for _ in 0..5 {
            instances.next().await.context("the study has fewer than five instances")??;
        }
        Ok(began.elapsed().as_secs_f64())
    })
}

fn gateway_config(dir: &Path, site: &testbed::OrthancSite, memory: &str) -> anyhow::Result<String> {
    let state = dir.join("state");
    let _ = std::fs::remove_dir_all(&state);
    Ok(format!(
        "[dimse]\nae_title = \"FEDGWB\"\nlisten = \"127.0.0.1:{}\"\n\
         [[sites]]\nid = \"site-1\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n\
         [deid]\nprofile = \"basic\"\nkey_file = \"{}/deid.key\"\nstate_dir = \"{}\"\n\
         [federation]\nstate_dir = \"{}\"\n\
         [cache]\nmemory = \"{memory}\"\n[auth]\nmode = \"none\"\n",
        testbed::free_port()?,
        site.ae_title,
        site.dicom_port,
        dir.display(),
        state.display(),
        dir.join("directory").display(),
    ))
}

/// Forgets what a gateway learnt of where studies live (`federation.state_dir`), so that the
/// next one starts cold: it must locate the study at the site again.
fn forget_locations(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join("directory"));
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli.runs.max(1);
    let options = TestbedOptions::orthanc_sites(cli.dir.clone(), 1, cli.slices);
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    let site = &testbed.orthanc[0];
    let ct = &testbed.info.data.ct;
    let instances = ct.instance_uids.len() as u64;
    let orthanc_study = format!("{}/dicom-web/studies/{}", site.http_url(), ct.study_uid);
    let getscu = testbed::dcmtk_tool("getscu")?;
    let getscu_out = cli.dir.join("getscu");
    if let Some(memory) = &cli.rss_only {
        let gateway = GatewayProcess::start(&cli.dir, "bench-cache", &gateway_config(&cli.dir, site, memory)?)?;
        let (study, _) = ct_urls(&gateway.url, instances)?;
        let url = format!("{}/studies/{study}", gateway.url);
        let (first, second) = (curl(&url, ACCEPT_AS_STORED)?, curl(&url, ACCEPT_AS_STORED)?);
        let report = format!(
            "WADO-RS of a {:.0} MB study ({instances} instances, de-identified) through a gateway with \
             `cache.memory = \"{memory}\"`, twice: {:.2} s and {:.2} s; gateway peak RSS {:.1} MiB.\n",
            ct.bytes as f64 / 1e6,
            first.1,
            second.1,
            gateway.peak_rss_mib()
        );
        println!("{report}");
        if let Some(out) = &cli.out {
            std::fs::write(out, &report)?;
        }
        return Ok(());
    }
    let config = gateway_config(&cli.dir, site, "1GiB")?;

    let (mut cold, mut warm, mut warm_metadata, mut getscu_s, mut orthanc, mut orthanc_metadata, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0f64);
    let mut fifth = Vec::new();
    let mut getscu_nodelay = Vec::new();
    // Orthanc's storage cache warmed once, as for every other benchmark here.
    curl(&orthanc_study, ACCEPT_AS_STORED)?;
    for round in 0..runs {
        // Cold means cold: a client's search through one gateway gives the study's pseudonym
        // (kept in the pseudonym map, as a client following a search link would use it); the
        // retrieval goes through a fresh gateway with no association open, an empty cache and
        // nothing remembered of where the study lives.
        let searching = GatewayProcess::start(&cli.dir, "bench-cache-search", &config)?;
        let (study, _) = ct_urls(&searching.url, instances)?;
        drop(searching);
        forget_locations(&cli.dir);
        let gateway = GatewayProcess::start(&cli.dir, "bench-cache", &config)?;
        let study_url = format!("{}/studies/{study}", gateway.url);
        cold.push(curl(&study_url, ACCEPT_AS_STORED)?);
        warm.push(curl(&study_url, ACCEPT_AS_STORED)?.1);
        // Metadata asked before: the second request is the warm one.
        curl(&format!("{study_url}/metadata"), "application/dicom+json")?;
        warm_metadata.push(curl(&format!("{study_url}/metadata"), "application/dicom+json")?.1);
        rss = rss.max(gateway.peak_rss_mib());
        drop(gateway);
        fifth.push(fifth_instance_s(&site.info(), &ct.study_uid)?);
        orthanc.push(curl(&orthanc_study, ACCEPT_AS_STORED)?.1);
        orthanc_metadata.push(curl(&format!("{orthanc_study}/metadata"), "application/dicom+json")?.1);
        // getscu as it comes, and with TCP_NODELAY=1 in its environment (DCMTK's switch for
        // Nagle's algorithm, which otherwise stalls each of its PDUs behind a delayed ACK): the
        // fair baseline is the second.
        for (nodelay, times) in [(false, &mut getscu_s), (true, &mut getscu_nodelay)] {
            let _ = std::fs::remove_dir_all(&getscu_out);
            std::fs::create_dir_all(&getscu_out)?;
            let mut command = Command::new(&getscu);
            if nodelay {
                command.env("TCP_NODELAY", "1");
            }
            let began = Instant::now();
            let status = command
                .args(["-S", "-aet", "GETSCU", "-aec", &site.ae_title, "127.0.0.1", &site.dicom_port.to_string()])
                .args(["-k", "QueryRetrieveLevel=STUDY", "-k", &format!("StudyInstanceUID={}", ct.study_uid), "-od"])
                .arg(&getscu_out)
                .status()?;
            if !status.success() {
                bail!("getscu failed");
            }
            times.push(began.elapsed().as_secs_f64());
        }
        eprintln!(
            "bench: round {}: cold {:?} (fifth instance of a C-GET {:.3}), warm {:.3}, metadata {:.3}, Orthanc {:.3} / metadata {:.3}, getscu {:.2}",
            round + 1,
            cold[round],
            fifth[round],
            warm[round],
            warm_metadata[round],
            orthanc[round],
            orthanc_metadata[round],
            getscu_s[round]
        );
    }

    // Load: single instances, warm, from the gateway and from Orthanc.
    let gateway = GatewayProcess::start(&cli.dir, "bench-cache", &config)?;
    let (study, gateway_urls) = ct_urls(&gateway.url, instances)?;
    curl(&format!("{}/studies/{study}", gateway.url), ACCEPT_AS_STORED)?;
    eprintln!("bench: load on the gateway, {} clients, {} s", cli.clients, cli.seconds);
    let through_gateway = load(&gateway_urls, cli.clients, cli.seconds);
    rss = rss.max(gateway.peak_rss_mib());
    drop(gateway);
    let orthanc_urls: Vec<String> = json(&format!("{}/dicom-web/studies/{}/instances", site.http_url(), ct.study_uid))?
        .as_array()
        .context("instances")?
        .iter()
        .map(|i| {
            format!(
                "{}/dicom-web/studies/{}/series/{}/instances/{}",
                site.http_url(),
                ct.study_uid,
                value(i, "0020000E"),
                value(i, "00080018")
            )
        })
        .collect();
    eprintln!("bench: load on Orthanc's DICOMweb, {} clients, {} s", cli.clients, cli.seconds);
    let direct = load(&orthanc_urls, cli.clients, cli.seconds);

    let column =
        |samples: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| median(&samples.iter().map(pick).collect::<Vec<_>>());
    let (cold_ttfb, cold_total) = (column(&cold, |t| t.0), column(&cold, |t| t.1));
    let spread = |values: &[f64]| {
        let (min, max) = testbed::min_max(values);
        format!("{min:.3}-{max:.3}")
    };
    let cold_spread = spread(&cold.iter().map(|t| t.1).collect::<Vec<_>>());
    let (getscu_spread, nodelay_spread) = (spread(&getscu_s), spread(&getscu_nodelay));
    let getscu_nodelay = median(&getscu_nodelay);
    let (warm, warm_metadata, orthanc, orthanc_metadata, getscu_s) =
        (median(&warm), median(&warm_metadata), median(&orthanc), median(&orthanc_metadata), median(&getscu_s));
    let fifth = median(&fifth);
    let load_row = |name: &str, l: &Load| {
        format!(
            "| {name} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} | {} |\n",
            l.requests as f64 / l.seconds,
            l.bytes as f64 / l.seconds / 1e6,
            percentile(&l.latencies, 0.5) * 1000.0,
            percentile(&l.latencies, 0.99) * 1000.0,
            l.latencies.last().copied().unwrap_or(f64::NAN) * 1000.0,
            l.failures
        )
    };
    let report = format!(
        "Study: synthetic CT, {instances} slices of 512x512x16 bit, {:.1} MB, one Orthanc site on loopback; \
         the gateway de-identifies (basic profile) and caches in memory; {runs} rounds, interleaved; medians \
         (min-max for the cold rows); every figure a whole client process (curl, getscu). Cold: a fresh gateway \
         each round, no association open, empty cache, nothing remembered of where the study lives (only the \
         pseudonyms of an earlier search, as a client following its link has them).\n\n\
         | what | gateway s | compared with | its s | ratio |\n|---|---|---|---|---|\n\
         | cold WADO-RS study (fresh gateway) | {cold_total:.3} ({cold_spread}) | DCMTK getscu, TCP_NODELAY=1 | {getscu_nodelay:.3} ({nodelay_spread}) | {:.3}x |\n\
         | cold WADO-RS study (fresh gateway) | {cold_total:.3} ({cold_spread}) | DCMTK getscu as it comes | {getscu_s:.3} ({getscu_spread}) | {:.3}x |\n\
         | cold WADO-RS study (fresh gateway) | {cold_total:.3} | Orthanc's own DICOMweb | {orthanc:.3} | {:.2}x |\n\
         | cold, time to first byte | {cold_ttfb:.3} | fifth instance of a C-GET from a fresh association | {fifth:.3} | {:.2}x |\n\
         | warm WADO-RS study | {warm:.3} | Orthanc's own DICOMweb | {orthanc:.3} | {:.2}x |\n\
         | warm study metadata | {warm_metadata:.3} | Orthanc's own DICOMweb metadata | {orthanc_metadata:.3} | {:.3}x ({:.0}x faster) |\n\n\
         Single instances (`transfer-syntax=*`), warm, {} concurrent clients for {} s each:\n\n\
         | server | requests/s | MB/s | p50 ms | p99 ms | max ms | failures |\n|---|---|---|---|---|---|---|\n{}{}\n\
         Gateway peak RSS over the whole run: {rss:.1} MiB.\n",
        ct.bytes as f64 / 1e6,
        cold_total / getscu_nodelay,
        cold_total / getscu_s,
        cold_total / orthanc,
        cold_ttfb / fifth,
        warm / orthanc,
        warm_metadata / orthanc_metadata,
        orthanc_metadata / warm_metadata,
        cli.clients,
        cli.seconds,
        load_row("dicomweb-gateway (from its cache)", &through_gateway),
        load_row("Orthanc's own DICOMweb", &direct),
    );
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
