//! Open-loop load at a fixed rate, with latency measured from each request's intended
//! send time.
//!
//! Request `i` is due at `start + i / rate`, whatever happened to earlier requests. A
//! pacing thread releases due requests into one queue; each connection takes the next
//! one when it is free. A request's latency runs from when it was due to when its
//! answer was read, so when the server stalls, every request that queued up behind the
//! stall is charged for its wait: this is the correction for coordinated omission
//! (as in wrk2 and HdrHistogram's expected-interval correction), without which a
//! closed-loop tool reports the stall once instead of for every request it delayed.
//!
//! The run is bounded: requests still unanswered `drain` seconds after the last one was
//! due are counted as errors and recorded with the time they had waited by then (a lower
//! bound), so an overloaded server cannot hide behind missing samples.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::sync::Mutex;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use crate::http::{Connection, Target, parse_header, request_bytes};
use crate::proc::{CpuSample, per_10k};
use crate::record::{Kind, Label, Record};
use crate::stats::Latency;

/// The pacing thread sleeps at least this long between releases, so that at high rates
/// requests are released in small batches instead of one wake-up each. The delay this
/// adds is part of the measured latency (it is charged to the server, conservatively).
const MIN_PACING_SLEEP: Duration = Duration::from_micros(50);

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub label: Label,
    /// `http://host:port/path`.
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// `Name: value`, repeatable.
    #[arg(long = "header")]
    pub headers: Vec<String>,
    /// Request body.
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Requests per second.
    #[arg(long)]
    pub rate: f64,
    /// The offered rate as a fraction of the reference peak (recorded with the result).
    #[arg(long)]
    pub rate_fraction: Option<f64>,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before the measurement, at the same rate, not recorded.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Seconds to wait after the last request was due before giving up on the rest.
    #[arg(long, default_value_t = 5.0)]
    pub drain: f64,
    /// Connections (each carries one request at a time).
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Longest wait for one answer, milliseconds; past it the request is an error.
    #[arg(long, default_value_t = 5_000)]
    pub timeout_ms: u64,
}

/// What one connection saw.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    ok: u64,
    answered: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        self.answered += other.answered;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

struct Plan {
    request: Arc<[u8]>,
    authority: String,
    record_from: Instant,
    give_up: Instant,
    timeout: Duration,
}

pub async fn run(args: &Args) -> anyhow::Result<Record> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be above zero");
    }
    if args.duration.is_nan()
        || args.duration <= 0.0
        || args.warmup < 0.0
        || args.drain < 0.0
        || args.connections == 0
    {
        bail!("--duration and --connections must be above zero; --warmup and --drain not below");
    }
    let target = Target::parse(&args.url)?;
    let headers = args
        .headers
        .iter()
        .map(|h| parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let body = match &args.body_file {
        Some(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        None => Vec::new(),
    };
    let request: Arc<[u8]> = request_bytes(&args.method, &target, &headers, &body).into();

    // Connections are opened before the clock starts: set-up is not part of the latency.
    let mut connections = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        connections.push(
            Connection::connect(&target.authority)
                .await
                .with_context(|| format!("cannot connect to {}", target.authority))?,
        );
    }

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now() + Duration::from_millis(20);
    let plan = Arc::new(Plan {
        request,
        authority: target.authority.clone(),
        record_from: start + warmup,
        give_up: start + warmup + duration + Duration::from_secs_f64(args.drain),
        timeout: Duration::from_millis(args.timeout_ms),
    });
    let total = ((args.warmup + args.duration) * args.rate).round() as u64;

    let cpu_before = CpuSample::take(&args.label.pids)?;
    let (tx, rx) = unbounded_channel();
    let queue = Arc::new(Mutex::new(rx));
    let rate = args.rate;
    let pacer = std::thread::Builder::new()
        .name("pacer".into())
        .spawn(move || pace(&tx, start, rate, total))?;
    let workers: Vec<_> = connections
        .into_iter()
        .map(|c| tokio::spawn(work(c, queue.clone(), plan.clone())))
        .collect();
    let mut tally = Tally::default();
    for w in workers {
        tally.merge(w.await?);
    }
    let _ = pacer.join();
    let cpu = CpuSample::take(&args.label.pids)?.since(&cpu_before);

    // Whatever is still queued was never sent: charge it the time it waited.
    let mut rx = queue.lock().await;
    while let Ok(intended) = rx.try_recv() {
        if intended >= plan.record_from {
            tally
                .latencies_us
                .push(micros(plan.give_up.saturating_duration_since(intended)));
            tally.error("never-sent");
        }
    }

    let mut record = Record::new(Kind::Open, &args.label);
    record.offered_rps = Some(args.rate);
    record.rate_fraction = args.rate_fraction;
    record.connections = args.connections;
    record.duration_s = args.duration;
    record.requests = tally.answered;
    record.rps = tally.ok as f64 / args.duration;
    record.errors = tally.errors.values().sum();
    record.error_detail = tally.errors;
    record.latency = Some(Latency::of(tally.latencies_us));
    record.cpu_s_per_10k = per_10k(&cpu, tally.answered);
    record.cpu_s = cpu;
    Ok(record)
}

/// Releases request `i` into the queue once `start + i / rate` has passed, stamped with
/// that intended time.
fn pace(tx: &UnboundedSender<Instant>, start: Instant, rate: f64, total: u64) {
    let due_at = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut sent = 0;
    while sent < total {
        let now = Instant::now();
        if now >= start {
            let due = (((now - start).as_secs_f64() * rate) as u64 + 1).min(total);
            while sent < due {
                if tx.send(due_at(sent)).is_err() {
                    return;
                }
                sent += 1;
            }
        }
        if sent < total {
            let wait = due_at(sent).saturating_duration_since(Instant::now());
            std::thread::sleep(wait.max(MIN_PACING_SLEEP));
        }
    }
}

async fn work(
    connection: Connection,
    queue: Arc<Mutex<UnboundedReceiver<Instant>>>,
    plan: Arc<Plan>,
) -> Tally {
    let mut tally = Tally::default();
    let mut connection = Some(connection);
    loop {
        let next = {
            let mut rx = queue.lock().await;
            tokio::select! {
                next = rx.recv() => next,
                () = tokio::time::sleep_until(plan.give_up.into()) => None,
            }
        };
        let Some(intended) = next else { break };
        let now = Instant::now();
        if now >= plan.give_up {
            if intended >= plan.record_from {
                tally.latencies_us.push(micros(now - intended));
                tally.error("never-sent");
            }
            continue;
        }
        let limit = plan.timeout.min(plan.give_up - now);
        let outcome = tokio::time::timeout(limit, async {
            if connection.is_none() {
                connection = Some(Connection::connect(&plan.authority).await?);
            }
            match connection.as_mut() {
                Some(c) => c.exchange(&plan.request).await,
                None => Err(std::io::ErrorKind::NotConnected.into()),
            }
        })
        .await;
        let done = Instant::now();
        let recorded = intended >= plan.record_from;
        match outcome {
            Ok(Ok(answer)) => {
                if answer.close {
                    connection = None;
                }
                if recorded {
                    tally.answered += 1;
                    if (200..300).contains(&answer.status) {
                        tally.ok += 1;
                    } else {
                        tally.error(format!("status-{}", answer.status));
                    }
                }
            }
            Ok(Err(e)) => {
                connection = None;
                if recorded {
                    tally.error(format!("io-{:?}", e.kind()));
                }
            }
            Err(_) => {
                connection = None;
                if recorded {
                    tally.error("timeout");
                }
            }
        }
        if recorded {
            tally
                .latencies_us
                .push(micros(done.saturating_duration_since(intended)));
        }
    }
    tally
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn label() -> Label {
        Label {
            target: "test".into(),
            op: "get".into(),
            size: 0,
            repeat: 1,
            pids: vec![],
            out: None,
        }
    }

    /// A server answering every request after `delay` (one connection at a time each).
    async fn server(delay: Duration, stall_once: Option<Duration>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn(async move {
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let stalled = stalled.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if let Some(stall) = stall_once
                            && !stalled.swap(true, std::sync::atomic::Ordering::SeqCst)
                        {
                            tokio::time::sleep(stall).await;
                        }
                        tokio::time::sleep(delay).await;
                        let _ = socket
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    }
                });
            }
        });
        address
    }

    fn args(address: &str, rate: f64, duration: f64, connections: u32) -> Args {
        Args {
            label: label(),
            url: format!("http://{address}/"),
            method: "GET".into(),
            headers: vec![],
            body_file: None,
            rate,
            rate_fraction: Some(0.5),
            duration,
            warmup: 0.0,
            drain: 2.0,
            connections,
            timeout_ms: 2_000,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_at_the_offered_rate() {
        let address = server(Duration::ZERO, None).await;
        let record = run(&args(&address, 500.0, 1.0, 4)).await.unwrap();
        assert_eq!(record.errors, 0, "{:?}", record.error_detail);
        assert_eq!(record.requests, 500);
        assert!((record.rps - 500.0).abs() < 1.0);
        let latency = record.latency.unwrap();
        assert_eq!(latency.samples, 500);
        assert!(latency.p50_us < 20_000, "{latency:?}");
    }

    /// One connection, a server that stalls once for 300 ms at 200 requests/s: about 60
    /// requests were due during the stall, and each must be charged for its wait. A
    /// closed-loop tool would record one slow request and p99 near the normal latency.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stall_is_charged_to_every_request_it_delayed() {
        let address = server(Duration::ZERO, Some(Duration::from_millis(300))).await;
        let record = run(&args(&address, 200.0, 2.0, 1)).await.unwrap();
        assert_eq!(record.errors, 0, "{:?}", record.error_detail);
        let latency = record.latency.unwrap();
        assert_eq!(latency.samples, 400);
        assert!(latency.max_us >= 290_000, "{latency:?}");
        // More than 10 % of the requests waited behind the stall for over 50 ms.
        assert!(latency.p99_us >= 100_000, "{latency:?}");
        assert!(latency.p50_us < 300_000, "{latency:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_overloaded_server_is_bounded_and_counted() {
        // One connection at 20 ms per request serves 50 requests/s; 200 are offered.
        let address = server(Duration::from_millis(20), None).await;
        let mut a = args(&address, 200.0, 1.0, 1);
        a.drain = 0.5;
        let started = Instant::now();
        let record = run(&a).await.unwrap();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(record.error_detail.get("never-sent").copied().unwrap_or(0) > 50);
        assert_eq!(record.latency.unwrap().samples, 200);
    }
}
