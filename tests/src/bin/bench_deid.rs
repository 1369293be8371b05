//! `bench-deid`: de-identification throughput on the synthetic 200-slice CT, the gateway's
//! profile against dicognito (PyPI) on the same files in one run. Ours runs in process on one
//! thread, each instance parsed, de-identified and written back as Part 10, as the gateway does
//! for every instance it returns; dicognito runs as its command line, Python start-up included.
//! Reports medians, the ratio, and peak memory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use dicom_encoding::TransferSyntaxIndex;
use dicomweb_deid::{Deidentifier, Options, ProjectKeys};
use testbed::median;

#[derive(Parser)]
struct Cli {
    /// Working directory (the generated study, dicognito's output).
    #[arg(long, default_value = ".testbed/bench-deid")]
    dir: PathBuf,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    #[arg(long, default_value_t = 200)]
    slices: u32,
    /// Also write the report here (Markdown).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// One pass of the gateway's de-identification over every file (what it does for each
/// instance it returns: the data set de-identified, a new file meta group); returns the bytes
/// written.
fn ours(deidentifier: &Deidentifier, files: &[Vec<u8>]) -> anyhow::Result<usize> {
    let ts_uid = "1.2.840.10008.1.2.1";
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(ts_uid).context("Explicit VR Little Endian")?;
    let mut written = 0;
    for bytes in files {
        let header = pacs_adapter::part10::parse_header(bytes)?;
        if header.transfer_syntax_uid != ts_uid {
            bail!("the benchmark expects Explicit VR Little Endian files");
        }
        let data_set = &bytes[header.data_set_offset..];
        let pseudonym = deidentifier.keys().uid(&header.sop_instance_uid);
        let meta = pacs_adapter::part10::wrap(&header.sop_class_uid, &pseudonym, ts_uid, "", &[]);
        match dicomweb_deid::instance::deidentify(deidentifier, data_set, ts, "bench", meta)? {
            dicomweb_deid::instance::Outcome::Deidentified { bytes, .. } => written += bytes.len(),
            dicomweb_deid::instance::Outcome::Withheld(why) => bail!("withheld: {}", why.reason),
        }
    }
    Ok(written)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let study_dir = cli.dir.join("ct");
    let _ = std::fs::remove_dir_all(&cli.dir);
    let study = testbed::synthetic::write_ct_study(&study_dir, cli.slices, 7)?;
    let files: Vec<Vec<u8>> = study.files.iter().map(std::fs::read).collect::<Result<_, _>>()?;
    let megabytes = files.iter().map(Vec::len).sum::<usize>() as f64 / 1e6;
    let deidentifier = Deidentifier::new(
        ProjectKeys::derive(b"benchmark secret of 32 bytes....", "bench"),
        Options::parse(&["retain-longitudinal-modified-dates"]).map_err(|p| anyhow::anyhow!(p.join("; ")))?,
    );
    let time = which_time()?;
    let (mut our_times, mut their_times, mut their_peak) = (Vec::new(), Vec::new(), 0.0f64);
    for round in 0..cli.runs {
        let began = Instant::now();
        ours(&deidentifier, &files)?;
        our_times.push(began.elapsed().as_secs_f64());
        let out = cli.dir.join("dicognito-out");
        let _ = std::fs::remove_dir_all(&out);
        let began = Instant::now();
        let run = Command::new(&time)
            .args(["-f", "%M"])
            .args(["python3", "-m", "dicognito", "--quiet", "--output-directory"])
            .arg(&out)
            .arg(&study_dir)
            .output()
            .context("running dicognito: install it with scripts/install-deps.sh")?;
        their_times.push(began.elapsed().as_secs_f64());
        if !run.status.success() {
            bail!("dicognito failed: {}", String::from_utf8_lossy(&run.stderr));
        }
        let kib: f64 = String::from_utf8_lossy(&run.stderr).lines().last().unwrap_or("0").trim().parse().unwrap_or(0.0);
        their_peak = their_peak.max(kib / 1024.0);
        let written = std::fs::read_dir(&out)?.count();
        if written != files.len() {
            bail!("dicognito wrote {written} files for {} inputs", files.len());
        }
        eprintln!("bench: round {} ours {:.3} s, dicognito {:.3} s", round + 1, our_times[round], their_times[round]);
    }
    let (ours_s, theirs_s) = (median(&our_times), median(&their_times));
    let n = files.len() as f64;
    let report = format!(
        "De-identification of the synthetic {n}-slice CT ({megabytes:.1} MB, 512x512 16-bit), median of {} \
         interleaved rounds: the gateway's profile (basic + retain-longitudinal-modified-dates; parse, de-identify, \
         write Part 10 as the gateway does; one thread, in process) against dicognito's command line (its default recipe; Python start-up \
         included).\n\n| tool | median s | instances/s | MB/s | peak RSS MiB |\n|---|---|---|---|---|\n\
         | dicomweb-deid | {ours_s:.3} | {:.0} | {:.0} | {:.1} (holds the {n} input files) |\n\
         | dicognito | {theirs_s:.3} | {:.0} | {:.1} | {their_peak:.1} |\n\nSpeed-up: {:.1}x.\n",
        cli.runs,
        n / ours_s,
        megabytes / ours_s,
        peak_rss_mib(),
        n / theirs_s,
        megabytes / theirs_s,
        theirs_s / ours_s,
    );
    println!("{report}");
    if let Some(out) = &cli.out {
        std::fs::write(out, &report)?;
    }
    Ok(())
}

fn which_time() -> anyhow::Result<PathBuf> {
    let time = PathBuf::from("/usr/bin/time");
    if time.is_file() {
        Ok(time)
    } else {
        bail!("/usr/bin/time is missing: install the Debian package time (scripts/install-deps.sh)")
    }
}
