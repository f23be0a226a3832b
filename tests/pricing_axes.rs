//! The price axes a response decides, end to end: the service tier the response names (else
//! the request's), audio tokens and web-search calls, priced by the engine and recorded in the
//! ledger row (`service_tier`) and the cost metric alike. Every expected cost is hand-computed
//! from the config's rates (USD per 1M tokens, fees USD per call).

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{MockReply, TestGateway, mock_upstream, post};

const KEY: &str = "tg-pricing-axes";

fn temp_db(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-pricing-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir.join("ledger.db")
}

/// One OpenAI and one Anthropic provider on the same mock, and a price with every axis.
fn config(upstream: std::net::SocketAddr, kind: &str, db: &std::path::Path) -> String {
    format!(
        r#"
[ledger]
url = "sqlite://{db}"
flush_interval_ms = 20

[[providers]]
name = "up"
kind = "{kind}"
base_url = "http://{upstream}"
api_key = "sk-upstream"
models = ["axis-model"]

[[prices]]
model = "axis-model"
input = "1"
output = "2"
audio_input = "10"
audio_output = "20"
priority = {{ input = "3", output = "6" }}
flex = {{ input = "0.5", output = "1" }}
web_search_call = "0.01"

[[keys]]
name = "app"
key = "{KEY}"
team = "pricing"
"#,
        db = db.display()
    )
}

fn reply(content_type: &str, body: String) -> MockReply {
    MockReply {
        status: 200,
        content_type: content_type.into(),
        frames: vec![Bytes::from(body)],
        cut: false,
        frame_delay: Duration::ZERO,
    }
}

/// Sends one request, waits for its row, returns (cost metric in USD, row's service tier,
/// row's cost in nano-USD).
async fn priced(
    kind: &str,
    path: &str,
    request: &str,
    up: MockReply,
    tag: &str,
) -> (f64, String, i64) {
    let (upstream, _seen) = mock_upstream(up).await;
    let db = temp_db(tag);
    let mut gw = TestGateway::start_with_ledger(&config(upstream, kind, &db)).await;
    let auth = format!("Bearer {KEY}");
    let (status, _, body) = post(
        &gw.url(path),
        &[("authorization", &auth), ("x-api-key", KEY)],
        request,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let s = gw.wait_requests(1.0).await;
    let cost = s.sum("llm_gateway_cost_usd_total", &[("team", "pricing")]);
    gw.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("ledger");
    let (tier, nanos): (String, i64) =
        sqlx::query_as("SELECT service_tier, cost_nanos FROM tollgate_usage")
            .fetch_one(&pool)
            .await
            .expect("one row");
    (cost, tier, nanos)
}

fn chat_body(tier: Option<&str>, usage: &str) -> String {
    let tier = tier.map_or(String::new(), |t| format!(r#""service_tier":"{t}","#));
    format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"axis-model",{tier}"choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
    )
}

const PLAIN_USAGE: &str = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}"#;

#[tokio::test]
async fn the_tier_the_response_names_is_the_price_and_the_row_says_so() {
    // The client asked for `auto`; OpenAI answered at priority: 1000 * 3 + 500 * 6 = 6,000
    // micro-USD = 6,000,000 nano-USD.
    let req = r#"{"model":"axis-model","service_tier":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let up = reply("application/json", chat_body(Some("priority"), PLAIN_USAGE));
    let (cost, tier, nanos) = priced("openai", "/v1/chat/completions", req, up, "priority").await;
    assert_eq!((tier.as_str(), nanos), ("priority", 6_000_000));
    assert!((cost - 0.006).abs() < 1e-12, "{cost}");
}

#[tokio::test]
async fn without_a_tier_in_the_response_the_request_s_tier_is_the_price() {
    // flex asked, the response names none: 1000 * 0.5 + 500 * 1 = 1,000 micro-USD.
    let req = r#"{"model":"axis-model","service_tier":"flex","messages":[{"role":"user","content":"hi"}]}"#;
    let up = reply("application/json", chat_body(None, PLAIN_USAGE));
    let (_, tier, nanos) = priced("openai", "/v1/chat/completions", req, up, "flex").await;
    assert_eq!((tier.as_str(), nanos), ("flex", 1_000_000));
    // A response at `default` is standard whatever was asked: 1000 * 1 + 500 * 2 = 2,000.
    let req = r#"{"model":"axis-model","service_tier":"priority","messages":[{"role":"user","content":"hi"}]}"#;
    let up = reply("application/json", chat_body(Some("default"), PLAIN_USAGE));
    let (_, tier, nanos) = priced("openai", "/v1/chat/completions", req, up, "default").await;
    assert_eq!((tier.as_str(), nanos), ("standard", 2_000_000));
}

#[tokio::test]
async fn audio_tokens_are_priced_at_their_own_rates() {
    // 1000 input of which 200 audio, 500 output of which 100 audio:
    // 800 * 1 + 200 * 10 + 400 * 2 + 100 * 20 = 800 + 2000 + 800 + 2000 = 5,600 micro-USD.
    let usage = r#"{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":200},"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":100}}"#;
    let req = r#"{"model":"axis-model","modalities":["text","audio"],"messages":[{"role":"user","content":"hi"}]}"#;
    let up = reply("application/json", chat_body(Some("default"), usage));
    let (cost, tier, nanos) = priced("openai", "/v1/chat/completions", req, up, "audio").await;
    assert_eq!((tier.as_str(), nanos), ("standard", 5_600_000));
    assert!((cost - 0.0056).abs() < 1e-12, "{cost}");
}

#[tokio::test]
async fn anthropic_web_searches_and_tier_from_a_stream_are_priced() {
    // Anthropic reports the tier and the server tools in the usage of message_start and
    // message_delta: 1000 in, 500 out at priority (3 / 6) = 6,000 micro-USD, plus 3 searches
    // at $0.01 = 30,000 micro-USD: 36,000,000 nano-USD.
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"axis-model\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1000,\"output_tokens\":1,\"service_tier\":\"priority\"}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"found\"}}\n\n",
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":500,\"server_tool_use\":{\"web_search_requests\":3}}}\n\n",
        "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    );
    let req = r#"{"model":"axis-model","max_tokens":600,"stream":true,"messages":[{"role":"user","content":"search"}]}"#;
    let up = reply("text/event-stream", stream.to_string());
    let (cost, tier, nanos) = priced("anthropic", "/v1/messages", req, up, "search").await;
    assert_eq!((tier.as_str(), nanos), ("priority", 36_000_000));
    assert!((cost - 0.036).abs() < 1e-12, "{cost}");
}

#[tokio::test]
async fn a_stream_cut_after_reported_input_is_partial_and_only_the_estimate_is_estimated_cost() {
    // message_start reported 1000 input and 1 output; the upstream breaks before
    // message_delta: the output is estimated from the text seen, the input is the provider's.
    let stream = concat!(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_2\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"axis-model\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":1000,\"output_tokens\":1}}}\n\n",
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"The quick brown fox jumps over the lazy dog again and again\"}}\n\n",
    );
    let (upstream, _seen) = mock_upstream(MockReply {
        cut: true,
        ..reply("text/event-stream", stream.to_string())
    })
    .await;
    let db = temp_db("partial");
    let mut gw = TestGateway::start_with_ledger(&config(upstream, "anthropic", &db)).await;
    let req = r#"{"model":"axis-model","max_tokens":600,"stream":true,"messages":[{"role":"user","content":"go"}]}"#;
    let mut resp =
        support::post_streaming(&gw.url("/v1/messages"), &[("x-api-key", KEY)], req).await;
    assert_eq!(resp.status(), 200);
    use http_body_util::BodyExt;
    while let Some(Ok(_)) = resp.body_mut().frame().await {}
    let s = gw.wait_requests(1.0).await;
    let cost = s.sum("llm_gateway_cost_usd_total", &[("team", "pricing")]);
    let estimated = s.sum(
        "llm_gateway_estimated_cost_usd_total",
        &[("team", "pricing")],
    );
    // Reported: 1000 * $1/M + 1 * $2/M = $0.001002; the rest rests on the estimate.
    assert!(estimated > 0.0, "the estimated output has a cost");
    assert!(
        (cost - estimated - 0.001002).abs() < 1e-12,
        "{cost} {estimated}"
    );
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        1.0
    );
    gw.shutdown().await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display()))
        .await
        .expect("ledger");
    let (source, input): (String, i64) =
        sqlx::query_as("SELECT usage_source, input_tokens FROM tollgate_usage")
            .fetch_one(&pool)
            .await
            .expect("one row");
    assert_eq!((source.as_str(), input), ("partial", 1000));
}
