//! `pacs-adapter`: an async DIMSE client for hospital PACS, on tokio and dicom-ul.
//!
//! dicom-ul gives associations and PDUs; this crate adds the DIMSE message layer (command sets,
//! status codes, message reassembly), the services a federation gateway needs (C-ECHO, C-FIND,
//! C-GET, C-MOVE with an embedded storage SCP, C-STORE), a per-site association pool, deadlines
//! and cancellation, and DICOM TLS. It knows nothing of HTTP and never transcodes: instances
//! leave it in the transfer syntax the PACS sent.

#![forbid(unsafe_code)]

mod association;
mod c_move;
pub mod data_set_check;
pub mod dimse;
mod echo;
mod error;
mod find;
mod get;
pub mod incoming;
mod instance;
mod operation;
mod parallel;
pub mod part10;
mod pool;
mod query;
mod site;
mod store;
mod store_scp;
mod stream;
pub mod syntax;
pub mod tls;

pub use association::DimseAssociation;
pub use c_move::c_move;
pub use echo::echo;
pub use error::{DimseError, Operation, Phase};
pub use find::{find, FindRequest};
pub use get::{get, sop_classes_of, RetrieveRequest};
pub use instance::RetrievedInstance;
pub use parallel::{list_instances, retrieve_parallel, split, PlannedInstance, RetrieveMethod};
pub use pool::{AssociationPool, PooledAssociation};
pub use query::{with_level, QueryLevel, RetrieveTarget};
pub use site::{SiteEndpoint, SiteTls};
pub use store::{store, StoreOutcome};
pub use store_scp::{MoveSource, StoreScp, StoreScpOptions};
pub use stream::DimseStream;
