//! Bedrock through the gateway in front of the simulated provider (its ConverseStream and
//! InvokeModel event streams, as the demo and the benchmark use them), and the gateway's own
//! refusals on Bedrock paths in AWS's error shape.

mod support;

use std::net::SocketAddr;

use support::{TestGateway, post};
use tokio::net::TcpListener;
use tollgate::proxy::eventstream::EventStreamScanner;
use tollgate::sim::{self, SimOptions};

const KEY: &str = "tg-bedrock-test";
const MODEL: &str = "us.anthropic.claude-haiku-4-5-20251001-v1:0";
const PATH_MODEL: &str = "us.anthropic.claude-haiku-4-5-20251001-v1%3A0";

async fn start_sim() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, SimOptions::default(), std::future::pending()));
    addr
}

fn config(sim: SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "sim-bedrock"
kind = "bedrock"
region = "us-east-1"
base_url = "http://{sim}"
api_key = "ABSK-sim"
forward_headers = ["x-sim-*"]
model_prefixes = ["us.anthropic."]

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
limits = {{ requests_per_minute = 4 }}
"#
    )
}

/// The `(:event-type, payload)` of every message of an event-stream body.
fn messages(body: &[u8]) -> Vec<(String, String)> {
    let mut s = EventStreamScanner::new(1 << 20);
    let mut out = Vec::new();
    s.feed(bytes::Bytes::copy_from_slice(body), &mut |m| {
        out.push((
            String::from_utf8_lossy(m.name().unwrap_or_default()).into_owned(),
            String::from_utf8_lossy(m.payload).into_owned(),
        ))
    });
    assert!(
        s.corrupt().is_none() && s.held() == 0,
        "a whole, valid stream"
    );
    out
}

#[tokio::test]
async fn sim_streams_are_metered_and_refusals_are_aws_shaped() {
    let sim = start_sim().await;
    let gw = TestGateway::start(&config(sim)).await;
    let auth = format!("Bearer {KEY}");
    let h = [("authorization", auth.as_str())];
    let body = r#"{"messages":[{"role":"user","content":[{"text":"hello there"}]}],"inferenceConfig":{"maxTokens":6}}"#;

    // ConverseStream: the client gets the simulator's event stream, metered from `metadata`.
    let (status, headers, bytes) = post(
        &gw.url(&format!("/model/{PATH_MODEL}/converse-stream")),
        &h,
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        headers["content-type"],
        "application/vnd.amazon.eventstream"
    );
    let events = messages(&bytes);
    assert_eq!(events.first().map(|e| e.0.as_str()), Some("messageStart"));
    let meta: serde_json::Value =
        serde_json::from_str(&events.last().expect("metadata").1).expect("json");
    let usage = &meta["usage"];
    assert_eq!(usage["outputTokens"], 6);
    let scrape = gw.wait_requests(1.0).await;
    let m = [("model", MODEL), ("provider", "sim-bedrock")];
    assert_eq!(
        scrape.sum("llm_gateway_prompt_tokens_total", &m),
        usage["inputTokens"].as_f64().expect("n")
    );
    assert_eq!(scrape.sum("llm_gateway_completion_tokens_total", &m), 6.0);
    assert!(scrape.sum("llm_gateway_cost_usd_total", &m) > 0.0);

    // InvokeModelWithResponseStream of Claude: base64 chunks, usage from Claude's events.
    let invoke = r#"{"anthropic_version":"bedrock-2023-05-31","max_tokens":5,"messages":[{"role":"user","content":"hello"}]}"#;
    let (status, _, bytes) = post(
        &gw.url(&format!("/model/{PATH_MODEL}/invoke-with-response-stream")),
        &h,
        invoke,
    )
    .await;
    assert_eq!(status, 200);
    assert!(messages(&bytes).iter().all(|e| e.0 == "chunk"));
    let scrape = gw.wait_requests(2.0).await;
    assert_eq!(scrape.sum("llm_gateway_completion_tokens_total", &m), 11.0);

    // A stream the simulator cuts with a throttlingException after 3 messages.
    let cut = [("authorization", auth.as_str()), ("x-sim-cut-after", "3")];
    let (status, _, bytes) = post(
        &gw.url(&format!("/model/{PATH_MODEL}/converse-stream")),
        &cut,
        body,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        messages(&bytes).last().map(|e| e.0.as_str()),
        Some("throttlingException")
    );
    let scrape = gw.wait_requests(3.0).await;
    assert_eq!(
        scrape.sum(
            "llm_gateway_errors_total",
            &[("error_type", "rate_limited")]
        ),
        1.0
    );

    // The gateway's refusals in AWS's shape: an unknown model, then the key's rate limit.
    let (status, headers, bytes) =
        post(&gw.url("/model/cohere.command-r-v1%3A0/converse"), &h, body).await;
    assert_eq!(status, 404);
    assert_eq!(headers["x-amzn-errortype"], "ResourceNotFoundException");
    let v: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
    assert!(v["message"].as_str().is_some_and(|m| m.contains("cohere")));
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(1),
        "only a message: {v}"
    );
    let (status, headers, _) =
        post(&gw.url(&format!("/model/{PATH_MODEL}/converse")), &h, body).await;
    assert_eq!(status, 200, "the fourth request of the minute");
    let (status, headers2, bytes) =
        post(&gw.url(&format!("/model/{PATH_MODEL}/converse")), &h, body).await;
    assert_eq!(status, 429, "{}", String::from_utf8_lossy(&bytes));
    assert_eq!(headers2["x-amzn-errortype"], "ThrottlingException");
    assert!(headers.get("x-amzn-errortype").is_none());
}

/// Bedrock's ids are priced from the built-in table (the catalog's Bedrock entries): a
/// geographic profile of a recent Claude costs 10 % more than `global.`, as Bedrock prices it;
/// an ARN by its last segment; Nova and Llama ids too.
#[test]
fn bedrock_ids_are_priced_as_bedrock_prices_them() {
    use tollgate::metering::{PriceTable, Usage};
    let t = PriceTable::builtin().expect("prices");
    // 100k input tokens: under the 200k context tier.
    let input_100k = Usage {
        input: 100_000,
        ..Usage::default()
    };
    let cost = |m: &str| {
        t.lookup(m)
            .unwrap_or_else(|| panic!("{m} has no price"))
            .cost_nanos(&input_100k)
    };
    let global = cost("global.anthropic.claude-sonnet-4-5-20250929-v1:0");
    assert_eq!(global, 300_000_000);
    assert_eq!(
        cost("us.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        330_000_000
    );
    assert_eq!(
        cost("eu.anthropic.claude-sonnet-4-5-20250929-v1:0"),
        330_000_000
    );
    assert_eq!(
        cost("anthropic.claude-haiku-4-5-20251001-v1:0"),
        100_000_000
    );
    assert_eq!(
        cost(
            "arn:aws:bedrock:us-east-1:123456789012:inference-profile/us.anthropic.claude-sonnet-4-5-20250929-v1:0"
        ),
        330_000_000
    );
    for m in [
        "amazon.nova-pro-v1:0",
        "us.amazon.nova-lite-v1:0",
        "meta.llama3-3-70b-instruct-v1:0",
        "us.meta.llama3-3-70b-instruct-v1:0",
        "apac.anthropic.claude-sonnet-4-20250514-v1:0",
    ] {
        assert!(cost(m) > 0, "{m}");
    }
}

/// With the response cache on, a Converse answer is served again from it, while event streams
/// are never stored (a replay is JSON or SSE): both stream requests reach the provider.
#[tokio::test]
async fn the_cache_stores_converse_and_passes_event_streams() {
    let sim = start_sim().await;
    let cfg = format!(
        "[cache]\nmode = \"exact\"\n{}",
        config(sim).replace("requests_per_minute = 4", "requests_per_minute = 100")
    );
    let gw = TestGateway::start(&cfg).await;
    let auth = format!("Bearer {KEY}");
    let h = [("authorization", auth.as_str())];
    let body = r#"{"messages":[{"role":"user","content":[{"text":"cache me"}]}],"inferenceConfig":{"maxTokens":3}}"#;
    let url = gw.url(&format!("/model/{PATH_MODEL}/converse"));
    let (s1, _, b1) = post(&url, &h, body).await;
    let (s2, h2, b2) = post(&url, &h, body).await;
    assert_eq!((s1, s2), (200, 200));
    assert!(
        h2.get("cache-status")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("hit")),
        "{h2:?}"
    );
    let (v1, v2): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&b1).expect("json"),
        serde_json::from_slice(&b2).expect("json"),
    );
    assert_eq!(v1["usage"], v2["usage"]);
    let url = gw.url(&format!("/model/{PATH_MODEL}/converse-stream"));
    for _ in 0..2 {
        let (s, h, b) = post(&url, &h, body).await;
        assert_eq!(s, 200);
        assert!(h.get("cache-status").is_none(), "{h:?}");
        assert_eq!(messages(&b).last().map(|e| e.0.as_str()), Some("metadata"));
    }
}
