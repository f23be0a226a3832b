//! Providers: one file each, all implementing [`Provider`].
//!
//! A provider knows its upstream URLs and auth, and how to read usage out of its responses,
//! whole JSON bodies and single SSE events. `openai.rs` serves both the `openai` kind and
//! `openai-compatible` servers (vLLM, Ollama, Groq, ...), which differ only in base URL and
//! options; `anthropic.rs` serves the Messages API.

pub mod anthropic;
pub mod headers;
mod json;
pub mod openai;

use http::HeaderMap;
use http::Uri;

use crate::metering::Usage;

pub use headers::HeaderPolicy;
pub use json::{Str, find_key_value, first_key_value};

/// The API format a client speaks on an endpoint; decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// OpenAI's `{"error": {...}}`.
    OpenAi,
    /// Anthropic's `{"type": "error", "error": {...}}`.
    Anthropic,
}

impl ApiFormat {
    /// An error body in this format's shape, as the official SDKs parse it.
    pub fn error_body(self, kind: &str, code: Option<&str>, message: &str) -> Vec<u8> {
        let v = match self {
            ApiFormat::OpenAi => serde_json::json!({
                "error": {"message": message, "type": kind, "param": null, "code": code}
            }),
            ApiFormat::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": kind, "message": message}
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A proxied endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions`
    ChatCompletions,
    /// `POST /v1/completions`
    Completions,
    /// `POST /v1/embeddings`
    Embeddings,
    /// `POST /v1/responses`
    Responses,
    /// `POST /v1/messages`
    Messages,
    /// `POST /v1/messages/count_tokens`
    CountTokens,
}

impl Endpoint {
    /// Every endpoint, in a fixed order (index = `as usize`).
    pub const ALL: [Endpoint; 6] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Messages,
        Endpoint::CountTokens,
    ];

    /// The endpoint of a request path, if it is one we proxy.
    pub fn from_path(path: &str) -> Option<Endpoint> {
        Some(match path.trim_end_matches('/') {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/v1/responses" => Endpoint::Responses,
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            _ => return None,
        })
    }

    /// The client-facing path, also the `endpoint` label.
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }

    /// The format clients speak here.
    pub fn format(self) -> ApiFormat {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ApiFormat::Anthropic,
            _ => ApiFormat::OpenAi,
        }
    }

    /// False for endpoints that consume no tokens (token counting): forwarded, not metered.
    pub fn is_metered(self) -> bool {
        self != Endpoint::CountTokens
    }

    /// OpenAI-format endpoints whose streams report usage only when asked with
    /// `stream_options.include_usage`.
    pub fn needs_include_usage(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }
}

/// Provider kinds of the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// api.openai.com
    OpenAi,
    /// api.anthropic.com
    Anthropic,
    /// Any server speaking the OpenAI format at a configured base URL.
    OpenAiCompatible,
}

impl ProviderKind {
    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAiCompatible => "openai-compatible",
        }
    }
}

/// What a whole (non-streamed) response body says about itself.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BodyFacts {
    /// Usage, if the body carried any.
    pub usage: Option<Usage>,
    /// The model the response names.
    pub model: Option<String>,
    /// The provider's id of the response (`chatcmpl-...`, `msg_...`).
    pub response_id: Option<String>,
}

/// Usage and facts gathered from a stream as its events pass.
#[derive(Debug, Default, Clone)]
pub struct StreamFacts {
    /// The latest (cumulative) usage reported, if any.
    pub usage: Option<Usage>,
    /// The model the stream names.
    pub model: Option<String>,
    /// The provider's id of the response.
    pub response_id: Option<String>,
    /// Output text seen so far, for an estimate if the stream ends without usage.
    pub text: String,
    /// True once the provider signalled the normal end of the stream.
    pub finished: bool,
    /// An error the provider reported inside the stream, as a bounded `error_type`.
    pub error: Option<&'static str>,
}

/// The bounded `error_type` of an error `type` string a provider sent in a body or stream.
pub fn provider_error_type(kind: &str) -> &'static str {
    match kind {
        "overloaded_error" => "overloaded",
        "rate_limit_error" | "rate_limit_exceeded" | "requests" | "tokens" => "rate_limited",
        "invalid_request_error" => "invalid_request",
        "authentication_error" | "permission_error" => "authentication",
        "not_found_error" => "not_found",
        "request_too_large" => "request_too_large",
        "timeout_error" => "timeout",
        _ => "upstream_server_error",
    }
}

/// What the tap does with one SSE event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// An ordinary event: forwarded.
    Content,
    /// The usage-only chunk that `stream_options.include_usage` adds: dropped if the gateway
    /// asked for it on the client's behalf.
    UsageOnly,
}

/// One upstream provider.
pub trait Provider: Send + Sync + 'static {
    /// The name from the config, used as the `provider` label.
    fn name(&self) -> &str;
    /// The kind from the config.
    fn kind(&self) -> ProviderKind;
    /// Whether this provider serves `endpoint`.
    fn supports(&self, endpoint: Endpoint) -> bool;
    /// The upstream URI for `endpoint`.
    fn upstream_uri(&self, endpoint: Endpoint) -> &Uri;
    /// The client headers this provider forwards (see [`headers`]).
    fn header_policy(&self) -> &HeaderPolicy;
    /// Adds the provider's own authentication, required and pinned headers to an upstream
    /// request already filtered by [`header_policy`](Provider::header_policy): pinned headers
    /// replace a client's.
    fn authorize(&self, headers: &mut HeaderMap);
    /// Whether to add `stream_options.include_usage` to OpenAI-format streams.
    fn inject_stream_usage(&self) -> bool {
        false
    }
    /// Usage, model and id from a whole JSON response body.
    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts;
    /// Reads one SSE event (`event:` name, if any, and its joined `data:` payload).
    fn stream_event(
        &self,
        endpoint: Endpoint,
        event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind;
}

/// Parses `base` and appends `path`, keeping any path prefix of `base`.
pub fn join_uri(base: &str, path: &str) -> Result<Uri, String> {
    let full = format!("{}{}", base.trim_end_matches('/'), path);
    let uri: Uri = full
        .parse()
        .map_err(|e| format!("{full:?} is not a valid URL: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => Ok(uri),
        _ => Err(format!("{full:?} must start with http:// or https://")),
    }
}
