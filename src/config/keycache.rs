//! The keys a thread has authenticated, so that a key presented again skips SHA-256.
//!
//! The key store keeps only SHA-256 hashes of the keys; hashing the presented key was 3,900
//! instructions a request under callgrind (which hides SHA-NI; about 1,000 natively), more
//! than any other step of authenticating. Each thread keeps a small direct-mapped table from
//! a keyed hash of a presented key to the key it authenticated as: a key seen before costs
//! two SipHash-2-4 passes (~400 instructions at 40 bytes) and one comparison.
//!
//! - The key itself is never kept: a slot holds a 128-bit tag, SipHash-2-4 under two random
//!   128-bit keys drawn once per thread from the system's generator. Presenting a wrong key
//!   that matches a cached tag means guessing a PRF's output: 2^-128 a try.
//! - Only keys that authenticated are cached; an unknown key always pays SHA-256 and the
//!   store's lookup, as before.
//! - A slot is valid only for the [`KeyStore`](super::KeyStore) that filled it (its
//!   generation, unique in the process): a store rebuilt from a new config never answers from
//!   another store's slots, so a key removed from the config stops working at once. Several
//!   gateways in one process (the tests) never see each other's keys.
//! - Per thread, not per connection: the benchmark's clients (and a gateway behind a shared
//!   load balancer) carry several keys on one connection, and a worker thread serves every
//!   request of its connections, so one table per worker sees each key once.

use std::cell::RefCell;
use std::hash::Hasher;
use std::sync::Arc;

use super::validate::KeyInfo;

/// Slots per thread (32 bytes each); a worker serving more distinct keys than this at once
/// still hits for most of them (direct-mapped: two keys share a slot only when their tags'
/// low bits agree).
const SLOTS: usize = 256;

/// A 128-bit keyed hash of a presented key.
type Tag = [u64; 2];

struct Slot {
    generation: u64,
    tag: Tag,
    key: Arc<KeyInfo>,
}

struct Table {
    /// Two SipHash-2-4 keys (k0, k1), independent and random.
    sip: [[u64; 2]; 2],
    slots: Vec<Option<Slot>>,
}

impl Table {
    fn new() -> Option<Table> {
        use ring::rand::SecureRandom;
        let mut seed = [0u8; 32];
        ring::rand::SystemRandom::new().fill(&mut seed).ok()?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&seed[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        let mut slots = Vec::with_capacity(SLOTS);
        slots.resize_with(SLOTS, || None);
        Some(Table {
            sip: [[word(0), word(1)], [word(2), word(3)]],
            slots,
        })
    }

    fn tag(&self, presented: &[u8]) -> Tag {
        self.sip.map(|[k0, k1]| {
            // The one keyed SipHash in std (2-4, the rounds its authors recommend for a MAC);
            // `DefaultHasher` (1-3) cannot be given keys.
            #[allow(deprecated)]
            let mut h = std::hash::SipHasher::new_with_keys(k0, k1);
            h.write(presented);
            h.finish()
        })
    }
}

thread_local! {
    /// `None` until first used, and on a thread where the system generator failed (every
    /// lookup then goes to the store).
    static TABLE: RefCell<Option<Option<Table>>> = const { RefCell::new(None) };
}

/// The key `presented` authenticates as in the store of `generation`: from this thread's
/// table when it authenticated there before, else from `lookup` (SHA-256 and the store),
/// remembered when it is known.
pub(super) fn authenticate(
    generation: u64,
    presented: &[u8],
    lookup: impl FnOnce() -> Option<Arc<KeyInfo>>,
) -> Option<Arc<KeyInfo>> {
    TABLE.with(|t| {
        let mut t = t.borrow_mut();
        let Some(table) = t.get_or_insert_with(Table::new) else {
            return lookup();
        };
        let tag = table.tag(presented);
        let slot = &mut table.slots[(tag[0] as usize) % SLOTS];
        if let Some(s) = slot
            && s.generation == generation
            && s.tag == tag
        {
            return Some(s.key.clone());
        }
        let key = lookup()?;
        *slot = Some(Slot {
            generation,
            tag,
            key: key.clone(),
        });
        Some(key)
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    fn key(name: &str) -> Arc<KeyInfo> {
        Arc::new(KeyInfo {
            name: name.into(),
            team: "t".into(),
            rule: None,
            team_rules: None,
            series: Default::default(),
        })
    }

    /// `authenticate` with a lookup that counts its calls.
    fn auth(
        generation: u64,
        presented: &str,
        found: Option<&Arc<KeyInfo>>,
        calls: &Cell<u32>,
    ) -> Option<Arc<str>> {
        authenticate(generation, presented.as_bytes(), || {
            calls.set(calls.get() + 1);
            found.cloned()
        })
        .map(|k| k.name.clone())
    }

    #[test]
    fn a_known_key_is_looked_up_once_per_store() {
        let (a, calls) = (key("a"), Cell::new(0));
        assert_eq!(
            auth(1_000_001, "tg-cache-a", Some(&a), &calls).as_deref(),
            Some("a")
        );
        assert_eq!(
            auth(1_000_001, "tg-cache-a", Some(&a), &calls).as_deref(),
            Some("a")
        );
        assert_eq!(calls.get(), 1, "the second request comes from the table");
        // Another store (a config rebuilt without the key) asks its own lookup.
        assert_eq!(auth(1_000_002, "tg-cache-a", None, &calls), None);
        assert_eq!(calls.get(), 2);
        assert_eq!(auth(1_000_002, "tg-cache-a", None, &calls), None);
        assert_eq!(calls.get(), 3, "an unknown key is never remembered");
    }

    #[test]
    fn only_the_presented_key_hits() {
        let (a, b, calls) = (key("a"), key("b"), Cell::new(0));
        assert_eq!(
            auth(1_000_003, "tg-cache-b1", Some(&a), &calls).as_deref(),
            Some("a")
        );
        // Keys that differ in one byte, or are a prefix, are other keys.
        for other in ["tg-cache-b2", "tg-cache-b", "tg-cache-b1 ", "TG-CACHE-B1"] {
            let before = calls.get();
            assert_eq!(
                auth(1_000_003, other, Some(&b), &calls).as_deref(),
                Some("b")
            );
            assert_eq!(calls.get(), before + 1, "{other}");
        }
    }

    #[test]
    fn tags_are_keyed_per_thread() {
        let here = Table::new().expect("table").tag(b"tg-same");
        let there = std::thread::spawn(|| Table::new().expect("table").tag(b"tg-same"))
            .join()
            .expect("thread");
        assert_ne!(here, there);
    }
}
