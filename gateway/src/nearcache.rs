//! The near cache: values kept in the gateway's memory for hot reads.
//!
//! Coherence comes from a bound, not from messages: an entry is served at most the
//! namespace's `max_staleness_ms` after it was read from Redis, then it expires. A write
//! or delete through any other gateway is therefore visible here within that bound, and
//! nothing has to be delivered for it (no invalidation message can be lost).
//!
//! Writes through this gateway are never served stale: a write or delete removes the
//! entry and raises the namespace's write generation. A read that started before the
//! write carries the old generation and does not fill the cache with what it fetched.
//!
//! Memory is bounded by bytes and by entries: each entry weighs at least
//! `max_bytes / max_entries`, so no more than `max_entries` fit in `max_bytes`.
//!
//! Entries are found by a hash of namespace and key and carry both, so a lookup on the
//! hot path allocates nothing; a hash collision is a miss, never a wrong value.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use moka::sync::Cache;

/// A cached raw value (the stored layout of [`crate::value`]) and what it is for.
#[derive(Debug)]
struct Entry {
    ns: Box<str>,
    key: Box<[u8]>,
    raw: Bytes,
    ttl: Duration,
}

struct Expiry;

impl moka::Expiry<u64, Arc<Entry>> for Expiry {
    fn expire_after_create(&self, _: &u64, entry: &Arc<Entry>, _: Instant) -> Option<Duration> {
        Some(entry.ttl)
    }
}

/// A read's claim to fill the cache: the namespace's write generation when it started.
#[derive(Debug, Clone, Copy)]
pub struct Ticket(u64);

/// Near-cached values of every namespace.
pub struct NearCache {
    cache: Cache<u64, Arc<Entry>>,
    hasher: RandomState,
    generations: RwLock<HashMap<Arc<str>, Arc<AtomicU64>>>,
}

impl NearCache {
    pub fn new(max_bytes: u64, max_entries: u64) -> Self {
        let floor = (max_bytes / max_entries.max(1)).max(1);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_: &u64, v: &Arc<Entry>| {
                let bytes = (v.ns.len() + v.key.len() + v.raw.len() + 64) as u64;
                bytes.max(floor).min(u64::from(u32::MAX)) as u32
            })
            .expire_after(Expiry)
            .build();
        Self {
            cache,
            hasher: RandomState::new(),
            generations: RwLock::new(HashMap::new()),
        }
    }

    fn slot(&self, ns: &str, key: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        ns.hash(&mut h);
        key.hash(&mut h);
        h.finish()
    }

    fn generation(&self, ns: &str) -> Arc<AtomicU64> {
        if let Some(g) = self
            .generations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            return g.clone();
        }
        let mut map = self.generations.write().unwrap_or_else(|p| p.into_inner());
        map.entry(Arc::from(ns)).or_default().clone()
    }

    /// A cached value of `key`, if one is held (entries expire at their bound).
    pub fn get(&self, ns: &str, key: &[u8]) -> Option<Bytes> {
        self.cache
            .get(&self.slot(ns, key))
            .filter(|e| &*e.ns == ns && &*e.key == key)
            .map(|e| e.raw.clone())
    }

    /// Call before reading from Redis; pass the ticket to [`NearCache::fill`].
    pub fn ticket(&self, ns: &str) -> Ticket {
        Ticket(self.generation(ns).load(Ordering::Acquire))
    }

    /// Caches what a read fetched, for at most `ttl`, unless a write through this gateway
    /// happened since the read's ticket was taken.
    pub fn fill(&self, ticket: Ticket, ns: &str, key: &[u8], raw: Bytes, ttl: Duration) {
        let generation = self.generation(ns);
        if generation.load(Ordering::Acquire) != ticket.0 || ttl.is_zero() {
            return;
        }
        let slot = self.slot(ns, key);
        self.cache.insert(
            slot,
            Arc::new(Entry {
                ns: ns.into(),
                key: key.into(),
                raw,
                ttl,
            }),
        );
        // A write may have landed between the check and the insert: undo then.
        if generation.load(Ordering::Acquire) != ticket.0 {
            self.cache.invalidate(&slot);
        }
    }

    /// A write or delete of `key` through this gateway: drop the entry and stop reads in
    /// flight from filling it with what they fetched before.
    pub fn invalidate(&self, ns: &str, key: &[u8]) {
        self.generation(ns).fetch_add(1, Ordering::AcqRel);
        self.cache.invalidate(&self.slot(ns, key));
    }

    /// Entries held (approximate; for metrics).
    pub fn len(&self) -> u64 {
        self.cache.entry_count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_until_the_bound_then_expires() {
        let c = NearCache::new(1 << 20, 1000);
        let t = c.ticket("ns");
        c.fill(
            t,
            "ns",
            b"k",
            Bytes::from_static(b"v"),
            Duration::from_millis(50),
        );
        assert_eq!(c.get("ns", b"k"), Some(Bytes::from_static(b"v")));
        assert_eq!(c.get("other", b"k"), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(c.get("ns", b"k"), None);
    }

    #[test]
    fn a_local_write_is_never_served_stale() {
        let c = NearCache::new(1 << 20, 1000);
        let read_started = c.ticket("ns");
        c.invalidate("ns", b"k"); // a write completes while the read is in flight
        c.fill(
            read_started,
            "ns",
            b"k",
            Bytes::from_static(b"old"),
            Duration::from_secs(5),
        );
        assert_eq!(
            c.get("ns", b"k"),
            None,
            "the read's old value must not be cached"
        );
        let t = c.ticket("ns");
        c.fill(
            t,
            "ns",
            b"k",
            Bytes::from_static(b"new"),
            Duration::from_secs(5),
        );
        assert_eq!(c.get("ns", b"k"), Some(Bytes::from_static(b"new")));
        c.invalidate("ns", b"k");
        assert_eq!(c.get("ns", b"k"), None);
    }

    #[test]
    fn bounded_by_entries() {
        let c = NearCache::new(10_000, 10);
        for i in 0..100u32 {
            let t = c.ticket("ns");
            c.fill(
                t,
                "ns",
                &i.to_be_bytes(),
                Bytes::from_static(b"v"),
                Duration::from_secs(5),
            );
        }
        c.cache.run_pending_tasks();
        assert!(c.len() <= 10, "{} entries", c.len());
    }
}
