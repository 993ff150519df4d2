//! A map from ids to values split into shards that grow one at a time.
//!
//! A hash table doubles its capacity by rehashing every entry at once; with a million
//! rollouts that took 120 ms, all of it under the store's lock, so every request waited.
//! Each shard holds a sixty-fourth of the keys and grows on its own, so a growth step
//! costs a sixty-fourth as much and different inserts pay for different shards.

use std::hash::BuildHasher as _;
use std::ops::Index;

use super::state::HashMap;

const SHARDS: usize = 64;

/// A `HashMap<String, V>` that never rehashes more than a shard at a time.
pub(super) struct ShardedMap<V> {
    shards: Box<[HashMap<String, V>]>,
    /// Picks the shard; each shard's own table hashes with its own seed.
    pick: foldhash::fast::RandomState,
    len: usize,
}

impl<V> Default for ShardedMap<V> {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| HashMap::default()).collect(),
            pick: foldhash::fast::RandomState::default(),
            len: 0,
        }
    }
}

impl<V> ShardedMap<V> {
    fn shard(&self, key: &str) -> usize {
        // The modulus keeps the low bits; any bits of a good hash spread keys evenly.
        (self.pick.hash_one(key) % SHARDS as u64) as usize
    }

    pub(super) fn get(&self, key: &str) -> Option<&V> {
        self.shards[self.shard(key)].get(key)
    }

    pub(super) fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        let shard = self.shard(key);
        self.shards[shard].get_mut(key)
    }

    pub(super) fn contains_key(&self, key: &str) -> bool {
        self.shards[self.shard(key)].contains_key(key)
    }

    /// Inserts or replaces; returns the replaced value.
    pub(super) fn insert(&mut self, key: String, value: V) -> Option<V> {
        let shard = self.shard(&key);
        let old = self.shards[shard].insert(key, value);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Removes and returns the value under `key`.
    pub(super) fn remove(&mut self, key: &str) -> Option<V> {
        let shard = self.shard(key);
        let old = self.shards[shard].remove(key);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }
}

impl<V, Q: AsRef<str> + ?Sized> Index<&Q> for ShardedMap<V> {
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key.as_ref()).expect("key present in ShardedMap")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map() {
        let mut map = ShardedMap::default();
        for i in 0..1000 {
            assert_eq!(map.insert(format!("ro-{i}"), i), None);
        }
        assert_eq!(map.insert("ro-7".to_owned(), 70), Some(7));
        assert_eq!(map.len(), 1000);
        assert_eq!(map["ro-7"], 70);
        assert_eq!(map[&"ro-8".to_owned()], 8);
        *map.get_mut("ro-9").unwrap() += 1;
        assert_eq!(map.get("ro-9"), Some(&10));
        assert!(map.contains_key("ro-999"));
        assert!(!map.contains_key("ro-1000"));
        assert_eq!(map.get("nope"), None);
        assert_eq!(map.remove("ro-999"), Some(999));
        assert_eq!(map.remove("ro-999"), None);
        assert!(!map.contains_key("ro-999"));
        assert_eq!(map.len(), 999);
        // Keys spread over the shards.
        assert!(map.shards.iter().all(|s| !s.is_empty()));
    }
}
