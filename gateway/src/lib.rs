//! The DICOMweb federation gateway as a library: configuration, the HTTP server and its
//! resources, and the operations the `dicomweb-gateway` binary runs.

#![forbid(unsafe_code)]

pub mod api;
pub mod check;
pub mod config;
pub mod error;
pub mod federation;
pub mod multipart;
pub mod server;
pub mod state;
