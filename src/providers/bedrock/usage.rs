//! Bedrock's usage, from whole bodies and single event-stream messages.
//!
//! Converse (`usage` of the body, `metadata` event of the stream): `inputTokens` is the input
//! not read from or written to the prompt cache; `cacheReadInputTokens` and
//! `cacheWriteInputTokens` come beside it (AWS's prompt-caching semantics, as Anthropic's).
//! So input = inputTokens + cache reads + cache writes, cached reads and cache writes are
//! subsets. InvokeModel bodies and stream chunks are the model's own: Claude's Messages
//! shapes (read as the anthropic kind reads them), Nova's `usage` (Converse names), Llama's
//! `prompt_token_count`/`generation_token_count`; a stream's last chunk adds Bedrock's
//! `amazon-bedrock-invocationMetrics` (`inputTokenCount`, `outputTokenCount`,
//! `cacheReadInputTokenCount`, `cacheWriteInputTokenCount`), used when the model's own
//! events said nothing.

use base64::Engine;
use serde::Deserialize;

use super::super::anthropic::AnthropicUsage;
use super::super::json::{self, Key};
use super::super::{BodyFacts, Str, StreamFacts, find_key_value, first_key_value};

/// The invocation metrics InvokeModel's stream adds to its last event.
static INVOCATION_METRICS: Key = Key::new(r#""amazon-bedrock-invocationMetrics""#);
use crate::metering::Usage;

/// Converse's `usage` (Nova's InvokeModel bodies use the same names).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ConverseUsage {
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default, alias = "cacheReadInputTokenCount")]
    cache_read_input_tokens: u64,
    #[serde(default, alias = "cacheWriteInputTokenCount")]
    cache_write_input_tokens: u64,
}

impl ConverseUsage {
    pub(super) fn normalise(&self) -> Usage {
        let (read, write) = (self.cache_read_input_tokens, self.cache_write_input_tokens);
        Usage {
            input: self.input_tokens.saturating_add(read).saturating_add(write),
            output: self.output_tokens,
            cached_read: read,
            cache_write: write,
            ..Usage::default()
        }
        .clamped()
    }
}

/// `amazon-bedrock-invocationMetrics`, the last chunk of an InvokeModel stream.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InvocationMetrics {
    input_token_count: u64,
    #[serde(default)]
    output_token_count: u64,
    #[serde(default)]
    cache_read_input_token_count: u64,
    #[serde(default)]
    cache_write_input_token_count: u64,
}

impl InvocationMetrics {
    fn normalise(&self) -> Usage {
        ConverseUsage {
            input_tokens: self.input_token_count,
            output_tokens: self.output_token_count,
            cache_read_input_tokens: self.cache_read_input_token_count,
            cache_write_input_tokens: self.cache_write_input_token_count,
        }
        .normalise()
    }
}

/// Llama's counts.
#[derive(Deserialize)]
struct LlamaUsage {
    prompt_token_count: u64,
    #[serde(default)]
    generation_token_count: u64,
}

/// Usage of a whole Converse body.
pub(super) fn converse_body(body: &[u8]) -> BodyFacts {
    BodyFacts {
        usage: find_key_value::<ConverseUsage>(body, &json::USAGE).map(|u| u.normalise()),
        ..BodyFacts::default()
    }
}

/// Usage, model and id of a whole InvokeModel body (the model's own response).
pub(super) fn invoke_body(body: &[u8]) -> BodyFacts {
    let usage = match find_key_value::<ConverseUsage>(body, &json::USAGE) {
        Some(u) => Some(u.normalise()),
        None => find_key_value::<AnthropicUsage>(body, &json::USAGE)
            .map(|u| u.normalise())
            .or_else(|| llama(body)),
    };
    BodyFacts {
        usage,
        // Claude's body names its model (`claude-haiku-4-5-20251001`), but the request is
        // metered and priced under the Bedrock id it asked for (a `us.` profile costs 10 %
        // more than the same model in the body's name).
        model: None,
        response_id: first_key_value::<String>(body, &json::ID),
        error: None,
        billing: Default::default(),
    }
}

fn llama(body: &[u8]) -> Option<Usage> {
    let u: LlamaUsage = serde_json::from_slice(body).ok()?;
    Some(
        Usage {
            input: u.prompt_token_count,
            output: u.generation_token_count,
            ..Usage::default()
        }
        .clamped(),
    )
}

/// The bounded `error_type` of a stream exception (`throttlingException`, ...) or an
/// `x-amzn-ErrorType` name, either case.
pub(super) fn exception_type(name: &[u8]) -> &'static str {
    let lower = |s: &str| s.as_bytes().eq_ignore_ascii_case(name);
    if lower("throttlingException") || lower("serviceQuotaExceededException") {
        "rate_limited"
    } else if lower("validationException") {
        "invalid_request"
    } else if lower("accessDeniedException") || lower("unrecognizedClientException") {
        "authentication"
    } else if lower("resourceNotFoundException") {
        "not_found"
    } else if lower("modelTimeoutException") {
        "timeout"
    } else if lower("serviceUnavailableException") {
        "overloaded"
    } else {
        // internalServerException, modelStreamErrorException, an error message's code.
        "upstream_server_error"
    }
}

#[derive(Deserialize)]
struct TextDelta<'a> {
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default, rename = "reasoningContent")]
    reasoning: Option<Box<TextDelta<'a>>>,
    #[serde(borrow, default, rename = "toolUse")]
    tool_use: Option<ToolInput<'a>>,
}

#[derive(Deserialize)]
struct ToolInput<'a> {
    #[serde(borrow, default)]
    input: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct ContentBlockDelta<'a> {
    #[serde(borrow)]
    delta: TextDelta<'a>,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    usage: Option<ConverseUsage>,
}

/// Reads one ConverseStream event (`name`: its `:event-type`).
pub(super) fn converse_event(name: &[u8], data: &[u8], facts: &mut StreamFacts) {
    match name {
        b"contentBlockDelta" => {
            if let Ok(ev) = serde_json::from_slice::<ContentBlockDelta<'_>>(data) {
                let d = &ev.delta;
                let reasoning = d.reasoning.as_ref().and_then(|r| r.text.as_ref());
                let tool = d.tool_use.as_ref().and_then(|t| t.input.as_ref());
                for t in [d.text.as_ref(), reasoning, tool].into_iter().flatten() {
                    facts.text.push_str(t);
                }
            }
        }
        // The stream's last event: usage of the whole response.
        b"metadata" => {
            if let Ok(m) = serde_json::from_slice::<Metadata>(data) {
                if let Some(u) = m.usage {
                    facts.usage = Some(u.normalise());
                }
                facts.finished = true;
            }
        }
        _ => {}
    }
}

#[derive(Deserialize)]
struct Chunk<'a> {
    #[serde(borrow)]
    bytes: Str<'a>,
}

/// One chunk of an InvokeModel stream: `{"bytes": base64 of the model's own event}`. Returns
/// the decoded event, and Bedrock's invocation metrics when the chunk carries them (the
/// stream's last).
pub(super) fn invoke_chunk(data: &[u8]) -> Option<(Vec<u8>, Option<Usage>)> {
    let chunk: Chunk<'_> = serde_json::from_slice(data).ok()?;
    let event = base64::engine::general_purpose::STANDARD
        .decode(chunk.bytes.as_bytes())
        .ok()?;
    let metrics =
        find_key_value::<InvocationMetrics>(&event, &INVOCATION_METRICS).map(|m| m.normalise());
    Some((event, metrics))
}

/// The output text of a decoded InvokeModel chunk of a model that is not Claude (Llama's
/// `generation`), for an estimate if the stream ends without its metrics.
pub(super) fn other_model_text(event: &[u8], facts: &mut StreamFacts) {
    #[derive(Deserialize)]
    struct Llama<'a> {
        #[serde(borrow, default)]
        generation: Option<Str<'a>>,
    }
    if let Ok(l) = serde_json::from_slice::<Llama<'_>>(event)
        && let Some(g) = l.generation
    {
        facts.text.push_str(&g);
    }
}
