//! Every metric family of the gateway, defined here and nowhere else, and their exposition.
//!
//! Recording is lock-free on atomics; each request resolves its label sets once, at settle time
//! (see [`Metrics::record`]). Names follow `llm_gateway_<name>_<unit>[_total]`.

mod billing;
mod cache;
mod cells;
mod connections;
mod family;
mod mcp;
mod process;
mod render;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use billing::{BillingCells, BillingGauges};
pub use cache::{Bypass, CacheMetrics};
pub use cells::{Counter, Gauge, Histogram, LatencyHistogram, OverheadHistogram, UsageCells};
pub use connections::{ConnectionMetrics, Rejected, TimedOut};
pub use family::{BOUNDED_LABELS, Family, OVERFLOW_VALUE, ValueBound};
pub use mcp::{BytesHistogram, McpMetrics, McpObservation};
pub use render::{Format, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};

use crate::metering::{Usage, UsageSource};

/// Labels that can be switched on or off in `[metrics] labels`.
pub const CONFIGURABLE_LABELS: &[&str] = &[
    "provider",
    "model",
    "team",
    "key",
    "endpoint",
    "status_code",
    "error_type",
];

/// Which labels are on and how many series a family may hold.
#[derive(Debug, Clone)]
pub struct MetricsOptions {
    /// Enabled labels; a label not listed is dropped from every family.
    pub labels: Vec<String>,
    /// Series cap per family.
    pub max_series_per_family: usize,
    /// Longest label value kept, in bytes; longer ones become `__other__`.
    pub max_label_value_bytes: usize,
    /// `[cache]` is on: `requests_total` carries `cache_status`.
    pub cache: bool,
    /// Semantic cache: `requests_total` also carries `vector_db`, `embeddings_provider` and
    /// `embeddings_model`.
    pub semantic: bool,
    /// `[[mcp_servers]]` are configured: the `llm_gateway_mcp_*` families are rendered.
    pub mcp: bool,
}

/// Default of `[metrics] max_label_value_bytes`. The longest model ids in use are about 100
/// bytes (Bedrock inference-profile ARNs such as
/// `arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-3-5-sonnet-20241022-v2:0`
/// are 103; fine-tuned OpenAI ids ~60; Hugging Face ids ~40), so 128 keeps every real name,
/// while a family at its 10,000-series cap holds at most ~1.3 MB of model names.
pub const DEFAULT_MAX_LABEL_VALUE_BYTES: usize = 128;

impl Default for MetricsOptions {
    fn default() -> Self {
        MetricsOptions {
            labels: CONFIGURABLE_LABELS.iter().map(|s| s.to_string()).collect(),
            max_series_per_family: 10_000,
            max_label_value_bytes: DEFAULT_MAX_LABEL_VALUE_BYTES,
            cache: false,
            semantic: false,
            mcp: false,
        }
    }
}

/// One finished request, as the metrics see it.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    /// Provider name from the config.
    pub provider: &'a str,
    /// The model that served the request (the response's, else the requested one).
    pub model: &'a str,
    /// Team of the virtual key.
    pub team: &'a str,
    /// Name of the virtual key.
    pub key: &'a str,
    /// The client-facing endpoint, e.g. `/v1/chat/completions`.
    pub endpoint: &'a str,
    /// Status code label: the upstream's, or the gateway's own, `499` for a client gone.
    pub status_code: &'a str,
    /// Bounded error class, when the request failed.
    pub error_type: Option<&'a str>,
    /// Tokens counted.
    pub usage: Usage,
    /// Cost in nano-USD.
    pub cost_nanos: u64,
    /// Of `cost_nanos`, the part that rests on estimated tokens.
    pub estimated_cost_nanos: u64,
    /// False when no price was known (cost 0, counted as unpriced).
    pub priced: bool,
    /// Where the token counts come from: estimated with the tokenizer, or clamped to the
    /// plausibility bound, each counted in its own family.
    pub usage_source: UsageSource,
    /// End to end.
    pub duration: Duration,
    /// Upstream only, when an upstream call was made.
    pub upstream: Option<Duration>,
    /// First body byte of a stream.
    pub time_to_first_token: Option<Duration>,
    /// Time spent in the gateway itself.
    pub overhead: Option<Duration>,
    /// The response cache's labels (empty when the cache is off).
    pub cache: CacheLabels<'a>,
}

/// The labels the response cache adds to `requests_total` (Kong's names). Few-valued: the
/// status has four values, the other three one per gateway.
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheLabels<'a> {
    /// `hit`, `miss`, `bypass`, or `""` when the cache is off or the request not cacheable.
    pub status: &'a str,
    /// Semantic mode: where vectors live (`memory`).
    pub vector_db: &'a str,
    /// Semantic mode: the provider of the embeddings model.
    pub embeddings_provider: &'a str,
    /// Semantic mode: the embeddings model.
    pub embeddings_model: &'a str,
}

impl<'a> Observation<'a> {
    /// The labels of its `llm_gateway_requests_total` series.
    fn requests_labels(&self) -> [&'a str; 10] {
        [
            self.provider,
            self.model,
            self.team,
            self.key,
            self.endpoint,
            self.status_code,
            self.cache.status,
            self.cache.vector_db,
            self.cache.embeddings_provider,
            self.cache.embeddings_model,
        ]
    }

    /// The labels of its token and cost series.
    fn usage_labels(&self) -> [&'a str; 4] {
        [self.provider, self.model, self.team, self.key]
    }
}

/// What the ledger's integrity checks can find (`kind` of
/// `llm_gateway_ledger_integrity_errors_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerFault {
    /// The SQLite file was deleted under the running gateway.
    FileDeleted,
    /// The SQLite file was replaced (another inode at its path).
    FileReplaced,
    /// Rows counted as written were not found from a new connection.
    RowsMissing,
}

impl LedgerFault {
    /// Every kind, in label order.
    pub const ALL: [LedgerFault; 3] = [
        LedgerFault::FileDeleted,
        LedgerFault::FileReplaced,
        LedgerFault::RowsMissing,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerFault::FileDeleted => "file_deleted",
            LedgerFault::FileReplaced => "file_replaced",
            LedgerFault::RowsMissing => "rows_missing",
        }
    }
}

impl Metrics {
    /// Counts one integrity fault of the ledger.
    pub fn ledger_fault(&self, fault: LedgerFault) {
        self.ledger_faults[fault as usize].add(1);
    }
}

/// All families.
pub struct Metrics {
    usage: Family<UsageCells>,
    requests: Family<Counter>,
    errors: Family<Counter>,
    request_duration: Family<LatencyHistogram>,
    time_to_first_token: Family<LatencyHistogram>,
    upstream_duration: Family<LatencyHistogram>,
    overhead: Family<OverheadHistogram>,
    in_flight: Family<Gauge>,
    draining: Family<Gauge>,
    estimated: Family<Counter>,
    implausible: Family<Counter>,
    /// Nano-USD of cost that rests on estimated tokens, per provider, model and team.
    estimated_cost: Family<Counter>,
    unpriced: Family<Counter>,
    rate_limit_allowed: Family<Counter>,
    rate_limit_blocked: Family<Counter>,
    budgets: Family<BudgetCells>,
    limit_backend_errors: Counter,
    limit_short_circuited: Counter,
    /// Client connections of the main listener.
    pub connections: ConnectionMetrics,
    /// The bound on label values shared by every family (`[metrics] max_label_value_bytes`).
    bound: Arc<ValueBound>,
    /// The series cap of every family (`[metrics] max_series_per_family`).
    pub max_series_per_family: usize,
    /// Usage rows the ledger wrote to its database.
    pub ledger_written: Counter,
    /// Usage rows the ledger could not keep (channel full, or unwritten at the drain deadline).
    pub ledger_dropped: Counter,
    /// Usage rows the ledger writer holds in memory, not yet written.
    pub ledger_buffered: Gauge,
    /// Integrity faults the ledger's checks found, by kind (see [`LedgerFault`]).
    pub ledger_faults: [Counter; LedgerFault::ALL.len()],
    /// Rows counted as written that a check did not find on disk, written again.
    pub ledger_rewritten: Counter,
    /// Requests refused before a key was known (missing or invalid key), which the ledger
    /// aggregates per minute instead of keeping a row each.
    pub ledger_unauthenticated: Counter,
    /// Failed billing-API requests (`llm_gateway_billing_fetch_errors_total`).
    pub billing: BillingCells,
    /// The response cache's families.
    pub cache: CacheMetrics,
    /// The MCP gateway's families.
    pub mcp: McpMetrics,
    start_time: f64,
}

/// Series of one virtual key kept with the key, so that its requests skip lookups in families
/// that hold a series per key (at 10,000 keys those lookups miss the CPU's caches: the
/// benchmark's cost per request grew with the number of keys).
#[derive(Debug, Default)]
pub struct SeriesCache {
    /// The series of the key's last kind of request (see [`Metrics::record_for_key`]).
    last: parking_lot::Mutex<Option<KeySeries>>,
    /// `rate_limit_allowed_total` per limit kind (see [`Metrics::rate_limit_allowed_for_key`]).
    allowed: [std::sync::OnceLock<Arc<Counter>>; ALLOWED_SLOTS],
}

/// Limit kinds a [`SeriesCache`] keeps an allowed counter for.
pub const ALLOWED_SLOTS: usize = 4;

/// The cells of one (provider, model, endpoint, status) of a key.
#[derive(Debug)]
pub struct KeySeries {
    provider: Box<str>,
    model: Box<str>,
    endpoint: Box<str>,
    status: Box<str>,
    cache_status: Box<str>,
    usage: Option<Arc<UsageCells>>,
    requests: Arc<Counter>,
    /// The latency histograms of the same labels (a subset of them), each created where an
    /// uncached request would have created it: three label lookups a request were ~1,300
    /// instructions under callgrind.
    request_duration: Arc<LatencyHistogram>,
    upstream_duration: Option<Arc<LatencyHistogram>>,
    time_to_first_token: Option<Arc<LatencyHistogram>>,
    overhead: Option<Arc<OverheadHistogram>>,
}

/// A budget's limit and this period's spend, in nano-USD.
#[derive(Debug, Default)]
pub struct BudgetCells {
    /// The limit.
    pub limit: Counter,
    /// Spent this period (set, not added).
    pub spent: std::sync::atomic::AtomicU64,
}

/// Requests and cost per (team, provider, model) over a time window, read from the ledger.
#[derive(Debug, Clone, Default)]
pub struct LedgerWindow {
    /// One entry per group.
    pub series: Vec<LedgerSeries>,
}

/// One group of a [`LedgerWindow`].
#[derive(Debug, Clone, Default)]
pub struct LedgerSeries {
    /// Team.
    pub team: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Finished requests in the window.
    pub requests: i64,
    /// Their cost in nano-USD.
    pub cost_nanos: i64,
}

const USAGE_LABELS: &[&str] = &["provider", "model", "team", "key"];
const REQUEST_LABELS: &[&str] = &[
    "provider",
    "model",
    "team",
    "key",
    "endpoint",
    "status_code",
    "cache_status",
    "vector_db",
    "embeddings_provider",
    "embeddings_model",
];
const ERROR_LABELS: &[&str] = &[
    "provider",
    "model",
    "team",
    "endpoint",
    "status_code",
    "error_type",
];
const PROVIDER_MODEL_ENDPOINT: &[&str] = &["provider", "model", "endpoint"];
const PROVIDER_MODEL: &[&str] = &["provider", "model"];

impl Metrics {
    /// Creates every family.
    pub fn new(opts: &MetricsOptions) -> Arc<Metrics> {
        // Only the configurable labels can be switched off; the others are always on.
        let on = |l: &str| match l {
            // The cache's labels exist only with a cache: without one the series are as before.
            "cache_status" => opts.cache,
            "vector_db" | "embeddings_provider" | "embeddings_model" => opts.semantic,
            _ => !CONFIGURABLE_LABELS.contains(&l) || opts.labels.iter().any(|x| x == l),
        };
        let cap = opts.max_series_per_family;
        let bound = Arc::new(ValueBound::new(opts.max_label_value_bytes));
        Arc::new(Metrics {
            usage: Family::new("llm_gateway_usage", "", USAGE_LABELS, &on, cap).with_value_bound(&bound),
            requests: Family::new(
                "llm_gateway_requests_total",
                "Finished requests.",
                REQUEST_LABELS,
                &on,
                cap,
            ).with_value_bound(&bound),
            errors: Family::new(
                "llm_gateway_errors_total",
                "Failed requests, by bounded cause.",
                ERROR_LABELS,
                &on,
                cap,
            ).with_value_bound(&bound),
            request_duration: Family::new(
                "llm_gateway_request_duration_seconds",
                "End-to-end request duration, until the last body byte.",
                PROVIDER_MODEL_ENDPOINT,
                &on,
                cap,
            ).with_value_bound(&bound),
            time_to_first_token: Family::new(
                "llm_gateway_time_to_first_token_seconds",
                "Streams: time from the request to the first body byte from the provider.",
                PROVIDER_MODEL,
                &on,
                cap,
            ).with_value_bound(&bound),
            upstream_duration: Family::new(
                "llm_gateway_upstream_duration_seconds",
                "Time spent waiting on the provider, from sending the request to its last byte.",
                PROVIDER_MODEL,
                &on,
                cap,
            ).with_value_bound(&bound),
            overhead: Family::new(
                "llm_gateway_overhead_seconds",
                "Time spent in the gateway itself (request handling before and after the upstream call).",
                &["endpoint"],
                &on,
                cap,
            ).with_value_bound(&bound),
            in_flight: Family::new(
                "llm_gateway_requests_in_flight",
                "Requests forwarded and not finished.",
                &["provider"],
                &on,
                cap,
            ).with_value_bound(&bound),
            draining: Family::new(
                "llm_gateway_streams_draining",
                "Streams whose client left, read on to their end for the provider's usage (on_client_disconnect = drain).",
                &["provider"],
                &on,
                cap,
            ),
            estimated: Family::new(
                "llm_gateway_estimated_usage_requests_total",
                "Requests whose provider reported no usage; tokens estimated with a tokenizer.",
                PROVIDER_MODEL,
                &on,
                cap,
            ).with_value_bound(&bound),
            implausible: Family::new(
                "llm_gateway_implausible_usage_requests_total",
                "Requests whose provider reported more tokens than [metering] max_tokens_per_request; counted as that many.",
                PROVIDER_MODEL,
                &on,
                cap,
            )
            .with_value_bound(&bound),
            estimated_cost: Family::new(
                "llm_gateway_estimated_cost_usd_total",
                "The part of llm_gateway_cost_usd_total that rests on estimated tokens (no usage from the provider).",
                &["provider", "model", "team"],
                &on,
                cap,
            )
            .with_value_bound(&bound),
            unpriced: Family::new(
                "llm_gateway_unpriced_requests_total",
                "Requests for a model without a known price: their cost is not counted.",
                PROVIDER_MODEL,
                &on,
                cap,
            ).with_value_bound(&bound),
            rate_limit_allowed: Family::new(
                "llm_gateway_rate_limit_allowed_total",
                "Requests that passed a limit check, by limit (requests, tokens, parallel, budget).",
                &["team", "key", "limit"],
                &on,
                cap,
            ).with_value_bound(&bound),
            rate_limit_blocked: Family::new(
                "llm_gateway_rate_limit_blocked_total",
                "Requests answered 429 by a limit (requests, tokens, parallel, budget).",
                &["team", "key", "limit"],
                &on,
                cap,
            ).with_value_bound(&bound),
            budgets: Family::new(
                "llm_gateway_budget",
                "",
                &["scope", "name", "team", "period"],
                &on,
                cap,
            ).with_value_bound(&bound),
            limit_backend_errors: Counter::default(),
            limit_short_circuited: Counter::default(),
            connections: ConnectionMetrics::default(),
            bound: bound.clone(),
            max_series_per_family: cap,
            ledger_written: Counter::default(),
            ledger_dropped: Counter::default(),
            ledger_buffered: Gauge::default(),
            ledger_faults: Default::default(),
            ledger_rewritten: Counter::default(),
            ledger_unauthenticated: Counter::default(),
            billing: BillingCells::default(),
            cache: CacheMetrics::new(opts.cache, &on, cap),
            mcp: McpMetrics::new(opts.mcp, &on, cap, &bound),
            start_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64()),
        })
    }

    /// The in-flight gauge of a provider, to hold for the life of a forwarded request.
    pub fn in_flight(&self, provider: &str) -> Arc<Gauge> {
        self.in_flight.get(&[provider])
    }

    /// The gauge of a provider's streams draining after their client left.
    pub fn draining(&self, provider: &str) -> Arc<Gauge> {
        self.draining.get(&[provider])
    }

    /// Records one finished request in every family it touches: tokens and cost first,
    /// `requests_total` last. A scrape that counts the request shows all its other series, or
    /// the next scrape does (a scrape reads the families one after another).
    pub fn record(&self, o: &Observation<'_>) {
        let o = &self.bounded(o);
        if !o.usage.is_zero() || o.cost_nanos > 0 {
            self.usage
                .with(&o.usage_labels(), |u| u.add_usage(&o.usage, o.cost_nanos));
        }
        self.record_unkeyed(o);
        self.requests.with(&o.requests_labels(), |c| c.add(1));
    }

    /// `o` with each label value over `max_label_value_bytes` folded into `__other__`, counted
    /// once per request here: the families it then reaches find every value short.
    fn bounded<'a>(&self, o: &Observation<'a>) -> Observation<'a> {
        let b = &*self.bound;
        Observation {
            provider: b.fold("provider", o.provider),
            model: b.fold("model", o.model),
            team: b.fold("team", o.team),
            key: b.fold("key", o.key),
            endpoint: b.fold("endpoint", o.endpoint),
            status_code: b.fold("status_code", o.status_code),
            error_type: o.error_type.map(|e| b.fold("error_type", e)),
            ..*o
        }
    }

    /// The longest label value kept (`[metrics] max_label_value_bytes`).
    pub fn max_label_value_bytes(&self) -> usize {
        self.bound.max_bytes()
    }

    /// Label values folded into `__other__` for being too long, for `label`.
    pub fn label_values_folded(&self, label: &str) -> u64 {
        self.bound.folded(label)
    }

    /// The families of `record` whose series do not carry the key.
    fn record_unkeyed(&self, o: &Observation<'_>) {
        self.record_rest(o, None);
    }

    /// What [`record`](Metrics::record) adds besides tokens, cost and requests: errors,
    /// latencies (from a key's cached series when given), estimates.
    fn record_rest(&self, o: &Observation<'_>, cached: Option<&mut KeySeries>) {
        let (p, m, t, e, s) = (o.provider, o.model, o.team, o.endpoint, o.status_code);
        if let Some(error_type) = o.error_type {
            self.errors.with(&[p, m, t, e, s, error_type], |c| c.add(1));
        }
        match cached {
            Some(k) => {
                k.request_duration.0.observe(o.duration);
                if let Some(d) = o.upstream {
                    let h = k
                        .upstream_duration
                        .get_or_insert_with(|| self.upstream_duration.get(&[p, m]));
                    h.0.observe(d);
                }
                if let Some(d) = o.time_to_first_token {
                    let h = k
                        .time_to_first_token
                        .get_or_insert_with(|| self.time_to_first_token.get(&[p, m]));
                    h.0.observe(d);
                }
                if let Some(d) = o.overhead {
                    let h = k.overhead.get_or_insert_with(|| self.overhead.get(&[e]));
                    h.0.observe(d);
                }
            }
            None => {
                self.request_duration
                    .with(&[p, m, e], |h| h.0.observe(o.duration));
                if let Some(d) = o.upstream {
                    self.upstream_duration.with(&[p, m], |h| h.0.observe(d));
                }
                if let Some(d) = o.time_to_first_token {
                    self.time_to_first_token.with(&[p, m], |h| h.0.observe(d));
                }
                if let Some(d) = o.overhead {
                    self.overhead.with(&[e], |h| h.0.observe(d));
                }
            }
        }
        match o.usage_source {
            UsageSource::Estimated | UsageSource::Partial => {
                self.estimated.with(&[p, m], |c| c.add(1));
            }
            UsageSource::Implausible => self.implausible.with(&[p, m], |c| c.add(1)),
            UsageSource::Reported => {}
        }
        if o.estimated_cost_nanos > 0 {
            self.estimated_cost
                .with(&[p, m, t], |c| c.add(o.estimated_cost_nanos));
        }
        if !o.priced && !o.usage.is_zero() {
            self.unpriced.with(&[p, m], |c| c.add(1));
        }
    }

    /// [`record`](Metrics::record) for a request of one virtual key, through that key's
    /// `cache`: the token and cost cells and the requests counter of its last (provider,
    /// model, endpoint, status) are kept there. The order is `record`'s.
    pub fn record_for_key(&self, o: &Observation<'_>, cache: &SeriesCache) {
        let o = &self.bounded(o);
        // Updated under the key's lock: atomics and read-locked lookups, nothing awaited.
        let mut slot = cache.last.lock();
        let series = match &mut *slot {
            Some(c)
                if *c.endpoint == *o.endpoint
                    && *c.status == *o.status_code
                    && *c.cache_status == *o.cache.status
                    && *c.model == *o.model
                    && *c.provider == *o.provider =>
            {
                c
            }
            _ => slot.insert(KeySeries {
                provider: o.provider.into(),
                model: o.model.into(),
                endpoint: o.endpoint.into(),
                status: o.status_code.into(),
                cache_status: o.cache.status.into(),
                usage: None,
                requests: self.requests.get(&o.requests_labels()),
                request_duration: self
                    .request_duration
                    .get(&[o.provider, o.model, o.endpoint]),
                upstream_duration: None,
                time_to_first_token: None,
                overhead: None,
            }),
        };
        if !o.usage.is_zero() || o.cost_nanos > 0 {
            // Created on the first tokens only: a model that only ever failed has no
            // series.
            series
                .usage
                .get_or_insert_with(|| self.usage.get(&o.usage_labels()))
                .add_usage(&o.usage, o.cost_nanos);
        }
        self.record_rest(o, Some(series));
        series.requests.add(1);
    }

    /// [`rate_limit_allowed`](Metrics::rate_limit_allowed) for a request of the key whose
    /// `cache` this is; `slot` (below [`ALLOWED_SLOTS`]) stands for `limit`, always the same.
    pub fn rate_limit_allowed_for_key(
        &self,
        cache: &SeriesCache,
        slot: usize,
        team: &str,
        key: &str,
        limit: &str,
    ) {
        match cache.allowed.get(slot) {
            Some(cell) => cell
                .get_or_init(|| self.rate_limit_allowed.get(&[team, key, limit]))
                .add(1),
            None => self.rate_limit_allowed(team, key, limit),
        }
    }

    /// A request passed the `limit` check.
    pub fn rate_limit_allowed(&self, team: &str, key: &str, limit: &str) {
        self.rate_limit_allowed
            .with(&[team, key, limit], |c| c.add(1));
    }

    /// A request was refused by the `limit` check.
    pub fn rate_limit_blocked(&self, team: &str, key: &str, limit: &str) {
        self.rate_limit_blocked
            .with(&[team, key, limit], |c| c.add(1));
    }

    /// The limit backend failed to answer.
    pub fn limit_backend_error(&self) {
        self.limit_backend_errors.add(1);
    }

    /// A limit check or settlement failed at once: the backend is known to be down.
    pub fn limit_short_circuited(&self) {
        self.limit_short_circuited.add(1);
    }

    /// Sets a budget's limit and current spend.
    pub fn budget(
        &self,
        scope: &str,
        name: &str,
        team: &str,
        period: &str,
        limit_nanos: u64,
        spent_nanos: u64,
    ) {
        let b = self.budgets.get(&[scope, name, team, period]);
        b.limit
            .0
            .store(limit_nanos, std::sync::atomic::Ordering::Relaxed);
        b.spent
            .store(spent_nanos, std::sync::atomic::Ordering::Relaxed);
    }

    /// Renders every family in `format`.
    pub fn render(&self, format: Format) -> String {
        render::render(self, format, None, None)
    }

    /// Renders every family, plus the ledger gauges of `ledger` when given.
    pub fn render_with(&self, format: Format, ledger: Option<&LedgerWindow>) -> String {
        render::render(self, format, ledger, None)
    }

    /// [`render_with`](Metrics::render_with), plus the billed gauges of `billing` when given.
    pub fn render_all(
        &self,
        format: Format,
        ledger: Option<&LedgerWindow>,
        billing: Option<&BillingGauges>,
    ) -> String {
        render::render(self, format, ledger, billing)
    }
}

#[cfg(test)]
mod tests;
