//! Hot-key detection: a per-namespace top-K of keys by request rate, in bounded memory.
//!
//! Each namespace keeps a Space-Saving summary (Metwally et al., 2005) of at most `K`
//! counters for the current window and the previous one; a key's rate is its count over
//! both windows divided by their span, so the ranking slides instead of resetting. A key
//! that is truly above rate `r` is in the summary whenever `r` exceeds the total rate /
//! `K`; counts may overestimate by at most the smallest counter, which is reported.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

/// Counters per namespace and window.
pub const K: usize = 64;
/// One request in this many is counted (chosen at random), and counts are scaled back
/// up: a hot key is seen often enough either way, and the namespace's lock is taken by
/// an eighth of the requests only.
pub const SAMPLE_EVERY: u32 = 8;
/// Length of one window.
pub const WINDOW: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct Summary {
    counts: HashMap<Bytes, u64>,
}

impl Summary {
    fn offer(&mut self, key: &[u8]) {
        if let Some(c) = self.counts.get_mut(key) {
            *c += 1;
            return;
        }
        if self.counts.len() < K {
            self.counts.insert(Bytes::copy_from_slice(key), 1);
            return;
        }
        // Replace the smallest counter; the newcomer inherits its count (+1).
        let (min_key, min) = match self.counts.iter().min_by_key(|(_, c)| **c) {
            Some((k, c)) => (k.clone(), *c),
            None => return,
        };
        self.counts.remove(&min_key);
        self.counts.insert(Bytes::copy_from_slice(key), min + 1);
    }
}

#[derive(Debug)]
struct Windows {
    started: Instant,
    current: Summary,
    previous: Summary,
    /// Whether `previous` covers a whole window (false until the first rotation).
    has_previous: bool,
}

impl Windows {
    fn rotate(&mut self, now: Instant) {
        let age = now.saturating_duration_since(self.started);
        if age >= WINDOW * 2 {
            self.previous = Summary::default();
            self.current = Summary::default();
            self.started = now;
            self.has_previous = true;
        } else if age >= WINDOW {
            self.previous = std::mem::take(&mut self.current);
            self.started += WINDOW;
            self.has_previous = true;
        }
    }
}

/// One hot key and its estimated rate.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HotKey {
    /// The key, as text when it is UTF-8, else base64url in `key_base64`.
    #[serde(flatten)]
    pub key: crate::routes::list::ListedKey,
    /// Requests per second over the sliding window (an upper estimate).
    pub rate: f64,
}

/// Top-K summaries of every namespace.
#[derive(Debug)]
pub struct HotKeys {
    namespaces: RwLock<HashMap<Arc<str>, Arc<Mutex<Windows>>>>,
    sample_every: u32,
}

impl Default for HotKeys {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static SAMPLER: std::cell::Cell<u32> = std::cell::Cell::new(0x9e37_79b9 ^ (std::process::id() | 1));
}

/// A cheap per-thread pseudo-random draw (xorshift32).
fn draw() -> u32 {
    SAMPLER.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        s.set(x);
        x
    })
}

impl HotKeys {
    pub fn new() -> Self {
        Self::with_sampling(SAMPLE_EVERY)
    }

    /// Counts one request in `every` (1 counts all).
    pub fn with_sampling(every: u32) -> Self {
        Self {
            namespaces: RwLock::default(),
            sample_every: every.max(1),
        }
    }

    fn windows(&self, ns: &str, now: Instant) -> Arc<Mutex<Windows>> {
        if let Some(w) = self
            .namespaces
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(ns)
        {
            return w.clone();
        }
        let mut map = self.namespaces.write().unwrap_or_else(|p| p.into_inner());
        map.entry(Arc::from(ns))
            .or_insert_with(|| {
                Arc::new(Mutex::new(Windows {
                    started: now,
                    current: Summary::default(),
                    previous: Summary::default(),
                    has_previous: false,
                }))
            })
            .clone()
    }

    /// Counts one request for `key` (sampled).
    pub fn record(&self, ns: &str, key: &[u8]) {
        if self.sample_every > 1 && !draw().is_multiple_of(self.sample_every) {
            return;
        }
        self.record_at(ns, key, Instant::now());
    }

    fn record_at(&self, ns: &str, key: &[u8], now: Instant) {
        let w = self.windows(ns, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(now);
        w.current.offer(key);
    }

    /// The estimated rate of `key` (requests per second over the sliding window).
    pub fn rate(&self, ns: &str, key: &[u8]) -> f64 {
        self.rate_at(ns, key, Instant::now())
    }

    fn rate_at(&self, ns: &str, key: &[u8], now: Instant) -> f64 {
        let w = self.windows(ns, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(now);
        let count = w.current.counts.get(key).copied().unwrap_or(0)
            + w.previous.counts.get(key).copied().unwrap_or(0);
        (count * u64::from(self.sample_every)) as f64 / span(&w, now)
    }

    /// The namespace's hottest keys, hottest first, at most `limit`.
    pub fn top(&self, ns: &str, limit: usize) -> Vec<HotKey> {
        self.top_at(ns, limit, Instant::now())
    }

    fn top_at(&self, ns: &str, limit: usize, now: Instant) -> Vec<HotKey> {
        let w = self.windows(ns, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.rotate(now);
        let mut merged: HashMap<&Bytes, u64> = HashMap::new();
        for (k, c) in w.current.counts.iter().chain(w.previous.counts.iter()) {
            *merged.entry(k).or_default() += c;
        }
        let secs = span(&w, now);
        let mut keys: Vec<HotKey> = merged
            .into_iter()
            .map(|(k, c)| HotKey {
                key: crate::routes::list::ListedKey::new(k),
                rate: (c * u64::from(self.sample_every)) as f64 / secs,
            })
            .collect();
        keys.sort_by(|a, b| b.rate.total_cmp(&a.rate));
        keys.truncate(limit);
        keys
    }
}

/// Seconds the counts cover: the current window so far plus the previous one once there
/// is one (at least one second, so a burst in the first instant is not read as an
/// enormous rate).
fn span(w: &Windows, now: Instant) -> f64 {
    let previous = if w.has_previous {
        WINDOW
    } else {
        Duration::ZERO
    };
    (previous + now.saturating_duration_since(w.started))
        .as_secs_f64()
        .max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_hot_keys_among_many_cold_ones() {
        let h = HotKeys::with_sampling(1);
        let t0 = Instant::now();
        for i in 0..20_000u32 {
            h.record_at("ns", format!("cold-{i}").as_bytes(), t0);
            if i % 4 == 0 {
                h.record_at("ns", b"hot-a", t0);
            }
            if i % 10 == 0 {
                h.record_at("ns", b"hot-b", t0);
            }
        }
        let top = h.top_at("ns", 2, t0);
        assert_eq!(top[0].key.key.as_deref(), Some("hot-a"));
        assert_eq!(top[1].key.key.as_deref(), Some("hot-b"));
        assert!(h.rate_at("ns", b"hot-a", t0) > h.rate_at("ns", b"hot-b", t0));
        assert!(
            h.top_at("other", 5, t0).is_empty(),
            "namespaces are separate"
        );
    }

    #[test]
    fn the_window_slides() {
        let h = HotKeys::with_sampling(1);
        let t0 = Instant::now();
        for _ in 0..100 {
            h.record_at("ns", b"k", t0);
        }
        let r1 = h.rate_at("ns", b"k", t0 + WINDOW + Duration::from_millis(10));
        assert!(r1 > 0.0, "still counted in the previous window");
        assert_eq!(
            h.rate_at("ns", b"k", t0 + WINDOW * 3),
            0.0,
            "forgotten after two windows"
        );
    }

    #[test]
    fn memory_stays_bounded() {
        let h = HotKeys::with_sampling(1);
        let t0 = Instant::now();
        for i in 0..100_000u32 {
            h.record_at("ns", &i.to_be_bytes(), t0);
        }
        let w = h.windows("ns", t0);
        assert!(w.lock().unwrap().current.counts.len() <= K);
    }
}
