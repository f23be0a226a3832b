use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

/// The model the client asked for, as `Translation::response` is given it.
const ASKED: &str = "model-the-client-asked-for";

fn translate(req: Value) -> Result<Value, Untranslatable> {
    let body = serde_json::to_vec(&req).unwrap();
    let out = Translation::ChatViaMessages.request(&body, None)?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_chat_request_with_system_images_tools_and_tool_results_becomes_a_messages_request() {
    let out = translate(json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "user", "content": "Thanks"}
        ],
        "max_completion_tokens": 300,
        "temperature": 0.2,
        "stop": "END",
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "parallel_tool_calls": false,
        "user": "u-42"
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "model": "claude-sonnet-4-5",
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this image, and the weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                // The tool result and the next user text: one user turn, as Anthropic wants.
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "max_tokens": 300,
            "temperature": 0.2,
            "stop_sequences": ["END"],
            "stream": true,
            "tools": [{"name": "weather", "description": "Weather",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-42"}
        })
    );
}

#[test]
fn max_tokens_is_always_set_and_the_route_model_replaces_the_alias() {
    let body = br#"{"model":"fast","messages":[{"role":"user","content":"hi"}]}"#;
    let out = Translation::ChatViaMessages
        .request(body, Some("claude-haiku-4-5"))
        .unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["model"], "claude-haiku-4-5");
    assert_eq!(v["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[test]
fn what_has_no_equivalent_is_refused_naming_the_field() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let cases: Vec<(Value, &str)> = vec![
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"temperature": 1.5}), "temperature"),
        (
            json!({"response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (json!({"audio": {"voice": "alloy"}}), "audio"),
        (json!({"tools": [{"type": "web_search"}]}), "tools[0].type"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
            "messages[0].content[0].type",
        ),
        (
            json!({"messages": [{"role": "function", "content": "x"}]}),
            "messages[0].role",
        ),
        (
            json!({"messages": [{"role": "assistant", "tool_calls": [{"id": "c", "type": "function",
            "function": {"name": "f", "arguments": "not json"}}]}]}),
            "messages[0].tool_calls[0].function.arguments",
        ),
    ];
    for (extra, field) in cases {
        let mut req = base();
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        let err = translate(req).expect_err(field);
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field), "{err}");
    }
    // Default values of the same fields translate (the SDKs send some of them).
    let mut req = base();
    for (k, v) in [
        ("n", json!(1)),
        ("logprobs", json!(false)),
        ("presence_penalty", json!(0)),
        ("response_format", json!({"type": "text"})),
        ("store", json!(false)),
    ] {
        req[k] = v;
    }
    translate(req).unwrap();
}

#[test]
fn a_message_becomes_a_chat_completion_with_normalised_usage() {
    let body = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig"},
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 5}
    });
    let mut t = Translation::ChatViaMessages.response(200, false, false, ASKED);
    assert!(
        t.feed(Bytes::from(serde_json::to_vec(&body).unwrap()))
            .is_empty()
    );
    let out: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "msg_01");
    let choice = &out["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], "Checking.");
    assert_eq!(
        choice["message"]["tool_calls"],
        json!([{"id": "toolu_1", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    assert_eq!(
        out["usage"],
        json!({"prompt_tokens": 115, "completion_tokens": 20, "total_tokens": 135,
               "prompt_tokens_details": {"cached_tokens": 100}})
    );
}

#[test]
fn an_error_keeps_its_message_in_the_openai_shape() {
    let mut t = Translation::ChatViaMessages.response(429, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    ));
    let out: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(
        out,
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}})
    );
}

const STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":12,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\":\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":25}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

fn chunks(out: &[u8]) -> Vec<Value> {
    let text = std::str::from_utf8(out).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").unwrap()).unwrap())
        .collect()
}

#[test]
fn a_stream_becomes_chat_chunks_split_anywhere() {
    // Every split point of the upstream bytes gives the same client stream.
    let whole = {
        let mut t = Translation::ChatViaMessages.response(200, true, true, ASKED);
        let mut out = t.feed(Bytes::from_static(STREAM.as_bytes())).to_vec();
        out.extend_from_slice(&t.finish());
        out
    };
    for cut in (1..STREAM.len()).step_by(7) {
        let mut t = Translation::ChatViaMessages.response(200, true, true, ASKED);
        let mut out = t
            .feed(Bytes::copy_from_slice(&STREAM.as_bytes()[..cut]))
            .to_vec();
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(&STREAM.as_bytes()[cut..])));
        out.extend_from_slice(&t.finish());
        assert_eq!(chunks(&out).len(), chunks(&whole).len(), "split at {cut}");
    }
    let c = chunks(&whole);
    assert!(
        c.iter()
            .all(|c| c["object"] == "chat.completion.chunk" && c["id"] == "msg_1")
    );
    assert_eq!(
        c[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Hello");
    let args: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let start = c
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"] == "toolu_9")
        .unwrap();
    assert_eq!(
        start["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "weather"
    );
    let finish: Vec<_> = c
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    // include_usage: the last chunk has no choices and the stream's usage, normalised.
    let last = c.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 15, "completion_tokens": 25, "total_tokens": 40,
               "prompt_tokens_details": {"cached_tokens": 3}})
    );
    // Without include_usage there is no usage chunk.
    let mut t = Translation::ChatViaMessages.response(200, true, false, ASKED);
    let mut out = t.feed(Bytes::from_static(STREAM.as_bytes())).to_vec();
    out.extend_from_slice(&t.finish());
    assert!(chunks(&out).iter().all(|c| c.get("usage").is_none()));
}

#[test]
fn an_error_event_ends_the_stream_with_an_openai_error() {
    let mut t = Translation::ChatViaMessages.response(200, true, false, ASKED);
    let out = t.feed(Bytes::from_static(
        b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
    ));
    let text = std::str::from_utf8(&out).unwrap();
    let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["type"], "overloaded_error");
    assert_eq!(v["error"]["message"], "Overloaded");
}

#[test]
fn only_chat_completions_translate_and_only_to_a_messages_provider() {
    use crate::providers::{Endpoint, ProviderKind};
    let anthropic = |e: Endpoint| matches!(e, Endpoint::Messages | Endpoint::CountTokens);
    let kind = ProviderKind::Anthropic;
    assert_eq!(
        Translation::between(Endpoint::ChatCompletions, kind, anthropic, false, "m"),
        Some(Translation::ChatViaMessages)
    );
    assert_eq!(
        Translation::between(Endpoint::Embeddings, kind, anthropic, false, "m"),
        None
    );
    assert_eq!(
        Translation::between(Endpoint::ChatCompletions, kind, |_| false, false, "m"),
        None
    );
}

fn to_chat(req: Value, openai: bool) -> Result<Value, Untranslatable> {
    let body = serde_json::to_vec(&req).unwrap();
    let out = Translation::MessagesViaChat { openai }.request(&body, None)?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_messages_request_with_tools_and_results_becomes_a_chat_request() {
    let out = to_chat(
        json!({
            "model": "gpt-4o-mini",
            "max_tokens": 100,
            "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "AAAA"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]},
                    {"type": "text", "text": "Thanks"}
                ]}
            ],
            "stream": true,
            "stop_sequences": ["END"],
            "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "u-1"}
        }),
        true,
    )
    .unwrap();
    assert_eq!(
        out,
        json!({
            "model": "gpt-4o-mini",
            "max_completion_tokens": 100,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "user", "content": [{"type": "text", "text": "Thanks"}]}
            ],
            "stream": true,
            "stream_options": {"include_usage": true},
            "stop": ["END"],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "user": "u-1"
        })
    );
    // An OpenAI-compatible server gets the classic field.
    let v = to_chat(
        json!({"model": "m", "max_tokens": 5, "messages": []}),
        false,
    )
    .unwrap();
    assert_eq!(v["max_tokens"], 5);
    for (extra, field) in [
        (json!({"top_k": 5}), "top_k"),
        (
            json!({"thinking": {"type": "enabled", "budget_tokens": 1024}}),
            "thinking",
        ),
        (
            json!({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}),
            "tools[0].type",
        ),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "document"}]}]}),
            "messages[0].content[0].type",
        ),
    ] {
        let mut req = json!({"model": "m", "max_tokens": 5, "messages": []});
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        assert_eq!(to_chat(req, true).unwrap_err().field, field);
    }
}

#[test]
fn a_chat_completion_becomes_a_message_and_errors_get_anthropic_types() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant", "content": "Checking.",
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 40}}
    });
    let mut t = Translation::MessagesViaChat { openai: true }.response(200, false, false, ASKED);
    t.feed(Bytes::from(serde_json::to_vec(&body).unwrap()));
    let out: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(
        out,
        json!({"id": "chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
               "content": [{"type": "text", "text": "Checking."},
                           {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}],
               "stop_reason": "tool_use", "stop_sequence": null,
               "usage": {"input_tokens": 60, "cache_read_input_tokens": 40, "cache_creation_input_tokens": 0, "output_tokens": 20}})
    );
    let mut t = Translation::MessagesViaChat { openai: true }.response(429, false, false, ASKED);
    t.feed(Bytes::from_static(br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#));
    let out: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(
        out,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limit reached"}})
    );
}

#[test]
fn chat_chunks_become_a_messages_stream() {
    let chunks = [
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"weather","arguments":""}}]},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":\"Paris\"}"}}]},"finish_reason":null}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        r#"{"id":"c1","object":"chat.completion.chunk","model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#,
        "[DONE]",
    ];
    let upstream: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
    let mut t = Translation::MessagesViaChat { openai: true }.response(200, true, false, ASKED);
    let mut out = Vec::new();
    for piece in upstream.as_bytes().chunks(11) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(piece)));
    }
    out.extend_from_slice(&t.finish());
    let events = message_events(&out);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert_eq!(events[0].1["message"]["model"], "gpt-4o-mini");
    assert_eq!(
        events[5].1["content_block"],
        json!({"type": "tool_use", "id": "call_1", "name": "weather", "input": {}})
    );
    assert_eq!(events[6].1["delta"]["partial_json"], "{\"city\":\"Paris\"}");
    assert_eq!(events[6].1["index"], 1);
    assert_eq!(events[8].1["delta"]["stop_reason"], "tool_use");
    assert_eq!(events[8].1["usage"]["input_tokens"], 10);
    assert_eq!(events[8].1["usage"]["output_tokens"], 5);
}

// ------------------------------------------------------------ chat completions via Gemini

fn to_gemini(req: Value) -> Result<Value, Untranslatable> {
    let body = serde_json::to_vec(&req).unwrap();
    let out = Translation::ChatViaGemini { stream: false }.request(&body, None)?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_chat_request_with_system_images_tools_and_tool_results_becomes_a_gemini_request() {
    let out = to_gemini(json!({
        "model": "gemini-2.5-flash",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
            ]},
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": "{\"hour\":9}"},
            {"role": "user", "content": "Thanks"}
        ],
        "max_completion_tokens": 300,
        "temperature": 1.5,
        "top_p": 0.9,
        "stop": ["END", "STOP"],
        "seed": 7,
        "stream": true,
        "stream_options": {"include_usage": true},
        "response_format": {"type": "json_object"},
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                  "required": ["city"], "additionalProperties": false}}},
                  {"type": "function", "function": {"name": "time"}}],
        "tool_choice": {"type": "function", "function": {"name": "weather"}},
        "parallel_tool_calls": true,
        "user": "u-42"
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "systemInstruction": {"parts": [{"text": "Be brief."}, {"text": "Use metric units."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "What is in this image, and the weather?"},
                    {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}
                ]},
                {"role": "model", "parts": [
                    {"text": "Checking."},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}},
                    {"functionCall": {"name": "time", "args": {}}}
                ]},
                // Both results and the next user text: one user turn; names from the calls.
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "weather", "response": {"output": "sunny"}}},
                    {"functionResponse": {"name": "time", "response": {"hour": 9}}},
                    {"text": "Thanks"}
                ]}
            ],
            "generationConfig": {
                "maxOutputTokens": 300, "temperature": 1.5, "topP": 0.9,
                "stopSequences": ["END", "STOP"], "seed": 7,
                "responseMimeType": "application/json"
            },
            "tools": [{"functionDeclarations": [
                {"name": "weather", "description": "Weather",
                 "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}},
                                          "required": ["city"], "additionalProperties": false}},
                {"name": "time"}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}}
        })
    );
}

#[test]
fn fields_without_a_gemini_equivalent_are_refused_by_name() {
    let base =
        || json!({"model": "gemini-2.5-flash", "messages": [{"role": "user", "content": "hi"}]});
    let refused = |k: &str, v: Value| {
        let mut r = base();
        r[k] = v;
        to_gemini(r).unwrap_err().field
    };
    assert_eq!(refused("n", json!(2)), "n");
    assert_eq!(refused("logprobs", json!(true)), "logprobs");
    assert_eq!(refused("logit_bias", json!({"50256": -100})), "logit_bias");
    assert_eq!(
        refused("parallel_tool_calls", json!(false)),
        "parallel_tool_calls"
    );
    assert_eq!(refused("audio", json!({"voice": "alloy"})), "audio");
    assert_eq!(
        refused(
            "response_format",
            json!({"type": "json_schema", "json_schema": {}})
        ),
        "response_format.type"
    );
    assert_eq!(
        refused(
            "tools",
            json!([{"type": "custom", "custom": {"name": "x"}}])
        ),
        "tools[0].type"
    );
    // An image by URL: Gemini takes only uploaded files or inline data.
    let mut r = base();
    r["messages"] = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}]}]);
    assert_eq!(
        to_gemini(r).unwrap_err().field,
        "messages[0].content[0].image_url.url"
    );
    // A tool result whose call is not in the conversation: Gemini needs the function's name.
    let mut r = base();
    r["messages"] = json!([{"role": "tool", "tool_call_id": "call_x", "content": "1"}]);
    assert_eq!(to_gemini(r).unwrap_err().field, "messages[0].tool_call_id");
    // Defaults and nulls pass; the model is in the path, not the body.
    let mut r = base();
    r["n"] = json!(1);
    r["logprobs"] = json!(false);
    r["max_tokens"] = Value::Null;
    let out = to_gemini(r).unwrap();
    assert_eq!(
        out,
        json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]})
    );
}

#[test]
fn the_gemini_translation_picks_the_method_and_sse_query_by_stream() {
    use crate::providers::{Endpoint, ProviderKind};
    let gemini = |e: Endpoint| {
        matches!(
            e,
            Endpoint::GenerateContent | Endpoint::StreamGenerateContent
        )
    };
    let plain = Translation::between(
        Endpoint::ChatCompletions,
        ProviderKind::Gemini,
        gemini,
        false,
        "m",
    )
    .unwrap();
    assert_eq!(plain.upstream_endpoint(), Endpoint::GenerateContent);
    assert_eq!(plain.upstream_query(), None);
    let streamed = Translation::between(
        Endpoint::ChatCompletions,
        ProviderKind::Gemini,
        gemini,
        true,
        "m",
    )
    .unwrap();
    assert_eq!(
        streamed.upstream_endpoint(),
        Endpoint::StreamGenerateContent
    );
    assert_eq!(streamed.upstream_query(), Some("alt=sse"));
    // Embeddings do not translate to Gemini.
    assert_eq!(
        Translation::between(
            Endpoint::Embeddings,
            ProviderKind::Gemini,
            gemini,
            false,
            "m"
        ),
        None
    );
}

const GEMINI_ANSWER: &str = r#"{"candidates":[{"content":{"parts":[
    {"text":"Thinking about it","thought":true},{"text":"Let me check."},
    {"functionCall":{"name":"weather","args":{"city":"Paris"}}}],"role":"model"},
    "finishReason":"STOP","index":0}],
  "usageMetadata":{"promptTokenCount":1200,"candidatesTokenCount":40,"totalTokenCount":1565,
    "cachedContentTokenCount":1000,"thoughtsTokenCount":300,"toolUsePromptTokenCount":25},
  "modelVersion":"gemini-2.5-flash","responseId":"resp-1"}"#;

#[test]
fn a_gemini_answer_becomes_a_chat_completion_with_tool_calls_and_exact_usage() {
    let mut t = Translation::ChatViaGemini { stream: false }.response(200, false, false, ASKED);
    assert!(
        t.feed(Bytes::from_static(GEMINI_ANSWER.as_bytes()))
            .is_empty()
    );
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["id"], "resp-1");
    assert_eq!(v["model"], "gemini-2.5-flash");
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    // The thought is left out.
    assert_eq!(c["message"]["content"], "Let me check.");
    assert_eq!(
        c["message"]["tool_calls"],
        json!([{"id": "call_0", "type": "function",
                "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}])
    );
    // The gateway's metering of the same body (src/providers/gemini.rs): input 1225, output
    // 340, cached 1000, reasoning 300.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 1225, "completion_tokens": 340, "total_tokens": 1565,
               "prompt_tokens_details": {"cached_tokens": 1000},
               "completion_tokens_details": {"reasoning_tokens": 300}})
    );
}

#[test]
fn gemini_finish_reasons_map_to_openai_ones() {
    for (gemini, openai) in [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
    ] {
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"text":"x"}}],"role":"model"}},"finishReason":"{gemini}"}}]}}"#
        );
        let mut t = Translation::ChatViaGemini { stream: false }.response(200, false, false, ASKED);
        t.feed(Bytes::from(body));
        let v: Value = serde_json::from_slice(&t.finish()).unwrap();
        assert_eq!(v["choices"][0]["finish_reason"], openai, "{gemini}");
    }
    // A blocked prompt has no candidate.
    let mut t = Translation::ChatViaGemini { stream: false }.response(200, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":8}}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "content_filter");
    assert_eq!(v["usage"]["prompt_tokens"], 8);
}

#[test]
fn a_google_error_becomes_an_openai_error() {
    let mut t = Translation::ChatViaGemini { stream: false }.response(429, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "Quota exceeded.", "type": "rate_limit_error",
                         "param": null, "code": "RESOURCE_EXHAUSTED"}})
    );
}

/// A `streamGenerateContent?alt=sse` stream as Google sends it (`\r\n\r\n` between events):
/// text, then a function call with the finish reason; usage cumulative in every chunk.
const GEMINI_STREAM: &str = concat!(
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Let me\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":90,\"candidatesTokenCount\":2,\"totalTokenCount\":92},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r-9\"}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\" check.\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":90,\"candidatesTokenCount\":4,\"totalTokenCount\":94},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r-9\"}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Paris\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":90,\"candidatesTokenCount\":11,\"totalTokenCount\":121,\"cachedContentTokenCount\":64,\"thoughtsTokenCount\":20},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"r-9\"}\r\n\r\n",
);

#[test]
fn a_gemini_stream_becomes_chat_chunks_split_anywhere() {
    let run = |cut: usize, include_usage: bool| {
        let mut t = Translation::ChatViaGemini { stream: true }.response(
            200,
            true,
            include_usage,
            "gemini-2.5-flash",
        );
        let b = GEMINI_STREAM.as_bytes();
        let mut out = t.feed(Bytes::copy_from_slice(&b[..cut])).to_vec();
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(&b[cut..])));
        out.extend_from_slice(&t.finish());
        out
    };
    let whole = run(0, true);
    for cut in (1..GEMINI_STREAM.len()).step_by(5) {
        assert_eq!(
            chunks(&run(cut, true)).len(),
            chunks(&whole).len(),
            "split at {cut}"
        );
    }
    let c = chunks(&whole);
    assert!(c.iter().all(|c| c["object"] == "chat.completion.chunk"
        && c["id"] == "r-9"
        && c["model"] == "gemini-2.5-flash"));
    assert_eq!(
        c[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let call = c
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .unwrap();
    assert_eq!(
        call,
        &vec![json!({"index": 0, "id": "call_0", "type": "function",
                     "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}})]
    );
    let finish: Vec<_> = c
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    // The last chunk's (cumulative) usage, as metered.
    let last = c.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(
        last["usage"],
        json!({"prompt_tokens": 90, "completion_tokens": 31, "total_tokens": 121,
               "prompt_tokens_details": {"cached_tokens": 64},
               "completion_tokens_details": {"reasoning_tokens": 20}})
    );
    assert!(
        chunks(&run(0, false))
            .iter()
            .all(|c| c.get("usage").is_none())
    );
}

#[test]
fn a_gemini_stream_error_ends_the_stream_with_an_openai_error() {
    let mut t = Translation::ChatViaGemini { stream: true }.response(200, true, false, ASKED);
    let out = t.feed(Bytes::from_static(
        b"data: {\"error\":{\"code\":503,\"message\":\"The model is overloaded.\",\"status\":\"UNAVAILABLE\"}}\r\n\r\n",
    ));
    let text = std::str::from_utf8(&out).unwrap();
    let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["message"], "The model is overloaded.");
    assert_eq!(v["error"]["code"], "UNAVAILABLE");
    // Nothing after the error.
    assert!(
        t.feed(Bytes::from_static(GEMINI_STREAM.as_bytes()))
            .is_empty()
    );
}

// ---------------------------------------------------- chat completions via Bedrock Converse

fn to_converse(req: Value) -> Result<Value, Untranslatable> {
    let body = serde_json::to_vec(&req).unwrap();
    let out = Translation::ChatViaConverse { stream: false }.request(&body, None)?;
    Ok(serde_json::from_slice(&out).unwrap())
}

#[test]
fn a_chat_request_with_system_images_tools_and_tool_results_becomes_a_converse_request() {
    let out = to_converse(json!({
        "model": ASKED,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image, and the weather?"},
                {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,/9j/4AAQ"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "tooluse_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "tooluse_1", "content": "sunny"},
            {"role": "user", "content": "Thanks"}
        ],
        "max_tokens": 300,
        "temperature": 0.2,
        "top_p": 0.9,
        "stop": "END",
        "stream": true,
        "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather",
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": "required",
        "user": "u-42"
    }))
    .unwrap();
    assert_eq!(
        out,
        json!({
            "system": [{"text": "Be brief."}],
            "messages": [
                {"role": "user", "content": [
                    {"text": "What is in this image, and the weather?"},
                    {"image": {"format": "jpeg", "source": {"bytes": "/9j/4AAQ"}}}
                ]},
                {"role": "assistant", "content": [
                    {"toolUse": {"toolUseId": "tooluse_1", "name": "weather", "input": {"city": "Paris"}}}
                ]},
                {"role": "user", "content": [
                    {"toolResult": {"toolUseId": "tooluse_1", "content": [{"text": "sunny"}]}},
                    {"text": "Thanks"}
                ]}
            ],
            "inferenceConfig": {"maxTokens": 300, "temperature": 0.2, "topP": 0.9, "stopSequences": ["END"]},
            "toolConfig": {
                "tools": [{"toolSpec": {"name": "weather", "description": "Weather",
                           "inputSchema": {"json": {"type": "object", "properties": {"city": {"type": "string"}}}}}}],
                "toolChoice": {"any": {}}
            }
        })
    );
}

#[test]
fn fields_without_a_converse_equivalent_are_refused_by_name() {
    let base = || json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    let refused = |k: &str, v: Value| {
        let mut r = base();
        r[k] = v;
        to_converse(r).unwrap_err().field
    };
    assert_eq!(refused("n", json!(3)), "n");
    assert_eq!(refused("seed", json!(1)), "seed");
    assert_eq!(refused("presence_penalty", json!(0.5)), "presence_penalty");
    assert_eq!(
        refused("response_format", json!({"type": "json_object"})),
        "response_format"
    );
    assert_eq!(
        refused("parallel_tool_calls", json!(false)),
        "parallel_tool_calls"
    );
    assert_eq!(refused("tool_choice", json!("none")), "tool_choice");
    let mut r = base();
    r["messages"] = json!([{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}}]}]);
    assert_eq!(
        to_converse(r).unwrap_err().field,
        "messages[0].content[0].image_url.url"
    );
}

#[test]
fn the_bedrock_translation_picks_the_operation_by_stream() {
    use crate::providers::{Endpoint, ProviderKind};
    let bedrock = |e: Endpoint| {
        matches!(
            e,
            Endpoint::BedrockConverse | Endpoint::BedrockConverseStream
        )
    };
    let t = |stream| {
        Translation::between(
            Endpoint::ChatCompletions,
            ProviderKind::Bedrock,
            bedrock,
            stream,
            "m",
        )
        .unwrap()
        .upstream_endpoint()
    };
    assert_eq!(t(false), Endpoint::BedrockConverse);
    assert_eq!(t(true), Endpoint::BedrockConverseStream);
}

#[test]
fn a_converse_answer_becomes_a_chat_completion() {
    let mut t = Translation::ChatViaConverse { stream: false }.response(200, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"output":{"message":{"role":"assistant","content":[{"text":"Let me check."},
            {"toolUse":{"toolUseId":"tooluse_7","name":"weather","input":{"city":"Paris"}}}]}},
            "stopReason":"tool_use","usage":{"inputTokens":100,"outputTokens":20,"totalTokens":150,
            "cacheReadInputTokens":25,"cacheWriteInputTokens":5},"metrics":{"latencyMs":300}}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    // Converse names no model: the client's is named.
    assert_eq!(v["model"], ASKED);
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "tool_calls");
    assert_eq!(c["message"]["content"], "Let me check.");
    assert_eq!(c["message"]["tool_calls"][0]["id"], "tooluse_7");
    assert_eq!(
        c["message"]["tool_calls"][0]["function"],
        json!({"name": "weather", "arguments": "{\"city\":\"Paris\"}"})
    );
    // As metered (src/providers/bedrock/usage.rs): input 130 with 25 read from the cache.
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 130, "completion_tokens": 20, "total_tokens": 150,
               "prompt_tokens_details": {"cached_tokens": 25}})
    );
    let mut t = Translation::ChatViaConverse { stream: false }.response(429, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"message":"Too many requests, please wait before trying again."}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(
        v["error"]["message"],
        "Too many requests, please wait before trying again."
    );
}

fn converse_stream() -> Vec<u8> {
    use crate::proxy::eventstream::encode_event;
    [
        ("messageStart", r#"{"role":"assistant"}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Let me"}}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":" check."}}"#),
        ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        ("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_7","name":"weather"}}}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":"}}}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"\"Paris\"}"}}}"#),
        ("contentBlockStop", r#"{"contentBlockIndex":1}"#),
        ("messageStop", r#"{"stopReason":"tool_use"}"#),
        ("metadata", r#"{"usage":{"inputTokens":100,"outputTokens":20,"totalTokens":145,"cacheReadInputTokens":25},"metrics":{"latencyMs":300}}"#),
    ]
    .iter()
    .flat_map(|(name, payload)| encode_event(name, payload.as_bytes()))
    .collect()
}

#[test]
fn a_converse_stream_becomes_chat_chunks_split_anywhere() {
    let stream = converse_stream();
    let run = |cut: usize| {
        let mut t = Translation::ChatViaConverse { stream: true }.response(200, true, true, ASKED);
        let mut out = t.feed(Bytes::copy_from_slice(&stream[..cut])).to_vec();
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(&stream[cut..])));
        out.extend_from_slice(&t.finish());
        out
    };
    let whole = run(0);
    for cut in (1..stream.len()).step_by(3) {
        assert_eq!(
            chunks(&run(cut)).len(),
            chunks(&whole).len(),
            "split at {cut}"
        );
    }
    let c = chunks(&whole);
    assert!(c.iter().all(|c| c["model"] == ASKED), "the client's model");
    let text: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(text, "Let me check.");
    let args: String = c
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, "{\"city\":\"Paris\"}");
    let finish: Vec<_> = c
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    assert_eq!(
        c.last().unwrap()["usage"],
        json!({"prompt_tokens": 125, "completion_tokens": 20, "total_tokens": 145,
               "prompt_tokens_details": {"cached_tokens": 25}})
    );
}

#[test]
fn a_converse_stream_exception_or_corrupt_frame_ends_with_an_openai_error() {
    use crate::proxy::eventstream::encode;
    let mut t = Translation::ChatViaConverse { stream: true }.response(200, true, false, ASKED);
    let out = t.feed(Bytes::from(encode(
        &[
            (":message-type", "exception"),
            (":exception-type", "throttlingException"),
            (":content-type", "application/json"),
        ],
        br#"{"message":"Too many tokens, please wait before trying again."}"#,
    )));
    let text = std::str::from_utf8(&out).unwrap();
    let v: Value = serde_json::from_str(text.trim().strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "throttlingException");

    let mut bad = converse_stream();
    bad[20] ^= 0xff; // inside the first message: its CRC fails
    let mut t = Translation::ChatViaConverse { stream: true }.response(200, true, false, ASKED);
    let mut out = t.feed(Bytes::from(bad)).to_vec();
    out.extend_from_slice(&t.finish());
    let text = std::str::from_utf8(&out).unwrap();
    assert!(text.contains("event stream is corrupt"), "{text}");
    assert!(!text.contains("[DONE]"));
}

#[test]
fn empty_assistant_text_beside_tool_calls_is_left_out_for_gemini_and_bedrock() {
    let req = json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}
    ]});
    let g = to_gemini(req.clone()).unwrap();
    assert_eq!(
        g["contents"][1]["parts"],
        json!([{"functionCall": {"name": "weather", "args": {}}}])
    );
    let b = to_converse(req).unwrap();
    assert_eq!(
        b["messages"][1]["content"],
        json!([{"toolUse": {"toolUseId": "c1", "name": "weather", "input": {}}}])
    );
}

#[test]
fn a_gemini_thought_signature_rides_in_the_tool_call_id_and_comes_back() {
    let mut t = Translation::ChatViaGemini { stream: true }.response(200, true, false, ASKED);
    let out = t.feed(Bytes::from_static(
        b"data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{}},\"thoughtSignature\":\"CpkBAb4+9vs=\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"responseId\":\"r\"}\r\n\r\n",
    ));
    let c = chunks(&out);
    let id = c
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].as_str())
        .unwrap()
        .to_string();
    assert_eq!(id, "call_0~ts~CpkBAb4+9vs=");
    let g = to_gemini(json!({"model": "m", "messages": [
        {"role": "user", "content": "Weather?"},
        {"role": "assistant", "content": null, "tool_calls": [
            {"id": id, "type": "function", "function": {"name": "weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": id, "content": "sunny"}
    ]}))
    .unwrap();
    assert_eq!(
        g["contents"][1]["parts"][0],
        json!({"functionCall": {"name": "weather", "args": {}}, "thoughtSignature": "CpkBAb4+9vs="})
    );
    assert_eq!(
        g["contents"][2]["parts"][0]["functionResponse"]["name"],
        "weather"
    );
}

// ------------------------------------- Anthropic Messages via Gemini and Converse (through chat)

/// The Messages events of a translated stream, as (name, data).
fn message_events(out: &[u8]) -> Vec<(String, Value)> {
    std::str::from_utf8(out)
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_string(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect()
}

#[test]
fn messages_clients_reach_gemini_and_bedrock_through_chat() {
    use crate::providers::{Endpoint, ProviderKind};
    let none = |_: Endpoint| false;
    for (kind, stream, t) in [
        (
            ProviderKind::Gemini,
            false,
            Translation::MessagesViaGemini { stream: false },
        ),
        (
            ProviderKind::Gemini,
            true,
            Translation::MessagesViaGemini { stream: true },
        ),
        (
            ProviderKind::Bedrock,
            true,
            Translation::MessagesViaConverse { stream: true },
        ),
    ] {
        assert_eq!(
            Translation::between(Endpoint::Messages, kind, none, stream, "m"),
            Some(t)
        );
    }
    let t = Translation::MessagesViaGemini { stream: true };
    assert_eq!(t.upstream_endpoint(), Endpoint::StreamGenerateContent);
    assert_eq!(t.upstream_query(), Some("alt=sse"));
    let t = Translation::MessagesViaConverse { stream: false };
    assert_eq!(t.upstream_endpoint(), Endpoint::BedrockConverse);
    assert_eq!(t.upstream_query(), None);

    let req = json!({"model": "m", "max_tokens": 50, "system": "Be terse.", "stream": true,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]}],
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}]});
    let body = serde_json::to_vec(&req).unwrap();
    let g: Value = serde_json::from_slice(
        &Translation::MessagesViaGemini { stream: true }
            .request(&body, None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(g["systemInstruction"]["parts"][0]["text"], "Be terse.");
    assert_eq!(g["contents"][0]["parts"][0]["text"], "Weather in Paris?");
    assert_eq!(g["generationConfig"]["maxOutputTokens"], 50);
    assert_eq!(g["tools"][0]["functionDeclarations"][0]["name"], "weather");
    let c: Value = serde_json::from_slice(
        &Translation::MessagesViaConverse { stream: true }
            .request(&body, None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(c["system"][0]["text"], "Be terse.");
    assert_eq!(c["inferenceConfig"]["maxTokens"], 50);
    assert_eq!(c["toolConfig"]["tools"][0]["toolSpec"]["name"], "weather");

    // Refused by the first leg, named as the client wrote it; by the second, with a note.
    let top_k = serde_json::to_vec(&json!({"model": "m", "max_tokens": 5, "top_k": 3,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    let e = Translation::MessagesViaGemini { stream: false }
        .request(&top_k, None)
        .unwrap_err();
    assert_eq!(e.field, "top_k");
    let url_image = serde_json::to_vec(&json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": [{"type": "image",
            "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}))
    .unwrap();
    let e = Translation::MessagesViaConverse { stream: false }
        .request(&url_image, None)
        .unwrap_err();
    assert!(e.field.starts_with("messages[0].content"), "{e}");
    assert!(e.reason.contains("OpenAI's chat format"), "{e}");
}

#[test]
fn a_gemini_answer_and_a_google_error_reach_a_messages_client() {
    let mut t = Translation::MessagesViaGemini { stream: false }.response(200, false, false, ASKED);
    assert!(
        t.feed(Bytes::from_static(GEMINI_ANSWER.as_bytes()))
            .is_empty()
    );
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "gemini-2.5-flash");
    assert_eq!(v["stop_reason"], "tool_use");
    assert_eq!(
        v["content"],
        json!([{"type": "text", "text": "Let me check."},
               {"type": "tool_use", "id": "call_0", "name": "weather", "input": {"city": "Paris"}}])
    );
    // As metered: input 1225 of which 1000 cached, output 340 (thoughts included).
    assert_eq!(v["usage"]["input_tokens"], 225);
    assert_eq!(v["usage"]["cache_read_input_tokens"], 1000);
    assert_eq!(v["usage"]["output_tokens"], 340);

    let mut t = Translation::MessagesViaGemini { stream: false }.response(429, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"error":{"code":429,"message":"Quota exceeded.","status":"RESOURCE_EXHAUSTED"}}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(
        v,
        json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Quota exceeded."}})
    );
    let mut t =
        Translation::MessagesViaConverse { stream: false }.response(400, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"message":"Malformed input request."}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["message"], "Malformed input request.");
}

#[test]
fn gemini_and_converse_streams_become_messages_streams_split_anywhere() {
    let converse = converse_stream();
    let cases: [(Translation, &[u8], u64, u64, u64); 2] = [
        // Gemini: input 90 of which 64 cached; output 11 + 20 thoughts.
        (
            Translation::MessagesViaGemini { stream: true },
            GEMINI_STREAM.as_bytes(),
            26,
            64,
            31,
        ),
        // Converse: input 100 + 25 read from the cache, output 20.
        (
            Translation::MessagesViaConverse { stream: true },
            &converse,
            100,
            25,
            20,
        ),
    ];
    for (translation, upstream, input, cached, output) in cases {
        let run = |cut: usize| {
            let mut t = translation.response(200, true, false, ASKED);
            let mut out = t.feed(Bytes::copy_from_slice(&upstream[..cut])).to_vec();
            out.extend_from_slice(&t.feed(Bytes::copy_from_slice(&upstream[cut..])));
            out.extend_from_slice(&t.finish());
            out
        };
        let whole = run(0);
        // The same events at every split (Converse's message id is made per stream).
        let without_id = |out: &[u8]| {
            let mut e = message_events(out);
            e[0].1["message"]["id"] = Value::Null;
            e
        };
        let events = without_id(&whole);
        for cut in (1..upstream.len()).step_by(7) {
            assert_eq!(
                without_id(&run(cut)),
                events,
                "{translation:?} split at {cut}"
            );
        }
        // Deltas merged: Gemini sends a call's arguments whole, Converse in pieces.
        let mut names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
        names.dedup();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ],
            "{translation:?}"
        );
        let text: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "Let me check.");
        assert_eq!(events[5].1["content_block"]["name"], "weather");
        let args: String = events
            .iter()
            .filter_map(|(_, e)| e["delta"]["partial_json"].as_str())
            .collect();
        assert_eq!(args, "{\"city\":\"Paris\"}");
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "tool_use");
        assert_eq!(delta["usage"]["input_tokens"], input);
        assert_eq!(delta["usage"]["cache_read_input_tokens"], cached);
        assert_eq!(delta["usage"]["output_tokens"], output);
    }
}

// ------------------------------------------------------- models of a Vertex AI provider

#[test]
fn vertex_models_translate_by_publisher_claude_as_messages_gemini_as_generate_content() {
    use crate::providers::{Endpoint, ProviderKind};
    let vertex = |e: Endpoint| {
        matches!(
            e,
            Endpoint::GenerateContent
                | Endpoint::StreamGenerateContent
                | Endpoint::VertexRawPredict
                | Endpoint::VertexStreamRawPredict
                | Endpoint::CountTokens
        )
    };
    let claude = "claude-sonnet-4-5@20250929";
    let between = |e, stream, model| {
        Translation::between(e, ProviderKind::Vertex, vertex, stream, model).unwrap()
    };
    let t = between(Endpoint::ChatCompletions, false, claude);
    assert_eq!(t, Translation::ChatViaVertexClaude { stream: false });
    assert_eq!(t.upstream_endpoint(), Endpoint::VertexRawPredict);
    let t = between(Endpoint::Messages, true, claude);
    assert_eq!(t, Translation::MessagesViaVertexClaude { stream: true });
    assert_eq!(t.upstream_endpoint(), Endpoint::VertexStreamRawPredict);
    assert_eq!(
        between(Endpoint::ChatCompletions, true, "gemini-2.5-flash"),
        Translation::ChatViaGemini { stream: true }
    );
    assert_eq!(
        between(Endpoint::Messages, false, "gemini-2.5-flash"),
        Translation::MessagesViaGemini { stream: false }
    );

    // Chat to Claude on Vertex: a Messages body without `model`, with Vertex's version.
    let chat = serde_json::to_vec(&json!({"model": "claude-sonnet-4-5@20250929",
        "messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}],
        "stream": true}))
    .unwrap();
    let b: Value = serde_json::from_slice(
        &Translation::ChatViaVertexClaude { stream: true }
            .request(&chat, None)
            .unwrap(),
    )
    .unwrap();
    assert!(b.get("model").is_none(), "{b}");
    assert_eq!(b["anthropic_version"], "vertex-2023-10-16");
    assert_eq!(b["system"][0]["text"], "Be terse.");
    assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
    assert_eq!(b["stream"], true);
    // A Messages client's own body: only the model leaves, its version stays.
    let messages = serde_json::to_vec(&json!({"model": "claude-sonnet-4-5@20250929",
        "anthropic_version": "vertex-2023-10-16", "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}]}))
    .unwrap();
    let b: Value = serde_json::from_slice(
        &Translation::MessagesViaVertexClaude { stream: false }
            .request(&messages, None)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        b,
        json!({"anthropic_version": "vertex-2023-10-16", "max_tokens": 5,
               "messages": [{"role": "user", "content": "hi"}]})
    );
    // Its answer is the client's format already: passed as it comes.
    let mut t =
        Translation::MessagesViaVertexClaude { stream: true }.response(200, true, false, ASKED);
    let event = Bytes::from_static(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    assert_eq!(t.feed(event.clone()), event);
    assert!(t.finish().is_empty());
    // Claude's answer on Vertex to a chat client: as from the Messages API.
    let mut t =
        Translation::ChatViaVertexClaude { stream: false }.response(200, false, false, ASKED);
    t.feed(Bytes::from_static(
        br#"{"id":"msg_vrtx_1","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929",
            "content":[{"type":"text","text":"Bonjour."}],"stop_reason":"end_turn",
            "usage":{"input_tokens":17,"output_tokens":9}}"#,
    ));
    let v: Value = serde_json::from_slice(&t.finish()).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Bonjour.");
    assert_eq!(v["usage"]["prompt_tokens"], 17);
    assert_eq!(v["usage"]["completion_tokens"], 9);
}
