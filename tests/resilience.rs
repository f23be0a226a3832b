//! The gateway under clients and upstreams that misbehave: a body too large written whole
//! before the answer is read, a stream still open when the shutdown grace ends, an upstream
//! that fails every request (the log stays short), and `max_tokens = u64::MAX` at the
//! simulator.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{Scrape, TestGateway, post};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate::metrics::Format;
use tollgate::sim::{self, SimOptions};

async fn start_sim(opts: SimOptions) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, opts, std::future::pending()));
    addr
}

fn config(upstream: SocketAddr, extra: &str) -> String {
    format!(
        r#"
{extra}

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "http://{upstream}"
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]
"#
    )
}

/// Writes `head` and then `body` whole, and only then reads the answer to its end.
async fn write_all_then_read(gw: SocketAddr, head: &str, body: &[u8]) -> String {
    let mut s = TcpStream::connect(gw).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head written");
    s.write_all(body)
        .await
        .expect("the whole body is taken before the answer");
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
        .await
        .expect("answer within 10 s")
        .expect("answer read without a reset");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_written_whole_before_reading_gets_its_413() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "[server]\nmax_body_bytes = 65536")).await;
    // 1 MiB: far more than the socket buffers take, so a gateway that answers without
    // reading makes the client's write fail (the 413 is then never read).
    let body = vec![b'x'; 1 << 20];
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let answer = write_all_then_read(gw.addr, &head, &body).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains(r#""error":{"#), "OpenAI's shape: {answer}");
    assert!(answer.contains("max_body_bytes"), "{answer}");

    // Chunked, no length announced: the limit is found while reading; the rest is read too.
    let mut chunked = Vec::new();
    for _ in 0..16 {
        chunked.extend_from_slice(format!("{:x}\r\n", 65536).as_bytes());
        chunked.extend_from_slice(&[b'y'; 65536]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = "POST /v1/messages HTTP/1.1\r\nhost: gw\r\nanthropic-version: 2023-06-01\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    let answer = write_all_then_read(gw.addr, head, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains(r#""type":"error""#) && answer.contains("request_too_large"),
        "Anthropic's shape: {answer}"
    );
    let s = gw.wait_requests(2.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "body_too_large"), ("status_code", "413")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_answered_408() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "[server]\nbody_timeout_secs = 1")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":")
        .await
        .expect("write");
    let start = std::time::Instant::now();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered and closed within 5 s")
        .expect("read");
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(start.elapsed() >= Duration::from_millis(900));
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_connections_timed_out_total",
            &[("reason", "body_timeout")]
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_still_open_when_the_grace_ends_is_recorded_as_ended_by_the_gateway() {
    // 400 tokens at 20 a second: 20 s, far past the 1 s grace.
    let sim = start_sim(SimOptions {
        tokens_per_second: 20,
        ..SimOptions::default()
    })
    .await;
    let mut gw = TestGateway::start_with_grace(&config(sim, ""), Duration::from_secs(1)).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":400,"stream":true}"#;
    let resp = support::post_streaming(&gw.url("/v1/chat/completions"), &[], body).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let first = http_body_util::BodyExt::frame(&mut body).await;
    assert!(first.is_some(), "the stream started");
    let reader = tokio::spawn(async move {
        while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
    });
    tokio::time::timeout(Duration::from_secs(15), gw.shutdown())
        .await
        .expect("shut down after the grace");
    let _ = reader.await;
    let s = Scrape::parse(&gw.gateway.metrics.render(Format::Text));
    assert_eq!(s.sum("llm_gateway_requests_total", &[]), 1.0);
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "gateway_shutdown"), ("status_code", "503")]
        ),
        1.0,
        "{:?}",
        s.samples
    );
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "client_disconnected")]
        ),
        0.0
    );
    assert!(
        s.sum("llm_gateway_completion_tokens_total", &[]) > 0.0,
        "the tokens streamed before the cut are counted"
    );
}

/// Collects what the gateway logs, for the one test in this process that installs it.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_upstream_failures_logs_one_line_per_provider_with_the_count() {
    // nextest runs each test in its own process: this subscriber sees only this test.
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_env_filter("tollgate=warn")
        .init();
    // Nothing listens upstream: every request fails to connect.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = TestGateway::start(&config(closed, "")).await;
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let msg = r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..100 {
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &[], chat).await;
        assert_eq!(status, 502);
        let (status, _, _) = post(
            &gw.url("/v1/messages"),
            &[("anthropic-version", "2023-06-01")],
            msg,
        )
        .await;
        assert_eq!(status, 502);
    }
    let s = gw.wait_requests(200.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "upstream_unreachable")]
        ),
        200.0,
        "every failure is counted"
    );
    let log = String::from_utf8_lossy(&captured.0.lock().expect("log")).into_owned();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("upstream request failed"))
        .collect();
    assert_eq!(lines.len(), 2, "one line per provider: {lines:#?}");
    assert!(lines.iter().any(|l| l.contains("sim-openai")));
    assert!(lines.iter().any(|l| l.contains("sim-anthropic")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_of_u64_max_gets_a_bounded_answer_from_the_simulator_and_the_gateway() {
    let sim = start_sim(SimOptions::default()).await;
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":18446744073709551615}"#;
    // Straight at the simulator.
    let (status, _, answer) = post(&format!("http://{sim}/v1/chat/completions"), &[], body).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(
        v["usage"]["completion_tokens"],
        sim::DEFAULT_MAX_OUTPUT_TOKENS
    );
    // Through a gateway with limits, which reserves max_tokens: no overflow either.
    let keys = r#"
[[keys]]
name = "k"
key = "tg-max-tokens"
team = "t"
limits = { tokens_per_minute = 100000000 }
"#;
    let gw = TestGateway::start(&config(sim, keys)).await;
    let auth = [("authorization", "Bearer tg-max-tokens")];
    let (status, _, answer) = post(&gw.url("/v1/chat/completions"), &auth, body).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let v: serde_json::Value = serde_json::from_slice(&answer).expect("json");
    assert_eq!(
        v["usage"]["completion_tokens"],
        sim::DEFAULT_MAX_OUTPUT_TOKENS
    );
    let stream = r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hi"}],"max_tokens":18446744073709551615,"stream":true}"#;
    let (status, _, answer) = post(
        &format!("http://{sim}/v1/messages"),
        &[("anthropic-version", "2023-06-01")],
        stream,
    )
    .await;
    assert_eq!(status, 200);
    let events = support::sse_events(&answer);
    assert!(events.len() < 5000, "{} events", events.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_too_large_announced_with_expect_100_continue_is_refused_before_it_is_sent() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "[server]\nmax_body_bytes = 65536")).await;
    let mut s = TcpStream::connect(gw.addr).await.expect("connect");
    s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 1048576\r\nexpect: 100-continue\r\nconnection: close\r\n\r\n")
        .await
        .expect("head");
    // The client waits for "100 Continue" before its body; it gets the 413 instead.
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered at once")
        .expect("read");
    let answer = String::from_utf8_lossy(&out);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
}
