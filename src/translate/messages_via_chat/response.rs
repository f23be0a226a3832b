//! OpenAI chat completions, chunks and errors as Anthropic Messages.
//!
//! Usage: `input_tokens` = `prompt_tokens - cached_tokens` (Anthropic's input excludes cache
//! reads), `cache_read_input_tokens` = `cached_tokens`, `output_tokens` =
//! `completion_tokens`. Finish reasons: `stop` -> `end_turn`, `length` -> `max_tokens`,
//! `tool_calls` -> `tool_use`, `content_filter` -> `refusal`.

use serde_json::{Value, json};

/// The Messages response for a chat completion body.
pub fn chat_to_message(body: &[u8]) -> Result<Vec<u8>, String> {
    let c: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let choice = &c["choices"][0];
    let msg = &choice["message"];
    let mut content = Vec::new();
    if let Some(t) = msg
        .get("content")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
    {
        content.push(json!({"type": "text", "text": t}));
    }
    for call in msg
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        content.push(tool_use(call));
    }
    let out = json!({
        "id": c.get("id").cloned().unwrap_or(Value::Null),
        "type": "message",
        "role": "assistant",
        "model": c.get("model").cloned().unwrap_or(Value::Null),
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": null,
        "usage": usage(c.get("usage").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// An Anthropic error body for an OpenAI error `body` answered with `status`.
pub fn error_to_anthropic(status: u16, body: &[u8], fallback: &str) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = v["error"]["message"]
        .as_str()
        .filter(|m| !m.is_empty())
        .unwrap_or(if fallback.is_empty() {
            "the provider answered with an error"
        } else {
            fallback
        });
    // Anthropic's error types, by status (the SDK raises by status; the type is for people).
    let kind = match status {
        400 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 | 503 => "overloaded_error",
        _ => "api_error",
    };
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap_or_default()
}

fn tool_use(call: &Value) -> Value {
    let f = &call["function"];
    let args = f["arguments"].as_str().unwrap_or("{}");
    let input: Value = serde_json::from_str(args).unwrap_or_else(|_| json!({}));
    json!({"type": "tool_use", "id": call.get("id").cloned().unwrap_or(Value::Null),
           "name": f.get("name").cloned().unwrap_or(Value::Null), "input": input})
}

fn stop_reason(finish: Option<&Value>) -> Value {
    match finish.and_then(Value::as_str) {
        Some("length") => "max_tokens".into(),
        Some("tool_calls" | "function_call") => "tool_use".into(),
        Some("content_filter") => "refusal".into(),
        Some(_) => "end_turn".into(),
        None => Value::Null,
    }
}

/// Anthropic usage from OpenAI usage (see the module's mapping).
fn usage(u: &Value) -> Value {
    let prompt = u["prompt_tokens"].as_u64().unwrap_or(0);
    let cached = u["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap_or(0);
    json!({
        "input_tokens": prompt.saturating_sub(cached),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
        "output_tokens": u["completion_tokens"].as_u64().unwrap_or(0),
    })
}

/// What kind of content block is open.
#[derive(PartialEq)]
enum Open {
    None,
    Text,
    /// A tool call, by its chat index.
    Tool(u64),
}

/// Chat completion chunks as a Messages event stream, chunk by chunk.
pub struct ChatToMessagesStream {
    started: bool,
    open: Open,
    /// Index of the next content block.
    next_block: u64,
    stop: Value,
    usage: Value,
    out: Vec<u8>,
    done: bool,
}

impl Default for ChatToMessagesStream {
    fn default() -> Self {
        ChatToMessagesStream::new()
    }
}

impl ChatToMessagesStream {
    /// A translator.
    pub fn new() -> ChatToMessagesStream {
        ChatToMessagesStream {
            started: false,
            open: Open::None,
            next_block: 0,
            stop: Value::Null,
            usage: Value::Null,
            out: Vec::new(),
            done: false,
        }
    }

    /// The translated bytes so far.
    pub fn take_output(&mut self) -> bytes::Bytes {
        bytes::Bytes::from(std::mem::take(&mut self.out))
    }

    /// An event too long to translate passed: the stream ends with an error event.
    pub fn lost_event(&mut self) {
        if !self.done {
            self.error(
                "overloaded_error",
                "an event of the provider's stream was too large to translate",
            );
        }
    }

    fn emit(&mut self, name: &str, v: &Value) {
        self.out.extend_from_slice(b"event: ");
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\ndata: ");
        self.out
            .extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
        self.out.extend_from_slice(b"\n\n");
    }

    fn error(&mut self, kind: &str, message: &str) {
        self.emit(
            "error",
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
        self.done = true;
    }

    fn close_block(&mut self) {
        if self.open != Open::None {
            let index = self.next_block - 1;
            self.emit(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            );
            self.open = Open::None;
        }
    }

    fn open_block(&mut self, open: Open, block: Value) {
        self.close_block();
        let index = self.next_block;
        self.next_block += 1;
        self.emit(
            "content_block_start",
            &json!({"type": "content_block_start", "index": index, "content_block": block}),
        );
        self.open = open;
    }

    /// Translates one upstream event (its `data:` payload).
    pub fn event(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        if data == b"[DONE]" {
            self.close_block();
            let stop = std::mem::take(&mut self.stop);
            let usage = usage(&self.usage);
            self.emit("message_delta", &json!({"type": "message_delta",
                "delta": {"stop_reason": if stop.is_null() { Value::from("end_turn") } else { stop }, "stop_sequence": null},
                "usage": usage}));
            self.emit("message_stop", &json!({"type": "message_stop"}));
            self.done = true;
            return;
        }
        let Ok(c) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(e) = c.get("error") {
            let message = e["message"]
                .as_str()
                .unwrap_or("the provider's stream failed")
                .to_string();
            self.error("api_error", &message);
            return;
        }
        if !self.started {
            self.started = true;
            self.emit("message_start", &json!({"type": "message_start", "message": {
                "id": c.get("id").cloned().unwrap_or(Value::Null), "type": "message", "role": "assistant",
                "model": c.get("model").cloned().unwrap_or(Value::Null), "content": [],
                "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}));
        }
        if c.get("usage").is_some_and(|u| !u.is_null()) {
            self.usage = c["usage"].clone();
        }
        let Some(choice) = c["choices"].get(0) else {
            return;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta
            .get("content")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        {
            if self.open != Open::Text {
                self.open_block(Open::Text, json!({"type": "text", "text": ""}));
            }
            let index = self.next_block - 1;
            self.emit(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": index,
                "delta": {"type": "text_delta", "text": t}}),
            );
        }
        for call in delta
            .get("tool_calls")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let k = call["index"].as_u64().unwrap_or(0);
            if self.open != Open::Tool(k) {
                self.open_block(Open::Tool(k), json!({"type": "tool_use",
                    "id": call.get("id").cloned().unwrap_or(Value::Null),
                    "name": call["function"].get("name").cloned().unwrap_or(Value::Null), "input": {}}));
            }
            if let Some(args) = call["function"]["arguments"]
                .as_str()
                .filter(|a| !a.is_empty())
            {
                let index = self.next_block - 1;
                self.emit(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index,
                    "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(f) = choice.get("finish_reason").filter(|f| !f.is_null()) {
            self.stop = stop_reason(Some(f));
        }
    }
}
