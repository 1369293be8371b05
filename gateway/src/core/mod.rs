//! The core: what a request does, whatever protocol it came in by. Retrieval (`retrieve`),
//! search (`search`), de-identification (`privacy`), pixel data (`pixels`), the directory of
//! where studies live, who may see what (`access`), and the audit trail. It reaches sites only
//! through crate::sites, and knows nothing of the HTTP edge.

pub(crate) mod access;
pub(crate) mod attributes;
pub(crate) mod audit;
pub(crate) mod dataset_limits;
pub(crate) mod directory;
pub(crate) mod error;
pub(crate) mod eucaim;
pub(crate) mod pixels;
pub(crate) mod privacy;
pub(crate) mod private_files;
pub(crate) mod retrieve;
pub(crate) mod search;
pub(crate) mod store;

pub(crate) use error::Error;
