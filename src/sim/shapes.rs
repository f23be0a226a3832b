//! Response bodies and stream events in the providers' real shapes.

use base64::Engine;
use http::HeaderMap;
use serde_json::{Value, json};

use crate::metering::estimate::collect_text;

const WORDS: &[&str] = &[
    "The", "gateway", "meters", "every", "token", "and", "counts", "the", "cost", "of", "each",
    "request", "for", "its", "team", "exactly",
];

/// What the simulator answers a request with.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Model echoed back.
    pub model: String,
    /// Input tokens (deterministic in the message text).
    pub prompt_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Input tokens reported as read from the cache.
    pub cached_tokens: u64,
    /// Output tokens reported as reasoning.
    pub reasoning_tokens: u64,
    /// Omit usage.
    pub no_usage: bool,
}

impl SimRequest {
    /// Reads a request body and the `x-sim-*` headers; output tokens, reasoning included, are
    /// at most `max_output`, and so are the cached tokens added to the prompt.
    pub fn from_body(v: &Value, h: &HeaderMap, default_output: u64, max_output: u64) -> SimRequest {
        let mut text = String::new();
        let mut messages = 0u64;
        for key in [
            "messages",
            "prompt",
            "input",
            "system",
            "instructions",
            "contents",
            "requests",
        ] {
            if let Some(f) = v.get(key) {
                if key == "messages" {
                    messages += f.as_array().map_or(0, |a| a.len() as u64);
                }
                collect_text(f, &mut text);
            }
        }
        let prompt_tokens = (text.len() as u64).div_ceil(4) + 3 * messages + 3;
        let output_tokens = ["max_tokens", "max_completion_tokens", "max_output_tokens"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_u64))
            .or_else(|| v.pointer("/generationConfig/maxOutputTokens")?.as_u64())
            .or_else(|| v.pointer("/inferenceConfig/maxTokens")?.as_u64())
            .unwrap_or(default_output)
            .clamp(1, max_output.max(1));
        let num = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
                .min(max_output)
        };
        let reasoning = num("x-sim-reasoning-tokens");
        SimRequest {
            model: v
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or("sim")
                .to_string(),
            prompt_tokens: prompt_tokens.saturating_add(num("x-sim-cached-tokens")),
            output_tokens: output_tokens
                .saturating_add(reasoning)
                .min(max_output.max(1)),
            cached_tokens: num("x-sim-cached-tokens"),
            reasoning_tokens: reasoning.min(max_output.max(1)),
            no_usage: h.contains_key("x-sim-no-usage"),
        }
    }

    pub(super) fn visible_tokens(&self) -> u64 {
        self.output_tokens - self.reasoning_tokens
    }

    pub(super) fn word(i: u64) -> &'static str {
        WORDS[(i as usize) % WORDS.len()]
    }

    pub(super) fn text(&self) -> String {
        (0..self.visible_tokens())
            .map(|i| {
                if i == 0 {
                    Self::word(i).to_string()
                } else {
                    format!(" {}", Self::word(i))
                }
            })
            .collect()
    }

    fn openai_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.prompt_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": self.reasoning_tokens, "audio_tokens": 0,
                "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
            }
        })
    }

    fn anthropic_input(&self) -> u64 {
        self.prompt_tokens - self.cached_tokens
    }
}

fn finish(mut v: Value, sim: &SimRequest) -> String {
    if sim.no_usage
        && let Some(o) = v.as_object_mut()
    {
        o.remove("usage");
    }
    v.to_string()
}

const CREATED: u64 = 1_763_900_000;

/// `POST /v1/chat/completions`
pub fn chat(sim: &SimRequest) -> String {
    finish(
        json!({
            "id": "chatcmpl-sim0001", "object": "chat.completion", "created": CREATED, "model": sim.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": sim.text(), "refusal": null, "annotations": []},
                         "logprobs": null, "finish_reason": "stop"}],
            "usage": sim.openai_usage(), "service_tier": "default", "system_fingerprint": "fp_sim"
        }),
        sim,
    )
}

fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// Streamed chat completion; the usage chunk only when asked for, as OpenAI does.
pub fn chat_stream(sim: &SimRequest, include_usage: bool) -> Vec<String> {
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": "chatcmpl-sim0001", "object": "chat.completion.chunk", "created": CREATED,
            "model": sim.model, "service_tier": "default", "system_fingerprint": "fp_sim",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if include_usage {
            c["usage"] = Value::Null;
        }
        data(&c)
    };
    let mut out = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    for i in 0..sim.visible_tokens() {
        let w = if i == 0 {
            SimRequest::word(i).to_string()
        } else {
            format!(" {}", SimRequest::word(i))
        };
        out.push(chunk(json!({"content": w}), Value::Null));
    }
    out.push(chunk(json!({}), json!("stop")));
    if include_usage && !sim.no_usage {
        out.push(data(
            &json!({"id": "chatcmpl-sim0001", "object": "chat.completion.chunk", "created": CREATED,
            "model": sim.model, "service_tier": "default", "system_fingerprint": "fp_sim",
            "choices": [], "usage": sim.openai_usage()}),
        ));
    }
    out.push("data: [DONE]\n\n".to_string());
    out
}

/// `POST /v1/completions`
pub fn completion(sim: &SimRequest) -> String {
    finish(
        json!({"id": "cmpl-sim0001", "object": "text_completion", "created": CREATED, "model": sim.model,
            "choices": [{"text": sim.text(), "index": 0, "logprobs": null, "finish_reason": "length"}],
            "usage": {"prompt_tokens": sim.prompt_tokens, "completion_tokens": sim.output_tokens,
                      "total_tokens": sim.prompt_tokens + sim.output_tokens}}),
        sim,
    )
}

/// Streamed legacy completion.
pub fn completion_stream(sim: &SimRequest, include_usage: bool) -> Vec<String> {
    let mut out: Vec<String> = (0..sim.visible_tokens())
        .map(|i| {
            let w = if i == 0 { SimRequest::word(i).to_string() } else { format!(" {}", SimRequest::word(i)) };
            let finish = if i + 1 == sim.visible_tokens() { json!("length") } else { Value::Null };
            data(&json!({"id": "cmpl-sim0001", "object": "text_completion", "created": CREATED,
                "choices": [{"text": w, "index": 0, "logprobs": null, "finish_reason": finish}], "model": sim.model}))
        })
        .collect();
    if include_usage && !sim.no_usage {
        out.push(data(&json!({"id": "cmpl-sim0001", "object": "text_completion", "created": CREATED,
            "model": sim.model, "usage": {"prompt_tokens": sim.prompt_tokens, "completion_tokens": sim.output_tokens,
            "total_tokens": sim.prompt_tokens + sim.output_tokens}, "choices": []})));
    }
    out.push("data: [DONE]\n\n".to_string());
    out
}

/// `POST /v1/embeddings`: one 256-dimension vector per input, as floats or base64.
pub fn embeddings(sim: &SimRequest, req: &Value) -> String {
    let inputs = match req.get("input") {
        Some(Value::Array(a)) => a.len().max(1),
        _ => 1,
    };
    let base64 = req.get("encoding_format").and_then(Value::as_str) == Some("base64");
    let vector: Vec<f32> = (0..256).map(|i| ((i % 7) as f32 - 3.0) / 10.0).collect();
    let embedding = if base64 {
        let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
        json!(base64::engine::general_purpose::STANDARD.encode(bytes))
    } else {
        json!(vector)
    };
    let data: Vec<Value> = (0..inputs)
        .map(|i| json!({"object": "embedding", "index": i, "embedding": embedding}))
        .collect();
    let prompt = sim.prompt_tokens.saturating_sub(3);
    finish(
        json!({"object": "list", "data": data, "model": sim.model,
               "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}),
        sim,
    )
}

fn responses_usage(sim: &SimRequest) -> Value {
    json!({"input_tokens": sim.prompt_tokens, "input_tokens_details": {"cached_tokens": sim.cached_tokens},
           "output_tokens": sim.output_tokens, "output_tokens_details": {"reasoning_tokens": sim.reasoning_tokens},
           "total_tokens": sim.prompt_tokens + sim.output_tokens})
}

fn response_object(sim: &SimRequest, status: &str, complete: bool) -> Value {
    let output = if complete {
        json!([{"id": "msg_sim0001", "type": "message", "status": "completed", "role": "assistant",
                "content": [{"type": "output_text", "text": sim.text(), "annotations": [], "logprobs": []}]}])
    } else {
        json!([])
    };
    let mut v = json!({"id": "resp_sim0001", "object": "response", "created_at": CREATED, "status": status,
        "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
        "model": sim.model, "output": output, "parallel_tool_calls": true, "previous_response_id": null,
        "reasoning": {"effort": null, "summary": null}, "store": true, "temperature": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "top_p": 1.0,
        "truncation": "disabled", "usage": null, "user": null, "metadata": {}});
    if complete && !sim.no_usage {
        v["usage"] = responses_usage(sim);
    }
    v
}

/// `POST /v1/responses`
pub fn response(sim: &SimRequest) -> String {
    finish(response_object(sim, "completed", true), sim)
}

/// Streamed Responses API events.
pub fn response_stream(sim: &SimRequest) -> Vec<String> {
    let mut seq = 0u64;
    let mut ev = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {v}\n\n")
    };
    let item = json!({"id": "msg_sim0001", "type": "message", "status": "in_progress", "role": "assistant", "content": []});
    let mut out = vec![
        ev(
            "response.created",
            json!({"response": response_object(sim, "in_progress", false)}),
        ),
        ev(
            "response.in_progress",
            json!({"response": response_object(sim, "in_progress", false)}),
        ),
        ev(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
        ),
        ev(
            "response.content_part.added",
            json!({"item_id": "msg_sim0001", "output_index": 0, "content_index": 0,
            "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
        ),
    ];
    for i in 0..sim.visible_tokens() {
        let w = if i == 0 {
            SimRequest::word(i).to_string()
        } else {
            format!(" {}", SimRequest::word(i))
        };
        out.push(ev(
            "response.output_text.delta",
            json!({"item_id": "msg_sim0001", "output_index": 0,
            "content_index": 0, "delta": w, "logprobs": []}),
        ));
    }
    let text = sim.text();
    out.push(ev("response.output_text.done", json!({"item_id": "msg_sim0001", "output_index": 0, "content_index": 0, "text": text, "logprobs": []})));
    out.push(ev(
        "response.content_part.done",
        json!({"item_id": "msg_sim0001", "output_index": 0, "content_index": 0,
        "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
    ));
    out.push(ev("response.output_item.done", json!({"output_index": 0, "item": {"id": "msg_sim0001", "type": "message",
        "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}})));
    out.push(ev(
        "response.completed",
        json!({"response": response_object(sim, "completed", true)}),
    ));
    out
}

fn anthropic_usage(sim: &SimRequest, output: u64) -> Value {
    json!({"input_tokens": sim.anthropic_input(), "cache_creation_input_tokens": 0,
           "cache_read_input_tokens": sim.cached_tokens,
           "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
           "output_tokens": output, "service_tier": "standard"})
}

/// `POST /v1/messages`
pub fn message(sim: &SimRequest) -> String {
    finish(
        json!({"id": "msg_01SimSimSimSimSimSimSim", "type": "message", "role": "assistant", "model": sim.model,
            "content": [{"type": "text", "text": sim.text()}], "stop_reason": "end_turn", "stop_sequence": null,
            "usage": anthropic_usage(sim, sim.output_tokens)}),
        sim,
    )
}

/// Streamed Messages API events.
pub fn message_stream(sim: &SimRequest) -> Vec<String> {
    let ev = |name: &str, v: Value| format!("event: {name}\ndata: {v}\n\n");
    let mut start = json!({"type": "message_start", "message": {"id": "msg_01SimSimSimSimSimSimSim", "type": "message",
        "role": "assistant", "model": sim.model, "content": [], "stop_reason": null, "stop_sequence": null,
        "usage": anthropic_usage(sim, 1)}});
    if sim.no_usage
        && let Some(m) = start["message"].as_object_mut()
    {
        m.remove("usage");
    }
    let mut out = vec![
        ev("message_start", start),
        ev(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        ev("ping", json!({"type": "ping"})),
    ];
    for i in 0..sim.visible_tokens() {
        let w = if i == 0 {
            SimRequest::word(i).to_string()
        } else {
            format!(" {}", SimRequest::word(i))
        };
        out.push(ev(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": w}}),
        ));
    }
    out.push(ev(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    let mut delta = json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null},
        "usage": {"output_tokens": sim.output_tokens}});
    if sim.no_usage
        && let Some(o) = delta.as_object_mut()
    {
        o.remove("usage");
    }
    out.push(ev("message_delta", delta));
    out.push(ev("message_stop", json!({"type": "message_stop"})));
    out
}

/// An error body in the provider's shape.
pub fn error(anthropic: bool, status: u16) -> String {
    let (oa_type, an_type, msg) = match status {
        400 => (
            "invalid_request_error",
            "invalid_request_error",
            "Invalid request (simulated).",
        ),
        401 => (
            "invalid_request_error",
            "authentication_error",
            "Incorrect API key provided (simulated).",
        ),
        404 => (
            "invalid_request_error",
            "not_found_error",
            "Not found (simulated).",
        ),
        429 => (
            "requests",
            "rate_limit_error",
            "Rate limit reached (simulated).",
        ),
        529 => (
            "server_error",
            "overloaded_error",
            "Overloaded (simulated).",
        ),
        _ => (
            "server_error",
            "api_error",
            "The server had an error while processing your request (simulated).",
        ),
    };
    if anthropic {
        json!({"type": "error", "error": {"type": an_type, "message": msg}, "request_id": "req_sim"}).to_string()
    } else {
        json!({"error": {"message": msg, "type": oa_type, "param": null, "code": null}}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_bounded_whatever_max_tokens_and_the_headers_ask() {
        let body = json!({"model": "m", "messages": [], "max_tokens": u64::MAX});
        let mut h = HeaderMap::new();
        h.insert(
            "x-sim-reasoning-tokens",
            "18446744073709551615".parse().expect("value"),
        );
        h.insert(
            "x-sim-cached-tokens",
            "18446744073709551615".parse().expect("value"),
        );
        let sim = SimRequest::from_body(&body, &h, 16, 4096);
        assert_eq!(sim.output_tokens, 4096);
        assert_eq!(sim.reasoning_tokens, 4096);
        assert_eq!(sim.visible_tokens(), 0);
        assert!(sim.prompt_tokens <= 4096 + 3);
        let plain = SimRequest::from_body(&body, &HeaderMap::new(), 16, 4096);
        assert_eq!(plain.text().split(' ').count(), 4096);
    }
}
