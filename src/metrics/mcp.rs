//! The MCP gateway's families (`llm_gateway_mcp_*`), recorded by `crate::mcp` when a JSON-RPC
//! exchange settles, rendered only when `[[mcp_servers]]` are configured.
//!
//! `tool` values come from request bodies, so they are untrusted: the registry's value bound
//! folds long ones into `__other__`, and past the series cap a new series folds `tool` first
//! (as `model` elsewhere), keeping the server, team and key.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::family::ValueBound;
use super::render::{Kind, Value, Writer};
use super::{Counter, Family, LatencyHistogram};

/// Upper bounds of the response-size buckets, bytes: 256 B to 16 MiB by powers of four (a tool
/// result is often a few hundred bytes, a `tools/list` of a large server ~100 KB).
const BYTE_BOUNDS: [u64; 9] = [
    256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216,
];
const BYTE_LABELS: [&str; 9] = [
    "256", "1024", "4096", "16384", "65536", "262144", "1048576", "4194304", "16777216",
];

/// A histogram of sizes in bytes.
#[derive(Debug, Default)]
pub struct BytesHistogram {
    counts: [AtomicU64; BYTE_BOUNDS.len() + 1],
    sum: AtomicU64,
}

impl BytesHistogram {
    /// Records one size.
    pub fn observe(&self, bytes: u64) {
        let i = BYTE_BOUNDS.partition_point(|b| *b < bytes);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum.fetch_add(bytes, Ordering::Relaxed);
    }

    fn render(&self, w: &mut Writer, name: &'static str, labels: &super::family::Labels) {
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c.load(Ordering::Relaxed);
            let le = BYTE_LABELS.get(i).copied().unwrap_or("+Inf");
            w.sample(name, "_bucket", labels, Some(("le", le)), Value::Int(acc));
        }
        let sum = self.sum.load(Ordering::Relaxed);
        w.sample(name, "_sum", labels, None, Value::Int(sum));
        w.sample(name, "_count", labels, None, Value::Int(acc));
    }
}

/// The label values of one settled JSON-RPC exchange.
#[derive(Debug, Clone, Copy)]
pub struct McpObservation<'a> {
    /// `[[mcp_servers]] name`.
    pub server: &'a str,
    /// The JSON-RPC method, bounded to the protocol's names (else `__other__`).
    pub method: &'a str,
    /// `tools/call`: the tool; else empty.
    pub tool: &'a str,
    /// Team of the key.
    pub team: &'a str,
    /// Key name.
    pub key: &'a str,
    /// How it ended (`ok`, `tool_error`, `rpc_error`, ...).
    pub outcome: &'a str,
    /// The bounded error class, when it did not end `ok` (or `accepted`).
    pub error_type: Option<&'a str>,
    /// From the request to its response.
    pub duration: Duration,
    /// Bytes of the response body that carried the answer.
    pub response_bytes: u64,
    /// The tool's cost charged, nano-USD.
    pub cost_nanos: u64,
}

/// The MCP gateway's families.
pub struct McpMetrics {
    /// Rendered at all (MCP servers are configured).
    pub(super) on: bool,
    requests: Family<Counter>,
    duration: Family<LatencyHistogram>,
    bytes: Family<BytesHistogram>,
    errors: Family<Counter>,
    cost: Family<Counter>,
    bound: Arc<ValueBound>,
}

impl McpMetrics {
    pub(super) fn new(
        on: bool,
        enabled: &dyn Fn(&str) -> bool,
        cap: usize,
        bound: &Arc<ValueBound>,
    ) -> McpMetrics {
        McpMetrics {
            on,
            requests: Family::new(
                "llm_gateway_mcp_requests_total",
                "MCP JSON-RPC messages from clients, by how they ended.",
                &["server", "method", "tool", "team", "key", "outcome"],
                enabled,
                cap,
            )
            .with_value_bound(bound),
            duration: Family::new(
                "llm_gateway_mcp_request_duration_seconds",
                "MCP: time from a JSON-RPC request to its response.",
                &["server", "method", "tool"],
                enabled,
                cap,
            )
            .with_value_bound(bound),
            bytes: Family::new(
                "llm_gateway_mcp_response_body_bytes",
                "MCP: size of the response body that answered a JSON-RPC request.",
                &["server", "method", "tool"],
                enabled,
                cap,
            )
            .with_value_bound(bound),
            errors: Family::new(
                "llm_gateway_mcp_errors_total",
                "MCP JSON-RPC requests that failed, by bounded error type.",
                &["server", "method", "tool", "team", "error_type"],
                enabled,
                cap,
            )
            .with_value_bound(bound),
            cost: Family::new(
                "llm_gateway_mcp_tool_cost_usd_total",
                "MCP: the configured cost of the tool calls made.",
                &["server", "tool", "team", "key"],
                enabled,
                cap,
            )
            .with_value_bound(bound),
            bound: bound.clone(),
        }
    }

    /// Records one settled exchange.
    pub fn record(&self, o: &McpObservation<'_>) {
        // Folded here, once, so a long name counts once, not once per family.
        let tool = self.bound.fold("tool", o.tool);
        let o = &McpObservation { tool, ..*o };
        self.requests.with(
            &[o.server, o.method, o.tool, o.team, o.key, o.outcome],
            |c| c.add(1),
        );
        let short = [o.server, o.method, o.tool];
        self.duration.with(&short, |h| h.0.observe(o.duration));
        self.bytes.with(&short, |h| h.observe(o.response_bytes));
        if let Some(e) = o.error_type {
            self.errors
                .with(&[o.server, o.method, o.tool, o.team, e], |c| c.add(1));
        }
        if o.cost_nanos > 0 {
            self.cost
                .with(&[o.server, o.tool, o.team, o.key], |c| c.add(o.cost_nanos));
        }
    }

    pub(super) fn render(&self, w: &mut Writer) {
        if !self.on {
            return;
        }
        for f in [&self.requests, &self.errors] {
            w.header(f.name, Kind::Counter, f.help);
            for (labels, c) in f.snapshot() {
                w.sample(f.name, "", &labels, None, Value::Int(c.get()));
            }
        }
        let f = &self.duration;
        w.header(f.name, Kind::Histogram, f.help);
        for (labels, cell) in f.snapshot() {
            let (buckets, count, sum) = cell.0.cumulative();
            for (le, n) in buckets {
                w.sample(f.name, "_bucket", &labels, Some(("le", le)), Value::Int(n));
            }
            w.sample(f.name, "_sum", &labels, None, Value::Float(sum));
            w.sample(f.name, "_count", &labels, None, Value::Int(count));
        }
        let f = &self.bytes;
        w.header(f.name, Kind::Histogram, f.help);
        for (labels, cell) in f.snapshot() {
            cell.render(w, f.name, &labels);
        }
        let f = &self.cost;
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_buckets_are_cumulative() {
        let h = BytesHistogram::default();
        h.observe(10);
        h.observe(256);
        h.observe(257);
        h.observe(1 << 30);
        assert_eq!(h.counts[0].load(Ordering::Relaxed), 2);
        assert_eq!(h.counts[1].load(Ordering::Relaxed), 1);
        assert_eq!(h.counts[BYTE_BOUNDS.len()].load(Ordering::Relaxed), 1);
        assert_eq!(h.sum.load(Ordering::Relaxed), 10 + 256 + 257 + (1 << 30));
    }

    #[test]
    fn tool_names_fold_past_the_cap_keeping_the_team() {
        let bound = Arc::new(ValueBound::new(16));
        let m = McpMetrics::new(true, &|_| true, 2, &bound);
        let obs = |tool: &'static str| McpObservation {
            server: "s",
            method: "tools/call",
            tool,
            team: "eng",
            key: "k",
            outcome: "ok",
            error_type: None,
            duration: Duration::from_millis(1),
            response_bytes: 10,
            cost_nanos: 0,
        };
        for t in ["a", "b", "c", "d", "a-tool-name-longer-than-16"] {
            m.record(&obs(t));
        }
        let snap = m.requests.snapshot();
        assert!(snap.len() <= 3, "{snap:?}");
        let other = snap
            .iter()
            .find(|(l, _)| l.iter().any(|(n, v)| *n == "tool" && &**v == "__other__"))
            .expect("a folded series");
        assert!(other.0.iter().any(|(n, v)| *n == "team" && &**v == "eng"));
        assert_eq!(bound.folded("tool"), 1);
    }
}
