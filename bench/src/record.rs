//! One measurement, as each load subcommand prints it (one JSON object per line).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::proc::NamedPid;
use crate::stats::Latency;

/// How the load was generated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Closed loop (`wrk`): each connection sends its next request when the last one is
    /// answered; measures peak throughput.
    Closed,
    /// Open loop at a fixed rate; measures latency from the intended send time.
    Open,
    /// `redis-benchmark` against Redis itself: the floor reference.
    RedisBenchmark,
}

/// What a measurement is of; given on the command line of every load subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct Label {
    /// The server measured: `gateway`, `webdis`, `near` (gateway, near-cached namespace)
    /// or `redis`.
    #[arg(long)]
    pub target: String,
    /// The operation: `get`, `put` or `set`.
    #[arg(long)]
    pub op: String,
    /// Value size in bytes.
    #[arg(long)]
    pub size: u64,
    /// Which repeat of the benchmark this is (1-based).
    #[arg(long, default_value_t = 1)]
    pub repeat: u32,
    /// Processes whose CPU time to report, `name=pid`, repeatable (e.g. `gateway=123`).
    #[arg(long = "pid")]
    pub pids: Vec<NamedPid>,
    /// Append the record to this file as well as printing it.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: Kind,
    pub target: String,
    pub op: String,
    pub size: u64,
    pub repeat: u32,
    /// Open loop: the rate asked for, requests per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_rps: Option<f64>,
    /// Open loop: the offered rate as a fraction of the reference peak it was derived from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_fraction: Option<f64>,
    pub connections: u32,
    /// Seconds the measured requests span.
    pub duration_s: f64,
    /// Requests answered within the measurement (any status).
    pub requests: u64,
    /// Successful (2xx) requests per second.
    pub rps: f64,
    /// Requests that failed: non-2xx answers, socket errors, timeouts, never sent.
    pub errors: u64,
    #[serde(default)]
    pub error_detail: BTreeMap<String, u64>,
    /// Open loop: corrected for coordinated omission. Closed loop: as the tool reports
    /// it (not corrected; for information only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Open loop with phases: the latency of the requests due in each phase's slices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_latency: Vec<Latency>,
    /// Open loop with phases: the median of the p99s of each phase's slices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phase_slice_p99_us: Vec<u64>,
    /// `redis-benchmark`'s own latency figures (closed loop), milliseconds.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub closed_latency_ms: BTreeMap<String, f64>,
    /// CPU seconds each named process used during the measurement.
    #[serde(default)]
    pub cpu_s: BTreeMap<String, f64>,
    #[serde(default)]
    pub cpu_s_per_10k: BTreeMap<String, f64>,
    pub started_at_ms: u64,
}

impl Record {
    pub fn new(kind: Kind, label: &Label) -> Record {
        Record {
            kind,
            target: label.target.clone(),
            op: label.op.clone(),
            size: label.size,
            repeat: label.repeat,
            offered_rps: None,
            rate_fraction: None,
            connections: 0,
            duration_s: 0.0,
            requests: 0,
            rps: 0.0,
            errors: 0,
            error_detail: BTreeMap::new(),
            latency: None,
            phase_latency: Vec::new(),
            phase_slice_p99_us: Vec::new(),
            closed_latency_ms: BTreeMap::new(),
            cpu_s: BTreeMap::new(),
            cpu_s_per_10k: BTreeMap::new(),
            started_at_ms: larder_registry::now_ms(),
        }
    }

    /// Prints the record as one JSON line and appends it to `label.out` when given.
    pub fn emit(&self, label: &Label) -> anyhow::Result<()> {
        let line = serde_json::to_string(self)?;
        println!("{line}");
        if let Some(path) = &label.out {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            writeln!(file, "{line}")?;
        }
        Ok(())
    }
}

/// Reads the records of a JSON-lines file.
pub fn read_all(path: &std::path::Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, line)| {
            serde_json::from_str(line)
                .map_err(|e| anyhow::anyhow!("{} line {}: {e}", path.display(), i + 1))
        })
        .collect()
}
