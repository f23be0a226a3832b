//! The bill beside the meter: per provider, model and UTC day, the billed cost and tokens
//! (the lines of the gateway's own keys, see [`super::config::Mapping`]) and the metered ones
//! (the ledger), their difference, the capture ratio metered/billed, and where the
//! difference comes from when the data says so.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::NaiveDate;

use super::config::SourceConfig;
use super::source::{Dataset, token_type};
use super::store::StoredLine;
use crate::ledger::report::{Report, usd};
use crate::metering::PriceTable;
use crate::metering::pricing::{ServiceTier, format_per_million};

/// Relative difference under which two numbers "agree" (1%: a bill rounds, and a day's edge
/// falls a few requests either side).
const TOLERANCE: f64 = 0.01;

/// A column a reconciliation can be grouped by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconKey {
    /// Provider label.
    Provider,
    /// Model id.
    Model,
    /// UTC day.
    Day,
}

impl ReconKey {
    /// As written in `group_by`.
    pub fn name(self) -> &'static str {
        match self {
            ReconKey::Provider => "provider",
            ReconKey::Model => "model",
            ReconKey::Day => "day",
        }
    }
}

/// Reads `provider,model,day` (any subset, in any order; empty: all three).
pub fn parse_group_by(s: &str) -> Result<Vec<ReconKey>, String> {
    let mut out = Vec::new();
    for p in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let k = match p {
            "provider" => ReconKey::Provider,
            "model" => ReconKey::Model,
            "day" => ReconKey::Day,
            other => {
                return Err(format!(
                    "unknown group_by column {other:?}; known: provider, model, day"
                ));
            }
        };
        if out.contains(&k) {
            return Err(format!("group_by lists {p:?} twice"));
        }
        out.push(k);
    }
    if out.is_empty() {
        out = vec![ReconKey::Provider, ReconKey::Model, ReconKey::Day];
    }
    Ok(out)
}

/// Token counts on one side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// All input.
    pub input: i64,
    /// Output.
    pub output: i64,
    /// Cache reads.
    pub cached_read: i64,
    /// Cache writes.
    pub cache_write: i64,
}

impl Tokens {
    fn add(&mut self, o: &Tokens) {
        self.input += o.input;
        self.output += o.output;
        self.cached_read += o.cached_read;
        self.cache_write += o.cache_write;
    }

    fn is_zero(&self) -> bool {
        *self == Tokens::default()
    }
}

/// One group of a reconciliation.
#[derive(Debug, Clone, Default)]
pub struct ReconRow {
    /// Group values, in `group_by` order.
    pub groups: Vec<String>,
    /// The model, when grouped by model (for the price hint).
    model: Option<String>,
    /// The provider, when grouped by provider (for its price multiplier).
    provider: Option<String>,
    /// Billing sources the billed side came from.
    pub sources: Vec<String>,
    /// Billed nano-USD.
    pub billed_nanos: i64,
    /// Metered nano-USD.
    pub metered_nanos: i64,
    /// Billed tokens (usage lines).
    pub billed: Tokens,
    /// Metered tokens.
    pub metered: Tokens,
    /// Metered requests.
    pub metered_requests: i64,
    /// Billed cost per line item, with its token quantity when the bill gave one.
    items: BTreeMap<String, (i64, i64)>,
    /// Where the difference comes from.
    pub explanation: String,
}

impl ReconRow {
    /// Billed minus metered, nano-USD.
    pub fn difference_nanos(&self) -> i64 {
        self.billed_nanos - self.metered_nanos
    }

    /// Metered over billed cost; `None` when nothing was billed.
    pub fn capture_ratio(&self) -> Option<f64> {
        (self.billed_nanos > 0).then(|| self.metered_nanos as f64 / self.billed_nanos as f64)
    }
}

/// A reconciliation over the UTC days `[from, to)`.
#[derive(Debug, Clone)]
pub struct Reconciliation {
    /// First day.
    pub from: NaiveDate,
    /// Day after the last.
    pub to: NaiveDate,
    /// Group columns.
    pub group_by: Vec<ReconKey>,
    /// Groups, sorted.
    pub rows: Vec<ReconRow>,
}

/// A billed line's token type to the [`Tokens`] field, and a cost item to the rate it is
/// billed at.
fn add_tokens(t: &mut Tokens, item: &str, n: i64) {
    match item {
        token_type::INPUT => t.input += n,
        token_type::OUTPUT => t.output += n,
        token_type::CACHED_READ => t.cached_read += n,
        token_type::CACHE_WRITE => t.cache_write += n,
        _ => {}
    }
}

/// Which price-table rate a cost line item is billed at, and the billed token count that
/// goes with it when the line has no quantity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rate {
    Input,
    Output,
    CachedInput,
    CacheWrite,
    CacheWrite1h,
}

fn rate_of(item: &str) -> Option<Rate> {
    Some(match item {
        "input_tokens" | "uncached_input_tokens" | "input" => Rate::Input,
        "output_tokens" | "output" => Rate::Output,
        "cached_input_tokens" | "input_cached_tokens" | "cache_read_input_tokens" => {
            Rate::CachedInput
        }
        "input_cache_write_tokens" | "cache_creation.ephemeral_5m_input_tokens" => Rate::CacheWrite,
        "cache_creation.ephemeral_1h_input_tokens" => Rate::CacheWrite1h,
        _ => return None,
    })
}

impl Rate {
    fn name(self) -> &'static str {
        match self {
            Rate::Input => "input",
            Rate::Output => "output",
            Rate::CachedInput => "cached_input",
            Rate::CacheWrite => "cache_write",
            Rate::CacheWrite1h => "cache_write_1h",
        }
    }

    /// Billed tokens of this rate, from the usage lines.
    fn tokens(self, t: &Tokens) -> i64 {
        match self {
            Rate::Input => t.input - t.cached_read - t.cache_write,
            Rate::Output => t.output,
            Rate::CachedInput => t.cached_read,
            Rate::CacheWrite | Rate::CacheWrite1h => 0,
        }
    }

    fn pico(self, r: &crate::metering::pricing::Rates) -> u64 {
        match self {
            Rate::Input => r.input,
            Rate::Output => r.output,
            Rate::CachedInput => r.cached_input,
            Rate::CacheWrite => r.cache_write,
            Rate::CacheWrite1h => r.cache_write_1h,
        }
    }
}

fn close(a: i64, b: i64) -> bool {
    (a - b).unsigned_abs() as f64 <= TOLERANCE * a.abs().max(b.abs()) as f64
}

/// Builds the reconciliation of `lines` (the bill) and `metered` (a ledger report grouped by
/// provider, model, day).
pub fn reconcile(
    from: NaiveDate,
    to: NaiveDate,
    group_by: Vec<ReconKey>,
    sources: &[SourceConfig],
    lines: &[StoredLine],
    metered: &Report,
    prices: Option<&PriceTable>,
) -> Reconciliation {
    let mut rows: BTreeMap<Vec<String>, ReconRow> = BTreeMap::new();
    for s in lines {
        let Some(src) = sources.iter().find(|c| c.name == s.source) else {
            continue;
        };
        let l = &s.line;
        let Some(provider) = src.provider_of(&l.project, &l.api_key) else {
            continue;
        };
        let r = row_mut(&mut rows, &group_by, provider, &l.model, &l.day.to_string());
        if !r.sources.contains(&s.source) {
            r.sources.push(s.source.clone());
        }
        match l.dataset {
            Dataset::Cost => {
                r.billed_nanos += l.cost_nanos;
                let e = r.items.entry(l.item.clone()).or_default();
                e.0 += l.cost_nanos;
                e.1 += l.quantity;
            }
            Dataset::Usage => add_tokens(&mut r.billed, &l.item, l.quantity),
        }
    }
    let idx = |name: &str| metered.query.group_by.iter().position(|k| k.name() == name);
    let (pi, mi, di) = (idx("provider"), idx("model"), idx("day"));
    for m in &metered.rows {
        let get = |i: Option<usize>| i.and_then(|i| m.groups.get(i)).map_or("", |s| s.as_str());
        let r = row_mut(&mut rows, &group_by, get(pi), get(mi), get(di));
        r.metered_nanos += m.totals.cost_nanos;
        r.metered_requests += m.totals.requests;
        r.metered.add(&Tokens {
            input: m.totals.input_tokens,
            output: m.totals.output_tokens,
            cached_read: m.totals.cached_read_tokens,
            cache_write: m.totals.cache_write_tokens,
        });
    }
    let mut rows: Vec<ReconRow> = rows.into_values().collect();
    for r in &mut rows {
        r.explanation = explain(r, prices);
    }
    Reconciliation {
        from,
        to,
        group_by,
        rows,
    }
}

/// The group of (provider, model, day), created on first use.
fn row_mut<'a>(
    rows: &'a mut BTreeMap<Vec<String>, ReconRow>,
    group_by: &[ReconKey],
    provider: &str,
    model: &str,
    day: &str,
) -> &'a mut ReconRow {
    let k: Vec<String> = group_by
        .iter()
        .map(|g| match g {
            ReconKey::Provider => provider.to_string(),
            ReconKey::Model => model.to_string(),
            ReconKey::Day => day.to_string(),
        })
        .collect();
    rows.entry(k.clone()).or_insert_with(|| ReconRow {
        groups: k,
        model: group_by
            .contains(&ReconKey::Model)
            .then(|| model.to_string()),
        provider: group_by
            .contains(&ReconKey::Provider)
            .then(|| provider.to_string()),
        ..ReconRow::default()
    })
}

fn pct(part: i64, whole: i64) -> String {
    if whole == 0 {
        return "n/a".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// Where the difference of `r` comes from, in one sentence or a few.
fn explain(r: &ReconRow, prices: Option<&PriceTable>) -> String {
    let billed_any = r.billed_nanos != 0 || !r.billed.is_zero();
    let metered_any = r.metered_nanos != 0 || !r.metered.is_zero();
    if !billed_any {
        return if metered_any {
            "metered but not on the bill: the bill is not in yet for this day, or \
             [[billing.providers]] does not map the gateway's keys"
                .into()
        } else {
            String::new()
        };
    }
    if !metered_any {
        return "billed, never metered: all of it went around the gateway (or another key's \
                traffic is mapped to this provider)"
            .into();
    }
    let mut parts = Vec::new();
    let has_tokens = !r.billed.is_zero();
    let tokens_agree =
        close(r.billed.input, r.metered.input) && close(r.billed.output, r.metered.output);
    if !has_tokens {
        parts.push("the bill has no token counts for this group (usage not fetched)".to_string());
    } else if !tokens_agree {
        let (di, d_o) = (
            r.billed.input - r.metered.input,
            r.billed.output - r.metered.output,
        );
        if di >= 0 && d_o >= 0 {
            parts.push(format!(
                "{di} input and {d_o} output tokens billed but not metered ({} of billed \
                 input, {} of billed output): traffic around the gateway, or requests the \
                 gateway did not meter",
                pct(di, r.billed.input),
                pct(d_o, r.billed.output)
            ));
        } else {
            parts.push(format!(
                "more tokens metered than billed ({} input, {} output): the provider has not \
                 finished billing this day, or [[billing.providers]] misses one of the \
                 gateway's keys",
                -di, -d_o
            ));
        }
    }
    if has_tokens && tokens_agree && !close(r.billed_nanos, r.metered_nanos) {
        let model = r.model.as_deref().unwrap_or("");
        let mut s = format!(
            "tokens agree but the cost differs by {}: the price table is wrong or out of date{}",
            pct(r.billed_nanos - r.metered_nanos, r.metered_nanos),
            if model.is_empty() {
                String::new()
            } else {
                format!(" for {model}")
            }
        );
        let hints = price_hints(r, prices);
        if hints.is_empty() {
            if r.metered_nanos > 0 {
                let _ = write!(
                    s,
                    "; its rates times {:.4} would agree",
                    r.billed_nanos as f64 / r.metered_nanos as f64
                );
            }
        } else {
            let _ = write!(s, "; {}", hints.join("; "));
        }
        parts.push(s);
    }
    if parts.is_empty() {
        return "agrees within 1%".into();
    }
    parts.join(". ")
}

/// For each billed line item with a token count whose rate differs from the price table's:
/// `output: $0.6/1M on the bill, $0.3/1M in the price table`.
fn price_hints(r: &ReconRow, prices: Option<&PriceTable>) -> Vec<String> {
    let (Some(prices), Some(model)) = (prices, r.model.as_deref()) else {
        return Vec::new();
    };
    let Some(price) = prices.lookup(model) else {
        return vec![format!("{model} has no price in the table")];
    };
    let ppm = r
        .provider
        .as_deref()
        .map_or(1_000_000, |p| prices.multiplier(p));
    let rates = price.rates_for(ServiceTier::Standard).for_input(0);
    let mut out = Vec::new();
    for (item, &(cost, qty)) in &r.items {
        let Some(rate) = rate_of(item) else {
            continue;
        };
        let tokens = if qty > 0 { qty } else { rate.tokens(&r.billed) };
        if tokens <= 0 || cost <= 0 {
            continue;
        }
        // Pico-USD per token: nano * 1000 / tokens, rounded.
        let billed = ((cost as i128 * 1000 + tokens as i128 / 2) / tokens as i128) as u64;
        let table = (u128::from(rate.pico(rates)) * u128::from(ppm) / 1_000_000) as u64;
        if !close(billed as i64, table as i64) {
            out.push(format!(
                "{}: ${}/1M on the bill, ${}/1M in the price table (set [[prices]] {} = \"{}\" for {model})",
                rate.name(),
                format_per_million(billed),
                format_per_million(table),
                rate.name(),
                format_per_million(billed)
            ));
        }
    }
    out
}

fn ratio_text(r: Option<f64>) -> String {
    r.map_or(String::new(), |v| format!("{v:.4}"))
}

/// The output columns after the groups.
const COLUMNS: [&str; 10] = [
    "billed_usd",
    "metered_usd",
    "difference_usd",
    "capture_ratio",
    "billed_input_tokens",
    "metered_input_tokens",
    "billed_output_tokens",
    "metered_output_tokens",
    "sources",
    "explanation",
];

impl Reconciliation {
    fn header(&self) -> Vec<String> {
        self.group_by
            .iter()
            .map(|k| k.name().to_string())
            .chain(COLUMNS.iter().map(|c| c.to_string()))
            .collect()
    }

    fn cells(r: &ReconRow) -> Vec<String> {
        r.groups
            .iter()
            .cloned()
            .chain([
                usd(r.billed_nanos),
                usd(r.metered_nanos),
                usd(r.difference_nanos()),
                ratio_text(r.capture_ratio()),
                r.billed.input.to_string(),
                r.metered.input.to_string(),
                r.billed.output.to_string(),
                r.metered.output.to_string(),
                r.sources.join(" "),
                r.explanation.clone(),
            ])
            .collect()
    }

    /// `{"from","to","group_by","rows":[...]}`; money both in nano-USD (exact) and USD.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                let mut o = serde_json::Map::new();
                for (k, v) in self.group_by.iter().zip(&r.groups) {
                    o.insert(k.name().into(), v.clone().into());
                }
                let t = |t: &Tokens| {
                    serde_json::json!({"input": t.input, "output": t.output,
                        "cached_read": t.cached_read, "cache_write": t.cache_write})
                };
                o.insert("billed_nanos".into(), r.billed_nanos.into());
                o.insert("metered_nanos".into(), r.metered_nanos.into());
                o.insert("difference_nanos".into(), r.difference_nanos().into());
                o.insert("billed_usd".into(), (r.billed_nanos as f64 / 1e9).into());
                o.insert("metered_usd".into(), (r.metered_nanos as f64 / 1e9).into());
                o.insert(
                    "difference_usd".into(),
                    (r.difference_nanos() as f64 / 1e9).into(),
                );
                o.insert("capture_ratio".into(), r.capture_ratio().into());
                o.insert("billed_tokens".into(), t(&r.billed));
                o.insert("metered_tokens".into(), t(&r.metered));
                o.insert("metered_requests".into(), r.metered_requests.into());
                o.insert("sources".into(), r.sources.clone().into());
                o.insert("explanation".into(), r.explanation.clone().into());
                o.into()
            })
            .collect();
        serde_json::json!({
            "from": self.from.to_string(),
            "to": self.to.to_string(),
            "group_by": self.group_by.iter().map(|k| k.name()).collect::<Vec<_>>(),
            "rows": rows,
        })
    }

    /// CSV with a header line (RFC 4180 quoting).
    pub fn to_csv(&self) -> String {
        let cell = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = String::new();
        let lines = std::iter::once(self.header()).chain(self.rows.iter().map(Self::cells));
        for l in lines {
            let c: Vec<String> = l.iter().map(|x| cell(x)).collect();
            out.push_str(&c.join(","));
            out.push_str("\r\n");
        }
        out
    }

    /// An aligned table for the terminal; the explanation goes last, unaligned.
    pub fn to_table(&self) -> String {
        let lines: Vec<Vec<String>> = std::iter::once(self.header())
            .chain(self.rows.iter().map(Self::cells))
            .collect();
        let cols = lines[0].len() - 1;
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let groups = self.group_by.len();
        let mut out = format!(
            "bill vs meter from {} to {} (UTC days, [from, to))\n",
            self.from, self.to
        );
        for l in &lines {
            let cells: Vec<String> = (0..cols)
                .map(|c| {
                    if c < groups || c == cols - 1 {
                        format!("{:<w$}", l[c], w = widths[c])
                    } else {
                        format!("{:>w$}", l[c], w = widths[c])
                    }
                })
                .collect();
            let _ = writeln!(out, "{}  {}", cells.join("  "), l[cols]);
        }
        out
    }
}

#[cfg(test)]
mod tests;
