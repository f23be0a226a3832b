//! The workers' own upstream connections: kept alive and reused, given back only when a
//! response was read to its end, and replaced when the upstream closed them.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use support::{MockReply, TestGateway, mock_upstream_with, post, post_streaming};

const KEY: &str = "tg-upstream-test";

fn config(upstream: SocketAddr) -> String {
    format!(
        r#"
[[providers]]
name = "local"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "sk-local"
models = ["*"]

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
"#
    )
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
const ANSWER: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

fn json_reply() -> MockReply {
    MockReply {
        status: 200,
        content_type: "application/json".into(),
        frames: vec![Bytes::from_static(ANSWER.as_bytes())],
        cut: false,
        frame_delay: Duration::ZERO,
    }
}

fn stream_reply(frame_delay: Duration) -> MockReply {
    let chunk = |content: &str| {
        Bytes::from(format!(
            "data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{content}\"}}}}]}}\n\n"
        ))
    };
    MockReply {
        status: 200,
        content_type: "text/event-stream".into(),
        frames: vec![
            chunk("a"),
            chunk("b"),
            Bytes::from_static(b"data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":2,\"total_tokens\":11}}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        cut: false,
        frame_delay,
    }
}

/// POSTs `body` to the gateway's chat endpoint with the test key.
async fn ask(gw: &TestGateway, body: &str) -> (u16, Bytes) {
    let auth = format!("Bearer {KEY}");
    let (status, _, out) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        body,
    )
    .await;
    (status, out)
}

fn stream_request() -> String {
    CHAT.replace("\"max_tokens\":4", "\"max_tokens\":4,\"stream\":true")
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let (addr, seen) = mock_upstream_with(json_reply(), true).await;
    let gw = TestGateway::start(&config(addr)).await;
    for _ in 0..20 {
        let (status, body) = ask(&gw, CHAT).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(body, ANSWER.as_bytes());
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.bodies.len(), 20);
    // Each of the two workers keeps its own: at most one connection each for sequential
    // requests (the client's connections to the gateway alternate between workers).
    assert!(
        seen.connections <= 2,
        "{} upstream connections for 20 sequential requests",
        seen.connections
    );
    // Origin-form request line, and the upstream's own Host.
    assert!(seen.paths.iter().all(|p| p == "/v1/chat/completions"));
    let host = addr.to_string();
    assert!(seen.headers.iter().all(|h| h["host"] == host.as_str()));
}

#[tokio::test]
async fn a_stream_read_to_its_end_gives_its_connection_back() {
    let (addr, seen) = mock_upstream_with(stream_reply(Duration::ZERO), true).await;
    let gw = TestGateway::start(&config(addr)).await;
    for _ in 0..10 {
        let (status, out) = ask(&gw, &stream_request()).await;
        assert_eq!(status, 200);
        assert!(out.ends_with(b"data: [DONE]\n\n"));
    }
    let connections = seen.lock().expect("lock").connections;
    assert!(connections <= 2, "{connections} connections for 10 streams");
}

#[tokio::test]
async fn a_stream_the_client_left_is_not_reused() {
    let (addr, seen) = mock_upstream_with(stream_reply(Duration::from_millis(200)), true).await;
    let gw = TestGateway::start(&config(addr)).await;
    let auth = format!("Bearer {KEY}");
    let body = stream_request();
    // Leave each stream after its first event, with the upstream still sending.
    for _ in 0..4 {
        let resp = post_streaming(
            &gw.url("/v1/chat/completions"),
            &[("authorization", &auth)],
            &body,
        )
        .await;
        let mut body = resp.into_body();
        let first = body.frame().await.expect("a frame").expect("data");
        assert!(first.data_ref().is_some_and(|d| d.starts_with(b"data: ")));
        drop(body);
    }
    // Every half-read upstream response closed its connection: the next request on either
    // worker needs a new one, and gets a whole answer.
    let gw_stats = gw.wait_requests(4.0).await;
    assert_eq!(
        gw_stats.sum("llm_gateway_requests_total", &[("status_code", "499")]),
        4.0
    );
    let (status, out) = ask(&gw, &body).await;
    assert_eq!(status, 200);
    assert!(out.ends_with(b"data: [DONE]\n\n"));
    assert_eq!(seen.lock().expect("lock").connections, 5);
}

#[tokio::test]
async fn an_upstream_that_closes_every_connection_is_still_served() {
    let (addr, seen) = mock_upstream_with(json_reply(), false).await;
    let gw = TestGateway::start(&config(addr)).await;
    for i in 0..10 {
        let (status, body) = ask(&gw, CHAT).await;
        assert_eq!(
            status,
            200,
            "request {i}: {}",
            String::from_utf8_lossy(&body)
        );
        // Sometimes the next request comes before the close is seen; it must still succeed.
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.bodies.len(), 10);
    assert_eq!(seen.connections, 10);
}
