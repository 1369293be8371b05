//! `bench-edge`: the edge's own cold path, which every federated retrieval starts with. A whole
//! study out of a real Orthanc, measured side by side in one run, methods interleaved in each
//! round: the C-GET the gateway wraps (pacs-adapter alone, `bench-retrieve adapter`), a fresh
//! gateway de-identifying it (a new process and pseudonym store each round, so every pseudonym
//! is new), a fresh gateway passing it on as it comes, Orthanc's own DICOMweb, and, given its
//! binary, DICOM-RST (a Rust DICOMweb-to-DIMSE gateway built from its public source outside the
//! project; C-MOVE to its own storage SCP, no de-identification, no cache). Reports medians
//! with min-max, the ratios the targets are stated in, and peak memory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use testbed::gateway::{curl_times, GatewayProcess};
use testbed::{median, min_max, MoveDestination, Testbed, TestbedOptions};

const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";
/// DICOM-RST's storage SCP, the C-MOVE destination Orthanc knows it by.
const DICOM_RST_AE: &str = "DICOMRST";

#[derive(Parser)]
#[command(about = "The edge's cold path against the C-GET it wraps, Orthanc's DICOMweb and DICOM-RST")]
struct Cli {
    #[arg(long, default_value_t = 200)]
    slices: u32,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value = ".testbed/bench-edge")]
    dir: PathBuf,
    /// DICOM-RST's release binary (`cargo build --release` of its source); without it, its row
    /// is left out.
    #[arg(long)]
    dicom_rst: Option<PathBuf>,
    /// Write the report here too (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// DICOM-RST running with a configuration for the one Orthanc site; killed when dropped.
struct DicomRst {
    child: Child,
    url: String,
}

impl DicomRst {
    fn start(binary: &Path, dir: &Path, site: &testbed::OrthancSite, scp_port: u16) -> anyhow::Result<DicomRst> {
        let work = dir.join("dicom-rst");
        std::fs::create_dir_all(&work)?;
        let port = testbed::free_port()?;
        // Its configuration file is config.yaml in its working directory.
        std::fs::write(
            work.join("config.yaml"),
            format!(
                "telemetry:\n  level: WARN\nserver:\n  aet: {DICOM_RST_AE}\n  http:\n    interface: 127.0.0.1\n    \
                 port: {port}\n    max-upload-size: 50000000\n    request-timeout: 600000\n    graceful-shutdown: false\n  \
                 dimse:\n    - aet: {DICOM_RST_AE}\n      interface: 127.0.0.1\n      port: {scp_port}\n      \
                 uncompressed: false\naets:\n  - aet: {ae}\n    host: 127.0.0.1\n    port: {dicom}\n    backend: DIMSE\n    \
                 pool:\n      size: 16\n      timeout: 10000\n    qido-rs:\n      timeout: 10000\n    stow-rs:\n      \
                 timeout: 10000\n    wado-rs:\n      timeout: 600000\n      mode: concurrent\n      receivers:\n        \
                 - {DICOM_RST_AE}\n",
                ae = site.ae_title,
                dicom = site.dicom_port
            ),
        )?;
        let log = std::fs::File::create(work.join("dicom-rst.log"))?;
        let child = Command::new(binary).current_dir(&work).stdout(Stdio::null()).stderr(log).spawn()?;
        testbed::wait_for_port(port, Duration::from_secs(30))?;
        Ok(DicomRst { child, url: format!("http://127.0.0.1:{port}/aets/{}", site.ae_title) })
    }

    fn peak_rss_mib(&self) -> f64 {
        vm_hwm_mib(self.child.id())
    }
}

impl Drop for DicomRst {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_hwm_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0u64) as f64
        / 1024.0
}

/// The configuration of a gateway over the one site; `deid` a directory for its secret and
/// pseudonym store when it de-identifies.
fn gateway_config(site: &testbed::OrthancSite, deid: Option<&Path>) -> anyhow::Result<String> {
    let mut config = format!(
        "[dimse]\nae_title = \"FEDGWB\"\nlisten = \"127.0.0.1:{}\"\n\
         [[sites]]\nid = \"site-1\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n\
         [cache]\nsearch_ttl = \"0s\"\n[auth]\nmode = \"none\"\n",
        testbed::free_port()?,
        site.ae_title,
        site.dicom_port
    );
    if let Some(dir) = deid {
        config.push_str(&format!(
            "[deid]\nprofile = \"basic\"\nkey_file = \"{}\"\nstate_dir = \"{}\"\n",
            dir.join("deid.key").display(),
            dir.join("state").display()
        ));
    }
    Ok(config)
}

/// One cold retrieval of the study of `instances` instances through a gateway started for it
/// (its whole time as curl sees it), the gateway's peak RSS, and the CPU time the gateway used
/// for the retrieval. (Its tokio threads outlive the retrieval, so none of its CPU time is
/// lost with a thread that ended.) The study is found first by a
/// search, as a client finds it (de-identifying, its UID is a pseudonym only a search gives);
/// the search is not timed.
fn fresh_gateway(dir: &Path, name: &str, config: &str, instances: usize) -> anyhow::Result<Sample> {
    let _ = std::fs::remove_dir_all(dir.join(name));
    let gateway = GatewayProcess::start(&dir.join(name), name, config)?;
    let found: serde_json::Value = serde_json::from_str(
        &ureq::get(&format!("{}/studies?includefield=NumberOfStudyRelatedInstances", gateway.url))
            .call()?
            .into_string()?,
    )?;
    let study = found
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| s.pointer("/00201208/Value/0").and_then(|n| n.as_u64()) == Some(instances as u64))
        .and_then(|s| s.pointer("/0020000D/Value/0")?.as_str())
        .context("the study, by a search through the gateway")?
        .to_owned();
    let before = gateway.cpu_seconds();
    let (_, total) = curl_times(&format!("{}/studies/{study}", gateway.url), ACCEPT_AS_STORED)?;
    Ok(Sample { seconds: total, peak_mib: gateway.peak_rss_mib(), cpu: Some(gateway.cpu_seconds() - before) })
}

/// One method's measurement in one round.
struct Sample {
    seconds: f64,
    peak_mib: f64,
    /// The gateway's CPU time, for the gateway's own rows.
    cpu: Option<f64>,
}

impl Sample {
    fn of(seconds: f64, peak_mib: f64) -> Sample {
        Sample { seconds, peak_mib, cpu: None }
    }
}

/// The C-GET the gateway wraps: pacs-adapter alone, one association, timed inside its process
/// from opening the association to the last instance.
fn adapter_c_get(info: &Path) -> anyhow::Result<Sample> {
    let binary = std::env::current_exe()?.with_file_name("bench-retrieve");
    let output = Command::new(&binary)
        .args(["adapter", "--method", "get", "--parallel", "1", "--info"])
        .arg(info)
        .output()
        .with_context(|| format!("{} (cargo build --release -p testbed)", binary.display()))?;
    if !output.status.success() {
        bail!("bench-retrieve adapter failed: {}", String::from_utf8_lossy(&output.stderr));
    }
    let sample: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let seconds = sample["seconds"].as_f64().context("seconds")?;
    let rss = sample["peak_rss_kib"].as_f64().unwrap_or(0.0) / 1024.0;
    Ok(Sample::of(seconds, rss))
}

struct Row {
    name: &'static str,
    seconds: Vec<f64>,
    peak_mib: f64,
    cpu: Vec<f64>,
}

impl Row {
    fn new(name: &'static str) -> Row {
        Row { name, seconds: Vec::new(), peak_mib: 0.0, cpu: Vec::new() }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli.runs.max(1);
    let rst_port = testbed::free_port()?;
    let options = TestbedOptions {
        extra_destinations: vec![
            MoveDestination { ae_title: "FEDGWB".into(), port: testbed::free_port()? },
            MoveDestination { ae_title: DICOM_RST_AE.into(), port: rst_port },
        ],
        ..TestbedOptions::orthanc_sites(cli.dir.clone(), 1, cli.slices)
    };
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    let info_path = cli.dir.join("testbed.json");
    std::fs::write(&info_path, serde_json::to_vec(&testbed.info)?)?;
    let site = &testbed.orthanc[0];
    let study = testbed.info.data.ct.study_uid.clone();
    let direct = format!("{}/dicom-web/studies/{study}", site.http_url());
    let instances = testbed.info.data.ct.instance_uids.len();
    let gateways = cli.dir.join("gateways");
    let deid_config = gateway_config(site, Some(&gateways.join("deid")))?;
    let plain_config = gateway_config(site, None)?;
    let mut rows = vec![
        Row::new("pacs-adapter C-GET, 1 association (what the gateway wraps)"),
        Row::new("gateway, fresh, de-identifying"),
        Row::new("gateway, fresh, not de-identifying"),
        Row::new("Orthanc's own DICOMweb"),
    ];
    if cli.dicom_rst.is_some() {
        rows.push(Row::new("DICOM-RST (C-MOVE, no de-identification, no cache)"));
    }
    // Orthanc's storage cache warmed once, so the first method measured is not penalised.
    curl_times(&direct, ACCEPT_AS_STORED)?;
    for round in 0..=runs {
        let mut samples = vec![
            adapter_c_get(&info_path)?,
            fresh_gateway(&gateways, "deid", &deid_config, instances)?,
            fresh_gateway(&gateways, "plain", &plain_config, instances)?,
            Sample::of(curl_times(&direct, ACCEPT_AS_STORED)?.1, 0.0),
        ];
        if let Some(binary) = &cli.dicom_rst {
            // Started for its round, as the gateways are, and stopped after it (with its pool's
            // associations open at Orthanc): left running, the C-GET of the rounds after it took
            // 0.27-0.41 s where it took 0.2 s without it; started for each round, 0.22-0.26 s.
            let rst = DicomRst::start(binary, &cli.dir, site, rst_port)?;
            let (_, total) = curl_times(&format!("{}/studies/{study}", rst.url), ACCEPT_AS_STORED)?;
            samples.push(Sample::of(total, rst.peak_rss_mib()));
        }
        // Round 0 warms every path (DICOM-RST's associations, the page cache) and is not kept.
        eprintln!(
            "bench: round {round}: {:?}",
            samples.iter().map(|s| format!("{:.3}", s.seconds)).collect::<Vec<_>>()
        );
        if round == 0 {
            continue;
        }
        for (row, sample) in rows.iter_mut().zip(samples) {
            row.seconds.push(sample.seconds);
            row.peak_mib = row.peak_mib.max(sample.peak_mib);
            row.cpu.extend(sample.cpu);
        }
    }
    let c_get = median(&rows[0].seconds);
    let rst_median = rows.get(4).map(|r| median(&r.seconds));
    let mut report = format!(
        "Study: synthetic CT, {} slices, {:.1} MB, one Orthanc site on loopback; {runs} rounds after one \
         not kept, methods interleaved; median (min-max) wall time. The gateways are started for each round \
         (each with a new pseudonym store), the study found by a search (not timed) and retrieved, timed by curl; pacs-adapter inside its own process. A gateway's CPU is what its threads used \
         for the retrieval (median).\n\n\
         | method | median s | min-max s | peak RSS MiB | gateway CPU ms | x C-GET | x DICOM-RST |\n\
         |---|---|---|---|---|---|---|\n",
        cli.slices,
        testbed.info.data.ct.bytes as f64 / 1e6
    );
    for row in &rows {
        let m = median(&row.seconds);
        let (min, max) = min_max(&row.seconds);
        let peak = if row.peak_mib > 0.0 { format!("{:.1}", row.peak_mib) } else { "-".into() };
        let of_rst = rst_median.map(|r| format!("{:.2}", m / r)).unwrap_or_else(|| "-".into());
        let cpu = if row.cpu.is_empty() { "-".into() } else { format!("{:.0}", median(&row.cpu) * 1e3) };
        report.push_str(&format!(
            "| {} | {m:.3} | {min:.3}-{max:.3} | {peak} | {cpu} | {:.2} | {of_rst} |\n",
            row.name,
            m / c_get
        ));
    }
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
