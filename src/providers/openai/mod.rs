//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, Groq, Mistral, Together, DeepSeek,
//! OpenRouter): Chat Completions, Completions, Embeddings and the Responses API.
//!
//! Usage semantics: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`, and
//! `completion_tokens` includes `completion_tokens_details.reasoning_tokens`. The Responses API
//! names them `input_tokens`/`output_tokens` with `*_details`. DeepSeek reports cache hits as
//! `prompt_cache_hit_tokens`.

mod stream;
mod text_only;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use serde::Deserialize;

use super::json::{self, Key};
use super::{
    BodyFacts, Build, BuildError, ENDPOINTS, Endpoint, EventKind, HeaderPolicy, KindSpec, Provider,
    ProviderKind, Str, StreamFacts, Target, find_key_value, first_key_value, join_uri,
};
use crate::metering::{BillingFacts, ServiceTier, Usage};

/// Default base URL of the `openai` kind.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The media types, and the client's own request id (`X-Client-Request-Id`, documented for
/// tracing a request at OpenAI).
pub static CLIENT_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-client-request-id"),
];

/// `kind = "openai"`.
pub static OPENAI: KindSpec = KindSpec {
    name: "openai",
    default_base_url: Some(DEFAULT_BASE_URL),
    needs_key: true,
    client_headers: &CLIENT_HEADERS,
    build,
};

/// `kind = "openai-compatible"`: vLLM, Ollama, Groq, ... at their own base URL, often keyless.
pub static OPENAI_COMPATIBLE: KindSpec = KindSpec {
    name: "openai-compatible",
    default_base_url: None,
    needs_key: false,
    client_headers: &CLIENT_HEADERS,
    build,
};

/// The keys of an `openai` or `openai-compatible` entry besides the shared ones.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    /// Add `stream_options.include_usage` to streams (default true).
    inject_stream_usage: Option<bool>,
}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    let options: Options = super::kind_options(b.options)?;
    let p = OpenAi::new(
        b.name,
        b.kind,
        b.base_url,
        b.api_key,
        b.headers,
        b.header_policy,
        options.inject_stream_usage.unwrap_or(true),
    )
    .map_err(|e| BuildError::at("base_url", e))?;
    Ok(Arc::new(p))
}

/// An OpenAI-format provider.
pub struct OpenAi {
    name: String,
    kind: ProviderKind,
    uris: [Option<Uri>; ENDPOINTS],
    auth: Option<HeaderValue>,
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
    inject_stream_usage: bool,
}

/// The OpenAI operations, with their paths below the `/v1` base URL.
pub(crate) const OPERATIONS: [(Endpoint, &str); 4] = [
    (Endpoint::ChatCompletions, "/chat/completions"),
    (Endpoint::Completions, "/completions"),
    (Endpoint::Embeddings, "/embeddings"),
    (Endpoint::Responses, "/responses"),
];

impl OpenAi {
    /// A provider at `base_url` (which includes the `/v1` prefix, as in the SDKs), pinning
    /// `extra_headers` and forwarding the client headers `header_policy` allows.
    pub fn new(
        name: &str,
        kind: ProviderKind,
        base_url: &str,
        api_key: Option<&str>,
        extra_headers: Vec<(header::HeaderName, HeaderValue)>,
        header_policy: HeaderPolicy,
        inject_stream_usage: bool,
    ) -> Result<OpenAi, String> {
        let mut uris: [Option<Uri>; ENDPOINTS] = Default::default();
        for (ep, path) in OPERATIONS {
            uris[ep as usize] = Some(join_uri(base_url, path)?);
        }
        let auth = match api_key {
            Some(k) if !k.is_empty() => {
                let mut v = HeaderValue::from_str(&format!("Bearer {k}")).map_err(|_| {
                    "api_key contains characters not allowed in a header".to_string()
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        Ok(OpenAi {
            name: name.to_string(),
            kind,
            uris,
            auth,
            extra_headers,
            header_policy,
            inject_stream_usage,
        })
    }
}

#[derive(Deserialize, Default)]
struct Details {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
    #[serde(default)]
    audio_tokens: Option<u64>,
}

/// Both the Chat Completions and the Responses usage shapes.
#[derive(Deserialize, Default)]
pub(crate) struct OpenAiUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<Details>,
    #[serde(default)]
    input_tokens_details: Option<Details>,
    #[serde(default)]
    completion_tokens_details: Option<Details>,
    #[serde(default)]
    output_tokens_details: Option<Details>,
    #[serde(default)]
    prompt_cache_hit_tokens: Option<u64>,
}

impl OpenAiUsage {
    pub(crate) fn normalise(&self) -> Usage {
        let detail = |a: &Option<Details>, b: &Option<Details>, f: fn(&Details) -> Option<u64>| {
            a.as_ref()
                .and_then(f)
                .or_else(|| b.as_ref().and_then(f))
                .unwrap_or(0)
        };
        Usage {
            input: self.prompt_tokens.or(self.input_tokens).unwrap_or(0),
            output: self.completion_tokens.or(self.output_tokens).unwrap_or(0),
            cached_read: detail(
                &self.prompt_tokens_details,
                &self.input_tokens_details,
                |d| d.cached_tokens,
            )
            .max(self.prompt_cache_hit_tokens.unwrap_or(0)),
            cache_write: 0,
            cache_write_1h: 0,
            reasoning: detail(
                &self.completion_tokens_details,
                &self.output_tokens_details,
                |d| d.reasoning_tokens,
            ),
        }
        .clamped()
    }

    /// The audio counts (`gpt-4o-audio-preview`, `gpt-realtime`), priced at their own rates.
    pub(crate) fn billing(&self) -> BillingFacts {
        let audio = |a: &Option<Details>, b: &Option<Details>| {
            a.as_ref()
                .and_then(|d| d.audio_tokens)
                .or_else(|| b.as_ref().and_then(|d| d.audio_tokens))
                .unwrap_or(0)
        };
        BillingFacts {
            service_tier: None,
            audio_input: audio(&self.prompt_tokens_details, &self.input_tokens_details),
            audio_output: audio(&self.completion_tokens_details, &self.output_tokens_details),
            web_search_calls: 0,
        }
    }
}

/// The tier a response names: `default` is standard; `auto` never comes back (OpenAI answers
/// with the tier it used).
fn named_tier(tier: Option<&str>) -> Option<ServiceTier> {
    tier.filter(|t| !t.is_empty()).map(ServiceTier::parse)
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    content: Option<Str<'a>>,
    #[serde(borrow, default)]
    reasoning_content: Option<Str<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Str<'a>>,
}

/// A Chat Completions or Completions stream chunk.
#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(borrow, default)]
    choices: Vec<Choice<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(borrow, default)]
    service_tier: Option<Str<'a>>,
}

/// The `response` object inside Responses API stream events.
#[derive(Deserialize)]
struct ResponseObject<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(default)]
    usage: Option<OpenAiUsage>,
    #[serde(borrow, default)]
    service_tier: Option<Str<'a>>,
}

/// A Responses API stream event.
#[derive(Deserialize)]
struct ResponseEvent<'a> {
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow, default)]
    delta: Option<Str<'a>>,
    #[serde(borrow, default)]
    response: Option<ResponseObject<'a>>,
}

impl Provider for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        self.uris[endpoint as usize].is_some()
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        self.uris[target.endpoint as usize]
            .as_ref()
            .map(Cow::Borrowed)
            .ok_or_else(|| format!("{} is not served", target.endpoint.path()))
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        if let Some(auth) = &self.auth {
            request
                .headers_mut()
                .insert(header::AUTHORIZATION, auth.clone());
        }
        super::pin_headers(request, &self.extra_headers);
    }

    fn inject_stream_usage(&self) -> bool {
        self.inject_stream_usage
    }

    fn body_facts(&self, _endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        body_facts(body)
    }

    fn stream_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        stream_event(endpoint, data, facts)
    }

    fn text_only_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &StreamFacts,
    ) -> Option<EventKind> {
        text_only_event(endpoint, data, facts)
    }
}

/// Whether an OpenAI-format stream event only adds text (Azure OpenAI's too; see
/// [`Provider::text_only_event`]).
pub(crate) fn text_only_event(
    endpoint: Endpoint,
    data: &[u8],
    facts: &StreamFacts,
) -> Option<EventKind> {
    match endpoint {
        Endpoint::Responses => text_only::response_event(data),
        _ => text_only::chunk(data, facts),
    }
}

/// The tier an answer names.
static SERVICE_TIER: Key = Key::new(r#""service_tier""#);

/// Each web search a Responses API answer ran is one output item of this type.
static WEB_SEARCH_CALL: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(br#""type":"web_search_call""#));

/// Usage, model and id of an OpenAI-format body (Azure OpenAI's too).
pub(crate) fn body_facts(body: &[u8]) -> BodyFacts {
    let usage = find_key_value::<OpenAiUsage>(body, &json::USAGE);
    let mut billing = usage.as_ref().map(OpenAiUsage::billing).unwrap_or_default();
    billing.service_tier = named_tier(find_key_value::<String>(body, &SERVICE_TIER).as_deref());
    // The Responses API lists each web search the model ran as an output item.
    billing.web_search_calls = WEB_SEARCH_CALL.find_iter(body).count() as u64;
    BodyFacts {
        usage: usage.map(|u| u.normalise()),
        model: first_key_value::<String>(body, &json::MODEL),
        response_id: first_key_value::<String>(body, &json::ID),
        error: None,
        billing,
    }
}

/// Reads one OpenAI-format stream event (Azure OpenAI's too).
pub(crate) fn stream_event(endpoint: Endpoint, data: &[u8], facts: &mut StreamFacts) -> EventKind {
    if data == b"[DONE]" {
        facts.finished = true;
        return EventKind::Content;
    }
    if endpoint == Endpoint::Responses {
        read_response_event(data, facts);
        return EventKind::Content;
    }
    // A chunk with `"usage": null` carries a member a client that did not ask for usage
    // would not have had (see EventKind::CarriesUsage).
    let keys = stream::keys(data);
    let plain = match keys {
        stream::Keys::NullUsage => EventKind::CarriesUsage,
        _ => EventKind::Content,
    };
    // After the first chunk, one without usage or an error only adds text (stream.rs).
    if facts.model.is_some()
        && keys != stream::Keys::Full
        && stream::append_text(data, &mut facts.text).is_ok()
    {
        return plain;
    }
    let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
        return plain;
    };
    if let Some(e) = chunk.error {
        facts.error = Some(super::provider_error_type(e.kind.as_deref().unwrap_or("")));
    }
    if facts.model.is_none() {
        // Azure's first chunk (prompt filter results) names no model: wait for one that does.
        facts.model = chunk
            .model
            .map(|s| s.0.into_owned())
            .filter(|m| !m.is_empty());
        facts.response_id = chunk.id.map(|s| s.0.into_owned());
    }
    if let Some(t) = named_tier(chunk.service_tier.as_deref()) {
        facts.billing.service_tier = Some(t);
    }
    for c in &chunk.choices {
        if let Some(d) = &c.delta {
            for t in [&d.content, &d.reasoning_content, &d.refusal]
                .into_iter()
                .flatten()
            {
                facts.text.push_str(t);
            }
        }
        if let Some(t) = &c.text {
            facts.text.push_str(t);
        }
    }
    match chunk.usage {
        Some(u) => {
            facts.billing.merge(u.billing());
            facts.usage = Some(u.normalise());
            if chunk.choices.is_empty() {
                EventKind::UsageOnly
            } else {
                // Usage on the finish chunk itself (vLLM, llama.cpp and others).
                EventKind::CarriesUsage
            }
        }
        None => plain,
    }
}

fn read_response_event(data: &[u8], facts: &mut StreamFacts) {
    let Ok(ev) = serde_json::from_slice::<ResponseEvent<'_>>(data) else {
        return;
    };
    if let Some(delta) = &ev.delta
        && ev.kind.ends_with(".delta")
        && (ev.kind.contains("text")
            || ev.kind.contains("arguments")
            || ev.kind.contains("reasoning"))
    {
        facts.text.push_str(delta);
    }
    if let Some(r) = ev.response {
        if facts.model.is_none() {
            facts.model = r.model.map(|s| s.0.into_owned());
            facts.response_id = r.id.map(|s| s.0.into_owned());
        }
        if let Some(t) = named_tier(r.service_tier.as_deref()) {
            facts.billing.service_tier = Some(t);
        }
        if let Some(u) = r.usage {
            facts.billing.merge(u.billing());
            facts.usage = Some(u.normalise());
        }
    }
    if &*ev.kind == "response.web_search_call.completed" {
        facts.billing.web_search_calls += 1;
    }
    if matches!(
        &*ev.kind,
        "response.completed" | "response.incomplete" | "response.failed"
    ) {
        facts.finished = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> OpenAi {
        OpenAi::new(
            "openai",
            ProviderKind::OpenAi,
            DEFAULT_BASE_URL,
            Some("sk-x"),
            vec![],
            HeaderPolicy::defaults(ProviderKind::OpenAi),
            true,
        )
        .expect("valid")
    }

    #[test]
    fn uris_keep_the_base_path() {
        let p = OpenAi::new(
            "v",
            ProviderKind::OpenAiCompatible,
            "http://127.0.0.1:8000/v1/",
            None,
            vec![],
            HeaderPolicy::defaults(ProviderKind::OpenAiCompatible),
            true,
        )
        .expect("valid");
        let target = Target {
            endpoint: Endpoint::ChatCompletions,
            model: "m",
            query: None,
        };
        assert_eq!(
            p.upstream_uri(&target).expect("served").to_string(),
            "http://127.0.0.1:8000/v1/chat/completions"
        );
        assert!(!p.supports(Endpoint::Messages));
    }

    #[test]
    fn chat_body_usage_with_cached_and_reasoning() {
        let body = br#"{"id":"chatcmpl-1","object":"chat.completion","model":"o4-mini-2025-04-16","choices":[],
            "usage":{"prompt_tokens":1200,"completion_tokens":300,"total_tokens":1500,
            "prompt_tokens_details":{"cached_tokens":1024,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":256}}}"#;
        let f = provider().body_facts(Endpoint::ChatCompletions, body);
        assert_eq!(
            f.usage,
            Some(Usage {
                input: 1200,
                output: 300,
                cached_read: 1024,
                reasoning: 256,
                ..Usage::default()
            })
        );
        assert_eq!(f.model.as_deref(), Some("o4-mini-2025-04-16"));
        assert_eq!(f.response_id.as_deref(), Some("chatcmpl-1"));
    }

    #[test]
    fn responses_usage_shape() {
        let body = br#"{"id":"resp_1","model":"gpt-4.1","usage":{"input_tokens":50,"input_tokens_details":{"cached_tokens":10},"output_tokens":7,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":57}}"#;
        let f = provider().body_facts(Endpoint::Responses, body);
        assert_eq!(
            f.usage,
            Some(Usage {
                input: 50,
                output: 7,
                cached_read: 10,
                reasoning: 2,
                ..Usage::default()
            })
        );
    }

    #[test]
    fn stream_usage_chunk_is_recognised() {
        let p = provider();
        let mut facts = StreamFacts::default();
        let c1 = br#"{"id":"c","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"}}],"usage":null}"#;
        let c2 = br#"{"id":"c","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        // `"usage":null`: content the client sees without that member unless it asked.
        assert_eq!(
            p.stream_event(Endpoint::ChatCompletions, None, c1, &mut facts),
            EventKind::CarriesUsage
        );
        assert_eq!(
            p.stream_event(Endpoint::ChatCompletions, None, c2, &mut facts),
            EventKind::UsageOnly
        );
        assert_eq!(
            p.stream_event(Endpoint::ChatCompletions, None, b"[DONE]", &mut facts),
            EventKind::Content
        );
        assert_eq!(facts.text, "Hel");
        assert!(facts.finished);
        assert_eq!(facts.usage.map(|u| u.total()), Some(11));
    }
}
