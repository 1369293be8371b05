//! The real-PACS test bed: starts Orthanc sites (with the DICOMweb plugin) and a DCMTK
//! `dcmqrscp` site as plain processes on loopback, loads sample data into them, reports their
//! ports, and stops them. Tests, benchmarks and the demo all use it.
//!
//! Sample data: pydicom's shipped test files (real-world variety) and the deterministic
//! synthetic studies of [`synthetic`].

pub mod compressed;
pub mod dcmqrscp;
pub mod delay;
pub mod endpoints;
pub mod gateway;
pub mod info;
pub mod orthanc;
pub mod pydicom_files;
pub mod synthetic;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

pub use dcmqrscp::DcmqrscpSite;
pub use info::{DataInfo, LoadedFile, SiteInfo, SiteKind, TestbedInfo};
pub use orthanc::OrthancSite;

/// A C-MOVE destination every site knows: an AE title and the loopback port where a storage
/// SCP may listen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MoveDestination {
    pub ae_title: String,
    pub port: u16,
}

/// The median of benchmark samples (the upper one of an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The smallest and largest of benchmark samples.
pub fn min_max(values: &[f64]) -> (f64, f64) {
    values.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)))
}

/// A free loopback TCP port (bound then released; the OS does not hand it out again at once).
pub fn free_port() -> anyhow::Result<u16> {
    // A port handed out is free only until someone binds it, and the kernel may offer it again
    // before then: never the same one twice in a process (a test bed hands out many at once).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut given = GIVEN.lock().map_err(|_| anyhow::anyhow!("the port list is poisoned"))?;
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    anyhow::bail!("no free loopback port not handed out already")
}

/// Waits until something accepts TCP connections on the loopback port.
pub fn wait_for_port(port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listens on 127.0.0.1:{port} after {timeout:?}")
}

/// The full path of a DCMTK tool. pynetdicom installs apps of the same names that may come
/// first on PATH, so DCMTK's are looked up where Debian puts them and checked by version.
pub fn dcmtk_tool(name: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new("/usr/bin").join(name);
    let output = std::process::Command::new(&path).arg("--version").output().with_context(|| {
        format!("DCMTK's {name} is missing at {}: install the Debian package dcmtk", path.display())
    })?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !text.to_lowercase().contains("dcmtk") {
        bail!("{} is not DCMTK's {name}", path.display());
    }
    Ok(path)
}

/// Options for [`Testbed::start`].
#[derive(Debug, Clone)]
pub struct TestbedOptions {
    pub dir: PathBuf,
    pub orthanc_sites: usize,
    pub dcmqrscp: bool,
    pub ct_slices: u32,
    pub multiframe_frames: u32,
    /// Load pydicom's test files into the Orthanc sites.
    pub pydicom: bool,
    /// Slices of the CT, compressed by reference encoders (JPEG 2000, JPEG-LS, HTJ2K lossless),
    /// one study per codec; the first Orthanc site holds the JPEG 2000 and JPEG-LS ones; none
    /// when 0.
    pub compressed_slices: usize,
    /// Extra C-MOVE destinations besides the generated ones (e.g. the gateway's own).
    pub extra_destinations: Vec<MoveDestination>,
    /// How many generated destinations (`FEDGW1`..) to register, each on its own free port.
    pub generated_destinations: usize,
    /// Fixed ports: site n gets DICOM port `dicom + n - 1` and HTTP port `http + n - 1`, and
    /// dcmqrscp the DICOM port after the last Orthanc site. Free ports when `None`.
    pub base_ports: Option<(u16, u16)>,
}

impl TestbedOptions {
    /// `sites` Orthanc sites holding the synthetic studies (a CT of `ct_slices` slices), no
    /// dcmqrscp, no pydicom files, no C-MOVE destinations, free ports: what a benchmark starts.
    pub fn orthanc_sites(dir: PathBuf, sites: usize, ct_slices: u32) -> TestbedOptions {
        TestbedOptions {
            dir,
            orthanc_sites: sites,
            dcmqrscp: false,
            ct_slices,
            multiframe_frames: 2,
            pydicom: false,
            compressed_slices: 0,
            extra_destinations: Vec::new(),
            generated_destinations: 0,
            base_ports: None,
        }
    }
}

/// Running sites; stopped when dropped.
#[derive(Debug)]
pub struct Testbed {
    pub orthanc: Vec<OrthancSite>,
    pub dcmqrscp: Option<DcmqrscpSite>,
    pub info: TestbedInfo,
}

impl Testbed {
    pub fn start(options: &TestbedOptions, progress: &mut dyn FnMut(&str)) -> anyhow::Result<Testbed> {
        std::fs::create_dir_all(&options.dir)?;
        let dir = options.dir.canonicalize()?;
        let mut destinations = options.extra_destinations.clone();
        for i in 1..=options.generated_destinations {
            destinations.push(MoveDestination { ae_title: format!("FEDGW{i}"), port: free_port()? });
        }
        progress("generating synthetic studies");
        let data_dir = dir.join("data");
        let ct = synthetic::write_ct_study(&data_dir.join("ct"), options.ct_slices, 1)?;
        let multiframe = synthetic::write_multiframe(&data_dir.join("multiframe"), options.multiframe_frames, 1)?;
        let mut compressed = Vec::new();
        if options.compressed_slices > 0 {
            progress("compressing the CT with reference encoders");
            for codec in compressed::Codec::ALL {
                let dir = data_dir.join(codec.label());
                compressed.push(compressed::write_compressed(&ct, options.compressed_slices, codec, &dir)?);
            }
        }
        let mut testbed = Testbed { orthanc: Vec::new(), dcmqrscp: None, info: TestbedInfo::default() };
        let mut pydicom_loaded = Vec::new();
        let pydicom_files = if options.pydicom { pydicom_files::list()? } else { Vec::new() };
        for n in 1..=options.orthanc_sites {
            let id = format!("site-{n}");
            progress(&format!("starting Orthanc {id}"));
            let ports = options.base_ports.map(|(dicom, http)| (dicom + n as u16 - 1, http + n as u16 - 1));
            let site = OrthancSite::start_on(&dir.join(&id), &id, &format!("ORTHANC{n}"), &destinations, None, ports)?;
            progress(&format!("loading {} synthetic instances into {id}", ct.files.len() + 1));
            for file in ct.files.iter().chain(&multiframe.files) {
                site.upload(file)?.ok_or_else(|| anyhow::anyhow!("{id} refused synthetic file {}", file.display()))?;
            }
            if n == 1 {
                // Not HTJ2K: Orthanc 1.10 (DCMTK 3.6.7) stores it but cannot send it; the tests
                // serve it from an archive that can (tests/python/dimse_archive.py).
                let sendable = compressed.iter().filter(|c| c.codec != compressed::Codec::Htj2kLossless);
                for file in sendable.flat_map(|c| &c.study.files) {
                    site.upload(file)?
                        .ok_or_else(|| anyhow::anyhow!("{id} refused compressed file {}", file.display()))?;
                }
            }
            // Every site gets the even-numbered pydicom files, the first site all of them, so
            // sites hold overlapping but different data.
            for (i, file) in pydicom_files.iter().enumerate() {
                if n == 1 || i % 2 == 0 {
                    let loaded = site.upload(file)?;
                    if n == 1 {
                        pydicom_loaded.push(LoadedFile { path: file.clone(), stored: loaded });
                    }
                }
            }
            testbed.info.sites.push(site.info());
            testbed.orthanc.push(site);
        }
        if options.dcmqrscp {
            progress("starting dcmqrscp");
            let port = options.base_ports.map(|(dicom, _)| dicom + options.orthanc_sites as u16);
            let site = DcmqrscpSite::start(&dir.join("dcmqrscp"), "dcmqrscp", "DCMQR", &destinations, port)?;
            progress("loading synthetic instances into dcmqrscp");
            let files: Vec<PathBuf> = ct.files.iter().chain(&multiframe.files).cloned().collect();
            site.load(&files)?;
            testbed.info.sites.push(site.info());
            testbed.dcmqrscp = Some(site);
        }
        testbed.info.move_destinations = destinations;
        testbed.info.data = DataInfo { ct, multiframe, pydicom: pydicom_loaded, compressed };
        Ok(testbed)
    }

    pub fn stop(&mut self) {
        for site in &mut self.orthanc {
            site.stop();
        }
        if let Some(site) = &mut self.dcmqrscp {
            site.stop();
        }
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        self.stop();
    }
}
