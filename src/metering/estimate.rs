//! Token estimates for responses that carry no usage, with a real tokenizer (tiktoken's
//! `o200k_base`, compiled into the binary). No offline tokenizer exists for Claude models, so
//! they are estimated with the same encoding; such requests are marked `estimated`.
//!
//! The encoder is built on first use (100-200 ms, ~50 MB), on a blocking thread (settlement
//! runs estimates through `spawn_blocking`): a gateway whose providers always report usage never
//! pays for it.

use std::sync::OnceLock;

use serde_json::Value;
use tiktoken_rs::CoreBPE;

static ENCODER: OnceLock<Option<CoreBPE>> = OnceLock::new();

fn encoder() -> Option<&'static CoreBPE> {
    ENCODER
        .get_or_init(|| tiktoken_rs::o200k_base().ok())
        .as_ref()
}

/// Tokens in `text`; a byte-length approximation only if the encoder failed to build.
pub fn count_tokens(text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    match encoder() {
        Some(bpe) => bpe.encode_ordinary(text).len() as u64,
        None => (text.len() as u64).div_ceil(4),
    }
}

/// Estimated input tokens of a request body in OpenAI or Anthropic format: the text of every
/// message, prompt, input, system prompt and instructions, plus OpenAI's per-message framing
/// (3 tokens a message and 3 to prime the reply).
pub fn estimate_request_tokens(body: &[u8]) -> u64 {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return 0;
    };
    let mut text = String::new();
    let mut messages = 0u64;
    if let Some(obj) = v.as_object() {
        // OpenAI's and Anthropic's fields, then Gemini's (`content`: embedContent).
        for key in [
            "messages",
            "prompt",
            "input",
            "system",
            "instructions",
            "contents",
            "content",
            "requests",
            "systemInstruction",
        ] {
            if let Some(field) = obj.get(key) {
                if key == "messages" {
                    messages += field.as_array().map_or(0, |a| a.len() as u64);
                }
                collect_text(field, &mut text);
            }
        }
    }
    let framing = if messages > 0 { 3 * messages + 3 } else { 0 };
    count_tokens(&text) + framing
}

/// The output text of a whole response body in any supported format (chat `choices`, legacy
/// `text`, Anthropic `content` blocks, Responses `output` items), for estimating output tokens.
pub fn response_text(body: &[u8]) -> String {
    fn walk(v: &Value, out: &mut String) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            Value::Object(map) => {
                for (k, val) in map {
                    match (k.as_str(), val) {
                        (
                            "content" | "text" | "arguments" | "refusal" | "reasoning_content"
                            | "thinking",
                            Value::String(s),
                        ) => {
                            if !out.is_empty() {
                                out.push('\n');
                            }
                            out.push_str(s);
                        }
                        ("usage" | "logprobs" | "prompt_logprobs", _) => {}
                        _ => walk(val, out),
                    }
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        for key in ["choices", "content", "output", "message"] {
            if let Some(field) = v.get(key) {
                walk(field, &mut out);
            }
        }
    }
    out
}

/// Appends every string under `v` that is message text (strings in arrays, `content`, `text`,
/// `input`, `arguments`), skipping ids, roles and types.
pub fn collect_text(v: &Value, out: &mut String) {
    match v {
        Value::String(s) => {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push_str(s);
        }
        Value::Array(items) => items.iter().for_each(|i| collect_text(i, out)),
        Value::Object(map) => {
            for (k, val) in map {
                if matches!(
                    k.as_str(),
                    "content" | "text" | "input" | "arguments" | "thinking" | "prompt" | "refusal"
                ) {
                    collect_text(val, out);
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_with_the_real_encoding() {
        // "hello world" is two tokens in o200k_base.
        assert_eq!(count_tokens("hello world"), 2);
        assert_eq!(count_tokens(""), 0);
    }

    #[test]
    fn estimates_chat_and_messages_requests() {
        let chat = br#"{"model":"m","messages":[{"role":"user","content":"hello world"}]}"#;
        assert_eq!(estimate_request_tokens(chat), 2 + 3 + 3);
        let parts = br#"{"model":"m","system":"hello world","messages":[{"role":"user","content":[{"type":"text","text":"hello world"}]}]}"#;
        assert!(estimate_request_tokens(parts) >= 4 + 6);
        assert_eq!(estimate_request_tokens(b"not json"), 0);
    }

    #[test]
    fn response_text_reads_every_format() {
        let chat = br#"{"choices":[{"message":{"role":"assistant","content":"hello world"}}],"usage":null}"#;
        assert_eq!(response_text(chat), "hello world");
        let anthropic = br#"{"content":[{"type":"text","text":"hello"},{"type":"tool_use","input":{"q":"x"}}]}"#;
        assert_eq!(response_text(anthropic), "hello");
        let responses =
            br#"{"output":[{"type":"message","content":[{"type":"output_text","text":"hi"}]}]}"#;
        assert_eq!(response_text(responses), "hi");
    }
}
