//! `bench-load`: many clients on one gateway over three real Orthanc sites, a mix of
//! QIDO-RS (a search the cache may answer, one every STOW-RS makes it forget, one never asked
//! before), warm WADO-RS (instances of the test bed's CT, asked again and again), cold WADO-RS
//! (instances just stored, never asked before) and STOW-RS (a CT slice under new UIDs, to each
//! site in turn, addressed `/sites/{id}/studies`). `--rounds` repeats the run, each round with a
//! fresh gateway. It reports, per kind and status (the shed and failed ones too), the count,
//! requests/s (median and min-max over the rounds), p50 and p99 latency, and the gateway's peak
//! RSS; then checks that every instance stored is at its site (Orthanc's REST API). It fails when a status other than success or the
//! documented shedding (503 and 429 with Retry-After) is seen, when a stored instance is
//! missing, or when the peak RSS passes `--max-rss-mib`.
//!
//! `target/release/bench-load --clients 64 --seconds 60` starts its own test bed; with
//! `--use-running-testbed` it uses the one `TESTBED_INFO` names (the test suite's).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use dicom_dictionary_std::tags;
use dicom_object::open_file;
use testbed::gateway::GatewayProcess;
use testbed::info::{SiteKind, TestbedInfo};
use testbed::{Testbed, TestbedOptions};

#[derive(Parser)]
#[command(about = "A gateway under a mixed load of QIDO-RS, WADO-RS and STOW-RS over three real Orthanc sites")]
struct Cli {
    #[arg(long, default_value_t = 64)]
    clients: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Runs of `--seconds` each, a fresh gateway every round.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    #[arg(long, default_value = ".testbed/bench-load")]
    dir: PathBuf,
    /// Use the test bed `TESTBED_INFO` names instead of starting one.
    #[arg(long)]
    use_running_testbed: bool,
    /// Fail when the gateway's peak RSS passes this (MiB).
    #[arg(long)]
    max_rss_mib: Option<f64>,
    /// `[server]` settings for the gateway (TOML lines), e.g. `max_requests_in_flight = 32`.
    #[arg(long, default_value = "")]
    server: String,
    /// Write the report here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The CT study's instances: the search cache may answer.
    QidoInstances,
    /// `/studies?limit=20`: every STOW-RS makes the cache forget it.
    QidoStudies,
    /// A search no one asked before (studies up to a date of its own): every site is asked.
    QidoUncached,
    WarmWado,
    ColdWado,
    Stow,
}

/// The share of each kind: of every 10 requests, 3 QIDO (one of each), 3 warm WADO, 2 cold WADO,
/// 2 STOW.
const MIX: [Kind; 10] = [
    Kind::QidoInstances,
    Kind::WarmWado,
    Kind::Stow,
    Kind::QidoStudies,
    Kind::ColdWado,
    Kind::WarmWado,
    Kind::QidoUncached,
    Kind::Stow,
    Kind::WarmWado,
    Kind::ColdWado,
];

#[derive(Debug, Clone)]
struct Stored {
    site: usize,
    study: String,
    series: String,
    instance: String,
}

#[derive(Debug, Default)]
struct Tally {
    /// Latencies by kind and status (or transport failure).
    latencies: BTreeMap<(Kind, String), Vec<f64>>,
    stored: Vec<Stored>,
    /// Shed responses without Retry-After.
    shed_without_retry_after: usize,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// A date after every study's, different for every client and step: `StudyDate=-{date}` finds
/// the same studies each time in a search the gateway has not seen.
fn unasked_date(client: usize, step: usize) -> String {
    let n = client * 100_000 + step;
    format!("{:04}{:02}{:02}", 2100 + n % 7000, 1 + (n / 7000) % 12, 1 + (n / 84_000) % 28)
}

/// A CT slice under new UIDs, as Part-10 bytes.
fn instance_bytes(template: &dicom_object::DefaultDicomObject, study: &str, series: &str, instance: &str) -> Vec<u8> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    let mut obj = template.clone();
    for (tag, value) in
        [(tags::STUDY_INSTANCE_UID, study), (tags::SERIES_INSTANCE_UID, series), (tags::SOP_INSTANCE_UID, instance)]
    {
        obj.put(DataElement::new(tag, VR::UI, PrimitiveValue::from(value)));
    }
    obj.meta_mut().media_storage_sop_instance_uid = instance.to_owned();
    obj.meta_mut().update_information_group_length();
    let mut out = Vec::new();
    obj.write_all(&mut out).expect("writing to memory");
    out
}

fn multipart(part10: &[u8], boundary: &str) -> Vec<u8> {
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(part10);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    body
}

/// One request: its status (or the transport error) and, for STOW-RS, what was stored.
fn request(
    agent: &ureq::Agent,
    kind: Kind,
    url: &str,
    body: Option<&[u8]>,
) -> (String, bool, Option<serde_json::Value>) {
    let accept = match kind {
        Kind::QidoInstances | Kind::QidoStudies | Kind::QidoUncached | Kind::Stow => "application/dicom+json",
        Kind::WarmWado | Kind::ColdWado => "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    };
    let result = match body {
        Some(body) => agent
            .post(url)
            .set("Accept", accept)
            .set("Content-Type", "multipart/related; type=\"application/dicom\"; boundary=bench-load-part")
            .send_bytes(body),
        None => agent.get(url).set("Accept", accept).call(),
    };
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(code, response)) => {
            let retry_after = response.header("Retry-After").is_some();
            let _ = response.into_string();
            return (code.to_string(), retry_after, None);
        }
        Err(e) => return (format!("transport: {}", e.kind()), false, None),
    };
    let status = response.status().to_string();
    let mut text = Vec::new();
    if std::io::Read::read_to_end(&mut response.into_reader(), &mut text).is_err() {
        return ("body cut short".into(), false, None);
    }
    let json = if kind == Kind::Stow { serde_json::from_slice(&text).ok() } else { None };
    (status, false, json)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut own_testbed = None;
    let info = if cli.use_running_testbed {
        TestbedInfo::from_env()?
    } else {
        let options = TestbedOptions::orthanc_sites(cli.dir.join("testbed"), 3, 100);
        let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
        let info = testbed.info.clone();
        own_testbed = Some(testbed);
        info
    };
    let sites: Vec<_> = info.sites.iter().filter(|s| s.kind == SiteKind::Orthanc).take(3).cloned().collect();
    if sites.len() < 3 {
        bail!("the test bed has {} Orthanc sites; three are needed", sites.len());
    }
    let ct = &info.data.ct;
    let template = open_file(ct.files.first().context("the test bed wrote no CT file")?)?;
    let rounds =
        (0..cli.rounds.max(1)).map(|n| round(&cli, n, &sites, ct, &template)).collect::<anyhow::Result<Vec<_>>>()?;
    drop(own_testbed);
    report(&cli, &rounds)
}

/// What one round of the load found.
struct Round {
    seconds: f64,
    tally: Tally,
    rss: f64,
    missing: usize,
}

/// One round: a fresh gateway over `sites`, the clients for `--seconds`, then every stored
/// instance looked for at its site.
fn round(
    cli: &Cli,
    round: usize,
    sites: &[testbed::info::SiteInfo],
    ct: &testbed::synthetic::GeneratedStudy,
    template: &dicom_object::DefaultDicomObject,
) -> anyhow::Result<Round> {
    let mut config = format!(
        "{}\n[dimse]\nae_title = \"FEDGWL\"\nlisten = \"127.0.0.1:{}\"\n[auth]\nmode = \"none\"\n\
         [cache]\nmemory = \"256MiB\"\n",
        cli.server,
        testbed::free_port()?
    );
    for site in sites {
        config.push_str(&format!(
            "[[sites]]\nid = \"{}\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\nstore = true\n",
            site.id, site.ae_title, site.dicom_port
        ));
    }
    let dir = cli.dir.join(format!("round-{round}"));
    std::fs::create_dir_all(&dir)?;
    let gateway = GatewayProcess::start(&dir, "bench-load", &config)?;
    let base = gateway.url.clone();

    // The CT's instances, as the gateway lists them: the warm set (asked once first).
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
    let listed: serde_json::Value = serde_json::from_str(
        &agent
            .get(&format!("{base}/studies/{}/instances", ct.study_uid))
            .set("Accept", "application/dicom+json")
            .call()?
            .into_string()?,
    )?;
    let value = |item: &serde_json::Value, tag: &str| item[tag]["Value"][0].as_str().unwrap_or_default().to_owned();
    let warm: Vec<String> = listed
        .as_array()
        .context("the CT's instances")?
        .iter()
        .take(50)
        .map(|i| {
            format!(
                "{base}/studies/{}/series/{}/instances/{}",
                ct.study_uid,
                value(i, "0020000E"),
                value(i, "00080018")
            )
        })
        .collect();
    if warm.is_empty() {
        bail!("the gateway lists no instance of the CT study");
    }
    for url in &warm {
        request(&agent, Kind::WarmWado, url, None);
    }

    let run = std::process::id() * 100 + round as u32;
    let tally = Arc::new(Mutex::new(Tally::default()));
    eprintln!("bench: {} clients for {} s on {base}", cli.clients, cli.seconds);
    let began = Instant::now();
    let deadline = began + Duration::from_secs(cli.seconds);
    std::thread::scope(|scope| {
        for client in 0..cli.clients {
            let (tally, warm, sites, template, base) = (tally.clone(), &warm, &sites, &template, &base);
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(120)).build();
                let mut mine = Tally::default();
                let mut cold: Vec<Stored> = Vec::new();
                let mut step = client;
                while Instant::now() < deadline {
                    let kind = MIX[step % MIX.len()];
                    step += 1;
                    let (url, body, stow) = match kind {
                        Kind::QidoStudies => (format!("{base}/studies?limit=20"), None, None),
                        Kind::QidoInstances => (format!("{base}/studies/{}/instances", ct.study_uid), None, None),
                        Kind::QidoUncached => {
                            (format!("{base}/studies?StudyDate=-{}&limit=20", unasked_date(client, step)), None, None)
                        }
                        Kind::WarmWado => (warm[step % warm.len()].clone(), None, None),
                        Kind::ColdWado => match cold.pop() {
                            Some(s) => (
                                format!("{base}/studies/{}/series/{}/instances/{}", s.study, s.series, s.instance),
                                None,
                                None,
                            ),
                            None => continue,
                        },
                        Kind::Stow => {
                            let site = step % sites.len();
                            let label = format!("{run}-{client}-{step}");
                            let stored = Stored {
                                site,
                                study: testbed::synthetic::uid(u64::from(run), &format!("study-{site}")),
                                series: testbed::synthetic::uid(u64::from(run), &format!("series-{client}")),
                                instance: testbed::synthetic::uid(u64::from(run), &label),
                            };
                            let part10 = instance_bytes(template, &stored.study, &stored.series, &stored.instance);
                            let url = format!("{base}/sites/{}/studies", sites[site].id);
                            (url, Some(multipart(&part10, "bench-load-part")), Some(stored))
                        }
                    };
                    let start = Instant::now();
                    let (status, retry_after, json) = request(&agent, kind, &url, body.as_deref());
                    let elapsed = start.elapsed().as_secs_f64();
                    if (status == "503" || status == "429") && !retry_after {
                        mine.shed_without_retry_after += 1;
                    }
                    if status == "200" {
                        if let (Some(stored), Some(json)) = (stow, json) {
                            // Stored when the response's Referenced SOP Sequence names it.
                            if json["00081199"]["Value"].as_array().is_some_and(|items| {
                                items.iter().any(|i| i["00081155"]["Value"][0].as_str() == Some(&stored.instance))
                            }) {
                                mine.stored.push(stored.clone());
                                cold.push(stored);
                            }
                        }
                    }
                    mine.latencies.entry((kind, status)).or_default().push(elapsed);
                }
                let mut all = tally.lock().expect("tally");
                for (key, latencies) in mine.latencies {
                    all.latencies.entry(key).or_default().extend(latencies);
                }
                all.stored.extend(mine.stored);
                all.shed_without_retry_after += mine.shed_without_retry_after;
            });
        }
    });
    let seconds = began.elapsed().as_secs_f64();
    let rss = gateway.peak_rss_mib();
    let tally = Arc::try_unwrap(tally).map_err(|_| anyhow::anyhow!("clients still running"))?.into_inner()?;

    // Every instance stored is at its site.
    let mut missing = 0;
    for stored in &tally.stored {
        let site = &sites[stored.site];
        let client = testbed::orthanc::Client::new(site.http_url.as_deref().context("an Orthanc site's URL")?);
        if client.instance_id(&stored.instance).is_err() {
            missing += 1;
            eprintln!("bench: instance {} is not at {}", stored.instance, site.id);
        }
    }
    drop(gateway);
    eprintln!(
        "bench: round {} done: {} requests in {seconds:.1} s",
        round + 1,
        tally.latencies.values().map(Vec::len).sum::<usize>()
    );
    Ok(Round { seconds, tally, rss, missing })
}

fn report(cli: &Cli, rounds: &[Round]) -> anyhow::Result<()> {
    let mut latencies: BTreeMap<(Kind, String), Vec<f64>> = BTreeMap::new();
    for r in rounds {
        for (key, values) in &r.tally.latencies {
            latencies.entry(key.clone()).or_default().extend(values);
        }
    }
    let seconds: Vec<f64> = rounds.iter().map(|r| r.seconds).collect();
    let mut report = format!(
        "{} clients for {:.0} s, {} round(s), each with a fresh gateway over three Orthanc sites on loopback; of \
         every 10 requests 3 QIDO-RS (the CT study's instances, which the search cache may answer; `/studies?limit=20`, \
         which every STOW-RS makes it forget; a search no one asked before, studies up to a date of its own, which \
         goes to every site), 3 warm WADO-RS (one of 50 CT instances, 512x512x16 bit, as stored), 2 cold WADO-RS (an instance \
         the client stored and nobody asked for yet), 2 STOW-RS (one CT slice under new UIDs, to each site in turn). \
         Every response counted, by status; requests/s is the median (min-max) over the rounds, latencies over all \
         of them.\n\n\
         | kind | status | count | requests/s | p50 ms | p99 ms |\n|---|---|---|---|---|---|\n",
        cli.clients,
        testbed::median(&seconds),
        rounds.len(),
    );
    let mut unexpected = 0;
    for ((kind, status), values) in &mut latencies {
        values.sort_by(|a, b| a.total_cmp(b));
        let rates: Vec<f64> = rounds
            .iter()
            .map(|r| r.tally.latencies.get(&(*kind, status.clone())).map_or(0, Vec::len) as f64 / r.seconds)
            .collect();
        let (lo, hi) = testbed::min_max(&rates);
        let rate = if rounds.len() > 1 {
            format!("{:.1} ({lo:.1}-{hi:.1})", testbed::median(&rates))
        } else {
            format!("{:.1}", rates[0])
        };
        report.push_str(&format!(
            "| {kind:?} | {status} | {} | {rate} | {:.1} | {:.1} |\n",
            values.len(),
            percentile(values, 0.5) * 1000.0,
            percentile(values, 0.99) * 1000.0
        ));
        if !matches!(status.as_str(), "200" | "503" | "429") {
            unexpected += values.len();
        }
    }
    let stored: usize = rounds.iter().map(|r| r.tally.stored.len()).sum();
    let missing: usize = rounds.iter().map(|r| r.missing).sum();
    let rss: Vec<f64> = rounds.iter().map(|r| r.rss).collect();
    let (_, peak) = testbed::min_max(&rss);
    report.push_str(&format!(
        "\nInstances stored: {stored}, found at their site afterwards: {}. Gateway peak RSS: {peak:.1} MiB (the \
         highest of the rounds).\n",
        stored - missing
    ));
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    if unexpected > 0 {
        bail!("{unexpected} responses with a status other than 200 or the documented shedding (503, 429)");
    }
    let shed_without_retry_after: usize = rounds.iter().map(|r| r.tally.shed_without_retry_after).sum();
    if shed_without_retry_after > 0 {
        bail!("{shed_without_retry_after} shed responses without Retry-After");
    }
    if missing > 0 {
        bail!("{missing} stored instances are not at their site");
    }
    if rounds.iter().any(|r| r.tally.stored.is_empty()) {
        bail!("a round stored no instance");
    }
    if let Some(max) = cli.max_rss_mib {
        if peak > max {
            bail!("the gateway's peak RSS {peak:.1} MiB is over {max} MiB");
        }
    }
    Ok(())
}
