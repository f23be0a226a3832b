//! Rate limits and budgets through the gateway: in memory, and shared by two gateways through
//! the real Redis on this machine (127.0.0.1:6379; `scripts/setup` starts one if none runs).
//! These tests fail, loudly, when Redis is not there.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Scrape, TestGateway, post};
use tokio::net::TcpListener;
use tollgate::sim::{self, SimOptions};

const REDIS: &str = "redis://127.0.0.1:6379";

async fn start_sim() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, SimOptions::default(), std::future::pending()));
    addr
}

fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("tollgate-test-{name}-{}-{nanos}", std::process::id())
}

async fn require_redis(url: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut conn = tokio::time::timeout(
        Duration::from_secs(3),
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap_or_else(|_| panic!("Redis at {url} did not answer: start it (scripts/setup does)"))
    .unwrap_or_else(|e| panic!("Redis at {url} is required for this test: {e}"));
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
}

fn config(sim: SocketAddr, limits_section: &str, keys: &str) -> String {
    format!(
        r#"
{limits_section}

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{sim}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini", "gpt-4o"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "http://{sim}"
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

{keys}
"#
    )
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#;
const MSG: &str =
    r#"{"model":"claude-haiku-4-5","messages":[{"role":"user","content":"hello"}],"max_tokens":8}"#;

fn header(h: &http::HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(String::from)
}

#[tokio::test]
async fn memory_limits_answer_429_with_standard_headers() {
    let sim = start_sim().await;
    let keys = r#"
[[keys]]
name = "app"
key = "tg-limited-key"
team = "search"
limits = { requests_per_minute = 3, tokens_per_minute = 100000 }
"#;
    let gw = TestGateway::start(&config(sim, "", keys)).await;
    let auth = [("authorization", "Bearer tg-limited-key")];
    for i in 0..3 {
        let (status, h, _) = post(&gw.url("/v1/chat/completions"), &auth, CHAT).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&h, "x-ratelimit-limit-requests").as_deref(),
            Some("3")
        );
        assert_eq!(
            header(&h, "x-ratelimit-remaining-requests"),
            Some((2 - i).to_string())
        );
        assert_eq!(
            header(&h, "x-ratelimit-limit-tokens").as_deref(),
            Some("100000")
        );
        assert!(header(&h, "x-ratelimit-reset-requests").is_some());
    }
    let (status, h, body) = post(&gw.url("/v1/chat/completions"), &auth, CHAT).await;
    assert_eq!(status, 429);
    let retry: u64 = header(&h, "retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(header(&h, "x-should-retry"), None);
    assert_eq!(
        header(&h, "x-ratelimit-remaining-requests").as_deref(),
        Some("0")
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("key `app`")),
        "{v}"
    );
    // The Anthropic shape for Anthropic clients.
    let (status, h, body) = post(
        &gw.url("/v1/messages"),
        &[("x-api-key", "tg-limited-key")],
        MSG,
    )
    .await;
    assert_eq!(status, 429);
    assert!(header(&h, "retry-after").is_some());
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        (v["type"].as_str(), v["error"]["type"].as_str()),
        (Some("error"), Some("rate_limit_error"))
    );

    let s = gw.scrape().await;
    assert_eq!(
        s.sum(
            "llm_gateway_rate_limit_allowed_total",
            &[("limit", "requests"), ("key", "app"), ("team", "search")]
        ),
        3.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_rate_limit_blocked_total",
            &[("limit", "requests"), ("key", "app")]
        ),
        2.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_errors_total",
            &[
                ("error_type", "gateway_rate_limited"),
                ("status_code", "429")
            ]
        ),
        2.0
    );
}

#[tokio::test]
async fn a_spent_budget_blocks_and_names_itself_and_alert_budgets_do_not() {
    let sim = start_sim().await;
    // gpt-4o costs $2.50/M in, $10/M out: each request costs a few micro-dollars.
    let keys = r#"
[[keys]]
name = "blocked-app"
key = "tg-budget-block"
team = "finance"

[[keys]]
name = "alert-app"
key = "tg-budget-alert"
team = "research"
budget = { usd = 0.000001, period = "day", action = "alert" }

[[teams]]
name = "finance"
budget = { usd = 0.00002, period = "month", action = "block" }
"#;
    let gw = TestGateway::start(&config(sim, "", keys)).await;
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
    let mut allowed = 0;
    let mut message = String::new();
    for _ in 0..30 {
        let (status, h, b) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", "Bearer tg-budget-block")],
            body,
        )
        .await;
        if status == 429 {
            // A spent budget comes back at the period's end, not in seconds: no Retry-After
            // (the anthropic SDK would sleep until then), a do-not-retry and the reset time.
            assert_eq!(header(&h, "retry-after"), None);
            assert_eq!(header(&h, "x-should-retry").as_deref(), Some("false"));
            let reset = header(&h, "x-tollgate-budget-reset").expect("reset header");
            assert!(
                reset.len() == 20 && reset.ends_with("-01T00:00:00Z"),
                "{reset}"
            );
            message = String::from_utf8_lossy(&b).to_string();
            break;
        }
        assert_eq!(status, 200);
        allowed += 1;
    }
    assert!(allowed > 0 && allowed < 30, "{allowed}");
    assert!(
        message.contains("team `finance`")
            && message.contains("resets at")
            && message.contains("budget_exceeded"),
        "{message}"
    );
    // Every request recorded (each is, just after its response): the allowed and the refused.
    let s = gw.wait_requests((allowed + 1) as f64).await;
    let spent = s.sum(
        "llm_gateway_budget_spent_usd",
        &[("scope", "team"), ("name", "finance"), ("period", "month")],
    );
    assert!(spent >= 0.00002, "{spent}");
    assert_eq!(
        s.sum("llm_gateway_budget_limit_usd", &[("name", "finance")]),
        0.00002
    );
    let cost = s.sum("llm_gateway_cost_usd_total", &[("team", "finance")]);
    assert!(
        (cost - spent).abs() < 1e-12,
        "budget spend {spent} equals metered cost {cost}"
    );
    for _ in 0..5 {
        let (status, _, _) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", "Bearer tg-budget-alert")],
            body,
        )
        .await;
        assert_eq!(status, 200, "alert budgets never block");
    }
    let s = gw.wait_requests((allowed + 1 + 5) as f64).await;
    assert!(s.sum("llm_gateway_budget_spent_usd", &[("name", "alert-app")]) > 0.000001);
}

fn redis_limits(prefix: &str, on_error: &str) -> String {
    format!(
        "[limits]\nbackend = \"{REDIS}\"\nredis_prefix = \"{prefix}\"\non_backend_error = \"{on_error}\"\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_sharing_redis_allow_exactly_the_limit() {
    require_redis(REDIS).await;
    let sim = start_sim().await;
    // Per day: the bucket refills by 0.02 requests during this test, so the count is exact.
    let keys = r#"
[[keys]]
name = "shared"
key = "tg-shared-key"
team = "platform"
limits = { requests_per_day = 40 }
"#;
    let text = config(sim, &redis_limits(&unique_prefix("exact"), "allow"), keys);
    let a = TestGateway::start(&text).await;
    let b = TestGateway::start(&text).await;
    let mut tasks = Vec::new();
    for i in 0..120 {
        let url = if i % 2 == 0 {
            a.url("/v1/chat/completions")
        } else {
            b.url("/v1/chat/completions")
        };
        tasks.push(tokio::spawn(async move {
            let (status, h, _) =
                post(&url, &[("authorization", "Bearer tg-shared-key")], CHAT).await;
            (status, h)
        }));
    }
    let (mut ok, mut limited) = (0, 0);
    for t in tasks {
        let (status, h) = t.await.expect("join");
        match status {
            200 => ok += 1,
            429 => {
                limited += 1;
                // 40 a day refill one every 36 minutes: longer than any SDK should sleep.
                assert_eq!(header(&h, "retry-after"), None);
                assert_eq!(header(&h, "x-should-retry").as_deref(), Some("false"));
                assert_eq!(
                    header(&h, "x-ratelimit-limit-requests").as_deref(),
                    Some("40")
                );
                assert_eq!(
                    header(&h, "x-ratelimit-remaining-requests").as_deref(),
                    Some("0")
                );
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, limited), (40, 80));
    // Each gateway answered 60; the served ones are recorded just after their responses.
    let (sa, sb): (Scrape, Scrape) = (a.wait_requests(60.0).await, b.wait_requests(60.0).await);
    let allowed = sa.sum(
        "llm_gateway_rate_limit_allowed_total",
        &[("limit", "requests")],
    ) + sb.sum(
        "llm_gateway_rate_limit_allowed_total",
        &[("limit", "requests")],
    );
    let blocked = sa.sum(
        "llm_gateway_rate_limit_blocked_total",
        &[("limit", "requests")],
    ) + sb.sum(
        "llm_gateway_rate_limit_blocked_total",
        &[("limit", "requests")],
    );
    assert_eq!((allowed, blocked), (40.0, 80.0));
    let served = sa.sum("llm_gateway_requests_total", &[("status_code", "200")])
        + sb.sum("llm_gateway_requests_total", &[("status_code", "200")]);
    assert_eq!(served, 40.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_spent_through_two_gateways_blocks_both() {
    require_redis(REDIS).await;
    let sim = start_sim().await;
    let keys = r#"
[[keys]]
name = "spender"
key = "tg-spender-key"
team = "ml"

[[teams]]
name = "ml"
budget = { usd = 0.0003, period = "day", action = "block" }
"#;
    let text = config(sim, &redis_limits(&unique_prefix("budget"), "allow"), keys);
    let a = TestGateway::start(&text).await;
    let b = TestGateway::start(&text).await;
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
    let auth = [("authorization", "Bearer tg-spender-key")];
    let mut first_block = None;
    for i in 0..60 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &auth, body).await;
        if status == 429 {
            first_block = Some(i);
            break;
        }
        assert_eq!(status, 200);
        // Settlement in Redis runs just after the response: let it land.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        first_block.is_some_and(|i| i > 0),
        "the budget was never exhausted"
    );
    for gw in [&a, &b, &a, &b] {
        let (status, _, body) = post(&gw.url("/v1/chat/completions"), &auth, body).await;
        assert_eq!(status, 429, "{}", String::from_utf8_lossy(&body));
    }
    let cost = a
        .scrape()
        .await
        .sum("llm_gateway_cost_usd_total", &[("team", "ml")])
        + b.scrape()
            .await
            .sum("llm_gateway_cost_usd_total", &[("team", "ml")]);
    // Each request costs $0.00006 (8 input tokens at $2.50/M, 4 output at $10/M). Requests run
    // one at a time, so spend overshoots the budget by at most the last request's cost.
    assert!((0.0003..=0.00036 + 1e-12).contains(&cost), "{cost}");
    // A restarted gateway finds the spend in Redis: it blocks at once and reports it.
    drop((a, b));
    let c = TestGateway::start(&text).await;
    let (status, _, _) = post(&c.url("/v1/chat/completions"), &auth, body).await;
    assert_eq!(status, 429, "spend survives a restart");
    let spent = c.scrape().await.sum(
        "llm_gateway_budget_spent_usd",
        &[("scope", "team"), ("name", "ml")],
    );
    assert!(
        (spent - cost).abs() < 1e-12,
        "restored spend {spent} = metered cost {cost}"
    );
}

/// A Redis of our own, to stop and start mid-test.
struct OwnRedis {
    child: Child,
    port: u16,
}

impl OwnRedis {
    fn start(port: u16) -> OwnRedis {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (Debian package redis-server)");
        OwnRedis { child, port }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_allows_or_denies_as_configured_and_recovers() {
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{}", redis.port);
    for _ in 0..50 {
        if redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    require_redis(&url).await;
    let sim = start_sim().await;
    let keys = r#"
[[keys]]
name = "k"
key = "tg-redis-down"
team = "t"
limits = { requests_per_minute = 1000 }
"#;
    let section = |on: &str| {
        format!(
            "[limits]\nbackend = \"{url}\"\non_backend_error = \"{on}\"\nredis_timeout_ms = 200\n"
        )
    };
    let allow = TestGateway::start(&config(sim, &section("allow"), keys)).await;
    let deny = TestGateway::start(&config(sim, &section("deny"), keys)).await;
    let auth = [("authorization", "Bearer tg-redis-down")];
    for gw in [&allow, &deny] {
        let (status, h, _) = post(&gw.url("/v1/chat/completions"), &auth, CHAT).await;
        assert_eq!(status, 200);
        assert_eq!(
            header(&h, "x-ratelimit-limit-requests").as_deref(),
            Some("1000")
        );
    }
    drop(redis);
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let (status, h, _) = post(&allow.url("/v1/chat/completions"), &auth, CHAT).await;
        assert_eq!(status, 200, "allow: served without a limit check");
        assert!(header(&h, "x-ratelimit-limit-requests").is_none());
        let (status, _, body) = post(&deny.url("/v1/chat/completions"), &auth, CHAT).await;
        assert_eq!(status, 503, "deny: {}", String::from_utf8_lossy(&body));
    }
    assert!(
        allow
            .scrape()
            .await
            .sum("llm_gateway_limit_backend_errors_total", &[])
            >= 3.0
    );
    assert!(
        deny.scrape()
            .await
            .sum("llm_gateway_limit_backend_errors_total", &[])
            >= 3.0
    );
    assert!(
        deny.scrape().await.sum(
            "llm_gateway_errors_total",
            &[("error_type", "limit_backend_down"), ("status_code", "503")]
        ) >= 3.0
    );
    // Redis back: checks resume.
    let _redis = OwnRedis::start(port);
    let mut recovered = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, h, _) = post(&deny.url("/v1/chat/completions"), &auth, CHAT).await;
        if status == 200 && header(&h, "x-ratelimit-limit-requests").is_some() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the gateway reconnected to Redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_memory_budgets_are_restored_from_the_ledger_after_a_restart() {
    let sim = start_sim().await;
    let dir = std::env::temp_dir().join(unique_prefix("restore"));
    std::fs::create_dir_all(&dir).expect("tmp dir");
    let keys = format!(
        r#"
[ledger]
url = "sqlite://{}/ledger.db"

[[keys]]
name = "restored"
key = "tg-restore-key"
team = "ops"
budget = {{ usd = 0.0002, period = "month", action = "block" }}
"#,
        dir.display()
    );
    let text = config(sim, "", &keys);
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":4}"#;
    let auth = [("authorization", "Bearer tg-restore-key")];
    let gw = TestGateway::start_with_ledger(&text).await;
    let mut sent = 0.0;
    loop {
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &auth, body).await;
        sent += 1.0;
        if status == 429 {
            break;
        }
        assert!(sent < 30.0, "the budget never blocked");
        // A request is settled after its response is written: until then its reservation
        // still counts, and a next request sent at once can be refused on spend plus that
        // reservation (seen in CI: 429 at 0.00018 spent). Wait for the settle, so the 429
        // comes from spend alone.
        gw.wait_requests(sent).await;
    }
    // Every row on disk before the "restart" (generous: the full suite loads the machine).
    for _ in 0..500 {
        if gw
            .scrape()
            .await
            .sum("llm_gateway_ledger_written_rows_total", &[])
            >= sent
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let spent_before = gw
        .scrape()
        .await
        .sum("llm_gateway_budget_spent_usd", &[("name", "restored")]);
    drop(gw);
    let config = tollgate::config::Config::from_toml(
        &text,
        &std::collections::HashMap::<String, String>::new(),
    )
    .expect("valid");
    let metrics = tollgate::metrics::Metrics::new(&config.metrics.options);
    let ledger = tollgate::ledger::Ledger::open(&config.ledger, metrics.clone()).expect("ledger");
    let gateway = tollgate::proxy::Gateway::with_ledger(config, metrics, ledger).expect("gateway");
    gateway.restore_budgets().await;
    let text_metrics = gateway.metrics.render(tollgate::metrics::Format::Text);
    let restored =
        Scrape::parse(&text_metrics).sum("llm_gateway_budget_spent_usd", &[("name", "restored")]);
    assert!(
        spent_before >= 0.0002 && (restored - spent_before).abs() < 1e-12,
        "restored {restored}, before {spent_before}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A free port with nothing listening on it.
async fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The median and the slowest of `n` requests after the first, each timed end to end (the
/// simulator answers at once, so this is the gateway's time, plus a new client connection).
async fn times_of(gw: &TestGateway, auth: &[(&str, &str)], n: usize) -> (Duration, Duration) {
    let (status, _, _) = post(&gw.url("/v1/chat/completions"), auth, CHAT).await;
    assert_eq!(status, 200, "allow: served without a limit check");
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), auth, CHAT).await;
        times.push(t.elapsed());
        assert_eq!(status, 200);
    }
    times.sort();
    // The third slowest, not the slowest: one or two requests stalled by the machine (a
    // whole-suite run on 2 cores stalled one for over 50 ms) say nothing of Redis.
    let (median, third_slowest) = (times[n / 2], times[n - 3]);
    eprintln!(
        "{n} requests with Redis away: median {median:?}, third slowest {third_slowest:?}, slowest {:?}",
        times[n - 1]
    );
    (median, third_slowest)
}

/// Each request waited 100-160 ms on a Redis that refused connections before the circuit
/// breaker. The bounds leave room for a loaded test machine (a request here is ~3 ms, 16 ms
/// seen under the whole suite) and stay far below that.
fn assert_no_wait((median, third_slowest): (Duration, Duration), what: &str) {
    assert!(
        median < Duration::from_millis(10) && third_slowest < Duration::from_millis(50),
        "requests waited on a Redis {what}: median {median:?}, third slowest {third_slowest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_is_down_costs_requests_no_time_and_is_probed_until_it_is_back() {
    let port = closed_port().await;
    let url = format!("redis://127.0.0.1:{port}");
    let sim = start_sim().await;
    let keys = r#"
[[keys]]
name = "k"
key = "tg-breaker"
team = "t"
limits = { requests_per_minute = 100000 }
"#;
    let section = format!(
        "[limits]\nbackend = \"{url}\"\non_backend_error = \"allow\"\nredis_timeout_ms = 250\n"
    );
    let gw = TestGateway::start(&config(sim, &section, keys)).await;
    let auth = [("authorization", "Bearer tg-breaker")];
    // Down from the start: nothing listens on the port.
    assert_no_wait(times_of(&gw, &auth, 40).await, "known to be down");
    let s = gw.scrape().await;
    let short = s.sum("llm_gateway_limit_backend_short_circuited_total", &[]);
    assert!(short >= 30.0, "short-circuited checks counted: {short}");
    assert!(s.sum("llm_gateway_limit_backend_errors_total", &[]) >= 41.0);

    // Up: within a probe interval the checks resume.
    let redis = OwnRedis::start(port);
    let mut recovered = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (status, h, _) = post(&gw.url("/v1/chat/completions"), &auth, CHAT).await;
        assert_eq!(status, 200);
        if header(&h, "x-ratelimit-limit-requests").is_some() {
            recovered = true;
            break;
        }
    }
    assert!(recovered, "the gateway found Redis back");

    // Down after it was up (the connection was made, then refused): the same.
    drop(redis);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_no_wait(times_of(&gw, &auth, 40).await, "gone away");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_slot_whose_settle_failed_is_released_once_redis_answers_again() {
    let port = closed_port().await;
    let redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    for _ in 0..50 {
        if redis::Client::open(url.as_str())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    require_redis(&url).await;
    let sim = start_sim().await;
    let keys = r#"
[[keys]]
name = "k"
key = "tg-parallel-settle"
team = "t"
limits = { max_parallel_requests = 1 }
"#;
    let section = format!(
        "[limits]\nbackend = \"{url}\"\non_backend_error = \"deny\"\nredis_timeout_ms = 200\n"
    );
    let gw = TestGateway::start(&config(sim, &section, keys)).await;
    let auth = [("authorization", "Bearer tg-parallel-settle")];
    // A stream of 8 tokens at 10 a second holds the slot for ~0.8 s.
    let stream = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":8,"stream":true}"#;
    let resp = support::post_streaming(
        &gw.url("/v1/chat/completions"),
        &[auth[0], ("x-sim-tokens-per-second", "10")],
        stream,
    )
    .await;
    assert_eq!(resp.status(), 200);
    // Redis stops answering (it keeps its data) while the stream ends: the settle times out.
    let client = redis::Client::open(url.as_str()).expect("url");
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .expect("admin connection");
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(2500)
        .arg("ALL")
        .query_async(&mut admin)
        .await
        .expect("CLIENT PAUSE");
    let body = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .expect("stream body")
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
    tokio::time::sleep(Duration::from_millis(2700)).await;
    // Redis answers again: the slot is given back, not held for 15 minutes.
    let mut served = false;
    let mut seen = Vec::new();
    for _ in 0..40 {
        let (status, _, _) = post(&gw.url("/v1/chat/completions"), &auth, CHAT).await;
        seen.push(status);
        if status == 200 {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(served, "the slot stayed taken: {seen:?}");
    drop(redis);
}

/// `budget.overshoot = "none"`: a request is admitted only if its maximum cost fits what is
/// left, so a $0.02 budget hammered by 8 concurrent clients ends at or under 100 %, in memory
/// and through two gateways sharing Redis. The same load on a bounded budget crosses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_budget_without_overshoot_never_ends_above_its_limit() {
    require_redis(REDIS).await;
    let sim = start_sim().await;
    // gpt-4o: $2.50/M in, $10/M out; max_tokens 200 is at most 0.2 cent of output, and the
    // simulator answers with max_tokens tokens: about ten requests spend the budget.
    let body =
        r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hello"}],"max_tokens":200}"#;
    let keys = |overshoot: &str| {
        format!(
            r#"
[[keys]]
name = "capped"
key = "tg-capped-key"
team = "capped"

[[teams]]
name = "capped"
budget = {{ usd = 0.02, period = "month", action = "block"{overshoot} }}
"#
        )
    };
    let spend_with = |gateways: Vec<TestGateway>| async move {
        let urls: Vec<String> = gateways
            .iter()
            .map(|g| g.url("/v1/chat/completions"))
            .collect();
        let mut refused = 0;
        // 8 clients at a time, until 16 refusals in a row or 200 requests.
        let mut sent = 0;
        while refused < 16 && sent < 200 {
            let mut wave = Vec::new();
            for i in 0..8 {
                let url = urls[(sent + i) % urls.len()].clone();
                wave.push(tokio::spawn(async move {
                    post(&url, &[("authorization", "Bearer tg-capped-key")], body)
                        .await
                        .0
                }));
            }
            sent += 8;
            for t in wave {
                match t.await.expect("join") {
                    200 => refused = 0,
                    429 => refused += 1,
                    other => panic!("status {other}"),
                }
            }
        }
        let mut cost = 0.0;
        for g in &gateways {
            // Every request settled: those answered and those refused.
            let s = g.scrape().await;
            cost += s.sum("llm_gateway_cost_usd_total", &[("team", "capped")]);
        }
        cost
    };

    let none = keys(", overshoot = \"none\"");
    let cost = spend_with(vec![TestGateway::start(&config(sim, "", &none)).await]).await;
    assert!(cost <= 0.02 + 1e-12, "memory: spent {cost} of 0.02 USD");
    assert!(cost > 0.015, "memory: the budget was used: {cost}");

    let text = config(sim, &redis_limits(&unique_prefix("none"), "deny"), &none);
    let both = vec![
        TestGateway::start(&text).await,
        TestGateway::start(&text).await,
    ];
    let cost = spend_with(both).await;
    assert!(cost <= 0.02 + 1e-12, "redis: spent {cost} of 0.02 USD");
    assert!(cost > 0.015, "redis: the budget was used: {cost}");

    // The default lets the requests in flight at the crossing finish: over 100 %.
    let bounded = keys("");
    let cost = spend_with(vec![TestGateway::start(&config(sim, "", &bounded)).await]).await;
    assert!(cost > 0.02, "bounded: spent {cost}");
}
