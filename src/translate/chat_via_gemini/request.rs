//! An OpenAI chat completions request as a Gemini `generateContent` request.
//!
//! Mapped: `system`/`developer` messages to `systemInstruction`; user text and images (`data:`
//! URLs to `inlineData`) to `user` turns; assistant text and `tool_calls` to `model` turns with
//! `functionCall` parts (a `thoughtSignature` kept in the call's id restored); `tool` messages to `functionResponse` parts in a `user` turn (the
//! function's name found from the assistant's call with that `tool_call_id`; a result that is a
//! JSON object is passed as the response, any other as `{"output": <content>}`, the key Google's
//! docs name for a function's output); consecutive turns of one role merged. `max_tokens` /
//! `max_completion_tokens` to `maxOutputTokens`, `temperature`, `top_p`, `stop`, `seed`,
//! `presence_penalty`, `frequency_penalty`, `response_format` `json_object` (as
//! `responseMimeType: application/json`) to `generationConfig`; function `tools` to
//! `functionDeclarations` (the JSON Schema as `parametersJsonSchema`, unchanged); `tool_choice`
//! to `toolConfig.functionCallingConfig`. The model is in the path, `stream` is the method.
//! Ignored because they do not change the answer: `stream`, `stream_options` (the gateway
//! meters and answers `include_usage` itself), `store`, `metadata`, `user`, `service_tier`
//! `auto`/`default`. Refused (400 naming the field): everything else, and values with no
//! equivalent (`n` > 1, logprobs, `logit_bias`, `parallel_tool_calls: false`, image URLs that
//! are not `data:` URLs, a `json_schema` response format, audio, ...).

use serde_json::{Map, Value, json};

use crate::translate::Untranslatable;
use crate::translate::chat_content::{data_url, text_parts};

/// The `generateContent` request for the chat completions request `body`.
pub fn chat_to_gemini(body: &[u8]) -> Result<Vec<u8>, Untranslatable> {
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| Untranslatable::new("(body)", format!("not valid JSON: {e}")))?;
    let Value::Object(req) = req else {
        return Err(Untranslatable::new("(body)", "not a JSON object"));
    };
    let mut out = Map::new();
    let mut config = Map::new();
    let mut system: Vec<Value> = Vec::new();
    for (k, v) in &req {
        match k.as_str() {
            "messages" => {
                let msgs = v
                    .as_array()
                    .ok_or_else(|| Untranslatable::new("messages", "must be an array"))?;
                let contents = messages(msgs, &mut system)?;
                out.insert("contents".into(), Value::Array(contents));
            }
            "max_tokens" | "max_completion_tokens" if !v.is_null() => {
                if !v.is_u64() {
                    return Err(Untranslatable::new(k, "must be a positive integer"));
                }
                config.insert("maxOutputTokens".into(), v.clone());
            }
            "temperature" | "top_p" | "presence_penalty" | "frequency_penalty" | "seed"
                if !v.is_null() =>
            {
                if !v.is_number() {
                    return Err(Untranslatable::new(k, "must be a number"));
                }
                let name = match k.as_str() {
                    "temperature" => "temperature",
                    "top_p" => "topP",
                    "presence_penalty" => "presencePenalty",
                    "frequency_penalty" => "frequencyPenalty",
                    _ => "seed",
                };
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
            "response_format" => match v.get("type").and_then(Value::as_str) {
                None if v.is_null() => {}
                Some("text") => {}
                Some("json_object") => {
                    config.insert("responseMimeType".into(), "application/json".into());
                }
                _ => {
                    return Err(Untranslatable::new(
                        "response_format.type",
                        "only \"text\" and \"json_object\" translate for Gemini models",
                    ));
                }
            },
            "tools" => {
                if !v.is_null() {
                    out.insert("tools".into(), tools(v)?);
                }
            }
            "tool_choice" => {
                if let Some(c) = choice(v)? {
                    out.insert("toolConfig".into(), json!({ "functionCallingConfig": c }));
                }
            }
            "parallel_tool_calls" if v.is_null() || v.as_bool() == Some(true) => {}
            "parallel_tool_calls" => {
                return Err(Untranslatable::new(
                    k,
                    "Gemini has no switch to turn off parallel function calls",
                ));
            }
            // Do not change the answer; `stream` is the upstream method.
            "model" | "stream" | "stream_options" | "store" | "metadata" | "user" => {}
            "service_tier" if matches!(v.as_str(), Some("auto" | "default") | None) => {}
            "n" if v.is_null() || v.as_u64() == Some(1) => {}
            "logprobs" if v.is_null() || v.as_bool() == Some(false) => {}
            "logit_bias" if v.is_null() || v.as_object().is_some_and(Map::is_empty) => {}
            "max_tokens"
            | "max_completion_tokens"
            | "temperature"
            | "top_p"
            | "presence_penalty"
            | "frequency_penalty"
            | "seed" => {}
            _ => {
                return Err(Untranslatable::new(
                    k,
                    "has no equivalent in Gemini's generateContent API",
                ));
            }
        }
    }
    if !out.contains_key("contents") {
        return Err(Untranslatable::new("messages", "is required"));
    }
    if !system.is_empty() {
        out.insert("systemInstruction".into(), json!({ "parts": system }));
    }
    if !config.is_empty() {
        out.insert("generationConfig".into(), Value::Object(config));
    }
    serde_json::to_vec(&Value::Object(out))
        .map_err(|e| Untranslatable::new("(body)", e.to_string()))
}

/// The conversation as Gemini `contents`; system text goes to `system`.
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
                let mut p = match content {
                    Value::Null => Vec::new(),
                    c => text_parts(c, &at("content"), false, image)?,
                };
                if let Some(calls) = m.get("tool_calls").filter(|c| !c.is_null()) {
                    let calls = calls
                        .as_array()
                        .ok_or_else(|| Untranslatable::new(at("tool_calls"), "must be an array"))?;
                    for (j, c) in calls.iter().enumerate() {
                        p.push(function_call(c, &format!("messages[{i}].tool_calls[{j}]"))?);
                    }
                }
                ("model", p)
            }
            "tool" => {
                let id = m
                    .get("tool_call_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| Untranslatable::new(at("tool_call_id"), "is required"))?;
                let name = called(&msgs[..i], id).ok_or_else(|| {
                    Untranslatable::new(
                        at("tool_call_id"),
                        "names no tool call of an earlier assistant message (Gemini needs the function's name)",
                    )
                })?;
                let response = match content {
                    Value::String(s) => match serde_json::from_str::<Value>(s) {
                        Ok(o @ Value::Object(_)) => o,
                        _ => json!({ "output": s }),
                    },
                    c => {
                        let text: String = text_parts(c, &at("content"), false, image)?
                            .iter()
                            .filter_map(|p| p.get("text").and_then(Value::as_str))
                            .collect();
                        json!({ "output": text })
                    }
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
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
            Some((r, p)) if *r == role => p.extend(new),
            _ => turns.push((role, new)),
        }
    }
    Ok(turns
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect())
}

/// The function name of the latest tool call `id` among `earlier` messages.
fn called<'a>(earlier: &'a [Value], id: &str) -> Option<&'a str> {
    earlier
        .iter()
        .rev()
        .filter_map(|m| m.get("tool_calls").and_then(Value::as_array))
        .flatten()
        .find(|c| c.get("id").and_then(Value::as_str) == Some(id))
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str)
}

/// An `image_url` part with a base64 `data:` URL as `inlineData` (Gemini's `fileData` takes
/// only files uploaded to Google, not arbitrary URLs).
fn image(part: &Value, at: &str) -> Result<Value, Untranslatable> {
    let (mime, data) = data_url(part, at, "Gemini")?;
    Ok(json!({"inlineData": {"mimeType": mime, "data": data}}))
}

/// An assistant's tool call as a `functionCall` part (its arguments must be a JSON object).
fn function_call(call: &Value, at: &str) -> Result<Value, Untranslatable> {
    let f = call.get("function").ok_or_else(|| {
        Untranslatable::new(
            format!("{at}.function"),
            "is required (only function tools translate)",
        )
    })?;
    let name = f
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| Untranslatable::new(format!("{at}.function.name"), "is required"))?;
    let args = f.get("arguments").and_then(Value::as_str).unwrap_or("{}");
    let args: Value = if args.trim().is_empty() {
        json!({})
    } else {
        serde_json::from_str(args).map_err(|e| {
            Untranslatable::new(format!("{at}.function.arguments"), format!("not JSON: {e}"))
        })?
    };
    if !args.is_object() {
        return Err(Untranslatable::new(
            format!("{at}.function.arguments"),
            "must be a JSON object",
        ));
    }
    let mut part = json!({"functionCall": {"name": name, "args": args}});
    // The signature Gemini gave the call, kept in its id (see `response::SIGNATURE`).
    if let Some((_, sig)) = call
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| id.split_once(super::response::SIGNATURE))
    {
        part["thoughtSignature"] = sig.into();
    }
    Ok(part)
}

/// Function tools as one Gemini tool of `functionDeclarations`.
fn tools(v: &Value) -> Result<Value, Untranslatable> {
    let list = v
        .as_array()
        .ok_or_else(|| Untranslatable::new("tools", "must be an array"))?;
    let decls = list
        .iter()
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
            let mut decl = Map::new();
            decl.insert("name".into(), name.into());
            if let Some(d) = f.get("description").and_then(Value::as_str) {
                decl.insert("description".into(), d.into());
            }
            if let Some(p) = f.get("parameters").filter(|p| p.is_object()) {
                decl.insert("parametersJsonSchema".into(), p.clone());
            }
            Ok(Value::Object(decl))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(json!([{ "functionDeclarations": decls }]))
}

/// `tool_choice` as a `functionCallingConfig`.
fn choice(v: &Value) -> Result<Option<Value>, Untranslatable> {
    Ok(Some(match v {
        Value::Null => return Ok(None),
        Value::String(s) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
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
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => {
            return Err(Untranslatable::new(
                "tool_choice",
                "must be a string or an object",
            ));
        }
    }))
}
