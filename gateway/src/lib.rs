//! The DICOMweb federation gateway as a library: its configuration and the operations the
//! `dicomweb-gateway` binary runs.

#![forbid(unsafe_code)]

pub mod check;
pub mod config;
