//! `larder-bench`: Larder's benchmark and scale harness.
//!
//! `deploy/bench/run.sh` is the one command: it builds in release mode, starts the local
//! platform and Webdis on the same Redis master, and calls the subcommands of this
//! crate, each of which prints one JSON record per measurement:
//!
//! - [`openloop`]: fixed-rate (open-loop) HTTP/1.1 load; latency is measured from each
//!   request's *intended* send time, so coordinated omission is corrected.
//! - [`closedloop`]: peak throughput through `wrk` (closed loop).
//! - [`redisbench`]: `redis-benchmark`, the floor reference.
//! - [`reference`]: the gateway's HTTP stack (axum, hyper, tokio, the `redis` crate)
//!   with nothing of the gateway in it, to tell the stack's cost from the gateway's.
//! - [`scale`]: registry scale figures with real `larder-gateway` processes (start to
//!   ready and memory with 10,000 namespaces, the apply time of one change, propagation
//!   of control-plane changes to 3 gateways).
//! - [`report`]: medians and spreads over the repeats, ratios within a repeat, targets
//!   met or not; `results.json`, `results.md` and the table in `docs/performance.md`.
//!
//! Support: [`http`] (the generator's minimal HTTP/1.1 client), [`proc`] (CPU time and
//! resident memory from `/proc`), [`record`] (the measurement record), [`stats`]
//! (percentiles, median and spread).

pub mod closedloop;
pub mod http;
pub mod openloop;
pub mod proc;
pub mod record;
pub mod redisbench;
pub mod reference;
pub mod report;
pub mod scale;
pub mod stats;
