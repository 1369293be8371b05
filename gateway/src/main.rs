//! `dicomweb-gateway`: the command line. `check` validates a configuration and C-ECHOes every
//! site it names.

#![forbid(unsafe_code)]

use gateway::{check, config, server};

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "dicomweb-gateway", version, about = "DICOMweb federation gateway over hospital PACS")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve DICOMweb (QIDO-RS, WADO-RS) over the configured site until Ctrl-C or SIGTERM.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Validate the configuration, C-ECHO every site and print a table; exit 1 if any fails.
    Check {
        #[arg(long)]
        config: PathBuf,
    },
    /// The audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check a trail's hash chain; exit 1 at the first line that does not follow the one before.
    Verify { file: PathBuf },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
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
        Command::Audit { command: AuditCommand::Verify { file } } => match gateway::audit::verify(&file) {
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
        Command::Check { config } => {
            let config = match config::Config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(check::run(&config))
        }
    }
}

async fn run_server(config: config::Config) -> anyhow::Result<()> {
    if let Some(tls) = &config.tls {
        // Checked before anything starts, so that a wrong file is one clear error.
        gateway::https::server_config(tls)?;
    }
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let local = listener.local_addr()?;
    eprintln!(
        "dicomweb-gateway: serving DICOMweb at {} (listening on {local}) over {} site(s): {}; Ctrl-C stops",
        config.public_url,
        config.sites.len(),
        config
            .sites
            .iter()
            .map(|s| format!("{} ({} at {})", s.id, s.ae_title, s.address))
            .collect::<Vec<_>>()
            .join(", "),
    );
    let federation = &config.federation;
    eprintln!(
        "dicomweb-gateway: where studies live is remembered for {} ({}); sites get a C-ECHO every {}, a site's \
         circuit opens after {} consecutive failures; health at {}/admin/sites",
        humantime::format_duration(federation.remember),
        match &federation.state_dir {
            Some(dir) => format!("kept in {}", dir.join("federation.redb").display()),
            None => "in memory only".into(),
        },
        humantime::format_duration(federation.echo_interval),
        federation.circuit_failures,
        config.public_url.strip_suffix(&config.base_path).unwrap_or(&config.public_url),
    );
    match &config.deid {
        Some(deid) => eprintln!(
            "dicomweb-gateway: de-identifying every response (PS3.15 Annex E basic profile{}{}); pseudonyms, \
             each project's own, kept in {}",
            deid.options.iter().map(|o| format!(", {o}")).collect::<String>(),
            config
                .projects
                .iter()
                .filter_map(|p| p.deid_options.as_ref().map(|o| format!("; project {}: [{}]", p.id, o.join(", "))))
                .collect::<String>(),
            deid.state_dir.join("pseudonyms.redb").display(),
        ),
        None => eprintln!(
            "dicomweb-gateway: WARNING: no [deid] section: responses carry the sites' data, identifying values \
             included, unchanged"
        ),
    }
    match &config.auth {
        config::AuthMode::None => eprintln!(
            "dicomweb-gateway: WARNING: auth.mode = \"none\": every caller on {local} is let in, without a token, \
             to every site (one implicit project); use it on a machine of your own only"
        ),
        config::AuthMode::Jwt(jwt) => eprintln!(
            "dicomweb-gateway: bearer tokens of {} for audience {} required ({}); {} project(s): {}",
            jwt.issuer,
            jwt.audience,
            jwt.algorithms.iter().map(|a| format!("{a:?}")).collect::<Vec<_>>().join(", "),
            config.projects.len(),
            config
                .projects
                .iter()
                .map(|p| format!(
                    "{} ({} site(s): {})",
                    p.id,
                    p.sites.len(),
                    p.permissions.iter().map(|x| x.to_string()).collect::<Vec<_>>().join("+")
                ))
                .collect::<Vec<_>>()
                .join(", "),
        ),
    }
    server::serve(listener, config, shutdown_signal()).await
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
    eprintln!("dicomweb-gateway: shutting down after the requests in flight");
}
