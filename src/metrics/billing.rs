//! The billing families: fetch errors counted here by the poller, and the billed gauges
//! computed from the stored bill (cached by [`crate::billing::Billing`]) at scrape time.

use parking_lot::Mutex;

use super::render::{Kind, Value, Writer};

/// Failed billing fetch attempts per (source, reason). A few sources times eight reasons:
/// a scan of a short list.
#[derive(Debug, Default)]
pub struct BillingCells {
    errors: Mutex<Vec<(Box<str>, &'static str, u64)>>,
}

impl BillingCells {
    /// Exposes `source`'s counters at 0 for every reason (so `increase()` sees the first).
    pub fn register(&self, source: &str, reasons: &[&'static str]) {
        let mut e = self.errors.lock();
        for r in reasons {
            if !e.iter().any(|(s, x, _)| &**s == source && x == r) {
                e.push((source.into(), r, 0));
            }
        }
    }

    /// Counts one failed attempt.
    pub fn fetch_error(&self, source: &str, reason: &'static str) {
        let mut e = self.errors.lock();
        match e
            .iter_mut()
            .find(|(s, r, _)| &**s == source && *r == reason)
        {
            Some(x) => x.2 += 1,
            None => e.push((source.into(), reason, 1)),
        }
    }

    /// The count of (source, reason).
    pub fn errors(&self, source: &str, reason: &str) -> u64 {
        self.errors
            .lock()
            .iter()
            .find(|(s, r, _)| &**s == source && *r == reason)
            .map_or(0, |x| x.2)
    }
}

/// The billed gauges at one moment.
#[derive(Debug, Clone, Default)]
pub struct BillingGauges {
    /// (provider, model, source, nano-USD) over the window.
    pub cost: Vec<(String, String, String, i64)>,
    /// (provider, model, token type, tokens) over the window.
    pub tokens: Vec<(String, String, String, i64)>,
    /// (provider, model, metered/billed) for the last complete UTC day.
    pub capture: Vec<(String, String, f64)>,
    /// (source, seconds since the epoch) of the last successful fetch.
    pub last_success: Vec<(String, f64)>,
}

pub(super) fn render(w: &mut Writer, cells: &BillingCells, g: Option<&BillingGauges>) {
    let errors = "llm_gateway_billing_fetch_errors_total";
    let snapshot = cells.errors.lock().clone();
    if !snapshot.is_empty() {
        w.header(
            errors,
            Kind::Counter,
            "Failed requests to a provider's billing API, by source and reason (each attempt, retries included).",
        );
        for (s, r, n) in &snapshot {
            w.sample(
                errors,
                "",
                &[("source", s.clone()), ("reason", (*r).into())],
                None,
                Value::Int(*n),
            );
        }
    }
    let Some(g) = g else {
        return;
    };
    let cost = "llm_gateway_billed_cost_usd";
    w.header(
        cost,
        Kind::Gauge,
        "Cost in USD on the provider's bill over the window (the configured one, or from/to of the scrape).",
    );
    for (p, m, s, n) in &g.cost {
        w.sample(
            cost,
            "",
            &[
                ("provider", p.as_str().into()),
                ("model", m.as_str().into()),
                ("source", s.as_str().into()),
            ],
            None,
            Value::Float(*n as f64 / 1e9),
        );
    }
    let tokens = "llm_gateway_billed_tokens";
    w.header(
        tokens,
        Kind::Gauge,
        "Tokens on the provider's bill over the window, by token type (input is all input).",
    );
    for (p, m, t, n) in &g.tokens {
        w.sample(
            tokens,
            "",
            &[
                ("provider", p.as_str().into()),
                ("model", m.as_str().into()),
                ("token_type", t.as_str().into()),
            ],
            None,
            Value::SignedInt(*n),
        );
    }
    let capture = "llm_gateway_billing_capture_ratio";
    w.header(
        capture,
        Kind::Gauge,
        "Metered cost over billed cost for the last complete UTC day (1: the gateway saw the whole bill).",
    );
    for (p, m, r) in &g.capture {
        w.sample(
            capture,
            "",
            &[
                ("provider", p.as_str().into()),
                ("model", m.as_str().into()),
            ],
            None,
            Value::Float(*r),
        );
    }
    let last = "llm_gateway_billing_last_success_timestamp_seconds";
    w.header(
        last,
        Kind::Gauge,
        "When the last fetch of a billing source succeeded (Unix seconds).",
    );
    for (s, t) in &g.last_success {
        w.sample(
            last,
            "",
            &[("source", s.as_str().into())],
            None,
            Value::Float(*t),
        );
    }
}
