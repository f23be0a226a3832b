//! What a billing API is to the poller: the requests of one fetch, the auth headers, how a
//! page reads into [`BilledLine`]s and where its next page is. HTTP, pagination, retries and
//! storage are the poller's ([`super::fetch`]), so adding a provider (Azure Cost Management,
//! a Google billing export) is one file implementing [`BillingSource`].

use chrono::NaiveDate;

/// Which table of the bill a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dataset {
    /// Money (OpenAI costs, Anthropic cost report).
    Cost,
    /// Token counts (OpenAI usage, Anthropic usage report).
    Usage,
}

impl Dataset {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Dataset::Cost => "cost",
            Dataset::Usage => "usage",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Dataset {
        if s == "usage" {
            Dataset::Usage
        } else {
            Dataset::Cost
        }
    }
}

/// Token types of usage lines, the same for every provider (the reconciliation compares them
/// with the ledger's columns). `input` is all input, cached and cache-written included, as
/// in the ledger.
pub mod token_type {
    /// All input tokens.
    pub const INPUT: &str = "input";
    /// Output tokens.
    pub const OUTPUT: &str = "output";
    /// Input read from the prompt cache.
    pub const CACHED_READ: &str = "cached_read";
    /// Input written to the prompt cache (every TTL).
    pub const CACHE_WRITE: &str = "cache_write";
    /// Model requests.
    pub const REQUESTS: &str = "requests";
    /// Server-side web searches.
    pub const WEB_SEARCH: &str = "web_search_requests";
}

/// One line of a bill: cost (nano-USD) or a token count, for one day and grouping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BilledLine {
    /// UTC day of the bucket.
    pub day: NaiveDate,
    /// Cost or usage.
    pub dataset: Dataset,
    /// Model id as the provider bills it; empty when the line has none.
    pub model: String,
    /// OpenAI project id or Anthropic workspace id; empty when none.
    pub project: String,
    /// Provider's API key id; empty when none.
    pub api_key: String,
    /// Cost lines: the line item / token type as billed (`input_tokens`,
    /// `cache_read_input_tokens`, ...); usage lines: a [`token_type`].
    pub item: String,
    /// `default`, `standard`, `batch`, `priority`, ...; empty when none.
    pub service_tier: String,
    /// Nano-USD (cost lines).
    pub cost_nanos: i64,
    /// Tokens (usage lines; cost lines when the bill gives a token quantity).
    pub quantity: i64,
}

/// One GET of a fetch (its first page; the poller follows `next_page`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// Path after the base URL, e.g. `/organization/costs`.
    pub path: &'static str,
    /// Query parameters; array parameters already in brackets style (`group_by[]`).
    pub params: Vec<(String, String)>,
}

/// A page read.
#[derive(Debug, Default)]
pub struct Page {
    /// Its lines.
    pub lines: Vec<BilledLine>,
    /// The cursor of the next page (`has_more` and `next_page`).
    pub next_page: Option<String>,
}

/// A page that could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// A provider's billing API.
pub trait BillingSource: Send + Sync {
    /// `openai`, `anthropic`.
    fn kind(&self) -> &'static str;

    /// Headers sent with every request (the admin key, a version).
    fn headers(&self) -> Vec<(&'static str, String)>;

    /// The requests that fetch the UTC days `[from, to)` (each followed through its pages).
    fn requests(&self, from: NaiveDate, to: NaiveDate) -> Vec<PageRequest>;

    /// Reads one page of the response to `req`.
    fn parse_page(&self, req: &PageRequest, body: &[u8]) -> Result<Page, ParseError>;

    /// The message of an error body, in the provider's own shape.
    fn error_message(&self, body: &[u8]) -> Option<String> {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        v.pointer("/error/message")
            .and_then(|m| m.as_str())
            .map(str::to_string)
    }
}

/// Bucket start time to its UTC day.
pub fn day_of_unix(secs: i64) -> Option<NaiveDate> {
    chrono::DateTime::from_timestamp(secs, 0).map(|t| t.date_naive())
}

/// RFC 3339 time (`2025-08-01T00:00:00Z`) to its UTC day.
pub fn day_of_rfc3339(s: &str) -> Option<NaiveDate> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc).date_naive())
}

/// A JSON string field, or empty when absent or null.
pub fn text(v: &serde_json::Value, key: &str) -> String {
    v.get(key)
        .and_then(|x| x.as_str())
        .unwrap_or_default()
        .to_string()
}

/// A JSON integer field (tolerating a float with no fraction), or 0.
pub fn int(v: &serde_json::Value, key: &str) -> i64 {
    match v.get(key) {
        Some(x) => x
            .as_i64()
            .or_else(|| x.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .unwrap_or(0),
        None => 0,
    }
}
