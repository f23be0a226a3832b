//! A hostile key holder or a broken provider, through the real gateway: label values that are
//! megabytes long, absurd usage counts, and client headers that would choose what the provider
//! bills.

mod support;

use std::time::Duration;

use bytes::Bytes;
use support::{MockReply, TestGateway, get, mock_upstream, post};

const KEY: &str = "tg-hostile-test";

fn json_reply(body: String) -> MockReply {
    MockReply {
        status: 200,
        content_type: "application/json".into(),
        frames: vec![Bytes::from(body)],
        cut: false,
        frame_delay: Duration::ZERO,
    }
}

fn chat_body(model: &str) -> String {
    format!(r#"{{"model":"{model}","messages":[{{"role":"user","content":"hi"}}],"max_tokens":4}}"#)
}

#[tokio::test]
async fn megabyte_model_names_keep_the_scrape_small_and_are_counted() {
    let long_response_model = format!("gpt-{}", "r".repeat(1 << 20));
    let (upstream, _) = mock_upstream(json_reply(format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"{long_response_model}","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}}}"#
    )))
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[server]
max_body_bytes = 4194304

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "sk-up"
model_prefixes = ["gpt-"]

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
"#
    ))
    .await;
    let auth = format!("Bearer {KEY}");
    let h = [("authorization", auth.as_str())];
    let unknown = "u".repeat(1 << 20);
    let routed = format!("gpt-{}", "q".repeat(1 << 20));
    for _ in 0..25 {
        let (status, _, body) =
            post(&gw.url("/v1/chat/completions"), &h, &chat_body(&unknown)).await;
        assert_eq!(status, 404);
        assert!(
            body.len() < 2048,
            "the 404 quotes the model bounded, not {} bytes",
            body.len()
        );
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &h, &chat_body(&routed)).await;
        assert_eq!(status, 200);
    }
    let s = gw.wait_requests(50.0).await;
    let (_, _, text) = get(&gw.url("/metrics"), &[]).await;
    assert!(
        text.len() < 48 * 1024,
        "scrape is {} bytes after 50 megabyte model names",
        text.len()
    );
    // The 404s are labelled `model="none"` (refused before routing); the 25 routed requests
    // carry the long model their response named.
    assert_eq!(
        s.sum(
            "llm_gateway_label_values_folded_total",
            &[("label", "model")]
        ),
        25.0
    );
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("model", "__other__")]),
        25.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[("error_type", "unknown_model")]
        ),
        0.0,
        "requests_total has no error_type label"
    );
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "unknown_model")]
        ),
        25.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_completion_tokens_total",
            &[("model", "__other__")]
        ),
        50.0,
        "the tokens are kept, under __other__"
    );
    // Healthy after: a normal request is served; its response names the long model again.
    let (status, _, _) = get(&gw.url("/healthz"), &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &h,
        &chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(status, 200);
    let s = gw.wait_requests(51.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_label_values_folded_total",
            &[("label", "model")]
        ),
        26.0,
        "a long model named by the response is folded too"
    );
}
