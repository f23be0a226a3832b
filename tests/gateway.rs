//! End-to-end behaviour of the gateway in front of the simulated provider: bad input, routing,
//! upstream failures, metrics endpoint options, cardinality caps, disconnects, shutdown, CLI.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use support::{TestGateway, get, post, post_streaming};
use tokio::net::TcpListener;
use tollgate::sim::{self, SimOptions};

const KEY: &str = "tg-gateway-test";

async fn start_sim(opts: SimOptions) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, opts, std::future::pending()));
    addr
}

fn config(sim: SocketAddr, extra: &str) -> String {
    format!(
        r#"
{extra}

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{sim}/v1"
forward_headers = ["x-sim-*"]
api_key = "sk-sim"
models = ["gpt-4o-mini"]
timeout_secs = 1

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "http://{sim}"
forward_headers = ["x-sim-*"]
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

[[models]]
name = "fast"
provider = "sim-openai"
upstream_model = "gpt-4o"

[[keys]]
name = "app"
key = "{KEY}"
team = "search"
"#
    )
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;

#[tokio::test]
async fn bad_input_gets_the_clients_error_shape_and_is_counted() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "[server]\nmax_body_bytes = 2048")).await;
    let auth = bearer();
    let oa = [("authorization", auth.as_str())];
    let an = [("x-api-key", KEY), ("anthropic-version", "2023-06-01")];

    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], String, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        (
            "/v1/chat/completions",
            &oa,
            "{not json".into(),
            400,
            "malformed_json",
        ),
        (
            "/v1/chat/completions",
            &oa,
            r#"{"messages":[]}"#.into(),
            400,
            "missing_model",
        ),
        (
            "/v1/chat/completions",
            &oa,
            format!(r#"{{"model":"gpt-4o-mini","x":"{}"}}"#, "a".repeat(4096)),
            413,
            "body_too_large",
        ),
        ("/v1/chat/completions", &[], CHAT.into(), 401, "missing_key"),
        (
            "/v1/chat/completions",
            &[("authorization", "Bearer tg-nope-nope")],
            CHAT.into(),
            401,
            "invalid_key",
        ),
        (
            "/v1/chat/completions",
            &oa,
            r#"{"model":"no-such-model"}"#.into(),
            404,
            "unknown_model",
        ),
        (
            "/v1/messages/count_tokens",
            &an,
            r#"{"model":"gpt-4o-mini","messages":[]}"#.into(),
            400,
            "endpoint_not_served",
        ),
        ("/v1/messages", &an, "[]".into(), 400, "malformed_json"),
        (
            "/v1/messages",
            &[("x-api-key", "wrong-key-123")],
            "{}".into(),
            401,
            "invalid_key",
        ),
    ];
    for (path, headers, body, status, error_type) in &cases {
        let (got, h, bytes) = post(&gw.url(path), headers, body).await;
        assert_eq!(
            got,
            *status,
            "{path} {error_type}: {}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(
            h.get("content-type").and_then(|v| v.to_str().ok()),
            Some("application/json")
        );
        let v: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON error body");
        if path.starts_with("/v1/messages") {
            assert_eq!(v["type"], "error", "{v}");
            assert!(
                v["error"]["type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("error") || t == "request_too_large"),
                "{v}"
            );
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty())
            );
        } else {
            assert!(
                v["error"]["message"]
                    .as_str()
                    .is_some_and(|m| !m.is_empty()),
                "{v}"
            );
            assert!(v["error"]["type"].is_string(), "{v}");
        }
    }
    let s = gw.scrape().await;
    for (_, _, _, status, error_type) in &cases {
        assert!(
            s.sum(
                "llm_gateway_errors_total",
                &[
                    ("error_type", error_type),
                    ("status_code", &status.to_string())
                ]
            ) >= 1.0,
            "{error_type} not counted"
        );
    }
    // The unknown-model message says how to configure it.
    let (_, _, bytes) = post(
        &gw.url("/v1/chat/completions"),
        &oa,
        r#"{"model":"no-such-model"}"#,
    )
    .await;
    assert!(String::from_utf8_lossy(&bytes).contains("[[models]]"));
    // Unsupported path and method.
    let (status, _, _) = get(&gw.url("/v1/chat/completions"), &oa).await;
    assert_eq!(status, 405);
    let (status, _, bytes) = post(&gw.url("/v1/fine_tuning/jobs"), &oa, "{}").await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&bytes).contains("unsupported path"));
    // And the gateway still serves.
    let (status, _, _) = post(&gw.url("/v1/chat/completions"), &oa, CHAT).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn aliases_are_rewritten_upstream_and_metered_by_the_serving_model() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let auth = bearer();
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        r#"{"model":"fast","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#,
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["model"], "gpt-4o", "the sim echoes the model it was sent");
    // Recorded just after the response is written: wait for it.
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_completion_tokens_total",
            &[("model", "gpt-4o")]
        ),
        3.0
    );
    assert!(s.sum("llm_gateway_cost_usd_total", &[("model", "gpt-4o")]) > 0.0);
}

#[tokio::test]
async fn upstream_unreachable_and_timeouts_are_502_and_504() {
    // A port with nothing listening.
    let dead = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let gw = TestGateway::start(&config(dead, "")).await;
    let auth = bearer();
    let (status, _, body) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        CHAT,
    )
    .await;
    assert_eq!(status, 502, "{}", String::from_utf8_lossy(&body));
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["type"], "server_error");
    assert!(
        !String::from_utf8_lossy(&body).contains("sk-sim"),
        "provider key leaked"
    );
    let (status, _, body) = post(
        &gw.url("/v1/messages"),
        &[("x-api-key", KEY)],
        r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}"#,
    )
    .await;
    assert_eq!(status, 502);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["type"], "error");

    let slow = start_sim(SimOptions {
        delay: Duration::from_millis(1500),
        ..SimOptions::default()
    })
    .await;
    let gw2 = TestGateway::start(&config(slow, "")).await;
    let (status, _, _) = post(
        &gw2.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        CHAT,
    )
    .await;
    assert_eq!(status, 504);

    let s = gw.wait_requests(2.0).await;
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[
                ("error_type", "upstream_unreachable"),
                ("status_code", "502")
            ]
        ),
        2.0
    );
    let s2 = gw2.wait_requests(1.0).await;
    assert_eq!(
        s2.sum(
            "llm_gateway_errors_total",
            &[
                ("error_type", "upstream_timeout"),
                ("provider", "sim-openai")
            ]
        ),
        1.0
    );
    assert_eq!(s2.sum("llm_gateway_requests_in_flight", &[]), 0.0);
}

#[tokio::test]
async fn upstream_errors_pass_through_unchanged() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let auth = bearer();
    for (n, (status, error_type)) in [
        (429u16, "rate_limited"),
        (500, "upstream_server_error"),
        (400, "invalid_request"),
    ]
    .into_iter()
    .enumerate()
    {
        let s = status.to_string();
        let (got, _, body) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", &auth), ("x-sim-status", &s)],
            CHAT,
        )
        .await;
        assert_eq!(got, status);
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("simulated")),
            "upstream body passed as is: {v}"
        );
        let scrape = gw.wait_requests((n + 1) as f64).await;
        assert_eq!(
            scrape.sum(
                "llm_gateway_errors_total",
                &[("error_type", error_type), ("status_code", &s)]
            ),
            1.0
        );
    }
}

#[tokio::test]
async fn metrics_bearer_token_and_separate_listener() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "[metrics]\nbearer_token = \"scrape-secret\"")).await;
    let (status, h, _) = get(&gw.url("/metrics"), &[]).await;
    assert_eq!(status, 401);
    assert_eq!(
        h.get("www-authenticate").and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    let (status, _, _) = get(
        &gw.url("/api/v1/metrics"),
        &[("authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(status, 401);
    let (status, h, body) = get(
        &gw.url("/api/v1/metrics"),
        &[("authorization", "Bearer scrape-secret")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        h.get("content-type").and_then(|v| v.to_str().ok()),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    assert!(String::from_utf8_lossy(&body).contains("llm_gateway_build_info"));
    let (_, h, body) = get(
        &gw.url("/metrics"),
        &[
            ("authorization", "Bearer scrape-secret"),
            ("accept", "application/openmetrics-text; version=1.0.0"),
        ],
    )
    .await;
    assert!(
        h.get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("application/openmetrics-text"))
    );
    assert!(String::from_utf8_lossy(&body).ends_with("# EOF\n"));

    // A separate metrics listener: the main port no longer serves metrics.
    let mport = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let text = config(sim, &format!("[metrics]\nlisten = \"{mport}\""));
    let config = tollgate::config::Config::from_toml(
        &text,
        &std::collections::HashMap::<String, String>::new(),
    )
    .expect("valid");
    let gateway = tollgate::proxy::Gateway::new(config).expect("gateway");
    let ml = TcpListener::bind(mport).await.expect("bind metrics");
    tokio::spawn(tollgate::server::run(
        ml,
        tollgate::server::metrics_routes(gateway.clone()),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let main = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let main_addr = main.local_addr().expect("addr");
    tokio::spawn(tollgate::server::run(
        main,
        tollgate::server::main_routes(gateway),
        std::future::pending(),
        Duration::from_secs(1),
    ));
    let (status, _, _) = get(&format!("http://{main_addr}/metrics"), &[]).await;
    assert_eq!(status, 404);
    let (status, _, _) = get(&format!("http://{mport}/metrics"), &[]).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&format!("http://{mport}/v1/chat/completions"), &[], CHAT).await;
    assert_eq!(status, 404, "the metrics listener does not proxy");
}

#[tokio::test]
async fn junk_model_names_are_capped_into_other() {
    let sim = start_sim(SimOptions::default()).await;
    let text = format!(
        r#"
[metrics]
max_series_per_family = 5

[[providers]]
name = "anything"
kind = "openai-compatible"
base_url = "http://{sim}/v1"
forward_headers = ["x-sim-*"]
models = ["*"]
"#
    );
    let gw = TestGateway::start(&text).await;
    for i in 0..40 {
        let body = format!(
            r#"{{"model":"junk-{i}","messages":[{{"role":"user","content":"x"}}],"max_tokens":2}}"#
        );
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &[], &body).await;
        assert_eq!(status, 200);
    }
    let s = gw.wait_requests(40.0).await;
    let series = s
        .samples
        .iter()
        .filter(|x| x.0 == "llm_gateway_completion_tokens_total")
        .count();
    assert!(series <= 10, "{series} series");
    assert_eq!(
        s.sum("llm_gateway_completion_tokens_total", &[]),
        80.0,
        "nothing lost in the overflow"
    );
    assert!(
        s.sum(
            "llm_gateway_completion_tokens_total",
            &[("model", "__other__")]
        ) >= 70.0
    );
    assert!(s.sum("llm_gateway_metrics_overflow_total", &[]) >= 35.0);
    // Open mode: no keys, team "default".
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("team", "default")]),
        40.0
    );
}

#[tokio::test]
async fn a_client_leaving_mid_stream_is_499_and_its_tokens_are_counted() {
    let sim = start_sim(SimOptions {
        tokens_per_second: 50,
        ..SimOptions::default()
    })
    .await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let auth = bearer();
    let resp = post_streaming(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &auth)],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"count to a hundred"}],"max_tokens":100,"stream":true}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut seen = 0;
    while seen < 5 {
        let frame = body.frame().await.expect("frame").expect("ok");
        if frame.is_data() {
            seen += 1;
        }
    }
    drop(body);
    let s = gw.wait_requests(1.0).await;
    assert_eq!(
        s.sum("llm_gateway_requests_total", &[("status_code", "499")]),
        1.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "client_disconnected")]
        ),
        1.0
    );
    let out = s.sum(
        "llm_gateway_completion_tokens_total",
        &[("model", "gpt-4o-mini")],
    );
    assert!(
        (2.0..20.0).contains(&out),
        "tokens seen so far are counted, not the whole 100: {out}"
    );
    assert!(
        s.sum(
            "llm_gateway_prompt_tokens_total",
            &[("model", "gpt-4o-mini")]
        ) > 0.0
    );
    assert!(s.sum("llm_gateway_cost_usd_total", &[]) > 0.0);
    assert_eq!(s.sum("llm_gateway_requests_in_flight", &[]), 0.0);
}

#[tokio::test]
async fn an_upstream_dying_mid_stream_is_counted_once() {
    let sim = start_sim(SimOptions {
        tokens_per_second: 200,
        ..SimOptions::default()
    })
    .await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let resp = post_streaming(
        &gw.url("/v1/messages"),
        &[("x-api-key", KEY), ("x-sim-cut-after", "6")],
        r#"{"model":"claude-sonnet-4-5","max_tokens":40,"messages":[{"role":"user","content":"hi"}],"stream":true}"#,
    )
    .await;
    assert_eq!(resp.status(), 200);
    let result = resp.into_body().collect().await;
    assert!(result.is_err(), "the client sees the stream break");
    let s = gw.wait_requests(1.0).await;
    assert_eq!(s.sum("llm_gateway_requests_total", &[]), 1.0);
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "stream_interrupted"), ("status_code", "200")]
        ),
        1.0
    );
    assert!(
        s.sum("llm_gateway_prompt_tokens_total", &[]) > 0.0,
        "message_start's input is counted"
    );
}

#[tokio::test]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let sim = start_sim(SimOptions {
        delay: Duration::from_millis(300),
        ..SimOptions::default()
    })
    .await;
    let text = config(sim, "");
    let config = tollgate::config::Config::from_toml(
        &text,
        &std::collections::HashMap::<String, String>::new(),
    )
    .expect("valid");
    let gateway = tollgate::proxy::Gateway::new(config).expect("gateway");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(tollgate::server::run_workers(
        l,
        tollgate::server::main_routes(gateway.clone()),
        2,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    // Four connections, so that both worker threads hold requests when the signal comes.
    let mut inflight = Vec::new();
    for _ in 0..4 {
        let auth = bearer();
        let url = format!("http://{addr}/v1/chat/completions");
        inflight.push(tokio::spawn(async move {
            post(&url, &[("authorization", &auth)], CHAT).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = tx.send(());
    for r in inflight {
        let (status, _, _) = r.await.expect("join");
        assert_eq!(
            status, 200,
            "the in-flight request completed after the shutdown signal"
        );
    }
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("server stopped")
        .expect("join")
        .expect("workers started");
    assert!(
        TcpListener::bind(addr).await.is_ok()
            || tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer accepting"
    );
    let text = gateway.metrics.render(tollgate::metrics::Format::Text);
    assert!(text.contains("status_code=\"200\"} 4"), "{text}");
}

#[test]
fn check_command_prints_every_error_with_its_path() {
    let dir = std::env::temp_dir().join(format!("tollgate-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[providers]]\nname = \"openai\"\nkind = \"openia\"\nmodels = [\"gpt-4o\"]\n\n[[keys]]\nname = \"k\"\nkey = \"${TOLLGATE_TEST_UNSET_VAR}\"\nteam = \"t\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(&bad)
        .env_remove("TOLLGATE_TEST_UNSET_VAR")
        .output()
        .expect("run tollgate check");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("providers[0].kind"), "{err}");
    assert!(
        err.contains("keys[0].key") && err.contains("TOLLGATE_TEST_UNSET_VAR"),
        "{err}"
    );

    let good = dir.join("good.toml");
    std::fs::write(&good, "[[providers]]\nname = \"v\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"*\"]\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Valid with a warning: a team that no key belongs to (a typo of "search").
    let typo = dir.join("typo.toml");
    std::fs::write(&typo, "[[providers]]\nname = \"v\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"*\"]\n\n[[keys]]\nname = \"a\"\nkey = \"tg-a-secret\"\nteam = \"search\"\n\n[[teams]]\nname = \"serach\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["check", "--config"])
        .arg(&typo)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("warning: teams[0].name") && err.contains("teams of the keys: search"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One reading of credentials everywhere: `Bearer`, `bearer` and `BEARER` are the same scheme
/// (RFC 7235) on the proxy routes, `/v1/models`, the usage API and the metrics token; no key
/// is `missing_api_key` and a wrong one `invalid_api_key` on both key-checking endpoints.
#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive_on_every_endpoint() {
    let sim = start_sim(SimOptions::default()).await;
    let dir = std::env::temp_dir().join(format!("tollgate-bearer-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let extra = format!(
        "[metrics]\nbearer_token = \"scrape-secret\"\n\n[ledger]\nurl = \"sqlite://{}\"\nadmin_token = \"admin-secret\"\n",
        dir.join("ledger.db").display()
    );
    let gw = TestGateway::start_with_ledger(&config(sim, &extra)).await;
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let key = format!("{scheme} {KEY}");
        let (status, _, body) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", &key)],
            CHAT,
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = post(
            &gw.url("/v1/messages"),
            &[("authorization", &key), ("anthropic-version", "2023-06-01")],
            r#"{"model":"claude-sonnet-4-5","max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = get(&gw.url("/v1/models"), &[("authorization", &key)]).await;
        assert_eq!(status, 200, "{scheme}: {}", String::from_utf8_lossy(&body));
        let (status, _, body) = get(
            &gw.url("/api/v1/usage?from=2000-01-01&to=2100-01-01"),
            &[("authorization", &format!("{scheme} admin-secret"))],
        )
        .await;
        assert_eq!(status, 200, "{scheme}: {}", String::from_utf8_lossy(&body));
        for path in ["/metrics", "/api/v1/metrics"] {
            let (status, _, _) = get(
                &gw.url(path),
                &[("authorization", &format!("{scheme} scrape-secret"))],
            )
            .await;
            assert_eq!(status, 200, "{scheme} {path}");
        }
    }
    // The same code for the same case on the proxy routes and /v1/models, in both shapes.
    let code = |body: &[u8]| -> (String, String) {
        let v: serde_json::Value = serde_json::from_slice(body).expect("json");
        (
            v["error"]["type"].as_str().unwrap_or("").to_string(),
            v["error"]["code"].as_str().unwrap_or("").to_string(),
        )
    };
    let openai = |c: &str| ("invalid_request_error".to_string(), c.to_string());
    for (headers, expected) in [
        (vec![], "missing_api_key"),
        (vec![("authorization", "Basic dGc6MQ==")], "missing_api_key"),
        (
            vec![("authorization", "bearer tg-wrong")],
            "invalid_api_key",
        ),
        (vec![("x-api-key", "tg-wrong")], "invalid_api_key"),
    ] {
        let (status, _, body) = post(&gw.url("/v1/chat/completions"), &headers, CHAT).await;
        assert_eq!(
            (status, code(&body)),
            (401, openai(expected)),
            "{headers:?}"
        );
        let (status, _, body) = get(&gw.url("/v1/models"), &headers).await;
        assert_eq!(
            (status, code(&body)),
            (401, openai(expected)),
            "{headers:?}"
        );
        let mut anthropic = headers.clone();
        anthropic.push(("anthropic-version", "2023-06-01"));
        let (status, _, body) = get(&gw.url("/v1/models"), &anthropic).await;
        assert_eq!(status, 401);
        assert_eq!(code(&body).0, "authentication_error", "{headers:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `/v1/models` lists what can be called: the exact names and aliases, and every priced model
/// a `model_prefixes` entry routes (here `claude-`), in the OpenAI shape and, when
/// `anthropic-version` is sent, in Anthropic's.
#[tokio::test]
async fn models_lists_prefix_routed_models_in_both_shapes() {
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let (status, _, body) = get(&gw.url("/v1/models"), &[("authorization", &bearer())]).await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let owner = |id: &str| {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["owned_by"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(v["object"], "list");
    assert_eq!(owner("gpt-4o-mini").as_deref(), Some("sim-openai"));
    assert_eq!(owner("fast").as_deref(), Some("sim-openai"));
    for m in ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"] {
        assert_eq!(owner(m).as_deref(), Some("sim-anthropic"), "{m}: {v}");
    }
    // Not routed: no prefix of sim-openai covers gpt-4.1, and it is not an exact name.
    assert_eq!(owner("gpt-4.1"), None);
    let (status, _, body) = get(
        &gw.url("/v1/models"),
        &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "model");
            m["id"].as_str().expect("id")
        })
        .collect();
    assert!(
        ids.contains(&"claude-sonnet-4-5") && ids.contains(&"gpt-4o-mini"),
        "{ids:?}"
    );
    assert_eq!(
        ids.len(),
        ids.iter().collect::<std::collections::HashSet<_>>().len()
    );
}

/// Logs to a pipe or a file are plain text: colour escapes only on a terminal.
#[test]
fn logs_to_a_pipe_carry_no_colour_escapes() {
    use std::io::Read;
    let dir = std::env::temp_dir().join(format!("tollgate-logs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let cfg = dir.join("open.toml");
    // No [[keys]]: the gateway warns that it is open, so there is a WARN line, coloured on a
    // terminal, as well as INFO lines.
    std::fs::write(&cfg, "[[providers]]\nname = \"v\"\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\nmodels = [\"*\"]\n\n[ledger]\nenabled = false\n").expect("write");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&cfg)
        .env_remove("NO_COLOR")
        .env_remove("TOLLGATE_LOG_JSON")
        .env("TOLLGATE_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tollgate serve");
    let mut stderr = child.stderr.take().expect("stderr");
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    // Until the "gateway listening" line (logged after the warning), 10 s at most.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&seen).contains("gateway listening") {
        assert!(
            std::time::Instant::now() < deadline,
            "no log line: {seen:?}"
        );
        match stderr.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&seen);
    assert!(
        text.contains("WARN") && text.contains("gateway listening"),
        "{text}"
    );
    assert!(!seen.contains(&0x1b), "ESC in piped logs: {text:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A client that leaves while the gateway still reads its body is counted as gone (`499`), as
/// one that leaves mid-response is, not as a bad request (it was `400 body_read`).
#[tokio::test]
async fn a_client_leaving_while_its_body_is_read_is_counted_as_499() {
    use tokio::io::AsyncWriteExt;
    let sim = start_sim(SimOptions::default()).await;
    let gw = TestGateway::start(&config(sim, "")).await;
    let addr = gw.url("").trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr.trim_end_matches('/'))
        .await
        .expect("connect");
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {KEY}\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{{\"model\":"
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(conn);
    let s = gw.wait_requests(1.0).await;

    assert_eq!(
        s.sum(
            "llm_gateway_requests_total",
            &[
                ("status_code", "499"),
                ("team", "search"),
                ("provider", "none")
            ]
        ),
        1.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[("error_type", "client_disconnected")]
        ),
        1.0
    );
    // The gateway keeps serving.
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &[("authorization", &bearer())],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(status, 200);
}
