//! `redis-benchmark` against the Redis master: the floor reference, the throughput of
//! Redis itself with no HTTP in between.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::proc::{CpuSample, per_10k};
use crate::record::{Kind, Label, Record};

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub label: Label,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 6379)]
    pub port: u16,
    /// Requests (the run lasts as long as Redis takes for them).
    #[arg(long, default_value_t = 500_000)]
    pub requests: u64,
    #[arg(long, default_value_t = 64)]
    pub connections: u32,
    /// Load-generator threads.
    #[arg(long, default_value_t = 2)]
    pub threads: u32,
    /// The `redis-benchmark` program.
    #[arg(long, default_value = "redis-benchmark")]
    pub redis_benchmark: PathBuf,
}

/// One row of `redis-benchmark --csv`: requests per second and latencies in ms.
#[derive(Debug, PartialEq)]
struct Row {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    mean_ms: f64,
}

fn parse_csv(out: &str) -> anyhow::Result<Row> {
    let mut lines = out.lines().filter(|l| !l.trim().is_empty());
    let header: Vec<String> = lines
        .next()
        .context("no CSV header")?
        .split(',')
        .map(|c| c.trim_matches('"').to_owned())
        .collect();
    let row: Vec<String> = lines
        .next()
        .context("no CSV row")?
        .split(',')
        .map(|c| c.trim_matches('"').to_owned())
        .collect();
    let col = |name: &str| -> anyhow::Result<f64> {
        let i = header
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("no column {name}"))?;
        row.get(i)
            .context("short row")?
            .parse()
            .with_context(|| format!("column {name}"))
    };
    Ok(Row {
        rps: col("rps")?,
        p50_ms: col("p50_latency_ms")?,
        p99_ms: col("p99_latency_ms")?,
        max_ms: col("max_latency_ms")?,
        mean_ms: col("avg_latency_ms")?,
    })
}

pub fn run(args: &Args) -> anyhow::Result<Record> {
    let test = match args.label.op.as_str() {
        "get" | "set" => args.label.op.as_str(),
        other => bail!("redis-benchmark op must be get or set, not {other}"),
    };
    let cpu_before = CpuSample::take(&args.label.pids)?;
    let started = Instant::now();
    let output = Command::new(&args.redis_benchmark)
        .args(["-h", &args.host, "-p", &args.port.to_string()])
        .args(["-c", &args.connections.to_string()])
        .args(["-n", &args.requests.to_string()])
        .args(["-d", &args.label.size.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["-t", test, "--csv"])
        .output()
        .with_context(|| format!("cannot run {}", args.redis_benchmark.display()))?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = CpuSample::take(&args.label.pids)?.since(&cpu_before);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        bail!(
            "redis-benchmark failed ({}): {stdout}{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let row = parse_csv(&stdout)?;
    let mut record = Record::new(Kind::RedisBenchmark, &args.label);
    record.connections = args.connections;
    record.requests = args.requests;
    record.rps = row.rps;
    record.duration_s = if row.rps > 0.0 {
        args.requests as f64 / row.rps
    } else {
        elapsed
    };
    // redis-benchmark reports no p99.9; its closed-loop percentiles go into the detail.
    for (name, ms) in [
        ("p50", row.p50_ms),
        ("p99", row.p99_ms),
        ("max", row.max_ms),
        ("mean", row.mean_ms),
    ] {
        record.closed_latency_ms.insert(name.into(), ms);
    }
    record.cpu_s_per_10k = per_10k(&cpu, args.requests);
    record.cpu_s = cpu;
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_of_redis_7() {
        let out = "\"test\",\"rps\",\"avg_latency_ms\",\"min_latency_ms\",\"p50_latency_ms\",\"p95_latency_ms\",\"p99_latency_ms\",\"max_latency_ms\"\n\"GET\",\"95238.10\",\"0.360\",\"0.056\",\"0.335\",\"0.543\",\"0.783\",\"2.111\"\n";
        assert_eq!(
            parse_csv(out).unwrap(),
            Row {
                rps: 95238.10,
                p50_ms: 0.335,
                p99_ms: 0.783,
                max_ms: 2.111,
                mean_ms: 0.360
            }
        );
        assert!(parse_csv("").is_err());
    }
}
