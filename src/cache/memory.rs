//! The in-process backend: an LRU bounded by bytes. One lock, held for a map operation only
//! (never across an await); entries are shared (`Arc`), so a hit copies nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use hashbrown::HashMap;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::entry::Entry;
use super::key::Key;
use crate::metrics::Metrics;

struct Slot {
    entry: Arc<Entry>,
    stored_at: Instant,
    tick: u64,
}

#[derive(Default)]
struct Lru {
    map: HashMap<Key, Slot>,
    /// Use order: oldest tick first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
}

impl Lru {
    fn remove(&mut self, key: &Key) -> Option<Slot> {
        let slot = self.map.remove(key)?;
        self.order.remove(&slot.tick);
        self.bytes -= slot.entry.size();
        Some(slot)
    }
}

/// Entries in process.
pub struct MemoryStore {
    lru: Mutex<Lru>,
    max_bytes: usize,
    ttl: Duration,
    metrics: Arc<Metrics>,
}

impl MemoryStore {
    /// A store of at most `max_bytes` whose entries live `ttl`.
    pub fn new(max_bytes: usize, ttl: Duration, metrics: Arc<Metrics>) -> MemoryStore {
        MemoryStore {
            lru: Mutex::new(Lru::default()),
            max_bytes,
            ttl,
            metrics,
        }
    }

    /// The entry of `key` and its age, if it is younger than the TTL (an expired one is
    /// dropped); marks it used.
    pub fn get(&self, key: &Key) -> Option<(Arc<Entry>, Duration)> {
        let now = Instant::now();
        let mut lru = self.lru.lock();
        let age = now.saturating_duration_since(lru.map.get(key)?.stored_at);
        if age >= self.ttl {
            lru.remove(key);
            drop(lru);
            self.publish_after_change();
            return None;
        }
        lru.tick += 1;
        let tick = lru.tick;
        let slot = lru.map.get_mut(key)?;
        let old = std::mem::replace(&mut slot.tick, tick);
        let entry = slot.entry.clone();
        lru.order.remove(&old);
        lru.order.insert(tick, *key);
        Some((entry, age))
    }

    /// Stores `entry` unless a live entry holds `key` (the first answer wins, as Redis's
    /// `SET NX`); evicts the least recently used entries past `max_bytes`. False: not stored.
    pub fn put(&self, key: Key, entry: Arc<Entry>) -> bool {
        let size = entry.size();
        if size > self.max_bytes {
            return false;
        }
        let now = Instant::now();
        let mut evicted = 0;
        {
            let mut lru = self.lru.lock();
            if let Some(s) = lru.map.get(&key) {
                if now.saturating_duration_since(s.stored_at) < self.ttl {
                    return false;
                }
                lru.remove(&key);
            }
            while lru.bytes + size > self.max_bytes {
                let Some((_, oldest)) = lru.order.pop_first() else {
                    break;
                };
                if let Some(s) = lru.map.remove(&oldest) {
                    lru.bytes -= s.entry.size();
                    evicted += 1;
                }
            }
            lru.tick += 1;
            let tick = lru.tick;
            lru.order.insert(tick, key);
            lru.bytes += size;
            lru.map.insert(
                key,
                Slot {
                    entry,
                    stored_at: now,
                    tick,
                },
            );
        }
        self.metrics.cache.evictions.add(evicted);
        self.publish_after_change();
        true
    }

    fn publish_after_change(&self) {
        let (n, bytes) = {
            let lru = self.lru.lock();
            (lru.map.len(), lru.bytes)
        };
        let c = &self.metrics.cache;
        c.entries.set(i64::try_from(n).unwrap_or(i64::MAX));
        c.bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MetricsOptions;
    use bytes::Bytes;

    fn entry(n: usize) -> Arc<Entry> {
        Arc::new(Entry {
            stream: false,
            body: Bytes::from(vec![b'x'; n]),
            id: None,
            model: "m".into(),
            usage: Default::default(),
            cost_nanos: 0,
            created_ms: 0,
        })
    }

    fn store(max: usize) -> MemoryStore {
        MemoryStore::new(
            max,
            Duration::from_secs(60),
            Metrics::new(&MetricsOptions::default()),
        )
    }

    #[test]
    fn lru_evicts_the_least_recently_used_within_the_byte_bound() {
        let one = entry(1000).size();
        let s = store(3 * one);
        assert!(s.put([1; 32], entry(1000)));
        assert!(s.put([2; 32], entry(1000)));
        assert!(s.put([3; 32], entry(1000)));
        assert!(s.get(&[1; 32]).is_some()); // 1 is now the most recently used
        assert!(s.put([4; 32], entry(1000)));
        assert!(s.get(&[2; 32]).is_none(), "2 was least recently used");
        assert!(s.get(&[1; 32]).is_some());
        assert!(s.get(&[3; 32]).is_some());
        assert!(s.get(&[4; 32]).is_some());
        assert_eq!(s.metrics.cache.evictions.get(), 1);
        assert_eq!(
            s.metrics.cache.bytes.get(),
            i64::try_from(3 * one).expect("fits")
        );
        assert!(
            !s.put([5; 32], entry(4 * one)),
            "larger than the whole cache"
        );
    }

    #[test]
    fn first_answer_wins() {
        let s = store(1 << 20);
        assert!(s.put([1; 32], entry(10)));
        assert!(!s.put([1; 32], entry(20)));
        assert_eq!(s.get(&[1; 32]).map(|(e, _)| e.body.len()), Some(10));
    }

    #[tokio::test(start_paused = true)]
    async fn entries_expire_after_the_ttl() {
        let s = store(1 << 20);
        assert!(s.put([1; 32], entry(10)));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(s.get(&[1; 32]).map(|(_, age)| age.as_secs()), Some(59));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(s.get(&[1; 32]).is_none());
        assert_eq!(s.metrics.cache.entries.get(), 0);
        assert!(s.put([1; 32], entry(10)), "an expired entry is replaced");
    }
}
