//! An Anthropic Messages request as an OpenAI chat completions request (an Anthropic-format
//! client calling an OpenAI-format model).
//!
//! Mapped: `system` to a system message; user text and images (base64 to data URLs, url
//! sources to URLs); `tool_result` blocks to `tool` messages (before the rest of their turn);
//! assistant text and `tool_use` blocks to `tool_calls`; `max_tokens` (as
//! `max_completion_tokens` for OpenAI itself, whose reasoning models refuse `max_tokens`),
//! `temperature`, `top_p`, `stop_sequences`, `stream` (with `stream_options.include_usage`, so
//! the provider reports usage), `tools`, `tool_choice` (`disable_parallel_tool_use` to
//! `parallel_tool_calls: false`), `metadata.user_id`.
//! Ignored because they do not change the answer: `cache_control` marks (OpenAI caches
//! prompts on its own), thinking blocks of earlier assistant turns (an OpenAI model cannot
//! read them), `service_tier` `auto`/`standard_only`. Refused (400 naming the field): `top_k`,
//! `thinking` (other than disabled), documents, server tools and anything else.

use serde_json::{Map, Value, json};

use crate::translate::Untranslatable;

/// The chat completions request for the Messages request `body`; `completion_tokens_field`:
/// the name of the output cap upstream.
pub fn messages_to_chat(
    body: &[u8],
    upstream_model: Option<&str>,
    completion_tokens_field: &str,
) -> Result<Vec<u8>, Untranslatable> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("(body)", format!("not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(Untranslatable::new("(body)", "not a JSON object"));
    };
    let mut out = Map::new();
    let mut system: Option<Value> = None;
    let mut turns: Vec<Value> = Vec::new();
    let mut choice: Option<Value> = None;
    for (k, v) in &req {
        match k.as_str() {
            "model" => {
                let m = upstream_model.map(Value::from).unwrap_or_else(|| v.clone());
                out.insert("model".into(), m);
            }
            "system" => system = Some(system_message(v)?),
            "messages" => {
                let msgs = v
                    .as_array()
                    .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
                for (i, m) in msgs.iter().enumerate() {
                    turn(m, i, &mut turns)?;
                }
            }
            "max_tokens" => {
                out.insert(completion_tokens_field.into(), v.clone());
            }
            "temperature" | "top_p" | "stream" => {
                if !v.is_null() {
                    out.insert(k.clone(), v.clone());
                }
            }
            "stop_sequences" => {
                if !v.is_null() {
                    out.insert("stop".into(), v.clone());
                }
            }
            "tools" => {
                if !v.is_null() {
                    out.insert("tools".into(), tools(v)?);
                }
            }
            "tool_choice" => choice = Some(v.clone()),
            "metadata" => {
                if let Some(u) = v.get("user_id").and_then(Value::as_str) {
                    out.insert("user".into(), u.into());
                }
            }
            "service_tier" if matches!(v.as_str(), Some("auto" | "standard_only") | None) => {}
            "thinking" if v.get("type").and_then(Value::as_str) == Some("disabled") => {}
            _ => {
                return Err(Untranslatable::new(
                    k,
                    "has no equivalent in OpenAI's chat completions",
                ));
            }
        }
    }
    if let Some(c) = choice {
        tool_choice(&c, &mut out)?;
    }
    if out.get("stream").and_then(Value::as_bool) == Some(true) {
        out.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let mut messages = Vec::with_capacity(turns.len() + 1);
    messages.extend(system);
    messages.extend(turns);
    out.insert("messages".into(), Value::Array(messages));
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| Untranslatable::new("(body)", e.to_string()))
}

fn system_message(v: &Value) -> Result<Value, Untranslatable> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => {
            let mut t = String::new();
            for (i, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(Untranslatable::new(
                        format!("system[{i}].type"),
                        "only text translates",
                    ));
                }
                if !t.is_empty() {
                    t.push('\n');
                }
                t.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            t
        }
        _ => {
            return Err(Untranslatable::new(
                "system",
                "must be a string or text blocks",
            ));
        }
    };
    Ok(json!({"role": "system", "content": text}))
}

/// One Anthropic turn as chat messages, appended to `out`.
fn turn(m: &Value, i: usize, out: &mut Vec<Value>) -> Result<(), Untranslatable> {
    let at = |f: &str| format!("messages[{i}].{f}");
    let role = m.get("role").and_then(Value::as_str).unwrap_or("");
    let content = m.get("content").unwrap_or(&Value::Null);
    let blocks: Vec<Value> = match content {
        Value::String(s) => vec![json!({"type": "text", "text": s})],
        Value::Array(b) => b.clone(),
        _ => {
            return Err(Untranslatable::new(
                at("content"),
                "must be a string or blocks",
            ));
        }
    };
    match role {
        "user" => {
            let mut parts = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                let at = format!("messages[{i}].content[{j}]");
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => parts.push(json!({"type": "text", "text": b.get("text").cloned().unwrap_or(Value::from(""))})),
                    Some("image") => parts.push(image(b, &at)?),
                    Some("tool_result") => {
                        // `is_error` has no flag in chat completions: the text tells the model.
                        out.push(json!({
                            "role": "tool",
                            "tool_call_id": b.get("tool_use_id").cloned().unwrap_or(Value::Null),
                            "content": tool_result_text(b.get("content"), &at)?,
                        }));
                    }
                    other => {
                        return Err(Untranslatable::new(
                            format!("{at}.type"),
                            format!("block {other:?} has no equivalent"),
                        ));
                    }
                }
            }
            if !parts.is_empty() {
                out.push(json!({"role": "user", "content": parts}));
            }
        }
        "assistant" => {
            let mut text = String::new();
            let mut calls = Vec::new();
            for (j, b) in blocks.iter().enumerate() {
                match b.get("type").and_then(Value::as_str) {
                    Some("text") => text.push_str(b.get("text").and_then(Value::as_str).unwrap_or("")),
                    Some("tool_use") => calls.push(json!({
                        "id": b.get("id").cloned().unwrap_or(Value::Null),
                        "type": "function",
                        "function": {
                            "name": b.get("name").cloned().unwrap_or(Value::Null),
                            "arguments": b.get("input").map_or_else(|| "{}".to_string(), Value::to_string),
                        },
                    })),
                    Some("thinking" | "redacted_thinking") => {}
                    other => {
                        return Err(Untranslatable::new(
                            format!("messages[{i}].content[{j}].type"),
                            format!("block {other:?} has no equivalent"),
                        ));
                    }
                }
            }
            let mut msg = json!({"role": "assistant", "content": if text.is_empty() { Value::Null } else { Value::from(text) }});
            if !calls.is_empty() {
                msg["tool_calls"] = Value::Array(calls);
            }
            out.push(msg);
        }
        other => {
            return Err(Untranslatable::new(
                at("role"),
                format!("role {other:?} has no equivalent"),
            ));
        }
    }
    Ok(())
}

fn tool_result_text(content: Option<&Value>, at: &str) -> Result<Value, Untranslatable> {
    Ok(match content {
        None | Some(Value::Null) => Value::from(""),
        Some(Value::String(s)) => Value::from(s.as_str()),
        Some(Value::Array(blocks)) => {
            let mut t = String::new();
            for (k, b) in blocks.iter().enumerate() {
                if b.get("type").and_then(Value::as_str) != Some("text") {
                    return Err(Untranslatable::new(
                        format!("{at}.content[{k}].type"),
                        "only text tool results translate",
                    ));
                }
                t.push_str(b.get("text").and_then(Value::as_str).unwrap_or(""));
            }
            Value::from(t)
        }
        Some(_) => {
            return Err(Untranslatable::new(
                format!("{at}.content"),
                "must be a string or text blocks",
            ));
        }
    })
}

fn image(b: &Value, at: &str) -> Result<Value, Untranslatable> {
    let src = b.get("source").unwrap_or(&Value::Null);
    let url = match src.get("type").and_then(Value::as_str) {
        Some("base64") => format!(
            "data:{};base64,{}",
            src.get("media_type")
                .and_then(Value::as_str)
                .unwrap_or("image/png"),
            src.get("data").and_then(Value::as_str).unwrap_or("")
        ),
        Some("url") => src
            .get("url")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        other => {
            return Err(Untranslatable::new(
                format!("{at}.source.type"),
                format!("image source {other:?} has no equivalent"),
            ));
        }
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

fn tools(v: &Value) -> Result<Value, Untranslatable> {
    let list = v
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            // Server tools (web search, code execution, ...) carry a `type`; custom ones do not
            // (or say "custom").
            if t.get("type")
                .and_then(Value::as_str)
                .is_some_and(|k| k != "custom")
            {
                return Err(Untranslatable::new(
                    format!("tools[{i}].type"),
                    "only custom tools translate",
                ));
            }
            let name = t
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new(format!("tools[{i}].name"), "is required"))?;
            let mut f = Map::new();
            f.insert("name".into(), name.into());
            if let Some(d) = t.get("description").and_then(Value::as_str) {
                f.insert("description".into(), d.into());
            }
            f.insert(
                "parameters".into(),
                t.get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| json!({"type": "object"})),
            );
            Ok(json!({"type": "function", "function": f}))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

fn tool_choice(c: &Value, out: &mut Map<String, Value>) -> Result<(), Untranslatable> {
    let kind = c.get("type").and_then(Value::as_str).unwrap_or("");
    let v = match kind {
        "auto" => Value::from("auto"),
        "any" => Value::from("required"),
        "none" => Value::from("none"),
        "tool" => {
            let name = c
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new("tool_choice.name", "is required"))?;
            json!({"type": "function", "function": {"name": name}})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice.type",
                format!("{kind:?} is unknown"),
            ));
        }
    };
    out.insert("tool_choice".into(), v);
    if c.get("disable_parallel_tool_use").and_then(Value::as_bool) == Some(true) {
        out.insert("parallel_tool_calls".into(), Value::Bool(false));
    }
    Ok(())
}
