//! The MCP gateway end to end against a mock MCP server speaking the wire shapes of the
//! official Python SDK (provider-apis.md §2.5): JSON and SSE answers, `Mcp-Session-Id`,
//! `isError` results, a stream cut mid-way, a slow tool. What the client gets, what the
//! server saw, the metrics and the ledger rows.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};
use sqlx::Connection;
use support::{Scrape, TestGateway, post, post_streaming};
use tokio::net::TcpListener;

const KEY: &str = "tg-mcp-research-key";
const OPS_KEY: &str = "tg-mcp-ops-key-123";
const SESSION: &str = "df9484d3eac64065bc7637a14007b0d5";

/// What the mock server saw: (headers, body) per request.
type Seen = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

type MockBody = BoxBody<Bytes, std::io::Error>;

/// provider, model, team, mcp_outcome, cost_nanos, response_bytes, status_code, duration_us
type LedgerRow = (String, String, String, String, i64, i64, i64, i64);

fn sse_event(v: &Value) -> Bytes {
    Bytes::from(format!("event: message\r\ndata: {v}\r\n\r\n"))
}

/// A body of `frames`, each after `delay`; `cut`: the connection breaks after them.
fn frames(frames: Vec<Bytes>, delay: Duration, cut: bool) -> MockBody {
    let stream = futures_util::stream::unfold(0usize, move |i| {
        let frames = frames.clone();
        async move {
            if i < frames.len() {
                if i > 0 {
                    tokio::time::sleep(delay).await;
                }
                return Some((Ok(Frame::data(frames[i].clone())), i + 1));
            }
            if cut && i == frames.len() {
                // Let hyper write the head and the frames first.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Some((Err(std::io::Error::other("cut")), i + 1));
            }
            None
        }
    });
    BodyExt::boxed(StreamBody::new(stream))
}

fn reply(status: u16, ct: &str, body: MockBody) -> Response<MockBody> {
    let mut r = Response::new(body);
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r.headers_mut()
        .insert("content-type", ct.parse().expect("ct"));
    r
}

/// The mock server's answer to one request, by JSON-RPC method and tool.
fn answer(method: &http::Method, body: &[u8]) -> Response<MockBody> {
    if method == http::Method::GET {
        let ping = sse_event(
            &json!({"jsonrpc":"2.0","method":"notifications/message","params":{"level":"info","data":"hello"}}),
        );
        return reply(
            200,
            "text/event-stream",
            frames(vec![ping], Duration::ZERO, false),
        );
    }
    if method == http::Method::DELETE {
        return reply(
            200,
            "application/json",
            frames(vec![], Duration::ZERO, false),
        );
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if v.is_array() {
        let out: Vec<Value> = v
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| {
                m.get("id")
                    .map(|id| json!({"jsonrpc":"2.0","id":id,"result":{}}))
            })
            .collect();
        let b = Bytes::from(Value::Array(out).to_string());
        return reply(
            200,
            "application/json",
            frames(vec![b], Duration::ZERO, false),
        );
    }
    let id = v["id"].clone();
    let one = |v: Value| frames(vec![Bytes::from(v.to_string())], Duration::ZERO, false);
    match v["method"].as_str().unwrap_or("") {
        "initialize" => {
            let mut r = reply(
                200,
                "text/event-stream",
                frames(
                    vec![sse_event(
                        &json!({"jsonrpc":"2.0","id":id,"result":{"capabilities":{"tools":{}},"protocolVersion":"2025-11-25","serverInfo":{"name":"mock","version":""}}}),
                    )],
                    Duration::ZERO,
                    false,
                ),
            );
            r.headers_mut()
                .insert("mcp-session-id", SESSION.parse().expect("id"));
            r
        }
        "notifications/initialized" => reply(202, "application/json", one(Value::Null).boxed()),
        "tools/list" => reply(
            200,
            "application/json",
            one(json!({"jsonrpc":"2.0","id":id,"result":{"tools":[
                {"name":"add","inputSchema":{"type":"object"}},
                {"name":"secret","inputSchema":{"type":"object"}},
                {"name":"slow","inputSchema":{"type":"object"}}]}})),
        ),
        "tools/call" => match v["params"]["name"].as_str().unwrap_or("") {
            "add" => reply(
                200,
                "text/event-stream",
                frames(
                    vec![sse_event(
                        &json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"5"}],"isError":false,"structuredContent":{"result":5}}}),
                    )],
                    Duration::ZERO,
                    false,
                ),
            ),
            "broken" => reply(
                200,
                "text/event-stream",
                frames(
                    vec![sse_event(
                        &json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"boom"}],"isError":true}}),
                    )],
                    Duration::ZERO,
                    false,
                ),
            ),
            // A progress notification, 400 ms, then the result: two frames.
            "slow" => reply(
                200,
                "text/event-stream",
                frames(
                    vec![
                        sse_event(
                            &json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.5}}),
                        ),
                        sse_event(
                            &json!({"jsonrpc":"2.0","id":id,"result":{"content":[{"type":"text","text":"done"}],"isError":false}}),
                        ),
                    ],
                    Duration::from_millis(400),
                    false,
                ),
            ),
            // The server dies mid-stream: an event, then the connection breaks.
            "dies" => reply(
                200,
                "text/event-stream",
                frames(
                    vec![sse_event(
                        &json!({"jsonrpc":"2.0","method":"notifications/progress","params":{"progressToken":1,"progress":0.1}}),
                    )],
                    Duration::ZERO,
                    true,
                ),
            ),
            other => reply(
                200,
                "application/json",
                one(
                    json!({"jsonrpc":"2.0","id":id,"error":{"code":-32602,"message":format!("Unknown tool: {other}")}}),
                ),
            ),
        },
        _ => reply(
            200,
            "application/json",
            one(
                json!({"jsonrpc":"2.0","id":id,"error":{"code":-32601,"message":"Method not found"}}),
            ),
        ),
    }
}

async fn mock_mcp() -> (SocketAddr, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen: Seen = Arc::default();
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let seen = seen2.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    seen.lock()
                        .expect("lock")
                        .push((parts.headers.clone(), body.clone()));
                    // `hang`: the response head comes late (past a 1 s timeout).
                    if body.windows(6).any(|w| w == b"\"hang\"") {
                        tokio::time::sleep(Duration::from_millis(1500)).await;
                    }
                    Ok::<_, Infallible>(answer(&parts.method, &body))
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

fn config(mcp: SocketAddr, extra: &str) -> String {
    format!(
        r#"
[[providers]]
name = "unused"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-unused"
models = ["gpt-4o-mini"]

[[keys]]
name = "research-app"
key = "{KEY}"
team = "research"

[[keys]]
name = "ops-app"
key = "{OPS_KEY}"
team = "ops"

[[mcp_servers]]
name = "tools"
url = "http://{mcp}/mcp"
upstream_headers = {{ Authorization = "Bearer upstream-secret" }}
max_body_bytes = 4096

[[mcp_servers.access]]
team = "research"
allowed_tools = ["add", "slow", "broken", "dies", "nope"]

[[mcp_servers.tools]]
name = "add"
cost_usd = "0.0025"

[[mcp_servers.tools]]
name = "slow"
limits = {{ requests_per_minute = 1 }}
{extra}
"#
    )
}

fn call(id: Value, tool: &str) -> String {
    json!({"jsonrpc":"2.0","id":id,"method":"tools/call","params":{"name":tool,"arguments":{"a":2,"b":3}}}).to_string()
}

const ACCEPT: (&str, &str) = ("accept", "application/json, text/event-stream");

fn auth(key: &str) -> String {
    format!("Bearer {key}")
}

async fn rpc(
    gw: &TestGateway,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, HeaderMap, Value, Bytes) {
    let a = auth(key);
    let mut h = vec![ACCEPT, ("authorization", a.as_str())];
    h.extend_from_slice(headers);
    let (status, headers, body) = post(&gw.url("/mcp/tools"), &h, body).await;
    let text = String::from_utf8_lossy(&body).to_string();
    // JSON, or the data of the last SSE event.
    let v = serde_json::from_str(&text).unwrap_or_else(|_| {
        text.lines()
            .filter_map(|l| l.strip_prefix("data: "))
            .next_back()
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or(Value::Null)
    });
    (status, headers, v, body)
}

/// Waits until `llm_gateway_mcp_requests_total` reaches `n`.
async fn wait_mcp(gw: &TestGateway, n: f64) -> Scrape {
    for _ in 0..500 {
        let s = gw.scrape().await;
        if s.sum("llm_gateway_mcp_requests_total", &[]) >= n {
            return gw.scrape().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "mcp requests never reached {n}: {:?}",
        gw.scrape().await.samples
    );
}

#[tokio::test]
async fn handshake_era_session_headers_and_ids_pass_verbatim() {
    let (addr, seen) = mock_mcp().await;
    let gw = TestGateway::start(&config(addr, "")).await;
    let init = json!({"jsonrpc":"2.0","id":"init-1","method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}).to_string();
    let (status, headers, v, _) = rpc(&gw, KEY, &[("traceparent", "00-abc-def-01")], &init).await;
    assert_eq!(status, 200);
    assert_eq!(headers["mcp-session-id"], SESSION);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert_eq!(v["id"], "init-1", "ids are never rewritten");
    let session = [
        ("mcp-session-id", SESSION),
        ("mcp-protocol-version", "2025-11-25"),
        ("last-event-id", "e-7"),
        ("mcp-param-region", "eu"),
    ];
    let (status, _, _, body) = rpc(
        &gw,
        KEY,
        &session,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
    )
    .await;
    assert_eq!((status, body.len()), (202, 4), "202 passes with its body");
    let (status, _, v, _) = rpc(&gw, KEY, &session, &call(json!(3), "add")).await;
    assert_eq!(status, 200);
    assert_eq!(v["id"], 3);
    assert_eq!(v["result"]["structuredContent"]["result"], 5);
    // GET stream and DELETE.
    let a = auth(KEY);
    let (status, headers, body) = support::get(
        &gw.url("/mcp/tools"),
        &[
            ("accept", "text/event-stream"),
            ("authorization", &a),
            ("mcp-session-id", SESSION),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-accel-buffering"], "no");
    assert!(String::from_utf8_lossy(&body).contains("notifications/message"));

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4);
    let (h, _) = &seen[2];
    assert_eq!(
        h["authorization"], "Bearer upstream-secret",
        "the server's credential, never the virtual key"
    );
    assert!(seen.iter().all(|(h, _)| h["authorization"] != a.as_str()));
    for (name, value) in session {
        assert_eq!(h[name], value, "{name}");
    }
    assert_eq!(seen[0].0["traceparent"], "00-abc-def-01");
    assert_eq!(
        seen[2].1,
        Bytes::from(call(json!(3), "add")),
        "the body passes byte for byte"
    );

    let s = wait_mcp(&gw, 4.0).await;
    let n = |m: &[(&str, &str)]| s.sum("llm_gateway_mcp_requests_total", m);
    assert_eq!(n(&[("method", "initialize"), ("outcome", "ok")]), 1.0);
    assert_eq!(
        n(&[
            ("method", "notifications/initialized"),
            ("outcome", "accepted")
        ]),
        1.0
    );
    assert_eq!(
        n(&[
            ("method", "tools/call"),
            ("tool", "add"),
            ("team", "research"),
            ("key", "research-app"),
            ("outcome", "ok")
        ]),
        1.0
    );
    assert_eq!(n(&[("method", "GET"), ("outcome", "ok")]), 1.0);
    assert_eq!(
        s.sum(
            "llm_gateway_mcp_tool_cost_usd_total",
            &[("tool", "add"), ("team", "research")]
        ),
        0.0025
    );
    assert!(
        s.sum(
            "llm_gateway_mcp_response_body_bytes_count",
            &[("tool", "add")]
        ) >= 1.0
    );
    assert!(
        s.sum(
            "llm_gateway_mcp_request_duration_seconds_count",
            &[("tool", "add")]
        ) >= 1.0
    );
}

#[tokio::test]
async fn forbidden_tools_are_refused_in_protocol_shape_and_hidden() {
    let (addr, seen) = mock_mcp().await;
    let gw = TestGateway::start(&config(addr, "")).await;
    let list = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
    let (status, _, v, _) = rpc(&gw, KEY, &[], list).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = v["result"]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["add", "slow"], "secret is hidden from research");
    // ops has no entry of its own: every tool.
    let (_, _, v, _) = rpc(&gw, OPS_KEY, &[], list).await;
    assert_eq!(v["result"]["tools"].as_array().map(Vec::len), Some(3));

    let before = seen.lock().expect("lock").len();
    let (status, _, v, _) = rpc(&gw, KEY, &[], &call(json!("c-9"), "secret")).await;
    assert_eq!(status, 200, "a JSON-RPC error, not an HTTP error");
    assert_eq!(v["id"], "c-9");
    assert_eq!(v["error"]["code"], -32602);
    assert_eq!(
        seen.lock().expect("lock").len(),
        before,
        "never reaches the server"
    );
    // A batch holding a forbidden call is refused whole.
    let batch = format!("[{},{}]", call(json!(5), "add"), call(json!(6), "secret"));
    let (status, _, v, _) = rpc(&gw, KEY, &[], &batch).await;
    assert_eq!(status, 200);
    assert_eq!(v.as_array().map(Vec::len), Some(2));
    assert_eq!(seen.lock().expect("lock").len(), before);

    let s = wait_mcp(&gw, 5.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_mcp_errors_total",
            &[
                ("tool", "secret"),
                ("team", "research"),
                ("error_type", "forbidden_tool")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn modern_era_headers_are_checked_against_the_body() {
    let (addr, seen) = mock_mcp().await;
    let gw = TestGateway::start(&config(addr, "")).await;
    let modern = [
        ("mcp-protocol-version", "2026-07-28"),
        ("mcp-method", "tools/call"),
        ("mcp-name", "add"),
    ];
    let (status, _, v, _) = rpc(&gw, KEY, &modern, &call(json!(1), "add")).await;
    assert_eq!(
        (status, v["result"]["isError"].clone()),
        (200, json!(false))
    );
    assert_eq!(seen.lock().expect("lock")[0].0["mcp-name"], "add");
    // The header names an allowed tool, the body a forbidden one: 400 -32020, never sent.
    let (status, _, v, _) = rpc(&gw, KEY, &modern, &call(json!(2), "secret")).await;
    assert_eq!(status, 400);
    assert_eq!(v["error"]["code"], -32020);
    assert_eq!(v["id"], 2);
    assert_eq!(seen.lock().expect("lock").len(), 1);
}

#[tokio::test]
async fn outcomes_limits_and_hostile_bodies_are_counted_and_the_gateway_stays_up() {
    let (addr, _) = mock_mcp().await;
    let gw = TestGateway::start(&config(addr, "")).await;
    // isError result, JSON-RPC error.
    let (_, _, v, _) = rpc(&gw, KEY, &[], &call(json!(1), "broken")).await;
    assert_eq!(v["result"]["isError"], true);
    let (_, _, v, _) = rpc(&gw, KEY, &[], &call(json!(2), "nope")).await;
    assert_eq!(v["error"]["code"], -32602);
    // The slow tool streams: the progress event arrives before the result is sent.
    let a = auth(KEY);
    let t0 = Instant::now();
    let resp = post_streaming(
        &gw.url("/mcp/tools"),
        &[ACCEPT, ("authorization", &a)],
        &call(json!(3), "slow"),
    )
    .await;
    let mut body = resp.into_body();
    let first = body.frame().await.expect("a frame").expect("ok");
    let first_at = t0.elapsed();
    assert!(
        String::from_utf8_lossy(first.data_ref().expect("data")).contains("notifications/progress")
    );
    let mut rest = Vec::new();
    while let Some(f) = body.frame().await {
        rest.extend_from_slice(f.expect("frame").data_ref().map_or(&[][..], |d| d));
    }
    assert!(String::from_utf8_lossy(&rest).contains("done"));
    assert!(
        t0.elapsed() - first_at >= Duration::from_millis(300),
        "SSE passes event by event: the first event came {first_at:?} before the end"
    );
    // The slow tool's limit: 1 a minute. Over it: a JSON-RPC error in a 200.
    let (status, _, v, _) = rpc(&gw, KEY, &[], &call(json!(4), "slow")).await;
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32000);
    assert_eq!(v["id"], 4);
    assert_eq!(v["error"]["data"]["scope"], "mcp_tool");
    // The server dies mid-stream.
    let resp = post_streaming(
        &gw.url("/mcp/tools"),
        &[ACCEPT, ("authorization", &a)],
        &call(json!(5), "dies"),
    )
    .await;
    let _ = resp.into_body().collect().await;
    // Malformed JSON, not JSON-RPC, oversized, unknown server, no key, a batch.
    let (status, _, v, _) = rpc(&gw, KEY, &[], "{\"jsonrpc\":").await;
    assert_eq!((status, v["error"]["code"].clone()), (400, json!(-32700)));
    let (status, _, v, _) = rpc(&gw, KEY, &[], r#"{"jsonrpc":"2.0","id":1}"#).await;
    assert_eq!((status, v["error"]["code"].clone()), (400, json!(-32600)));
    let big = call(json!(6), &"x".repeat(5000));
    let (status, _, _, _) = rpc(&gw, KEY, &[], &big).await;
    assert_eq!(status, 413);
    let (status, _, _) = post(&gw.url("/mcp/none"), &[ACCEPT, ("authorization", &a)], "{}").await;
    assert_eq!(status, 404);
    let (status, headers, _) = post(&gw.url("/mcp/tools"), &[ACCEPT], &call(json!(7), "add")).await;
    assert_eq!(
        (status, headers["www-authenticate"].to_str().ok()),
        (401, Some("Bearer"))
    );
    let batch = format!(
        "[{},{}]",
        call(json!(8), "add"),
        r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{}}"#
    );
    let (status, _, v, _) = rpc(&gw, KEY, &[], &batch).await;
    assert_eq!((status, v[0]["id"].clone()), (200, json!(8)));
    // Still up.
    let (_, _, v, _) = rpc(&gw, KEY, &[], &call(json!(9), "add")).await;
    assert_eq!(v["result"]["structuredContent"]["result"], 5);

    let s = wait_mcp(&gw, 12.0).await;
    let outcome = |tool: &str, o: &str| {
        s.sum(
            "llm_gateway_mcp_requests_total",
            &[("tool", tool), ("outcome", o)],
        )
    };
    assert_eq!(outcome("broken", "tool_error"), 1.0);
    assert_eq!(outcome("nope", "rpc_error"), 1.0);
    assert_eq!(outcome("slow", "ok"), 1.0);
    assert_eq!(outcome("slow", "limited"), 1.0);
    assert_eq!(outcome("dies", "upstream_error"), 1.0);
    let err = |t: &str| s.sum("llm_gateway_mcp_errors_total", &[("error_type", t)]);
    assert_eq!(
        err("upstream_cut"),
        1.0,
        "{:?}",
        s.samples
            .iter()
            .filter(|x| x.0 == "llm_gateway_mcp_errors_total")
            .collect::<Vec<_>>()
    );
    assert_eq!(err("rate_limited"), 1.0);
    assert_eq!(err("parse_error"), 1.0);
    assert_eq!(err("invalid_request"), 1.0);
    assert_eq!(err("body_too_large"), 1.0);
    assert_eq!(err("missing_key"), 1.0);
    assert_eq!(err("invalid_params"), 1.0);
    assert_eq!(err("tool_error"), 1.0);
    // The slow call's duration includes its 400 ms.
    let slow_sum = s.sum(
        "llm_gateway_mcp_request_duration_seconds_sum",
        &[("tool", "slow")],
    );
    assert!(slow_sum >= 0.35, "{slow_sum}");
}

#[tokio::test]
async fn each_tool_call_is_a_ledger_row() {
    let (addr, _) = mock_mcp().await;
    let dir = std::env::temp_dir().join(format!("tollgate-mcp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    let extra = format!("\n[ledger]\nurl = \"{url}\"\nflush_interval_ms = 20\n");
    let gw = TestGateway::start_with_ledger(&config(addr, &extra)).await;
    rpc(&gw, KEY, &[], &call(json!(1), "add")).await;
    rpc(&gw, KEY, &[], &call(json!(2), "broken")).await;
    rpc(&gw, KEY, &[], &call(json!(3), "secret")).await;
    rpc(
        &gw,
        KEY,
        &[],
        r#"{"jsonrpc":"2.0","id":4,"method":"tools/list"}"#,
    )
    .await;
    for _ in 0..500 {
        if gw.gateway.metrics.ledger_written.get() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut conn = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
    let rows: Vec<LedgerRow> = sqlx::query_as(
        "SELECT provider, model, team, mcp_outcome, cost_nanos, response_bytes, status_code, duration_us \
         FROM tollgate_usage WHERE endpoint = 'mcp' ORDER BY started_at",
    )
    .fetch_all(&mut conn)
    .await
    .expect("rows");
    assert_eq!(rows.len(), 3, "tools/call only: {rows:?}");
    assert_eq!(
        (
            &*rows[0].0,
            &*rows[0].1,
            &*rows[0].2,
            &*rows[0].3,
            rows[0].4
        ),
        ("tools", "add", "research", "ok", 2_500_000)
    );
    assert!(rows[0].5 > 50, "response bytes {}", rows[0].5);
    assert_eq!(
        (&*rows[1].1, &*rows[1].3, rows[1].4),
        ("broken", "tool_error", 0)
    );
    assert_eq!(
        (&*rows[2].1, &*rows[2].3, rows[2].6),
        ("secret", "forbidden", 200)
    );
    // Never the arguments or the result.
    let leaked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM tollgate_usage t WHERE t.model LIKE '%structuredContent%' OR t.error_type LIKE '%boom%'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("count");
    assert_eq!(leaked, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_readme_example_is_a_valid_config() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let section = readme.split("\n## MCP\n").nth(1).expect("an MCP section");
    let example = section
        .split("```toml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a toml block");
    let text = format!(
        "{}\n{example}",
        config(([127, 0, 0, 1], 9).into(), "")
            .split("[[mcp_servers]]")
            .next()
            .unwrap_or("")
    );
    let vars: std::collections::HashMap<String, String> =
        [("TOOLS_TOKEN".to_string(), "t0ken".to_string())].into();
    let cfg =
        tollgate::config::Config::from_toml(&text, &vars).expect("the README's example validates");
    let s = &cfg.mcp.servers["tools"];
    assert_eq!(s.tools["run_sql"].cost_nanos, 2_000_000);
    assert!(s.allowed("any", "research").permits("run_sql"));
    assert!(!s.allowed("any", "ops").permits("run_sql"));
    assert_eq!(s.upstream_headers[0].1, "Bearer t0ken");
    assert!(
        !format!("{s:?}").contains("t0ken"),
        "the secret never shows in Debug"
    );
    // Every rule of it is known to the gateway (budget gauges).
    assert!(cfg.rules.iter().any(|r| &*r.name == "tools/run_sql"));
}

#[test]
fn bad_mcp_configs_name_their_key_paths() {
    let vars: std::collections::HashMap<String, String> = Default::default();
    let text = r#"
[[mcp_servers]]
name = "a/b"
url = "ftp://x"
upstream_headers = { "Bad Header" = "x", Authorization = "${UNSET_MCP_TOKEN}" }
[[mcp_servers.access]]
team = "t"
key = "k"
allowed_tools = []
[[mcp_servers.tools]]
name = "x"
cost_usd = "-0.1"
[[mcp_servers.tools]]
name = "x"
limits = { requests_per_minute = 0 }
"#;
    let err = match tollgate::config::Config::from_toml(text, &vars) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("must not validate"),
    };
    for path in [
        "mcp_servers[0].name",
        "mcp_servers[0].url",
        "mcp_servers[0].upstream_headers.Bad Header",
        "mcp_servers[0].upstream_headers.Authorization",
        "mcp_servers[0].access[0]",
        "mcp_servers[0].tools[0].cost_usd",
        "mcp_servers[0].tools[1].name",
        "mcp_servers[0].tools[1].limits.requests_per_minute",
    ] {
        assert!(err.contains(path), "{path} missing in:\n{err}");
    }
}

#[tokio::test]
async fn budgets_and_timeouts_answer_in_protocol_shape() {
    let (addr, _) = mock_mcp().await;
    let extra = r#"
[[mcp_servers]]
name = "paid"
url = "http://MCP/mcp"
timeout_secs = 1

[[mcp_servers.tools]]
name = "add"
cost_usd = "0.002"
budget = { usd = 0.005, period = "day", overshoot = "none" }
"#
    .replace("MCP", &addr.to_string());
    let gw = TestGateway::start(&config(addr, &extra)).await;
    let a = auth(KEY);
    let paid = |body: String| {
        let url = gw.url("/mcp/paid");
        let a = a.clone();
        async move {
            let (status, _, body) = post(&url, &[ACCEPT, ("authorization", &a)], &body).await;
            let text = String::from_utf8_lossy(&body).to_string();
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                text.lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .next_back()
                    .and_then(|d| serde_json::from_str(d).ok())
                    .unwrap_or(Value::Null)
            });
            (status, v)
        }
    };
    // 0.002 a call against 0.005: two calls fit, the third's cost does not.
    for id in 1..=2 {
        let (status, v) = paid(call(json!(id), "add")).await;
        assert_eq!(
            (status, v["result"]["isError"].clone()),
            (200, json!(false))
        );
    }
    let (status, v) = paid(call(json!(3), "add")).await;
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32000);
    assert_eq!(v["error"]["data"]["limit"], "budget");
    // The server does not answer within timeout_secs: 504 with the request's id.
    let (status, v) = paid(call(json!("t-1"), "hang")).await;
    assert_eq!(status, 504);
    assert_eq!(
        (v["id"].clone(), v["error"]["code"].clone()),
        (json!("t-1"), json!(-32001))
    );
    let s = wait_mcp(&gw, 4.0).await;
    let err = |t: &str| {
        s.sum(
            "llm_gateway_mcp_errors_total",
            &[("server", "paid"), ("error_type", t)],
        )
    };
    assert_eq!(err("budget_exceeded"), 1.0);
    assert_eq!(err("timeout"), 1.0);
    assert_eq!(
        s.sum("llm_gateway_mcp_tool_cost_usd_total", &[("server", "paid")]),
        0.004,
        "only the calls made are charged"
    );
}

#[tokio::test]
async fn tool_limits_are_shared_through_redis() {
    let (addr, _) = mock_mcp().await;
    let prefix = format!(
        "tollgate-mcp-test-{}-{}",
        std::process::id(),
        Instant::now().elapsed().as_nanos()
    );
    let extra = format!(
        "\n[limits]\nbackend = \"redis://127.0.0.1:6379\"\nredis_prefix = \"{prefix}\"\non_backend_error = \"deny\"\n"
    );
    let cfg = config(addr, &extra);
    let one = TestGateway::start(&cfg).await;
    let two = TestGateway::start(&cfg).await;
    // `slow` allows 1 call a minute, across both replicas.
    let (_, _, v, _) = rpc(&one, KEY, &[], &call(json!(1), "slow")).await;
    assert_eq!(v["result"]["content"][0]["text"], "done");
    let (status, _, v, _) = rpc(&two, KEY, &[], &call(json!(2), "slow")).await;
    assert_eq!(status, 200);
    assert_eq!(v["error"]["code"], -32000, "{v}");
    assert_eq!(v["error"]["data"]["name"], "tools/slow");
}
