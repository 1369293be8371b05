//! One Orthanc site: a plain `Orthanc` process with its own AE, ports and storage, the DICOMweb
//! plugin enabled, every C-MOVE destination of the test bed registered.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::info::{SiteInfo, SiteKind, StoredInstance};
use crate::{free_port, wait_for_port, MoveDestination};

/// DICOM TLS settings for an Orthanc site (all PEM files).
#[derive(Debug, Clone)]
pub struct OrthancTls {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
    /// CA bundle Orthanc trusts for client certificates.
    pub trusted: PathBuf,
    pub require_client_certificate: bool,
}

#[derive(Debug)]
pub struct OrthancSite {
    pub id: String,
    pub ae_title: String,
    pub dicom_port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

/// The shared library of an Orthanc plugin, from the Debian package that installs it.
fn plugin(package: &str, name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(output) = Command::new("dpkg").args(["-L", package]).output() {
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            if line.ends_with(".so") && line.contains(name) {
                return Ok(PathBuf::from(line));
            }
        }
    }
    bail!("the Orthanc plugin {name} is missing: install the Debian package {package}")
}

fn dicomweb_plugin() -> anyhow::Result<PathBuf> {
    plugin("orthanc-dicomweb", "DicomWeb")
}

/// Orthanc's GDCM plugin (Debian orthanc-gdcm): Orthanc decodes and transcodes JPEG 2000 and
/// JPEG-LS with it, as a site's Orthanc serving DICOMweb would.
pub fn gdcm_plugin() -> anyhow::Result<PathBuf> {
    plugin("orthanc-gdcm", "Gdcm")
}

impl OrthancSite {
    /// Starts a site on free ports; see [`OrthancSite::start_on`].
    pub fn start(
        dir: &Path,
        id: &str,
        ae_title: &str,
        destinations: &[MoveDestination],
        tls: Option<&OrthancTls>,
    ) -> anyhow::Result<OrthancSite> {
        OrthancSite::start_on(dir, id, ae_title, destinations, tls, None)
    }

    /// Starts a site; `ports` = (DICOM, HTTP) when they must be fixed (the demo's), else free
    /// ones are taken.
    pub fn start_on(
        dir: &Path,
        id: &str,
        ae_title: &str,
        destinations: &[MoveDestination],
        tls: Option<&OrthancTls>,
        ports: Option<(u16, u16)>,
    ) -> anyhow::Result<OrthancSite> {
        OrthancSite::start_with_plugins(dir, id, ae_title, destinations, tls, ports, &[])
    }

    /// Starts a site with more Orthanc plugins than the DICOMweb one (e.g. [`gdcm_plugin`]).
    pub fn start_with_plugins(
        dir: &Path,
        id: &str,
        ae_title: &str,
        destinations: &[MoveDestination],
        tls: Option<&OrthancTls>,
        ports: Option<(u16, u16)>,
        plugins: &[PathBuf],
    ) -> anyhow::Result<OrthancSite> {
        let orthanc =
            which("Orthanc").context("Orthanc is missing: install the Debian packages orthanc and orthanc-dicomweb")?;
        std::fs::create_dir_all(dir.join("storage"))?;
        let (dicom_port, http_port) = match ports {
            Some(ports) => ports,
            None => (free_port()?, free_port()?),
        };
        let modalities: serde_json::Map<String, serde_json::Value> = destinations
            .iter()
            .map(|d| (d.ae_title.to_lowercase(), serde_json::json!([d.ae_title, "127.0.0.1", d.port])))
            .collect();
        let mut config = serde_json::json!({
            "Name": id,
            "StorageDirectory": dir.join("storage"),
            "IndexDirectory": dir.join("storage"),
            "DicomAet": ae_title,
            "DicomPort": dicom_port,
            "HttpPort": http_port,
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowEcho": true,
            "DicomAlwaysAllowFind": true,
            "DicomAlwaysAllowGet": true,
            "DicomAlwaysAllowMove": true,
            "DicomAlwaysAllowStore": true,
            "DicomModalities": modalities,
            "DicomScpTimeout": 30,
            "DicomThreadsCount": 8,
            "StorageCompression": false,
            "SaveJobs": false,
            "LimitFindResults": 0,
            "LimitFindInstances": 0,
            "Plugins": std::iter::once(dicomweb_plugin()?).chain(plugins.iter().cloned()).collect::<Vec<_>>(),
            "DicomWeb": { "Enable": true, "Root": "/dicom-web/" },
        });
        if let Some(tls) = tls {
            config["DicomTlsEnabled"] = true.into();
            config["DicomTlsCertificate"] = tls.certificate.display().to_string().into();
            config["DicomTlsPrivateKey"] = tls.private_key.display().to_string().into();
            config["DicomTlsTrustedCertificates"] = tls.trusted.display().to_string().into();
            config["DicomTlsRemoteCertificateRequired"] = tls.require_client_certificate.into();
        }
        let config_path = dir.join("orthanc.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let log = std::fs::File::create(dir.join("orthanc.log"))?;
        let child = Command::new(orthanc)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting Orthanc")?;
        let mut site = OrthancSite {
            id: id.to_owned(),
            ae_title: ae_title.to_owned(),
            dicom_port,
            http_port,
            dir: dir.to_owned(),
            child: Some(child),
        };
        site.wait_ready()
            .with_context(|| format!("Orthanc {id} did not start; see {}", dir.join("orthanc.log").display()))?;
        Ok(site)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = &mut self.child {
                if let Some(status) = child.try_wait()? {
                    bail!("Orthanc exited with {status}");
                }
            }
            if ureq::get(&format!("{}/system", self.http_url())).call().is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("Orthanc's REST API did not answer within 60 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_for_port(self.dicom_port, Duration::from_secs(30))
    }

    pub fn http_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// A REST client for this site.
    pub fn client(&self) -> Client {
        Client::new(&self.http_url())
    }

    /// Stores a file through the REST API; see [`Client::upload`].
    pub fn upload(&self, file: &Path) -> anyhow::Result<Option<StoredInstance>> {
        self.client().upload(file)
    }

    pub fn info(&self) -> SiteInfo {
        SiteInfo {
            id: self.id.clone(),
            kind: SiteKind::Orthanc,
            ae_title: self.ae_title.clone(),
            dicom_port: self.dicom_port,
            http_url: Some(self.http_url()),
            storage_dir: self.dir.join("storage"),
        }
    }

    /// Kills the process at once (SIGKILL), as a crashing PACS would go.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OrthancSite {
    fn drop(&mut self) {
        self.stop();
    }
}

pub(crate) fn which(program: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]) {
        let candidate = dir.join(program);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!("{program} not found on PATH")
}

/// The bits of Orthanc's REST API the test bed uses.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client { base: base.trim_end_matches('/').to_owned() }
    }

    /// Stores a file. `None` when Orthanc refuses it (some real files are odd enough for that);
    /// what it stored otherwise, as it stored it.
    pub fn upload(&self, file: &Path) -> anyhow::Result<Option<StoredInstance>> {
        let bytes = std::fs::read(file)?;
        let response = match ureq::post(&format!("{}/instances", self.base)).send_bytes(&bytes) {
            Ok(response) => response,
            Err(ureq::Error::Status(400..=499, _)) => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("uploading {}", file.display())),
        };
        let answer: serde_json::Value = serde_json::from_str(&response.into_string()?)?;
        let id = answer["ID"].as_str().context("Orthanc answered without an instance ID")?.to_owned();
        Ok(Some(self.stored(&id)?))
    }

    /// What Orthanc holds for one of its instance ids.
    pub fn stored(&self, orthanc_id: &str) -> anyhow::Result<StoredInstance> {
        let tags: serde_json::Value = serde_json::from_str(
            &ureq::get(&format!("{}/instances/{orthanc_id}/simplified-tags", self.base)).call()?.into_string()?,
        )?;
        let transfer_syntax = match ureq::get(&format!("{}/instances/{orthanc_id}/metadata/TransferSyntax", self.base))
            .call()
        {
            Ok(answer) => answer.into_string()?,
            // Orthanc records no TransferSyntax for one its DICOM toolkit does not know (HTJ2K
            // in Orthanc 1.10): the file's own meta group says.
            Err(ureq::Error::Status(404, _)) => {
                let header: serde_json::Value = serde_json::from_str(
                    &ureq::get(&format!("{}/instances/{orthanc_id}/header?simplify", self.base))
                        .call()?
                        .into_string()?,
                )?;
                header["TransferSyntaxUID"].as_str().context("a file meta group without TransferSyntaxUID")?.to_owned()
            }
            Err(e) => return Err(e.into()),
        };
        let tag = |name: &str| tags[name].as_str().unwrap_or_default().to_owned();
        Ok(StoredInstance {
            orthanc_id: orthanc_id.to_owned(),
            study_uid: tag("StudyInstanceUID"),
            series_uid: tag("SeriesInstanceUID"),
            sop_instance_uid: tag("SOPInstanceUID"),
            sop_class_uid: tag("SOPClassUID"),
            transfer_syntax_uid: transfer_syntax.trim().to_owned(),
        })
    }

    /// Orthanc's id of the instance with this SOP Instance UID.
    pub fn instance_id(&self, sop_instance_uid: &str) -> anyhow::Result<String> {
        let found: serde_json::Value = serde_json::from_str(
            &ureq::post(&format!("{}/tools/lookup", self.base)).send_string(sop_instance_uid)?.into_string()?,
        )?;
        found
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["Type"] == "Instance")
            .and_then(|r| r["ID"].as_str())
            .map(str::to_owned)
            .with_context(|| format!("Orthanc holds no instance {sop_instance_uid}"))
    }

    /// The stored Part-10 file, byte for byte.
    pub fn download(&self, orthanc_id: &str) -> anyhow::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(
            &mut ureq::get(&format!("{}/instances/{orthanc_id}/file", self.base)).call()?.into_reader(),
            &mut bytes,
        )?;
        Ok(bytes)
    }

    /// The stored file of the instance with this SOP Instance UID.
    pub fn file_of_instance(&self, sop_instance_uid: &str) -> anyhow::Result<Vec<u8>> {
        self.download(&self.instance_id(sop_instance_uid)?)
    }
}
