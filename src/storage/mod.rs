//! Key-value storage: per-user string values, evicted least recently used first at
//! a configured capacity. Embedded: an in-process LRU of its own (`ARENA_CACHE_CAPACITY`
//! values). With `ARENA_STORAGE_REDIS_URL`: a Redis of their own, run with `maxmemory` and
//! `maxmemory-policy allkeys-lru`. With only `REDIS_URL`: the cache tier's Redis, which must
//! not evict (see the README), so values are kept until deleted.

mod resolvers;
pub mod service;
pub mod types;

pub use resolvers::{StorageMutation, StorageQuery};
