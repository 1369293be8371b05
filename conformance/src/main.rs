//! `dicomweb-conformance`: the command line of the conformance tool.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use conformance::dimse::{self, DimseTarget};
use conformance::web::{self, WebTarget};
use conformance::{report, Check, Outcome};
use dicomweb_model::AeTitle;

#[derive(Parser)]
#[command(
    name = "dicomweb-conformance",
    version,
    about = "Conformance checks for DICOMweb servers and PACS joining a federation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where to write the report besides the table on standard output.
#[derive(Args)]
struct Outputs {
    /// Also write the report as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write the report as JUnit XML to FILE (a test case per check).
    #[arg(long, value_name = "FILE")]
    junit: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check a DICOMweb server: QIDO-RS, WADO-RS, STOW-RS and HTTP behaviour (PS3.18).
    Web {
        /// The service root, e.g. http://127.0.0.1:8080/dicom-web
        #[arg(long)]
        url: String,
        /// Bearer token sent with every request.
        #[arg(long)]
        token: Option<String>,
        /// Check this study (StudyInstanceUID) instead of storing the tool's own.
        #[arg(long)]
        study: Option<String>,
        /// Deadline of each request.
        #[arg(long, default_value = "60s")]
        timeout: humantime::Duration,
        #[command(flatten)]
        outputs: Outputs,
    },
    /// Check a PACS's DIMSE services as a federation gateway uses them.
    Dimse {
        /// Called AE title of the PACS.
        #[arg(long)]
        ae: String,
        /// HOST:PORT of the PACS.
        #[arg(long)]
        address: String,
        /// Our calling AE title (also the C-MOVE destination).
        #[arg(long, default_value = "FEDGW")]
        calling_ae: String,
        /// Where to receive C-MOVE sub-operations (HOST:PORT); the PACS must know the calling
        /// AE there. Without it the C-MOVE check does not apply.
        #[arg(long)]
        move_listen: Option<String>,
        /// Deadline of each step.
        #[arg(long, default_value = "15s")]
        timeout: humantime::Duration,
        /// Associations to open at once in the concurrency check.
        #[arg(long, default_value_t = 4)]
        associations: usize,
        #[command(flatten)]
        outputs: Outputs,
    },
}

fn usage_error(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Writes the JSON and JUnit files asked for; the table goes to standard output.
fn write_outputs(outputs: &Outputs, command: &str, target: &str, checks: &[Check]) -> Result<(), String> {
    if let Some(path) = &outputs.json {
        std::fs::write(path, report::json(command, target, checks))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &outputs.junit {
        std::fs::write(path, report::junit(command, checks))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

fn exit_status(checks: &[Check]) -> ExitCode {
    if checks.iter().any(|c| c.outcome == Outcome::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| usage_error(format!("cannot start the async runtime: {e}")))
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Web { url, token, study, timeout, outputs } => run_web(url, token, study, timeout.into(), outputs),
        Command::Dimse { ae, address, calling_ae, move_listen, timeout, associations, outputs } => {
            run_dimse(ae, address, calling_ae, move_listen, timeout.into(), associations, outputs)
        }
    }
}

fn run_web(url: String, token: Option<String>, study: Option<String>, timeout: Duration, outputs: Outputs) -> ExitCode {
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return usage_error(format!("--url must be an http:// or https:// URL, not {url:?}"));
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let target = WebTarget { url: url.clone(), token, study, timeout };
    let mut started = 0;
    let result = runtime.block_on(web::run(&target, &mut |step| {
        started += 1;
        eprintln!("[{started}] {step}");
    }));
    let checks = match result {
        Ok(checks) => checks,
        Err(e) => return usage_error(e),
    };
    print!("{}", report::table(&checks));
    if let Err(e) = write_outputs(&outputs, "web", &url, &checks) {
        return usage_error(e);
    }
    exit_status(&checks)
}

fn run_dimse(
    ae: String,
    address: String,
    calling_ae: String,
    move_listen: Option<String>,
    timeout: Duration,
    associations: usize,
    outputs: Outputs,
) -> ExitCode {
    let (ae_title, calling_ae_title) = match (AeTitle::new(&ae), AeTitle::new(&calling_ae)) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let target = DimseTarget { ae_title, address, calling_ae_title, move_listen, timeout, associations };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    let result = runtime.block_on(dimse::run(&target, &mut |step| eprintln!("checking {step}")));
    print!("{}", report::table(&result.checks));
    match result.recommended_retrieve {
        Some(mode) => println!("configure this site with: retrieve = \"{mode}\""),
        None => println!("neither C-GET nor C-MOVE works: this PACS cannot serve retrievals to the gateway"),
    }
    if let Err(e) = write_outputs(&outputs, "dimse", &target.address, &result.checks) {
        return usage_error(e);
    }
    exit_status(&result.checks)
}
