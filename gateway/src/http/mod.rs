//! The HTTP edge: the server and its connections, TLS, who asks and whether they may, the
//! gateway-wide admission, the DICOMweb resources' handlers (`api`), multipart bodies, and
//! `error`, the one place an error becomes a status.

pub mod admin;
pub mod admission;
pub mod api;
pub mod auth;
pub mod authorize;
pub mod connections;
pub mod error;
pub mod https;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod multipart;
pub mod search_cache;
pub mod server;
