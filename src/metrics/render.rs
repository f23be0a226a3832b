//! Exposition: Prometheus text format 0.0.4, and OpenMetrics 1.0 when the scraper asks for it.
//!
//! The two differ for counters (OpenMetrics names the family without `_total` in `# TYPE`) and
//! in the closing `# EOF`; everything else is written by the same code.

use std::fmt::Write;

use super::cells::Histogram;
use super::{Family, LedgerWindow, Metrics, process};
use crate::metering::nanos_to_usd;

/// Content type of the 0.0.4 text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics 1.0.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Exposition format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4.
    Text,
    /// OpenMetrics 1.0.
    OpenMetrics,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists it, else the text format.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The `Content-Type` of this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }
}

/// Metric type, as written in `# TYPE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Counter (name ends in `_total`).
    Counter,
    /// Gauge.
    Gauge,
    /// Histogram.
    Histogram,
}

pub(super) struct Writer {
    out: String,
    format: Format,
}

impl Writer {
    pub(super) fn header(&mut self, name: &str, kind: Kind, help: &str) {
        let family = match (self.format, kind) {
            (Format::OpenMetrics, Kind::Counter) => name.strip_suffix("_total").unwrap_or(name),
            _ => name,
        };
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {family} {help}");
        let _ = writeln!(self.out, "# TYPE {family} {kind}");
    }

    pub(super) fn sample(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[(&str, Box<str>)],
        extra: Option<(&str, &str)>,
        value: Value,
    ) {
        self.out.push_str(name);
        self.out.push_str(suffix);
        if !labels.is_empty() || extra.is_some() {
            self.out.push('{');
            let mut first = true;
            let all = labels.iter().map(|(k, v)| (*k, &**v)).chain(extra);
            for (k, v) in all {
                if !first {
                    self.out.push(',');
                }
                first = false;
                self.out.push_str(k);
                self.out.push_str("=\"");
                escape_into(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        match value {
            Value::Int(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::SignedInt(v) => {
                let _ = write!(self.out, "{v}");
            }
            Value::Float(v) => write_float(&mut self.out, v),
        }
        self.out.push('\n');
    }
}

/// A sample value.
#[derive(Debug, Clone, Copy)]
pub(super) enum Value {
    Int(u64),
    SignedInt(i64),
    Float(f64),
}

fn write_float(out: &mut String, v: f64) {
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        let _ = write!(out, "{v:.1}");
    } else {
        let _ = write!(out, "{v}");
    }
}

fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn counter_family(w: &mut Writer, f: &Family<super::Counter>) {
    w.header(f.name, Kind::Counter, f.help);
    for (labels, c) in f.snapshot() {
        w.sample(f.name, "", &labels, None, Value::Int(c.get()));
    }
}

fn histogram_family<T>(w: &mut Writer, f: &Family<T>, hist: impl Fn(&T) -> &Histogram)
where
    T: Default,
{
    w.header(f.name, Kind::Histogram, f.help);
    for (labels, cell) in f.snapshot() {
        let (buckets, count, sum) = hist(&cell).cumulative();
        for (le, n) in buckets {
            w.sample(f.name, "_bucket", &labels, Some(("le", le)), Value::Int(n));
        }
        w.sample(f.name, "_sum", &labels, None, Value::Float(sum));
        w.sample(f.name, "_count", &labels, None, Value::Int(count));
    }
}

pub(super) fn render(
    m: &Metrics,
    format: Format,
    ledger: Option<&LedgerWindow>,
    billing: Option<&super::BillingGauges>,
) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
        format,
    };
    let usage = m.usage.snapshot();
    type Pick = fn(&super::UsageCells) -> Value;
    let usage_families: [(&str, &str, Pick); 7] = [
        (
            "llm_gateway_prompt_tokens_total",
            "Input tokens, cached and cache-written included.",
            |u| Value::Int(u.prompt.get()),
        ),
        (
            "llm_gateway_completion_tokens_total",
            "Output tokens, reasoning included.",
            |u| Value::Int(u.completion.get()),
        ),
        (
            "llm_gateway_total_tokens_total",
            "Input plus output tokens.",
            |u| Value::Int(u.total.get()),
        ),
        (
            "llm_gateway_cached_prompt_tokens_total",
            "Input tokens read from the provider's prompt cache.",
            |u| Value::Int(u.cached.get()),
        ),
        (
            "llm_gateway_cache_write_tokens_total",
            "Input tokens written to the provider's prompt cache.",
            |u| Value::Int(u.cache_write.get()),
        ),
        (
            "llm_gateway_reasoning_tokens_total",
            "Output tokens spent on reasoning.",
            |u| Value::Int(u.reasoning.get()),
        ),
        (
            "llm_gateway_cost_usd_total",
            "Cost in USD from the price table.",
            |u| Value::Float(nanos_to_usd(u.cost_nanos.get())),
        ),
    ];
    for (name, help, pick) in usage_families {
        w.header(name, Kind::Counter, help);
        for (labels, cells) in &usage {
            w.sample(name, "", labels, None, pick(cells));
        }
    }
    counter_family(&mut w, &m.requests);
    counter_family(&mut w, &m.errors);
    histogram_family(&mut w, &m.request_duration, |h| &h.0);
    histogram_family(&mut w, &m.time_to_first_token, |h| &h.0);
    histogram_family(&mut w, &m.upstream_duration, |h| &h.0);
    histogram_family(&mut w, &m.overhead, |h| &h.0);
    w.header(m.in_flight.name, Kind::Gauge, m.in_flight.help);
    for (labels, g) in m.in_flight.snapshot() {
        w.sample(
            m.in_flight.name,
            "",
            &labels,
            None,
            Value::SignedInt(g.get()),
        );
    }
    w.header(m.draining.name, Kind::Gauge, m.draining.help);
    for (labels, g) in m.draining.snapshot() {
        w.sample(
            m.draining.name,
            "",
            &labels,
            None,
            Value::SignedInt(g.get()),
        );
    }
    counter_family(&mut w, &m.estimated);
    counter_family(&mut w, &m.implausible);
    w.header(m.estimated_cost.name, Kind::Counter, m.estimated_cost.help);
    for (labels, c) in m.estimated_cost.snapshot() {
        let usd = c.get() as f64 / 1e9;
        w.sample(m.estimated_cost.name, "", &labels, None, Value::Float(usd));
    }
    counter_family(&mut w, &m.unpriced);
    counter_family(&mut w, &m.rate_limit_allowed);
    counter_family(&mut w, &m.rate_limit_blocked);
    let budgets = m.budgets.snapshot();
    w.header(
        "llm_gateway_budget_limit_usd",
        Kind::Gauge,
        "USD budget of a key, team or team-model for its period.",
    );
    for (labels, b) in &budgets {
        w.sample(
            "llm_gateway_budget_limit_usd",
            "",
            labels,
            None,
            Value::Float(nanos_to_usd(b.limit.get())),
        );
    }
    w.header(
        "llm_gateway_budget_spent_usd",
        Kind::Gauge,
        "USD spent against a budget in its current period.",
    );
    for (labels, b) in &budgets {
        let spent = b.spent.load(std::sync::atomic::Ordering::Relaxed);
        w.sample(
            "llm_gateway_budget_spent_usd",
            "",
            labels,
            None,
            Value::Float(nanos_to_usd(spent)),
        );
    }
    w.header(
        "llm_gateway_limit_backend_errors_total",
        Kind::Counter,
        "Limit checks or settlements the backend (Redis) could not answer.",
    );
    w.sample(
        "llm_gateway_limit_backend_errors_total",
        "",
        &[],
        None,
        Value::Int(m.limit_backend_errors.get()),
    );
    let short = "llm_gateway_limit_backend_short_circuited_total";
    w.header(
        short,
        Kind::Counter,
        "Limit checks and settlements failed at once, without asking the backend, while it is known to be down.",
    );
    w.sample(
        short,
        "",
        &[],
        None,
        Value::Int(m.limit_short_circuited.get()),
    );
    super::connections::render(&mut w, &m.connections);

    let overflow = "llm_gateway_metrics_overflow_total";
    w.header(
        overflow,
        Kind::Counter,
        "Label sets folded into a family's __other__ series by its series cap.",
    );
    let families: [(&str, u64); 16] = [
        (m.rate_limit_allowed.name, m.rate_limit_allowed.overflowed()),
        (m.rate_limit_blocked.name, m.rate_limit_blocked.overflowed()),
        ("llm_gateway_budget", m.budgets.overflowed()),
        ("llm_gateway_usage", m.usage.overflowed()),
        (m.requests.name, m.requests.overflowed()),
        (m.errors.name, m.errors.overflowed()),
        (m.request_duration.name, m.request_duration.overflowed()),
        (
            m.time_to_first_token.name,
            m.time_to_first_token.overflowed(),
        ),
        (m.upstream_duration.name, m.upstream_duration.overflowed()),
        (m.overhead.name, m.overhead.overflowed()),
        (m.in_flight.name, m.in_flight.overflowed()),
        (m.draining.name, m.draining.overflowed()),
        (m.estimated.name, m.estimated.overflowed()),
        (m.implausible.name, m.implausible.overflowed()),
        (m.estimated_cost.name, m.estimated_cost.overflowed()),
        (m.unpriced.name, m.unpriced.overflowed()),
    ];
    // Every family's series exists from the start at 0, so `increase()` sees the first overflow.
    for (family, n) in families {
        w.sample(
            overflow,
            "",
            &[("family", family.into())],
            None,
            Value::Int(n),
        );
    }

    let folded = "llm_gateway_label_values_folded_total";
    w.header(
        folded,
        Kind::Counter,
        "Label values longer than [metrics] max_label_value_bytes, recorded as __other__ instead.",
    );
    for label in super::BOUNDED_LABELS {
        w.sample(
            folded,
            "",
            &[("label", (*label).into())],
            None,
            Value::Int(m.bound.folded(label)),
        );
    }

    ledger_families(&mut w, m, ledger);
    super::billing::render(&mut w, &m.billing, billing);
    m.cache.render(&mut w);
    m.mcp.render(&mut w);

    w.header(
        "llm_gateway_build_info",
        Kind::Gauge,
        "Tollgate build; the value is always 1.",
    );
    w.sample(
        "llm_gateway_build_info",
        "",
        &[("version", env!("CARGO_PKG_VERSION").into())],
        None,
        Value::Int(1),
    );
    process::render(&mut w, m.start_time);
    if format == Format::OpenMetrics {
        w.out.push_str("# EOF\n");
    }
    w.out
}

fn ledger_families(w: &mut Writer, m: &Metrics, ledger: Option<&LedgerWindow>) {
    let written = "llm_gateway_ledger_written_rows_total";
    w.header(
        written,
        Kind::Counter,
        "Usage rows the ledger wrote to its database.",
    );
    w.sample(written, "", &[], None, Value::Int(m.ledger_written.get()));
    let dropped = "llm_gateway_ledger_dropped_rows_total";
    w.header(
        dropped,
        Kind::Counter,
        "Usage rows the ledger could not keep: its channel was full, or the database did not take them before shutdown.",
    );
    w.sample(dropped, "", &[], None, Value::Int(m.ledger_dropped.get()));
    let faults = "llm_gateway_ledger_integrity_errors_total";
    w.header(
        faults,
        Kind::Counter,
        "Faults the ledger's checks found: the SQLite file deleted or replaced under the gateway, or rows counted as written not found on disk (those are written again).",
    );
    for f in super::LedgerFault::ALL {
        w.sample(
            faults,
            "",
            &[("kind", f.as_str().into())],
            None,
            Value::Int(m.ledger_faults[f as usize].get()),
        );
    }
    let rewritten = "llm_gateway_ledger_rewritten_rows_total";
    w.header(
        rewritten,
        Kind::Counter,
        "Usage rows counted as written that a check did not find on disk, and wrote again.",
    );
    w.sample(
        rewritten,
        "",
        &[],
        None,
        Value::Int(m.ledger_rewritten.get()),
    );
    let unauth = "llm_gateway_ledger_unauthenticated_requests_total";
    w.header(
        unauth,
        Kind::Counter,
        "Requests without a valid key, kept in the ledger as per-minute counts (never a row each).",
    );
    w.sample(
        unauth,
        "",
        &[],
        None,
        Value::Int(m.ledger_unauthenticated.get()),
    );
    let buffered = "llm_gateway_ledger_buffered_rows";
    w.header(
        buffered,
        Kind::Gauge,
        "Usage rows the ledger writer holds in memory, not yet written.",
    );
    w.sample(
        buffered,
        "",
        &[],
        None,
        Value::SignedInt(m.ledger_buffered.get()),
    );
    let Some(ledger) = ledger else {
        return;
    };
    let cost = "llm_gateway_ledger_cost_usd";
    let requests = "llm_gateway_ledger_requests";
    let labels = |s: &super::LedgerSeries| -> Vec<(&'static str, Box<str>)> {
        vec![
            ("team", s.team.as_str().into()),
            ("provider", s.provider.as_str().into()),
            ("model", s.model.as_str().into()),
        ]
    };
    w.header(
        cost,
        Kind::Gauge,
        "Cost in USD recorded in the ledger over the window (the configured one, or from/to of the scrape).",
    );
    for s in &ledger.series {
        w.sample(
            cost,
            "",
            &labels(s),
            None,
            Value::Float(s.cost_nanos as f64 / 1e9),
        );
    }
    w.header(
        requests,
        Kind::Gauge,
        "Requests recorded in the ledger over the window (the configured one, or from/to of the scrape).",
    );
    for s in &ledger.series {
        w.sample(requests, "", &labels(s), None, Value::SignedInt(s.requests));
    }
}
