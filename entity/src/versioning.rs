//! Row versions of entities whose ids can come back after a hard delete (trainers, Pokémon).
//!
//! A version must grow across the whole life of an *id*, not only of a row: a deleted
//! trainer leaves a tombstone in the cache, and a trainer created later under the same id
//! must outrank it. So versions are microseconds since the epoch, and never less than the
//! previous version + 1 (two writes in one microsecond, or a clock that stepped back).

/// The version of a row written now, whose previous version was `prev` (if it had one).
pub fn next_version(prev: Option<i64>) -> i64 {
    let now = chrono::Utc::now().timestamp_micros();
    match prev {
        Some(p) => now.max(p.saturating_add(1)),
        None => now,
    }
}
