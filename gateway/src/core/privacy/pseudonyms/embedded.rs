//! The embedded store: the map in `deid.state_dir/pseudonyms.redb`, one gateway process.

use std::path::Path;
use std::sync::{mpsc, Arc};

use futures::future::BoxFuture;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::oneshot;

use super::{key, recent, Original, PseudonymStore, Recent, Writer};

const MAP: TableDefinition<&str, &[u8]> = TableDefinition::new("pseudonyms");

enum Write {
    Put(Vec<(String, Vec<u8>)>, oneshot::Sender<anyhow::Result<()>>),
}

/// The embedded store: redb, written by one thread in batches (one commit for all the
/// requests waiting), with what was recorded or resolved recently kept in memory.
pub struct Embedded {
    store: Arc<redb::Database>,
    writer: Writer<Write>,
    recent: Recent,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Embedded pseudonym store")
    }
}

impl Embedded {
    pub fn open(dir: &Path) -> anyhow::Result<Embedded> {
        let store = Arc::new(crate::core::private_files::open_database(dir, "deid.state_dir", "pseudonyms.redb")?);
        let write = store.begin_write()?;
        write.open_table(MAP)?;
        write.commit()?;
        let (writer_store, recent) = (store.clone(), recent());
        let writer_recent = recent.clone();
        let writer = Writer::start(move |receiver| write_batches(&writer_store, &writer_recent, receiver))?;
        Ok(Embedded { store, writer, recent })
    }
}

/// The writer's answer once entries sent to it are committed.
type Pending = oneshot::Receiver<anyhow::Result<()>>;

impl Embedded {
    /// Sends what is not known yet to the writer; the receiver answers once it is committed.
    fn send(&self, project: &str, entries: Vec<(String, Original)>) -> anyhow::Result<Option<Pending>> {
        let mut new = Vec::new();
        for (pseudonym, original) in entries {
            let key = key(project, &pseudonym);
            match self.recent.get(&key) {
                Some(known) if *known == original => continue,
                Some(_) => anyhow::bail!("{}", conflict(project, &pseudonym)),
                None => {}
            }
            new.push((key, original));
        }
        if new.is_empty() {
            return Ok(None);
        }
        let encoded: Vec<(String, Vec<u8>)> =
            new.iter().map(|(k, o)| Ok((k.clone(), serde_json::to_vec(o)?))).collect::<anyhow::Result<_>>()?;
        let (done, committed) = oneshot::channel();
        self.writer.send(Write::Put(encoded, done))?;
        // Known from now on: resolving reads memory first.
        for (key, original) in new {
            self.recent.insert(key, Arc::new(original));
        }
        Ok(Some(committed))
    }
}

impl PseudonymStore for Embedded {
    fn recording<'a>(
        &'a self,
        project: &'a str,
        entries: Vec<(String, Original)>,
    ) -> BoxFuture<'a, anyhow::Result<()>> {
        Box::pin(async move {
            // Entries not made durable are forgotten by the writer itself (write_batches), even
            // when nothing awaits its answer any more (the request went away).
            if let Some(committed) = self.send(project, entries)? {
                committed.await.map_err(|_| anyhow::anyhow!("the pseudonym writer stopped"))??;
            }
            Ok(())
        })
    }

    fn resolve(&self, project: &str, pseudonym: &str) -> anyhow::Result<Option<Original>> {
        let key = key(project, pseudonym);
        if let Some(known) = self.recent.get(&key) {
            return Ok(Some((*known).clone()));
        }
        let read = self.store.begin_read()?;
        let table = read.open_table(MAP)?;
        let Some(bytes) = table.get(key.as_str())? else { return Ok(None) };
        let original: Original = serde_json::from_slice(bytes.value())?;
        self.recent.insert(key, Arc::new(original.clone()));
        Ok(Some(original))
    }

    fn each(&self, visit: &mut dyn FnMut(&str, &str, Original) -> anyhow::Result<()>) -> anyhow::Result<()> {
        let read = self.store.begin_read()?;
        let table = read.open_table(MAP)?;
        for entry in table.iter()? {
            let (key, bytes) = entry?;
            let Some((project, pseudonym)) = key.value().split_once('\u{0}') else {
                anyhow::bail!("the embedded pseudonym map holds a key without a project");
            };
            visit(project, pseudonym, serde_json::from_slice(bytes.value())?)?;
        }
        Ok(())
    }
}

/// Commits what waits, in batches, and answers each write. The entries of a write that failed
/// are forgotten from `recent`, so that the next request carrying them writes them again
/// rather than taking them as known.
fn write_batches(store: &redb::Database, recent: &Recent, receiver: &mpsc::Receiver<Write>) {
    let answer = |write: Write, outcome: anyhow::Result<()>| {
        let Write::Put(entries, done) = write;
        if outcome.is_err() {
            entries.iter().for_each(|(key, _)| recent.invalidate(key));
        }
        let _ = done.send(outcome);
    };
    while let Ok(first) = receiver.recv() {
        let mut batch = vec![first];
        while let Ok(more) = receiver.try_recv() {
            batch.push(more);
            if batch.len() >= 256 {
                break;
            }
        }
        match commit(store, &batch) {
            Err(e) if batch.len() > 1 && e.to_string().contains(CONFLICT) => {
                // One request's entries conflict: the others are written on their own.
                for write in batch {
                    let outcome = commit(store, std::slice::from_ref(&write));
                    answer(write, outcome);
                }
            }
            outcome => {
                for write in batch {
                    answer(write, outcome.as_ref().map(|_| ()).map_err(|e| anyhow::anyhow!("{e}")));
                }
            }
        }
    }
}

/// The words of a refused conflicting entry (the transaction that held it is not committed).
const CONFLICT: &str = "already stands for another original";

fn conflict(project: &str, pseudonym: &str) -> String {
    format!("pseudonym {pseudonym} of project {project} {CONFLICT}: not overwritten")
}

fn commit(store: &redb::Database, batch: &[Write]) -> anyhow::Result<()> {
    let write = store.begin_write()?;
    {
        let mut table = write.open_table(MAP)?;
        for Write::Put(entries, _) in batch {
            for (key, bytes) in entries {
                if let Some(held) = table.get(key.as_str())? {
                    if held.value() != bytes.as_slice() {
                        let (project, pseudonym) = key.split_once('\u{0}').unwrap_or(("", key.as_str()));
                        tracing::error!(
                            project,
                            pseudonym,
                            "a pseudonym already stands for another original: not overwritten"
                        );
                        anyhow::bail!("{}", conflict(project, pseudonym));
                    }
                    continue;
                }
                table.insert(key.as_str(), bytes.as_slice())?;
            }
        }
    }
    write.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::privacy::pseudonyms::Kind;

    #[test]
    fn pseudonyms_resolve_per_project_and_survive_a_restart() {
        let dir = std::env::temp_dir().join(format!("pseudonyms-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let study = Original { kind: Kind::Study, value: "1.2.3".into(), issuer: None };
        {
            let store = Embedded::open(&dir).expect("open");
            store.record("a", vec![("2.25.1".into(), study.clone())]).expect("recorded");
            assert_eq!(store.resolve("a", "2.25.1").expect("read"), Some(study.clone()));
            assert_eq!(store.resolve("b", "2.25.1").expect("read"), None, "another project's pseudonym");
        }
        let store = Embedded::open(&dir).expect("reopen");
        assert_eq!(store.resolve("a", "2.25.1").expect("read"), Some(study.clone()));
        // Another original for a pseudonym already held is refused, on disk as in memory.
        let other = Original { kind: Kind::Series, value: "1.2.3".into(), issuer: None };
        let refused = store.record("a", vec![("2.25.1".into(), other.clone())]).expect_err("conflict");
        assert!(refused.to_string().contains(CONFLICT), "{refused}");
        drop(store);
        let store = Embedded::open(&dir).expect("reopen");
        assert!(store.record("a", vec![("2.25.1".into(), other)]).is_err(), "refused from disk too");
        assert_eq!(store.resolve("a", "2.25.1").expect("read"), Some(study.clone()));
        // A write the disk refuses, whose request stopped waiting for it (polled once, then
        // dropped): its entry is forgotten all the same, never resolved from memory.
        drop(store);
        let store = Embedded::open(&dir).expect("reopen");
        let third = Original { kind: Kind::Instance, value: "1.2.3".into(), issuer: None };
        assert!(futures::FutureExt::now_or_never(store.recording("a", vec![("2.25.1".into(), third)])).is_none());
        for _ in 0..100 {
            if store.resolve("a", "2.25.1").expect("read") == Some(study.clone()) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(store.resolve("a", "2.25.1").expect("read"), Some(study));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
