//! Providers: one file each, all implementing [`Provider`], registered in [`ProviderKind`].
//!
//! A provider kind is one file: its config struct (the kind's own keys of a `[[providers]]`
//! entry, `deny_unknown_fields`), its [`KindSpec`] (name, default base URL, whether it needs
//! a key, the client headers it forwards, its constructor), and its [`Provider`]
//! implementation: the upstream URI of an endpoint and a model, the authorisation of the whole
//! request, the response framing, and usage read from whole bodies and single stream events.
//! `openai/` serves the `openai` kind and `openai-compatible` servers (vLLM, Ollama, Groq,
//! ...); `anthropic.rs` the Messages API; `azure.rs` Azure OpenAI; `gemini.rs` Google's Gemini
//! API; `bedrock/` Amazon Bedrock's runtime API (SigV4, AWS event streams).
//! API; `vertex/` Google Vertex AI (Gemini and Anthropic models, service-account tokens).

pub mod anthropic;
pub mod azure;
pub mod bedrock;
pub mod gemini;
pub mod headers;
pub(crate) mod json;
pub mod openai;
pub mod vertex;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri};

use crate::metering::Usage;

pub use headers::HeaderPolicy;
pub use json::{Str, find_key_value, first_key_value};
/// The API format a client speaks on an endpoint; decides the error shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiFormat {
    /// OpenAI's `{"error": {...}}` (Azure OpenAI's too).
    OpenAi,
    /// Anthropic's `{"type": "error", "error": {...}}`.
    Anthropic,
    /// Google's `{"error": {"code": 400, "message": ..., "status": "INVALID_ARGUMENT"}}`.
    Gemini,
    /// AWS's `{"message": ...}`, the error's name in the `x-amzn-ErrorType` header (Bedrock).
    Bedrock,
}

impl ApiFormat {
    /// An error body in this format's shape, as the official SDKs parse it (`status`: the
    /// HTTP status, which Google's shape repeats as `code`).
    pub fn error_body(self, status: u16, kind: &str, code: Option<&str>, message: &str) -> Vec<u8> {
        let v = match self {
            ApiFormat::OpenAi => serde_json::json!({
                "error": {"message": message, "type": kind, "param": null, "code": code}
            }),
            ApiFormat::Anthropic => serde_json::json!({
                "type": "error",
                "error": {"type": kind, "message": message}
            }),
            ApiFormat::Gemini => serde_json::json!({
                "error": {"code": status, "message": message, "status": kind}
            }),
            // The name (`kind`) goes in the `x-amzn-ErrorType` header (`proxy::json_error`).
            ApiFormat::Bedrock => serde_json::json!({ "message": message }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A proxied endpoint: one API operation, whichever client-facing path reached it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /v1/chat/completions` (also Azure's deployment and v1 paths)
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
    /// Gemini `POST /v1beta/models/{model}:generateContent`
    GenerateContent,
    /// Gemini `POST /v1beta/models/{model}:streamGenerateContent` (`?alt=sse` or a JSON array)
    StreamGenerateContent,
    /// Gemini `POST /v1beta/models/{model}:countTokens`
    GeminiCountTokens,
    /// Gemini `POST /v1beta/models/{model}:embedContent`
    EmbedContent,
    /// Gemini `POST /v1beta/models/{model}:batchEmbedContents`
    BatchEmbedContents,
    /// Bedrock `POST /model/{modelId}/converse`
    BedrockConverse,
    /// Bedrock `POST /model/{modelId}/converse-stream` (AWS event stream)
    BedrockConverseStream,
    /// Bedrock `POST /model/{modelId}/invoke` (the model's own body)
    BedrockInvoke,
    /// Bedrock `POST /model/{modelId}/invoke-with-response-stream` (AWS event stream)
    BedrockInvokeStream,
    /// Bedrock `POST /model/{modelId}/count-tokens`
    BedrockCountTokens,
    /// Vertex AI `POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict`
    /// (a Messages body with `anthropic_version` and no `model`)
    VertexRawPredict,
    /// Vertex AI `.../publishers/anthropic/models/{model}:streamRawPredict` (SSE)
    VertexStreamRawPredict,
}

/// The number of [`Endpoint`]s.
pub const ENDPOINTS: usize = 18;

impl Endpoint {
    /// Every endpoint, in a fixed order (index = `as usize`).
    pub const ALL: [Endpoint; ENDPOINTS] = [
        Endpoint::ChatCompletions,
        Endpoint::Completions,
        Endpoint::Embeddings,
        Endpoint::Responses,
        Endpoint::Messages,
        Endpoint::CountTokens,
        Endpoint::GenerateContent,
        Endpoint::StreamGenerateContent,
        Endpoint::GeminiCountTokens,
        Endpoint::EmbedContent,
        Endpoint::BatchEmbedContents,
        Endpoint::BedrockConverse,
        Endpoint::BedrockConverseStream,
        Endpoint::BedrockInvoke,
        Endpoint::BedrockInvokeStream,
        Endpoint::BedrockCountTokens,
        Endpoint::VertexRawPredict,
        Endpoint::VertexStreamRawPredict,
    ];

    /// The endpoint of a request path, if it is one we proxy, and the model the path names
    /// (Azure's `/openai/deployments/{deployment}/...`, Gemini's `/v1beta/models/{model}:...`,
    /// Vertex AI's `/v1/projects/{p}/locations/{l}/publishers/{publisher}/models/{model}:...`).
    pub fn from_path(path: &str) -> Option<(Endpoint, Option<&str>)> {
        let path = path.trim_end_matches('/');
        if let Some(rest) = path
            .strip_prefix("/v1/projects/")
            .or_else(|| path.strip_prefix("/v1beta1/projects/"))
        {
            return vertex::endpoint_of(rest);
        }
        if let Some(rest) = path
            .strip_prefix("/v1/publishers/")
            .or_else(|| path.strip_prefix("/v1beta1/publishers/"))
        {
            return vertex::publisher_endpoint_of(rest);
        }
        let operation = |rest: &str| {
            Some(match rest {
                "/chat/completions" => Endpoint::ChatCompletions,
                "/completions" => Endpoint::Completions,
                "/embeddings" => Endpoint::Embeddings,
                "/responses" => Endpoint::Responses,
                _ => return None,
            })
        };
        if let Some(rest) = path.strip_prefix("/openai/deployments/") {
            // Azure's deployment surface, as `openai.AzureOpenAI` calls it.
            let (deployment, _) = rest.split_once('/')?;
            let op = operation(&rest[deployment.len()..])?;
            return (!deployment.is_empty()).then_some((op, Some(deployment)));
        }
        if let Some(rest) = path
            .strip_prefix("/v1beta/models/")
            .or_else(|| path.strip_prefix("/v1/models/"))
        {
            let (model, method) = rest.rsplit_once(':')?;
            let ep = match method {
                "generateContent" => Endpoint::GenerateContent,
                "streamGenerateContent" => Endpoint::StreamGenerateContent,
                "countTokens" => Endpoint::GeminiCountTokens,
                "embedContent" => Endpoint::EmbedContent,
                "batchEmbedContents" => Endpoint::BatchEmbedContents,
                _ => return None,
            };
            return (!model.is_empty() && !model.contains('/')).then_some((ep, Some(model)));
        }
        if let Some(rest) = path.strip_prefix("/model/") {
            // Bedrock: the model id percent-encoded by the SDKs (see `decode_path_model`); an
            // ARN's `/` may come unencoded, so the operation is the last segment.
            let (model, op) = rest.rsplit_once('/')?;
            let ep = match op {
                "converse" => Endpoint::BedrockConverse,
                "converse-stream" => Endpoint::BedrockConverseStream,
                "invoke" => Endpoint::BedrockInvoke,
                "invoke-with-response-stream" => Endpoint::BedrockInvokeStream,
                "count-tokens" => Endpoint::BedrockCountTokens,
                _ => return None,
            };
            return (!model.is_empty()).then_some((ep, Some(model)));
        }
        // Azure's v1 surface is OpenAI's paths under `/openai`.
        let path = path.strip_prefix("/openai").unwrap_or(path);
        Some(match path {
            "/v1/messages" => Endpoint::Messages,
            "/v1/messages/count_tokens" => Endpoint::CountTokens,
            _ => operation(path.strip_prefix("/v1")?)?,
        })
        .map(|e| (e, None))
    }

    /// The client-facing path, also the `endpoint` label (`{model}` for the model in Gemini's).
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::Responses => "/v1/responses",
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
            Endpoint::GenerateContent => "/v1beta/models/{model}:generateContent",
            Endpoint::StreamGenerateContent => "/v1beta/models/{model}:streamGenerateContent",
            Endpoint::GeminiCountTokens => "/v1beta/models/{model}:countTokens",
            Endpoint::EmbedContent => "/v1beta/models/{model}:embedContent",
            Endpoint::BatchEmbedContents => "/v1beta/models/{model}:batchEmbedContents",
            Endpoint::BedrockConverse => "/model/{model}/converse",
            Endpoint::BedrockConverseStream => "/model/{model}/converse-stream",
            Endpoint::BedrockInvoke => "/model/{model}/invoke",
            Endpoint::BedrockInvokeStream => "/model/{model}/invoke-with-response-stream",
            Endpoint::BedrockCountTokens => "/model/{model}/count-tokens",
            Endpoint::VertexRawPredict => {
                "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:rawPredict"
            }
            Endpoint::VertexStreamRawPredict => {
                "/v1/projects/{project}/locations/{location}/publishers/anthropic/models/{model}:streamRawPredict"
            }
        }
    }

    /// The format clients speak here.
    pub fn format(self) -> ApiFormat {
        match self {
            Endpoint::Messages | Endpoint::CountTokens => ApiFormat::Anthropic,
            Endpoint::GenerateContent
            | Endpoint::StreamGenerateContent
            | Endpoint::GeminiCountTokens
            | Endpoint::EmbedContent
            | Endpoint::BatchEmbedContents => ApiFormat::Gemini,
            Endpoint::BedrockConverse
            | Endpoint::BedrockConverseStream
            | Endpoint::BedrockInvoke
            | Endpoint::BedrockInvokeStream
            | Endpoint::BedrockCountTokens => ApiFormat::Bedrock,
            // The gateway's own refusals there are Vertex AI's (key, quota), which answers
            // them in Google's shape; the model's own errors pass through in Anthropic's.
            Endpoint::VertexRawPredict | Endpoint::VertexStreamRawPredict => ApiFormat::Gemini,
            _ => ApiFormat::OpenAi,
        }
    }

    /// False for endpoints that consume no tokens (token counting): forwarded, not metered.
    pub fn is_metered(self) -> bool {
        !matches!(
            self,
            Endpoint::CountTokens | Endpoint::GeminiCountTokens | Endpoint::BedrockCountTokens
        )
    }

    /// Embeddings: no output tokens, and usage of zero output is complete.
    pub fn is_embedding(self) -> bool {
        matches!(
            self,
            Endpoint::Embeddings | Endpoint::EmbedContent | Endpoint::BatchEmbedContents
        )
    }

    /// OpenAI-format endpoints whose streams report usage only when asked with
    /// `stream_options.include_usage`.
    pub fn needs_include_usage(self) -> bool {
        matches!(self, Endpoint::ChatCompletions | Endpoint::Completions)
    }

    /// True where the endpoint itself says the response streams (the body has no `stream`).
    pub fn always_streams(self) -> bool {
        matches!(
            self,
            Endpoint::StreamGenerateContent
                | Endpoint::BedrockConverseStream
                | Endpoint::BedrockInvokeStream
                | Endpoint::VertexStreamRawPredict
        )
    }
}

/// Provider kinds of the config: the one list every kind is registered in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProviderKind {
    /// api.openai.com
    OpenAi,
    /// api.anthropic.com
    Anthropic,
    /// Any server speaking the OpenAI format at a configured base URL.
    OpenAiCompatible,
    /// Azure OpenAI (`<resource>.openai.azure.com`).
    AzureOpenAi,
    /// Google's Gemini API (AI Studio, `generativelanguage.googleapis.com`).
    Gemini,
    /// Amazon Bedrock's runtime API (`bedrock-runtime.<region>.amazonaws.com`).
    Bedrock,
    /// Google Vertex AI (`{location}-aiplatform.googleapis.com`): Gemini and Anthropic models.
    Vertex,
}

impl ProviderKind {
    /// Every kind.
    pub const ALL: [ProviderKind; 7] = [
        ProviderKind::OpenAi,
        ProviderKind::Anthropic,
        ProviderKind::OpenAiCompatible,
        ProviderKind::AzureOpenAi,
        ProviderKind::Gemini,
        ProviderKind::Bedrock,
        ProviderKind::Vertex,
    ];

    /// What the kind is and how it is built (exhaustive: a new kind must name its spec).
    pub fn spec(self) -> &'static KindSpec {
        match self {
            ProviderKind::OpenAi => &openai::OPENAI,
            ProviderKind::Anthropic => &anthropic::SPEC,
            ProviderKind::OpenAiCompatible => &openai::OPENAI_COMPATIBLE,
            ProviderKind::AzureOpenAi => &azure::SPEC,
            ProviderKind::Gemini => &gemini::SPEC,
            ProviderKind::Bedrock => &bedrock::SPEC,
            ProviderKind::Vertex => &vertex::SPEC,
        }
    }

    /// The kind named `name` in the config.
    pub fn from_name(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL
            .into_iter()
            .find(|k| k.spec().name == name)
    }

    /// The name used in the config.
    pub fn as_str(self) -> &'static str {
        self.spec().name
    }
}

/// A provider kind: what the config needs to know to build one.
pub struct KindSpec {
    /// The `kind` of the config.
    pub name: &'static str,
    /// The base URL when the config gives none; `None`: `base_url` is required.
    pub default_base_url: Option<&'static str>,
    /// Whether `api_key` is required.
    pub needs_key: bool,
    /// The client headers forwarded by default (see [`headers`]).
    pub client_headers: &'static [HeaderName],
    /// Builds the provider from a validated entry and the kind's own keys.
    pub build: fn(Build<'_>) -> Result<Arc<dyn Provider>, BuildError>,
}

/// A `[[providers]]` entry, its shared keys checked and resolved.
pub struct Build<'a> {
    /// `name`.
    pub name: &'a str,
    /// `kind`.
    pub kind: ProviderKind,
    /// `base_url`, or the kind's default.
    pub base_url: &'a str,
    /// `api_key`, resolved.
    pub api_key: Option<&'a str>,
    /// `headers`, pinned on every upstream request.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The client headers forwarded.
    pub header_policy: HeaderPolicy,
    /// The entry's other keys: the kind's own (read with [`kind_options`]).
    pub options: &'a toml::Table,
}

/// Why a provider could not be built: the key (relative to the entry; empty for the entry
/// itself) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildError {
    /// `base_url`, `api_version`, ...
    pub key: String,
    /// What to fix.
    pub message: String,
}

impl BuildError {
    /// An error at `key`.
    pub fn at(key: &str, message: impl Into<String>) -> BuildError {
        BuildError {
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Reads a kind's own keys into its config struct (which denies unknown fields).
pub fn kind_options<T: serde::de::DeserializeOwned>(
    options: &toml::Table,
) -> Result<T, BuildError> {
    toml::Value::Table(options.clone())
        .try_into()
        .map_err(|e: toml::de::Error| BuildError::at("", e.message().to_string()))
}

/// A header value holding a secret.
pub fn secret_header(value: &str) -> Result<HeaderValue, BuildError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| BuildError::at("api_key", "contains characters not allowed in a header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// Where a request goes: the operation, the model it is for (after aliasing), and the
/// client's query string (Gemini's `alt=sse`).
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The operation.
    pub endpoint: Endpoint,
    /// The model id sent upstream (an alias's `upstream_model`, else the client's).
    pub model: &'a str,
    /// The client's query string, if any.
    pub query: Option<&'a str>,
}

/// How an upstream response body is framed, which decides how the tap reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One JSON document (also every error body).
    Json,
    /// Server-sent events.
    Sse,
    /// A JSON array streamed element by element (Gemini's `streamGenerateContent` without
    /// `alt=sse`).
    JsonArray,
    /// AWS's binary `application/vnd.amazon.eventstream` (Bedrock): each message is read as
    /// an event (`proxy/eventstream.rs`).
    AwsEventStream,
}

impl Framing {
    /// SSE when the content type says so, else one JSON document.
    pub fn from_content_type(content_type: Option<&[u8]>) -> Framing {
        match content_type {
            Some(ct) if ct.starts_with(b"text/event-stream") => Framing::Sse,
            Some(ct) if ct.starts_with(b"application/vnd.amazon.eventstream") => {
                Framing::AwsEventStream
            }
            _ => Framing::Json,
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
    /// A bounded `error_type` the error body names more precisely than its status does
    /// (Azure's `content_filter`).
    pub error: Option<&'static str>,
    /// Service tier, audio and server-tool counts, for the price.
    pub billing: crate::metering::BillingFacts,
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
    /// Service tier, audio and server-tool counts, for the price.
    pub billing: crate::metering::BillingFacts,
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
    /// Content that also carries a `usage` member (`"usage": null` on every chunk once
    /// `include_usage` is on, or the usage itself on a finish chunk, as several
    /// OpenAI-compatible servers send it): forwarded without that member if the gateway asked
    /// for it on the client's behalf, as the client would have received it without the gateway.
    CarriesUsage,
}

/// One upstream provider.
pub trait Provider: Send + Sync + 'static {
    /// The name from the config, used as the `provider` label.
    fn name(&self) -> &str;
    /// The kind from the config.
    fn kind(&self) -> ProviderKind;
    /// Whether this provider serves `endpoint`.
    fn supports(&self, endpoint: Endpoint) -> bool;
    /// The upstream URI of a request (only asked for endpoints it [supports](Provider::supports)):
    /// borrowed when it does not depend on the model, built when the model is in the path.
    /// `Err`: the model cannot be put in a URL path.
    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String>;
    /// Whether the upstream model id goes into the body (`false`: it is in the URI, and an
    /// alias is not spliced into a body that has no `model`).
    fn model_in_body(&self, _endpoint: Endpoint) -> bool {
        true
    }
    /// The client headers this provider forwards (see [`headers`]).
    fn header_policy(&self) -> &HeaderPolicy;
    /// Authorises the whole upstream request, its method, URI, headers (already filtered by
    /// [`header_policy`](Provider::header_policy)) and body: adds the provider's credentials
    /// and pinned headers (which replace a client's), or signs it (AWS SigV4 signs all four).
    fn authorize(&self, request: &mut Request<Bytes>);
    /// How a successful response body is framed; `content_type` is the response's.
    fn framing(&self, _endpoint: Endpoint, content_type: Option<&[u8]>) -> Framing {
        Framing::from_content_type(content_type)
    }
    /// Whether to add `stream_options.include_usage` to OpenAI-format streams.
    fn inject_stream_usage(&self) -> bool {
        false
    }
    /// Usage, model and id from a whole JSON response body.
    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts;
    /// Reads one stream event: an SSE event (`event:` name, if any, and its joined `data:`
    /// payload) or one element of a JSON-array stream (no name).
    fn stream_event(
        &self,
        endpoint: Endpoint,
        event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind;
    /// Asked for each event once the stream's first output text has passed: `Some(kind)` when
    /// [`stream_event`](Provider::stream_event) would only append output text to `facts` and
    /// return `kind` (no usage, error, model, tier or end in it), so the tap may keep the
    /// event unread and read it only if the stream needs an estimate (`proxy/lazy.rs`).
    /// `None`, the default: read it now. Must be cheaper than the read it spares.
    fn text_only_event(
        &self,
        _endpoint: Endpoint,
        _event: Option<&[u8]>,
        _data: &[u8],
        _facts: &StreamFacts,
    ) -> Option<EventKind> {
        None
    }
    /// Why the provider cannot authorise a request now, if it cannot: a token source with no
    /// valid token (none fetched yet, or every refresh failed past the last one's expiry).
    /// The gateway then answers itself instead of sending a request the provider refuses.
    fn unavailable(&self) -> Option<String> {
        None
    }
}

/// A model id from a request path, percent-decoded: botocore encodes every reserved
/// character of Bedrock's `{modelId}` (`:` as `%3A`, an ARN's `/` as `%2F`), the anthropic
/// SDK all but `:`. Borrowed when there is nothing to decode; `None` when the decoded bytes
/// are not UTF-8 or a `%` is not followed by two hex digits.
pub fn decode_path_model(raw: &str) -> Option<Cow<'_, str>> {
    if !raw.contains('%') {
        return Some(Cow::Borrowed(raw));
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            let hi = hex(*b.get(i + 1)?)?;
            let lo = hex(*b.get(i + 2)?)?;
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Sets `name: value` on a request, replacing a client's.
pub fn pin_headers(request: &mut Request<Bytes>, pinned: &[(HeaderName, HeaderValue)]) {
    let headers = request.headers_mut();
    for (k, v) in pinned {
        headers.insert(k.clone(), v.clone());
    }
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
