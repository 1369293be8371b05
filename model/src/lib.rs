//! DICOM vocabulary shared by the gateway, the PACS adapter and the conformance tool: UID, AE
//! title and site-id newtypes, cleaned once where they enter the system; the DICOM JSON Model
//! written and read; QIDO-RS queries; multipart/related bodies read. No IO of its own (the
//! multipart reader reads the stream it is given).

#![forbid(unsafe_code)]

mod ae_title;
pub mod dicom_json;
pub mod dicom_json_read;
pub mod multipart;
pub mod qido;
mod site_id;
mod uid;

pub use ae_title::{AeTitle, AeTitleError};
pub use site_id::{SiteId, SiteIdError};
pub use uid::{SeriesInstanceUid, SopClassUid, SopInstanceUid, StudyInstanceUid, TransferSyntaxUid, Uid, UidError};
