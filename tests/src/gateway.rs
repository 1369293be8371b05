//! A `dicomweb-gateway serve` process for benchmarks: started from a configuration body (the
//! `[server]` section is written here), killed when dropped; and curl's timings of a request.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    /// `http://127.0.0.1:{port}/dicom-web`.
    pub url: String,
}

impl GatewayProcess {
    /// Starts the gateway next to the running executable with `[server]` on a free port and
    /// `config` (every other section), its configuration file under `dir`.
    pub fn start(dir: &Path, name: &str, config: &str) -> anyhow::Result<GatewayProcess> {
        let binary = std::env::current_exe()?.with_file_name("dicomweb-gateway");
        if !binary.is_file() {
            anyhow::bail!("{} is missing: cargo build --release -p gateway", binary.display());
        }
        let port = crate::free_port()?;
        let path = dir.join(format!("{name}.toml"));
        std::fs::create_dir_all(dir)?;
        std::fs::write(&path, format!("[server]\nlisten = \"127.0.0.1:{port}\"\n{config}"))?;
        // Its warnings go to a log beside its configuration, for when a benchmark fails.
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let child = Command::new(&binary)
            .args(["serve", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            // As deployed: no backtrace captured with every error a parser meets and handles
            // (dicom-rs captures one when these ask for it, which costs the cold path CPU).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        crate::wait_for_port(port, Duration::from_secs(20))?;
        Ok(GatewayProcess { child, url: format!("http://127.0.0.1:{port}/dicom-web") })
    }

    /// The CPU time the process's threads have used so far, in seconds (the scheduler's own
    /// count, in nanoseconds, summed over the threads alive now).
    pub fn cpu_seconds(&self) -> f64 {
        let tasks = std::fs::read_dir(format!("/proc/{}/task", self.child.id()));
        let nanoseconds: u64 = tasks
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
            .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .sum();
        nanoseconds as f64 / 1e9
    }

    /// The process's peak resident set so far, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmHWM:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .unwrap_or(0) as f64
            / 1024.0
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// curl's time to first byte and total time (seconds) for a GET of `url` with `accept`.
pub fn curl_times(url: &str, accept: &str) -> anyhow::Result<(f64, f64)> {
    let output = Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-w", "%{time_starttransfer} %{time_total}", "-H"])
        .arg(format!("Accept: {accept}"))
        .arg(url)
        .output()?;
    if !output.status.success() {
        anyhow::bail!("curl {url} failed");
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut times = text.split_whitespace().map(|t| t.parse::<f64>().unwrap_or(f64::NAN));
    Ok((times.next().unwrap_or(f64::NAN), times.next().unwrap_or(f64::NAN)))
}
