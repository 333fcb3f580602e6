//! Key naming on Redis.
//!
//! Every key gets the instance prefix. On a single server the key `K` is stored as
//! `<prefix>K`, its in-flight-write mark as `<prefix>K:w` and its read lease as
//! `<prefix>K:l`. On a cluster the key is wrapped in a hash tag, `<prefix>{K}`, `<prefix>{K}:w`
//! and `<prefix>{K}:l`, so that an entry, its mark and its lease always share a hash slot and
//! one script can touch them atomically.
//!
//! An owner's key-value storage (see [`crate::backends::cache::LruStore`]): the value of
//! `key` is `<prefix><owner>:<key>` and the owner's index `<prefix><owner>#lru`; on a cluster
//! the owner is the hash tag, `<prefix>{<owner>}:<key>` and `<prefix>{<owner>}#lru`, so one
//! script reaches all of them.

use std::collections::BTreeMap;

/// How this instance names its keys.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    clustered: bool,
}

impl Keys {
    /// Keys under `prefix`, hash-tagged when `clustered`.
    pub fn new(prefix: &str, clustered: bool) -> Self {
        Self {
            prefix: prefix.to_owned(),
            clustered,
        }
    }

    /// Whether the server is a cluster.
    pub fn clustered(&self) -> bool {
        self.clustered
    }

    /// The stored name of `key`.
    pub fn key(&self, key: &str) -> String {
        if self.clustered {
            format!("{}{{{}}}", self.prefix, key)
        } else {
            format!("{}{}", self.prefix, key)
        }
    }

    /// The stored name of `key`'s in-flight-write mark.
    pub fn mark(&self, key: &str) -> String {
        let mut mark = self.key(key);
        mark.push_str(":w");
        mark
    }

    /// The stored name of `key`'s read lease.
    pub fn lease(&self, key: &str) -> String {
        let mut lease = self.key(key);
        lease.push_str(":l");
        lease
    }

    /// The prefix of the stored names of an owner's values (`<key>` follows it).
    pub fn owned_prefix(&self, owner: &str) -> String {
        if self.clustered {
            format!("{}{{{}}}:", self.prefix, owner)
        } else {
            format!("{}{}:", self.prefix, owner)
        }
    }

    /// The stored name of an owner's index (its keys by last access).
    pub fn owner_index(&self, owner: &str) -> String {
        if self.clustered {
            format!("{}{{{}}}#lru", self.prefix, owner)
        } else {
            format!("{}{}#lru", self.prefix, owner)
        }
    }

    /// The caller's name of a stored key (the inverse of [`Keys::key`]).
    pub fn unkey(&self, stored: &str) -> Option<String> {
        let rest = stored.strip_prefix(self.prefix.as_str())?;
        if !self.clustered {
            return Some(rest.to_owned());
        }
        let rest = rest.strip_prefix('{')?;
        let close = rest.rfind('}')?;
        Some(format!("{}{}", &rest[..close], &rest[close + 1..]))
    }

    /// The `SCAN MATCH` pattern of the keys starting with `prefix`.
    pub fn scan_pattern(&self, prefix: &str) -> String {
        let escaped = crate::backends::redis_client::glob_escape;
        if self.clustered {
            format!("{}{{{}*", escaped(&self.prefix), escaped(prefix))
        } else {
            format!("{}{}*", escaped(&self.prefix), escaped(prefix))
        }
    }

    /// Splits item indices by the cluster hash slot of their stored key; one group on a
    /// single server.
    pub fn groups(&self, stored_keys: &[String]) -> Vec<Vec<usize>> {
        if !self.clustered || stored_keys.len() < 2 {
            return vec![(0..stored_keys.len()).collect()];
        }
        let mut by_slot: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
        for (i, k) in stored_keys.iter().enumerate() {
            by_slot
                .entry(fred::util::redis_keyslot(k.as_bytes()))
                .or_default()
                .push(i);
        }
        by_slot.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    #[test]
    fn a_cluster_key_its_mark_and_its_lease_share_a_hash_slot() {
        let keys = Keys::new("p:", true);
        let slot = |k: &str| fred::util::redis_keyslot(k.as_bytes());
        assert_eq!(slot(&keys.key("meal:1")), slot(&keys.mark("meal:1")));
        assert_eq!(slot(&keys.key("meal:1")), slot(&keys.lease("meal:1")));
        assert_eq!(keys.unkey(&keys.key("meal:1")).as_deref(), Some("meal:1"));
    }

    #[test]
    fn glob_characters_in_a_prefix_are_escaped() {
        let keys = Keys::new("a*b?[c]\\", false);
        assert_eq!(keys.scan_pattern("x"), "a\\*b\\?\\[c\\]\\\\x*");
    }
}
