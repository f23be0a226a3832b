//! An OpenAI-format client calling a model of an Anthropic or a Gemini provider: the request
//! goes upstream in the provider's format, the tool-use stream comes back as chat completion
//! chunks, and the ledger row holds both endpoints and the provider's own usage.

mod support;

use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use support::{MockReply, TestGateway, mock_upstream, post};

const KEY: &str = "tg-translation-test";

/// A Messages stream with text and a tool call, as Anthropic sends it.
const TOOL_STREAM: &str = concat!(
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":120,\"cache_read_input_tokens\":30,\"output_tokens\":1}}}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me check.\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_9\",\"name\":\"weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Paris\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
);

/// A fresh ledger file for one test.
fn temp_db(tag: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("tollgate-translation-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db")
}

fn config(upstream: std::net::SocketAddr, db: &std::path::Path) -> String {
    format!(
        r#"
[ledger]
url = "sqlite://{}"
flush_interval_ms = 20

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://{upstream}"
api_key = "sk-ant-upstream"
models = ["claude-sonnet-4-5"]

[[keys]]
name = "app"
key = "{KEY}"
team = "agents"
"#,
        db.display()
    )
}

#[tokio::test]
async fn a_tool_call_stream_of_a_claude_model_reaches_an_openai_client_and_is_metered() {
    // The upstream's bytes in small pieces: translation must not depend on how they arrive.
    let frames = TOOL_STREAM
        .as_bytes()
        .chunks(37)
        .map(Bytes::copy_from_slice)
        .collect();
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "text/event-stream".into(),
        frames,
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let db = temp_db("tools");
    let mut gw = TestGateway::start_with_ledger(&config(upstream, &db)).await;
    let (status, headers, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"claude-sonnet-4-5","stream":true,"stream_options":{"include_usage":true},
            "messages":[{"role":"user","content":"Weather in Paris?"}],
            "tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");

    // Upstream: a Messages request on /v1/messages with the provider's key, not the client's.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.paths, ["/v1/messages"]);
        assert_eq!(seen.headers[0]["x-api-key"], "sk-ant-upstream");
        assert!(seen.headers[0].get("authorization").is_none());
        let sent: Value = serde_json::from_slice(&seen.bodies[0]).unwrap();
        assert_eq!(sent["max_tokens"], tollgate::translate::DEFAULT_MAX_TOKENS);
        assert_eq!(sent["tools"][0]["name"], "weather");
        assert_eq!(
            sent["messages"][0]["content"][0]["text"],
            "Weather in Paris?"
        );
    }

    // Client: chat completion chunks, the tool call whole, the usage chunk, [DONE].
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data line")).unwrap())
        .collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city": "Paris"}"#);
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 150);
    assert_eq!(usage["completion_tokens"], 42);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 30);

    // Metrics and ledger: the provider's usage, both endpoints.
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[("endpoint", "/v1/chat/completions"), ("status_code", "200")]
        ),
        1.0
    );
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 150.0);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 42.0);
    assert_eq!(s.sum("llm_gateway_cached_prompt_tokens_total", &[]), 30.0);
    gw.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let row: (String, Option<String>, i64, i64, i64) = sqlx::query_as(
        "SELECT endpoint, upstream_endpoint, input_tokens, output_tokens, status_code FROM tollgate_usage",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "/v1/chat/completions".to_string(),
            Some("/v1/messages".to_string()),
            150,
            42,
            200
        )
    );
}

#[tokio::test]
async fn an_anthropic_error_reaches_the_openai_client_in_its_own_shape() {
    let (upstream, _) = mock_upstream(MockReply {
        status: 529,
        content_type: "application/json".into(),
        frames: vec![Bytes::from_static(
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let gw = TestGateway::start_with_ledger(&config(upstream, &temp_db("error"))).await;
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"claude-sonnet-4-5","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 529);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["message"], "Overloaded");
    assert_eq!(v["error"]["type"], "overloaded_error");
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum("llm_gateway_errors_total", &[("error_type", "overloaded")]),
        1.0
    );
}

// ------------------------------------------------------------------ a Gemini provider

/// A `streamGenerateContent?alt=sse` stream with text and a function call, as Google sends it.
const GEMINI_TOOL_STREAM: &str = concat!(
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Let me check.\"}],\"role\":\"model\"},\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":130,\"candidatesTokenCount\":4,\"totalTokenCount\":134,\"cachedContentTokenCount\":64},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"resp-g1\"}\r\n\r\n",
    "data: {\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"weather\",\"args\":{\"city\":\"Paris\"}}}],\"role\":\"model\"},\"finishReason\":\"STOP\",\"index\":0}],\"usageMetadata\":{\"promptTokenCount\":130,\"candidatesTokenCount\":12,\"totalTokenCount\":172,\"cachedContentTokenCount\":64,\"thoughtsTokenCount\":30},\"modelVersion\":\"gemini-2.5-flash\",\"responseId\":\"resp-g1\"}\r\n\r\n",
);

fn gemini_config(upstream: std::net::SocketAddr, db: &std::path::Path) -> String {
    format!(
        r#"
[ledger]
url = "sqlite://{}"
flush_interval_ms = 20

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "http://{upstream}"
api_key = "AIza-upstream"
models = ["gemini-2.5-flash"]

[[keys]]
name = "app"
key = "{KEY}"
team = "agents"
"#,
        db.display()
    )
}

#[tokio::test]
async fn a_tool_call_stream_of_a_gemini_model_reaches_an_openai_client_and_is_metered() {
    let frames = GEMINI_TOOL_STREAM
        .as_bytes()
        .chunks(29)
        .map(Bytes::copy_from_slice)
        .collect();
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "text/event-stream".into(),
        frames,
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let db = temp_db("gemini-tools");
    let mut gw = TestGateway::start_with_ledger(&gemini_config(upstream, &db)).await;
    let (status, headers, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"gemini-2.5-flash","stream":true,"stream_options":{"include_usage":true},
            "max_tokens":200,
            "messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Weather in Paris?"}],
            "tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");

    // Upstream: Gemini's stream method with SSE, the provider's key, a generateContent body.
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.paths,
            ["/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"]
        );
        assert_eq!(seen.headers[0]["x-goog-api-key"], "AIza-upstream");
        assert!(seen.headers[0].get("authorization").is_none());
        let sent: Value = serde_json::from_slice(&seen.bodies[0]).unwrap();
        assert_eq!(sent["systemInstruction"]["parts"][0]["text"], "Be brief.");
        assert_eq!(sent["contents"][0]["parts"][0]["text"], "Weather in Paris?");
        assert_eq!(sent["generationConfig"]["maxOutputTokens"], 200);
        assert_eq!(
            sent["tools"][0]["functionDeclarations"][0]["name"],
            "weather"
        );
        assert!(sent.get("model").is_none() && sent.get("stream").is_none());
    }

    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data line")).unwrap())
        .collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(content, "Let me check.");
    let call = chunks
        .iter()
        .find_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0))
        .expect("a tool call");
    assert_eq!(call["function"]["name"], "weather");
    assert_eq!(call["function"]["arguments"], r#"{"city":"Paris"}"#);
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 130);
    assert_eq!(usage["completion_tokens"], 42);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 64);
    assert_eq!(usage["completion_tokens_details"]["reasoning_tokens"], 30);

    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[("endpoint", "/v1/chat/completions"), ("status_code", "200")]
        ),
        1.0
    );
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 130.0);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 42.0);
    assert_eq!(s.sum("llm_gateway_cached_prompt_tokens_total", &[]), 64.0);
    gw.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let row: (String, Option<String>, i64, i64, i64) = sqlx::query_as(
        "SELECT endpoint, upstream_endpoint, input_tokens, output_tokens, status_code FROM tollgate_usage",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "/v1/chat/completions".to_string(),
            Some("/v1beta/models/{model}:streamGenerateContent".to_string()),
            130,
            42,
            200
        )
    );
}

#[tokio::test]
async fn a_plain_gemini_answer_and_a_google_error_reach_the_openai_client_in_its_shape() {
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "application/json; charset=UTF-8".into(),
        frames: vec![Bytes::from_static(
            br#"{"candidates":[{"content":{"parts":[{"text":"Four."}],"role":"model"},"finishReason":"MAX_TOKENS","index":0}],
                "usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":2,"totalTokenCount":13},
                "modelVersion":"gemini-2.5-flash","responseId":"resp-g2"}"#,
        )],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let db = temp_db("gemini-plain");
    let mut gw = TestGateway::start_with_ledger(&gemini_config(upstream, &db)).await;
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"gemini-2.5-flash","max_tokens":2,"messages":[{"role":"user","content":"2+2?"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        seen.lock().unwrap().paths,
        ["/v1beta/models/gemini-2.5-flash:generateContent"]
    );
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["content"], "Four.");
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    assert_eq!(v["usage"]["prompt_tokens"], 11);
    assert_eq!(v["usage"]["completion_tokens"], 2);
    // A field Gemini has no equivalent for: a 400 in OpenAI's shape, nothing sent upstream.
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"gemini-2.5-flash","logit_bias":{"1":5},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`logit_bias`"),
        "{v}"
    );
    assert_eq!(seen.lock().unwrap().paths.len(), 1);
    let s = gw.wait_requests(2.0).await;
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 11.0);
    gw.shutdown().await;

    let (upstream, _) = mock_upstream(MockReply {
        status: 429,
        content_type: "application/json; charset=UTF-8".into(),
        frames: vec![Bytes::from_static(
            br#"{"error":{"code":429,"message":"Resource has been exhausted (e.g. check quota).","status":"RESOURCE_EXHAUSTED"}}"#,
        )],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let gw =
        TestGateway::start_with_ledger(&gemini_config(upstream, &temp_db("gemini-error"))).await;
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"gemini-2.5-flash","stream":true,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 429);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");
    assert_eq!(v["error"]["code"], "RESOURCE_EXHAUSTED");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("Resource has been exhausted")
    );
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "rate_limited")]
        ),
        1.0
    );
}

// ------------------------------------------------------------------ a Bedrock provider

fn bedrock_config(upstream: std::net::SocketAddr, db: &std::path::Path) -> String {
    format!(
        r#"
[ledger]
url = "sqlite://{}"
flush_interval_ms = 20

[[providers]]
name = "aws"
kind = "bedrock"
region = "us-east-1"
base_url = "http://{upstream}"
api_key = "bedrock-api-key-upstream"
model_prefixes = ["amazon.nova-"]

[[keys]]
name = "app"
key = "{KEY}"
team = "agents"
"#,
        db.display()
    )
}

#[tokio::test]
async fn a_tool_call_event_stream_of_a_bedrock_model_reaches_an_openai_client_and_is_metered() {
    use tollgate::proxy::eventstream::encode_event;
    let stream: Vec<u8> = [
        ("messageStart", r#"{"role":"assistant"}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":0,"delta":{"text":"Let me check."}}"#),
        ("contentBlockStop", r#"{"contentBlockIndex":0}"#),
        ("contentBlockStart", r#"{"contentBlockIndex":1,"start":{"toolUse":{"toolUseId":"tooluse_7","name":"weather"}}}"#),
        ("contentBlockDelta", r#"{"contentBlockIndex":1,"delta":{"toolUse":{"input":"{\"city\":\"Paris\"}"}}}"#),
        ("contentBlockStop", r#"{"contentBlockIndex":1}"#),
        ("messageStop", r#"{"stopReason":"tool_use"}"#),
        ("metadata", r#"{"usage":{"inputTokens":100,"outputTokens":42,"totalTokens":172,"cacheReadInputTokens":30},"metrics":{"latencyMs":300}}"#),
    ]
    .iter()
    .flat_map(|(name, payload)| encode_event(name, payload.as_bytes()))
    .collect();
    // In pieces that split messages: translation must not depend on how they arrive.
    let frames = stream.chunks(23).map(Bytes::copy_from_slice).collect();
    let (upstream, seen) = mock_upstream(MockReply {
        status: 200,
        content_type: "application/vnd.amazon.eventstream".into(),
        frames,
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let db = temp_db("bedrock-tools");
    let mut gw = TestGateway::start_with_ledger(&bedrock_config(upstream, &db)).await;
    let (status, headers, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &format!("Bearer {KEY}"))],
        r#"{"model":"amazon.nova-lite-v1:0","stream":true,"stream_options":{"include_usage":true},
            "max_tokens":100,"messages":[{"role":"user","content":"Weather in Paris?"}],
            "tools":[{"type":"function","function":{"name":"weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.paths.len(), 1);
        assert!(
            seen.paths[0].ends_with("/converse-stream")
                && seen.paths[0].starts_with("/model/amazon.nova-lite-v1"),
            "{:?}",
            seen.paths
        );
        assert_eq!(
            seen.headers[0]["authorization"],
            "Bearer bedrock-api-key-upstream"
        );
        let sent: Value = serde_json::from_slice(&seen.bodies[0]).unwrap();
        assert_eq!(sent["inferenceConfig"]["maxTokens"], 100);
        assert_eq!(
            sent["messages"][0]["content"][0]["text"],
            "Weather in Paris?"
        );
        assert_eq!(
            sent["toolConfig"]["tools"][0]["toolSpec"]["name"],
            "weather"
        );
    }
    let text = std::str::from_utf8(&body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter(|e| !e.is_empty() && *e != "data: [DONE]")
        .map(|e| serde_json::from_str(e.strip_prefix("data: ").expect("data line")).unwrap())
        .collect();
    let args: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"].as_str())
        .collect();
    assert_eq!(args, r#"{"city":"Paris"}"#);
    let finish: Vec<&str> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finish, ["tool_calls"]);
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["prompt_tokens"], 130);
    assert_eq!(usage["completion_tokens"], 42);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 30);

    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[("endpoint", "/v1/chat/completions"), ("status_code", "200")]
        ),
        1.0
    );
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 130.0);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 42.0);
    gw.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let row: (String, Option<String>, i64, i64) = sqlx::query_as(
        "SELECT endpoint, upstream_endpoint, input_tokens, output_tokens FROM tollgate_usage",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        row,
        (
            "/v1/chat/completions".to_string(),
            Some("/model/{model}/converse-stream".to_string()),
            130,
            42
        )
    );
}
