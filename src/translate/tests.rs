use bytes::Bytes;
use serde_json::{Value, json};

use super::*;

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
    let mut t = Translation::ChatViaMessages.response(200, false, false);
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
    let mut t = Translation::ChatViaMessages.response(429, false, false);
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
        let mut t = Translation::ChatViaMessages.response(200, true, true);
        let mut out = t.feed(Bytes::from_static(STREAM.as_bytes())).to_vec();
        out.extend_from_slice(&t.finish());
        out
    };
    for cut in (1..STREAM.len()).step_by(7) {
        let mut t = Translation::ChatViaMessages.response(200, true, true);
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
    let mut t = Translation::ChatViaMessages.response(200, true, false);
    let mut out = t.feed(Bytes::from_static(STREAM.as_bytes())).to_vec();
    out.extend_from_slice(&t.finish());
    assert!(chunks(&out).iter().all(|c| c.get("usage").is_none()));
}

#[test]
fn an_error_event_ends_the_stream_with_an_openai_error() {
    let mut t = Translation::ChatViaMessages.response(200, true, false);
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
    use crate::providers::Endpoint;
    let anthropic = |e: Endpoint| matches!(e, Endpoint::Messages | Endpoint::CountTokens);
    assert_eq!(
        Translation::between(Endpoint::ChatCompletions, anthropic, false),
        Some(Translation::ChatViaMessages)
    );
    assert_eq!(
        Translation::between(Endpoint::Embeddings, anthropic, false),
        None
    );
    assert_eq!(
        Translation::between(Endpoint::ChatCompletions, |_| false, false),
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
    let mut t = Translation::MessagesViaChat { openai: true }.response(200, false, false);
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
    let mut t = Translation::MessagesViaChat { openai: true }.response(429, false, false);
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
    let mut t = Translation::MessagesViaChat { openai: true }.response(200, true, false);
    let mut out = Vec::new();
    for piece in upstream.as_bytes().chunks(11) {
        out.extend_from_slice(&t.feed(Bytes::copy_from_slice(piece)));
    }
    out.extend_from_slice(&t.finish());
    let text = String::from_utf8(out).unwrap();
    let events: Vec<(String, Value)> = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let (name, data) = e.split_once('\n').unwrap();
            (
                name.strip_prefix("event: ").unwrap().to_string(),
                serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap(),
            )
        })
        .collect();
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
