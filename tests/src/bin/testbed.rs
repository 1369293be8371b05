//! `testbed`: starts the real-PACS test bed (Orthanc sites, dcmqrscp, sample data), writes what
//! it started as JSON, and stops everything on Ctrl-C or SIGTERM.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use testbed::{MoveDestination, Testbed, TestbedOptions};

#[derive(Parser)]
#[command(about = "Real PACS on loopback for tests, benchmarks and the demo")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start the sites, load the data, write the info file, and run until interrupted.
    Up {
        /// Working directory (storage, logs, generated data).
        #[arg(long, default_value = ".testbed")]
        dir: PathBuf,
        /// Number of Orthanc sites.
        #[arg(long, default_value_t = 2)]
        sites: usize,
        /// Also start a DCMTK dcmqrscp site.
        #[arg(long)]
        dcmqrscp: bool,
        /// Slices of the synthetic CT study.
        #[arg(long, default_value_t = 200)]
        ct_slices: u32,
        /// Frames of the synthetic multi-frame instance.
        #[arg(long, default_value_t = 16)]
        frames: u32,
        /// Do not load pydicom's test files.
        #[arg(long)]
        no_pydicom: bool,
        /// Slices of the CT compressed by reference encoders (JPEG 2000, JPEG-LS and HTJ2K
        /// lossless, one study each) for the first site; 0 for none.
        #[arg(long, default_value_t = 8)]
        compressed_slices: usize,
        /// Extra C-MOVE destination every site learns, as AE@PORT (e.g. the gateway's).
        #[arg(long = "destination", value_name = "AE@PORT")]
        destinations: Vec<String>,
        /// Generated C-MOVE destinations FEDGW1.. on free ports, for tests.
        #[arg(long, default_value_t = 8)]
        generated_destinations: usize,
        /// Fixed ports: site n listens for DICOM on DICOM_BASE + n - 1 and HTTP on
        /// HTTP_BASE + n - 1 (dcmqrscp after the last Orthanc site), as DICOM_BASE:HTTP_BASE.
        #[arg(long, value_name = "DICOM_BASE:HTTP_BASE")]
        base_ports: Option<String>,
        /// Where to write the JSON description (written once everything is ready).
        #[arg(long, default_value = ".testbed/testbed.json")]
        info: PathBuf,
    },
    /// Write the synthetic studies to a directory and exit.
    Generate {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 200)]
        ct_slices: u32,
        #[arg(long, default_value_t = 16)]
        frames: u32,
    },
}

fn parse_destination(text: &str) -> anyhow::Result<MoveDestination> {
    let (ae, port) = text.split_once('@').ok_or_else(|| anyhow::anyhow!("destination {text:?} is not AE@PORT"))?;
    Ok(MoveDestination { ae_title: ae.to_owned(), port: port.parse()? })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Generate { out, ct_slices, frames } => {
            let ct = testbed::synthetic::write_ct_study(&out.join("ct"), ct_slices, 1)?;
            let mf = testbed::synthetic::write_multiframe(&out.join("multiframe"), frames, 1)?;
            println!("CT study {} ({} files, {} bytes)", ct.study_uid, ct.files.len(), ct.bytes);
            println!("multi-frame study {} ({} bytes)", mf.study_uid, mf.bytes);
        }
        Cmd::Up {
            dir,
            sites,
            dcmqrscp,
            ct_slices,
            frames,
            no_pydicom,
            compressed_slices,
            destinations,
            generated_destinations,
            base_ports,
            info,
        } => {
            let base_ports = match base_ports {
                None => None,
                Some(text) => {
                    let (dicom, http) = text
                        .split_once(':')
                        .ok_or_else(|| anyhow::anyhow!("--base-ports {text:?} is not DICOM:HTTP"))?;
                    Some((dicom.parse()?, http.parse()?))
                }
            };
            let options = TestbedOptions {
                dir,
                orthanc_sites: sites,
                dcmqrscp,
                ct_slices,
                multiframe_frames: frames,
                pydicom: !no_pydicom,
                compressed_slices,
                extra_destinations: destinations.iter().map(|d| parse_destination(d)).collect::<Result<_, _>>()?,
                generated_destinations,
                base_ports,
            };
            let _ = std::fs::remove_file(&info);
            let testbed =
                tokio::task::spawn_blocking(move || Testbed::start(&options, &mut |step| eprintln!("testbed: {step}")))
                    .await??;
            let tmp = info.with_extension("json.tmp");
            std::fs::write(&tmp, serde_json::to_vec_pretty(&testbed.info)?)?;
            std::fs::rename(&tmp, &info)?;
            for site in &testbed.info.sites {
                eprintln!(
                    "testbed: {} ({:?}) AE {} at 127.0.0.1:{}{}",
                    site.id,
                    site.kind,
                    site.ae_title,
                    site.dicom_port,
                    site.http_url.as_deref().map(|u| format!(", REST {u}")).unwrap_or_default()
                );
            }
            eprintln!("testbed: ready; description in {}; Ctrl-C stops it", info.display());
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("testbed: stopping");
            drop(testbed);
            let _ = std::fs::remove_file(&info);
        }
    }
    Ok(())
}
