//! What a running test bed reports: its sites, their ports and the data they hold. Written as
//! JSON by `testbed up` and read by the tests (`TESTBED_INFO` names the file).

use std::path::PathBuf;

use crate::synthetic::GeneratedStudy;
use crate::MoveDestination;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SiteKind {
    Orthanc,
    Dcmqrscp,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SiteInfo {
    pub id: String,
    pub kind: SiteKind,
    pub ae_title: String,
    pub dicom_port: u16,
    /// Orthanc's REST API (and `/dicom-web` under it); none for dcmqrscp.
    pub http_url: Option<String>,
    pub storage_dir: PathBuf,
}

/// An instance as a PACS stored it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredInstance {
    pub orthanc_id: String,
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub sop_class_uid: String,
    pub transfer_syntax_uid: String,
}

/// A sample file and what the first site made of it (`None`: refused).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LoadedFile {
    pub path: PathBuf,
    pub stored: Option<StoredInstance>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DataInfo {
    pub ct: GeneratedStudy,
    pub multiframe: GeneratedStudy,
    pub pydicom: Vec<LoadedFile>,
    /// The CT compressed by reference encoders (at the first Orthanc site but for HTJ2K, which
    /// its Orthanc cannot send).
    #[serde(default)]
    pub compressed: Vec<crate::compressed::CompressedStudy>,
}

#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct TestbedInfo {
    pub sites: Vec<SiteInfo>,
    pub move_destinations: Vec<MoveDestination>,
    pub data: DataInfo,
}

impl TestbedInfo {
    /// Reads the file named by `TESTBED_INFO`, failing with what to do when it is not set.
    pub fn from_env() -> anyhow::Result<TestbedInfo> {
        let path = std::env::var("TESTBED_INFO").map_err(|_| {
            anyhow::anyhow!(
                "TESTBED_INFO is not set: these tests need the real-PACS test bed. Run them with \
                 `bash scripts/test.sh`, or start one with `cargo run -p testbed -- up --info FILE` \
                 and set TESTBED_INFO=FILE"
            )
        })?;
        let text =
            std::fs::read_to_string(&path).map_err(|e| anyhow::anyhow!("cannot read TESTBED_INFO={path}: {e}"))?;
        Ok(serde_json::from_str(&text)?)
    }

    pub fn site(&self, id: &str) -> anyhow::Result<&SiteInfo> {
        self.sites.iter().find(|s| s.id == id).ok_or_else(|| anyhow::anyhow!("the test bed has no site {id}"))
    }
}
