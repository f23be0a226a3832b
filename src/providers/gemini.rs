//! Google's Gemini API (`kind = "gemini"`, AI Studio at `generativelanguage.googleapis.com`),
//! served to clients on its own paths: `/v1beta/models/{model}:generateContent`,
//! `:streamGenerateContent` (`?alt=sse`: SSE; without: one JSON array streamed element by
//! element), `:countTokens` (forwarded, not metered), `:embedContent`, `:batchEmbedContents`.
//!
//! The model is in the path; the key is `x-goog-api-key` (a client's `?key=` is its virtual
//! key, removed from the query upstream). Usage semantics of `usageMetadata`:
//! `promptTokenCount` includes `cachedContentTokenCount`; `toolUsePromptTokenCount` (tool
//! results fed back) is input beside it; `candidatesTokenCount` excludes
//! `thoughtsTokenCount`, which is billed as output. So input = prompt + tool-use prompt,
//! cached reads = cached content, output = candidates + thoughts, reasoning = thoughts.
//! Streams repeat cumulative usage in every chunk: the last one stands.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use serde::Deserialize;

use super::json::{self, Key};
use super::{
    BodyFacts, Build, BuildError, Endpoint, EventKind, Framing, HeaderPolicy, KindSpec, Provider,
    ProviderKind, Str, StreamFacts, Target, find_key_value, first_key_value, join_uri,
};
use crate::metering::Usage;

/// Default base URL.
pub const DEFAULT_BASE_URL: &str = "https://generativelanguage.googleapis.com";

/// The media types.
pub static CLIENT_HEADERS: [HeaderName; 2] = [header::CONTENT_TYPE, header::ACCEPT];

/// `kind = "gemini"`.
pub static SPEC: KindSpec = KindSpec {
    name: "gemini",
    default_base_url: Some(DEFAULT_BASE_URL),
    needs_key: true,
    client_headers: &CLIENT_HEADERS,
    build,
};

static API_KEY: HeaderName = HeaderName::from_static("x-goog-api-key");

/// The keys of a `gemini` entry besides the shared ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// The API version in upstream paths: `v1beta` (default) or `v1`.
    api_version: Option<String>,
}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    let o: Options = super::kind_options(b.options)?;
    let version = match o.api_version.as_deref() {
        None | Some("v1beta") => "v1beta",
        Some("v1") => "v1",
        Some(other) => {
            return Err(BuildError::at(
                "api_version",
                format!("{other:?} is not a Gemini API version; one of \"v1beta\", \"v1\""),
            ));
        }
    };
    let base = format!("{}/{version}/models/", b.base_url.trim_end_matches('/'));
    join_uri(&base, "m:generateContent").map_err(|e| BuildError::at("base_url", e))?;
    let key = match b.api_key {
        Some(k) if !k.is_empty() => Some(super::secret_header(k)?),
        _ => None,
    };
    Ok(Arc::new(Gemini {
        name: b.name.to_string(),
        base: base.into(),
        key,
        extra_headers: b.headers,
        header_policy: b.header_policy,
    }))
}

/// The Gemini API.
pub struct Gemini {
    name: String,
    /// `{base_url}/{version}/models/`.
    base: Box<str>,
    key: Option<HeaderValue>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
}

fn method(endpoint: Endpoint) -> Option<&'static str> {
    Some(match endpoint {
        Endpoint::GenerateContent => "generateContent",
        Endpoint::StreamGenerateContent => "streamGenerateContent",
        Endpoint::GeminiCountTokens => "countTokens",
        Endpoint::EmbedContent => "embedContent",
        Endpoint::BatchEmbedContents => "batchEmbedContents",
        _ => return None,
    })
}

/// Model ids as Google names them (`gemini-2.5-flash`, `gemini-embedding-001`).
fn valid_model(m: &str) -> bool {
    !m.is_empty()
        && m.len() <= 128
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The bounded `error_type` of a Google error `status`.
fn error_type(status: &str) -> &'static str {
    match status {
        "RESOURCE_EXHAUSTED" => "rate_limited",
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" => "invalid_request",
        "UNAUTHENTICATED" | "PERMISSION_DENIED" => "authentication",
        "NOT_FOUND" => "not_found",
        "DEADLINE_EXCEEDED" => "timeout",
        _ => "upstream_server_error",
    }
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: Option<u64>,
    #[serde(default)]
    candidates_token_count: Option<u64>,
    #[serde(default)]
    cached_content_token_count: Option<u64>,
    #[serde(default)]
    thoughts_token_count: Option<u64>,
    #[serde(default)]
    tool_use_prompt_token_count: Option<u64>,
}

impl UsageMetadata {
    fn normalise(&self) -> Usage {
        let thoughts = self.thoughts_token_count.unwrap_or(0);
        Usage {
            input: self
                .prompt_token_count
                .unwrap_or(0)
                .saturating_add(self.tool_use_prompt_token_count.unwrap_or(0)),
            output: self
                .candidates_token_count
                .unwrap_or(0)
                .saturating_add(thoughts),
            cached_read: self.cached_content_token_count.unwrap_or(0),
            cache_write: 0,
            cache_write_1h: 0,
            reasoning: thoughts,
        }
        .clamped()
    }
}

#[derive(Deserialize)]
struct Part<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Content<'a> {
    #[serde(borrow, default)]
    parts: Vec<Part<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate<'a> {
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, default)]
    status: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct OwnedError {
    #[serde(default)]
    status: Option<String>,
}

/// One `GenerateContentResponse`: a whole body or one chunk of a stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Chunk<'a> {
    #[serde(borrow, default)]
    candidates: Vec<Candidate<'a>>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(borrow, default)]
    model_version: Option<Str<'a>>,
    #[serde(borrow, default)]
    response_id: Option<Str<'a>>,
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
}

impl Provider for Gemini {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        method(endpoint).is_some()
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        let method = method(target.endpoint)
            .ok_or_else(|| format!("{} is not served", target.endpoint.path()))?;
        let model = target.model.strip_prefix("models/").unwrap_or(target.model);
        if !valid_model(model) {
            return Err("a Gemini model id has only letters, digits, '-', '_' and '.'".into());
        }
        let mut uri = String::with_capacity(self.base.len() + model.len() + 48);
        uri.push_str(&self.base);
        uri.push_str(model);
        uri.push(':');
        uri.push_str(method);
        // The client's query without its key (`?key=` is the virtual key): `alt=sse` stays.
        let mut sep = '?';
        for kv in target.query.unwrap_or("").split('&') {
            if kv.is_empty() || kv.starts_with("key=") || kv == "key" {
                continue;
            }
            uri.push(sep);
            uri.push_str(kv);
            sep = '&';
        }
        uri.parse().map(Cow::Owned).map_err(|e| format!("{e}"))
    }

    fn model_in_body(&self, _endpoint: Endpoint) -> bool {
        false
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        if let Some(k) = &self.key {
            request.headers_mut().insert(API_KEY.clone(), k.clone());
        }
        super::pin_headers(request, &self.extra_headers);
    }

    fn framing(&self, endpoint: Endpoint, content_type: Option<&[u8]>) -> Framing {
        match Framing::from_content_type(content_type) {
            Framing::Json if endpoint == Endpoint::StreamGenerateContent => Framing::JsonArray,
            f => f,
        }
    }

    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        if !endpoint.is_metered() {
            return BodyFacts::default();
        }
        read_body(body)
    }

    fn stream_event(
        &self,
        _endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        read_chunk(data, facts);
        EventKind::Content
    }
}

/// The bounded `error_type` of a body in Google's error shape (`{"error": {"status": ...}}`).
pub(super) fn google_error(body: &[u8]) -> Option<&'static str> {
    find_key_value::<OwnedError>(body, &json::ERROR)
        .and_then(|e| e.status)
        .map(|s| error_type(&s))
}

/// The keys a `GenerateContentResponse` reports its usage, model and id under.
static USAGE_METADATA: Key = Key::new(r#""usageMetadata""#);
static MODEL_VERSION: Key = Key::new(r#""modelVersion""#);
static RESPONSE_ID: Key = Key::new(r#""responseId""#);

/// Usage, model, id and error of a whole `GenerateContentResponse` (the Gemini API's and
/// Vertex AI's are the same shape).
pub(super) fn read_body(body: &[u8]) -> BodyFacts {
    BodyFacts {
        usage: find_key_value::<UsageMetadata>(body, &USAGE_METADATA).map(|u| u.normalise()),
        model: first_key_value::<String>(body, &MODEL_VERSION),
        response_id: first_key_value::<String>(body, &RESPONSE_ID),
        error: google_error(body),
        billing: Default::default(),
    }
}

/// Reads one chunk of a `streamGenerateContent` stream (an SSE event's data or an element of
/// the JSON array).
pub(super) fn read_chunk(data: &[u8], facts: &mut StreamFacts) {
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return;
    };
    if let Some(e) = chunk.error {
        facts.error = Some(error_type(e.status.as_deref().unwrap_or("")));
    }
    if facts.model.is_none() {
        facts.model = chunk.model_version.map(|s| s.0.into_owned());
        facts.response_id = chunk.response_id.map(|s| s.0.into_owned());
    }
    for c in &chunk.candidates {
        for p in c.content.iter().flat_map(|c| &c.parts) {
            if let Some(t) = &p.text {
                facts.text.push_str(t);
            }
        }
        if c.finish_reason.is_some() {
            facts.finished = true;
        }
    }
    // Cumulative: each chunk's usage replaces the last (summing would count the prompt
    // once per chunk).
    if let Some(u) = chunk.usage_metadata {
        facts.usage = Some(u.normalise());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemini() -> Arc<dyn Provider> {
        build(Build {
            name: "gemini",
            kind: ProviderKind::Gemini,
            base_url: DEFAULT_BASE_URL,
            api_key: Some("AIza-upstream"),
            headers: vec![],
            header_policy: HeaderPolicy::defaults(ProviderKind::Gemini),
            options: &toml::Table::new(),
        })
        .map_err(|e| e.message)
        .expect("builds")
    }

    #[test]
    fn uri_has_the_model_and_the_query_without_the_key() {
        let p = gemini();
        let t = Target {
            endpoint: Endpoint::StreamGenerateContent,
            model: "gemini-2.5-flash",
            query: Some("key=tg-virtual&alt=sse"),
        };
        assert_eq!(
            p.upstream_uri(&t).expect("uri").to_string(),
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
        );
        let t = Target {
            model: "models/gemini-2.5-pro",
            endpoint: Endpoint::GenerateContent,
            query: None,
        };
        assert!(
            p.upstream_uri(&t)
                .expect("uri")
                .to_string()
                .ends_with("/models/gemini-2.5-pro:generateContent")
        );
        let bad = Target {
            model: "x?key=steal#",
            ..t
        };
        assert!(p.upstream_uri(&bad).is_err());
        assert!(!p.supports(Endpoint::ChatCompletions));
    }

    #[test]
    fn usage_metadata_is_normalised() {
        let body = br#"{"candidates":[{"content":{"parts":[{"text":"Hi"}],"role":"model"},"finishReason":"STOP"}],
          "usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":40,"totalTokenCount":1540,"cachedContentTokenCount":1000,"thoughtsTokenCount":300,"toolUsePromptTokenCount":25},
          "modelVersion":"gemini-2.5-flash","responseId":"abc"}"#;
        let f = gemini().body_facts(Endpoint::GenerateContent, body);
        assert_eq!(
            f.usage,
            Some(Usage {
                input: 1225,
                output: 340,
                cached_read: 1000,
                reasoning: 300,
                ..Usage::default()
            })
        );
        assert_eq!(f.model.as_deref(), Some("gemini-2.5-flash"));
        assert_eq!(f.response_id.as_deref(), Some("abc"));
    }

    #[test]
    fn stream_usage_is_cumulative_last_stands() {
        let p = gemini();
        let mut facts = StreamFacts::default();
        let c1 = br#"{"candidates":[{"content":{"parts":[{"text":"One "}],"role":"model"}}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2,"totalTokenCount":11},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
        let c2 = br#"{"candidates":[{"content":{"parts":[{"text":"two."}],"role":"model"},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":5,"totalTokenCount":14},"modelVersion":"gemini-2.5-flash","responseId":"r1"}"#;
        p.stream_event(Endpoint::StreamGenerateContent, None, c1, &mut facts);
        assert!(!facts.finished);
        p.stream_event(Endpoint::StreamGenerateContent, None, c2, &mut facts);
        assert_eq!(facts.usage.map(|u| (u.input, u.output)), Some((9, 5)));
        assert_eq!(facts.text, "One two.");
        assert!(facts.finished);
    }

    #[test]
    fn framing_of_the_stream_endpoint() {
        let p = gemini();
        let sgc = Endpoint::StreamGenerateContent;
        assert_eq!(
            p.framing(sgc, Some(b"application/json; charset=UTF-8")),
            Framing::JsonArray
        );
        assert_eq!(p.framing(sgc, Some(b"text/event-stream")), Framing::Sse);
        assert_eq!(
            p.framing(Endpoint::GenerateContent, Some(b"application/json")),
            Framing::Json
        );
    }
}
