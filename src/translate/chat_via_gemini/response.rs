//! Gemini `generateContent` responses, `streamGenerateContent?alt=sse` streams and Google
//! errors as OpenAI chat completions.
//!
//! Usage (the gateway meters the same numbers): `prompt_tokens` = `promptTokenCount +
//! toolUsePromptTokenCount` (the prompt count includes cached content, as OpenAI's does),
//! `cached_tokens` = `cachedContentTokenCount`, `completion_tokens` = `candidatesTokenCount +
//! thoughtsTokenCount` (thoughts are billed as output, as OpenAI counts reasoning), with
//! `reasoning_tokens` = thoughts. Finish reasons: `STOP` -> `stop` (`tool_calls` when the answer
//! calls functions), `MAX_TOKENS` -> `length`, `SAFETY`, `RECITATION`, `BLOCKLIST`,
//! `PROHIBITED_CONTENT`, `SPII`, `IMAGE_SAFETY` (and a prompt blocked by `promptFeedback`) ->
//! `content_filter`, anything else -> `stop`. Only the first candidate is translated (the
//! request asks for one). Thought parts (`thought: true`) are not part of the chat completions
//! format and are left out. A `functionCall` without Gemini's own `id` gets `call_{n}`; its
//! `thoughtSignature` is appended to the id after `~ts~` and restored from it when the client
//! sends the call back (Gemini 3 requires the signatures of earlier calls).

use serde_json::{Value, json};

/// The chat completion for a `generateContent` response body.
pub fn gemini_to_chat(body: &[u8]) -> Result<Vec<u8>, String> {
    let r: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let cand = r.pointer("/candidates/0").unwrap_or(&Value::Null);
    let mut text = String::new();
    let mut calls = Vec::new();
    for p in parts(cand) {
        if let Some(t) = p.get("text").and_then(Value::as_str) {
            text.push_str(t);
        } else if p.get("functionCall").is_some() {
            calls.push(tool_call(p, calls.len(), false));
        }
    }
    let mut message = json!({
        "role": "assistant",
        "content": if text.is_empty() && !calls.is_empty() { Value::Null } else { Value::from(text) },
        "refusal": null,
    });
    let finish = finish_reason(&r, cand, !calls.is_empty());
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    let out = json!({
        "id": r.get("responseId").cloned().unwrap_or(Value::Null),
        "object": "chat.completion",
        "created": now(),
        "model": r.get("modelVersion").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish,
        }],
        "usage": usage(r.get("usageMetadata").unwrap_or(&Value::Null)),
    });
    serde_json::to_vec(&out).map_err(|e| e.to_string())
}

/// An OpenAI error body for a Google error `body` (`{"error": {"code", "message",
/// "status"}}`); `fallback` when it says nothing. The status name becomes the `code`.
pub fn error_to_openai(body: &[u8], fallback: &str) -> Vec<u8> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    // A stream's error may come as a one-element array.
    let e = v
        .get("error")
        .or_else(|| v.pointer("/0/error"))
        .unwrap_or(&Value::Null);
    serde_json::to_vec(&error_object(e, fallback)).unwrap_or_default()
}

fn error_object(e: &Value, fallback: &str) -> Value {
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(if fallback.is_empty() {
            "the provider answered with an error"
        } else {
            fallback
        });
    let status = e.get("status").and_then(Value::as_str);
    let kind = match status {
        Some("INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "OUT_OF_RANGE" | "NOT_FOUND") => {
            "invalid_request_error"
        }
        Some("UNAUTHENTICATED") => "authentication_error",
        Some("PERMISSION_DENIED") => "permission_error",
        Some("RESOURCE_EXHAUSTED") => "rate_limit_error",
        _ => "api_error",
    };
    json!({"error": {"message": message, "type": kind, "param": null, "code": status}})
}

/// Between a tool call's id and the `thoughtSignature` of its `functionCall`.
pub const SIGNATURE: &str = "~ts~";

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The parts of a candidate's content, thoughts left out.
fn parts(cand: &Value) -> impl Iterator<Item = &Value> {
    cand.pointer("/content/parts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p.get("thought").and_then(Value::as_bool) != Some(true))
}

/// A `functionCall` part as an OpenAI tool call, the `n`th of the answer; `delta`: with
/// `index`. The part's `thoughtSignature` (Gemini 3 refuses a later turn whose function call
/// lacks it) rides in the id after [`SIGNATURE`]: the client sends the id back with the call.
fn tool_call(part: &Value, n: usize, delta: bool) -> Value {
    let f = &part["functionCall"];
    let mut id = f
        .get("id")
        .and_then(Value::as_str)
        .map_or_else(|| format!("call_{n}"), str::to_string);
    if let Some(sig) = part.get("thoughtSignature").and_then(Value::as_str) {
        id.push_str(SIGNATURE);
        id.push_str(sig);
    }
    let args = f
        .get("args")
        .map_or_else(|| "{}".to_string(), Value::to_string);
    let mut c = json!({
        "id": id,
        "type": "function",
        "function": {"name": f.get("name").cloned().unwrap_or(Value::Null), "arguments": args},
    });
    if delta {
        c["index"] = n.into();
    }
    c
}

/// The finish reason of `cand` (null while a stream goes on); `calls`: it called functions.
fn finish_reason(r: &Value, cand: &Value, calls: bool) -> Value {
    if cand.is_null() && r.pointer("/promptFeedback/blockReason").is_some() {
        return "content_filter".into();
    }
    match cand.get("finishReason").and_then(Value::as_str) {
        None => Value::Null,
        Some("STOP") if calls => "tool_calls".into(),
        Some("MAX_TOKENS") => "length".into(),
        Some(
            "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY",
        ) => "content_filter".into(),
        Some(_) => "stop".into(),
    }
}

fn count(u: &Value, k: &str) -> u64 {
    u.get(k).and_then(Value::as_u64).unwrap_or(0)
}

/// OpenAI usage from `usageMetadata` (see the module's mapping).
fn usage(u: &Value) -> Value {
    let prompt = count(u, "promptTokenCount") + count(u, "toolUsePromptTokenCount");
    let thoughts = count(u, "thoughtsTokenCount");
    let completion = count(u, "candidatesTokenCount") + thoughts;
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": count(u, "cachedContentTokenCount")},
        "completion_tokens_details": {"reasoning_tokens": thoughts},
    })
}

/// A `streamGenerateContent?alt=sse` stream as chat completion chunks, chunk by chunk.
pub struct GeminiToChatStream {
    include_usage: bool,
    id: Value,
    model: Value,
    created: i64,
    /// The latest `usageMetadata` (Gemini repeats it, cumulative, in every chunk).
    usage: Value,
    /// Tool calls sent so far.
    calls: usize,
    started: bool,
    out: Vec<u8>,
    done: bool,
    lost: bool,
}

impl GeminiToChatStream {
    /// A translator; `include_usage`: send the final usage chunk (`choices: []`).
    pub fn new(include_usage: bool) -> GeminiToChatStream {
        GeminiToChatStream {
            include_usage,
            id: Value::Null,
            model: Value::Null,
            created: now(),
            usage: Value::Null,
            calls: 0,
            started: false,
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

    /// Translates one upstream chunk (an SSE event's `data:`). The chunk with a finish reason
    /// is Gemini's last: the finish chunk, the usage chunk and `[DONE]` leave with it, so a
    /// client that stops reading at `finish_reason` leaves after the whole upstream stream.
    pub fn event(&mut self, data: &[u8]) {
        if self.done {
            return;
        }
        let Ok(r) = serde_json::from_slice::<Value>(data) else {
            return;
        };
        if let Some(e) = r.get("error") {
            let body = error_object(e, "the provider's stream failed");
            self.data(&body);
            self.done = true;
            return;
        }
        if !self.started {
            self.started = true;
            self.id = r.get("responseId").cloned().unwrap_or(Value::Null);
            self.model = r.get("modelVersion").cloned().unwrap_or(Value::Null);
            self.delta(json!({"role": "assistant", "content": ""}), Value::Null);
        }
        if let Some(u) = r.get("usageMetadata").filter(|u| u.is_object()) {
            self.usage = u.clone();
        }
        let cand = r.pointer("/candidates/0").unwrap_or(&Value::Null);
        let mut text = String::new();
        let mut calls = Vec::new();
        for p in parts(cand) {
            if let Some(t) = p.get("text").and_then(Value::as_str) {
                text.push_str(t);
            } else if p.get("functionCall").is_some() {
                calls.push(tool_call(p, self.calls + calls.len(), true));
            }
        }
        if !text.is_empty() {
            self.delta(json!({ "content": text }), Value::Null);
        }
        if !calls.is_empty() {
            self.calls += calls.len();
            self.delta(json!({ "tool_calls": calls }), Value::Null);
        }
        let finish = finish_reason(&r, cand, self.calls > 0);
        if !finish.is_null() {
            self.delta(json!({}), finish);
            if self.include_usage {
                let u = usage(&self.usage);
                self.chunk(json!([]), Some(u));
            }
            self.out.extend_from_slice(b"data: [DONE]\n\n");
            self.done = true;
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
