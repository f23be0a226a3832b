//! Amazon Bedrock runtime shapes: `Converse` and its event stream, `InvokeModel` of a Claude
//! model (the Messages body) and its event stream of base64 chunks, `CountTokens`, and AWS's
//! error shape. The streams are AWS event-stream messages, one frame each.

use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::shapes::{self, SimRequest};
use crate::proxy::eventstream::{encode, encode_event};

/// Converse's `usage`: the cached part of the prompt is reported beside `inputTokens`.
fn usage(sim: &SimRequest) -> Value {
    let input = sim.prompt_tokens - sim.cached_tokens.min(sim.prompt_tokens);
    let output = sim.visible_tokens() + sim.reasoning_tokens;
    json!({
        "inputTokens": input,
        "outputTokens": output,
        "totalTokens": sim.prompt_tokens + output,
        "cacheReadInputTokens": sim.cached_tokens,
        "cacheWriteInputTokens": 0,
    })
}

/// `POST /model/{modelId}/converse`
pub fn converse(sim: &SimRequest) -> String {
    let mut v = json!({
        "output": {"message": {"role": "assistant", "content": [{"text": sim.text()}]}},
        "stopReason": "end_turn",
        "metrics": {"latencyMs": 42},
    });
    if !sim.no_usage {
        v["usage"] = usage(sim);
    }
    v.to_string()
}

/// `POST /model/{modelId}/converse-stream`: messageStart, a delta per word, messageStop,
/// metadata (usage) — each an event-stream message.
pub fn converse_stream(sim: &SimRequest) -> Vec<Bytes> {
    let ev = |name: &str, v: Value| Bytes::from(encode_event(name, v.to_string().as_bytes()));
    let n = sim.visible_tokens();
    let mut out = vec![ev(
        "messageStart",
        json!({"role": "assistant", "p": "abcd"}),
    )];
    for i in 0..n {
        let word = if i == 0 {
            SimRequest::word(i).to_string()
        } else {
            format!(" {}", SimRequest::word(i))
        };
        out.push(ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": word}, "p": "abcdefgh"}),
        ));
    }
    out.push(ev(
        "contentBlockStop",
        json!({"contentBlockIndex": 0, "p": "ab"}),
    ));
    out.push(ev(
        "messageStop",
        json!({"stopReason": "end_turn", "p": "abc"}),
    ));
    let mut meta = json!({"metrics": {"latencyMs": 42}, "p": "abcdef"});
    if !sim.no_usage {
        meta["usage"] = usage(sim);
    }
    out.push(ev("metadata", meta));
    out
}

/// The tool a Converse request forces (`toolConfig.toolChoice` `any` or `tool`): the named
/// (else first) tool, called with the word `sim` for each string parameter.
pub fn forced_tool(req: &Value) -> Option<Value> {
    let config = req.get("toolConfig")?;
    let choice = config.get("toolChoice")?;
    let named = choice.pointer("/tool/name").and_then(Value::as_str);
    if named.is_none() && choice.get("any").is_none() {
        return None;
    }
    let spec = config
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("toolSpec"))
        .find(|t| named.is_none_or(|n| t.get("name").and_then(Value::as_str) == Some(n)))?;
    let mut input = serde_json::Map::new();
    for (k, p) in spec
        .pointer("/inputSchema/json/properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if p.get("type").and_then(Value::as_str) == Some("string") {
            input.insert(k.clone(), "sim".into());
        }
    }
    Some(json!({"toolUseId": "tooluse_sim0001", "name": spec.get("name")?, "input": input}))
}

/// `converse` calling `tool` (stop reason `tool_use`).
pub fn converse_tool(sim: &SimRequest, tool: &Value) -> String {
    let mut v: Value = serde_json::from_str(&converse(sim)).unwrap_or_default();
    v["output"]["message"]["content"] = json!([{ "toolUse": tool }]);
    v["stopReason"] = "tool_use".into();
    v.to_string()
}

/// `converse-stream` calling `tool`: its start, its input in one delta, `tool_use`.
pub fn converse_stream_tool(sim: &SimRequest, tool: &Value) -> Vec<Bytes> {
    let ev = |name: &str, v: Value| Bytes::from(encode_event(name, v.to_string().as_bytes()));
    let start = json!({"toolUseId": tool["toolUseId"], "name": tool["name"]});
    let mut meta = json!({"metrics": {"latencyMs": 42}});
    if !sim.no_usage {
        meta["usage"] = usage(sim);
    }
    vec![
        ev("messageStart", json!({"role": "assistant"})),
        ev(
            "contentBlockStart",
            json!({"contentBlockIndex": 0, "start": {"toolUse": start}}),
        ),
        ev(
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"toolUse": {"input": tool["input"].to_string()}}}),
        ),
        ev("contentBlockStop", json!({"contentBlockIndex": 0})),
        ev("messageStop", json!({"stopReason": "tool_use"})),
        ev("metadata", meta),
    ]
}

/// `POST /model/{modelId}/invoke` of a Claude model: the Messages body.
pub fn invoke(sim: &SimRequest) -> String {
    shapes::message(sim)
}

/// `POST /model/{modelId}/invoke-with-response-stream` of a Claude model: each Messages
/// event base64-encoded in a `chunk`; the last carries Bedrock's invocation metrics.
pub fn invoke_stream(sim: &SimRequest) -> Vec<Bytes> {
    let events: Vec<String> = shapes::message_stream(sim)
        .iter()
        .filter_map(|e| {
            e.lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(String::from)
        })
        .collect();
    let last = events.len().saturating_sub(1);
    events
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let mut e = e;
            if i == last && !sim.no_usage {
                let mut v: Value = serde_json::from_str(&e).unwrap_or_default();
                v["amazon-bedrock-invocationMetrics"] = json!({
                    "inputTokenCount": sim.prompt_tokens - sim.cached_tokens.min(sim.prompt_tokens),
                    "outputTokenCount": sim.visible_tokens() + sim.reasoning_tokens,
                    "invocationLatency": 42,
                    "firstByteLatency": 10,
                });
                e = v.to_string();
            }
            let b = base64::engine::general_purpose::STANDARD.encode(e);
            let chunk = json!({"bytes": b, "p": "abcdefgh"}).to_string();
            Bytes::from(encode_event("chunk", chunk.as_bytes()))
        })
        .collect()
}

/// `POST /model/{modelId}/count-tokens`
pub fn count_tokens(sim: &SimRequest) -> String {
    json!({"inputTokens": sim.prompt_tokens}).to_string()
}

/// AWS's error body (the name goes in `x-amzn-ErrorType`).
pub fn error(status: u16) -> String {
    json!({"message": format!("simulated error {status}")}).to_string()
}

/// A `throttlingException` message, as Bedrock ends a stream it throttles.
pub fn stream_exception() -> Bytes {
    Bytes::from(encode(
        &[
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    ))
}
