//! The config file as written: serde structs, no validation beyond types.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::metering::pricing::PriceSpec;

/// The whole file.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `[server]`
    #[serde(default)]
    pub server: RawServer,
    /// `[metrics]`
    #[serde(default)]
    pub metrics: RawMetrics,
    /// `[[providers]]`
    #[serde(default)]
    pub providers: Vec<RawProvider>,
    /// `[[models]]`: aliases, routing, price overrides.
    #[serde(default)]
    pub models: Vec<RawModel>,
    /// `[[prices]]`: price overrides for models routed by prefix or list.
    #[serde(default)]
    pub prices: Vec<RawPrice>,
    /// `[[keys]]`: virtual keys.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// `[[teams]]`: team limits and budgets.
    #[serde(default)]
    pub teams: Vec<RawTeam>,
    /// `[limits]`: where limit state lives.
    #[serde(default)]
    pub limits: RawLimitsSection,
    /// `[ledger]`: the usage ledger.
    #[serde(default)]
    pub ledger: crate::ledger::RawLedger,
    /// `[metering]`: how far provider usage is trusted.
    #[serde(default)]
    pub metering: RawMetering,
    /// `[[billing]]`: the providers' billing APIs, reconciled with the ledger.
    #[serde(default)]
    pub billing: Vec<crate::billing::RawBilling>,
    /// `[cache]`: the response cache (off when absent).
    #[serde(default)]
    pub cache: RawCache,
    /// `[[mcp_servers]]`: MCP servers behind the gateway (validated in `crate::mcp::config`).
    #[serde(default)]
    pub mcp_servers: Vec<crate::mcp::config::RawMcpServer>,
}

/// `[cache]` (validated in `crate::cache::config`).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// `off` (default), `exact` or `semantic`.
    pub mode: Option<String>,
    /// Entry lifetime in seconds (default 3600).
    pub ttl_secs: Option<u64>,
    /// `team` (default), `key` or `global`.
    pub scope: Option<String>,
    /// `memory` (default) or a `redis://` URL.
    pub backend: Option<String>,
    /// Redis key prefix (default `tollgate:cache:`).
    pub redis_prefix: Option<String>,
    /// Bound on one Redis call in milliseconds (default 100).
    pub redis_timeout_ms: Option<u64>,
    /// Memory backend: bytes kept at most (default 256 MiB).
    pub max_bytes: Option<usize>,
    /// Largest response stored (default 1 MiB).
    pub max_entry_bytes: Option<usize>,
    /// Models opted in (default: all).
    #[serde(default)]
    pub models: Vec<String>,
    /// Teams opted in (default: all).
    #[serde(default)]
    pub teams: Vec<String>,
    /// Keys opted in, by name (default: all).
    #[serde(default)]
    pub keys: Vec<String>,
    /// `temperature_zero` (default: temperature absent or 0) or `any`.
    pub deterministic: Option<String>,
    /// How long concurrent identical misses wait for the first (default 30000 ms).
    pub collapse_wait_ms: Option<u64>,
    /// What a hit charges to budgets: `provider` (0, default) or `full`.
    pub charge: Option<String>,
    /// `[cache.semantic]`
    pub semantic: Option<RawSemantic>,
}

/// `[cache.semantic]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSemantic {
    /// A configured model that serves `/v1/embeddings`.
    pub embeddings_model: String,
    /// Cosine similarity for a hit (default 0.9).
    pub similarity_threshold: Option<f64>,
    /// Messages embedded, from the last (default 1).
    pub messages: Option<usize>,
    /// Leave the system prompt out (default true).
    pub ignore_system: Option<bool>,
    /// Vectors kept at most (default 10000).
    pub max_entries: Option<usize>,
    /// Bytes of vectors kept at most (default 64 MiB).
    pub max_bytes: Option<usize>,
    /// Vectors in one group above which it is searched through an HNSW graph (default 50000).
    pub ann_above_entries: Option<usize>,
    /// Bound on the embeddings call in milliseconds (default 2000).
    pub timeout_ms: Option<u64>,
}

/// `[metering]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetering {
    /// Largest token count one request may report (default 10,000,000); larger ones are
    /// clamped to it and flagged `implausible`.
    pub max_tokens_per_request: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimitsSection {
    /// `memory` (default) or `redis://host:6379`.
    pub backend: Option<String>,
    /// `allow` (default) or `deny` when the backend cannot answer.
    pub on_backend_error: Option<String>,
    /// Output tokens reserved for a request without `max_tokens` (default 1024).
    pub default_max_tokens: Option<u64>,
    /// Time zone of budget periods: `UTC` (default) or a fixed offset such as `+02:00`.
    pub timezone: Option<String>,
    /// Prefix of the Redis keys (default `tollgate`).
    pub redis_prefix: Option<String>,
    /// Redis response timeout in milliseconds (default 250).
    pub redis_timeout_ms: Option<u64>,
}

/// Rate and concurrency limits of a key, team or team-model.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawLimitSet {
    /// Requests per minute.
    pub requests_per_minute: Option<u64>,
    /// Input plus output tokens per minute.
    pub tokens_per_minute: Option<u64>,
    /// Requests per day.
    pub requests_per_day: Option<u64>,
    /// Tokens per day.
    pub tokens_per_day: Option<u64>,
    /// Requests in flight at once.
    pub max_parallel_requests: Option<u64>,
}

/// `budget = { usd = 500, period = "month", action = "block" }`
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// The limit in USD.
    pub usd: toml::Value,
    /// `day`, `week` or `month`.
    pub period: String,
    /// `block` (default) or `alert`.
    pub action: Option<String>,
    /// `bounded` (default) or `none`: refuse a request whose maximum cost does not fit.
    pub overshoot: Option<String>,
}

/// `[[teams]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeam {
    /// Team name, as in `[[keys]] team`.
    pub name: String,
    /// Team-wide limits.
    pub limits: Option<RawLimitSet>,
    /// Team-wide budget.
    pub budget: Option<RawBudget>,
    /// Limits and budgets of the team's use of one model.
    #[serde(default)]
    pub models: Vec<RawTeamModel>,
}

/// `[[teams.models]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTeamModel {
    /// The model name as clients send it.
    pub model: String,
    /// Limits.
    pub limits: Option<RawLimitSet>,
    /// Budget.
    pub budget: Option<RawBudget>,
}

/// `[server]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Default `0.0.0.0:8080`.
    pub listen: Option<String>,
    /// Default 10 MiB.
    pub max_body_bytes: Option<usize>,
    /// Default 30 s.
    pub shutdown_grace_secs: Option<u64>,
    /// Worker threads serving the main listener; default: the number of cores.
    pub workers: Option<usize>,
    /// Time a client has to send a request's headers (default 5 s).
    pub header_timeout_secs: Option<u64>,
    /// Time a keep-alive connection may sit idle between requests (default 75 s).
    pub idle_timeout_secs: Option<u64>,
    /// Time a client has to send a request's body once its headers are in (default 60 s).
    pub body_timeout_secs: Option<u64>,
    /// Open client connections at most (default: from the file-descriptor limit).
    pub max_connections: Option<usize>,
    /// Open client connections per source address at most (default: no limit).
    pub max_connections_per_ip: Option<usize>,
}

/// `[metrics]`
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// Separate listener for the metrics endpoints.
    pub listen: Option<String>,
    /// Bearer token required to scrape.
    pub bearer_token: Option<String>,
    /// Enabled labels (default: all).
    pub labels: Option<Vec<String>>,
    /// Series cap per family (default 10000).
    pub max_series_per_family: Option<usize>,
    /// Longest label value kept, in bytes (default 128); longer ones become `__other__`.
    pub max_label_value_bytes: Option<usize>,
}

/// `[[providers]]`: the keys every kind shares. The rest are the kind's own
/// (`providers/<kind>.rs` reads them into its config struct, which denies unknown fields).
#[derive(Debug, Deserialize)]
pub struct RawProvider {
    /// Unique name, the `provider` label.
    pub name: String,
    /// `openai`, `anthropic`, `openai-compatible`, `azure-openai` or `gemini`.
    pub kind: String,
    /// Upstream base URL (required for `openai-compatible`).
    pub base_url: Option<String>,
    /// The provider's API key, usually `${ENV_VAR}`.
    pub api_key: Option<String>,
    /// Models this provider serves (exact ids; `"*"` serves any model not routed elsewhere).
    #[serde(default)]
    pub models: Vec<String>,
    /// Model id prefixes this provider serves, e.g. `gpt-`, `claude-`.
    #[serde(default)]
    pub model_prefixes: Vec<String>,
    /// Headers pinned on every upstream request (e.g. `OpenAI-Organization`); they replace a
    /// client's.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Client headers forwarded besides the kind's allow-list (e.g. `openai-beta`).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// Anthropic: the `anthropic-beta` values clients may send (`["*"]`: any); default none.
    pub anthropic_beta: Option<Vec<String>>,
    /// Time to wait for the response headers (default 600 s).
    pub timeout_secs: Option<u64>,
    /// Multiplies every cost of this provider (a negotiated discount "0.85", a regional
    /// uplift "1.1"); default "1".
    pub price_multiplier: Option<String>,
    /// Longest silence inside a response body before it is ended as `stream_interrupted`
    /// (default 300 s).
    pub stream_idle_timeout_secs: Option<u64>,
    /// Largest SSE event read for usage; longer events pass through unread (default 8 MiB).
    pub max_sse_event_bytes: Option<usize>,
    /// `cancel` (default) or `drain`: what a stream does when its client leaves.
    pub on_client_disconnect: Option<String>,
    /// How long a drained stream is read after its client left (default 30 s).
    pub drain_timeout_secs: Option<u64>,
    /// The kind's own keys (`inject_stream_usage`, `api_version`, ...).
    #[serde(flatten)]
    pub options: toml::Table,
}

/// `[[models]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    /// The name clients send.
    pub name: String,
    /// The provider that serves it.
    pub provider: String,
    /// The model id sent upstream, when it differs from `name`.
    pub upstream_model: Option<String>,
    /// Azure OpenAI: the deployment serving `name` (the upstream model; not with
    /// `upstream_model`).
    pub deployment: Option<String>,
    /// The model whose price applies (Azure: the deployment's base model, since deployment
    /// names say nothing about price).
    pub base_model: Option<String>,
    /// Price override for this model.
    pub price: Option<PriceSpec>,
}

/// `[[prices]]`: `model` and the fields of a [`PriceSpec`] (rates, `tiers`, `priority`,
/// `flex`, `batch`, fees, `effective_from`), every unknown key an error.
#[derive(Debug)]
pub struct RawPrice {
    /// Model id (as the provider reports it).
    pub model: String,
    /// The price.
    pub spec: PriceSpec,
}

impl<'de> Deserialize<'de> for RawPrice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut t = toml::Table::deserialize(d)?;
        let model = match t.remove("model") {
            Some(toml::Value::String(s)) => s,
            _ => return Err(D::Error::custom("missing field `model`")),
        };
        let spec = toml::Value::Table(t)
            .try_into::<PriceSpec>()
            .map_err(|e| D::Error::custom(e.message()))?;
        Ok(RawPrice { model, spec })
    }
}

/// `[[keys]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Name, the `key` label.
    pub name: String,
    /// The secret clients send, usually `${ENV_VAR}`.
    pub key: String,
    /// Team for cost attribution.
    pub team: String,
    /// Limits of this key.
    pub limits: Option<RawLimitSet>,
    /// Budget of this key.
    pub budget: Option<RawBudget>,
}
