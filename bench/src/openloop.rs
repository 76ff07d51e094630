//! Open-loop load at a fixed rate, with latency measured from each request's intended
//! send time.
//!
//! Request `i` is due at `start + i / rate`, whatever happened to earlier requests. A
//! pacing thread sleeps until the next request is due and writes it itself on an idle
//! connection (one request in flight per connection); tasks on the async runtime read
//! the answers. A request's latency runs from when it was due to when its answer was
//! read, so when the server stalls, every request that queued up behind the stall is
//! charged for its wait: this is the correction for coordinated omission (as in wrk2),
//! without which a closed-loop tool reports the stall once instead of for every request
//! it delayed. When every connection is busy, due requests wait in the pacer's backlog,
//! and that wait counts too.
//!
//! Writing from the pacing thread keeps send times precise to tens of microseconds (the
//! runtime's timers tick in milliseconds) and costs no wake-up per request.
//!
//! The run is bounded: requests still unanswered `drain` seconds after the last one was
//! due are counted as errors and recorded with the time they had waited by then (a lower
//! bound), so an overloaded server cannot hide behind missing samples.
//!
//! Phases compare conditions within one run. Wall-clock time from a shared epoch is cut
//! into slices of `--phase-length` seconds, numbered 0, 1, … `--phases`−1 in turn. A
//! generator given `--only-phase k` sends only in the slices of phase `k`; the others
//! send throughout and report their latency by phase as well (requests due in the first
//! tenth of a slice, while the previous phase's traffic may still be draining, are left
//! out of the phase figures). Several generators with the same epoch thus switch a load
//! on and off every few seconds, and conditions on a shared, noisy machine are compared
//! within seconds of each other instead of minutes apart.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use crate::http::{Connection, Target, parse_header, request_bytes};
use crate::proc::{CpuSample, NamedPid, per_10k};
use crate::record::{Kind, Label, Record};
use crate::stats::Latency;

/// The pacing thread sleeps at least this long between rounds, so that at high rates
/// requests leave in small batches instead of one wake-up each. The delay this adds is
/// part of the measured latency (charged to the server, conservatively).
const MIN_PACING_SLEEP: Duration = Duration::from_micros(50);

/// How often the pacer looks for a free connection while requests wait for one.
const BACKLOG_POLL: Duration = Duration::from_micros(20);

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
    /// Phases the run's time is cut into (see the module documentation); 1 means none.
    #[arg(long, default_value_t = 1)]
    pub phases: u32,
    /// Seconds each phase slice lasts.
    #[arg(long, default_value_t = 2.0)]
    pub phase_length: f64,
    /// The shared start of the phase slices, milliseconds since the UNIX epoch (default:
    /// this run's start).
    #[arg(long)]
    pub phase_epoch_ms: Option<u64>,
    /// Send only in the slices of this phase.
    #[arg(long)]
    pub only_phase: Option<u32>,
}

/// Wall-clock slices of a run, numbered by phase.
#[derive(Debug, Clone, Copy)]
struct Phases {
    count: u32,
    length_s: f64,
    /// An instant and its position in seconds since the phase epoch.
    anchor: Instant,
    anchor_s: f64,
}

impl Phases {
    fn new(count: u32, length_s: f64, epoch_ms: Option<u64>) -> Phases {
        let anchor = Instant::now();
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let epoch_ms = epoch_ms.unwrap_or(now_ms);
        Phases {
            count,
            length_s,
            anchor,
            anchor_s: (now_ms as f64 - epoch_ms as f64) / 1000.0,
        }
    }

    /// Seconds from the phase epoch to `t`.
    fn position(&self, t: Instant) -> f64 {
        self.anchor_s + t.saturating_duration_since(self.anchor).as_secs_f64()
            - self.anchor.saturating_duration_since(t).as_secs_f64()
    }

    /// The start of the first slice of `phase` after `t`.
    fn next_start(&self, t: Instant, phase: u32) -> Instant {
        let s = self.position(t);
        let mut slice = (s / self.length_s).floor() as i64 + 1;
        while slice.rem_euclid(i64::from(self.count)) != i64::from(phase) {
            slice += 1;
        }
        let ahead = slice as f64 * self.length_s - s;
        t + Duration::from_secs_f64(ahead.max(0.0))
    }

    /// The phase of `t`, and whether `t` lies in the first tenth of its slice.
    fn of(&self, t: Instant) -> (u32, bool) {
        let (slice, settling) = self.slice(t);
        (self.phase_of_slice(slice), settling)
    }

    /// The slice `t` lies in (numbered from the epoch), and whether it lies in the first
    /// tenth of it.
    fn slice(&self, t: Instant) -> (i64, bool) {
        let s = self.position(t);
        let slice = (s / self.length_s).floor();
        let into = s - slice * self.length_s;
        (slice as i64, into < self.length_s / 10.0)
    }

    fn phase_of_slice(&self, slice: i64) -> u32 {
        slice.rem_euclid(i64::from(self.count)) as u32
    }
}

/// What was seen, by one reader or by the pacer.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    /// The same latencies by phase slice (empty without phases), settling times left out.
    by_slice: BTreeMap<i64, Vec<u64>>,
    ok: u64,
    answered: u64,
    /// Answers including those of the warm-up, for CPU per request (CPU is sampled over
    /// the whole run).
    handled: u64,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    /// Records the latency of a request due at `intended`.
    fn latency(&mut self, phases: Option<&Phases>, intended: Instant, latency: Duration) {
        let us = micros(latency);
        self.latencies_us.push(us);
        if let Some(p) = phases {
            let (slice, settling) = p.slice(intended);
            if !settling {
                self.by_slice.entry(slice).or_default().push(us);
            }
        }
    }

    fn error(&mut self, what: impl Into<String>) {
        *self.errors.entry(what.into()).or_default() += 1;
    }

    fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (slice, theirs) in other.by_slice {
            self.by_slice.entry(slice).or_default().extend(theirs);
        }
        self.ok += other.ok;
        self.answered += other.answered;
        self.handled += other.handled;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }
}

/// One connection as the pacer and its reader share it.
#[derive(Debug)]
enum SlotState {
    /// Ready for a request.
    Idle,
    /// A request due at this instant was written; its answer is awaited.
    InFlight(Instant),
    /// The reader is opening a new connection.
    Reconnecting,
}

#[derive(Debug)]
struct Slot {
    state: SlotState,
    writer: Option<std::net::TcpStream>,
}

struct Shared {
    slots: Vec<Mutex<Slot>>,
    request: Vec<u8>,
    authority: String,
    record_from: Instant,
    give_up: Instant,
    phases: Option<Phases>,
}

impl Shared {
    fn recorded(&self, intended: Instant) -> bool {
        intended >= self.record_from
    }
}

fn lock(slot: &Mutex<Slot>) -> std::sync::MutexGuard<'_, Slot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

pub async fn run(args: &Args) -> anyhow::Result<Record> {
    if !(args.rate > 0.0 && args.rate.is_finite()) {
        bail!("--rate must be above zero");
    }
    if args.duration.is_nan() || args.duration <= 0.0 || args.warmup < 0.0 || args.drain < 0.0 {
        bail!("--duration must be above zero; --warmup and --drain not below");
    }
    if args.connections == 0 {
        bail!("--connections must be above zero");
    }
    if args.phases == 0 || !(args.phase_length > 0.0 && args.phase_length.is_finite()) {
        bail!("--phases and --phase-length must be above zero");
    }
    if args.only_phase.is_some_and(|k| k >= args.phases) {
        bail!("--only-phase must be below --phases");
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

    // Connections are opened before the clock starts: set-up is not part of the latency.
    let mut readers = Vec::with_capacity(args.connections as usize);
    let mut slots = Vec::with_capacity(args.connections as usize);
    for _ in 0..args.connections {
        let (connection, writer) = Connection::connect_split(&target.authority)
            .await
            .with_context(|| format!("cannot connect to {}", target.authority))?;
        readers.push(connection);
        slots.push(Mutex::new(Slot {
            state: SlotState::Idle,
            writer: Some(writer),
        }));
    }

    let warmup = Duration::from_secs_f64(args.warmup);
    let duration = Duration::from_secs_f64(args.duration);
    let start = Instant::now() + Duration::from_millis(20);
    let shared = Arc::new(Shared {
        slots,
        request: request_bytes(&args.method, &target, &headers, &body),
        authority: target.authority.clone(),
        record_from: start + warmup,
        give_up: start + warmup + duration + Duration::from_secs_f64(args.drain),
        phases: (args.phases > 1)
            .then(|| Phases::new(args.phases, args.phase_length, args.phase_epoch_ms)),
    });
    let total = ((args.warmup + args.duration) * args.rate).round() as u64;

    // The generator's own CPU is reported too: it shares the cores with the servers.
    let mut pids = args.label.pids.clone();
    pids.push(NamedPid {
        name: "generator".into(),
        pid: std::process::id(),
    });
    let cpu_before = CpuSample::take(&pids)?;
    let cancel = CancellationToken::new();
    let tasks: Vec<_> = readers
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(read_answers(shared.clone(), i, c, cancel.clone())))
        .collect();
    let (rate, only_phase) = (args.rate, args.only_phase);
    let pacer = {
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || pace(&shared, start, rate, total, only_phase))
    };
    let mut tally = pacer.await?;
    // The last answers: wait until every connection is idle, or until the bound.
    while Instant::now() < shared.give_up
        && shared
            .slots
            .iter()
            .any(|s| matches!(lock(s).state, SlotState::InFlight(_)))
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    cancel.cancel();
    for t in tasks {
        tally.merge(t.await?);
    }
    let cpu = CpuSample::take(&pids)?.since(&cpu_before);
    for slot in &shared.slots {
        if let SlotState::InFlight(intended) = lock(slot).state
            && shared.recorded(intended)
        {
            let waited = shared.give_up.saturating_duration_since(intended);
            tally.latency(shared.phases.as_ref(), intended, waited);
            tally.error("unanswered");
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
    if let Some(phases) = shared.phases.filter(|_| args.only_phase.is_none()) {
        let (pooled, slice_p99) = by_phase(&phases, tally.by_slice);
        record.phase_latency = pooled;
        record.phase_slice_p99_us = slice_p99;
    }
    record.cpu_s_per_10k = per_10k(&cpu, tally.handled);
    record.cpu_s = cpu;
    Ok(record)
}

/// Each phase's latency over all its slices, and the median of its slices' p99s: a
/// figure a few slices disturbed by something else on the machine cannot move much.
/// Slices with fewer than half the requests of the fullest (cut by the run's start or
/// end) count only in the first.
fn by_phase(phases: &Phases, by_slice: BTreeMap<i64, Vec<u64>>) -> (Vec<Latency>, Vec<u64>) {
    let n = phases.count as usize;
    let full = by_slice.values().map(Vec::len).max().unwrap_or(0);
    let mut pooled: Vec<Vec<u64>> = vec![Vec::new(); n];
    let mut slice_p99: Vec<Vec<u64>> = vec![Vec::new(); n];
    for (slice, latencies) in by_slice {
        let phase = phases.phase_of_slice(slice) as usize;
        if latencies.len() * 2 >= full {
            slice_p99[phase].push(Latency::of(latencies.clone()).p99_us);
        }
        pooled[phase].extend(latencies);
    }
    let medians = slice_p99
        .into_iter()
        .map(|mut p99s| {
            p99s.sort_unstable();
            match p99s.len() {
                0 => 0,
                k if k % 2 == 1 => p99s[k / 2],
                k => (p99s[k / 2 - 1] + p99s[k / 2]) / 2,
            }
        })
        .collect();
    (pooled.into_iter().map(Latency::of).collect(), medians)
}

/// Releases request `i` at `start + i / rate` and writes it on the next idle
/// connection; returns what it recorded itself (requests never sent).
fn pace(shared: &Shared, start: Instant, rate: f64, total: u64, only_phase: Option<u32>) -> Tally {
    let due_at = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut tally = Tally::default();
    let mut released = 0;
    let mut backlog: VecDeque<Instant> = VecDeque::new();
    let mut cursor = 0;
    let n = shared.slots.len();
    loop {
        let now = Instant::now();
        if now >= shared.give_up {
            for intended in backlog.drain(..) {
                if shared.recorded(intended) {
                    let waited = shared.give_up.saturating_duration_since(intended);
                    tally.latency(shared.phases.as_ref(), intended, waited);
                    tally.error("never-sent");
                }
            }
            return tally;
        }
        while released < total && due_at(released) <= now {
            let due = due_at(released);
            if let (Some(only), Some(phases)) = (only_phase, shared.phases.as_ref())
                && phases.of(due).0 != only
            {
                // Skip to the first request due in this generator's next slice, so the
                // pacer sleeps through the other phases instead of waking for each.
                let next = phases.next_start(due, only);
                let index = (next.saturating_duration_since(start).as_secs_f64() * rate).ceil();
                released = (index as u64).max(released + 1);
                continue;
            }
            backlog.push_back(due);
            released += 1;
        }
        'dispatch: while let Some(&intended) = backlog.front() {
            for k in 0..n {
                let i = (cursor + k) % n;
                // A slot its reader holds right now is not idle anyway.
                let mut slot = match shared.slots[i].try_lock() {
                    Ok(s) => s,
                    Err(TryLockError::Poisoned(p)) => p.into_inner(),
                    Err(TryLockError::WouldBlock) => continue,
                };
                if !matches!(slot.state, SlotState::Idle) {
                    continue;
                }
                let Some(writer) = slot.writer.as_mut() else {
                    continue;
                };
                // A failed write leaves the request in flight: the reader sees the broken
                // connection, counts the request as failed and reconnects.
                let _ = write_request(writer, &shared.request, shared.give_up);
                slot.state = SlotState::InFlight(intended);
                drop(slot);
                backlog.pop_front();
                cursor = (i + 1) % n;
                continue 'dispatch;
            }
            break;
        }
        if released >= total && backlog.is_empty() {
            return tally;
        }
        let wait = if backlog.is_empty() {
            due_at(released)
                .saturating_duration_since(Instant::now())
                .max(MIN_PACING_SLEEP)
        } else {
            BACKLOG_POLL
        };
        std::thread::sleep(wait);
    }
}

/// Writes the whole request on a non-blocking socket (it is shared with the runtime).
fn write_request(
    writer: &mut std::net::TcpStream,
    request: &[u8],
    give_up: Instant,
) -> std::io::Result<()> {
    let mut written = 0;
    while written < request.len() {
        match writer.write(&request[written..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= give_up {
                    return Err(e);
                }
                std::thread::sleep(BACKLOG_POLL);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Reads the answers on connection `i` until cancelled; reconnects after a failure.
async fn read_answers(
    shared: Arc<Shared>,
    i: usize,
    mut connection: Connection,
    cancel: CancellationToken,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let outcome = tokio::select! {
            biased;
            () = cancel.cancelled() => return tally,
            outcome = connection.read_response() => outcome,
        };
        let done = Instant::now();
        let reconnect = {
            let mut slot = lock(&shared.slots[i]);
            let in_flight = match slot.state {
                SlotState::InFlight(intended) => Some(intended),
                _ => None,
            };
            let recorded = in_flight.filter(|&t| shared.recorded(t));
            match &outcome {
                Ok(answer) => {
                    if in_flight.is_some() {
                        tally.handled += 1;
                    }
                    if let Some(intended) = recorded {
                        tally.answered += 1;
                        if (200..300).contains(&answer.status) {
                            tally.ok += 1;
                        } else {
                            tally.error(format!("status-{}", answer.status));
                        }
                        let latency = done.saturating_duration_since(intended);
                        tally.latency(shared.phases.as_ref(), intended, latency);
                    }
                }
                Err(e) => {
                    if let Some(intended) = recorded {
                        tally.error(format!("io-{:?}", e.kind()));
                        let latency = done.saturating_duration_since(intended);
                        tally.latency(shared.phases.as_ref(), intended, latency);
                    }
                }
            }
            let reconnect = outcome.as_ref().map_or(true, |a| a.close);
            if reconnect {
                slot.state = SlotState::Reconnecting;
                slot.writer = None;
            } else {
                slot.state = SlotState::Idle;
            }
            reconnect
        };
        if reconnect {
            loop {
                if cancel.is_cancelled() || Instant::now() >= shared.give_up {
                    return tally;
                }
                match Connection::connect_split(&shared.authority).await {
                    Ok((c, writer)) => {
                        connection = c;
                        let mut slot = lock(&shared.slots[i]);
                        slot.writer = Some(writer);
                        slot.state = SlotState::Idle;
                        break;
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        }
    }
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
            phases: 1,
            phase_length: 2.0,
            phase_epoch_ms: None,
            only_phase: None,
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
        let failed: u64 = record.error_detail.values().sum();
        assert!(failed > 50, "{:?}", record.error_detail);
        assert_eq!(record.latency.unwrap().samples, 200);
    }

    #[test]
    fn phases_follow_the_wall_clock_from_the_epoch() {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        // The epoch was 2.55 s ago: with 1-second slices of 3 phases, now is 0.55 s into
        // slice 2; 0.5 s later is slice 3, phase 0, within its settling tenth.
        let p = Phases::new(3, 1.0, Some(now_ms - 2_550));
        let t = p.anchor;
        assert_eq!(p.of(t), (2, false));
        assert_eq!(p.of(t + Duration::from_millis(500)), (0, true));
        assert_eq!(p.of(t + Duration::from_millis(700)), (0, false));
        assert_eq!(p.of(t - Duration::from_millis(600)), (1, false));
        // Before the epoch, slices still count in turn.
        assert_eq!(p.of(t - Duration::from_millis(2_600)), (2, false));
        // Phase 1 next starts 1.45 s from now, phase 0 0.45 s from now.
        let next = p.next_start(t, 1).duration_since(t).as_secs_f64();
        assert!((next - 1.45).abs() < 0.001, "{next}");
        let next = p.next_start(t, 0).duration_since(t).as_secs_f64();
        assert!((next - 0.45).abs() < 0.001, "{next}");
    }

    /// A generator limited to one of two phases sends only in its slices; one sending
    /// throughout reports each phase's requests apart, settling times left out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_phase_limited_generator_sends_only_in_its_slices() {
        let address = server(Duration::ZERO, None).await;
        let epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut a = args(&address, 400.0, 2.0, 4);
        a.phases = 2;
        a.phase_length = 0.25;
        a.phase_epoch_ms = Some(epoch);
        a.only_phase = Some(1);
        let limited = run(&a).await.unwrap();
        assert_eq!(limited.errors, 0, "{:?}", limited.error_detail);
        assert!(
            (360..=440).contains(&limited.requests),
            "half of 800 due requests, give or take a slice: {}",
            limited.requests
        );
        assert!(limited.phase_latency.is_empty());
        a.only_phase = None;
        let all = run(&a).await.unwrap();
        assert_eq!(all.requests, 800);
        let counts: Vec<u64> = all.phase_latency.iter().map(|l| l.samples).collect();
        assert_eq!(counts.len(), 2);
        assert_eq!(all.phase_slice_p99_us.len(), 2);
        assert!(all.phase_slice_p99_us.iter().all(|&p| p > 0));
        for c in &counts {
            assert!(
                (300..=380).contains(c),
                "nine tenths of ~400 per phase: {counts:?}"
            );
        }
    }
}
