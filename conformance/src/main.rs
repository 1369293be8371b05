//! `dicomweb-conformance`: the command line of the conformance tool.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use conformance::dimse::{run, DimseTarget};
use conformance::{report, Outcome};
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

#[derive(Subcommand)]
enum Command {
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
    },
}

fn main() -> ExitCode {
    let Command::Dimse { ae, address, calling_ae, move_listen, timeout, associations } = Cli::parse().command;
    let (ae_title, calling_ae_title) = match (AeTitle::new(&ae), AeTitle::new(&calling_ae)) {
        (Ok(a), Ok(c)) => (a, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let target = DimseTarget {
        ae_title,
        address,
        calling_ae_title,
        move_listen,
        timeout: Duration::from(timeout),
        associations,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(run(&target, &mut |step| eprintln!("checking {step}")));
    print!("{}", report::table(&result.checks));
    match result.recommended_retrieve {
        Some(mode) => println!("configure this site with: retrieve = \"{mode}\""),
        None => println!("neither C-GET nor C-MOVE works: this PACS cannot serve retrievals to the gateway"),
    }
    if result.checks.iter().any(|c| c.outcome == Outcome::Fail) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
