//! Exact percentiles of recorded latencies, and the median and spread of repeated runs.

use serde::{Deserialize, Serialize};

/// The value at percentile `p` (0–100) of `sorted` by nearest rank: the smallest value
/// that at least `p` % of the values do not exceed. Zero for no values.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    // The epsilon keeps float error (0.999 * 1000 = 999.0000000000001) off the next rank.
    let rank = ((p / 100.0) * n as f64 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

/// A latency distribution in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub mean_us: f64,
    /// How many requests the distribution holds.
    pub samples: u64,
}

impl Latency {
    /// The distribution of `values` (microseconds), every one of them counted.
    pub fn of(mut values: Vec<u64>) -> Latency {
        values.sort_unstable();
        let sum: u128 = values.iter().map(|&v| u128::from(v)).sum();
        Latency {
            p50_us: percentile(&values, 50.0),
            p99_us: percentile(&values, 99.0),
            p999_us: percentile(&values, 99.9),
            max_us: values.last().copied().unwrap_or(0),
            mean_us: if values.is_empty() {
                0.0
            } else {
                sum as f64 / values.len() as f64
            },
            samples: values.len() as u64,
        }
    }

    /// `p50`, `p99`, `p99.9` or `max`.
    pub fn get(&self, which: &str) -> Option<u64> {
        match which {
            "p50" => Some(self.p50_us),
            "p99" => Some(self.p99_us),
            "p99.9" => Some(self.p999_us),
            "max" => Some(self.max_us),
            _ => None,
        }
    }
}

/// The median of repeated measurements and how far they spread.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many measurements.
    pub n: usize,
}

impl Spread {
    /// `None` for no values; NaN values are ignored.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        })
    }

    /// Half the range relative to the median, in percent: the ± a reader can expect.
    pub fn relative_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            (self.max - self.min) / 2.0 / self.median.abs() * 100.0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 50.0), 500);
        assert_eq!(percentile(&values, 99.0), 990);
        assert_eq!(percentile(&values, 99.9), 999);
        assert_eq!(percentile(&values, 100.0), 1000);
        assert_eq!(percentile(&values, 0.0), 1);
        assert_eq!(percentile(&[], 50.0), 0);
        assert_eq!(percentile(&[7], 99.9), 7);
    }

    #[test]
    fn latency_counts_every_value_including_the_slowest() {
        let mut values = vec![100; 999];
        values.push(50_000);
        let l = Latency::of(values);
        assert_eq!(l.p50_us, 100);
        assert_eq!(l.p99_us, 100);
        assert_eq!(l.p999_us, 100);
        assert_eq!(l.max_us, 50_000);
        assert_eq!(l.samples, 1000);
        let mut values = vec![100; 998];
        values.extend([50_000, 60_000]);
        assert_eq!(Latency::of(values).p999_us, 50_000);
    }

    #[test]
    fn median_and_spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!((Spread::of(&[90.0, 100.0, 110.0]).unwrap().relative_pct() - 10.0).abs() < 1e-9);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }
}
