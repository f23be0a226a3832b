//! Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`).
//!
//! Usage semantics: `input_tokens` excludes cache reads and writes, which come beside it as
//! `cache_read_input_tokens` and `cache_creation_input_tokens` (split by TTL in
//! `cache_creation`). Streams report input at `message_start` and cumulative output in every
//! `message_delta`.

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Uri, header};
use serde::Deserialize;

use super::json;
use super::{
    BodyFacts, Build, BuildError, Endpoint, EventKind, HeaderPolicy, KindSpec, Provider,
    ProviderKind, Str, StreamFacts, Target, find_key_value, first_key_value, join_uri,
};
use crate::metering::{BillingFacts, ServiceTier, Usage};

/// The media types and the API version (`anthropic-beta` is filtered by value).
pub static CLIENT_HEADERS: [HeaderName; 3] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("anthropic-version"),
];

/// `kind = "anthropic"`.
pub static SPEC: KindSpec = KindSpec {
    name: "anthropic",
    default_base_url: Some(DEFAULT_BASE_URL),
    needs_key: true,
    client_headers: &CLIENT_HEADERS,
    build,
};

/// An `anthropic` entry has no keys of its own (`anthropic_beta` is shared: the header
/// filter reads it).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {}

fn build(b: Build<'_>) -> Result<Arc<dyn Provider>, BuildError> {
    let Options {} = super::kind_options(b.options)?;
    let p = Anthropic::new(b.name, b.base_url, b.api_key, b.headers, b.header_policy)
        .map_err(|e| BuildError::at("base_url", e))?;
    Ok(Arc::new(p))
}

/// Default base URL.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";
/// The API version sent when the client sends none.
pub const DEFAULT_VERSION: &str = "2023-06-01";

static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
static ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");

/// The Anthropic provider.
pub struct Anthropic {
    name: String,
    messages: Uri,
    count_tokens: Uri,
    api_key: Option<HeaderValue>,
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
}

impl Anthropic {
    /// A provider at `base_url` (without `/v1`, as in the SDK), pinning `extra_headers` and
    /// forwarding the client headers `header_policy` allows.
    pub fn new(
        name: &str,
        base_url: &str,
        api_key: Option<&str>,
        extra_headers: Vec<(header::HeaderName, HeaderValue)>,
        header_policy: HeaderPolicy,
    ) -> Result<Anthropic, String> {
        let api_key = match api_key {
            Some(k) if !k.is_empty() => {
                let mut v = HeaderValue::from_str(k).map_err(|_| {
                    "api_key contains characters not allowed in a header".to_string()
                })?;
                v.set_sensitive(true);
                Some(v)
            }
            _ => None,
        };
        Ok(Anthropic {
            name: name.to_string(),
            messages: join_uri(base_url, Endpoint::Messages.path())?,
            count_tokens: join_uri(base_url, Endpoint::CountTokens.path())?,
            api_key,
            extra_headers,
            header_policy,
        })
    }
}

#[derive(Deserialize, Default)]
struct CacheCreation {
    #[serde(default)]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default)]
    ephemeral_1h_input_tokens: Option<u64>,
}

/// Anthropic's `usage` object (also in Claude's bodies and stream events on Bedrock).
#[derive(Deserialize, Default)]
pub(super) struct AnthropicUsage {
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    cache_read_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default)]
    cache_creation: Option<CacheCreation>,
    /// `standard`, `priority` or `batch`.
    #[serde(default)]
    service_tier: Option<String>,
    #[serde(default)]
    server_tool_use: Option<ServerToolUse>,
}

/// Server tools the model ran, billed per call.
#[derive(Deserialize, Default)]
struct ServerToolUse {
    #[serde(default)]
    web_search_requests: Option<u64>,
}

impl AnthropicUsage {
    /// The normalised usage: input is every input token, cache reads and writes included.
    pub(super) fn normalise(&self) -> Usage {
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let by_ttl = self.cache_creation.as_ref();
        let write_1h = by_ttl
            .and_then(|c| c.ephemeral_1h_input_tokens)
            .unwrap_or(0);
        // Saturating: the counts are the provider's, and may be absurd (clamped at settle).
        let write = self.cache_creation_input_tokens.unwrap_or_else(|| {
            by_ttl.map_or(0, |c| {
                c.ephemeral_5m_input_tokens
                    .unwrap_or(0)
                    .saturating_add(write_1h)
            })
        });
        Usage {
            input: self
                .input_tokens
                .unwrap_or(0)
                .saturating_add(read)
                .saturating_add(write),
            output: self.output_tokens.unwrap_or(0),
            cached_read: read,
            cache_write: write,
            cache_write_1h: write_1h,
            reasoning: 0,
        }
        .clamped()
    }

    /// The tier and the per-call server tools, priced beside the tokens.
    fn billing(&self) -> BillingFacts {
        BillingFacts {
            service_tier: self
                .service_tier
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(ServiceTier::parse),
            audio_input: 0,
            audio_output: 0,
            web_search_calls: self
                .server_tool_use
                .as_ref()
                .and_then(|s| s.web_search_requests)
                .unwrap_or(0),
        }
    }
}

#[derive(Deserialize)]
struct Message<'a> {
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    model: Option<Str<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

#[derive(Deserialize)]
struct Delta<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    thinking: Option<Str<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ErrorObject<'a> {
    #[serde(borrow, rename = "type", default)]
    kind: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, default)]
    error: Option<ErrorObject<'a>>,
    #[serde(borrow, rename = "type")]
    kind: Str<'a>,
    #[serde(borrow, default)]
    message: Option<Message<'a>>,
    #[serde(borrow, default)]
    delta: Option<Delta<'a>>,
    #[serde(default)]
    usage: Option<AnthropicUsage>,
}

impl Provider for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn supports(&self, endpoint: Endpoint) -> bool {
        matches!(endpoint, Endpoint::Messages | Endpoint::CountTokens)
    }

    fn upstream_uri(&self, target: &Target<'_>) -> Result<Cow<'_, Uri>, String> {
        Ok(Cow::Borrowed(match target.endpoint {
            Endpoint::CountTokens => &self.count_tokens,
            _ => &self.messages,
        }))
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, request: &mut Request<Bytes>) {
        let headers = request.headers_mut();
        if let Some(k) = &self.api_key {
            headers.insert(X_API_KEY.clone(), k.clone());
        }
        if !headers.contains_key(&ANTHROPIC_VERSION) {
            headers.insert(
                ANTHROPIC_VERSION.clone(),
                HeaderValue::from_static(DEFAULT_VERSION),
            );
        }
        super::pin_headers(request, &self.extra_headers);
    }

    fn body_facts(&self, endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        if endpoint == Endpoint::CountTokens {
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
        read_event(data, facts);
        EventKind::Content
    }

    fn text_only_event(
        &self,
        _endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        _facts: &StreamFacts,
    ) -> Option<EventKind> {
        text_only_event(data)
    }
}

/// Whether a Messages stream event only adds text: a `content_block_delta` (`type` first, as
/// Anthropic writes it), whose read takes nothing but its delta's text (or, with a repeated
/// field, nothing at all, read now or later).
pub(super) fn text_only_event(data: &[u8]) -> Option<EventKind> {
    let rest = data.strip_prefix(br#"{"type":"content_block_delta""#)?;
    matches!(rest.first(), Some(b',' | b'}')).then_some(EventKind::Content)
}

/// Usage, model and id of a whole Messages response (Anthropic's API, and Claude on Vertex
/// AI and Bedrock, which answer in the same shape).
pub(super) fn read_body(body: &[u8]) -> BodyFacts {
    let usage = find_key_value::<AnthropicUsage>(body, &json::USAGE);
    BodyFacts {
        billing: usage
            .as_ref()
            .map(AnthropicUsage::billing)
            .unwrap_or_default(),
        usage: usage.map(|u| u.normalise()),
        model: first_key_value::<String>(body, &json::MODEL),
        response_id: first_key_value::<String>(body, &json::ID),
        error: None,
    }
}

/// Reads one event of a Messages stream (its `data:` payload).
pub(super) fn read_event(data: &[u8], facts: &mut StreamFacts) {
    let Ok(ev) = serde_json::from_slice::<Event<'_>>(data) else {
        return;
    };
    match &*ev.kind {
        "message_start" => {
            if let Some(m) = ev.message {
                facts.model = m.model.map(|s| s.0.into_owned());
                facts.response_id = m.id.map(|s| s.0.into_owned());
                if let Some(u) = m.usage {
                    facts.billing.merge(u.billing());
                    merge(facts, u.normalise());
                }
            }
        }
        "content_block_delta" => {
            if let Some(d) = ev.delta {
                for t in [&d.text, &d.thinking, &d.partial_json]
                    .into_iter()
                    .flatten()
                {
                    facts.text.push_str(t);
                }
            }
        }
        "message_delta" => {
            if let Some(u) = ev.usage {
                facts.billing.merge(u.billing());
                merge(facts, u.normalise());
            }
        }
        "message_stop" => facts.finished = true,
        "error" => {
            let kind = ev.error.and_then(|e| e.kind);
            facts.error = Some(super::provider_error_type(kind.as_deref().unwrap_or("")));
        }
        _ => {}
    }
}

/// `message_delta` repeats cumulative counts (and newer API versions repeat the input counts):
/// keep the largest value seen for each field.
fn merge(facts: &mut StreamFacts, u: Usage) {
    match &mut facts.usage {
        Some(existing) => existing.merge_max(&u),
        None => facts.usage = Some(u),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> Anthropic {
        Anthropic::new(
            "anthropic",
            DEFAULT_BASE_URL,
            Some("sk-ant"),
            vec![],
            HeaderPolicy::defaults(ProviderKind::Anthropic),
        )
        .expect("valid")
    }

    #[test]
    fn body_usage_adds_cache_reads_and_writes_to_input() {
        let body = br#"{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
          "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
          "usage":{"input_tokens":12,"cache_creation_input_tokens":300,"cache_read_input_tokens":1000,
          "cache_creation":{"ephemeral_5m_input_tokens":200,"ephemeral_1h_input_tokens":100},"output_tokens":40,"service_tier":"standard"}}"#;
        let f = provider().body_facts(Endpoint::Messages, body);
        assert_eq!(
            f.usage,
            Some(Usage {
                input: 1312,
                output: 40,
                cached_read: 1000,
                cache_write: 300,
                cache_write_1h: 100,
                reasoning: 0
            })
        );
        assert_eq!(f.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn absurd_counts_saturate_instead_of_overflowing() {
        let body = br#"{"id":"msg_01","model":"claude-haiku-4-5","usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"cache_creation":{"ephemeral_5m_input_tokens":18446744073709551615,"ephemeral_1h_input_tokens":5},"output_tokens":9200000000000000000}}"#;
        let u = provider()
            .body_facts(Endpoint::Messages, body)
            .usage
            .expect("usage");
        assert_eq!(u.input, u64::MAX);
        assert_eq!(u.output, 9_200_000_000_000_000_000);
        assert!(u.cached_read + u.cache_write <= u.input);
    }

    #[test]
    fn stream_merges_start_and_cumulative_deltas() {
        let p = provider();
        let mut facts = StreamFacts::default();
        let start = br#"{"type":"message_start","message":{"id":"msg_1","model":"claude-haiku-4-5","usage":{"input_tokens":25,"cache_read_input_tokens":5,"output_tokens":1}}}"#;
        let delta = br#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#;
        let md = br#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":15}}"#;
        for d in [
            &start[..],
            &delta[..],
            &md[..],
            br#"{"type":"message_stop"}"#,
        ] {
            p.stream_event(Endpoint::Messages, None, d, &mut facts);
        }
        assert_eq!(
            facts.usage,
            Some(Usage {
                input: 30,
                output: 15,
                cached_read: 5,
                ..Usage::default()
            })
        );
        assert_eq!(facts.text, "Hello");
        assert!(facts.finished);
    }
}
