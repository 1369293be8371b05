//! `bench-distance`: retrieval and search across a long link, measured through a delay proxy
//! on loopback (crate::delay: a one-way delay and a rate), side by side in one run, rounds
//! interleaved, on the synthetic CT of one real Orthanc:
//!
//! - the link's own transfer time for the study (two one-way delays and its bytes at the rate);
//! - Orthanc's own DICOMweb over the link (one HTTP response);
//! - two tiers: a central gateway retrieving over the link from an edge gateway that
//!   de-identifies next to the Orthanc (DIMSE on loopback), cold (both fresh) and warm;
//! - one gateway speaking DIMSE over the link with the default configuration;
//! - QIDO-RS for every study through the central over 3 and over 20 sites (each an edge over
//!   its own link), against the slowest edge's own answer over its link: the edges each in
//!   front of an Orthanc of its own (as each hospital has its PACS), and all in front of one;
//! - the central gateway's peak RSS.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clap::Parser;
use testbed::delay::{self, Link};
use testbed::gateway::GatewayProcess;
use testbed::median;
use testbed::{Testbed, TestbedOptions};

const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

#[derive(Parser)]
#[command(about = "Retrieval and search across a long link (a delay proxy on loopback)")]
struct Cli {
    #[arg(long, default_value_t = 200)]
    slices: u32,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// One-way delay of the link, in milliseconds.
    #[arg(long, default_value_t = 10)]
    delay_ms: u64,
    /// The link's rate, in Mbit/s.
    #[arg(long, default_value_t = 1000.0)]
    mbit: f64,
    #[arg(long, default_value = ".testbed/bench-distance")]
    dir: PathBuf,
    /// Write the report here too.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// curl's total time (seconds) and bytes for a GET of `url` with `accept`.
fn fetch(url: &str, accept: &str) -> anyhow::Result<(f64, u64)> {
    let output = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-w", "%{time_total} %{size_download}", "-H"])
        .arg(format!("Accept: {accept}"))
        .arg(url)
        .output()?;
    if !output.status.success() {
        bail!("curl {url} failed");
    }
    let text = String::from_utf8(output.stdout)?;
    let mut fields = text.split_whitespace();
    let seconds = fields.next().context("curl's time")?.parse()?;
    let bytes = fields.next().context("curl's size")?.parse()?;
    Ok((seconds, bytes))
}

fn edge_config(dir: &Path, site: &testbed::orthanc::OrthancSite) -> anyhow::Result<String> {
    let state = dir.join("edge-state");
    let _ = std::fs::remove_dir_all(&state);
    Ok(format!(
        "[dimse]\nae_title = \"EDGE\"\nlisten = \"127.0.0.1:{}\"\n\
         [[sites]]\nid = \"pacs\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\n\
         [deid]\nprofile = \"basic\"\nkey_file = \"{}/edge-deid.key\"\nstate_dir = \"{}\"\n\
         [auth]\nmode = \"none\"\n",
        testbed::free_port()?,
        site.ae_title,
        site.dicom_port,
        dir.display(),
        state.display(),
    ))
}

fn central_config(edges: &[SocketAddr]) -> anyhow::Result<String> {
    let mut config = format!("[dimse]\nae_title = \"CENTRAL\"\nlisten = \"127.0.0.1:{}\"\n", testbed::free_port()?);
    for (n, edge) in edges.iter().enumerate() {
        config.push_str(&format!(
            "[[sites]]\nid = \"edge-{n}\"\nprotocol = \"dicomweb\"\nurl = \"http://{edge}/dicom-web\"\ndeidentified = true\n"
        ));
    }
    config.push_str("[cache]\nsearch_ttl = \"0s\"\n[auth]\nmode = \"none\"\n");
    Ok(config)
}

fn dimse_config(dimse: SocketAddr, site: &testbed::orthanc::OrthancSite) -> anyhow::Result<String> {
    Ok(format!(
        "[dimse]\nae_title = \"FAR\"\nlisten = \"127.0.0.1:{}\"\n\
         [[sites]]\nid = \"far\"\nae_title = \"{}\"\naddress = \"{dimse}\"\nretrieve = \"c-get\"\n\
         [auth]\nmode = \"none\"\n",
        testbed::free_port()?,
        site.ae_title,
    ))
}

/// Waits until the gateway has echoed its site (`/admin/sites` shows the echo).
fn wait_for_echo(url: &str) -> anyhow::Result<()> {
    let admin = url.replace("/dicom-web", "/admin/sites");
    for _ in 0..100 {
        let text = ureq::get(&admin).call()?.into_string()?;
        let json: serde_json::Value = serde_json::from_str(&text)?;
        if json["sites"].as_array().is_some_and(|sites| sites.iter().all(|s| s["last_echo"]["ok"] == true)) {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    bail!("the gateway did not echo its site")
}

fn port_of(url: &str) -> anyhow::Result<SocketAddr> {
    let authority = url.trim_start_matches("http://").split('/').next().context("a URL")?;
    Ok(authority.parse()?)
}

/// The study UIDs a QIDO-RS answer names.
fn studies(url: &str) -> anyhow::Result<Vec<String>> {
    let text = ureq::get(&format!("{url}/studies")).set("Accept", "application/dicom+json").call()?.into_string()?;
    let json: serde_json::Value = serde_json::from_str(&text)?;
    Ok(json
        .as_array()
        .context("an array")?
        .iter()
        .filter_map(|s| s["0020000D"]["Value"][0].as_str().map(str::to_owned))
        .collect())
}

/// Slices of the CT each Orthanc holds when every edge has its own (a search answers the
/// same studies whatever their size).
const SEARCH_SLICES: u32 = 4;

/// Medians of QIDO-RS for every study: through a central over the first 3 and over all 20
/// edges, the slowest of those edges' own answers over their links, and the slowest of the 20
/// asked at once (as the central asks them: on two cores, 20 edges answering together share
/// them).
struct Searches {
    own_3: f64,
    own_20: f64,
    at_once_20: f64,
    over_3: f64,
    over_20: f64,
}

impl Searches {
    /// The report's rows, the edges' PACS as `behind` says.
    fn rows(&self, behind: &str) -> String {
        let row = |what: &str, seconds: f64, own: f64| {
            format!("| {what}, {behind} | {seconds:.3} | {own:.3} | {:.2}x |\n", seconds / own)
        };
        [
            row("central over 3 edges", self.over_3, self.own_3),
            row("central over 20 edges", self.over_20, self.own_20),
            row("the 20 edges asked at once (slowest)", self.at_once_20, self.own_20),
        ]
        .concat()
    }
}

/// Starts an edge in front of each of `pacs` (20), each over a link of its own, and a central
/// over the first 3 and one over all; asks each edge and each central `runs * 3` times.
fn searches(
    dir: &Path,
    pacs: &[&testbed::orthanc::OrthancSite],
    runs: usize,
    over_link: &dyn Fn(SocketAddr) -> std::io::Result<SocketAddr>,
) -> anyhow::Result<Searches> {
    let mut edges = Vec::new();
    let mut links = Vec::new();
    for (n, site) in pacs.iter().enumerate() {
        let dir = dir.join(format!("edge-{n}"));
        let edge = GatewayProcess::start(&dir, "edge", &edge_config(&dir, site)?)?;
        links.push(over_link(port_of(&edge.url)?)?);
        edges.push(edge);
    }
    let central_3 = GatewayProcess::start(dir, "central-3", &central_config(&links[..3])?)?;
    let central_20 = GatewayProcess::start(dir, "central-20", &central_config(&links)?)?;
    let accept = "application/dicom+json";
    let (mut own, mut over_3, mut over_20) = (vec![Vec::new(); links.len()], Vec::new(), Vec::new());
    let mut at_once = Vec::new();
    let urls: Vec<String> = links.iter().map(|link| format!("http://{link}/dicom-web/studies")).collect();
    for _ in 0..(runs * 3) {
        for (own, url) in own.iter_mut().zip(&urls) {
            own.push(fetch(url, accept)?.0);
        }
        at_once.push(slowest_at_once(&urls, accept)?);
        over_3.push(fetch(&format!("{}/studies", central_3.url), accept)?.0);
        over_20.push(fetch(&format!("{}/studies", central_20.url), accept)?.0);
    }
    // The slowest edge's own answer, of the edges each central federates.
    let slowest = |edges: &[Vec<f64>]| edges.iter().map(|own| median(own)).fold(0.0, f64::max);
    Ok(Searches {
        own_3: slowest(&own[..3]),
        own_20: slowest(&own),
        at_once_20: median(&at_once),
        over_3: median(&over_3),
        over_20: median(&over_20),
    })
}

/// The time (seconds) of the slowest of GETs of `urls`, all started at once, each on a thread
/// (and a connection) of its own.
fn slowest_at_once(urls: &[String], accept: &str) -> anyhow::Result<f64> {
    let barrier = std::sync::Barrier::new(urls.len());
    std::thread::scope(|scope| {
        let asking: Vec<_> = urls
            .iter()
            .map(|url| {
                let barrier = &barrier;
                scope.spawn(move || -> anyhow::Result<f64> {
                    barrier.wait();
                    let start = std::time::Instant::now();
                    ureq::get(url).set("Accept", accept).call()?.into_string()?;
                    Ok(start.elapsed().as_secs_f64())
                })
            })
            .collect();
        asking.into_iter().try_fold(0.0, |slowest: f64, asked| {
            let seconds = asked.join().map_err(|_| anyhow::anyhow!("a search thread panicked"))??;
            Ok(slowest.max(seconds))
        })
    })
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runs = cli.runs.max(1);
    let link = Link::new(cli.delay_ms, cli.mbit);
    let runtime = tokio::runtime::Runtime::new()?;
    let over_link = |target: SocketAddr| runtime.block_on(delay::spawn(target, link));
    let options = TestbedOptions::orthanc_sites(cli.dir.clone(), 1, cli.slices);
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    let site = &testbed.orthanc[0];
    let ct = &testbed.info.data.ct;
    let web = over_link(format!("127.0.0.1:{}", site.http_port).parse()?)?;
    let dimse = over_link(format!("127.0.0.1:{}", site.dicom_port).parse()?)?;
    let orthanc_study = format!("http://{web}/dicom-web/studies/{}", ct.study_uid);

    let (mut orthanc_s, mut cold_s, mut warm_s, mut dimse_s) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut bytes = 0;
    let mut peak_rss: f64 = 0.0;
    for run in 1..=runs {
        eprintln!("bench: round {run} of {runs}");
        let (seconds, size) = fetch(&orthanc_study, ACCEPT_AS_STORED)?;
        orthanc_s.push(seconds);
        bytes = size;
        // Two tiers, both fresh: the edge next to the PACS, the central across the link.
        let edge = GatewayProcess::start(&cli.dir, "edge", &edge_config(&cli.dir, site)?)?;
        let edge_link = over_link(port_of(&edge.url)?)?;
        let central = GatewayProcess::start(&cli.dir, "central", &central_config(&[edge_link])?)?;
        // The study's pseudonym at the edge (a search, as a client finds it, before timing).
        let pseudonym = studies(&central.url)?
            .into_iter()
            .find(|uid| {
                let url = format!("{}/studies?StudyInstanceUID={uid}&includefield=00201208", central.url);
                ureq::get(&url)
                    .call()
                    .ok()
                    .and_then(|r| r.into_string().ok())
                    .is_some_and(|t| t.contains(&format!("\"Value\":[{}]", ct.instance_uids.len())))
            })
            .context("the CT through the central")?;
        let url = format!("{}/studies/{pseudonym}", central.url);
        cold_s.push(fetch(&url, ACCEPT_AS_STORED)?.0);
        warm_s.push(fetch(&url, ACCEPT_AS_STORED)?.0);
        peak_rss = peak_rss.max(central.peak_rss_mib());
        drop(central);
        drop(edge);
        // DIMSE across the link, the default configuration.
        let far = GatewayProcess::start(&cli.dir, "far", &dimse_config(dimse, site)?)?;
        // It chooses its associations by the site's round trip, as its first echo measures it.
        wait_for_echo(&far.url)?;
        dimse_s.push(fetch(&format!("{}/studies/{}", far.url, ct.study_uid), ACCEPT_AS_STORED)?.0);
    }

    // Search: the central over 3 and over 20 edges, each a gateway process of its own with
    // its own key (its studies are its own pseudonyms: the central's answer holds every
    // edge's), over a link of its own, against the slowest edge's own answer over its link;
    // the 20 edges first all in front of the one Orthanc, then each in front of its own (as
    // each hospital has its own PACS; a CT of a few slices each).
    let shared = searches(&cli.dir.join("shared"), &[site; 20], runs, &over_link)?;
    let own_options = TestbedOptions::orthanc_sites(cli.dir.join("search-sites"), 20, SEARCH_SLICES);
    let own_sites = Testbed::start(&own_options, &mut |step| eprintln!("bench: {step}"))?;
    let own_pacs: Vec<&testbed::orthanc::OrthancSite> = own_sites.orthanc.iter().collect();
    let own = searches(&cli.dir.join("own"), &own_pacs, runs, &over_link)?;
    drop(own_sites);

    let link_s = link.transfer_time(bytes).as_secs_f64() + link.one_way.as_secs_f64();
    let (orthanc, cold, warm, far) = (median(&orthanc_s), median(&cold_s), median(&warm_s), median(&dimse_s));
    let report = format!(
        "Link: {} ms each way, {} Mbit/s (delay proxy on loopback); the {}-slice CT, {:.1} MB as stored; \
         medians of {runs} rounds (searches: {} each).\n\n\
         | retrieval of the study over the link | s | x the link's transfer time ({link_s:.3} s) |\n\
         | --- | --- | --- |\n\
         | Orthanc's own DICOMweb (one HTTP response) | {orthanc:.3} | {:.2}x |\n\
         | central gateway over an edge gateway, cold (both fresh; the edge de-identifies) | {cold:.3} | {:.2}x |\n\
         | central gateway over an edge gateway, warm (cached at the central) | {warm:.3} | {:.2}x |\n\
         | one gateway, DIMSE C-GET over the link, default configuration | {far:.3} | {:.2}x |\n\n\
         | QIDO-RS, every study | s | the slowest edge's own answer over its link | x that |\n\
         | --- | --- | --- | --- |\n\
         {}{}\n\
         Central gateway peak RSS: {peak_rss:.0} MiB.\n",
        cli.delay_ms,
        cli.mbit,
        cli.slices,
        bytes as f64 / 1e6,
        runs * 3,
        orthanc / link_s,
        cold / link_s,
        warm / link_s,
        far / link_s,
        own.rows("each its own Orthanc"),
        shared.rows("one Orthanc behind them all"),
    );
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}
