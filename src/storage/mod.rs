//! Key-value storage (SPEC §9): per-user string values in the cache tier, or in a Redis of
//! their own (`ARENA_STORAGE_REDIS_URL`), evicted least recently used first at the
//! configured capacity (the embedded cache's LRU; with Redis, its `maxmemory-policy
//! allkeys-lru`).

mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{StorageMutation, StorageQuery};
