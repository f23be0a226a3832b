//! Latency samples and their percentiles. Every sample is kept (a run holds at most a few
//! hundred thousand), so percentiles are exact rather than bucketed.

use serde::{Deserialize, Serialize};

/// Percentiles of a set of durations, in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Number of samples.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest sample.
    pub max: f64,
}

impl Percentiles {
    /// Percentiles of `nanos` (sorted in place).
    pub fn of(nanos: &mut [u64]) -> Percentiles {
        if nanos.is_empty() {
            return Percentiles::default();
        }
        nanos.sort_unstable();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let rank = (q * nanos.len() as f64).ceil().max(1.0) as usize;
            nanos[rank.min(nanos.len()) - 1] as f64 / 1000.0
        };
        let sum: u128 = nanos.iter().map(|&n| u128::from(n)).sum();
        Percentiles {
            count: nanos.len() as u64,
            mean: sum as f64 / nanos.len() as f64 / 1000.0,
            p50: at(0.50),
            p90: at(0.90),
            p99: at(0.99),
            p999: at(0.999),
            max: at(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let p = Percentiles::of(&mut v);
        assert_eq!(p.count, 1000);
        assert_eq!(p.p50, 500.0);
        assert_eq!(p.p90, 900.0);
        assert_eq!(p.p99, 990.0);
        assert_eq!(p.p999, 999.0);
        assert_eq!(p.max, 1000.0);
        assert_eq!(p.mean, 500.5);
        assert_eq!(Percentiles::of(&mut []).count, 0);
    }
}
