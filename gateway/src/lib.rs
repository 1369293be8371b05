//! The DICOMweb federation gateway as a library: what the `dicomweb-gateway` binary, the
//! benchmarks and the fuzz targets use of it. The gateway itself is three places kept apart
//! (ARCHITECTURE.md): `http` (the edge), `core` and `sites`, private to the crate; this file is
//! its façade.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod describe;
pub mod startup;

pub(crate) mod core;
pub(crate) mod http;
pub(crate) mod sites;
pub(crate) mod state;

/// Serves the gateway on a listener until `shutdown` (`dicomweb-gateway serve`).
pub use http::server::serve;

/// The server's TLS configuration read as `serve` reads it.
pub use http::https::server_config;

/// Decodes an instance's pixel data into an uncompressed transfer syntax.
pub use core::pixels::decode_into;

/// The audit trail checked end to end (`dicomweb-gateway audit verify`).
pub use core::audit::verify as verify_audit;

/// De-identification and the pseudonym map, outside serving (`state export` / `state import`,
/// benchmarks).
pub mod privacy {
    pub use crate::core::privacy::deidentify::{Privacy, Processed};
    pub use crate::core::privacy::pseudonyms;
}

/// A synthetic datasets' index written into a state directory, for the EUCAIM benchmark.
pub mod benchmarking {
    pub use crate::core::eucaim::index::synthetic as synthetic_index;
}

/// The parsers of bytes from outside, as the fuzz targets reach them.
pub mod fuzzing {
    pub use crate::core::dataset_limits::check_encoded;
    pub use crate::core::eucaim::query::parse_for_fuzzing as eucaim_query;
    pub use crate::core::search::query::identifiers_for_fuzzing as qido_identifiers;
    pub use crate::http::api::{accept_ranges, accepts};
    pub use crate::http::auth::fuzzing::{authenticator, check as check_token, jwks};
    pub use crate::http::auth::Authenticator;
    pub use crate::http::multipart::{boundary_of, MultipartReader};

    /// A DICOMweb origin's answer to a search, read as a page of matches: how many.
    pub fn origin_search_page(text: &[u8]) -> Result<usize, serde_json::Error> {
        crate::sites::dicomweb::read_page(text).map(|(matches, _)| matches.len())
    }

    /// A DICOMweb origin's answer to a metadata request of `study`, checked, then written as
    /// the gateway writes it (DICOM JSON, then PS3.19 XML): the DICOM JSON written, or `None`
    /// when the check refuses the answer. Writing what the check let through must not fail.
    pub fn origin_metadata(text: &[u8], study: &str) -> Option<(usize, Vec<u8>)> {
        use axum::response::IntoResponse;
        let study = dicomweb_model::StudyInstanceUid::from_peer(study).ok()?;
        let checked =
            crate::sites::dicomweb::OriginMetadata::checked(bytes::Bytes::copy_from_slice(text), &study).ok()?;
        let body = |xml| {
            let response = crate::http::api::from_origin::metadata(&checked.json, "http://gw/dicom-web", xml)
                .unwrap_or_else(|e| panic!("checked metadata is written again: {e}"))
                .into_response();
            futures::executor::block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
        };
        // An object PS3.19 cannot express breaks the XML response off (an error, not a panic).
        let _ = body(true);
        let json = body(false).unwrap_or_else(|e| panic!("the metadata written as JSON is read back: {e}"));
        Some((checked.objects, json.to_vec()))
    }
}
