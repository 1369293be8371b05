//! The DICOMweb federation gateway as a library: configuration, the HTTP server and its
//! resources, and the operations the `dicomweb-gateway` binary runs.

#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod admission;
pub mod api;
pub mod audit;
pub mod audit_fhir;
pub mod auth;
pub mod authorize;
pub mod cache;
pub mod check;
pub mod clean_pixels;
pub mod config;
pub mod connections;
pub mod dataset_limits;
pub mod decode_budget;
pub mod deidentify;
pub mod directory;
pub mod disk_cache;
pub mod error;
pub mod federation;
pub mod health;
pub mod https;
pub mod ledger;
pub mod limits;
pub mod locate;
pub mod metrics;
pub mod multipart;
pub mod pixels;
pub mod private_files;
pub mod pseudonyms;
pub mod region_rules;
pub(crate) mod rle;
pub mod search_cache;
pub mod server;
pub mod site;
pub mod startup;
pub mod state;
pub mod transcoded_cache;
