//! CPU time and resident memory of running processes, from `/proc`.

use std::collections::BTreeMap;
use std::str::FromStr;

use anyhow::{Context, bail};

/// Kernel clock ticks per second, the unit of `utime` and `stime` in `/proc/<pid>/stat`.
/// The kernel reports them in `USER_HZ`, which is 100 on every Linux architecture Larder
/// runs on; it is part of the user-space ABI and does not follow `CONFIG_HZ`.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("process {pid} is not running"))?;
    parse_cpu_seconds(&stat).with_context(|| format!("cannot parse /proc/{pid}/stat"))
}

fn parse_cpu_seconds(stat: &str) -> anyhow::Result<f64> {
    // The command name in parentheses may hold spaces; fields count from the state, which
    // is field 3, so utime (field 14) and stime (field 15) are at 11 and 12.
    let (_, rest) = stat.rsplit_once(") ").context("no command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("too few fields")?.parse::<u64>()? as f64)
    };
    Ok((tick(11)? + tick(12)?) / USER_HZ)
}

/// Resident memory of a process now and at its peak, bytes (`VmRSS`, `VmHWM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    pub rss: u64,
    pub peak: u64,
}

pub fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is not running"))?;
    parse_memory(&status).with_context(|| format!("cannot parse /proc/{pid}/status"))
}

fn parse_memory(status: &str) -> anyhow::Result<Memory> {
    let kib = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name}"))?;
        let value = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse::<u64>()?;
        Ok(value * 1024)
    };
    Ok(Memory {
        rss: kib("VmRSS:")?,
        peak: kib("VmHWM:")?,
    })
}

/// A named process whose CPU time a measurement reports, given as `name=pid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPid {
    pub name: String,
    pub pid: u32,
}

impl FromStr for NamedPid {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> anyhow::Result<Self> {
        let Some((name, pid)) = s.split_once('=') else {
            bail!("expected name=pid, got {s:?}");
        };
        if name.is_empty() {
            bail!("expected name=pid, got {s:?}");
        }
        Ok(NamedPid {
            name: name.to_owned(),
            pid: pid.parse().with_context(|| format!("bad pid in {s:?}"))?,
        })
    }
}

/// CPU seconds of each named process at one moment.
#[derive(Debug, Clone)]
pub struct CpuSample(BTreeMap<String, f64>);

impl CpuSample {
    pub fn take(pids: &[NamedPid]) -> anyhow::Result<CpuSample> {
        let mut seconds = BTreeMap::new();
        for p in pids {
            seconds.insert(p.name.clone(), cpu_seconds(p.pid)?);
        }
        Ok(CpuSample(seconds))
    }

    /// CPU seconds each process used since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .map(|(name, now)| {
                let before = earlier.0.get(name).copied().unwrap_or(*now);
                (name.clone(), (now - before).max(0.0))
            })
            .collect()
    }
}

/// CPU seconds per 10,000 requests, for each process; empty when no request completed.
pub fn per_10k(cpu: &BTreeMap<String, f64>, requests: u64) -> BTreeMap<String, f64> {
    if requests == 0 {
        return BTreeMap::new();
    }
    cpu.iter()
        .map(|(name, s)| (name.clone(), s / requests as f64 * 10_000.0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_seconds_of_a_stat_line_with_spaces_in_the_name() {
        let stat =
            "1234 (tokio worker) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        assert_eq!(parse_cpu_seconds(stat).unwrap(), 3.0);
    }

    #[test]
    fn our_own_cpu_time_is_readable() {
        let pid = std::process::id();
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        let m = memory(pid).unwrap();
        assert!(m.rss > 0 && m.peak >= m.rss);
    }

    #[test]
    fn memory_from_status() {
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse_memory(status).unwrap(),
            Memory {
                rss: 1 << 20,
                peak: 2 << 20
            }
        );
    }

    #[test]
    fn named_pids() {
        let p: NamedPid = "gateway=42".parse().unwrap();
        assert_eq!((p.name.as_str(), p.pid), ("gateway", 42));
        assert!("gateway".parse::<NamedPid>().is_err());
        assert!("=1".parse::<NamedPid>().is_err());
        assert!("g=x".parse::<NamedPid>().is_err());
    }

    #[test]
    fn per_10k_requests() {
        let cpu = BTreeMap::from([("gateway".to_owned(), 2.0)]);
        assert_eq!(per_10k(&cpu, 100_000)["gateway"], 0.2);
        assert!(per_10k(&cpu, 0).is_empty());
    }
}
