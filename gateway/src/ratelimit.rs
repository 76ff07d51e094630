//! Per-namespace rate limits, shared across gateways.
//!
//! A namespace's limit (ops/s and burst, from the registry) holds across all live
//! gateways: each gateway enforces its share, the limit divided by the number of
//! gateways registered under `/gateways`. Shares follow the registry, so when a gateway
//! joins or leaves, the others adjust within the propagation bound. Enforcement is a
//! token bucket per namespace: no coordination on the request path.
//!
//! Only authenticated callers of the namespace are charged (in the authorisation step,
//! once per request), so requests with a bad token cannot use up a tenant's budget.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use std::cell::Cell;

use axum::http::HeaderValue;
use axum::response::Response;

#[derive(Debug)]
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

/// The outcome of charging one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    /// This gateway's share: operations per second.
    pub limit: u32,
    /// Operations left in the bucket now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
    /// Seconds until one operation is allowed again (when refused).
    pub retry_after_s: u64,
}

/// Token buckets by namespace.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: RwLock<HashMap<String, Arc<Mutex<Bucket>>>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Charges one operation to `namespace`, whose limit is `ops_per_sec` with `burst`
    /// shared by `gateways` gateways.
    pub fn check(
        &self,
        namespace: &str,
        ops_per_sec: u32,
        burst: u32,
        gateways: usize,
    ) -> Decision {
        self.check_at(namespace, ops_per_sec, burst, gateways, Instant::now())
    }

    fn check_at(
        &self,
        namespace: &str,
        ops_per_sec: u32,
        burst: u32,
        gateways: usize,
        now: Instant,
    ) -> Decision {
        let n = gateways.max(1) as f64;
        let rate = (f64::from(ops_per_sec) / n).max(0.001);
        let capacity = (f64::from(burst.max(ops_per_sec)) / n).max(1.0);
        let bucket = {
            let read = self.buckets.read().unwrap_or_else(|p| p.into_inner());
            read.get(namespace).cloned()
        };
        let bucket = bucket.unwrap_or_else(|| {
            let mut write = self.buckets.write().unwrap_or_else(|p| p.into_inner());
            write
                .entry(namespace.to_owned())
                .or_insert_with(|| {
                    Arc::new(Mutex::new(Bucket {
                        rate,
                        capacity,
                        tokens: capacity,
                        last: now,
                    }))
                })
                .clone()
        });
        // The lock is held for a few arithmetic operations; a poisoned bucket is still
        // a valid bucket.
        let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
        b.rate = rate;
        b.capacity = capacity;
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rate).min(capacity);
        b.last = now;
        let allowed = b.tokens >= 1.0;
        if allowed {
            b.tokens -= 1.0;
        }
        Decision {
            allowed,
            limit: rate.ceil() as u32,
            remaining: b.tokens.floor() as u32,
            reset_s: ((capacity - b.tokens) / rate).ceil() as u64,
            retry_after_s: if allowed {
                0
            } else {
                ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64
            },
        }
    }
}

tokio::task_local! {
    /// The rate-limit decision of the request being served, for its response headers.
    static DECISION: Cell<Option<Decision>>;
}

/// Records the decision of the current request (called from the authorisation step,
/// which runs inside [`headers`]' scope on the same task).
pub fn report(decision: Decision) {
    let _ = DECISION.try_with(|d| d.set(Some(decision)));
}

fn set_headers(response: &mut Response, d: &Decision) {
    let h = response.headers_mut();
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_s));
}

/// Runs `handling` (a request's handling) and adds `RateLimit-*` headers to its response
/// when the request was charged to a namespace (the charge itself happens once per
/// request, in the authorisation step, after the token is verified, so callers without a
/// valid token cannot use up a tenant's budget).
pub async fn with_headers(handling: impl Future<Output = Response>) -> Response {
    DECISION
        .scope(Cell::new(None), async move {
            let mut response = handling.await;
            if let Some(d) = DECISION.with(Cell::get) {
                set_headers(&mut response, &d);
            }
            response
        })
        .await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let l = RateLimiter::new();
        let t0 = Instant::now();
        let allowed = (0..30)
            .filter(|_| l.check_at("ns", 10, 20, 1, t0).allowed)
            .count();
        assert_eq!(allowed, 20, "the burst is the bucket");
        let refused = l.check_at("ns", 10, 20, 1, t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after_s, 1);
        assert_eq!(refused.remaining, 0);
        // One second later, ten more.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..30)
            .filter(|_| l.check_at("ns", 10, 20, 1, t1).allowed)
            .count();
        assert_eq!(allowed, 10);
    }

    #[test]
    fn gateways_share_the_limit() {
        let l = RateLimiter::new();
        let t0 = Instant::now();
        let allowed = (0..100)
            .filter(|_| l.check_at("ns", 30, 30, 3, t0).allowed)
            .count();
        assert_eq!(
            allowed, 10,
            "a third of the burst on each of three gateways"
        );
        // Namespaces are independent.
        assert!(l.check_at("other", 30, 30, 3, t0).allowed);
    }
}
