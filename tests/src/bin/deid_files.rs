//! `deid-files`: applies the gateway's de-identification to files, for comparing it with other
//! tools (docs/DEID-COMPARISON.md). A fixed test secret; the site is called "files".

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dicom_encoding::TransferSyntaxIndex;
use dicomweb_deid::instance::{deidentify, Outcome};
use dicomweb_deid::{Deidentifier, Options, ProjectKeys};

#[derive(Parser)]
struct Cli {
    /// Where the de-identified files go, under the same names.
    #[arg(long)]
    out: PathBuf,
    /// PS3.15 options (kebab-case), as in `deid.options`.
    #[arg(long)]
    option: Vec<String>,
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let options = Options::parse(&cli.option).map_err(|p| anyhow::anyhow!(p.join("; ")))?;
    let deidentifier = Deidentifier::new(ProjectKeys::derive(b"deid-files test secret, not for use", "files"), options);
    std::fs::create_dir_all(&cli.out)?;
    for path in &cli.files {
        let name = path.file_name().context("a file name")?;
        let outcome = (|| -> anyhow::Result<String> {
            let bytes = std::fs::read(path)?;
            let header = pacs_adapter::part10::parse_header(&bytes)?;
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(&header.transfer_syntax_uid)
                .context("unknown transfer syntax")?;
            let pseudonym = deidentifier.keys().uid(&header.sop_instance_uid);
            let meta = pacs_adapter::part10::wrap(&header.sop_class_uid, &pseudonym, ts.uid(), "", &[]);
            match deidentify(&deidentifier, &bytes[header.data_set_offset..], ts, "files", meta)? {
                Outcome::Deidentified { bytes, .. } => {
                    std::fs::write(cli.out.join(name), bytes)?;
                    Ok("de-identified".into())
                }
                Outcome::Withheld(why) => Ok(format!("withheld: {}", why.reason)),
            }
        })();
        match outcome {
            Ok(what) => println!("{}\t{what}", name.to_string_lossy()),
            Err(e) => println!("{}\tfailed: {e}", name.to_string_lossy()),
        }
    }
    Ok(())
}
