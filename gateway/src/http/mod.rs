//! The HTTP edge: the server and its connections, TLS, who asks and whether they may, the
//! gateway-wide admission, the DICOMweb resources' handlers (`api`), multipart bodies, and
//! `error`, the one place an error becomes a status.

pub(crate) mod admin;
pub(crate) mod admission;
pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod authorize;
pub(crate) mod connections;
pub(crate) mod error;
pub(crate) mod eucaim;
pub(crate) mod https;
pub(crate) mod ledger;
pub(crate) mod limits;
pub(crate) mod metrics;
pub(crate) mod multipart;
pub(crate) mod search_cache;
pub(crate) mod server;
