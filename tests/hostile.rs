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
    eprintln!("scrape after 50 megabyte model names: {} bytes", text.len());
    assert!(
        text.len() < 32 * 1024,
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

fn openai_reply(usage: &str) -> MockReply {
    json_reply(format!(
        r#"{{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"ok then"}},"finish_reason":"stop"}}],"usage":{usage}}}"#
    ))
}

static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// A fresh ledger database: an SQLite file, or a PostgreSQL database (named as
/// tests/ledger.rs names its own, so its clean-up of dead runs recognises it).
async fn ledger_url(postgres: bool) -> String {
    use sqlx::Connection;
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tag = format!("{}_h{n}", std::process::id());
    if !postgres {
        let dir = std::env::temp_dir().join(format!("tollgate-hostile-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        return format!("sqlite://{}", dir.join("ledger.db").display());
    }
    let admin = std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
    let name = format!("tollgate_test_{tag}");
    for sql in [
        format!("DROP DATABASE IF EXISTS {name}"),
        format!("CREATE DATABASE {name}"),
    ] {
        sqlx::query(&sql).execute(&mut conn).await.expect(&sql);
    }
    let (base, _) = admin.rsplit_once('/').expect("database path");
    format!("{base}/{name}")
}

const ADMIN: &str = "hostile-admin-token";

async fn usage_report(gw: &TestGateway, group_by: &str) -> serde_json::Value {
    let (status, _, body) = get(
        &gw.url(&format!(
            "/api/v1/usage?from=2000-01-01&to=2100-01-01&group_by={group_by}"
        )),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("report JSON")
}

async fn wait_written(gw: &TestGateway, n: u64) {
    let m = &gw.gateway.metrics;
    for _ in 0..1000 {
        if m.ledger_written.get() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the ledger wrote {} rows of {n}", m.ledger_written.get());
}

/// 9.2e18 and u64::MAX tokens, and negative, fractional and string counts: clamped and
/// flagged, or estimated; the metrics and the ledger hold the same cost; the key's budget is
/// not exhausted, also after a restart that restores its spend from the ledger.
async fn absurd_usage_is_clamped_flagged_and_agreed(postgres: bool) {
    let (huge, _) = mock_upstream(openai_reply(
        r#"{"prompt_tokens":9200000000000000000,"completion_tokens":9200000000000000000,"total_tokens":18400000000000000000}"#,
    ))
    .await;
    let (max, _) = mock_upstream(openai_reply(
        r#"{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,"prompt_tokens_details":{"cached_tokens":18446744073709551615},"completion_tokens_details":{"reasoning_tokens":18446744073709551615}}"#,
    ))
    .await;
    let (negative, _) = mock_upstream(openai_reply(
        r#"{"prompt_tokens":-5,"completion_tokens":1.5,"total_tokens":-3.5}"#,
    ))
    .await;
    let (strings, _) = mock_upstream(openai_reply(
        r#"{"prompt_tokens":"12","completion_tokens":"3e30","total_tokens":null}"#,
    ))
    .await;
    let (anthropic, _) = mock_upstream(json_reply(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":18446744073709551615,"cache_read_input_tokens":18446744073709551615,"cache_creation_input_tokens":18446744073709551615,"output_tokens":9200000000000000000}}"#
            .into(),
    ))
    .await;
    // A stream whose final usage chunk claims u64::MAX tokens (the client asked for usage).
    let (stream, _) = mock_upstream(MockReply {
        status: 200,
        content_type: "text/event-stream".into(),
        frames: vec![
            Bytes::from_static(b"data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"ok\"}}],\"usage\":null}\n\n"),
            Bytes::from_static(b"data: {\"id\":\"c\",\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":18446744073709551615,\"completion_tokens\":18446744073709551615}}\n\n"),
            Bytes::from_static(b"data: [DONE]\n\n"),
        ],
        cut: false,
        frame_delay: Duration::ZERO,
    })
    .await;
    let url = ledger_url(postgres).await;
    let provider = |name: &str, addr: std::net::SocketAddr| {
        format!(
            "[[providers]]\nname = \"{name}\"\nkind = \"openai-compatible\"\nbase_url = \"http://{addr}/v1\"\nmodels = [\"{name}\"]\n"
        )
    };
    let text = format!(
        r#"
[ledger]
url = "{url}"
admin_token = "{ADMIN}"
flush_interval_ms = 20

{}{}{}{}{}
[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://{anthropic}"
api_key = "sk-ant"
model_prefixes = ["claude-"]

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
budget = {{ usd = 1000, period = "month" }}
"#,
        provider("case-huge", huge),
        provider("case-max", max),
        provider("case-negative", negative),
        provider("case-strings", strings),
        provider("case-stream", stream),
    );
    let mut gw = TestGateway::start_with_ledger(&text).await;
    let auth = format!("Bearer {KEY}");
    let oa = [("authorization", auth.as_str())];
    for model in [
        "case-huge",
        "case-huge",
        "case-max",
        "case-negative",
        "case-strings",
    ] {
        let (status, _, body) = post(&gw.url("/v1/chat/completions"), &oa, &chat_body(model)).await;
        assert_eq!(status, 200, "{model}: {}", String::from_utf8_lossy(&body));
    }
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &oa,
        r#"{"model":"case-stream","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("18446744073709551615"),
        "the client gets the provider's bytes unchanged"
    );
    let an = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];
    let (status, _, _) = post(
        &gw.url("/v1/messages"),
        &an,
        r#"{"model":"claude-haiku-4-5","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
    let s = gw.wait_requests(7.0).await;
    assert_eq!(
        s.sum("llm_gateway_implausible_usage_requests_total", &[]),
        5.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_implausible_usage_requests_total",
            &[("provider", "case-huge"), ("model", "gpt-4o-mini")]
        ),
        2.0
    );
    assert_eq!(
        s.sum("llm_gateway_estimated_usage_requests_total", &[]),
        2.0,
        "unreadable counts are estimated"
    );
    // Clamped to the default bound of 10M tokens: 10M in at $0.15 + 10M out at $0.60 per 1M.
    assert_eq!(
        s.sum(
            "llm_gateway_completion_tokens_total",
            &[("provider", "case-huge")]
        ),
        20_000_000.0
    );
    let huge_cost = s.sum("llm_gateway_cost_usd_total", &[("provider", "case-huge")]);
    assert!((huge_cost - 15.0).abs() < 1e-9, "{huge_cost}");

    wait_written(&gw, 7).await;
    let report = usage_report(&gw, "provider,usage_source").await;
    let rows = report["rows"].as_array().expect("rows");
    let source = |p: &str| {
        rows.iter().find(|r| r["provider"] == p).map(|r| {
            (
                r["usage_source"].as_str().unwrap_or("").to_string(),
                r["cost_nanos"].as_i64(),
            )
        })
    };
    assert_eq!(
        source("case-huge"),
        Some(("implausible".into(), Some(15_000_000_000)))
    );
    assert_eq!(source("case-max").map(|s| s.0), Some("implausible".into()));
    assert_eq!(source("anthropic").map(|s| s.0), Some("implausible".into()));
    assert_eq!(
        source("case-stream"),
        Some(("implausible".into(), Some(7_500_000_000)))
    );
    assert_eq!(
        source("case-negative").map(|s| s.0),
        Some("estimated".into())
    );
    assert_eq!(
        source("case-strings").map(|s| s.0),
        Some("estimated".into())
    );
    // Metrics and ledger agree to the nano-USD (the metric renders USD as a float).
    let ledger_nanos = report["total"]["cost_nanos"].as_i64().expect("total");
    let metrics_usd = s.sum("llm_gateway_cost_usd_total", &[]);
    assert!(
        (metrics_usd * 1e9 - ledger_nanos as f64).abs() < 1.0,
        "metrics {metrics_usd} USD, ledger {ledger_nanos} nano-USD"
    );
    assert!(ledger_nanos < 1_000_000_000_000, "{ledger_nanos}");
    let spent = s.sum("llm_gateway_budget_spent_usd", &[("name", "app")]);
    assert!((spent * 1e9 - ledger_nanos as f64).abs() < 1.0, "{spent}");

    // The budget ($1,000) is not exhausted: the next request is served.
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &oa,
        &chat_body("case-huge"),
    )
    .await;
    assert_eq!(status, 200, "budget not blocked");
    gw.wait_requests(8.0).await;
    gw.shutdown().await;

    // Restarted: the spend restored from the ledger is the same, and still not blocking.
    let gw = TestGateway::start_with_ledger(&text).await;
    gw.gateway.restore_budgets().await;
    let (status, _, _) = post(&gw.url("/v1/chat/completions"), &oa, &chat_body("case-max")).await;
    assert_eq!(status, 200, "budget not blocked after the restart");
    let s = gw.wait_requests(1.0).await;
    let spent = s.sum("llm_gateway_budget_spent_usd", &[("name", "app")]);
    assert!(
        spent < 200.0,
        "restored spend is the clamped one: {spent} USD"
    );
    let (status, _, _) = get(&gw.url("/healthz"), &[]).await;
    assert_eq!(status, 200);
    drop(gw);
    drop_database(&url).await;
}

async fn drop_database(url: &str) {
    use sqlx::Connection;
    match url.rsplit_once('/') {
        Some((base, name)) if url.starts_with("postgres") => {
            let admin = format!("{base}/postgres");
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut conn)
                    .await;
            }
        }
        _ => {
            if let Some(dir) = url
                .strip_prefix("sqlite://")
                .and_then(|p| std::path::Path::new(p).parent())
            {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_usage_is_clamped_flagged_and_agreed_sqlite() {
    absurd_usage_is_clamped_flagged_and_agreed(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_usage_is_clamped_flagged_and_agreed_postgres() {
    absurd_usage_is_clamped_flagged_and_agreed(true).await;
}

/// Client headers that would pick the organisation or project billed, turn on betas the price
/// table does not know, or pass cookies never reach the provider; allowed ones do; pinned ones
/// replace the client's.
#[tokio::test]
async fn client_headers_do_not_choose_what_the_provider_bills() {
    let (openai, openai_seen) = mock_upstream(openai_reply(
        r#"{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}"#,
    ))
    .await;
    let (anthropic, anthropic_seen) = mock_upstream(json_reply(
        r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"ok"}],"stop_reason":"end_turn","usage":{"input_tokens":5,"output_tokens":2}}"#
            .into(),
    ))
    .await;
    let gw = TestGateway::start(&format!(
        r#"
[[providers]]
name = "openai"
kind = "openai"
base_url = "http://{openai}/v1"
api_key = "sk-up"
model_prefixes = ["gpt-"]
headers = {{ "OpenAI-Organization" = "org-pinned" }}
forward_headers = ["OpenAI-Beta"]

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://{anthropic}"
api_key = "sk-ant-up"
model_prefixes = ["claude-"]
anthropic_beta = ["interleaved-thinking-2025-05-14"]

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
"#
    ))
    .await;
    let auth = format!("Bearer {KEY}");
    let hostile = [
        ("openai-organization", "org-theirs"),
        ("openai-project", "proj_theirs"),
        ("cookie", "session=theirs"),
        ("user-agent", "OpenAI/Python 3.54.0"),
        ("x-stainless-os", "Linux"),
        ("x-tollgate-customer", "c-1"),
    ];
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("openai-beta", "assistants=v2"),
        ("x-client-request-id", "client-req-1"),
        ("anthropic-beta", "context-1m-2025-08-07"),
    ];
    h.extend(hostile);
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &h,
        &chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(status, 200);
    let seen = openai_seen.lock().expect("lock").clone();
    let up = &seen.headers[0];
    let all = |name: &str| {
        up.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("openai-organization"), ["org-pinned"], "pinned wins");
    assert_eq!(all("authorization"), ["Bearer sk-up"]);
    assert_eq!(
        all("openai-beta"),
        ["assistants=v2"],
        "allowed by forward_headers"
    );
    assert_eq!(all("x-client-request-id"), ["client-req-1"], "a default");
    assert_eq!(all("content-type"), ["application/json"]);
    for (name, _) in hostile.iter().chain(&[("anthropic-beta", "")]) {
        if *name != "openai-organization" {
            assert!(all(name).is_empty(), "{name} reached the provider: {up:?}");
        }
    }

    let an = [
        ("x-api-key", KEY),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "context-1m-2025-08-07,interleaved-thinking-2025-05-14",
        ),
        ("cookie", "session=theirs"),
        ("openai-project", "proj_theirs"),
    ];
    let body = r#"{"model":"claude-haiku-4-5","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let (status, _, _) = post(&gw.url("/v1/messages"), &an, body).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &gw.url("/v1/messages"),
        &[
            ("x-api-key", KEY),
            ("anthropic-beta", "context-1m-2025-08-07"),
        ],
        body,
    )
    .await;
    assert_eq!(status, 200);
    let seen = anthropic_seen.lock().expect("lock").clone();
    let first = &seen.headers[0];
    let get = |h: &http::HeaderMap, name: &str| {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        get(first, "anthropic-beta"),
        ["interleaved-thinking-2025-05-14"],
        "only the allowed beta value"
    );
    assert_eq!(get(first, "x-api-key"), ["sk-ant-up"]);
    assert_eq!(get(first, "anthropic-version"), ["2023-06-01"]);
    assert!(get(first, "cookie").is_empty());
    assert!(get(first, "openai-project").is_empty());
    let second = &seen.headers[1];
    assert!(
        get(second, "anthropic-beta").is_empty(),
        "a header with no allowed value is dropped"
    );
    assert_eq!(
        get(second, "anthropic-version"),
        ["2023-06-01"],
        "the default"
    );
}
