//! Meals and the write-through cache (SPEC §4).
