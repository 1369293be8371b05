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

pub use crate::config::ConnectionString;
pub use embedded::Embedded;
pub use postgres::Postgres;

use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
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
    /// Records pseudonyms of `project`: the future ends once they are durable. Nothing in it
    /// blocks (the store's writer thread commits, and wakes the task when done), so a request
    /// awaits it on the async runtime.
    fn recording<'a>(&'a self, project: &'a str, entries: Vec<(String, Original)>)
        -> BoxFuture<'a, anyhow::Result<()>>;
    /// Records pseudonyms of `project`, blocking the thread until they are durable (off the
    /// async runtime: a command, a blocking task).
    fn record(&self, project: &str, entries: Vec<(String, Original)>) -> anyhow::Result<()> {
        futures::executor::block_on(self.recording(project, entries))
    }
    /// What a pseudonym of `project` stands for, if it was ever emitted.
    fn resolve(&self, project: &str, pseudonym: &str) -> anyhow::Result<Option<Original>>;
    /// Every entry (project, pseudonym, original), for an export.
    fn each(&self, visit: &mut dyn FnMut(&str, &str, Original) -> anyhow::Result<()>) -> anyhow::Result<()>;
}

/// The key of a project's pseudonym, in memory and in the embedded table.
fn key(project: &str, pseudonym: &str) -> String {
    format!("{project}\u{0}{pseudonym}")
}

/// What a store recorded or resolved lately, by [`key`] (bounded; idle entries leave after an hour).
type Recent = moka::sync::Cache<String, Arc<Original>>;

fn recent() -> Recent {
    moka::sync::Cache::builder().max_capacity(1_000_000).time_to_idle(Duration::from_secs(3600)).build()
}

/// The one thread that commits a store's writes in batches. Stopping it (or dropping it) closes
/// its channel and waits until the writes already sent are done.
struct Writer<W> {
    sender: Mutex<Option<mpsc::Sender<W>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl<W: Send + 'static> Writer<W> {
    fn start(run: impl FnOnce(&mpsc::Receiver<W>) + Send + 'static) -> std::io::Result<Writer<W>> {
        let (sender, receiver) = mpsc::channel();
        let thread = std::thread::Builder::new().name("pseudonym-writer".into()).spawn(move || run(&receiver))?;
        Ok(Writer { sender: Mutex::new(Some(sender)), thread: Mutex::new(Some(thread)) })
    }

    fn send(&self, write: W) -> anyhow::Result<()> {
        let sender = self.sender.lock().map_err(|_| anyhow::anyhow!("pseudonym writer poisoned"))?.clone();
        sender
            .ok_or_else(|| anyhow::anyhow!("the pseudonym store is closed"))?
            .send(write)
            .map_err(|_| anyhow::anyhow!("the pseudonym writer stopped"))
    }
}

impl<W> Writer<W> {
    fn stop(&self) {
        self.sender.lock().map(|mut w| w.take()).ok();
        if let Some(thread) = self.thread.lock().ok().and_then(|mut t| t.take()) {
            let _ = thread.join();
        }
    }
}

impl<W> Drop for Writer<W> {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Opens the store `[deid]` names: PostgreSQL when `store` is set, else the embedded one.
pub fn open(config: &DeidConfig) -> anyhow::Result<Arc<dyn PseudonymStore>> {
    Ok(match &config.store {
        Some(url) => Arc::new(Postgres::open(url)?),
        None => Arc::new(Embedded::open(&config.state_dir)?),
    })
}
