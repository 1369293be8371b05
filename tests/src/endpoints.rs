//! Connecting the PACS adapter to test-bed sites, and reading back what a PACS holds so tests
//! can compare retrieved instances byte for byte.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use dicomweb_model::{AeTitle, SiteId};
use pacs_adapter::{part10, SiteEndpoint};

use crate::info::SiteInfo;

/// An adapter endpoint for a test-bed site, calling from `calling_ae`, with test deadlines.
pub fn endpoint(site: &SiteInfo, calling_ae: &str) -> anyhow::Result<SiteEndpoint> {
    let mut endpoint = SiteEndpoint::new(
        SiteId::new(&site.id)?,
        AeTitle::new(calling_ae)?,
        AeTitle::new(&site.ae_title)?,
        format!("127.0.0.1:{}", site.dicom_port),
    );
    endpoint.connect_timeout = Duration::from_secs(5);
    endpoint.response_timeout = Duration::from_secs(20);
    Ok(endpoint)
}

/// The data set part (after the file meta group) and the transfer syntax of Part-10 bytes.
pub fn data_set_and_syntax(part10_bytes: &[u8]) -> anyhow::Result<(&[u8], String)> {
    let header = part10::parse_header(part10_bytes)?;
    Ok((&part10_bytes[header.data_set_offset..], header.transfer_syntax_uid))
}

/// Every Part-10 file under a dcmqrscp storage area, by SOP Instance UID.
pub fn dcmqrscp_files(storage: &Path) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut files = HashMap::new();
    for entry in std::fs::read_dir(storage).with_context(|| format!("reading {}", storage.display()))? {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&path)?;
        if let Ok(header) = part10::parse_header(&bytes) {
            files.insert(header.sop_instance_uid, bytes);
        }
    }
    Ok(files)
}
