//! `bench-deid`: de-identification throughput on the synthetic 200-slice CT, the gateway's
//! profile against dicognito (PyPI) on the same files in one run. Ours runs in process on one
//! thread, each instance parsed, de-identified and written back as Part 10, as the gateway does
//! for every instance it returns; dicognito runs as its command line, Python start-up included.
//! Beside the in-memory figure, the gateway's whole per-instance path: each file read from disk,
//! de-identified by the gateway's own `Privacy` (withholding rules, file meta group), its
//! pseudonyms recorded in the embedded pseudonym store (a new store each round, so every
//! pseudonym is new, as on a first retrieval; then once more with all of them known), and the
//! result written to disk, as dicognito reads and writes files. Reports medians with min-max,
//! the ratios, and peak memory.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use dicom_encoding::TransferSyntaxIndex;
use dicomweb_deid::{Deidentifier, Options, ProjectKeys};
use gateway::config::DeidConfig;
use gateway::privacy::{Privacy, Processed};
use testbed::{median, min_max};

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

/// One pass of the gateway's whole per-instance path over the files at `paths`: read, the
/// gateway's de-identification, pseudonyms recorded in its store, written to `out`.
fn gateway_path(privacy: &Privacy, paths: &[PathBuf], out: &std::path::Path) -> anyhow::Result<usize> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let mut written = 0;
    for (n, path) in paths.iter().enumerate() {
        let instance = pacs_adapter::RetrievedInstance::from_part10(std::fs::read(path)?.into())?;
        let (processed, entries) = privacy.instance(instance, "bench")?;
        let Processed::Deidentified(deidentified) = processed else { bail!("withheld: {}", path.display()) };
        privacy.record_blocking(entries).map_err(|e| anyhow::anyhow!("{e:?}"))?;
        std::fs::write(out.join(format!("{n}.dcm")), &deidentified.part10)?;
        written += deidentified.part10.len();
    }
    Ok(written)
}

/// The files at `paths` read and written to `out` unchanged: the I/O of `gateway_path` alone.
fn copy_only(paths: &[PathBuf], out: &std::path::Path) -> anyhow::Result<usize> {
    let _ = std::fs::remove_dir_all(out);
    std::fs::create_dir_all(out)?;
    let mut written = 0;
    for (n, path) in paths.iter().enumerate() {
        let bytes = std::fs::read(path)?;
        std::fs::write(out.join(format!("{n}.dcm")), &bytes)?;
        written += bytes.len();
    }
    Ok(written)
}

/// The gateway's de-identification of the project "bench" over a new embedded pseudonym store
/// in `state`.
fn new_privacy(dir: &std::path::Path, state: &str) -> anyhow::Result<Privacy> {
    let options = vec!["retain-longitudinal-modified-dates".to_owned()];
    let config = DeidConfig {
        options: options.clone(),
        key_file: dir.join("deid.key"),
        state_dir: dir.join(state),
        store: None,
        show_sites: false,
        burned_in: gateway::config::BurnedIn::Withhold,
        burned_in_rules: None,
    };
    Privacy::start(
        &Privacy::open_shared(&config)?,
        "bench",
        &options,
        None,
        gateway::config::DataSetLimitsConfig::DEFAULTS,
    )
}

fn spread(times: &[f64]) -> String {
    let (lo, hi) = min_max(times);
    format!("{:.3} ({lo:.3}-{hi:.3})", median(times))
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
    let (mut path_new, mut path_known, mut io_only) = (Vec::new(), Vec::new(), Vec::new());
    let out_dir = cli.dir.join("gateway-out");
    for round in 0..cli.runs {
        let began = Instant::now();
        ours(&deidentifier, &files)?;
        our_times.push(began.elapsed().as_secs_f64());
        let privacy = new_privacy(&cli.dir, &format!("state-{round}"))?;
        let began = Instant::now();
        gateway_path(&privacy, &study.files, &out_dir)?;
        path_new.push(began.elapsed().as_secs_f64());
        let began = Instant::now();
        gateway_path(&privacy, &study.files, &out_dir)?;
        path_known.push(began.elapsed().as_secs_f64());
        let began = Instant::now();
        copy_only(&study.files, &out_dir)?;
        io_only.push(began.elapsed().as_secs_f64());
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
        eprintln!(
            "bench: round {} ours {:.3} s, gateway path {:.3} s / {:.3} s, dicognito {:.3} s",
            round + 1,
            our_times[round],
            path_new[round],
            path_known[round],
            their_times[round]
        );
    }
    let (ours_s, theirs_s) = (median(&our_times), median(&their_times));
    let (new_s, known_s) = (median(&path_new), median(&path_known));
    let n = files.len() as f64;
    let row = |tool: &str, times: &[f64], seconds: f64| {
        format!("| {tool} | {} | {:.0} | {:.0} |", spread(times), n / seconds, megabytes / seconds)
    };
    let report = format!(
        "De-identification of the synthetic {n}-slice CT ({megabytes:.1} MB, 512x512 16-bit), median (min-max) of {} \
         interleaved rounds, basic profile + retain-longitudinal-modified-dates, one thread: the profile alone (files \
         already in memory; parse, de-identify, write Part 10), the gateway's whole per-instance path (file read, \
         the gateway's de-identification, pseudonyms recorded in the embedded store, file written; every pseudonym \
         new, then all known; beside it the same files read and written unchanged, its I/O alone), and dicognito's command line (its default recipe; files read and written; Python \
         start-up included).\n\n| tool | median s (min-max) | instances/s | MB/s |\n|---|---|---|---|\n{}\n{}\n{}\n{}\n{}\n\n\
         Speed-up over dicognito: {:.1}x the profile alone, {:.1}x the gateway's path with new pseudonyms, \
         {:.1}x with known ones. Peak RSS: this process {:.1} MiB (it holds the {n} input files), dicognito \
         {their_peak:.1} MiB.\n",
        cli.runs,
        row("dicomweb-deid, the profile in memory", &our_times, ours_s),
        row("gateway path, new pseudonyms", &path_new, new_s),
        row("gateway path, known pseudonyms", &path_known, known_s),
        row("files read and written, nothing else", &io_only, median(&io_only)),
        row("dicognito", &their_times, theirs_s),
        theirs_s / ours_s,
        theirs_s / new_s,
        theirs_s / known_s,
        peak_rss_mib(),
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
