//! The value cells behind each series: plain atomics, so recording never takes a lock.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// A monotonically increasing integer counter.
#[derive(Debug, Default)]
pub struct Counter(pub(crate) AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A gauge that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds `n` (may be negative).
    pub fn add(&self, n: i64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, n: i64) {
        self.0.store(n, Ordering::Relaxed);
    }
    /// Current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The token and cost counters of one (provider, model, team, key): one lookup per request
/// updates all seven families.
#[derive(Debug, Default)]
pub struct UsageCells {
    /// Input tokens.
    pub prompt: Counter,
    /// Output tokens.
    pub completion: Counter,
    /// Input plus output.
    pub total: Counter,
    /// Input read from the prompt cache.
    pub cached: Counter,
    /// Input written to the prompt cache.
    pub cache_write: Counter,
    /// Output spent on reasoning.
    pub reasoning: Counter,
    /// Cost in nano-USD; rendered as USD.
    pub cost_nanos: Counter,
}

impl UsageCells {
    /// Adds one request's tokens and cost.
    pub fn add_usage(&self, u: &crate::metering::Usage, cost_nanos: u64) {
        self.prompt.add(u.input);
        self.completion.add(u.output);
        self.total.add(u.total());
        self.cached.add(u.cached_read);
        self.cache_write.add(u.cache_write);
        self.reasoning.add(u.reasoning);
        self.cost_nanos.add(cost_nanos);
    }
}

/// Bucket bounds of a histogram, in nanoseconds, with their rendered `le` values.
#[derive(Debug)]
pub struct Buckets {
    /// Upper bounds in nanoseconds, ascending.
    pub bounds_ns: &'static [u64],
    /// The same bounds as `le` label values in seconds.
    pub labels: &'static [&'static str],
}

/// Latency of whole requests and of upstream calls: 5 ms to 5 min.
pub const LATENCY_BUCKETS: Buckets = Buckets {
    bounds_ns: &[
        5_000_000,
        10_000_000,
        25_000_000,
        50_000_000,
        100_000_000,
        250_000_000,
        500_000_000,
        1_000_000_000,
        2_500_000_000,
        5_000_000_000,
        10_000_000_000,
        30_000_000_000,
        60_000_000_000,
        120_000_000_000,
        300_000_000_000,
    ],
    labels: &[
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0",
        "30.0", "60.0", "120.0", "300.0",
    ],
};

/// Time spent in the gateway itself: 10 us to 100 ms.
pub const OVERHEAD_BUCKETS: Buckets = Buckets {
    bounds_ns: &[
        10_000,
        25_000,
        50_000,
        100_000,
        250_000,
        500_000,
        1_000_000,
        2_500_000,
        5_000_000,
        10_000_000,
        25_000_000,
        100_000_000,
    ],
    labels: &[
        "1e-05", "2.5e-05", "5e-05", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005",
        "0.01", "0.025", "0.1",
    ],
};

/// A histogram with fixed buckets; the count of the last slot is the `+Inf` overflow.
#[derive(Debug)]
pub struct Histogram {
    buckets: &'static Buckets,
    counts: Box<[AtomicU64]>,
    sum_ns: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `buckets`.
    pub fn new(buckets: &'static Buckets) -> Histogram {
        Histogram {
            buckets,
            counts: (0..=buckets.bounds_ns.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            sum_ns: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let i = self.buckets.bounds_ns.partition_point(|b| *b < ns);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket (`le` label, count), then total count and sum in seconds.
    pub fn cumulative(&self) -> (Vec<(&'static str, u64)>, u64, f64) {
        let mut acc = 0;
        let mut out = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            out.push((self.buckets.labels.get(i).copied().unwrap_or("+Inf"), acc));
        }
        (out, acc, self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9)
    }
}

/// A latency histogram cell.
#[derive(Debug)]
pub struct LatencyHistogram(pub Histogram);
impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram(Histogram::new(&LATENCY_BUCKETS))
    }
}

/// An overhead histogram cell.
#[derive(Debug)]
pub struct OverheadHistogram(pub Histogram);
impl Default for OverheadHistogram {
    fn default() -> Self {
        OverheadHistogram(Histogram::new(&OVERHEAD_BUCKETS))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let h = Histogram::new(&LATENCY_BUCKETS);
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(5)); // on the bound: le="0.005"
        h.observe(Duration::from_millis(7));
        h.observe(Duration::from_secs(1000));
        let (b, count, sum) = h.cumulative();
        assert_eq!(b[0], ("0.005", 2));
        assert_eq!(b[1], ("0.01", 3));
        assert_eq!(b.last().copied(), Some(("+Inf", 4)));
        assert_eq!(count, 4);
        assert!((sum - 1000.015).abs() < 1e-9);
    }
}
