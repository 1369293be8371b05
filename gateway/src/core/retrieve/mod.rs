//! Retrieval: the plan (where a target's instances are) and its stream (`locate`), the
//! retrieval cache with its flights and disk tier, and the cache of decoded instances.

pub mod cache;
pub mod disk_cache;
pub mod locate;
pub mod transcoded_cache;
