//! `bench-replicas`: gateway replicas sharing the pseudonym map in PostgreSQL.
//!
//! - the added latency of a pseudonym lookup the replica has not cached: PostgreSQL (a
//!   throwaway cluster on loopback) against the embedded store, in process, each entry resolved
//!   once from a store opened afresh;
//! - warm WADO-RS instance throughput through HAProxy (examples/haproxy.cfg) with one replica in
//!   the backend and with two, both de-identifying, over one real Orthanc; `--rounds` runs of
//!   each, interleaved (one, two; two, one; ...), requests/s reported as median (min-max).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use gateway::privacy::pseudonyms::{ConnectionString, Embedded, Kind, Original, Postgres, PseudonymStore};
use testbed::gateway::GatewayProcess;
use testbed::{Testbed, TestbedOptions};

const ACCEPT_AS_STORED: &str = "multipart/related; type=\"application/dicom\"; transfer-syntax=*";

#[derive(Parser)]
#[command(about = "Gateway replicas behind HAProxy, the pseudonym map in PostgreSQL")]
struct Cli {
    #[arg(long, default_value_t = 100)]
    slices: u32,
    /// Entries resolved in the lookup benchmark.
    #[arg(long, default_value_t = 5000)]
    lookups: usize,
    #[arg(long, default_value_t = 16)]
    clients: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Runs of each backend (one replica, two), interleaved.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, default_value = ".testbed/bench-replicas")]
    dir: PathBuf,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// A throwaway PostgreSQL cluster (trust authentication on 127.0.0.1), stopped when dropped.
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    url: String,
}

fn run(program: &Path, args: &[&str], as_postgres: bool) -> anyhow::Result<()> {
    let mut command = if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    let out = command.args(args).output()?;
    if !out.status.success() {
        bail!("{} failed: {}", program.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

impl Cluster {
    fn start(dir: &Path) -> anyhow::Result<Cluster> {
        let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL is missing (Debian package postgresql)")?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|bin| bin.join("initdb").is_file())
            .collect();
        found.sort();
        let bin = found.pop().context("no initdb under /usr/lib/postgresql")?;
        let root = std::fs::read_to_string("/proc/self/status")?
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"));
        let home = dir.join("postgres");
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home)?;
        if root {
            let status = Command::new("chown").args(["postgres:postgres"]).arg(&home).status()?;
            if !status.success() {
                bail!("cannot give {} to the postgres user", home.display());
            }
        }
        let data = home.join("data");
        let port = testbed::free_port()?;
        let data_text = data.to_string_lossy().to_string();
        run(&bin.join("initdb"), &["-D", &data_text, "-U", "gw", "--auth=trust"], root)?;
        let options = format!("-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={}", home.display());
        let log = home.join("log").to_string_lossy().to_string();
        run(&bin.join("pg_ctl"), &["-D", &data_text, "-o", &options, "-l", &log, "-w", "start"], root)?;
        let port_text = port.to_string();
        run(&bin.join("createdb"), &["-h", "127.0.0.1", "-p", &port_text, "-U", "gw", "gateway"], false)?;
        Ok(Cluster { bin, data, as_postgres: root, url: format!("postgres://gw@127.0.0.1:{port}/gateway") })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let data = self.data.to_string_lossy().to_string();
        let _ = run(&self.bin.join("pg_ctl"), &["-D", &data, "-m", "fast", "-w", "stop"], self.as_postgres);
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Microseconds per uncached lookup (median, p99) of `count` entries: recorded through one
/// store, resolved once each through `fresh()` (a store opened anew, its memory empty).
fn lookups(
    count: usize,
    writer: &dyn PseudonymStore,
    fresh: &dyn Fn() -> anyhow::Result<Box<dyn PseudonymStore>>,
) -> anyhow::Result<(f64, f64)> {
    let entries = entries(count);
    for chunk in entries.chunks(500) {
        writer.record("bench", chunk.to_vec())?;
    }
    let store = fresh()?;
    let mut times = Vec::with_capacity(count);
    for (pseudonym, original) in &entries {
        let start = Instant::now();
        let found = store.resolve("bench", pseudonym)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        if found.as_ref() != Some(original) {
            bail!("{pseudonym} did not resolve");
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// `count` instance pseudonyms and their originals.
fn entries(count: usize) -> Vec<(String, Original)> {
    (0..count)
        .map(|i| {
            let original = Original { kind: Kind::Instance, value: format!("1.2.3.{i}"), issuer: None };
            (format!("2.25.{}", 1_000_000 + i), original)
        })
        .collect()
}

fn json(url: &str) -> anyhow::Result<serde_json::Value> {
    let text = ureq::get(url).set("Accept", "application/dicom+json").call()?.into_string()?;
    Ok(serde_json::from_str(&text)?)
}

fn value(result: &serde_json::Value, tag: &str) -> String {
    result[tag]["Value"][0].as_str().unwrap_or_default().to_owned()
}

/// The paths (under the DICOMweb base) of every instance of the CT study.
fn ct_paths(base: &str, instances: u64) -> anyhow::Result<Vec<String>> {
    let studies = json(&format!("{base}/studies?ModalitiesInStudy=CT&includefield=NumberOfStudyRelatedInstances"))?;
    let study = studies
        .as_array()
        .and_then(|all| all.iter().find(|s| s["00201208"]["Value"][0].as_u64() == Some(instances)))
        .map(|s| value(s, "0020000D"))
        .context("the CT study is not listed")?;
    let listed = json(&format!("{base}/studies/{study}/instances"))?;
    Ok(listed
        .as_array()
        .context("instances")?
        .iter()
        .map(|i| format!("/studies/{study}/series/{}/instances/{}", value(i, "0020000E"), value(i, "00080018")))
        .collect())
}

struct Load {
    requests: usize,
    seconds: f64,
    latencies: Vec<f64>,
    failures: usize,
}

/// `clients` threads fetching `urls` round-robin for `seconds`.
fn load(urls: &[String], clients: usize, seconds: u64) -> Load {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let totals = Arc::new(Mutex::new((0usize, 0usize)));
    let began = Instant::now();
    let deadline = began + Duration::from_secs(seconds);
    std::thread::scope(|scope| {
        for client in 0..clients {
            let (latencies, totals) = (latencies.clone(), totals.clone());
            scope.spawn(move || {
                let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(60)).build();
                let (mut mine, mut count, mut failures) = (Vec::new(), 0, 0);
                let mut next = client;
                while Instant::now() < deadline {
                    let url = &urls[next % urls.len()];
                    next += clients;
                    let start = Instant::now();
                    let body = agent.get(url).set("Accept", ACCEPT_AS_STORED).call().ok().and_then(|r| {
                        let mut body = Vec::new();
                        std::io::Read::read_to_end(&mut r.into_reader(), &mut body).ok().map(|_| body)
                    });
                    match body {
                        Some(body) if body.len() > 1000 => {
                            mine.push(start.elapsed().as_secs_f64());
                            count += 1;
                        }
                        _ => failures += 1,
                    }
                }
                latencies.lock().expect("latencies").extend(mine);
                let mut totals = totals.lock().expect("totals");
                totals.0 += count;
                totals.1 += failures;
            });
        }
    });
    let seconds = began.elapsed().as_secs_f64();
    let mut latencies = Arc::try_unwrap(latencies).map(|m| m.into_inner().unwrap_or_default()).unwrap_or_default();
    latencies.sort_by(|a, b| a.total_cmp(b));
    let (requests, failures) = *totals.lock().expect("totals");
    Load { requests, seconds, latencies, failures }
}

/// HAProxy with examples/haproxy.cfg, its ports replaced, the backend holding `replicas`.
struct Balancer {
    child: Child,
    url: String,
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn balancer(dir: &Path, replicas: &[&GatewayProcess]) -> anyhow::Result<Balancer> {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/haproxy.cfg");
    let text = std::fs::read_to_string(&example)?;
    let port = testbed::free_port()?;
    let mut config = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("server replica-") {
            continue;
        }
        config.push_str(&line.replace("127.0.0.1:8080", &format!("127.0.0.1:{port}")));
        config.push('\n');
    }
    for (n, replica) in replicas.iter().enumerate() {
        let address = replica.url.trim_start_matches("http://").trim_end_matches("/dicom-web");
        config.push_str(&format!("    server replica-{n} {address} check\n"));
    }
    let path = dir.join("haproxy.cfg");
    std::fs::write(&path, config)?;
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("HAProxy is missing (Debian package haproxy)")?;
    testbed::wait_for_port(port, Duration::from_secs(10))?;
    // Health checks pass (rise 2, every second) before load.
    std::thread::sleep(Duration::from_secs(3));
    Ok(Balancer { child, url: format!("http://127.0.0.1:{port}/dicom-web") })
}

fn replica_config(dir: &Path, site: &testbed::OrthancSite, store: &str, name: &str) -> anyhow::Result<String> {
    Ok(format!(
        "replica_id = \"{name}\"\n[dimse]\nae_title = \"BENCHREP\"\nlisten = \"127.0.0.1:{}\"\n\
         [auth]\nmode = \"none\"\n[cache]\nmemory = \"1GiB\"\n\
         [[sites]]\nid = \"site-1\"\nae_title = \"{}\"\naddress = \"127.0.0.1:{}\"\nretrieve = \"c-get\"\ntimeout = \"30s\"\n\
         [deid]\nprofile = \"basic\"\nkey_file = \"{}/deid.key\"\nstate_dir = \"{}/state-{name}\"\nstore = \"{store}\"\n",
        testbed::free_port()?,
        site.info().ae_title,
        site.info().dicom_port,
        dir.display(),
        dir.display(),
    ))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    std::fs::create_dir_all(&cli.dir)?;
    let dir = std::fs::canonicalize(&cli.dir)?;
    let cluster = Cluster::start(&dir)?;
    let url = ConnectionString::parse(&cluster.url).map_err(|e| anyhow::anyhow!(e))?;

    eprintln!("bench: lookups");
    let embedded_dir = dir.join("embedded");
    let _ = std::fs::remove_dir_all(&embedded_dir);
    {
        // redb opens a file once per process: the writer is closed before the lookups.
        let writer = Embedded::open(&embedded_dir)?;
        for chunk in entries(cli.lookups).chunks(500) {
            writer.record("bench", chunk.to_vec())?;
        }
    }
    let (embedded_median, embedded_p99) = embedded_lookups(&embedded_dir, cli.lookups)?;
    let postgres_writer = Postgres::open(&url)?;
    let (postgres_median, postgres_p99) =
        lookups(cli.lookups, &postgres_writer, &|| Ok(Box::new(Postgres::open(&url)?) as Box<dyn PseudonymStore>))?;
    drop(postgres_writer);

    eprintln!("bench: test bed");
    let options = TestbedOptions::orthanc_sites(dir.join("testbed"), 1, cli.slices);
    let testbed = Testbed::start(&options, &mut |step| eprintln!("bench: {step}"))?;
    let site = &testbed.orthanc[0];
    let instances = testbed.info.data.ct.instance_uids.len() as u64;
    let a = GatewayProcess::start(&dir, "replica-a", &replica_config(&dir, site, &cluster.url, "replica-a")?)?;
    let b = GatewayProcess::start(&dir, "replica-b", &replica_config(&dir, site, &cluster.url, "replica-b")?)?;
    let paths = ct_paths(&a.url, instances)?;
    // Warm: every instance once through each replica (its cache and its pseudonym memory).
    for replica in [&a, &b] {
        let urls: Vec<String> = paths.iter().map(|p| format!("{}{p}", replica.url)).collect();
        for url in &urls {
            ureq::get(url).set("Accept", ACCEPT_AS_STORED).call()?.into_reader().read_to_end(&mut Vec::new())?;
        }
    }
    // Interleaved: one replica then two, then two then one, ..., so that a drift of the machine
    // over the run falls on both alike.
    let mut runs: [Vec<Load>; 2] = [Vec::new(), Vec::new()];
    for round in 0..cli.rounds.max(1) {
        let order = if round % 2 == 0 { [1, 2] } else { [2, 1] };
        for count in order {
            eprintln!("bench: round {}, {count} replica(s)", round + 1);
            let replicas = if count == 1 { vec![&a] } else { vec![&a, &b] };
            let front = balancer(&dir, &replicas)?;
            let urls: Vec<String> = paths.iter().map(|p| format!("{}{p}", front.url)).collect();
            runs[count - 1].push(load(&urls, cli.clients, cli.seconds));
        }
    }
    let rate = |load: &Load| load.requests as f64 / load.seconds;
    let mut report = String::new();
    for (n, loads) in runs.iter().enumerate() {
        let rates: Vec<f64> = loads.iter().map(rate).collect();
        let (lo, hi) = testbed::min_max(&rates);
        let mut latencies: Vec<f64> = loads.iter().flat_map(|l| l.latencies.iter().copied()).collect();
        latencies.sort_by(|a, b| a.total_cmp(b));
        report.push_str(&format!(
            "| {} | {:.0} ({lo:.0}-{hi:.0}) | {:.1} | {:.1} | {} |\n",
            n + 1,
            testbed::median(&rates),
            percentile(&latencies, 0.5) * 1e3,
            percentile(&latencies, 0.99) * 1e3,
            loads.iter().map(|l| l.failures).sum::<usize>()
        ));
    }
    let ratios: Vec<f64> = runs[0].iter().zip(&runs[1]).map(|(one, two)| rate(two) / rate(one)).collect();
    let (ratio_lo, ratio_hi) = testbed::min_max(&ratios);
    let text = format!(
        "Pseudonym lookup not cached by the replica ({} entries, each resolved once from a store opened anew):\n\n\
         | store | median | p99 |\n|---|---|---|\n| embedded (redb) | {embedded_median:.1} µs | {embedded_p99:.1} µs |\n\
         | PostgreSQL (loopback) | {postgres_median:.1} µs | {postgres_p99:.1} µs |\n\n\
         Warm WADO-RS of single instances ({} of a {}-slice CT, de-identified, every one cached by each replica) \
         through HAProxy, {} clients for {} s, {} interleaved rounds of each backend (requests/s median (min-max) \
         over the rounds; latencies over all of them):\n\n\
         | replicas | requests/s | median ms | p99 ms | failures |\n|---|---|---|---|---|\n{report}\n\
         Two replicas against one: {:.2}x (round by round {ratio_lo:.2}-{ratio_hi:.2}x) on {} cores.\n",
        cli.lookups,
        paths.len(),
        cli.slices,
        cli.clients,
        cli.seconds,
        cli.rounds.max(1),
        testbed::median(&ratios),
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    );
    println!("{text}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &text)?;
    }
    drop((a, b, testbed));
    drop(cluster);
    Ok(())
}

/// The embedded store's uncached lookups: the entries were written and the store closed; it is
/// opened again and each entry resolved once.
fn embedded_lookups(dir: &Path, count: usize) -> anyhow::Result<(f64, f64)> {
    let store = Embedded::open(dir)?;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let pseudonym = format!("2.25.{}", 1_000_000 + i);
        let start = Instant::now();
        let found = store.resolve("bench", &pseudonym)?;
        times.push(start.elapsed().as_secs_f64() * 1e6);
        if found.is_none() {
            bail!("{pseudonym} did not resolve");
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}
