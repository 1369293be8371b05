//! Instances as the gateway transcoded them (`cache.transcoded_memory`), so that a retrieval
//! asked for again in the same uncompressed transfer syntax sends what was decoded the first
//! time instead of decoding every instance again.
//!
//! The retrieval cache (cache.rs) keeps instances as stored; this keeps the decoded form beside
//! it, in memory only, least recently used first out, each entry trusted for `cache.ttl` like
//! what retrievals yielded. An entry is keyed by the project's cache scope, the SOP Instance UID
//! as the client sees it (the pseudonym when de-identifying) and the transfer syntax: one
//! project never sees another's.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::config::CacheConfig;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    scope: String,
    instance: String,
    transfer_syntax: &'static str,
}

/// Transcoded instances, bounded in bytes. Cheap to share.
pub(crate) struct TranscodedCache {
    entries: Option<moka::sync::Cache<Key, Bytes>>,
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
}

impl std::fmt::Debug for TranscodedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TranscodedCache").field("bytes", &self.bytes()).finish()
    }
}

impl TranscodedCache {
    pub(crate) fn new(config: &CacheConfig) -> TranscodedCache {
        let entries = (config.transcoded_bytes > 0 && !config.ttl.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(config.transcoded_bytes)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .time_to_live(config.ttl)
                .weigher(|_: &Key, bytes: &Bytes| u32::try_from(bytes.len()).unwrap_or(u32::MAX))
                .build()
        });
        TranscodedCache { entries, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The instance `instance` of the project scope `scope` as transcoded to `transfer_syntax`.
    pub(crate) fn get(&self, scope: &str, instance: &str, transfer_syntax: &'static str) -> Option<Bytes> {
        let entries = self.entries.as_ref()?;
        let found = entries.get(&Key { scope: scope.to_owned(), instance: instance.to_owned(), transfer_syntax });
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub(crate) fn keep(&self, scope: &str, instance: &str, transfer_syntax: &'static str, part10: Bytes) {
        if let Some(entries) = &self.entries {
            entries.insert(Key { scope: scope.to_owned(), instance: instance.to_owned(), transfer_syntax }, part10);
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> u64 {
        self.entries.as_ref().map(|e| e.weighted_size()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn config(transcoded_bytes: u64) -> CacheConfig {
        CacheConfig {
            memory_bytes: 0,
            disk_dir: None,
            disk_bytes: 0,
            ttl: Duration::from_secs(600),
            search_ttl: Duration::ZERO,
            transcoded_bytes,
        }
    }

    #[test]
    fn kept_per_project_and_syntax_and_bounded() {
        let cache = TranscodedCache::new(&config(1000));
        cache.keep("lung", "1.2.3", "1.2.840.10008.1.2.1", Bytes::from(vec![1; 400]));
        assert!(cache.get("lung", "1.2.3", "1.2.840.10008.1.2.1").is_some());
        assert!(cache.get("liver", "1.2.3", "1.2.840.10008.1.2.1").is_none(), "another project's");
        assert!(cache.get("lung", "1.2.3", "1.2.840.10008.1.2").is_none(), "another syntax");
        assert_eq!((cache.hits.load(Ordering::Relaxed), cache.misses.load(Ordering::Relaxed)), (1, 2));
        for n in 0..10 {
            cache.keep("lung", &format!("1.2.4.{n}"), "1.2.840.10008.1.2.1", Bytes::from(vec![1; 400]));
        }
        if let Some(entries) = &cache.entries {
            entries.run_pending_tasks();
        }
        assert!(cache.bytes() <= 1000, "{} bytes held", cache.bytes());
        let off = TranscodedCache::new(&config(0));
        off.keep("lung", "1.2.3", "1.2.840.10008.1.2.1", Bytes::from_static(b"x"));
        assert!(off.get("lung", "1.2.3", "1.2.840.10008.1.2.1").is_none());
    }
}
