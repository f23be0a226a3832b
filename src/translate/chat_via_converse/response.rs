//! Bedrock `Converse` responses, `ConverseStream` event streams and AWS errors as OpenAI chat
//! completions.
//!
//! Usage (the gateway meters the same numbers): `prompt_tokens` = `inputTokens +
//! cacheReadInputTokens + cacheWriteInputTokens` (Converse's input excludes the cache, as
//! Anthropic's does), `cached_tokens` = the cache reads, `completion_tokens` = `outputTokens`.
//! Stop reasons: `end_turn` and `stop_sequence` -> `stop`, `max_tokens` -> `length`, `tool_use`
//! -> `tool_calls`, `guardrail_intervened` and `content_filtered` -> `content_filter`. Reasoning
//! blocks are not part of the chat completions format and are left out. Converse answers carry
//! neither an id nor the model: the id is `chatcmpl-` and the time in nanoseconds, the model
//! null.

use serde_json::{Value, json};

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn id() -> Value {
    let nanos = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    Value::from(format!("chatcmpl-bedrock-{nanos:x}"))
}

/// The chat completion for a `Converse` response body; `model`: the client's (Converse's
/// answer names none).
pub fn converse_to_chat(body: &[u8], model: &str) -> Result<Vec<u8>, String> {
    let r: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for b in r
        .pointer("/output/message/content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(t) = b.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if let Some(u) = b.get("toolUse") {
            calls.push(json!({
                "id": u.get("toolUseId").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": u.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": u.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            }));
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::from(text) },
        "refusal": null,
    });
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": id(),
        "object": "chat.completion",
        "created": now(),
        "model": model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(r.get("stopReason")),
        }],
        "usage": usage(r.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// An OpenAI error body for an AWS error `body` (`{"message": ...}`) of HTTP `status`;
/// `fallback` when it says nothing. The error's name is in a header the body does not carry:
/// the type follows the status (AWS's statuses are one per error class).
pub fn error_to_openai(status: u16, body: &[u8], fallback: &str) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v
        .get("message")
        .or_else(|| v.get("Message"))
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(if fallback.is_empty() {
            "the provider answered with an error"
        } else {
            fallback
        });
    let kind = match status {
        400 | 404 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        429 => "rate_limit_error",
        _ => "api_error",
    };
    serde_json::to_vec(&json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    }))
    .unwrap_or_default()
}

fn finish_reason(stop: Option<&Value>) -> Value {
    match stop.and_then(Value::as_str) {
        Some("end_turn" | "stop_sequence") => "stop".into(),
        Some("max_tokens" | "model_context_window_exceeded") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("guardrail_intervened" | "content_filtered") => "content_filter".into(),
        Some(_) => "stop".into(),
        None => Value::Null,
    }
}

fn count(u: &Value, k: &str) -> u64 {
    u.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI usage from Converse usage (see the module's mapping).
fn usage(u: &Value) -> Value {
    let cached = count(u, "cacheReadInputTokens");
    let prompt = count(u, "inputTokens") + cached + count(u, "cacheWriteInputTokens");
    let completion = count(u, "outputTokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// A `ConverseStream` event stream as chat completion chunks, message by message.
pub struct ConverseToChatStream {
    include_usage: bool,
    id: Value,
    created: i64,
    /// The client's model (Converse's stream names none).
    model: Value,
    /// Content block index -> tool call index, for tool blocks.
    tools: Vec<(u64, usize)>,
    /// The stop reason of `messageStop`, sent with `metadata` (Converse's last event, with
    /// the usage): a client that stops reading at `finish_reason` then leaves only after it.
    finish: Value,
    out: Vec<u8>,
    done: bool,
    lost: bool,
}

impl ConverseToChatStream {
    /// A translator; `include_usage`: send the final usage chunk (`choices: []`); `model`:
    /// the client's, named in each chunk.
    pub fn new(include_usage: bool, model: &str) -> ConverseToChatStream {
        ConverseToChatStream {
            include_usage,
            id: id(),
            created: now(),
            model: Value::from(model),
            tools: Vec::new(),
            finish: Value::Null,
            out: Vec::new(),
            done: false,
            lost: false,
        }
    }

    /// An event too long to translate passed: the stream is no longer whole.
    pub fn lost_event(&mut self) {
        self.lost = true;
    }

    /// The event stream is corrupt (a CRC failed): nothing more can be read; the client's
    /// stream ends with an error.
    pub fn corrupt(&mut self) {
        if !self.done {
            self.data(&json!({"error": {
                "message": "the provider's event stream is corrupt",
                "type": "api_error", "param": null, "code": null,
            }}));
            self.done = true;
        }
    }

    /// The translated bytes so far.
    pub fn take_output(&mut self) -> bytes::Bytes {
        bytes::Bytes::from(std::mem::take(&mut self.out))
    }

    fn chunk(&mut self, choices: Value, usage: Option<Value>) {
        let mut c = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            c["usage"] = u;
        }
        self.data(&c);
    }

    fn data(&mut self, v: &Value) {
        self.out.extend_from_slice(b"data: ");
        self.out
            .extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
        self.out.extend_from_slice(b"\n\n");
    }

    fn delta(&mut self, delta: Value, finish: Value) {
        self.chunk(
            json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]),
            None,
        );
    }

    fn end(&mut self, usage: &Value) {
        let finish = std::mem::take(&mut self.finish);
        let finish = if finish.is_null() {
            "stop".into()
        } else {
            finish
        };
        self.delta(json!({}), finish);
        if self.include_usage {
            self.chunk(json!([]), Some(self::usage(usage)));
        }
        self.out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    /// Translates one event-stream message: its name (`:event-type`, or the exception's) and
    /// JSON payload.
    pub fn event(&mut self, name: Option<&[u8]>, data: &[u8]) {
        if self.done {
            return;
        }
        let ev: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
        match name.unwrap_or_default() {
            b"messageStart" => {
                self.delta(json!({"role": "assistant", "content": ""}), Value::Null);
            }
            b"contentBlockStart" => {
                if let Some(u) = ev.pointer("/start/toolUse") {
                    let index = ev
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    let n = self.tools.len();
                    self.tools.push((index, n));
                    self.delta(
                        json!({"tool_calls": [{
                            "index": n,
                            "id": u.get("toolUseId").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": u.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        }]}),
                        Value::Null,
                    );
                }
            }
            b"contentBlockDelta" => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                if let Some(t) = d.get("text").and_then(Value::as_str) {
                    self.delta(json!({ "content": t }), Value::Null);
                } else if let Some(part) = d.pointer("/toolUse/input").and_then(Value::as_str) {
                    let index = ev
                        .get("contentBlockIndex")
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    if let Some(&(_, n)) = self.tools.iter().find(|(b, _)| *b == index) {
                        self.delta(
                            json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                            Value::Null,
                        );
                    }
                }
            }
            b"contentBlockStop" => {}
            b"messageStop" => {
                self.finish = finish_reason(ev.get("stopReason"));
            }
            b"metadata" => {
                let u = ev.get("usage").cloned().unwrap_or(Value::Null);
                self.end(&u);
            }
            other => {
                // An exception (`throttlingException`, `modelStreamErrorException`, ...).
                let message = ev
                    .get("message")
                    .or_else(|| ev.get("Message"))
                    .and_then(Value::as_str)
                    .unwrap_or("the provider's stream failed");
                let kind = if other == b"throttlingException" {
                    "rate_limit_error"
                } else {
                    "api_error"
                };
                let code = String::from_utf8_lossy(other).into_owned();
                self.data(&json!({"error": {
                    "message": message, "type": kind, "param": null, "code": code,
                }}));
                self.done = true;
            }
        }
        if self.lost && !self.done {
            self.lost = false;
            self.data(&json!({"error": {
                "message": "an event of the provider's stream was too large to translate",
                "type": "api_error", "param": null, "code": null,
            }}));
            self.done = true;
        }
    }
}
