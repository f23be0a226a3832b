//! The response cache end to end: a mock upstream counts the requests that reach it.
//! Exact mode (hits, scope isolation, TTL, Cache-Control, collapse, streams, Redis shared by
//! two gateways, the ledger and the metrics) and semantic mode (a bag-of-words embeddings mock:
//! paraphrases are near, unrelated prompts far).

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::{MockReply, Seen, TestGateway, mock_upstream, post};
use tokio::net::TcpListener;

const KEY_A: &str = "tg-cache-team-a";
const KEY_A2: &str = "tg-cache-team-a-2";
const KEY_B: &str = "tg-cache-team-b";
const REDIS: &str = "redis://127.0.0.1:6379";

const CHAT: &str = r#"{"id":"chatcmpl-AbCdEf0123456789","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}"#;

const PROMPT: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"What is the capital of France?"}]}"#;

fn json_reply(delay: Duration) -> MockReply {
    MockReply {
        status: 200,
        content_type: "application/json".into(),
        // Two frames: a collapsed request must wait for the whole body.
        frames: vec![Bytes::from(&CHAT[..40]), Bytes::from(&CHAT[40..])],
        cut: false,
        frame_delay: delay,
    }
}

fn stream_reply() -> MockReply {
    let id = "chatcmpl-StReAm0123456789";
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let usage = format!(
        "data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{{\"prompt_tokens\":1000,\"completion_tokens\":500,\"total_tokens\":1500}}}}\n\n"
    );
    MockReply {
        status: 200,
        content_type: "text/event-stream".into(),
        frames: vec![
            Bytes::from(chunk(r#"{"role":"assistant","content":"Pa"}"#, "null")),
            Bytes::from(chunk(r#"{"content":"ris."}"#, "null")),
            Bytes::from(chunk("{}", "\"stop\"")),
            Bytes::from(usage),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        cut: false,
        frame_delay: Duration::ZERO,
    }
}

fn config(upstream: SocketAddr, cache: &str) -> String {
    format!(
        r#"
[cache]
{cache}

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "sk-mock"
models = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
timeout_secs = 5

[[keys]]
name = "a"
key = "{KEY_A}"
team = "team-a"

[[keys]]
name = "a2"
key = "{KEY_A2}"
team = "team-a"

[[keys]]
name = "b"
key = "{KEY_B}"
team = "team-b"
"#
    )
}

async fn chat(
    gw: &TestGateway,
    key: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, http::HeaderMap, Bytes) {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(headers);
    post(&gw.url("/v1/chat/completions"), &h, body).await
}

fn upstream_calls(seen: &Arc<Mutex<Seen>>) -> usize {
    seen.lock().expect("lock").bodies.len()
}

fn x_cache(h: &http::HeaderMap) -> &str {
    h.get("x-cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The body with every response id blanked, to compare answers across hits.
fn without_ids(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(b).to_string();
    let mut out = String::new();
    let mut rest = s.as_str();
    while let Some(i) = rest.find("\"chatcmpl-") {
        out.push_str(&rest[..i]);
        out.push_str("\"ID");
        let after = &rest[i + 1..];
        let end = after.find('"').unwrap_or(after.len());
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn id_of(b: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(b).expect("json body");
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn second_identical_request_is_a_hit_with_the_same_answer_and_a_fresh_id() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"")).await;
    let (s1, h1, b1) = chat(&gw, KEY_A, &[], PROMPT).await;
    assert_eq!((s1, x_cache(&h1)), (200, "Miss"));
    assert_eq!(h1["cache-status"], "Tollgate; fwd=uri-miss; stored");
    gw.wait_requests(1.0).await;
    // Same request, other formatting and another `user`: the same entry.
    let same = r#"{ "messages": [ {"content": "What is the capital of France?", "role": "user"} ],
        "temperature": 0, "model": "gpt-4o-mini", "user": "someone-else" }"#;
    let (s2, h2, b2) = chat(&gw, KEY_A, &[], same).await;
    assert_eq!((s2, x_cache(&h2)), (200, "Hit"));
    assert!(
        h2["cache-status"]
            .to_str()
            .expect("ascii")
            .starts_with("Tollgate; hit; ttl=")
    );
    assert_eq!(
        upstream_calls(&seen),
        1,
        "the hit never reached the provider"
    );
    assert_eq!(
        b2.len(),
        b1.len(),
        "byte for byte, the id replaced by one of the same length"
    );
    assert_eq!(without_ids(&b2), without_ids(&b1));
    assert_eq!(without_ids(&b1), without_ids(CHAT.as_bytes()));
    assert_ne!(id_of(&b2), id_of(&b1));
    assert!(id_of(&b2).starts_with("chatcmpl-"));
    // Another key of the same team shares the team's entries (default scope).
    let (_, h3, _) = chat(&gw, KEY_A2, &[], PROMPT).await;
    assert_eq!(x_cache(&h3), "Hit");
    // A different prompt is a miss.
    let other = PROMPT.replace("France", "Spain");
    let (_, h4, _) = chat(&gw, KEY_A, &[], &other).await;
    assert_eq!(x_cache(&h4), "Miss");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn one_team_never_receives_another_teams_answer() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"")).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    gw.wait_requests(1.0).await;
    let (_, h, _) = chat(&gw, KEY_B, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss", "team B asked the same: its own miss");
    assert_eq!(upstream_calls(&seen), 2);
    gw.wait_requests(2.0).await;
    let (_, h, _) = chat(&gw, KEY_B, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Hit", "team B hits its own entry");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn key_scope_separates_keys_of_one_team() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"\nscope = \"key\"")).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    gw.wait_requests(1.0).await;
    let (_, h, _) = chat(&gw, KEY_A2, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss");
    let (_, h, _) = chat(&gw, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Hit");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn entries_expire_after_the_ttl() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"\nttl_secs = 1")).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    gw.wait_requests(1.0).await;
    let (_, h, _) = chat(&gw, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, h, _) = chat(&gw, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss", "past the TTL");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn cache_control_directives_and_skip() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"")).await;
    // no-store: answered, not stored.
    let (_, h, _) = chat(&gw, KEY_A, &[("cache-control", "no-store")], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss");
    assert_eq!(h["cache-status"], "Tollgate; fwd=uri-miss");
    gw.wait_requests(1.0).await;
    let (_, h, _) = chat(&gw, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss", "nothing was stored");
    gw.wait_requests(2.0).await;
    // no-cache: not read (the entry exists), forwarded and stored again.
    let (_, h, _) = chat(&gw, KEY_A, &[("cache-control", "no-cache")], PROMPT).await;
    assert_eq!(x_cache(&h), "Refresh");
    // skip: the cache is not used at all.
    let (_, h, _) = chat(&gw, KEY_A, &[("x-tollgate-cache", "skip")], PROMPT).await;
    assert_eq!(x_cache(&h), "Bypass");
    assert_eq!(upstream_calls(&seen), 4);
    // max-age: an entry younger than N is accepted, an older one is not.
    let (_, h, _) = chat(&gw, KEY_A, &[("cache-control", "max-age=60")], PROMPT).await;
    assert_eq!(x_cache(&h), "Hit");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, h, _) = chat(&gw, KEY_A, &[("cache-control", "max-age=1")], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss", "the entry is older than 1 s");
    assert_eq!(upstream_calls(&seen), 5);
    // A request with a temperature above 0 is not deterministic enough: bypassed.
    let warm = PROMPT.replace("\"temperature\":0", "\"temperature\":0.7");
    let (_, h, _) = chat(&gw, KEY_A, &[], &warm).await;
    assert_eq!(x_cache(&h), "Bypass");
    assert_eq!(upstream_calls(&seen), 6);
    let s = gw.wait_requests(7.0).await;
    assert_eq!(
        s.sum("llm_gateway_cache_bypass_total", &[("reason", "client")]),
        1.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_cache_bypass_total",
            &[("reason", "not_cacheable")]
        ),
        1.0
    );
}

#[tokio::test]
async fn concurrent_identical_misses_are_collapsed_into_one_upstream_request() {
    // The provider takes 300 ms between its two frames: all 20 arrive while the first is out.
    let (up, seen) = mock_upstream(json_reply(Duration::from_millis(300))).await;
    let gw = Arc::new(TestGateway::start(&config(up, "mode = \"exact\"")).await);
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(
            async move { chat(&gw, KEY_A, &[], PROMPT).await },
        ));
    }
    let mut statuses = HashMap::new();
    let mut bodies = Vec::new();
    for t in tasks {
        let (s, h, b) = t.await.expect("task");
        assert_eq!(s, 200);
        *statuses.entry(x_cache(&h).to_string()).or_insert(0) += 1;
        bodies.push(without_ids(&b));
    }
    assert_eq!(upstream_calls(&seen), 1, "{statuses:?}");
    assert_eq!(statuses.get("Miss"), Some(&1));
    assert_eq!(statuses.get("Hit"), Some(&19));
    assert!(bodies.iter().all(|b| *b == bodies[0]));
}

#[tokio::test]
async fn a_cached_stream_is_replayed_byte_for_byte_with_and_without_its_usage_chunk() {
    let (up, seen) = mock_upstream(stream_reply()).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"")).await;
    let streamed = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let (s, h, first) = chat(&gw, KEY_A, &[], streamed).await;
    assert_eq!((s, x_cache(&h)), (200, "Miss"));
    gw.wait_requests(1.0).await;
    let (s, h, replay) = chat(&gw, KEY_A, &[], streamed).await;
    assert_eq!((s, x_cache(&h)), (200, "Hit"));
    assert!(
        h["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/event-stream")
    );
    assert_eq!(replay.len(), first.len());
    assert_eq!(without_ids(&replay), without_ids(&first));
    assert!(String::from_utf8_lossy(&replay).contains("\"usage\":{\"prompt_tokens\":1000"));
    assert!(replay.ends_with(b"data: [DONE]\n\n"));
    // Without include_usage (normalised out of the key) the same entry, usage chunk stripped,
    // as the gateway strips the usage it asked for on a miss.
    let plain =
        r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let (_, h, no_usage) = chat(&gw, KEY_A, &[], plain).await;
    assert_eq!(x_cache(&h), "Hit");
    assert!(!String::from_utf8_lossy(&no_usage).contains("\"usage\""));
    assert!(String::from_utf8_lossy(&no_usage).contains("ris."));
    assert!(no_usage.ends_with(b"data: [DONE]\n\n"));
    // A non-streamed request is another entry.
    let (_, h, _) = chat(&gw, KEY_A, &[], &plain.replace("\"stream\":true,", "")).await;
    assert_eq!(x_cache(&h), "Miss");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn hits_are_counted_with_their_saved_cost_in_metrics_and_ledger() {
    let (up, _seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let dir = std::env::temp_dir().join(format!("tollgate-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}/ledger.db", dir.display());
    let text = format!(
        "{}\n[ledger]\nurl = \"{url}\"\nbatch_size = 8\nflush_interval_ms = 20\n",
        config(up, "mode = \"exact\"")
    );
    let mut gw = TestGateway::start_with_ledger(&text).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    gw.wait_requests(1.0).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    chat(&gw, KEY_A, &[], PROMPT).await;
    let s = gw.wait_requests(3.0).await;
    let req = |status: &str| s.sum("llm_gateway_requests_total", &[("cache_status", status)]);
    assert_eq!((req("miss"), req("hit")), (1.0, 2.0));
    // gpt-4o-mini: $0.15 / M input, $0.60 / M output: 1000 in + 500 out = $0.00045.
    let cost = s.sum("llm_gateway_cost_usd_total", &[("team", "team-a")]);
    assert!(
        (cost - 0.00045).abs() < 1e-12,
        "only the miss cost money: {cost}"
    );
    let saved = s.sum(
        "llm_gateway_cache_saved_cost_usd_total",
        &[("team", "team-a")],
    );
    assert!(
        (saved - 0.0009).abs() < 1e-12,
        "two hits saved the original's cost: {saved}"
    );
    assert_eq!(s.sum("llm_gateway_cache_saved_tokens_total", &[]), 3000.0);
    assert_eq!(s.sum("llm_gateway_cache_stores_total", &[]), 1.0);
    assert_eq!(s.sum("llm_gateway_cache_entries", &[]), 1.0);
    assert_eq!(
        s.sum(
            "llm_gateway_cache_fetch_duration_seconds_count",
            &[("cache_status", "hit")]
        ),
        2.0
    );
    gw.shutdown().await;
    use sqlx::{Connection, Row};
    let mut c = sqlx::SqliteConnection::connect(&url).await.expect("sqlite");
    let rows = sqlx::query(
        "SELECT cache_status, cost_nanos, saved_cost_nanos, input_tokens, output_tokens \
         FROM tollgate_usage ORDER BY started_at",
    )
    .fetch_all(&mut c)
    .await
    .expect("rows");
    let rows: Vec<LedgerCacheRow> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0], (Some("miss".into()), 450_000, None, 1000, 500));
    for hit in &rows[1..] {
        assert_eq!(*hit, (Some("hit".into()), 0, Some(450_000), 1000, 500));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (cache_status, cost_nanos, saved_cost_nanos, input_tokens, output_tokens)
type LedgerCacheRow = (Option<String>, i64, Option<i64>, i64, i64);

async fn require_redis() {
    let client = redis::Client::open(REDIS).expect("url");
    let mut c = tokio::time::timeout(
        Duration::from_secs(2),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("Redis at 127.0.0.1:6379 did not answer in 2 s: these tests need it")
    .expect("Redis at 127.0.0.1:6379 is needed for these tests");
    let pong: String = redis::cmd("PING").query_async(&mut c).await.expect("PING");
    assert_eq!(pong, "PONG");
}

fn redis_cache(prefix: &str) -> String {
    format!(
        "mode = \"exact\"\nbackend = \"{REDIS}\"\nredis_prefix = \"{prefix}\"\nredis_timeout_ms = 500"
    )
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("tollgate-test:{name}:{nanos}:")
}

#[tokio::test]
async fn redis_backend_is_shared_by_two_gateways() {
    require_redis().await;
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let prefix = unique_prefix("shared");
    let text = config(up, &redis_cache(&prefix));
    let one = TestGateway::start(&text).await;
    let two = TestGateway::start(&text).await;
    let (_, h, b1) = chat(&one, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss");
    one.wait_requests(1.0).await;
    // The store is written after the response: wait for the key.
    let client = redis::Client::open(REDIS).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    for _ in 0..200 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut c)
            .await
            .expect("keys");
        if !keys.is_empty() {
            let ttl: i64 = redis::cmd("PTTL")
                .arg(&keys[0])
                .query_async(&mut c)
                .await
                .expect("pttl");
            assert!(
                ttl > 3_500_000 && ttl <= 3_600_000,
                "stored with the TTL: {ttl}"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, h, b2) = chat(&two, KEY_A, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Hit", "the other gateway's entry");
    assert_eq!(without_ids(&b2), without_ids(&b1));
    let (_, h, _) = chat(&two, KEY_B, &[], PROMPT).await;
    assert_eq!(x_cache(&h), "Miss", "scoped in Redis too");
    assert_eq!(upstream_calls(&seen), 2);
}

#[tokio::test]
async fn redis_down_is_a_bypass_never_an_error() {
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    // Nothing listens on port 1.
    let text = config(
        up,
        "mode = \"exact\"\nbackend = \"redis://127.0.0.1:1\"\nredis_timeout_ms = 100",
    );
    let gw = TestGateway::start(&text).await;
    for _ in 0..2 {
        let (s, h, b) = chat(&gw, KEY_A, &[], PROMPT).await;
        assert_eq!((s, x_cache(&h)), (200, "Bypass"));
        assert_eq!(without_ids(&b), without_ids(CHAT.as_bytes()));
    }
    assert_eq!(upstream_calls(&seen), 2);
    let s = gw.wait_requests(2.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_cache_bypass_total",
            &[("reason", "backend_error")]
        ),
        2.0
    );
}

// Semantic mode.

/// A bag-of-words embedding: each word hashed into one of 64 dimensions.
fn bag_of_words(text: &str) -> Vec<f64> {
    let mut v = vec![0.0; 64];
    for w in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let h = w
            .to_lowercase()
            .bytes()
            .fold(5381u64, |h, b| h.wrapping_mul(33) ^ u64::from(b));
        v[(h % 64) as usize] += 1.0;
    }
    v
}

struct SemanticMock {
    addr: SocketAddr,
    chats: Arc<AtomicUsize>,
    embeds: Arc<AtomicUsize>,
}

/// Chat completions (always `CHAT`) and embeddings (`bag_of_words` of the input; status 500
/// for an input containing "fail", 3 dimensions for one containing "short").
async fn semantic_mock() -> SemanticMock {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let chats = Arc::new(AtomicUsize::new(0));
    let embeds = Arc::new(AtomicUsize::new(0));
    let (c2, e2) = (chats.clone(), embeds.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = l.accept().await else {
                return;
            };
            let (chats, embeds) = (c2.clone(), e2.clone());
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (chats, embeds) = (chats.clone(), embeds.clone());
                async move {
                    let path = req.uri().path().to_string();
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let (status, out) = if path.ends_with("/embeddings") {
                        embeds.fetch_add(1, Ordering::SeqCst);
                        let v: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        let input = v["input"].as_str().unwrap_or("").to_string();
                        let emb = if input.contains("short") {
                            vec![1.0, 0.0, 0.0]
                        } else {
                            bag_of_words(&input)
                        };
                        let status = if input.contains("fail") { 500 } else { 200 };
                        let out = serde_json::json!({"object":"list","data":[{"object":"embedding","index":0,"embedding":emb}],
                            "model":"text-embedding-3-small","usage":{"prompt_tokens":8,"total_tokens":8}});
                        (status, out.to_string())
                    } else {
                        chats.fetch_add(1, Ordering::SeqCst);
                        (200, CHAT.to_string())
                    };
                    let mut r = Response::new(Full::new(Bytes::from(out)));
                    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    r.headers_mut()
                        .insert("content-type", "application/json".parse().expect("ct"));
                    Ok::<_, Infallible>(r)
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    SemanticMock {
        addr,
        chats,
        embeds,
    }
}

fn ask(text: &str) -> String {
    serde_json::json!({"model":"gpt-4o-mini","messages":[
        {"role":"system","content":"You are terse."},
        {"role":"user","content":text}]})
    .to_string()
}

const SEMANTIC: &str = "mode = \"semantic\"\n[cache.semantic]\nembeddings_model = \"text-embedding-3-small\"\nsimilarity_threshold = 0.8";

#[tokio::test]
async fn semantic_paraphrase_hits_unrelated_misses_and_teams_stay_apart() {
    let m = semantic_mock().await;
    let gw = TestGateway::start(&config(m.addr, SEMANTIC)).await;
    let (_, h, _) = chat(&gw, KEY_A, &[], &ask("Tell me the capital of France")).await;
    assert_eq!(x_cache(&h), "Miss");
    gw.wait_requests(2.0).await; // the chat and its embeddings call
    // 6 of 7 words shared: cosine 6/sqrt(42) = 0.93.
    let (s, h, b) = chat(
        &gw,
        KEY_A,
        &[],
        &ask("Tell me the capital of France please"),
    )
    .await;
    assert_eq!((s, x_cache(&h)), (200, "Hit"));
    let cs = h["cache-status"].to_str().expect("ascii");
    assert!(cs.contains("detail=\"similarity=0.9"), "{cs}");
    assert_eq!(without_ids(&b), without_ids(CHAT.as_bytes()));
    assert_eq!(m.chats.load(Ordering::SeqCst), 1);
    // Unrelated: far.
    let (_, h, _) = chat(&gw, KEY_A, &[], &ask("How do I bake sourdough bread")).await;
    assert_eq!(x_cache(&h), "Miss");
    // Team B's paraphrase is compared with team B's prompts only.
    let (_, h, _) = chat(
        &gw,
        KEY_B,
        &[],
        &ask("Tell me the capital of France please"),
    )
    .await;
    assert_eq!(x_cache(&h), "Miss");
    assert_eq!(m.chats.load(Ordering::SeqCst), 3);
    let s = gw.wait_requests(8.0).await;
    // Every lookup embedded its prompt, metered as a request to /v1/embeddings.
    assert_eq!(m.embeds.load(Ordering::SeqCst), 4);
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[
                ("endpoint", "/v1/embeddings"),
                ("cache_status", "embeddings")
            ]
        ),
        4.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[
                ("cache_status", "hit"),
                ("embeddings_model", "text-embedding-3-small"),
                ("vector_db", "memory"),
                ("embeddings_provider", "mock")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.sum("llm_gateway_cache_embeddings_duration_seconds_count", &[]),
        4.0
    );
}

#[tokio::test]
async fn semantic_threshold_edges() {
    let m = semantic_mock().await;
    // Exactly the same words: similarity 1.0 hits even at threshold 1.
    let cfg = SEMANTIC.replace("0.8", "1.0");
    let gw = TestGateway::start(&config(m.addr, &cfg)).await;
    chat(&gw, KEY_A, &[], &ask("Tell me the capital of France")).await;
    gw.wait_requests(2.0).await;
    let (_, h, _) = chat(&gw, KEY_A, &[], &ask("tell me THE capital of france!")).await;
    assert_eq!(x_cache(&h), "Hit", "same bag of words, other formatting");
    let (_, h, _) = chat(
        &gw,
        KEY_A,
        &[],
        &ask("Tell me the capital of France please"),
    )
    .await;
    assert_eq!(x_cache(&h), "Miss", "0.93 is under 1.0");
    // The system prompt is left out of the embedding by default: another one still hits.
    let other_system = serde_json::json!({"model":"gpt-4o-mini","messages":[
        {"role":"system","content":"Answer in verse."},
        {"role":"user","content":"Tell me the capital of France"}]})
    .to_string();
    let (_, h, _) = chat(&gw, KEY_A, &[], &other_system).await;
    assert_eq!(x_cache(&h), "Hit");
    assert_eq!(m.chats.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn embeddings_failure_and_dimension_mismatch_are_bypasses() {
    let m = semantic_mock().await;
    let gw = TestGateway::start(&config(m.addr, SEMANTIC)).await;
    let (s, h, b) = chat(&gw, KEY_A, &[], &ask("this will fail")).await;
    assert_eq!((s, x_cache(&h)), (200, "Bypass"));
    assert_eq!(without_ids(&b), without_ids(CHAT.as_bytes()));
    chat(&gw, KEY_A, &[], &ask("Tell me the capital of France")).await;
    gw.wait_requests(4.0).await;
    let (s, h, _) = chat(&gw, KEY_A, &[], &ask("a short one")).await;
    assert_eq!(
        (s, x_cache(&h)),
        (200, "Bypass"),
        "3 dimensions against an index of 64"
    );
    let sc = gw.wait_requests(6.0).await;
    assert_eq!(
        sc.sum(
            "llm_gateway_cache_bypass_total",
            &[("reason", "embeddings_error")]
        ),
        2.0
    );
    assert_eq!(m.chats.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn semantic_index_is_rebuilt_from_redis_at_start() {
    require_redis().await;
    let m = semantic_mock().await;
    let prefix = unique_prefix("semantic");
    let cfg = format!(
        "mode = \"semantic\"\nbackend = \"{REDIS}\"\nredis_prefix = \"{prefix}\"\nredis_timeout_ms = 500\n[cache.semantic]\nembeddings_model = \"text-embedding-3-small\"\nsimilarity_threshold = 0.8"
    );
    let first = TestGateway::start(&config(m.addr, &cfg)).await;
    chat(&first, KEY_A, &[], &ask("Tell me the capital of France")).await;
    first.wait_requests(2.0).await;
    let client = redis::Client::open(REDIS).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    for _ in 0..200 {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}v:*"))
            .query_async(&mut c)
            .await
            .expect("keys");
        if !keys.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A gateway started later has the vector from Redis.
    let second = TestGateway::start(&config(m.addr, &cfg)).await;
    let mut hit = false;
    for _ in 0..50 {
        let (_, h, _) = chat(
            &second,
            KEY_A,
            &[("cache-control", "no-store")],
            &ask("Tell me the capital of France please"),
        )
        .await;
        if x_cache(&h) == "Hit" {
            hit = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(hit, "the second gateway's index was rebuilt from Redis");
}

/// CPU seconds (user + system) of this process, from /proc (100 ticks a second).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    let ticks: f64 = f[11].parse::<f64>().expect("utime") + f[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// The benchmark of the hit path: a bounded run of sequential misses (each a new prompt, so
/// through the mock provider) and hits (one prompt) on one connection-reusing client, with
/// latency percentiles and the CPU of the whole process (client, gateway and mock) per request.
/// Run with `--no-capture` to read the numbers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_path_is_faster_than_a_miss_bounded_run() {
    const N: usize = 400;
    let (up, seen) = mock_upstream(json_reply(Duration::ZERO)).await;
    let gw = TestGateway::start(&config(up, "mode = \"exact\"")).await;
    let run = |prompt: &dyn Fn(usize) -> String| {
        let gw = &gw;
        let bodies: Vec<String> = (0..N).map(prompt).collect();
        async move {
            let mut lat = Vec::with_capacity(N);
            let cpu0 = cpu_seconds();
            let t0 = std::time::Instant::now();
            for b in &bodies {
                let t = std::time::Instant::now();
                let (s, _, _) = chat(gw, KEY_A, &[], b).await;
                lat.push(t.elapsed());
                assert_eq!(s, 200);
            }
            let wall = t0.elapsed();
            let cpu = cpu_seconds() - cpu0;
            lat.sort();
            (lat, wall, cpu)
        }
    };
    // Warm up (connections, the first hit's entry).
    chat(&gw, KEY_A, &[], PROMPT).await;
    gw.wait_requests(1.0).await;
    let (miss, miss_wall, miss_cpu) =
        run(&|i| PROMPT.replace("France", &format!("France {i}"))).await;
    let (hit, hit_wall, hit_cpu) = run(&|_| PROMPT.to_string()).await;
    assert_eq!(
        upstream_calls(&seen),
        N + 1,
        "hits never reached the provider"
    );
    let show = |name: &str, l: &[Duration], wall: Duration, cpu: f64| {
        println!(
            "cache bench {name}: n={N} p50={:?} p90={:?} p99={:?} max={:?} mean={:?} cpu/request={:.0}us",
            percentile(l, 0.5),
            percentile(l, 0.9),
            percentile(l, 0.99),
            l[l.len() - 1],
            wall / N as u32,
            cpu * 1e6 / N as f64
        );
    };
    show("miss", &miss, miss_wall, miss_cpu);
    show("hit", &hit, hit_wall, hit_cpu);
    assert!(
        percentile(&hit, 0.5) < percentile(&miss, 0.5),
        "a hit is answered without the provider round trip"
    );
}
