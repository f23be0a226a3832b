//! An OpenAI chat completions request as a Bedrock `Converse` request.
//!
//! Mapped: `system`/`developer` messages to `system` text blocks; user text and images (base64
//! `data:` URLs of PNG, JPEG, GIF or WebP to `image` blocks with `bytes`) to `user` turns;
//! assistant text and `tool_calls` to `assistant` turns with `toolUse` blocks; `tool` messages to
//! `toolResult` blocks in a `user` turn (consecutive turns of one role merged, as Converse
//! wants them alternating); `max_tokens` / `max_completion_tokens`, `temperature`, `top_p`,
//! `stop` to `inferenceConfig`; function `tools` to `toolConfig.tools[].toolSpec` (the JSON
//! Schema unchanged as `inputSchema.json`); `tool_choice` `auto`/`required`/a function to
//! `toolChoice` `auto`/`any`/`tool`. The model is in the path, `stream` is the operation.
//! Ignored because they do not change the answer: `stream`, `stream_options`, `store`,
//! `metadata`, `user`, `service_tier` `auto`/`default`. Refused (400 naming the field):
//! everything else, and values with no equivalent (`n` > 1, logprobs, penalties, `seed`,
//! `logit_bias`, `response_format` other than text, `tool_choice: "none"`,
//! `parallel_tool_calls: false`, image URLs that are not `data:` URLs, audio, ...).

use serde_json::{Map, Value, json};

use crate::translate::Untranslatable;
use crate::translate::chat_content::{data_url, text_parts};

/// The `Converse` request for the chat completions request `body`.
pub fn chat_to_converse(body: &[u8]) -> Result<Vec<u8>, Untranslatable> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("(body)", format!("not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(Untranslatable::new("(body)", "not a JSON object"));
    };
    let mut out = Map::new();
    let mut config = Map::new();
    let mut system: Vec<Value> = Vec::new();
    let mut tool_config = Map::new();
    for (k, v) in &req {
        match k.as_str() {
            "messages" => {
                let msgs = v
                    .as_array()
                    .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
                let turns = messages(msgs, &mut system)?;
                out.insert("messages".into(), Value::Array(turns));
            }
            "max_tokens" | "max_completion_tokens" if !v.is_null() => {
                if !v.is_u64() {
                    return Err(Untranslatable::new(k, "must be a positive integer"));
                }
                config.insert("maxTokens".into(), v.clone());
            }
            "temperature" | "top_p" if !v.is_null() => {
                if !v.is_number() {
                    return Err(Untranslatable::new(k, "must be a number"));
                }
                let name = if k == "top_p" { "topP" } else { "temperature" };
                config.insert(name.into(), v.clone());
            }
            "stop" => match v {
                Value::Null => {}
                Value::String(s) => {
                    config.insert("stopSequences".into(), json!([s]));
                }
                Value::Array(a) if a.iter().all(Value::is_string) => {
                    config.insert("stopSequences".into(), v.clone());
                }
                _ => return Err(Untranslatable::new(k, "must be a string or strings")),
            },
            "tools" => {
                if !v.is_null() {
                    tool_config.insert("tools".into(), tools(v)?);
                }
            }
            "tool_choice" => {
                if let Some(c) = choice(v)? {
                    tool_config.insert("toolChoice".into(), c);
                }
            }
            "parallel_tool_calls" if v.is_null() || v.as_bool() == Some(true) => {}
            "parallel_tool_calls" => {
                return Err(Untranslatable::new(
                    k,
                    "Bedrock's Converse has no switch to turn off parallel tool calls",
                ));
            }
            "model" | "stream" | "stream_options" | "store" | "metadata" | "user" => {}
            "service_tier" if matches!(v.as_str(), Some("auto" | "default") | None) => {}
            "n" if v.is_null() || v.as_u64() == Some(1) => {}
            "logprobs" if v.is_null() || v.as_bool() == Some(false) => {}
            "presence_penalty" | "frequency_penalty" if v.is_null() || v.as_f64() == Some(0.0) => {}
            "logit_bias" if v.is_null() || v.as_object().is_some_and(Map::is_empty) => {}
            "seed" if v.is_null() => {}
            "response_format"
                if v.is_null() || v.get("type").and_then(Value::as_str) == Some("text") => {}
            "max_tokens" | "max_completion_tokens" | "temperature" | "top_p" => {}
            _ => {
                return Err(Untranslatable::new(
                    k,
                    "has no equivalent in Bedrock's Converse API",
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
    if !config.is_empty() {
        out.insert("inferenceConfig".into(), Value::Object(config));
    }
    if tool_config.contains_key("toolChoice") && !tool_config.contains_key("tools") {
        return Err(Untranslatable::new("tool_choice", "needs `tools`"));
    }
    if !tool_config.is_empty() {
        out.insert("toolConfig".into(), Value::Object(tool_config));
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| Untranslatable::new("(body)", e.to_string()))
}

/// The conversation as alternating Converse turns; system text goes to `system`.
fn messages(msgs: &[Value], system: &mut Vec<Value>) -> Result<Vec<Value>, Untranslatable> {
    let mut turns: Vec<(&'static str, Vec<Value>)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let at = |f: &str| format!("messages[{i}].{f}");
        let role = m
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| Untranslatable::new(at("role"), "is required"))?;
        let content = m.get("content").unwrap_or(&Value::Null);
        let (role, new) = match role {
            "system" | "developer" => {
                system.extend(text_parts(content, &at("content"), false, image)?);
                continue;
            }
            "user" => ("user", text_parts(content, &at("content"), true, image)?),
            "assistant" => {
                let mut b = match content {
                    Value::Null => Vec::new(),
                    c => text_parts(c, &at("content"), false, image)?,
                };
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| Untranslatable::new(at("tool_calls"), "must be an array"))?;
                    for (j, c) in calls.iter().enumerate() {
                        b.push(tool_use(c, &format!("messages[{i}].tool_calls[{j}]"))?);
                    }
                }
                ("assistant", b)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Untranslatable::new(at("tool_call_id"), "is required"))?;
                let result = match content {
                    Value::String(s) => vec![json!({ "text": s })],
                    c => text_parts(c, &at("content"), false, image)?,
                };
                (
                    "user",
                    vec![json!({"toolResult": {"toolUseId": id, "content": result}})],
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
            Some((r, b)) if *r == role => b.extend(new),
            _ => turns.push((role, new)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect())
}

/// An `image_url` part with a base64 `data:` URL as an `image` block (Converse takes image
/// bytes or an S3 location, not URLs; its JSON carries the bytes base64-encoded).
fn image(part: &Value, at: &str) -> Result<Value, Untranslatable> {
    let field = || format!("{at}.image_url.url");
    let (mime, data) = data_url(part, at, "Bedrock")?;
    let format = match mime {
        "image/png" => "png",
        "image/jpeg" | "image/jpg" => "jpeg",
        "image/gif" => "gif",
        "image/webp" => "webp",
        _ => {
            return Err(Untranslatable::new(
                field(),
                "Converse takes PNG, JPEG, GIF and WebP images",
            ));
        }
    };
    Ok(json!({"image": {"format": format, "source": {"bytes": data}}}))
}

/// An assistant's tool call as a `toolUse` block (its arguments must be a JSON object).
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
    Ok(json!({"toolUse": {"toolUseId": id, "name": name, "input": input}}))
}

/// Function tools as Converse `toolSpec`s.
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
            let mut spec = Map::new();
            spec.insert("name".into(), name.into());
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                spec.insert("description".into(), d.into());
            }
            let schema = f
                .get("parameters")
                .filter(|p| p.is_object())
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "properties": {}}));
            spec.insert("inputSchema".into(), json!({ "json": schema }));
            Ok(json!({ "toolSpec": spec }))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Value::Array)
}

/// `tool_choice` as a Converse `toolChoice`.
fn choice(v: &Value) -> Result<Option<Value>, Untranslatable> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => json!({"auto": {}}),
            "required" => json!({"any": {}}),
            "none" => {
                return Err(Untranslatable::new(
                    "tool_choice",
                    "\"none\" has no equivalent in Converse (leave the tools out instead)",
                ));
            }
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
            json!({"tool": {"name": name}})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice",
                "must be a string or an object",
            ));
        }
    }))
}
