//! The disk tier of the retrieval cache (`cache.disk_dir`, bounded by `cache.disk`): one file
//! per instance and per manifest, named by a hash of its key (no UID in a file name), written to
//! a temporary name and renamed, so that a crash never leaves a partial file under a real name.
//! Each file carries the SHA-256 and length of its content: a file that does not match
//! (corrupted, truncated) is deleted when read, and the instance is fetched again.
//!
//! The index (name → size) is rebuilt from the directory at start, so the tier survives a
//! restart; it is bounded in bytes (moka, weighed by size), evicted files are deleted. A write
//! that fails (disk full, permissions) turns the tier off with one error in the log: the service
//! goes on from memory and the PACS.
//!
//! Markers (a study's manifests forgotten at a time) live apart, in `markers/`, outside the
//! byte bound: evicting one would make stale manifests trusted again after a restart. They are
//! a few bytes each and deleted at start once older than the manifests they could override.
//!
//! Every function here does blocking IO: call them off the async runtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

const MAGIC: &[u8; 8] = b"DWGCACH1";
const HEADER: usize = MAGIC.len() + 32 + 8;
const MARKERS: &str = "markers";

#[derive(Debug)]
pub(crate) struct DiskTier {
    dir: PathBuf,
    index: moka::sync::Cache<String, u64>,
    off: AtomicBool,
}

/// What a marker read found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Marker {
    Absent,
    Present(Vec<u8>),
    /// Unreadable or not what was written: whatever it guarded is not to be trusted.
    Damaged,
}

/// The file name of a key: hex SHA-256 of its parts.
pub(crate) fn name_of(kind: &str, parts: &[&str]) -> String {
    let mut hash = Sha256::new();
    hash.update(kind.as_bytes());
    for part in parts {
        hash.update([0]);
        hash.update(part.as_bytes());
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

impl DiskTier {
    /// Opens the tier, deleting leftovers of interrupted writes and markers older than
    /// `marker_life`, and indexing what is there.
    pub(crate) fn open(dir: &Path, bytes: u64, marker_life: std::time::Duration) -> anyhow::Result<DiskTier> {
        crate::core::private_files::create_dir(&dir.join(MARKERS))
            .map_err(|e| anyhow::anyhow!("cannot create cache.disk_dir {}: {e}", dir.display()))?;
        for entry in std::fs::read_dir(dir.join(MARKERS))? {
            let entry = entry?;
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            if age > marker_life || entry.file_name().to_string_lossy().ends_with(".partial") {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let index_dir = dir.to_owned();
        let index = moka::sync::Cache::builder()
            .max_capacity(bytes)
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|_: &String, size: &u64| u32::try_from(*size).unwrap_or(u32::MAX))
            .eviction_listener(move |name: std::sync::Arc<String>, _, cause| {
                if cause != moka::notification::RemovalCause::Replaced {
                    let _ = std::fs::remove_file(index_dir.join(name.as_str()));
                }
            })
            .build();
        let mut found = 0u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            if name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit()) {
                let size = entry.metadata()?.len();
                index.insert(name, size);
                found += size;
            }
        }
        index.run_pending_tasks();
        tracing::info!(dir = %dir.display(), bytes = found, "disk cache indexed");
        Ok(DiskTier { dir: dir.to_owned(), index, off: AtomicBool::new(false) })
    }

    /// The content stored under `name`, if it is there and intact (a damaged file is deleted).
    pub(crate) fn read(&self, name: &str) -> Option<Vec<u8>> {
        if self.off.load(Ordering::Relaxed) || !self.index.contains_key(name) {
            return None;
        }
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        match verify(&bytes) {
            Some(content) => Some(content.to_vec()),
            None => {
                tracing::warn!(file = %path.display(), "damaged cache file deleted: what it held is fetched again");
                self.index.invalidate(name);
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores `content` under `name`; on failure the tier is turned off.
    pub(crate) fn write(&self, name: &str, content: &[u8]) {
        if self.off.load(Ordering::Relaxed) {
            return;
        }
        if self.write_file(&self.dir.join(name), content) {
            self.index.insert(name.to_owned(), (HEADER + content.len()) as u64);
            self.index.run_pending_tasks();
        }
    }

    /// Stores a marker, outside the byte bound; on failure the tier is turned off.
    pub(crate) fn write_marker(&self, name: &str, content: &[u8]) {
        if !self.off.load(Ordering::Relaxed) {
            self.write_file(&self.dir.join(MARKERS).join(name), content);
        }
    }

    /// A marker, if any (a damaged one is deleted).
    pub(crate) fn read_marker(&self, name: &str) -> Marker {
        let path = self.dir.join(MARKERS).join(name);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Marker::Absent,
            Err(_) => Marker::Damaged,
            Ok(bytes) => match verify(&bytes) {
                Some(content) => Marker::Present(content.to_vec()),
                None => {
                    tracing::warn!(file = %path.display(), "damaged cache marker deleted");
                    let _ = std::fs::remove_file(&path);
                    Marker::Damaged
                }
            },
        }
    }

    /// Writes `content` with its header to a temporary name, then renames it to `path`; on
    /// failure the tier is turned off. Whether it was written.
    fn write_file(&self, path: &Path, content: &[u8]) -> bool {
        let partial = path.with_extension("partial");
        let written = (|| -> std::io::Result<()> {
            let mut file =
                crate::core::private_files::options().write(true).create(true).truncate(true).open(&partial)?;
            file.write_all(MAGIC)?;
            file.write_all(&Sha256::digest(content))?;
            file.write_all(&(content.len() as u64).to_le_bytes())?;
            file.write_all(content)?;
            std::fs::rename(&partial, path)
        })();
        match written {
            Ok(()) => true,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                if !self.off.swap(true, Ordering::Relaxed) {
                    tracing::error!(dir = %self.dir.display(), error = %e, "cannot write the disk cache: it is off until restart");
                }
                false
            }
        }
    }

    /// True when `name` is indexed.
    pub(crate) fn contains(&self, name: &str) -> bool {
        !self.is_off() && self.index.contains_key(name)
    }

    /// Files and bytes indexed (as of the last write: no eviction, so no file IO, here).
    pub(crate) fn size(&self) -> (u64, u64) {
        (self.index.entry_count(), self.index.weighted_size())
    }

    pub(crate) fn is_off(&self) -> bool {
        self.off.load(Ordering::Relaxed)
    }
}

/// The content of a cache file, if its header matches it.
fn verify(bytes: &[u8]) -> Option<&[u8]> {
    if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let digest = &bytes[MAGIC.len()..MAGIC.len() + 32];
    let length = u64::from_le_bytes(bytes[MAGIC.len() + 32..HEADER].try_into().ok()?);
    let content = &bytes[HEADER..];
    (content.len() as u64 == length && Sha256::digest(content).as_slice() == digest).then_some(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: std::time::Duration = std::time::Duration::from_secs(3600);

    #[test]
    fn markers_stay_whatever_the_churn_and_go_once_too_old_to_matter() {
        let dir = std::env::temp_dir().join(format!("disk-cache-markers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tier = DiskTier::open(&dir, 2_000, HOUR).expect("open");
        let marker = name_of("study-forgotten", &["1.2.3"]);
        tier.write_marker(&marker, &42u64.to_le_bytes());
        for i in 0..20 {
            tier.write(&name_of("instance", &[&i.to_string()]), &[1u8; 900]);
        }
        let tier = DiskTier::open(&dir, 2_000, HOUR).expect("reopen");
        assert_eq!(tier.read_marker(&marker), Marker::Present(42u64.to_le_bytes().to_vec()));
        assert_eq!(tier.read_marker(&name_of("study-forgotten", &["9.9"])), Marker::Absent);
        // Damaged: reported (so that what it guards is not trusted) and deleted.
        std::fs::write(dir.join(MARKERS).join(&marker), b"DWGCACH1 broken").expect("write");
        assert_eq!(tier.read_marker(&marker), Marker::Damaged);
        assert_eq!(tier.read_marker(&marker), Marker::Absent);
        // Older than the manifests it could override: gone at the next start.
        tier.write_marker(&marker, &42u64.to_le_bytes());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let _tier = DiskTier::open(&dir, 2_000, std::time::Duration::from_millis(10)).expect("reopen");
        assert!(!dir.join(MARKERS).join(&marker).exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn files_survive_a_reopen_damage_is_detected_and_the_bound_holds() {
        let dir = std::env::temp_dir().join(format!("disk-cache-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let tier = DiskTier::open(&dir, 10_000, HOUR).expect("open");
        let a = name_of("instance", &["p", "1.2", "1.2.3"]);
        tier.write(&a, &[7u8; 1000]);
        assert_eq!(tier.read(&a).as_deref(), Some(&[7u8; 1000][..]));
        std::fs::write(dir.join("leftover.partial"), b"x").expect("write");
        let tier = DiskTier::open(&dir, 10_000, HOUR).expect("reopen");
        assert!(!dir.join("leftover.partial").exists());
        assert_eq!(tier.read(&a).map(|c| c.len()), Some(1000));
        // A flipped byte: detected, deleted, a miss.
        let mut bytes = std::fs::read(dir.join(&a)).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(dir.join(&a), bytes).expect("write");
        assert_eq!(tier.read(&a), None);
        assert!(!dir.join(&a).exists());
        // Churn: never more than the bound on disk.
        for i in 0..50 {
            tier.write(&name_of("instance", &[&i.to_string()]), &[1u8; 900]);
            let on_disk: u64 = std::fs::read_dir(&dir)
                .expect("dir")
                .map(|e| e.expect("entry").metadata().expect("meta"))
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum();
            assert!(on_disk <= 10_000, "{on_disk} bytes on disk");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
