//! `bench-federation`: QIDO-RS `/studies` over three Orthanc sites through `dicomweb-gateway
//! serve`, against each site's own C-FIND by DCMTK findscu on the same data, in one run.
//! Reports medians and the ratio to the slowest site.

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
    let mut phases: Vec<(Vec<f64>, Vec<Vec<f64>>)> = Vec::new();
    let mut peaks: Vec<f64> = Vec::new();
    for (name, remember) in [("remembering", "10m"), ("forgetting", "0s")] {
        let (gateway, url) = start(name, remember)?;
        // One query first: the gateway opens its associations and, when remembering, learns
        // where studies live.
        federated_run(&url)?;
        let mut federated = Vec::new();
        let mut per_site: Vec<Vec<f64>> = vec![Vec::new(); testbed.orthanc.len()];
        for round in 0..cli.runs {
            federated.push(federated_run(&url)?);
            for (i, site) in testbed.orthanc.iter().enumerate() {
                per_site[i].push(site_run(site)?);
            }
            eprintln!("bench: {name} round {} federated {:.3} s", round + 1, federated[round]);
        }
        peaks.push(gateway.peak_rss_mib());
        drop(gateway);
        phases.push((federated, per_site));
    }
    let studies = |site: &testbed::OrthancSite| -> anyhow::Result<usize> {
        let text = ureq::get(&format!("{}/studies", site.http_url())).call()?.into_string()?;
        Ok(serde_json::from_str::<Vec<serde_json::Value>>(&text).context("Orthanc /studies")?.len())
    };
    let mut report = format!(
        "QIDO-RS `/studies` over {} Orthanc sites through `dicomweb-gateway serve` (curl, merged, roll-ups computed \
         over the union), against each site's own C-FIND by DCMTK findscu (`TCP_NODELAY=1`, STUDY level), median \
         of {} interleaved rounds; first with the default configuration (where studies live remembered), then with \
         `remember = \"0s\"` (roll-ups recomputed by C-FIND every time).\n\n| query | studies | median s, remembering \
         | median s, not remembering |\n|---|---|---|---|\n",
        testbed.orthanc.len(),
        cli.runs
    );
    let mut slowest = [0.0f64; 2];
    for (i, site) in testbed.orthanc.iter().enumerate() {
        let medians: Vec<f64> = phases.iter().map(|(_, per_site)| median(&per_site[i])).collect();
        for (slowest, m) in slowest.iter_mut().zip(&medians) {
            *slowest = slowest.max(*m);
        }
        report.push_str(&format!(
            "| findscu, {} alone | {} | {:.3} | {:.3} |\n",
            site.id,
            studies(site)?,
            medians[0],
            medians[1]
        ));
    }
    let federated: Vec<f64> = phases.iter_mut().map(|(federated, _)| median(federated)).collect();
    report.push_str(&format!("| gateway, all sites merged | - | {:.3} | {:.3} |\n", federated[0], federated[1]));
    report.push_str(&format!("| gateway peak RSS, MiB | - | {:.1} | {:.1} |\n", peaks[0], peaks[1]));
    report.push_str(&format!(
        "\nFederated / slowest single site: {:.2}x remembering, {:.2}x not remembering.\n",
        federated[0] / slowest[0],
        federated[1] / slowest[1]
    ));
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    drop(testbed);
    Ok(())
}
