//! The core: what a request does, whatever protocol it came in by. Retrieval (`retrieve`),
//! search (`search`), de-identification (`privacy`), pixel data (`pixels`), the directory of
//! where studies live, who may see what (`access`), and the audit trail. It reaches sites only
//! through crate::sites, and knows nothing of the HTTP edge.

pub mod access;
pub mod attributes;
pub mod audit;
pub mod dataset_limits;
pub mod directory;
pub mod error;
pub mod pixels;
pub mod privacy;
pub mod private_files;
pub mod retrieve;
pub mod search;
pub mod store;

pub use error::Error;
