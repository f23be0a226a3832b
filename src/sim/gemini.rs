//! Gemini API response shapes: `generateContent`, its streams (SSE and the JSON array),
//! `countTokens`, `embedContent`, `batchEmbedContents` and Google's error shape.

use serde_json::{Value, json};

use super::shapes::SimRequest;

const RESPONSE_ID: &str = "c2ltLWdlbWluaS0wMDAx";

/// `usageMetadata` with cumulative candidates (`visible` of them so far).
fn usage(sim: &SimRequest, visible: u64, last: bool) -> Value {
    let mut u = json!({
        "promptTokenCount": sim.prompt_tokens,
        "candidatesTokenCount": visible,
        "totalTokenCount": sim.prompt_tokens + visible + if last { sim.reasoning_tokens } else { 0 },
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": sim.prompt_tokens}],
    });
    if sim.cached_tokens > 0 {
        u["cachedContentTokenCount"] = sim.cached_tokens.into();
    }
    if sim.reasoning_tokens > 0 {
        u["thoughtsTokenCount"] = sim.reasoning_tokens.into();
    }
    u
}

fn response(sim: &SimRequest, text: &str, visible: u64, finish: bool) -> Value {
    let mut candidate =
        json!({"content": {"parts": [{"text": text}], "role": "model"}, "index": 0});
    if finish {
        candidate["finishReason"] = "STOP".into();
    }
    let mut v = json!({
        "candidates": [candidate],
        "modelVersion": sim.model,
        "responseId": RESPONSE_ID,
    });
    if !sim.no_usage {
        v["usageMetadata"] = usage(sim, visible, finish);
    }
    v
}

/// `:generateContent`
pub fn generate(sim: &SimRequest) -> String {
    response(sim, &sim.text(), sim.visible_tokens(), true).to_string()
}

/// The chunks of `:streamGenerateContent`, a word each, usage cumulative in every one.
fn chunks(sim: &SimRequest) -> Vec<Value> {
    let n = sim.visible_tokens();
    (0..n.max(1))
        .map(|i| {
            let word = if n == 0 {
                String::new()
            } else if i == 0 {
                SimRequest::word(i).to_string()
            } else {
                format!(" {}", SimRequest::word(i))
            };
            response(sim, &word, (i + 1).min(n), i + 1 >= n)
        })
        .collect()
}

/// `:streamGenerateContent?alt=sse`: one event per chunk (Google ends them with `\r\n\r\n`).
pub fn stream_sse(sim: &SimRequest) -> Vec<String> {
    chunks(sim)
        .iter()
        .map(|c| format!("data: {c}\r\n\r\n"))
        .collect()
}

/// `:streamGenerateContent` without `alt=sse`: one JSON array, an element per frame.
pub fn stream_array(sim: &SimRequest) -> Vec<String> {
    let mut out: Vec<String> = chunks(sim)
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}{c}", if i == 0 { "[" } else { ",\r\n" }))
        .collect();
    out.push("]".to_string());
    out
}

/// The function a request forces (`toolConfig.functionCallingConfig.mode` `ANY`): the first
/// allowed (else declared) one, called with the word `sim` for each string parameter.
pub fn forced_call(req: &Value) -> Option<Value> {
    let config = req.pointer("/toolConfig/functionCallingConfig")?;
    if config.get("mode").and_then(Value::as_str) != Some("ANY") {
        return None;
    }
    let decls: Vec<&Value> = req
        .get("tools")?
        .as_array()?
        .iter()
        .filter_map(|t| t.get("functionDeclarations").and_then(Value::as_array))
        .flatten()
        .collect();
    let allowed = config
        .pointer("/allowedFunctionNames/0")
        .and_then(Value::as_str);
    let decl = decls
        .iter()
        .find(|d| allowed.is_none_or(|a| d.get("name").and_then(Value::as_str) == Some(a)))?;
    let schema = decl
        .get("parametersJsonSchema")
        .or_else(|| decl.get("parameters"));
    let mut args = serde_json::Map::new();
    for (k, p) in schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        if p.get("type")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
            == Some("string".into())
        {
            args.insert(k.clone(), "sim".into());
        }
    }
    Some(json!({"name": decl.get("name")?, "args": args}))
}

/// A `generateContent` response (or the one chunk of a stream) calling `call`.
pub fn call_response(sim: &SimRequest, call: &Value) -> String {
    let mut v = response(sim, "", sim.visible_tokens(), true);
    v["candidates"][0]["content"]["parts"] = json!([{ "functionCall": call }]);
    v.to_string()
}

/// `:countTokens`
pub fn count_tokens(sim: &SimRequest) -> String {
    json!({"totalTokens": sim.prompt_tokens,
           "promptTokensDetails": [{"modality": "TEXT", "tokenCount": sim.prompt_tokens}]})
    .to_string()
}

fn embedding() -> Value {
    json!({"values": [0.0123, -0.0456, 0.0789, -0.0012]})
}

/// `:embedContent` (the API reports no usage for it).
pub fn embed(_sim: &SimRequest) -> String {
    json!({"embedding": embedding()}).to_string()
}

/// `:batchEmbedContents`: one embedding per request.
pub fn batch_embed(req: &Value) -> String {
    let n = req
        .get("requests")
        .and_then(Value::as_array)
        .map_or(1, Vec::len);
    json!({"embeddings": vec![embedding(); n]}).to_string()
}

/// Google's error shape.
pub fn error(status: u16) -> String {
    let (name, msg) = match status {
        400 => ("INVALID_ARGUMENT", "Invalid request (simulated)."),
        401 => ("UNAUTHENTICATED", "API key not valid (simulated)."),
        403 => ("PERMISSION_DENIED", "Permission denied (simulated)."),
        404 => ("NOT_FOUND", "Not found (simulated)."),
        429 => ("RESOURCE_EXHAUSTED", "Quota exceeded (simulated)."),
        503 => ("UNAVAILABLE", "The model is overloaded (simulated)."),
        _ => ("INTERNAL", "Internal error (simulated)."),
    };
    json!({"error": {"code": status, "message": msg, "status": name}}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::{Endpoint, ProviderKind, StreamFacts};

    fn sim() -> SimRequest {
        SimRequest {
            model: "gemini-2.5-flash".into(),
            prompt_tokens: 12,
            output_tokens: 7,
            cached_tokens: 0,
            reasoning_tokens: 2,
            no_usage: false,
        }
    }

    #[test]
    fn the_array_stream_reads_as_the_gateway_reads_it() {
        let frames = stream_array(&sim());
        let body = frames.concat();
        let v: Value = serde_json::from_str(&body).expect("one JSON array");
        assert_eq!(v.as_array().map(Vec::len), Some(5));
        let last = &v[4]["usageMetadata"];
        assert_eq!(
            (
                last["candidatesTokenCount"].as_u64(),
                last["thoughtsTokenCount"].as_u64()
            ),
            (Some(5), Some(2))
        );
        // The gateway's scanner and provider read the same usage from the frames.
        let spec = ProviderKind::Gemini.spec();
        let p = (spec.build)(crate::providers::Build {
            name: "g",
            kind: ProviderKind::Gemini,
            base_url: "http://127.0.0.1:1",
            api_key: Some("k"),
            headers: vec![],
            header_policy: crate::providers::HeaderPolicy::defaults(ProviderKind::Gemini),
            options: &toml::Table::new(),
        })
        .map_err(|e| e.message)
        .expect("builds");
        let mut facts = StreamFacts::default();
        let mut scanner = crate::proxy::jsonarray::ArrayScanner::new(1 << 20);
        for f in &frames {
            scanner.feed(f.as_bytes(), &mut |el| {
                p.stream_event(Endpoint::StreamGenerateContent, None, el, &mut facts);
            });
        }
        assert!(facts.finished);
        assert_eq!(
            facts.usage.map(|u| (u.input, u.output, u.reasoning)),
            Some((12, 7, 2))
        );
    }
}
