//! One DCMTK `dcmqrscp` site: a second, independent PACS implementation (C-FIND, C-GET,
//! C-MOVE, C-STORE), loaded through DCMTK's own `storescu`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

use crate::info::{SiteInfo, SiteKind};
use crate::{dcmtk_tool, free_port, wait_for_port, MoveDestination};

#[derive(Debug)]
pub struct DcmqrscpSite {
    pub id: String,
    pub ae_title: String,
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl DcmqrscpSite {
    /// Starts the site on `port`, or on a free port.
    pub fn start(
        dir: &Path,
        id: &str,
        ae_title: &str,
        destinations: &[MoveDestination],
        port: Option<u16>,
    ) -> anyhow::Result<DcmqrscpSite> {
        let dcmqrscp = dcmtk_tool("dcmqrscp")?;
        let storage = dir.join("storage");
        std::fs::create_dir_all(&storage)?;
        let port = match port {
            Some(port) => port,
            None => free_port()?,
        };
        let hosts: String = destinations
            .iter()
            .map(|d| format!("{} = ({}, 127.0.0.1, {})\n", d.ae_title.to_lowercase(), d.ae_title, d.port))
            .collect();
        let config = format!(
            "NetworkTCPPort = {port}\nMaxPDUSize = 65536\nMaxAssociations = 32\n\n\
             HostTable BEGIN\n{hosts}HostTable END\n\nVendorTable BEGIN\nVendorTable END\n\n\
             AETable BEGIN\n{ae_title} {} RW (2000, 4096mb) ANY\nAETable END\n",
            storage.display()
        );
        let config_path = dir.join("dcmqrscp.cfg");
        std::fs::write(&config_path, config)?;
        let log = std::fs::File::create(dir.join("dcmqrscp.log"))?;
        let child = Command::new(dcmqrscp)
            .arg("-c")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting dcmqrscp")?;
        let site = DcmqrscpSite {
            id: id.to_owned(),
            ae_title: ae_title.to_owned(),
            port,
            dir: dir.to_owned(),
            child: Some(child),
        };
        wait_for_port(port, Duration::from_secs(30)).context("dcmqrscp did not start")?;
        Ok(site)
    }

    /// Stores files with DCMTK's `storescu`, proposing each file's own transfer syntax.
    pub fn load(&self, files: &[PathBuf]) -> anyhow::Result<()> {
        let storescu = dcmtk_tool("storescu")?;
        for batch in files.chunks(100) {
            let output = Command::new(&storescu)
                .args(["-aet", "LOADER", "-aec", &self.ae_title, "127.0.0.1", &self.port.to_string()])
                .args(batch)
                .output()?;
            if !output.status.success() {
                bail!("storescu into dcmqrscp failed: {}", String::from_utf8_lossy(&output.stderr));
            }
        }
        Ok(())
    }

    pub fn info(&self) -> SiteInfo {
        SiteInfo {
            id: self.id.clone(),
            kind: SiteKind::Dcmqrscp,
            ae_title: self.ae_title.clone(),
            dicom_port: self.port,
            http_url: None,
            storage_dir: self.dir.join("storage"),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for DcmqrscpSite {
    fn drop(&mut self) {
        self.stop();
    }
}
