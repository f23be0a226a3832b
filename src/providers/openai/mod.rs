//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, Groq, Mistral, Together, DeepSeek,
//! OpenRouter): Chat Completions, Completions, Embeddings and the Responses API.
//!
//! Usage semantics: `prompt_tokens` already includes `prompt_tokens_details.cached_tokens`, and
//! `completion_tokens` includes `completion_tokens_details.reasoning_tokens`. The Responses API
//! names them `input_tokens`/`output_tokens` with `*_details`. DeepSeek reports cache hits as
//! `prompt_cache_hit_tokens`.

mod stream;

use http::{HeaderMap, HeaderValue, Uri, header};
use serde::Deserialize;

use super::{
    BodyFacts, Endpoint, EventKind, HeaderPolicy, Provider, ProviderKind, Str, StreamFacts,
    find_key_value, first_key_value, join_uri,
};
use crate::metering::Usage;

/// An OpenAI-format provider.
pub struct OpenAi {
    name: String,
    kind: ProviderKind,
    uris: [Option<Uri>; 6],
    auth: Option<HeaderValue>,
    extra_headers: Vec<(header::HeaderName, HeaderValue)>,
    header_policy: HeaderPolicy,
    inject_stream_usage: bool,
}

/// Default base URL of the `openai` kind.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

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
        let mut uris: [Option<Uri>; 6] = Default::default();
        for ep in Endpoint::ALL {
            if ep.format() == super::ApiFormat::OpenAi {
                let path = ep.path().strip_prefix("/v1").unwrap_or(ep.path());
                uris[ep as usize] = Some(join_uri(base_url, path)?);
            }
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

    fn upstream_uri(&self, endpoint: Endpoint) -> &Uri {
        static NONE: std::sync::OnceLock<Uri> = std::sync::OnceLock::new();
        self.uris[endpoint as usize]
            .as_ref()
            .unwrap_or_else(|| NONE.get_or_init(|| Uri::from_static("http://invalid/")))
    }

    fn header_policy(&self) -> &HeaderPolicy {
        &self.header_policy
    }

    fn authorize(&self, headers: &mut HeaderMap) {
        if let Some(auth) = &self.auth {
            headers.insert(header::AUTHORIZATION, auth.clone());
        }
        for (k, v) in &self.extra_headers {
            headers.insert(k.clone(), v.clone());
        }
    }

    fn inject_stream_usage(&self) -> bool {
        self.inject_stream_usage
    }

    fn body_facts(&self, _endpoint: Endpoint, body: &[u8]) -> BodyFacts {
        BodyFacts {
            usage: find_key_value::<OpenAiUsage>(body, "usage").map(|u| u.normalise()),
            model: first_key_value::<String>(body, "model"),
            response_id: first_key_value::<String>(body, "id"),
        }
    }

    fn stream_event(
        &self,
        endpoint: Endpoint,
        _event: Option<&[u8]>,
        data: &[u8],
        facts: &mut StreamFacts,
    ) -> EventKind {
        if data == b"[DONE]" {
            facts.finished = true;
            return EventKind::Content;
        }
        if endpoint == Endpoint::Responses {
            read_response_event(data, facts);
            return EventKind::Content;
        }
        // After the first chunk, one without usage or an error only adds text (stream.rs).
        if facts.model.is_some()
            && !stream::may_carry_usage(data)
            && stream::append_text(data, &mut facts.text).is_ok()
        {
            return EventKind::Content;
        }
        let Ok(chunk) = serde_json::from_slice::<Chunk<'_>>(data) else {
            return EventKind::Content;
        };
        if let Some(e) = chunk.error {
            facts.error = Some(super::provider_error_type(e.kind.as_deref().unwrap_or("")));
        }
        if facts.model.is_none() {
            facts.model = chunk.model.map(|s| s.0.into_owned());
            facts.response_id = chunk.id.map(|s| s.0.into_owned());
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
                facts.usage = Some(u.normalise());
                if chunk.choices.is_empty() {
                    EventKind::UsageOnly
                } else {
                    EventKind::Content
                }
            }
            None => EventKind::Content,
        }
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
        if let Some(u) = r.usage {
            facts.usage = Some(u.normalise());
        }
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
        assert_eq!(
            p.upstream_uri(Endpoint::ChatCompletions).to_string(),
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
        assert_eq!(
            p.stream_event(Endpoint::ChatCompletions, None, c1, &mut facts),
            EventKind::Content
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
