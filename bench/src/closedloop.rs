//! Peak throughput with `wrk` (closed loop), and the CPU the servers used for it.
//!
//! `wrk` runs with a Lua script that sets the method and body and, when the run is done,
//! prints its totals as one JSON line (requests, duration, errors by kind, latency
//! percentiles), so nothing depends on the layout of its human-readable report.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::proc::{CpuSample, per_10k};
use crate::record::{Kind, Label, Record};
use crate::stats::Latency;

/// The script `wrk` runs: method and body from the environment, totals as JSON at the end.
const SCRIPT: &str = r#"
wrk.method = os.getenv("LARDER_BENCH_METHOD") or "GET"
local body_file = os.getenv("LARDER_BENCH_BODY")
if body_file and body_file ~= "" then
  local f = assert(io.open(body_file, "rb"))
  wrk.body = f:read("*a")
  f:close()
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LARDER_WRK {"requests":%.0f,"duration_us":%.0f,"bytes":%.0f,"connect":%.0f,"read":%.0f,' ..
    '"write":%.0f,"status":%.0f,"timeout":%.0f,"p50_us":%.0f,"p99_us":%.0f,"p999_us":%.0f,' ..
    '"max_us":%.0f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
"#;

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
    #[arg(long)]
    pub body_file: Option<PathBuf>,
    /// Seconds.
    #[arg(long, default_value_t = 10)]
    pub duration: u32,
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Load-generator threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// The `wrk` program.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
}

/// The totals the script prints.
#[derive(Debug, Deserialize)]
struct Totals {
    requests: u64,
    duration_us: u64,
    connect: u64,
    read: u64,
    write: u64,
    status: u64,
    timeout: u64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    max_us: u64,
    mean_us: f64,
}

fn parse_totals(stdout: &str) -> anyhow::Result<Totals> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("LARDER_WRK "))
        .context("wrk printed no totals")?;
    serde_json::from_str(line).with_context(|| format!("wrk totals {line:?}"))
}

pub fn run(args: &Args) -> anyhow::Result<Record> {
    let mut script = tempfile::Builder::new()
        .prefix("larder-wrk-")
        .suffix(".lua")
        .tempfile()?;
    script.write_all(SCRIPT.as_bytes())?;
    script.flush()?;
    let mut command = Command::new(&args.wrk);
    command
        .arg(format!("-t{}", args.threads))
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.duration))
        .arg("--timeout")
        .arg("5s")
        .arg("-s")
        .arg(script.path())
        .env("LARDER_BENCH_METHOD", &args.method);
    if let Some(body) = &args.body_file {
        command.env("LARDER_BENCH_BODY", body);
    }
    for h in &args.headers {
        crate::http::parse_header(h)?;
        command.arg("-H").arg(h);
    }
    command.arg(&args.url);

    let cpu_before = CpuSample::take(&args.label.pids)?;
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", args.wrk.display()))?;
    let cpu = CpuSample::take(&args.label.pids)?.since(&cpu_before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "wrk failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let t = parse_totals(&stdout)?;

    let mut record = Record::new(Kind::Closed, &args.label);
    record.connections = args.connections;
    record.duration_s = t.duration_us as f64 / 1e6;
    record.requests = t.requests;
    for (name, n) in [
        ("connect", t.connect),
        ("read", t.read),
        ("write", t.write),
        ("status", t.status),
        ("timeout", t.timeout),
    ] {
        if n > 0 {
            record.error_detail.insert(name.into(), n);
        }
    }
    record.errors = record.error_detail.values().sum();
    // Status errors are answered requests; socket errors are not counted in `requests`.
    let ok = t.requests.saturating_sub(t.status);
    record.rps = if record.duration_s > 0.0 {
        ok as f64 / record.duration_s
    } else {
        0.0
    };
    record.latency = Some(Latency {
        p50_us: t.p50_us,
        p99_us: t.p99_us,
        p999_us: t.p999_us,
        max_us: t.max_us,
        mean_us: t.mean_us,
        samples: t.requests,
    });
    record.cpu_s_per_10k = per_10k(&cpu, t.requests);
    record.cpu_s = cpu;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_line_among_the_report() {
        let out = "Running 1s test @ http://x\n  2 threads\nLARDER_WRK {\"requests\":10,\"duration_us\":1000000,\"bytes\":5,\"connect\":0,\"read\":1,\"write\":0,\"status\":2,\"timeout\":0,\"p50_us\":100,\"p99_us\":900,\"p999_us\":990,\"max_us\":1000,\"mean_us\":120.5}\nRequests/sec: 10\n";
        let t = parse_totals(out).unwrap();
        assert_eq!((t.requests, t.read, t.status, t.p999_us), (10, 1, 2, 990));
        assert!(parse_totals("Requests/sec: 10").is_err());
    }
}
