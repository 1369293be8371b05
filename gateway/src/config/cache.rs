//! `[cache]`: the retrieval cache's memory and disk tiers, how long a retrieval is trusted, the
//! search answers' lifetime and the transcoded instances' memory.

use super::problems::Problems;
use super::{raw, CacheConfig};

pub(super) fn cache(raw: Option<raw::Cache>, problems: &mut Problems) -> CacheConfig {
    let text = |pick: fn(&raw::Cache) -> Option<&String>| raw.as_ref().and_then(pick).map(String::as_str);
    let memory_bytes = problems.size("cache.memory", text(|c| c.memory.as_ref()), "512MiB");
    let disk_bytes = problems.size("cache.disk", text(|c| c.disk.as_ref()), "0B");
    let ttl = problems.duration("cache.ttl", text(|c| c.ttl.as_ref()), "10m");
    let search_ttl = problems.duration("cache.search_ttl", text(|c| c.search_ttl.as_ref()), "30s");
    let transcoded_bytes = problems.size("cache.transcoded_memory", text(|c| c.transcoded_memory.as_ref()), "256MiB");
    CacheConfig { memory_bytes, disk_dir: raw.and_then(|c| c.disk_dir), disk_bytes, ttl, search_ttl, transcoded_bytes }
}
