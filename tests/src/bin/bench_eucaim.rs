//! `bench-eucaim`: the EUCAIM federated-search provider (docs/EUCAIM.md). Two measurements:
//!
//! - the query time over 1,000 and 100,000 indexed studies: a synthetic index written into a
//!   state directory (`gateway::benchmarking::synthetic_index`: sexes, ages, one to three series
//!   of five modalities, seven body parts, four manufacturers), served by a release gateway whose
//!   one site is unreachable (so the index is what was stored), the explorer's queries POSTed to
//!   the provider endpoint over HTTP; medians and 95th percentiles, and the gateway's peak RSS;
//! - the cost of reading a site into the index: a real Orthanc holding the test bed's studies
//!   and `--studies` more (one small instance each), read by a fresh gateway (a STUDY-level
//!   C-FIND, then a SERIES-level one per study), then again after a restart (the same studies:
//!   the STUDY-level C-FIND alone), as the gateway reports the reading's time in `/datasets`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use testbed::gateway::GatewayProcess;
use testbed::{median, Testbed, TestbedOptions};

const SECRET: &str = "bench-eucaim-search-secret-0123456789";

#[derive(Parser)]
#[command(about = "The EUCAIM provider's query time and the cost of indexing a site")]
struct Cli {
    /// Queries of each kind timed per index size.
    #[arg(long, default_value_t = 50)]
    runs: usize,
    /// Studies added to the Orthanc site for the indexing cost.
    #[arg(long, default_value_t = 1000)]
    studies: usize,
    #[arg(long, default_value = ".testbed/bench-eucaim")]
    dir: PathBuf,
    /// Write the report here too (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The explorer's queries (docs/EUCAIM.md), by name.
fn queries() -> Vec<(&'static str, serde_json::Value)> {
    use serde_json::json;
    let leaf = |key: &str, kind: &str, value: serde_json::Value| json!({"key": key, "type": kind, "value": value});
    let row = |criteria: Vec<Vec<serde_json::Value>>| {
        json!({"operand": "AND", "children": criteria.into_iter()
            .map(|values| json!({"operand": "OR", "children": values})).collect::<Vec<_>>()})
    };
    let tree = |rows: Vec<serde_json::Value>| json!({"operand": "OR", "children": rows});
    vec![
        ("empty (every dataset)", tree(vec![])),
        ("one criterion: MR", tree(vec![row(vec![vec![leaf("RID10311", "EQUALS", json!("RID10312"))]])])),
        (
            "the explorer's example: female, MR or CT, 40 to 70",
            tree(vec![row(vec![
                vec![leaf("SNOMEDCT263495000", "EQUALS", json!("SNOMEDCT248152002"))],
                vec![leaf("RID10311", "EQUALS", json!("RID10312")), leaf("RID10311", "EQUALS", json!("RID10321"))],
                vec![leaf("SNOMEDCT423493009", "BETWEEN", json!({"min": 40.0, "max": 70.0}))],
            ])]),
        ),
        (
            "three rows: MR of the prostate by Siemens; CT of the chest; 60 or older",
            tree(vec![
                row(vec![
                    vec![leaf("RID10311", "EQUALS", json!("RID10312"))],
                    vec![leaf("SNOMEDCT123037004", "EQUALS", json!("SNOMEDCT41216001"))],
                    vec![leaf("C25392", "EQUALS", json!("C200140"))],
                ]),
                row(vec![
                    vec![leaf("RID10311", "EQUALS", json!("RID10321"))],
                    vec![leaf("SNOMEDCT123037004", "EQUALS", json!("SNOMEDCT39607008"))],
                ]),
                row(vec![vec![leaf("SNOMEDCT423493009", "BETWEEN", json!({"min": 60.0, "max": 0.0}))]]),
            ]),
        ),
    ]
}

fn config(dir: &Path, site: &str, address: &str, ae_title: &str) -> anyhow::Result<String> {
    let secret = dir.join("search.secret");
    std::fs::write(&secret, SECRET)?;
    Ok(format!(
        "[dimse]\nae_title = \"BENCHEU\"\nlisten = \"127.0.0.1:{}\"\n\n\
         [[sites]]\nid = \"{site}\"\nae_title = \"{ae_title}\"\naddress = \"{address}\"\nretrieve = \"c-get\"\ntimeout = \"30s\"\n\n\
         [federation]\nstate_dir = \"{}\"\nmax_matches = 200000\n\n\
         [eucaim]\nsecret_file = \"{}\"\nrefresh = \"24h\"\n\n\
         [[datasets]]\nid = \"ds-bench\"\nname = \"Benchmark\"\nsites = [\"{site}\"]\n",
        testbed::free_port()?,
        dir.join("state").display(),
        secret.display()
    ))
}

/// The gateway's root URL (without the DICOMweb base path).
fn root(gateway: &GatewayProcess) -> String {
    gateway.url.trim_end_matches("/dicom-web").to_owned()
}

/// `/datasets`' entry of the benchmark's dataset.
fn dataset_view(gateway: &GatewayProcess) -> anyhow::Result<serde_json::Value> {
    let view: serde_json::Value =
        serde_json::from_str(&ureq::get(&format!("{}/datasets", root(gateway))).call()?.into_string()?)?;
    view["datasets"].get(0).cloned().context("no dataset in /datasets")
}

/// Waits until the dataset was read from its site; the reading's time as the gateway reports it.
fn indexed(gateway: &GatewayProcess, within: Duration) -> anyhow::Result<(f64, u64)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let view = dataset_view(gateway)?;
        if !view["indexed"].is_null() {
            return Ok((view["indexing_seconds"].as_f64().unwrap_or(0.0), view["studies"].as_u64().unwrap_or(0)));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    anyhow::bail!("the dataset was not indexed within {within:?}")
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// What one index size measured.
struct QueryTimes {
    /// Per query: the median and 95th percentile in milliseconds.
    times: Vec<(f64, f64)>,
    /// The studies the empty query counted.
    counted: u64,
    peak_rss_mib: f64,
}

/// Query times over a synthetic index of `studies` studies.
fn query_times(cli: &Cli, studies: usize) -> anyhow::Result<QueryTimes> {
    let dir = cli.dir.join(format!("index-{studies}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    gateway::benchmarking::synthetic_index(&dir.join("state"), "ds-bench", "bench-site", studies)?;
    // Nobody listens at the site's address: the index is what was stored.
    let nowhere = format!("127.0.0.1:{}", testbed::free_port()?);
    let gateway = GatewayProcess::start(&dir, "provider", &config(&dir, "bench-site", &nowhere, "NOWHERE")?)?;
    let url = format!("{}/eucaim/search", root(&gateway));
    let mut counted = 0;
    let mut times = Vec::new();
    for (name, tree) in queries() {
        let body = serde_json::json!({"ast": tree, "id": "bench__search__1"}).to_string();
        let mut seconds = Vec::with_capacity(cli.runs);
        for run in 0..cli.runs + 3 {
            let began = Instant::now();
            let answer = ureq::post(&url)
                .set("Content-Type", "application/json")
                .set("Authorization", &format!("Secret {SECRET}"))
                .send_string(&body)?
                .into_string()?;
            if run >= 3 {
                seconds.push(began.elapsed().as_secs_f64() * 1000.0);
            }
            if name.starts_with("empty") {
                let answer: serde_json::Value = serde_json::from_str(&answer)?;
                counted = answer["collections"][0]["studies_count"].as_u64().unwrap_or(0);
            }
        }
        times.push((median(&seconds), percentile(&seconds, 0.95)));
    }
    Ok(QueryTimes { times, counted, peak_rss_mib: gateway.peak_rss_mib() })
}

/// One small study (one 8x8 CT instance) for the indexing benchmark.
fn small_study(n: usize) -> anyhow::Result<Vec<u8>> {
    let uid = |level: u32| format!("2.25.{}{n:09}{level}", 8_000_000_000u64 + n as u64);
    let sop = uid(3);
    let text = |tag, vr, value: String| DataElement::new(tag, vr, PrimitiveValue::from(value));
    let mut object = InMemDicomObject::new_empty();
    for element in [
        text(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2".into()),
        text(tags::SOP_INSTANCE_UID, VR::UI, sop.clone()),
        text(tags::STUDY_INSTANCE_UID, VR::UI, uid(1)),
        text(tags::SERIES_INSTANCE_UID, VR::UI, uid(2)),
        text(tags::PATIENT_ID, VR::LO, format!("BENCH-{}", n / 2)),
        text(tags::PATIENT_NAME, VR::PN, format!("Bench^{}", n / 2)),
        text(tags::PATIENT_SEX, VR::CS, ["M", "F"][n % 2].into()),
        text(tags::PATIENT_AGE, VR::AS, format!("{:03}Y", 20 + n % 70)),
        text(tags::STUDY_DATE, VR::DA, "20240101".into()),
        text(tags::MODALITY, VR::CS, ["CT", "MR"][n % 2].into()),
        text(tags::BODY_PART_EXAMINED, VR::CS, ["CHEST", "PROSTATE", "HEAD"][n % 3].into()),
        text(tags::MANUFACTURER, VR::LO, ["SIEMENS", "GE MEDICAL SYSTEMS", "Philips"][n % 3].into()),
        text(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2".into()),
    ] {
        object.put(element);
    }
    for (tag, value) in [
        (tags::ROWS, 8u16),
        (tags::COLUMNS, 8),
        (tags::SAMPLES_PER_PIXEL, 1),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 12),
        (tags::HIGH_BIT, 11),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        object.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
    }
    object.put(DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(vec![0u8; 128])));
    let file = object.with_meta(
        FileMetaTableBuilder::new()
            .transfer_syntax("1.2.840.10008.1.2.1")
            .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
            .media_storage_sop_instance_uid(sop),
    )?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)?;
    Ok(bytes)
}

/// The cost of reading one Orthanc site into the index: cold (every study's series asked),
/// then after a restart (none changed); seconds as the gateway reports them, and the studies.
fn indexing_cost(cli: &Cli) -> anyhow::Result<(f64, f64, u64)> {
    let dir = cli.dir.join("indexing");
    let _ = std::fs::remove_dir_all(&dir);
    let testbed = Testbed::start(&TestbedOptions::orthanc_sites(dir.join("testbed"), 1, 2), &mut |step| {
        eprintln!("bench: {step}")
    })?;
    let site = &testbed.orthanc[0];
    eprintln!("bench: storing {} small studies in Orthanc", cli.studies);
    let instances = format!("http://127.0.0.1:{}/instances", site.http_port);
    for n in 0..cli.studies {
        ureq::post(&instances).send_bytes(&small_study(n)?)?;
    }
    let address = format!("127.0.0.1:{}", site.dicom_port);
    let config = config(&dir, "site-1", &address, &site.ae_title)?;
    let cold = {
        let gateway = GatewayProcess::start(&dir, "cold", &config)?;
        indexed(&gateway, Duration::from_secs(600))?
    };
    let warm = {
        let gateway = GatewayProcess::start(&dir, "warm", &config)?;
        indexed(&gateway, Duration::from_secs(600))?
    };
    Ok((cold.0, warm.0, cold.1))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut report = String::new();
    let names: Vec<&str> = queries().into_iter().map(|(name, _)| name).collect();
    let small = query_times(&cli, 1_000)?;
    let large = query_times(&cli, 100_000)?;
    report.push_str(&format!(
        "| query (POST over HTTP, {} runs) | 1,000 studies: median / p95 | 100,000 studies: median / p95 |\n| --- | --- | --- |\n",
        cli.runs
    ));
    for (i, name) in names.iter().enumerate() {
        report.push_str(&format!(
            "| {name} | {:.2} / {:.2} ms | {:.2} / {:.2} ms |\n",
            small.times[i].0, small.times[i].1, large.times[i].0, large.times[i].1
        ));
    }
    report.push_str(&format!(
        "\nStudies counted by the empty query: {} and {}. Gateway peak RSS: {:.0} MiB and {:.0} MiB.\n",
        small.counted, large.counted, small.peak_rss_mib, large.peak_rss_mib
    ));
    let (cold, warm, studies) = indexing_cost(&cli)?;
    report.push_str(&format!(
        "\n| reading one Orthanc site of {studies} studies into the index | seconds | per study |\n| --- | --- | --- |\n\
         | first reading (a STUDY-level C-FIND, then a SERIES-level one per study) | {cold:.2} s | {:.2} ms |\n\
         | after a restart, nothing changed (the STUDY-level C-FIND alone) | {warm:.2} s | {:.3} ms |\n",
        cold * 1000.0 / studies.max(1) as f64,
        warm * 1000.0 / studies.max(1) as f64,
    ));
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
