//! The DICOMweb federation gateway as a library: configuration, the HTTP server and its
//! resources, and the operations the `dicomweb-gateway` binary runs.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
pub mod core;
pub mod http;
pub mod sites;
pub mod startup;
pub mod state;
