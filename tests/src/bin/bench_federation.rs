//! `bench-federation`: QIDO-RS `/studies` over three Orthanc sites through `dicomweb-gateway
//! serve`, against each site's own C-FIND on the same data, in one run, on two bases timed
//! the same way for both sides: whole client processes (curl against DCMTK findscu, each
//! starting afresh), and in-process requests on warm connections (an HTTP keep-alive connection
//! to the gateway against a C-FIND on an association kept open between rounds, as the gateway's
//! own pool keeps them). Reports medians, min-max and the ratio to the slowest site.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use testbed::gateway::GatewayProcess;
use testbed::median;
use testbed::{Testbed, TestbedOptions};

#[derive(Parser)]
#[command(about = "Federated QIDO-RS against each site's own C-FIND")]
struct Cli {
    #[arg(long, default_value_t = 10)]
    runs: usize,
    #[arg(long, default_value = ".testbed/bench-federation")]
    dir: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn timed(command: &mut Command) -> anyhow::Result<f64> {
    let began = Instant::now();
    let status = command.stdout(Stdio::null()).stderr(Stdio::null()).status()?;
    if !status.success() {
        bail!("{:?} failed", command.get_program());
    }
    Ok(began.elapsed().as_secs_f64())
}

/// Every study of a site by a STUDY-level C-FIND on a pooled association (opened by the first
/// call, reused by the next): the site's own answer time, without process or association
/// set-up.
async fn warm_find(pool: &pacs_adapter::AssociationPool) -> anyhow::Result<f64> {
    use dicom_core::{DataElement, PrimitiveValue, VR};
    use dicom_dictionary_std::tags;
    let identifier = dicom_object::InMemDicomObject::from_element_iter([
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::Empty),
        DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::Empty),
        DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::Empty),
    ]);
    let request = pacs_adapter::FindRequest {
        level: pacs_adapter::QueryLevel::Study,
        identifier,
        deadline: Some(Instant::now() + std::time::Duration::from_secs(30)),
    };
    let began = Instant::now();
    pacs_adapter::find(pool, request).await?.try_collect_all().await?;
    Ok(began.elapsed().as_secs_f64())
}

/// The gateway's `/studies` on a keep-alive connection, read whole.
fn warm_get(agent: &ureq::Agent, url: &str) -> anyhow::Result<f64> {
    let began = Instant::now();
    let mut body = Vec::new();
    std::io::Read::read_to_end(&mut agent.get(url).call()?.into_reader(), &mut body)?;
    Ok(began.elapsed().as_secs_f64())
}

/// `median (min-max)` in seconds.
fn spread(values: &[f64]) -> String {
    let (min, max) = testbed::min_max(values);
    format!("{:.3} ({min:.3}-{max:.3})", median(values))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = TestbedOptions { pydicom: true, ..TestbedOptions::orthanc_sites(cli.dir.clone(), 3, 20) };
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    // Two gateways over the same sites: one remembering where studies live (the default), one
    // that never does (`remember = "0s"`), so every query recomputes roll-ups over the union.
    // Neither reuses QIDO answers (`search_ttl = "0s"`): every query goes to the sites.
    let start = |name: &str, remember: &str| -> anyhow::Result<(GatewayProcess, String)> {
        let mut config = format!(
            "[dimse]\nae_title = \"FEDGWB\"\nlisten = \"127.0.0.1:{}\"\n[auth]\nmode = \"none\"\n\
             [federation]\nremember = \"{remember}\"\n[cache]\nsearch_ttl = \"0s\"\n",
            testbed::free_port()?
        );
        for site in &testbed.orthanc {
            config.push_str(&format!(
                "[[sites]]\nid = \"{}\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n",
                site.id, site.ae_title, site.dicom_port
            ));
        }
        let gateway = GatewayProcess::start(&cli.dir, name, &config)?;
        let url = format!("{}/studies", gateway.url);
        Ok((gateway, url))
    };
    let findscu = testbed::dcmtk_tool("findscu")?;
    let federated_run = |url: &str| timed(Command::new("curl").args(["-sf", "-o", "/dev/null", url]));
    let site_run = |site: &testbed::OrthancSite| {
        timed(
            Command::new(&findscu)
                .env("TCP_NODELAY", "1")
                .args(["-S", "-aec", &site.ae_title, "127.0.0.1", &site.dicom_port.to_string()])
                .args([
                    "-k",
                    "QueryRetrieveLevel=STUDY",
                    "-k",
                    "StudyInstanceUID",
                    "-k",
                    "PatientID",
                    "-k",
                    "StudyDate",
                ]),
        )
    };
    // One gateway at a time: each keeps up to `max_associations` idle associations per site,
    // and every association holds one of Orthanc's DICOM threads (8 here), so two at once would
    // leave findscu waiting for a thread. Each phase interleaves the gateway with findscu.
    let runtime = tokio::runtime::Runtime::new()?;
    let pools: Vec<pacs_adapter::AssociationPool> = testbed
        .orthanc
        .iter()
        .map(|site| {
            let endpoint = pacs_adapter::SiteEndpoint::new(
                dicomweb_model::SiteId::new(&site.id)?,
                dicomweb_model::AeTitle::new("BENCHFIND")?,
                dicomweb_model::AeTitle::new(&site.ae_title)?,
                format!("127.0.0.1:{}", site.dicom_port),
            );
            Ok(pacs_adapter::AssociationPool::new(endpoint))
        })
        .collect::<anyhow::Result<_>>()?;
    let agent = ureq::AgentBuilder::new().build();
    let mut phases: Vec<Phase> = Vec::new();
    let mut peaks: Vec<f64> = Vec::new();
    for (name, remember) in [("remembering", "10m"), ("forgetting", "0s")] {
        let (gateway, url) = start(name, remember)?;
        // One query first: the gateway opens its associations and, when remembering, learns
        // where studies live; the warm clients open theirs.
        federated_run(&url)?;
        warm_get(&agent, &url)?;
        for pool in &pools {
            runtime.block_on(warm_find(pool))?;
        }
        let mut phase = Phase {
            federated: Vec::new(),
            per_site: vec![Vec::new(); testbed.orthanc.len()],
            federated_warm: Vec::new(),
            per_site_warm: vec![Vec::new(); testbed.orthanc.len()],
        };
        for round in 0..cli.runs {
            phase.federated.push(federated_run(&url)?);
            phase.federated_warm.push(warm_get(&agent, &url)?);
            for (i, site) in testbed.orthanc.iter().enumerate() {
                phase.per_site[i].push(site_run(site)?);
                phase.per_site_warm[i].push(runtime.block_on(warm_find(&pools[i]))?);
            }
            eprintln!("bench: {name} round {} federated {:.3} s", round + 1, phase.federated[round]);
        }
        peaks.push(gateway.peak_rss_mib());
        drop(gateway);
        phases.push(phase);
    }
    // The pooled associations are released before the sites stop.
    drop(pools);
    let studies = |site: &testbed::OrthancSite| -> anyhow::Result<usize> {
        let text = ureq::get(&format!("{}/studies", site.http_url())).call()?.into_string()?;
        Ok(serde_json::from_str::<Vec<serde_json::Value>>(&text).context("Orthanc /studies")?.len())
    };
    let mut report = format!(
        "QIDO-RS `/studies` over {} Orthanc sites through `dicomweb-gateway serve` (merged, roll-ups computed over the \
         union), against each site's own STUDY-level C-FIND, {} interleaved rounds, median (min-max) s; first with the \
         default configuration (where studies live remembered), then with `remember = \"0s\"` (roll-ups recomputed by \
         C-FIND every time). Gateway peak RSS: {:.1} MiB remembering, {:.1} MiB not remembering.\n",
        testbed.orthanc.len(),
        cli.runs,
        peaks[0],
        peaks[1]
    );
    let bases: [(&str, &str, &str, Figures); 2] = [
        (
            "Whole client processes, each starting afresh: curl against the gateway, DCMTK findscu (`TCP_NODELAY=1`) \
             against a site (a new association every time).",
            "curl",
            "findscu",
            |p| (&p.federated, &p.per_site),
        ),
        (
            "In-process, warm connections on both sides: one HTTP keep-alive connection to the gateway, against one \
             association per site kept open between rounds (pacs-adapter's pool, as the gateway keeps its own).",
            "keep-alive GET",
            "pooled C-FIND",
            |p| (&p.federated_warm, &p.per_site_warm),
        ),
    ];
    for (basis, gateway_client, site_client, figures) in bases {
        report.push_str(&format!(
            "\n{basis}\n\n| query | studies | remembering | not remembering |\n|---|---|---|---|\n"
        ));
        let mut slowest = [0.0f64; 2];
        for (i, site) in testbed.orthanc.iter().enumerate() {
            let runs: Vec<&Vec<f64>> = phases.iter().map(|p| &figures(p).1[i]).collect();
            for (slowest, run) in slowest.iter_mut().zip(&runs) {
                *slowest = slowest.max(median(run));
            }
            report.push_str(&format!(
                "| {site_client}, {} alone | {} | {} | {} |\n",
                site.id,
                studies(site)?,
                spread(runs[0]),
                spread(runs[1])
            ));
        }
        let federated: Vec<&Vec<f64>> = phases.iter().map(|p| figures(p).0).collect();
        report.push_str(&format!(
            "| {gateway_client}, gateway, all sites merged | - | {} | {} |\n\nFederated / slowest single site \
             (medians): {:.2}x remembering, {:.2}x not remembering.\n",
            spread(federated[0]),
            spread(federated[1]),
            median(federated[0]) / slowest[0],
            median(federated[1]) / slowest[1]
        ));
    }
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    drop(testbed);
    Ok(())
}

/// Where a basis's figures are in a phase: the gateway's, and each site's.
type Figures = fn(&Phase) -> (&Vec<f64>, &Vec<Vec<f64>>);

/// One configuration's figures: the gateway's and each site's, on each basis.
struct Phase {
    federated: Vec<f64>,
    per_site: Vec<Vec<f64>>,
    federated_warm: Vec<f64>,
    per_site_warm: Vec<Vec<f64>>,
}
