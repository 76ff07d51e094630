//! Load shedding: bounds on the requests one gateway serves at once, so a flood is
//! refused at the door instead of queueing without bound.
//!
//! Two limits, both per gateway:
//! - a global one ([`Config::max_in_flight`](crate::Config::max_in_flight)), checked
//!   before anything else, past which a data request is answered 503 `overloaded` at once;
//! - a per-namespace one
//!   ([`Config::max_in_flight_per_namespace`](crate::Config::max_in_flight_per_namespace)),
//!   checked in the authorisation step once the namespace is known, past which the request
//!   is answered 429 `concurrency-limited`. It keeps one namespace from taking every global
//!   slot, so its neighbours still get served while it floods.
//!
//! Both answers carry `Retry-After`. Neither waits: a request that is not admitted costs
//! an atomic increment and decrement. Probes (`/healthz`, `/readyz`) and `/metrics` are
//! not counted, so a saturated gateway still reports itself alive and can be watched.
//!
//! The gateway also bounds what one request may bring: its body
//! ([`Config::max_body_bytes`](crate::Config::max_body_bytes), 413 `body-too-large`), and,
//! in [`larder_service::http::serve_with`], the time its head and body may take and the
//! size of its head.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use axum::body::{Body, HttpBody as _};
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// Requests in flight through this gateway, in total and by namespace.
#[derive(Debug)]
pub struct Overload {
    max_in_flight: usize,
    max_per_namespace: u32,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// One counter per namespace that has had a request. Looked up by `&str` under a
    /// read lock, so the request path neither allocates nor takes a write lock once a
    /// namespace has been seen. Only namespaces that exist reach it (the authorisation
    /// step looks the name up first), so it is bounded by the registry.
    namespaces: RwLock<HashMap<Box<str>, Arc<AtomicU32>>>,
}

/// A slot among the gateway's requests in flight, given back when dropped (also when the
/// client goes away and the request's future is dropped).
#[derive(Debug)]
pub struct Admitted<'a>(&'a AtomicUsize);

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

/// A slot among a namespace's requests in flight, held by the request's
/// [`Access`](crate::state::Access) and given back when it is dropped.
#[derive(Debug)]
pub struct NamespaceSlot(Arc<AtomicU32>);

impl Drop for NamespaceSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Release);
    }
}

impl Overload {
    pub fn new(max_in_flight: usize, max_per_namespace: u32) -> Self {
        Self {
            max_in_flight,
            max_per_namespace,
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            namespaces: RwLock::default(),
        }
    }

    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Requests admitted and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
            .load(Ordering::Acquire)
            .min(self.max_in_flight)
    }

    /// The most requests ever admitted at once.
    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Takes a global slot, or `None` when all are taken.
    ///
    /// Increment first, then check: a request that finds the count over the limit gives
    /// its increment back. The count can pass the limit for an instant by the requests
    /// about to be refused, never by admitted ones, so at most `max_in_flight` are served.
    pub fn enter(&self) -> Option<Admitted<'_>> {
        let n = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let admitted = Admitted(&self.in_flight);
        if n > self.max_in_flight {
            return None;
        }
        // Most requests do not raise the peak: read before writing, so they leave the
        // cache line shared.
        if n > self.peak.load(Ordering::Relaxed) {
            self.peak.fetch_max(n, Ordering::Relaxed);
        }
        Some(admitted)
    }

    /// Takes a slot of `namespace`, or `None` when all of its slots are taken.
    pub fn enter_namespace(&self, namespace: &str) -> Option<NamespaceSlot> {
        let counter = {
            let read = self.namespaces.read().unwrap_or_else(|p| p.into_inner());
            read.get(namespace).cloned()
        };
        let counter = counter.unwrap_or_else(|| {
            let mut write = self.namespaces.write().unwrap_or_else(|p| p.into_inner());
            write.entry(namespace.into()).or_default().clone()
        });
        let n = counter.fetch_add(1, Ordering::AcqRel) + 1;
        let slot = NamespaceSlot(counter);
        (n <= self.max_per_namespace).then_some(slot)
    }

    pub fn max_per_namespace(&self) -> u32 {
        self.max_per_namespace
    }
}

/// Middleware, outermost of the whole router (outside the request-id and tracing layers):
/// sheds data requests over the global limit with 503 before any work is done for them.
/// A shed request gets no span, no request id and no log line: under a flood, logging
/// each refusal would spend the capacity the limit protects. It is counted in
/// `larder_gateway_shed_total{limit="global"}`.
pub async fn shed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if !request.uri().path().starts_with("/v1/") {
        return next.run(request).await;
    }
    let Some(_admitted) = state.overload.enter() else {
        state.metrics.shed_global.inc();
        return ApiError::Overloaded {
            limit: state.overload.max_in_flight(),
        }
        .into_response();
    };
    next.run(request).await
}

/// Refuses a declared body over [`Config::max_body_bytes`](crate::Config::max_body_bytes)
/// with 413 before reading it, and caps an undeclared (chunked) body at the same size
/// while it is read.
#[allow(clippy::result_large_err)] // the refusal is the response itself
pub fn bound_body(state: &AppState, request: Request) -> Result<Request, Response> {
    let max = state.config.max_body_bytes;
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(ApiError::BodyTooLarge { max: Some(max) }.into_response());
    }
    // A declared length is enforced by the HTTP layer; only a chunked body needs capping
    // as it is read.
    Ok(if declared.is_some() || request.body().is_end_stream() {
        request
    } else {
        let limit = usize::try_from(max).unwrap_or(usize::MAX);
        request.map(|body| Body::new(http_body_util::Limited::new(body, limit)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_frees_slots_on_drop() {
        let overload = Overload::new(2, 1);
        let a = overload.enter().expect("first");
        let b = overload.enter().expect("second");
        assert!(overload.enter().is_none(), "third is refused");
        assert_eq!(overload.in_flight(), 2);
        drop(a);
        let c = overload.enter().expect("a freed slot is taken again");
        assert_eq!(overload.peak(), 2);
        drop((b, c));
        assert_eq!(overload.in_flight(), 0);

        let x = overload.enter_namespace("x").expect("x's first");
        assert!(overload.enter_namespace("x").is_none(), "x is full");
        let y = overload.enter_namespace("y").expect("y has its own slots");
        drop(x);
        assert!(overload.enter_namespace("x").is_some(), "x's slot is back");
        drop(y);
    }

    #[test]
    fn concurrent_callers_never_exceed_the_limit() {
        let overload = Arc::new(Overload::new(8, 8));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let overload = overload.clone();
                std::thread::spawn(move || {
                    let mut admitted = 0;
                    for _ in 0..20_000 {
                        // Hold two slots at once, so the threads contend for them.
                        let a = overload.enter();
                        let b = overload.enter();
                        admitted += usize::from(a.is_some()) + usize::from(b.is_some());
                    }
                    admitted
                })
            })
            .collect();
        let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert!(admitted > 0);
        assert!(
            overload.peak() <= 8,
            "at most 8 admitted at once, saw {}",
            overload.peak()
        );
        assert_eq!(overload.in_flight(), 0, "every slot was given back");
    }
}
