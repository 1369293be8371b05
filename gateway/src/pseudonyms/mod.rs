//! The pseudonym map: from a pseudonym the gateway has handed out (a UID, or a patient's
//! token) back to the site's value, per project. Pseudonyms are HMACs and cannot be reversed;
//! this map is how a client's later request naming one is answered. It is written when a
//! pseudonym is first emitted (the response that carries it waits until it is committed).
//!
//! [`PseudonymStore`] is what a store implements: [`Embedded`] keeps the map in
//! `deid.state_dir/pseudonyms.redb` for one gateway process (the default); [`Postgres`] keeps it
//! in PostgreSQL (`deid.store = "postgres://..."`), shared by every replica. `lines` is the
//! export and import format that moves a map from one store to another.

mod embedded;
pub mod lines;
pub mod postgres;

pub use embedded::Embedded;
pub use postgres::{ConnectionString, Postgres};

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::DeidConfig;

/// What a pseudonym stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    Study,
    Series,
    Instance,
    Patient,
}

impl Kind {
    /// The name in the export format and in the PostgreSQL table.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Study => "study",
            Kind::Series => "series",
            Kind::Instance => "instance",
            Kind::Patient => "patient",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        [Kind::Study, Kind::Series, Kind::Instance, Kind::Patient].into_iter().find(|k| k.as_str() == name)
    }
}

/// One entry: the site's value, and for a patient the issuer (IssuerOfPatientID or site id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Original {
    pub kind: Kind,
    pub value: String,
    #[serde(default)]
    pub issuer: Option<String>,
}

/// The store cannot be reached now (the database is down or unreachable): the request may be
/// retried later. Nothing of the failed write was kept.
#[derive(Debug, thiserror::Error)]
#[error("the pseudonym map is unreachable: {0}")]
pub struct Unavailable(pub String);

/// Where pseudonyms are kept.
pub trait PseudonymStore: Send + Sync + std::fmt::Debug {
    /// Records pseudonyms of `project`; returns once they are durable.
    fn record(&self, project: &str, entries: Vec<(String, Original)>) -> anyhow::Result<()>;
    /// Records pseudonyms without waiting for them to be durable (for the UIDs inside
    /// retrieved instances, so that a study of many instances is not a commit per instance).
    fn record_soon(&self, project: &str, entries: Vec<(String, Original)>) -> anyhow::Result<()> {
        self.record(project, entries)
    }
    /// What a pseudonym of `project` stands for, if it was ever emitted.
    fn resolve(&self, project: &str, pseudonym: &str) -> anyhow::Result<Option<Original>>;
    /// Every entry (project, pseudonym, original), for an export.
    fn each(&self, visit: &mut dyn FnMut(&str, &str, Original) -> anyhow::Result<()>) -> anyhow::Result<()>;
}

/// Opens the store `[deid]` names: PostgreSQL when `store` is set, else the embedded one.
pub fn open(config: &DeidConfig) -> anyhow::Result<Arc<dyn PseudonymStore>> {
    Ok(match &config.store {
        Some(url) => Arc::new(Postgres::open(url)?),
        None => Arc::new(Embedded::open(&config.state_dir)?),
    })
}
