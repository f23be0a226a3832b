//! The response cache's families (`llm_gateway_cache_*`), recorded by `crate::cache` and the
//! request path, rendered only when `[cache]` is on.

use std::time::Duration;

use super::render::{Kind, Value, Writer};
use super::{Counter, Family, Gauge, LatencyHistogram};

/// Why a cacheable request went to the provider without the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bypass {
    /// The backend (Redis) failed or timed out.
    BackendError,
    /// The embeddings call failed, timed out, or returned a vector of another dimension.
    EmbeddingsError,
    /// `x-tollgate-cache: skip` or `Cache-Control: no-cache, no-store`.
    Client,
    /// Not deterministic enough (`temperature` above 0), or not opted in.
    NotCacheable,
    /// The response was larger than `max_entry_bytes`, or failed.
    NotStored,
}

impl Bypass {
    /// Every reason, in label order.
    pub const ALL: [Bypass; 5] = [
        Bypass::BackendError,
        Bypass::EmbeddingsError,
        Bypass::Client,
        Bypass::NotCacheable,
        Bypass::NotStored,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::BackendError => "backend_error",
            Bypass::EmbeddingsError => "embeddings_error",
            Bypass::Client => "client",
            Bypass::NotCacheable => "not_cacheable",
            Bypass::NotStored => "not_stored",
        }
    }
}

/// The cache's families.
pub struct CacheMetrics {
    /// Rendered at all (`[cache]` is on).
    pub(super) on: bool,
    fetch: Family<LatencyHistogram>,
    embeddings: Family<LatencyHistogram>,
    saved_cost: Family<Counter>,
    saved_tokens: Family<Counter>,
    /// Entries held in process (memory entries, or semantic vectors).
    pub entries: Gauge,
    /// Bytes held in process.
    pub bytes: Gauge,
    /// Semantic vectors covered by HNSW graphs.
    pub ann_vectors: Gauge,
    /// Entries evicted to stay under a bound (LRU, or the vector index's).
    pub evictions: Counter,
    /// Responses stored.
    pub stores: Counter,
    bypass: [Counter; Bypass::ALL.len()],
}

impl CacheMetrics {
    pub(super) fn new(on: bool, enabled: &dyn Fn(&str) -> bool, cap: usize) -> CacheMetrics {
        CacheMetrics {
            on,
            fetch: Family::new(
                "llm_gateway_cache_fetch_duration_seconds",
                "Time to look a request up in the response cache, by result (hit, miss).",
                &["cache_status"],
                enabled,
                cap,
            ),
            embeddings: Family::new(
                "llm_gateway_cache_embeddings_duration_seconds",
                "Semantic cache: time to embed a prompt.",
                &["embeddings_provider", "embeddings_model"],
                enabled,
                cap,
            ),
            saved_cost: Family::new(
                "llm_gateway_cache_saved_cost_usd_total",
                "What the requests answered from the cache cost when they were first answered.",
                &["provider", "model", "team"],
                enabled,
                cap,
            ),
            saved_tokens: Family::new(
                "llm_gateway_cache_saved_tokens_total",
                "Tokens (input plus output) the requests answered from the cache did not spend.",
                &["provider", "model", "team"],
                enabled,
                cap,
            ),
            entries: Gauge::default(),
            bytes: Gauge::default(),
            ann_vectors: Gauge::default(),
            evictions: Counter::default(),
            stores: Counter::default(),
            bypass: Default::default(),
        }
    }

    /// One lookup took `d`.
    pub fn fetch(&self, status: &str, d: Duration) {
        self.fetch.with(&[status], |h| h.0.observe(d));
    }

    /// One embeddings call took `d`.
    pub fn embeddings(&self, provider: &str, model: &str, d: Duration) {
        self.embeddings.with(&[provider, model], |h| h.0.observe(d));
    }

    /// A hit saved `cost_nanos` and `tokens`.
    pub fn saved(&self, provider: &str, model: &str, team: &str, cost_nanos: u64, tokens: u64) {
        self.saved_cost
            .with(&[provider, model, team], |c| c.add(cost_nanos));
        self.saved_tokens
            .with(&[provider, model, team], |c| c.add(tokens));
    }

    /// One bypass.
    pub fn bypass(&self, reason: Bypass) {
        self.bypass[reason as usize].add(1);
    }

    /// The count of bypasses for `reason`.
    pub fn bypassed(&self, reason: Bypass) -> u64 {
        self.bypass[reason as usize].get()
    }

    pub(super) fn render(&self, w: &mut Writer) {
        if !self.on {
            return;
        }
        for f in [&self.fetch, &self.embeddings] {
            w.header(f.name, Kind::Histogram, f.help);
            for (labels, cell) in f.snapshot() {
                let (buckets, count, sum) = cell.0.cumulative();
                for (le, n) in buckets {
                    w.sample(f.name, "_bucket", &labels, Some(("le", le)), Value::Int(n));
                }
                w.sample(f.name, "_sum", &labels, None, Value::Float(sum));
                w.sample(f.name, "_count", &labels, None, Value::Int(count));
            }
        }
        let f = &self.saved_cost;
        w.header(f.name, Kind::Counter, f.help);
        for (labels, c) in f.snapshot() {
            w.sample(
                f.name,
                "",
                &labels,
                None,
                Value::Float(c.get() as f64 / 1e9),
            );
        }
        let f = &self.saved_tokens;
        w.header(f.name, Kind::Counter, f.help);
        for (labels, c) in f.snapshot() {
            w.sample(f.name, "", &labels, None, Value::Int(c.get()));
        }
        let gauges = [
            (
                "llm_gateway_cache_entries",
                "Entries the cache holds in process.",
                &self.entries,
            ),
            (
                "llm_gateway_cache_bytes",
                "Bytes the cache holds in process.",
                &self.bytes,
            ),
            (
                "llm_gateway_cache_ann_vectors",
                "Semantic cache: vectors searched through an HNSW graph (groups above ann_above_entries).",
                &self.ann_vectors,
            ),
        ];
        for (name, help, g) in gauges {
            w.header(name, Kind::Gauge, help);
            w.sample(name, "", &[], None, Value::SignedInt(g.get()));
        }
        let counters = [
            (
                "llm_gateway_cache_evictions_total",
                "Entries evicted to stay under the cache's bounds.",
                &self.evictions,
            ),
            (
                "llm_gateway_cache_stores_total",
                "Responses stored in the cache.",
                &self.stores,
            ),
        ];
        for (name, help, c) in counters {
            w.header(name, Kind::Counter, help);
            w.sample(name, "", &[], None, Value::Int(c.get()));
        }
        let name = "llm_gateway_cache_bypass_total";
        w.header(
            name,
            Kind::Counter,
            "Cacheable requests that went to the provider without the cache, by reason.",
        );
        for r in Bypass::ALL {
            w.sample(
                name,
                "",
                &[("reason", r.as_str().into())],
                None,
                Value::Int(self.bypassed(r)),
            );
        }
    }
}
