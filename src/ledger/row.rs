//! One usage row: what a finished request consumed and how it ended. Never the prompt or the
//! completion text: only names, counts, times and ids.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::metering::{ServiceTier, Usage, UsageSource};

/// Longest customer id kept; longer values are cut (they come from clients).
pub const MAX_CUSTOMER_CHARS: usize = 256;
/// Longest model name kept (they come from clients and providers).
pub const MAX_MODEL_CHARS: usize = 256;
/// Longest upstream request id kept.
pub const MAX_REQUEST_ID_CHARS: usize = 128;

/// One finished request, as the ledger stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct UsageRow {
    /// UUID v7: unique, and ordered by creation time.
    pub id: uuid::Uuid,
    /// When the request arrived, UTC.
    pub started_at: DateTime<Utc>,
    /// End to end.
    pub duration: Duration,
    /// Streams: time to the first body byte from the provider.
    pub time_to_first_token: Option<Duration>,
    /// Virtual key name (empty when the key was missing or unknown).
    pub key_name: Arc<str>,
    /// Team of the key (empty when unknown).
    pub team: Arc<str>,
    /// End user: the `x-tollgate-customer` header, else the request's `user` field.
    pub customer: Option<Box<str>>,
    /// Provider name from the config, `none` when refused before routing.
    pub provider: Arc<str>,
    /// The model the client asked for (empty if the body could not be read).
    pub requested_model: Box<str>,
    /// The model the response named, else the requested one.
    pub model: Box<str>,
    /// Client-facing endpoint, e.g. `/v1/chat/completions`.
    pub endpoint: &'static str,
    /// `"stream": true`
    pub stream: bool,
    /// Status the client saw (`499`: the client went away).
    pub status_code: u16,
    /// Bounded error class, when the request failed.
    pub error_type: Option<&'static str>,
    /// Tokens.
    pub usage: Usage,
    /// Cost in nano-USD.
    pub cost_nanos: i64,
    /// Where the token counts come from (`usage_source`; the `estimated` column is
    /// `usage_source = estimated`).
    pub usage_source: UsageSource,
    /// The provider's request id (`x-request-id` or `request-id` response header).
    pub upstream_request_id: Option<Box<str>>,
    /// The price the cost was computed at (`model` or `model@YYYY-MM-DD`); `None`: no price
    /// was known (the row's `cost_source` is `unpriced`).
    pub price_id: Option<Arc<str>>,
    /// The service tier the request was billed at.
    pub service_tier: ServiceTier,
    /// The provider's endpoint when the gateway translated the request (else `None`: the
    /// client's endpoint is the one called).
    pub upstream_endpoint: Option<&'static str>,
    /// The response cache: `hit`, `miss` or `bypass`; `None` when it was off for the request.
    pub cache_status: Option<&'static str>,
    /// On a hit, what the original request cost (nano-USD).
    pub saved_cost_nanos: Option<i64>,
    /// MCP tool calls (`endpoint = "mcp"`, the server as `provider`, the tool as `model`): how
    /// the call ended (`ok`, `tool_error`, `rpc_error`, `forbidden`, ...); `None` otherwise.
    pub mcp_outcome: Option<&'static str>,
    /// MCP tool calls: bytes of the response body that answered; `None` otherwise.
    pub response_bytes: Option<i64>,
}

impl UsageRow {
    /// True when the tokens were estimated with a tokenizer (the `estimated` column).
    pub fn estimated(&self) -> bool {
        self.usage_source == UsageSource::Estimated
    }

    /// Start time in microseconds since the Unix epoch, as SQLite stores it.
    pub fn started_at_micros(&self) -> i64 {
        self.started_at.timestamp_micros()
    }

    /// A row started now with every other field empty (a new id, status 200), to fill in.
    pub fn blank() -> UsageRow {
        UsageRow {
            id: uuid::Uuid::now_v7(),
            started_at: Utc::now(),
            duration: Duration::from_millis(120),
            time_to_first_token: None,
            key_name: "".into(),
            team: "".into(),
            customer: None,
            provider: "".into(),
            requested_model: "".into(),
            model: "".into(),
            endpoint: "/v1/chat/completions",
            stream: false,
            status_code: 200,
            error_type: None,
            usage: Usage::default(),
            cost_nanos: 0,
            usage_source: UsageSource::Reported,
            upstream_request_id: None,
            price_id: None,
            service_tier: ServiceTier::Standard,
            upstream_endpoint: None,
            cache_status: None,
            saved_cost_nanos: None,
            mcp_outcome: None,
            response_bytes: None,
        }
    }

    /// `priced` when a price was known, else `unpriced`.
    pub fn cost_source(&self) -> &'static str {
        if self.price_id.is_some() {
            "priced"
        } else {
            "unpriced"
        }
    }
}

/// Cuts `s` to at most `max` characters.
pub fn bounded(s: &str, max: usize) -> Box<str> {
    match s.char_indices().nth(max) {
        Some((i, _)) => s[..i].into(),
        None => s.into(),
    }
}

/// Duration to whole microseconds, saturating.
pub fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// Token count as stored (BIGINT).
pub fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_cuts_on_char_boundaries() {
        assert_eq!(&*bounded("abc", 5), "abc");
        assert_eq!(&*bounded("ééééé", 2), "éé");
    }
}
