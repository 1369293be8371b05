//! `dicomweb-gateway`: the command line. `check` validates a configuration and C-ECHOes every
//! site it names.

#![forbid(unsafe_code)]

use gateway::{check, config};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dicomweb-gateway", version, about = "DICOMweb federation gateway over hospital PACS")]
struct Cli {
    /// How log lines are written to stderr: `text` for a person, `json` (one object a line,
    /// with the timestamp, level, target and every field) for a log collector.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DICOMweb (QIDO-RS, WADO-RS, STOW-RS) over the configured sites until Ctrl-C or SIGTERM.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the configuration and the files it names, C-ECHO every site and print a
    /// table; exit 1 if anything fails.
    Check {
        #[arg(long)]
        config: PathBuf,
        /// Validate the configuration and its files only; contact no site.
        #[arg(long)]
        config_only: bool,
    },
    /// The pseudonym map: move it between stores (the embedded one, PostgreSQL).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// The datasets published to EUCAIM.
    Datasets {
        #[command(subcommand)]
        command: DatasetsCommand,
    },
}

#[derive(Subcommand)]
enum DatasetsCommand {
    /// Read every dataset from its sites and write its EUCAIM catalogue record (DCAT-AP) as
    /// JSON-LD and Turtle into a directory. Stop the gateway first (its state directory is
    /// opened); a running gateway serves the records at /datasets/{id}/catalogue.
    Describe {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// Write every entry of the configured pseudonym map to standard output (JSON lines, the
    /// first naming the format). Stop the gateway first when the map is the embedded one.
    Export {
        #[arg(long)]
        config: PathBuf,
    },
    /// Record the entries of an export, read from standard input, in the configured map.
    /// Idempotent; an entry that stands for another original than the map's is an error.
    Import {
        #[arg(long)]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a trail's hash chain; exit 1 at the first line that does not follow the one before.
    Verify { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // OpenJPEG narrates every decode at info level (through jpeg2k): kept to warnings.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,jpeg2k=warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => {
            logs.json().flatten_event(true).with_current_span(false).init();
            gateway::startup::announce_as_log_events();
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => {
            let config = match config::Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run_server(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Audit { command: AuditCommand::Verify { file } } => match gateway::verify_audit(&file) {
            Ok(Ok(intact)) => {
                println!(
                    "{}: {} lines, the chain is intact; last line's hash {} (keep it elsewhere to anchor the end)",
                    file.display(),
                    intact.lines,
                    intact.head
                );
                ExitCode::SUCCESS
            }
            Ok(Err((line, why))) => {
                println!("{}: line {line} {why}", file.display());
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::State { command } => {
            let (config, export) = match command {
                StateCommand::Export { config } => (config, true),
                StateCommand::Import { config } => (config, false),
            };
            let config = match config::Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match state(&config, export) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Datasets { command: DatasetsCommand::Describe { config, out } } => {
            let config = match config::Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(gateway::describe::describe(&config, &out)) {
                Ok(written) => {
                    for file in written {
                        println!("{}", file.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Check { config, config_only } => {
            let config = match config::Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(check::run(&config, config_only))
        }
    }
}

/// `state export` (to standard output) or `state import` (from standard input).
fn state(config: &config::Config, export: bool) -> anyhow::Result<()> {
    let deid = config.deid.as_ref().ok_or_else(|| anyhow::anyhow!("the configuration has no [deid] section"))?;
    let store = gateway::privacy::pseudonyms::open(deid)?;
    if export {
        let count = gateway::privacy::pseudonyms::lines::export(
            store.as_ref(),
            &mut std::io::BufWriter::new(std::io::stdout().lock()),
        )?;
        eprintln!("exported {count} pseudonyms");
    } else {
        let count = gateway::privacy::pseudonyms::lines::import(store.as_ref(), &mut std::io::stdin().lock())?;
        eprintln!("imported {count} pseudonyms (those already in the map left as they were)");
    }
    Ok(())
}

async fn run_server(config: config::Config) -> anyhow::Result<()> {
    if let Some(tls) = &config.server.tls {
        // Checked before anything starts, so that a wrong file is one clear error.
        gateway::server_config(tls)?;
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    let local = listener.local_addr()?;
    gateway::startup::summary(&config, local);
    gateway::serve(listener, config, shutdown_signal()).await
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    gateway::startup::say("shutting down after the requests in flight");
}
