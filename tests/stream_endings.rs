//! How streams and bodies end: a raw upstream that controls its chunk boundaries and when it
//! sends the chunked-encoding end, and raw clients that close at the terminator. A stream whose
//! terminal event has passed is complete whoever closes first; empty bodies keep their status;
//! an endless line passes through; a dripping upstream ends on the idle timeout.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::post;

use support::TestGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const KEY: &str = "tg-endings-test";

/// What the raw upstream sends after its response headers: body pieces, each written (and
/// flushed) on its own after `gap`, then the chunked end after `end_delay` (chunked bodies).
#[derive(Clone)]
struct Raw {
    head: String,
    pieces: Vec<Vec<u8>>,
    gap: Duration,
    /// `None`: never send the end (the connection stays open until the gateway leaves).
    end_delay: Option<Duration>,
    chunked: bool,
    /// When not empty, connection `i` sends `pieces[0]` split in two at `cuts[i % len]`.
    cuts: Vec<usize>,
}

/// A raw HTTP/1.1 upstream: reads one request per connection, answers with `raw`.
async fn raw_upstream(raw: Raw) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let mut raw = raw.clone();
            let i = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !raw.cuts.is_empty() {
                let cut = raw.cuts[i % raw.cuts.len()];
                let whole = raw.pieces.concat();
                raw.pieces = [&whole[..cut], &whole[cut..]]
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect();
            }
            tokio::spawn(async move {
                if read_request(&mut s).await.is_none() {
                    return;
                }
                if s.write_all(raw.head.as_bytes()).await.is_err() {
                    return;
                }
                for p in &raw.pieces {
                    if !raw.gap.is_zero() {
                        tokio::time::sleep(raw.gap).await;
                    }
                    let framed = if raw.chunked {
                        let mut f = format!("{:x}\r\n", p.len()).into_bytes();
                        f.extend_from_slice(p);
                        f.extend_from_slice(b"\r\n");
                        f
                    } else {
                        p.clone()
                    };
                    if s.write_all(&framed).await.is_err() || s.flush().await.is_err() {
                        return;
                    }
                }
                match raw.end_delay {
                    Some(d) => {
                        tokio::time::sleep(d).await;
                        if raw.chunked {
                            let _ = s.write_all(b"0\r\n\r\n").await;
                        }
                        // Keep the connection open a little: the gateway may reuse it.
                        let mut sink = [0u8; 1024];
                        let _ =
                            tokio::time::timeout(Duration::from_secs(2), s.read(&mut sink)).await;
                    }
                    None => {
                        let mut sink = [0u8; 1024];
                        while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                    }
                }
            });
        }
    });
    addr
}

/// Reads request headers and a `Content-Length` body.
async fn read_request(s: &mut TcpStream) -> Option<()> {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = s.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    Some(())
}

fn sse_head() -> String {
    "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        .to_string()
}

fn config(upstream: SocketAddr, kind: &str, extra_provider: &str) -> String {
    let base = if kind == "anthropic" {
        format!("http://{upstream}")
    } else {
        format!("http://{upstream}/v1")
    };
    format!(
        r#"
[[providers]]
name = "up"
kind = "{kind}"
base_url = "{base}"
api_key = "sk-up"
models = ["*"]
timeout_secs = 5
{extra_provider}

[[keys]]
name = "app"
key = "{KEY}"
team = "t"
"#
    )
}

const CHAT_STREAM: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// An OpenAI chat stream with usage 11 in / 7 out, ending with `[DONE]`.
fn openai_stream() -> Vec<u8> {
    let mut s = String::new();
    for w in ["Hello", " there", " friend"] {
        s.push_str(&format!(
            "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":null}}],\"usage\":null}}\n\n"
        ));
    }
    s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n");
    s.push_str("data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":7,\"total_tokens\":18}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s.into_bytes()
}

/// A raw client: sends `body`, reads until `until` appears in what it received (or the
/// response ends), then closes its connection at once.
async fn close_at(gw: SocketAddr, path: &str, body: &str, until: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(gw).await.expect("connect");
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    let mut tmp = [0u8; 8192];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut tmp))
            .await
            .expect("response in time")
            .expect("read");
        if n == 0 {
            break;
        }
        got.extend_from_slice(&tmp[..n]);
        if got.ends_with(b"\r\n0\r\n\r\n") || dechunk(&got).windows(until.len()).any(|w| w == until)
        {
            break;
        }
    }
    drop(s);
    dechunk(&got)
}

/// The body of a raw HTTP/1.1 response as far as it arrived: chunked framing removed.
fn dechunk(raw: &[u8]) -> Vec<u8> {
    let Some(h) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    let head = String::from_utf8_lossy(&raw[..h]).to_ascii_lowercase();
    let mut rest = &raw[h + 4..];
    if !head.contains("transfer-encoding: chunked") {
        return rest.to_vec();
    }
    let mut out = Vec::new();
    while let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
        let Ok(len) = usize::from_str_radix(&String::from_utf8_lossy(&rest[..i]), 16) else {
            break;
        };
        let data = &rest[i + 2..];
        let take = len.min(data.len());
        out.extend_from_slice(&data[..take]);
        if take < len || data.len() < len + 2 {
            break;
        }
        rest = &data[len + 2..];
    }
    out
}

/// The client closes right after `[DONE]` while the upstream's chunked end is still to come,
/// with the stream's tail (usage chunk and `[DONE]`) split at every byte boundary: every
/// request is 200 with the provider's usage, none estimated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_closing_at_the_terminator_is_200_with_reported_usage_at_every_boundary() {
    let body = openai_stream();
    let usage_at = String::from_utf8_lossy(&body)
        .rfind("data: {")
        .expect("usage event");
    let cuts: Vec<usize> = (usage_at..body.len()).collect();
    let up = raw_upstream(Raw {
        head: sse_head(),
        pieces: vec![body.clone()],
        gap: Duration::from_millis(1),
        end_delay: Some(Duration::from_millis(300)),
        chunked: true,
        cuts: cuts.clone(),
    })
    .await;
    let gw = TestGateway::start(&config(up, "openai", "")).await;
    let n = cuts.len() as f64;
    let mut tasks = Vec::new();
    for _ in 0..cuts.len() {
        let addr = gw.addr;
        tasks.push(tokio::spawn(async move {
            close_at(addr, "/v1/chat/completions", CHAT_STREAM, b"data: [DONE]").await
        }));
        // Connections reach the upstream in order, so each takes the next cut.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for t in tasks {
        let got = t.await.expect("client");
        assert!(got.windows(12).any(|w| w == b"data: [DONE]"));
    }
    let s = gw.wait_requests(n).await;
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("status_code", "200")]),
        n,
        "{:?}",
        s.samples
            .iter()
            .filter(|x| x.0 == "llm_gateway_requests_total")
            .collect::<Vec<_>>()
    );
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 11.0 * n);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 7.0 * n);
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        0.0
    );
}

/// Empty upstream bodies (`Content-Length: 0`) keep their real status and error type; they
/// were all recorded as `499 client_disconnected`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_bodies_are_recorded_with_their_real_status() {
    for (status, reason, error_type) in [
        (500, "Internal Server Error", Some("upstream_server_error")),
        (429, "Too Many Requests", Some("rate_limited")),
        (200, "OK", None),
    ] {
        let up = raw_upstream(Raw {
            head: format!(
                "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n"
            ),
            pieces: vec![],
            gap: Duration::ZERO,
            end_delay: Some(Duration::ZERO),
            chunked: false,
            cuts: vec![],
        })
        .await;
        let gw = TestGateway::start(&config(up, "openai", "")).await;
        let (got, _, body) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", &format!("Bearer {KEY}"))],
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!((got, body.len()), (status, 0));
        let s = gw.wait_requests(1.0).await;
        let code = status.to_string();
        assert_eq!(
            s.sum("llm_gateway_requests_total", &[("status_code", &code)]),
            1.0,
            "{status}"
        );
        if let Some(t) = error_type {
            assert_eq!(
                s.sum("llm_gateway_errors_total", &[("error_type", t)]),
                1.0,
                "{status}"
            );
        }
        assert_eq!(
            s.sum(
                "llm_gateway_errors_total",
                &[("error_type", "client_disconnected")]
            ),
            0.0
        );
    }
}

/// An upstream that goes silent mid-stream is ended after the idle timeout as
/// `stream_interrupted`, with the tokens seen so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_upstream_ends_on_the_idle_timeout_as_stream_interrupted() {
    let body = openai_stream();
    let text = String::from_utf8_lossy(&body);
    let first_three: usize = text
        .match_indices("\n\n")
        .nth(2)
        .map(|(i, _)| i + 2)
        .expect("events");
    let up = raw_upstream(Raw {
        head: sse_head(),
        pieces: vec![body[..first_three].to_vec()],
        gap: Duration::ZERO,
        end_delay: None,
        chunked: true,
        cuts: vec![],
    })
    .await;
    let gw = TestGateway::start(&config(up, "openai", "stream_idle_timeout_secs = 1")).await;
    let started = Instant::now();
    let got = close_at(gw.addr, "/v1/chat/completions", CHAT_STREAM, b"never").await;
    let took = started.elapsed();
    assert!(String::from_utf8_lossy(&got).contains(" friend"));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "stream_interrupted")]
        ),
        1.0
    );
    assert!(s.sum("llm_gateway_completion_tokens_total", &[]) >= 3.0);
}

/// A 50 MB SSE line (a data line with no line end for 50 MB, far past `max_sse_event_bytes`)
/// passes through to the client byte for byte; the scanner skips it and reads on, so the usage
/// chunk after it is the request's usage. Before the bound and the linear scan, such a line
/// was re-copied on every chunk (14.5 s of CPU, +134 MB resident for 50 MB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_line_passes_through_and_the_usage_after_it_counts() {
    const LINE: usize = 50 << 20;
    const PIECE: usize = 256 << 10;
    let body = openai_stream();
    let text = String::from_utf8_lossy(&body);
    let split = text
        .match_indices("\n\n")
        .nth(2)
        .map(|(i, _)| i + 2)
        .expect("events");
    let mut pieces = vec![body[..split].to_vec()];
    let mut head = b"data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"".to_vec();
    head.resize(head.len() + PIECE, b'x');
    pieces.push(head);
    pieces.extend(std::iter::repeat_n(vec![b'x'; PIECE], LINE / PIECE - 1));
    pieces.push(b"\"},\"finish_reason\":null}],\"usage\":null}\n\n".to_vec());
    pieces.push(body[split..].to_vec());
    let sent: usize = pieces.iter().map(Vec::len).sum();
    let tail = body[split..].to_vec();
    let up = raw_upstream(Raw {
        head: sse_head(),
        pieces,
        gap: Duration::ZERO,
        end_delay: Some(Duration::ZERO),
        chunked: true,
        cuts: vec![],
    })
    .await;
    let gw = TestGateway::start(&config(
        up,
        "openai",
        "max_sse_event_bytes = 1048576\nstream_idle_timeout_secs = 30",
    ))
    .await;
    let auth = format!("Bearer {KEY}");
    let mut resp = support::post_streaming(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        CHAT_STREAM,
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Read frame by frame, keeping only the count and the last bytes (not 50 MB).
    use http_body_util::BodyExt;
    let mut received = 0usize;
    let mut last: Vec<u8> = Vec::new();
    let reading = async {
        while let Some(frame) = resp.body_mut().frame().await {
            let frame = frame.expect("frame");
            if let Some(d) = frame.data_ref() {
                received += d.len();
                last.extend_from_slice(d);
                if last.len() > 4096 {
                    last.drain(..last.len() - 4096);
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), reading)
        .await
        .expect("the whole stream within 120 s");
    assert_eq!(received, sent, "every byte passed through");
    assert!(
        last.ends_with(&tail),
        "the usage chunk and [DONE] reached the client"
    );
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("status_code", "200")]),
        1.0
    );
    assert_eq!(s.sum("llm_gateway_errors_total", &[]), 0.0);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 7.0);
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 11.0);
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        0.0,
        "the provider's usage, not an estimate"
    );
    // Healthy after: the next request is answered.
    let (status, _, _) = support::get(&gw.url("/v1/models"), &[("authorization", &auth)]).await;
    assert_eq!(status, 200);
}

/// `on_client_disconnect = "drain"`: a client that leaves after the first token does not cut
/// the upstream; the gateway reads the stream on to its end, so the request (recorded `499`,
/// the client left) holds the provider's own usage, 11 in / 7 out, nothing estimated, and
/// `llm_gateway_streams_draining` counts the stream while it drains. With the default
/// (`cancel`) the same departure cuts the upstream, and what was seen is estimated. With a
/// drain bound shorter than the stream, the drain ends at the bound and estimates too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_reads_a_left_stream_to_the_providers_usage() {
    let pieces: Vec<Vec<u8>> = String::from_utf8(openai_stream())
        .expect("utf-8")
        .split_inclusive("\n\n")
        .map(|e| e.as_bytes().to_vec())
        .collect();
    assert_eq!(pieces.len(), 6);
    // Six events 250 ms apart: the stream lasts ~1.5 s after the client left at the first.
    let up = raw_upstream(Raw {
        head: sse_head(),
        pieces: pieces.clone(),
        gap: Duration::from_millis(250),
        end_delay: Some(Duration::ZERO),
        chunked: true,
        cuts: vec![],
    })
    .await;
    let draining =
        |s: &support::Scrape| s.sum("llm_gateway_streams_draining", &[("provider", "up")]);

    // Drain, bounded far above the stream's length.
    let gw = TestGateway::start(&config(
        up,
        "openai",
        "on_client_disconnect = \"drain\"\ndrain_timeout_secs = 20",
    ))
    .await;
    let got = close_at(gw.addr, "/v1/chat/completions", CHAT_STREAM, b"Hello").await;
    assert!(String::from_utf8_lossy(&got).contains("Hello"));
    let mut seen_draining = false;
    for _ in 0..100 {
        let s = gw.scrape().await;
        if draining(&s) == 1.0 {
            seen_draining = true;
            assert_eq!(
                s.sum("llm_gateway_requests_total", &[]),
                0.0,
                "not settled while draining"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen_draining, "the drain is counted while it reads");
    let s = gw.wait_requests(1.0).await;
    assert_eq!(draining(&s), 0.0, "the drain ended");
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("status_code", "499")]),
        1.0
    );
    assert_eq!(s.sum("llm_gateway_prompt_tokens_total", &[]), 11.0);
    assert_eq!(s.sum("llm_gateway_completion_tokens_total", &[]), 7.0);
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        0.0,
        "the provider's usage, not an estimate"
    );
    drop(gw);

    // Cancel (the default): the upstream is cut when the client leaves; nothing reported it.
    let gw = TestGateway::start(&config(up, "openai", "")).await;
    let got = close_at(gw.addr, "/v1/chat/completions", CHAT_STREAM, b"Hello").await;
    assert!(String::from_utf8_lossy(&got).contains("Hello"));
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("status_code", "499")]),
        1.0
    );
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        1.0
    );
    assert_eq!(draining(&s), 0.0);
    drop(gw);

    // Drain bounded at 1 s, far shorter than a stream of events 600 ms apart (3.6 s): cut at
    // the bound, what was seen estimated. (With 250 ms apart, a client slowed by the whole
    // suite's load left so late that the rest of the stream fit in the bound.)
    let slow = raw_upstream(Raw {
        head: sse_head(),
        pieces: pieces.clone(),
        gap: Duration::from_millis(600),
        end_delay: Some(Duration::ZERO),
        chunked: true,
        cuts: vec![],
    })
    .await;
    let gw = TestGateway::start(&config(
        slow,
        "openai",
        "on_client_disconnect = \"drain\"\ndrain_timeout_secs = 1",
    ))
    .await;
    let started = Instant::now();
    let _ = close_at(gw.addr, "/v1/chat/completions", CHAT_STREAM, b"Hello").await;
    let s = gw.wait_requests(1.0).await;
    let took = started.elapsed();
    // The client left at the first event (600 ms); the drain read for its 1 s bound after
    // that. The stream would have ended with its usage at 3.6 s: estimated means it was cut.
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(10),
        "settled at the drain bound: {took:?}"
    );
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        1.0
    );
    assert_eq!(draining(&s), 0.0);
}
