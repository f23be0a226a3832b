//! Anthropic Messages responses, streams and errors as OpenAI chat completions.
//!
//! Usage: `prompt_tokens` = `input_tokens + cache_read_input_tokens +
//! cache_creation_input_tokens` (OpenAI's prompt tokens include cached ones), `cached_tokens` =
//! the cache reads, `completion_tokens` = `output_tokens`. Stop reasons: `end_turn` and
//! `stop_sequence` -> `stop`, `max_tokens` -> `length`, `tool_use` -> `tool_calls`, `refusal`
//! -> `content_filter`. Thinking blocks are not part of the chat completions format and are
//! left out (their tokens are in `completion_tokens`, as OpenAI counts reasoning).

use serde_json::{Value, json};

/// The chat completion for a Messages response body.
pub fn message_to_chat(body: &[u8]) -> Result<Vec<u8>, String> {
    let m: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in m
        .get("content")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        match block.get("type").and_then(Value::as_str) {
            Some("text") => text.push_str(block.get("text").and_then(Value::as_str).unwrap_or("")),
            Some("tool_use") => calls.push(json!({
                "id": block.get("id").cloned().unwrap_or(Value::Null),
                "type": "function",
                "function": {
                    "name": block.get("name").cloned().unwrap_or(Value::Null),
                    "arguments": block.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                },
            })),
            _ => {}
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
        "id": m.get("id").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now(),
        "model": m.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish_reason(m.get("stop_reason")),
        }],
        "usage": usage(m.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// An OpenAI error body for an Anthropic error `body`; `fallback` when it says nothing.
pub fn error_to_openai(body: &[u8], fallback: &str) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let e = v.get("error").unwrap_or(&Value::Null);
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(if fallback.is_empty() {
            "the provider answered with an error"
        } else {
            fallback
        });
    let kind = e.get("type").and_then(Value::as_str).unwrap_or("api_error");
    serde_json::to_vec(&json!({
        "error": {"message": message, "type": kind, "param": null, "code": null}
    }))
    .unwrap_or_default()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn finish_reason(stop: Option<&Value>) -> Value {
    match stop.and_then(Value::as_str) {
        Some("end_turn" | "stop_sequence" | "pause_turn") => "stop".into(),
        Some("max_tokens" | "model_context_window_exceeded") => "length".into(),
        Some("tool_use") => "tool_calls".into(),
        Some("refusal") => "content_filter".into(),
        Some(_) => "stop".into(),
        None => Value::Null,
    }
}

fn count(u: &Value, k: &str) -> u64 {
    u.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI usage from Anthropic usage (see the module's mapping).
fn usage(u: &Value) -> Value {
    let cached = count(u, "cache_read_input_tokens");
    let prompt = count(u, "input_tokens") + cached + count(u, "cache_creation_input_tokens");
    let completion = count(u, "output_tokens");
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    })
}

/// A Messages event stream as chat completion chunks, event by event.
pub struct MessagesToChatStream {
    include_usage: bool,
    id: Value,
    model: Value,
    created: i64,
    /// Usage as the stream reports it: input at `message_start`, output growing in
    /// `message_delta` (kept as Anthropic's fields, mapped at the end).
    usage: serde_json::Map<String, Value>,
    /// Content block index -> tool call index, for tool blocks.
    tools: Vec<(u64, usize)>,
    /// The stop reason of `message_delta`, sent with `message_stop`: a client that stops
    /// reading at `finish_reason` (many do) then leaves only after the provider's terminal
    /// event has passed the gateway, and the stream counts as complete.
    finish: Value,
    out: Vec<u8>,
    done: bool,
    lost: bool,
}

impl MessagesToChatStream {
    /// A translator; `include_usage`: send the final usage chunk (`choices: []`).
    pub fn new(include_usage: bool) -> MessagesToChatStream {
        MessagesToChatStream {
            include_usage,
            id: Value::Null,
            model: Value::Null,
            created: now(),
            usage: serde_json::Map::new(),
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

    fn merge_usage(&mut self, u: Option<&Value>) {
        if let Some(Value::Object(u)) = u {
            for (k, v) in u {
                if v.is_u64() {
                    self.usage.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Translates one upstream event (`event:` name and `data:` payload).
    pub fn event(&mut self, _name: Option<&[u8]>, data: &[u8]) {
        if self.done {
            return;
        }
        let Ok(ev) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        match ev.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let m = ev.get("message").unwrap_or(&Value::Null);
                self.id = m.get("id").cloned().unwrap_or(Value::Null);
                self.model = m.get("model").cloned().unwrap_or(Value::Null);
                self.merge_usage(m.get("usage"));
                self.delta(json!({"role": "assistant", "content": ""}), Value::Null);
            }
            "content_block_start" => {
                let block = ev.get("content_block").unwrap_or(&Value::Null);
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                    let n = self.tools.len();
                    self.tools.push((index, n));
                    self.delta(
                        json!({"tool_calls": [{
                            "index": n,
                            "id": block.get("id").cloned().unwrap_or(Value::Null),
                            "type": "function",
                            "function": {"name": block.get("name").cloned().unwrap_or(Value::Null), "arguments": ""},
                        }]}),
                        Value::Null,
                    );
                }
            }
            "content_block_delta" => {
                let d = ev.get("delta").unwrap_or(&Value::Null);
                match d.get("type").and_then(Value::as_str) {
                    Some("text_delta") => {
                        let t = d.get("text").cloned().unwrap_or(Value::from(""));
                        self.delta(json!({"content": t}), Value::Null);
                    }
                    Some("input_json_delta") => {
                        let index = ev.get("index").and_then(Value::as_u64).unwrap_or(0);
                        let Some(&(_, n)) = self.tools.iter().find(|(b, _)| *b == index) else {
                            return;
                        };
                        let part = d.get("partial_json").cloned().unwrap_or(Value::from(""));
                        self.delta(
                            json!({"tool_calls": [{"index": n, "function": {"arguments": part}}]}),
                            Value::Null,
                        );
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                self.merge_usage(ev.get("usage"));
                let stop = ev.get("delta").and_then(|d| d.get("stop_reason"));
                if stop.is_some_and(|s| !s.is_null()) {
                    self.finish = finish_reason(stop);
                }
            }
            "message_stop" => {
                let finish = std::mem::take(&mut self.finish);
                self.delta(
                    json!({}),
                    if finish.is_null() {
                        "stop".into()
                    } else {
                        finish
                    },
                );
                if self.include_usage {
                    let u = usage(&Value::Object(self.usage.clone()));
                    self.chunk(json!([]), Some(u));
                }
                self.out.extend_from_slice(b"data: [DONE]\n\n");
                self.done = true;
            }
            "error" => {
                let e = ev.get("error").unwrap_or(&Value::Null);
                let body = json!({"error": {
                    "message": e.get("message").cloned().unwrap_or(Value::from("the provider's stream failed")),
                    "type": e.get("type").cloned().unwrap_or(Value::from("api_error")),
                    "param": null, "code": null,
                }});
                self.data(&body);
                self.done = true;
            }
            _ => {}
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
