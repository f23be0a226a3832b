//! An OpenAI chat completions request as an Anthropic Messages request.
//!
//! Mapped: `system`/`developer` messages to `system` blocks; user text and images (data URLs
//! to base64 sources, http(s) URLs to url sources); assistant text and `tool_calls` to
//! `tool_use` blocks; `tool` messages to `tool_result` blocks in a user turn (consecutive turns
//! of one role merged, as Anthropic wants them alternating); `max_tokens` /
//! `max_completion_tokens` (Anthropic requires one: the gateway's `default_max_tokens` when the
//! client sets none); `temperature` (0-1 only: Anthropic's range), `top_p`, `stop`, `stream`,
//! `tools`, `tool_choice`, `parallel_tool_calls: false`, `user`.
//! Ignored because they do not change the answer: `stream_options` (the gateway meters and
//! answers `include_usage` itself), `store`, `metadata`, `service_tier` `auto`/`default`.
//! Refused (400 naming the field): everything else, and values with no equivalent (`n` > 1,
//! logprobs, penalties, `logit_bias`, a `response_format` other than text, audio, ...).

use serde_json::{Map, Value, json};

use crate::translate::Untranslatable;

/// The Messages request for the chat completions request `body`, with `upstream_model` in
/// place of the client's model when the route names one.
pub fn chat_to_messages(
    body: &[u8],
    upstream_model: Option<&str>,
    default_max_tokens: u64,
) -> Result<Vec<u8>, Untranslatable> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("(body)", format!("not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(Untranslatable::new("(body)", "not a JSON object"));
    };
    let mut out = Map::new();
    let mut system: Vec<Value> = Vec::new();
    let mut max_tokens: Option<Value> = None;
    let mut tool_choice: Option<Value> = None;
    let mut parallel = true;
    for (k, v) in &req {
        match k.as_str() {
            "model" => {
                let m = upstream_model.map(Value::from).unwrap_or_else(|| v.clone());
                out.insert("model".into(), m);
            }
            "messages" => {
                let msgs = v
                    .as_array()
                    .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
                let turns = messages(msgs, &mut system)?;
                out.insert("messages".into(), Value::Array(turns));
            }
            "max_tokens" | "max_completion_tokens" => {
                if !v.is_null() {
                    if !v.is_u64() {
                        return Err(Untranslatable::new(k, "must be a positive integer"));
                    }
                    max_tokens = Some(v.clone());
                }
            }
            "temperature" => match v.as_f64() {
                None if v.is_null() => {}
                Some(t) if (0.0..=1.0).contains(&t) => {
                    out.insert("temperature".into(), v.clone());
                }
                _ => {
                    return Err(Untranslatable::new(
                        k,
                        "Anthropic models accept 0 to 1 (OpenAI's 0 to 2 has no equivalent above 1)",
                    ));
                }
            },
            "top_p" => copy_unless_null(&mut out, "top_p", v),
            "stream" => copy_unless_null(&mut out, "stream", v),
            "stop" => match v {
                Value::Null => {}
                Value::String(s) => {
                    out.insert("stop_sequences".into(), json!([s]));
                }
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    out.insert("stop_sequences".into(), v.clone());
                }
                _ => return Err(Untranslatable::new(k, "must be a string or strings")),
            },
            "tools" => {
                if !v.is_null() {
                    out.insert("tools".into(), tools(v)?);
                }
            }
            "tool_choice" => tool_choice = choice(v)?,
            "parallel_tool_calls" => parallel = v.as_bool().unwrap_or(true),
            "user" => {
                if let Some(u) = v.as_str() {
                    out.insert("metadata".into(), json!({ "user_id": u }));
                }
            }
            // Do not change the answer.
            "stream_options" | "store" | "metadata" => {}
            "service_tier" if matches!(v.as_str(), Some("auto" | "default") | None) => {}
            "n" if v.is_null() || v.as_u64() == Some(1) => {}
            "logprobs" if v.is_null() || v.as_bool() == Some(false) => {}
            "presence_penalty" | "frequency_penalty" if v.is_null() || v.as_f64() == Some(0.0) => {}
            "logit_bias" if v.is_null() || v.as_object().is_some_and(Map::is_empty) => {}
            "response_format"
                if v.is_null() || v.get("type").and_then(Value::as_str) == Some("text") => {}
            _ => {
                return Err(Untranslatable::new(
                    k,
                    "has no equivalent in Anthropic's Messages API",
                ));
            }
        }
    }
    if !out.contains_key("messages") {
        return Err(Untranslatable::new("messages", "is required"));
    }
    if !system.is_empty() {
        out.insert("system".into(), Value::Array(system));
    }
    out.insert(
        "max_tokens".into(),
        max_tokens.unwrap_or_else(|| Value::from(default_max_tokens)),
    );
    if !parallel {
        let c = tool_choice.get_or_insert_with(|| json!({"type": "auto"}));
        if let Some(o) = c.as_object_mut() {
            o.insert("disable_parallel_tool_use".into(), Value::Bool(true));
        }
    }
    if let Some(c) = tool_choice {
        out.insert("tool_choice".into(), c);
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| Untranslatable::new("(body)", e.to_string()))
}

fn copy_unless_null(out: &mut Map<String, Value>, k: &str, v: &Value) {
    if !v.is_null() {
        out.insert(k.into(), v.clone());
    }
}

/// The conversation as alternating Anthropic turns; system text goes to `system`.
fn messages(msgs: &[Value], system: &mut Vec<Value>) -> Result<Vec<Value>, Untranslatable> {
    let mut turns: Vec<(String, Vec<Value>)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Untranslatable::new(at("role"), "is required"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, blocks) = match role {
            "system" | "developer" => {
                system.extend(text_blocks(content, &at("content"), false)?);
                continue;
            }
            "user" => ("user", text_blocks(content, &at("content"), true)?),
            "assistant" => {
                let mut blocks = match content {
                    Value::Null => Vec::new(),
                    c => text_blocks(c, &at("content"), false)?,
                };
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| Untranslatable::new(at("tool_calls"), "must be an array"))?;
                    for (j, c) in calls.iter().enumerate() {
                        blocks.push(tool_use(c, &format!("messages[{i}].tool_calls[{j}]"))?);
                    }
                }
                ("assistant", blocks)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Untranslatable::new(at("tool_call_id"), "is required"))?;
                let result = match content {
                    Value::String(s) => Value::from(s.as_str()),
                    c => Value::Array(text_blocks(c, &at("content"), false)?),
                };
                (
                    "user",
                    vec![json!({"type": "tool_result", "tool_use_id": id, "content": result})],
                )
            }
            other => {
                return Err(Untranslatable::new(
                    at("role"),
                    format!("role {other:?} has no equivalent"),
                ));
            }
        };
        match turns.last_mut() {
            Some((r, b)) if r == role => b.extend(blocks),
            _ => turns.push((role.to_string(), blocks)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect())
}

/// Content (a string or content parts) as Anthropic blocks; images only where `images`.
fn text_blocks(content: &Value, at: &str, images: bool) -> Result<Vec<Value>, Untranslatable> {
    match content {
        Value::String(s) => Ok(vec![json!({"type": "text", "text": s})]),
        Value::Array(parts) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| {
                let at = format!("{at}[{j}]");
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        let t = p.get("text").and_then(Value::as_str).ok_or_else(|| {
                            Untranslatable::new(format!("{at}.text"), "is required")
                        })?;
                        Ok(json!({"type": "text", "text": t}))
                    }
                    Some("image_url") if images => image(p, &at),
                    other => Err(Untranslatable::new(
                        format!("{at}.type"),
                        format!("content part {other:?} has no equivalent here"),
                    )),
                }
            })
            .collect(),
        _ => Err(Untranslatable::new(at, "must be a string or content parts")),
    }
}

/// An `image_url` part as an image block: a `data:` URL as a base64 source, else a url source.
fn image(part: &Value, at: &str) -> Result<Value, Untranslatable> {
    let url = part
        .get("image_url")
        .and_then(|u| u.get("url").or(Some(u)))
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{at}.image_url.url"), "is required"))?;
    if let Some(rest) = url.strip_prefix("data:") {
        let (media, data) = rest.split_once(";base64,").ok_or_else(|| {
            Untranslatable::new(format!("{at}.image_url.url"), "a data URL must be base64")
        })?;
        return Ok(
            json!({"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}),
        );
    }
    if url.starts_with("https://") || url.starts_with("http://") {
        return Ok(json!({"type": "image", "source": {"type": "url", "url": url}}));
    }
    Err(Untranslatable::new(
        format!("{at}.image_url.url"),
        "must be a data: or http(s) URL",
    ))
}

/// An assistant's tool call as a `tool_use` block (its arguments must be a JSON object).
fn tool_use(call: &Value, at: &str) -> Result<Value, Untranslatable> {
    let f = call.get("function").ok_or_else(|| {
        Untranslatable::new(
            format!("{at}.function"),
            "is required (only function tools translate)",
        )
    })?;
    let id = call.get("id").and_then(Value::as_str).unwrap_or_default();
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{at}.function.name"), "is required"))?;
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    let input: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args).map_err(|e| {
            Untranslatable::new(format!("{at}.function.arguments"), format!("not JSON: {e}"))
        })?
    };
    if !input.is_object() {
        return Err(Untranslatable::new(
            format!("{at}.function.arguments"),
            "must be a JSON object",
        ));
    }
    Ok(json!({"type": "tool_use", "id": id, "name": name, "input": input}))
}

/// Function tools as Anthropic tools.
fn tools(v: &Value) -> Result<Value, Untranslatable> {
    let list = v
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be an array"))?;
    list.iter()
        .enumerate()
        .map(|(i, t)| {
            if t.get("type").and_then(Value::as_str) != Some("function") {
                return Err(Untranslatable::new(
                    format!("tools[{i}].type"),
                    "only function tools translate",
                ));
            }
            let f = t.get("function").unwrap_or(&Value::Null);
            let name = f.get("name").and_then(Value::as_str).ok_or_else(|| {
                Untranslatable::new(format!("tools[{i}].function.name"), "is required")
            })?;
            let mut tool = Map::new();
            tool.insert("name".into(), name.into());
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                tool.insert("description".into(), d.into());
            }
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            tool.insert("input_schema".into(), schema);
            Ok(Value::Object(tool))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice` in Anthropic's terms.
fn choice(v: &Value) -> Result<Option<Value>, Untranslatable> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => json!({"type": "auto"}),
            "none" => json!({"type": "none"}),
            "required" => json!({"type": "any"}),
            _ => {
                return Err(Untranslatable::new(
                    "tool_choice",
                    format!("{s:?} is unknown"),
                ));
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| Untranslatable::new("tool_choice.function.name", "is required"))?;
            json!({"type": "tool", "name": name})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice",
                "must be a string or an object",
            ));
        }
    }))
}
