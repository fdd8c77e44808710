//! A map whose entries expire: the short-lived caches of the service (the webhook secrets of
//! an integration, organizations seen to exist). Bounded: when full it is emptied at once
//! (cheaper than eviction, and a cache emptied only costs the next lookups a query).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

pub(crate) struct ExpiringMap<K, V> {
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K: Eq + Hash, V: Clone> ExpiringMap<K, V> {
    /// Entries live `ttl`; at most `capacity` of them.
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The value put under `key` less than `ttl` ago.
    pub(crate) fn get(&self, key: &K) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    /// The value put under `key` less than `ttl` before `now`.
    pub(crate) fn get_at(&self, key: &K, now: Instant) -> Option<V> {
        self.lock()
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.ttl)
            .map(|(_, value)| value.clone())
    }

    pub(crate) fn put(&self, key: K, value: V) {
        self.put_at(key, value, Instant::now());
    }

    /// Puts `value` under `key` as of `at`; a full map is emptied first.
    pub(crate) fn put_at(&self, key: K, value: V, at: Instant) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity {
            entries.clear();
        }
        entries.insert(key, (at, value));
    }

    /// Entries held, expired ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// A panic elsewhere while holding the lock leaves a map that is still whole.
    fn lock(&self) -> MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_expire_and_the_map_stays_bounded() {
        let map = ExpiringMap::new(Duration::from_secs(1), 3);
        let now = Instant::now();
        map.put_at(1, "a", now);
        assert_eq!(map.get_at(&1, now), Some("a"));
        assert_eq!(map.get_at(&1, now + Duration::from_millis(999)), Some("a"));
        assert_eq!(map.get_at(&1, now + Duration::from_secs(1)), None);
        assert_eq!(map.get_at(&2, now), None);
        for key in 2..=4 {
            map.put_at(key, "b", now);
        }
        assert!(map.len() <= 3, "bounded");
    }
}
