//! The provider's bill beside the meter: a mock of OpenAI's and Anthropic's billing APIs on
//! 127.0.0.1 serving the documented shapes (pages, a 429 with Retry-After, a 401 with the
//! provider's error body, a 5xx, a day revised between two fetches, amounts whose float sum
//! is a nano-dollar off), then end to end: traffic through the gateway, the bill for the same
//! day with a known extra and a known price error, and the report, API, CLI and gauges.

mod support;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{NaiveDate, Utc};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use support::{Scrape, TestGateway, get, post};
use tokio::net::TcpListener;
use tollgate::billing::store;
use tollgate::ledger::ReportQuery;
use tollgate::ledger::report::GroupKey;
use tollgate::metering::ServiceTier;
use tollgate::sim::{self, SimOptions};

const ADMIN: &str = "billing-admin-token";
const OPENAI_ADMIN: &str = "sk-admin-openai-test";
const ANTHROPIC_ADMIN: &str = "sk-ant-admin-test";

/// One request the mock saw.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    query: String,
    headers: http::HeaderMap,
}

/// The mock's answer: (status, extra headers, body).
type Reply = (u16, Vec<(&'static str, String)>, String);
type Handler = dyn Fn(&Seen, usize) -> Reply + Send + Sync;

/// A billing API mock: `handler` gets each request and how many came before it on the same
/// path.
async fn mock(handler: Arc<Handler>) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::<Seen>::new()));
    let seen2 = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            let seen = seen2.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let handler = handler.clone();
                let seen = seen.clone();
                async move {
                    let s = Seen {
                        path: req.uri().path().to_string(),
                        query: req.uri().query().unwrap_or("").to_string(),
                        headers: req.headers().clone(),
                    };
                    let n = {
                        let mut all = seen.lock().expect("lock");
                        let n = all.iter().filter(|x| x.path == s.path).count();
                        all.push(s.clone());
                        n
                    };
                    let (status, headers, body) = handler(&s, n);
                    let mut resp = Response::new(Full::new(Bytes::from(body)));
                    *resp.status_mut() = http::StatusCode::from_u16(status).expect("status");
                    resp.headers_mut()
                        .insert("content-type", "application/json".parse().expect("ct"));
                    for (k, v) in headers {
                        resp.headers_mut().insert(k, v.parse().expect("header"));
                    }
                    Ok::<_, Infallible>(resp)
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

/// The query's parameters, percent-decoded (brackets included).
fn params(q: &str) -> Vec<(String, String)> {
    tollgate::server::billing::query_params(Some(q))
}

fn param(q: &str, name: &str) -> Option<String> {
    params(q)
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

fn unix(d: NaiveDate) -> i64 {
    d.and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp()
}

fn page(data: serde_json::Value, next: Option<&str>) -> String {
    serde_json::json!({"object": "page", "data": data, "has_more": next.is_some(), "next_page": next})
        .to_string()
}

fn openai_bucket(day: NaiveDate, results: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"object": "bucket", "start_time": unix(day),
        "end_time": unix(day) + 86_400, "results": results}])
}

fn anthropic_bucket(day: NaiveDate, results: serde_json::Value) -> serde_json::Value {
    serde_json::json!([{"starting_at": format!("{day}T00:00:00Z"),
        "ending_at": format!("{}T00:00:00Z", day + chrono::Duration::days(1)), "results": results}])
}

struct Db {
    dir: std::path::PathBuf,
    url: String,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn sqlite_db() -> Db {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("tollgate-billing-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("sqlite://{}", dir.join("ledger.db").display());
    Db { dir, url }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn migrated(gw: &TestGateway) {
    assert!(
        gw.gateway
            .ledger
            .wait_migrated(Duration::from_secs(30))
            .await,
        "ledger migrated"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_follow_pages_survive_errors_and_replace_revised_days() {
    let day = NaiveDate::from_ymd_opt(2026, 11, 30).expect("date");
    let revised = Arc::new(AtomicUsize::new(0));
    let rev = revised.clone();
    let handler: Arc<Handler> = Arc::new(move |s: &Seen, n: usize| {
        let openai_err = |code: &str, msg: &str| {
            serde_json::json!({"error": {"code": code, "message": msg, "param": null,
                "type": "invalid_request_error"}})
            .to_string()
        };
        match s.path.as_str() {
            "/v1/organization/costs" => {
                let auth = s.headers.get("authorization").and_then(|v| v.to_str().ok());
                if auth != Some(&format!("Bearer {OPENAI_ADMIN}")) {
                    return (401, vec![], openai_err("invalid_api_key", "bad key"));
                }
                if n == 0 {
                    return (
                        429,
                        vec![("retry-after", "1".into())],
                        openai_err("rate_limit_exceeded", "slow down"),
                    );
                }
                let second_fetch = rev.load(Ordering::Relaxed) > 0;
                match param(&s.query, "page").as_deref() {
                    None => {
                        let results = if second_fetch {
                            // The day revised: one line changed, the other gone.
                            serde_json::json!([{"object": "organization.costs.result",
                                "amount": {"value": 1.5, "currency": "usd"},
                                "line_item": "gpt-4o-mini, input_tokens", "project_id": "proj_gw",
                                "quantity": null, "quantity_unit": null}])
                        } else {
                            serde_json::json!([{"object": "organization.costs.result",
                                "amount": {"value": 7243246.320173748, "currency": "usd"},
                                "line_item": "gpt-4o-mini, input_tokens", "project_id": "proj_gw",
                                "quantity": null, "quantity_unit": null},
                                {"object": "organization.costs.result",
                                "amount": {"value": 0.06, "currency": "usd"},
                                "line_item": "gpt-4o-mini, output_tokens", "project_id": "proj_gw",
                                "quantity": 100, "quantity_unit": "tokens"}])
                        };
                        let next = (!second_fetch).then_some("page_2");
                        (200, vec![], page(openai_bucket(day, results), next))
                    }
                    Some("page_2") => (
                        200,
                        vec![],
                        page(
                            openai_bucket(
                                day,
                                serde_json::json!([
                                {"object": "organization.costs.result",
                                 "amount": {"value": 0.228762221, "currency": "usd"},
                                 "line_item": "gpt-4o-mini, input_tokens", "project_id": "proj_gw"},
                                {"object": "organization.costs.result",
                                 "amount": {"value": 0.945270696, "currency": "usd"},
                                 "line_item": "gpt-4o-mini, input_tokens", "project_id": "proj_gw"}]),
                            ),
                            None,
                        ),
                    ),
                    Some(other) => (400, vec![], openai_err("bad_page", other)),
                }
            }
            "/v1/organization/usage/completions" => {
                if n == 0 {
                    return (503, vec![], openai_err("overloaded", "try again"));
                }
                let results = serde_json::json!([{"object": "organization.usage.completions.result",
                    "input_tokens": 1000, "input_cached_tokens": 0, "output_tokens": 100,
                    "num_model_requests": 3, "project_id": "proj_gw", "api_key_id": "key_gw",
                    "model": "gpt-4o-mini", "batch": false, "service_tier": "default"}]);
                (200, vec![], page(openai_bucket(day, results), None))
            }
            "/v1/organization/usage/embeddings" => (
                200,
                vec![],
                page(openai_bucket(day, serde_json::json!([])), None),
            ),
            "/v1/organizations/cost_report" | "/v1/organizations/usage_report/messages" => {
                let key = s.headers.get("x-api-key").and_then(|v| v.to_str().ok());
                let version = s
                    .headers
                    .get("anthropic-version")
                    .and_then(|v| v.to_str().ok());
                if key != Some(ANTHROPIC_ADMIN) || version != Some("2023-06-01") {
                    return (
                        401,
                        vec![],
                        serde_json::json!({"type": "error", "error": {"type": "authentication_error",
                            "message": "invalid x-api-key"}, "request_id": "req_1"})
                        .to_string(),
                    );
                }
                if s.path.ends_with("cost_report") {
                    let results = serde_json::json!([
                        {"currency": "USD", "amount": "123.78912", "workspace_id": "wrkspc_gw",
                         "description": "Claude Sonnet 4 Usage - Input Tokens", "cost_type": "tokens",
                         "context_window": "0-200k", "model": "claude-sonnet-4-20250514",
                         "service_tier": "standard", "token_type": "uncached_input_tokens"},
                        {"currency": "USD", "amount": "0.00000005", "workspace_id": "wrkspc_gw",
                         "description": "Claude Sonnet 4 Usage - Output Tokens", "cost_type": "tokens",
                         "model": "claude-sonnet-4-20250514", "service_tier": "standard",
                         "token_type": "output_tokens", "inference_geo": "us"}]);
                    (200, vec![], page(anthropic_bucket(day, results), None))
                } else {
                    let results = serde_json::json!([{"uncached_input_tokens": 1500,
                        "cache_creation": {"ephemeral_1h_input_tokens": 1000, "ephemeral_5m_input_tokens": 500},
                        "cache_read_input_tokens": 200, "output_tokens": 500,
                        "server_tool_use": {"web_search_requests": 10}, "api_key_id": "apikey_01",
                        "workspace_id": "wrkspc_gw", "model": "claude-sonnet-4-20250514",
                        "service_tier": "standard", "context_window": "0-200k"}]);
                    (200, vec![], page(anthropic_bucket(day, results), None))
                }
            }
            _ => (404, vec![], "{}".into()),
        }
    });
    let (addr, seen) = mock(handler).await;
    let db = sqlite_db();
    // Exporter-only: billing sources and no [[providers]].
    let config = format!(
        r#"
[ledger]
url = "{url}"
admin_token = "{ADMIN}"
[[billing]]
name = "openai-org"
kind = "openai"
admin_key = "{OPENAI_ADMIN}"
base_url = "http://{addr}/v1"
[[billing]]
name = "anthropic-org"
kind = "anthropic"
admin_key = "{ANTHROPIC_ADMIN}"
base_url = "http://{addr}/v1/"
[[billing]]
name = "anthropic-wrong-key"
kind = "anthropic"
admin_key = "sk-ant-api-not-admin"
base_url = "http://{addr}/v1"
"#,
        url = db.url
    );
    let mut gw = TestGateway::start_with_ledger(&config).await;
    migrated(&gw).await;
    let billing = &gw.gateway.billing;
    let next = day + chrono::Duration::days(1);

    let started = Instant::now();
    let n = billing
        .fetch_days("openai-org", day, next)
        .await
        .expect("openai fetch");
    // The 429 asked for 1 s; the 503 backs off 1 s.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(n, 2 + 3, "2 cost lines (pages summed) and 3 token types");
    let m = &gw.gateway.metrics;
    assert_eq!(m.billing.errors("openai-org", "rate_limited"), 1);
    assert_eq!(m.billing.errors("openai-org", "server_error"), 1);
    let store = gw.gateway.ledger.store().expect("store");
    let lines = store::lines(store, day, next).await.expect("lines");
    let input = lines
        .iter()
        .find(|l| l.line.item == "input_tokens")
        .expect("input cost line");
    // 7243246.320173748 + 0.228762221 + 0.945270696: the f64 sum prints ...664.
    assert_eq!(input.line.cost_nanos, 7_243_247_494_206_665);
    let output = lines
        .iter()
        .find(|l| l.line.item == "output_tokens")
        .expect("output");
    assert_eq!(
        (output.line.cost_nanos, output.line.quantity),
        (60_000_000, 100)
    );

    // The requests: brackets, the bounds, the cursor sent back as `page`.
    {
        let seen = seen.lock().expect("lock");
        let costs: Vec<&Seen> = seen
            .iter()
            .filter(|s| s.path == "/v1/organization/costs")
            .collect();
        assert_eq!(costs.len(), 3, "429, page 1, page 2");
        assert!(
            costs[0].query.contains("group_by%5B%5D=line_item"),
            "{}",
            costs[0].query
        );
        assert_eq!(
            param(&costs[0].query, "bucket_width").as_deref(),
            Some("1d")
        );
        assert_eq!(param(&costs[0].query, "limit").as_deref(), Some("1"));
        assert_eq!(
            param(&costs[0].query, "start_time"),
            Some(unix(day).to_string())
        );
        assert_eq!(param(&costs[2].query, "page").as_deref(), Some("page_2"));
    }

    // The day revised: a second fetch replaces it.
    revised.store(1, Ordering::Relaxed);
    billing
        .fetch_days("openai-org", day, next)
        .await
        .expect("second fetch");
    let lines = store::lines(store, day, next).await.expect("lines");
    let costs: Vec<_> = lines
        .iter()
        .filter(|l| {
            l.source == "openai-org" && l.line.dataset == tollgate::billing::source::Dataset::Cost
        })
        .collect();
    assert_eq!(costs.len(), 1, "{costs:?}");
    assert_eq!(costs[0].line.cost_nanos, 1_500_000_000);

    // Anthropic: cents strings, exactly.
    billing
        .fetch_days("anthropic-org", day, next)
        .await
        .expect("anthropic fetch");
    let lines = store::lines(store, day, next).await.expect("lines");
    let an = |item: &str| {
        lines
            .iter()
            .find(|l| l.source == "anthropic-org" && l.line.item == item)
            .map(|l| (l.line.cost_nanos, l.line.quantity))
    };
    assert_eq!(an("uncached_input_tokens"), Some((1_237_891_200, 0)));
    assert_eq!(
        an("output_tokens"),
        Some((1, 0)),
        "0.00000005 cents is half a nano-dollar"
    );
    assert_eq!(an("input"), Some((0, 3200)));
    assert_eq!(an("cache_write"), Some((0, 1500)));

    // A 401 in Anthropic's shape: not retried, counted, its message kept.
    let err = billing
        .fetch_days("anthropic-wrong-key", day, next)
        .await
        .expect_err("401");
    assert_eq!(err.reason(), "unauthorized");
    assert!(err.to_string().contains("invalid x-api-key"), "{err}");
    assert_eq!(m.billing.errors("anthropic-wrong-key", "unauthorized"), 1);
    let hist = store::history(store, "anthropic-wrong-key", 5)
        .await
        .expect("history");
    assert_eq!(hist[0].outcome, "unauthorized");
    let hist = store::history(store, "openai-org", 5)
        .await
        .expect("history");
    assert_eq!(hist.len(), 2);
    assert!(hist.iter().all(|h| h.outcome == "ok"));

    // Exporter-only scrape with from/to: the billed gauges, the errors, the last success.
    let (status, _, body) = get(
        &gw.url(&format!("/api/v1/metrics?from={day}&to={next}")),
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let s = Scrape::parse(&String::from_utf8_lossy(&body));
    let cost = s.sum(
        "llm_gateway_billed_cost_usd",
        &[
            ("provider", "openai"),
            ("model", "gpt-4o-mini"),
            ("source", "openai-org"),
        ],
    );
    assert!((cost - 1.5).abs() < 1e-9, "{cost}");
    assert_eq!(
        s.sum(
            "llm_gateway_billed_tokens",
            &[("provider", "anthropic"), ("token_type", "input")]
        ),
        3200.0
    );
    assert_eq!(
        s.sum(
            "llm_gateway_billing_fetch_errors_total",
            &[
                ("source", "anthropic-wrong-key"),
                ("reason", "unauthorized")
            ]
        ),
        1.0
    );
    assert!(
        s.sum(
            "llm_gateway_billing_last_success_timestamp_seconds",
            &[("source", "openai-org")]
        ) > 1.7e9
    );
    assert_eq!(
        s.sum(
            "llm_gateway_billing_last_success_timestamp_seconds",
            &[("source", "anthropic-wrong-key")]
        ),
        0.0
    );
    gw.shutdown().await;
}

/// Cents with seven decimals (nano-USD / 1e7), as Anthropic writes them.
fn cents(nanos: i64) -> String {
    format!("{}.{:07}", nanos / 10_000_000, nanos % 10_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bill_beside_the_meter_end_to_end() {
    let sim_l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let sim_addr = sim_l.local_addr().expect("addr");
    tokio::spawn(sim::serve(
        sim_l,
        SimOptions::default(),
        std::future::pending(),
    ));
    // The bill is built after the traffic, from what the ledger metered.
    type Bill = HashMap<String, String>;
    let bill: Arc<Mutex<Bill>> = Arc::new(Mutex::new(HashMap::new()));
    let b2 = bill.clone();
    let handler: Arc<Handler> = Arc::new(move |s: &Seen, _n: usize| {
        let body = b2.lock().expect("lock").get(&s.path).cloned();
        match body {
            Some(b) => (200, vec![], b),
            None => (404, vec![], "{}".into()),
        }
    });
    let (mock_addr, _) = mock(handler).await;
    let db = sqlite_db();
    let config = format!(
        r#"
[ledger]
url = "{url}"
admin_token = "{ADMIN}"
flush_interval_ms = 20

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{sim_addr}/v1"
api_key = "sk-sim"
models = ["gpt-4o-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "http://{sim_addr}"
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

[[keys]]
name = "app"
key = "tg-billing-app"
team = "search"

[[billing]]
name = "openai-org"
kind = "openai"
admin_key = "{OPENAI_ADMIN}"
base_url = "http://{mock_addr}/v1"
[[billing.providers]]
provider = "sim-openai"
project_ids = ["proj_gw"]

[[billing]]
name = "anthropic-org"
kind = "anthropic"
admin_key = "{ANTHROPIC_ADMIN}"
base_url = "http://{mock_addr}/v1"
[[billing.providers]]
provider = "sim-anthropic"
workspace_ids = ["wrkspc_gw"]
"#,
        url = db.url
    );
    let mut gw = TestGateway::start_with_ledger(&config).await;
    migrated(&gw).await;
    let auth = [("authorization", "Bearer tg-billing-app")];
    for i in 0..6 {
        let body = format!(
            r#"{{"model":"gpt-4o-mini","max_tokens":{},"messages":[{{"role":"user","content":"hello {i}"}}]}}"#,
            20 + i
        );
        let (st, _, _) = post(&gw.url("/v1/chat/completions"), &auth, &body).await;
        assert_eq!(st, 200);
        let body = format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":{},"messages":[{{"role":"user","content":"hi {i}"}}]}}"#,
            30 + i
        );
        let (st, _, _) = post(
            &gw.url("/v1/messages"),
            &[
                ("x-api-key", "tg-billing-app"),
                ("anthropic-version", "2023-06-01"),
            ],
            &body,
        )
        .await;
        assert_eq!(st, 200);
    }
    let m = gw.gateway.metrics.clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    while m.ledger_written.get() < 12 {
        assert!(
            Instant::now() < deadline,
            "rows written: {}",
            m.ledger_written.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let today = Utc::now().date_naive();
    let tomorrow = today + chrono::Duration::days(1);
    let report = gw
        .gateway
        .ledger
        .report(&ReportQuery {
            from: today.and_hms_opt(0, 0, 0).expect("t").and_utc(),
            to: tomorrow.and_hms_opt(0, 0, 0).expect("t").and_utc(),
            group_by: vec![GroupKey::Provider, GroupKey::Model],
        })
        .await
        .expect("report");
    let metered = |p: &str| {
        report
            .rows
            .iter()
            .find(|r| r.groups[0] == p)
            .map(|r| (r.groups[1].clone(), r.totals))
            .expect("metered provider")
    };
    let (oa_model, oa) = metered("sim-openai");
    let (an_model, an) = metered("sim-anthropic");
    let prices = &gw.gateway.config.prices;
    let rates = |model: &str| {
        *prices
            .lookup(model)
            .expect("priced")
            .rates_for(ServiceTier::Standard)
            .for_input(0)
    };
    let (oa_rates, an_rates) = (rates(&oa_model), rates(&an_model));

    // OpenAI: 25% more tokens on the bill than metered (traffic around the gateway), priced
    // right; plus another project's spend, not the gateway's.
    let (oa_in, oa_out) = (oa.input_tokens * 5 / 4, oa.output_tokens * 5 / 4);
    let oa_in_cost = oa_in as u64 * oa_rates.input / 1000;
    let oa_out_cost = oa_out as u64 * oa_rates.output / 1000;
    let usd = |n: u64| n as f64 / 1e9;
    let oa_costs = openai_bucket(
        today,
        serde_json::json!([
        {"object": "organization.costs.result", "amount": {"value": usd(oa_in_cost), "currency": "usd"},
         "line_item": format!("{oa_model}, input_tokens"), "project_id": "proj_gw",
         "quantity": oa_in, "quantity_unit": "tokens"},
        {"object": "organization.costs.result", "amount": {"value": usd(oa_out_cost), "currency": "usd"},
         "line_item": format!("{oa_model}, output_tokens"), "project_id": "proj_gw",
         "quantity": oa_out, "quantity_unit": "tokens"},
        {"object": "organization.costs.result", "amount": {"value": 42.0, "currency": "usd"},
         "line_item": format!("{oa_model}, input_tokens"), "project_id": "proj_other"}]),
    );
    let oa_usage = openai_bucket(
        today,
        serde_json::json!([
        {"object": "organization.usage.completions.result", "input_tokens": oa_in,
         "output_tokens": oa_out, "num_model_requests": 8, "project_id": "proj_gw",
         "api_key_id": "key_gw", "model": oa_model, "batch": false, "service_tier": "default"}]),
    );
    // Anthropic: the same tokens, output billed at twice the price table's rate.
    let an_in_cost = an.input_tokens as u64 * an_rates.input / 1000;
    let an_out_cost = an.output_tokens as u64 * an_rates.output * 2 / 1000;
    let an_costs = anthropic_bucket(
        today,
        serde_json::json!([
        {"currency": "USD", "amount": cents(an_in_cost as i64), "workspace_id": "wrkspc_gw",
         "description": "Input Tokens", "cost_type": "tokens", "model": an_model,
         "service_tier": "standard", "token_type": "uncached_input_tokens"},
        {"currency": "USD", "amount": cents(an_out_cost as i64), "workspace_id": "wrkspc_gw",
         "description": "Output Tokens", "cost_type": "tokens", "model": an_model,
         "service_tier": "standard", "token_type": "output_tokens"}]),
    );
    let an_usage = anthropic_bucket(
        today,
        serde_json::json!([
        {"uncached_input_tokens": an.input_tokens, "cache_read_input_tokens": 0,
         "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
         "output_tokens": an.output_tokens, "api_key_id": "apikey_gw", "workspace_id": "wrkspc_gw",
         "model": an_model, "service_tier": "standard", "context_window": "0-200k"}]),
    );
    {
        let mut b = bill.lock().expect("lock");
        b.insert("/v1/organization/costs".into(), page(oa_costs, None));
        b.insert(
            "/v1/organization/usage/completions".into(),
            page(oa_usage, None),
        );
        b.insert(
            "/v1/organization/usage/embeddings".into(),
            page(openai_bucket(today, serde_json::json!([])), None),
        );
        b.insert("/v1/organizations/cost_report".into(), page(an_costs, None));
        b.insert(
            "/v1/organizations/usage_report/messages".into(),
            page(an_usage, None),
        );
    }
    let billing = &gw.gateway.billing;
    billing
        .fetch_days("openai-org", today, tomorrow)
        .await
        .expect("openai bill");
    billing
        .fetch_days("anthropic-org", today, tomorrow)
        .await
        .expect("anthropic bill");

    // The report, through the API.
    let q = format!("/api/v1/billing?from={today}&to={tomorrow}&group_by=provider,model,day");
    let (st, _, _) = get(&gw.url(&q), &[]).await;
    assert_eq!(st, 401, "admin token required");
    let admin = [("authorization", format!("Bearer {ADMIN}"))];
    let admin: Vec<(&str, &str)> = admin.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (st, _, body) = get(&gw.url(&q), &admin).await;
    assert_eq!(st, 200, "{}", String::from_utf8_lossy(&body));
    let j: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let row = |p: &str| {
        j["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .find(|r| r["provider"] == p)
            .cloned()
            .expect("row")
    };
    let o = row("sim-openai");
    assert_eq!(
        o["billed_nanos"],
        (oa_in_cost + oa_out_cost) as i64,
        "proj_other excluded"
    );
    assert_eq!(o["metered_nanos"], oa.cost_nanos);
    let ratio = o["capture_ratio"].as_f64().expect("ratio");
    assert!((ratio - 0.8).abs() < 0.01, "{ratio}");
    let e = o["explanation"].as_str().expect("text");
    assert!(e.contains("billed but not metered"), "{e}");
    assert!(e.contains("traffic around the gateway"), "{e}");
    let a = row("sim-anthropic");
    let e = a["explanation"].as_str().expect("text");
    assert!(e.contains("tokens agree but the cost differs"), "{e}");
    assert!(e.contains(&format!("for {an_model}")), "{e}");
    let want = format!(
        "output: ${}/1M on the bill",
        tollgate::metering::pricing::format_per_million(an_rates.output * 2)
    );
    assert!(e.contains(&want), "{e} lacks {want}");
    assert!(!e.contains("input: $"), "{e}");
    let (st, _, csv) = get(&gw.url(&format!("{q}&format=csv")), &admin).await;
    assert_eq!(st, 200);
    let csv = String::from_utf8_lossy(&csv);
    assert!(
        csv.starts_with("provider,model,day,billed_usd,metered_usd,difference_usd,capture_ratio"),
        "{csv}"
    );
    assert!(csv.contains("sim-anthropic"), "{csv}");

    // The gauges: billed over the window; the capture ratio of the day before `now`.
    let s = gw.scrape().await;
    let billed = s.sum(
        "llm_gateway_billed_cost_usd",
        &[("provider", "sim-openai"), ("source", "openai-org")],
    );
    assert!(
        (billed - usd(oa_in_cost + oa_out_cost)).abs() < 1e-9,
        "{billed}"
    );
    assert_eq!(
        s.sum("llm_gateway_billed_cost_usd", &[("provider", "unmapped")]),
        42.0
    );
    let at_tomorrow = tomorrow.and_hms_opt(1, 0, 0).expect("t").and_utc();
    let g = billing
        .gauges_at(None, at_tomorrow, Some(prices))
        .await
        .expect("gauges");
    let cap = |p: &str| {
        g.capture
            .iter()
            .find(|c| c.0 == p)
            .map(|c| c.2)
            .expect("capture")
    };
    assert!((cap("sim-openai") - 0.8).abs() < 0.01);
    let an_ratio = an.cost_nanos as f64 / (an_in_cost + an_out_cost) as f64;
    assert!((cap("sim-anthropic") - an_ratio).abs() < 1e-9);

    // The CLI, on the same database.
    let dir = db.dir.clone();
    let cfg_path = dir.join("tollgate.toml");
    std::fs::write(&cfg_path, &config).expect("config file");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["billing", "--config"])
        .arg(&cfg_path)
        .args(["--from", &today.to_string(), "--to", &tomorrow.to_string()])
        .output()
        .await
        .expect("tollgate billing");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(table.contains("bill vs meter"), "{table}");
    assert!(
        table.contains("tokens agree but the cost differs"),
        "{table}"
    );
    assert!(table.contains("0.8"), "{table}");
    println!("{table}");
    gw.shutdown().await;
}

/// A fresh PostgreSQL database (`TOLLGATE_TEST_POSTGRES`, default the local cluster); its name.
async fn pg_db() -> (String, String) {
    use sqlx::Connection;
    let admin = std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
    let name = format!(
        "tollgate_test_{}_billing{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&mut conn)
        .await
        .expect("drop");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create");
    let base = admin.rsplit_once('/').expect("database path").0;
    (format!("{base}/{name}"), name)
}

async fn pg_drop(name: &str) {
    use sqlx::Connection;
    let admin = std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = sqlx::PgConnection::connect(&admin).await.expect("postgres");
    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await;
}

/// `tollgate serve`'s pollers, on PostgreSQL: a fetch at start, then one every interval, each
/// replacing the lookback days (the line is not doubled) and kept in the history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pollers_fetch_at_start_and_every_interval_on_postgres() {
    let today = Utc::now().date_naive();
    let handler: Arc<Handler> = Arc::new(move |s: &Seen, _n: usize| {
        if s.path.ends_with("cost_report") {
            let results = serde_json::json!([{"currency": "USD", "amount": "250", "workspace_id": null,
                "model": "claude-sonnet-4-5", "token_type": "output_tokens", "service_tier": "standard"}]);
            (200, vec![], page(anthropic_bucket(today, results), None))
        } else {
            (
                200,
                vec![],
                page(anthropic_bucket(today, serde_json::json!([])), None),
            )
        }
    });
    let (addr, seen) = mock(handler).await;
    let (url, name) = pg_db().await;
    let config = format!(
        r#"
[ledger]
url = "{url}"
[[billing]]
name = "anthropic-org"
kind = "anthropic"
admin_key = "{ANTHROPIC_ADMIN}"
base_url = "http://{addr}/v1"
interval_secs = 1
lookback_days = 2
"#
    );
    let mut gw = TestGateway::start_with_ledger(&config).await;
    gw.gateway.billing.start();
    let store = gw.gateway.ledger.store().expect("store").clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let hist = loop {
        let h = store::history(&store, "anthropic-org", 10)
            .await
            .unwrap_or_default();
        if h.len() >= 2 {
            break h;
        }
        assert!(Instant::now() < deadline, "fetches: {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    gw.gateway.billing.close().await;
    assert!(hist.iter().all(|h| h.outcome == "ok"), "{hist:?}");
    assert_eq!(hist[0].from, today - chrono::Duration::days(1));
    assert_eq!(hist[0].to, today + chrono::Duration::days(1));
    let lines = store::lines(&store, today, today + chrono::Duration::days(1))
        .await
        .expect("lines");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0].line.cost_nanos, 2_500_000_000, "250 cents, once");
    let first = seen.lock().expect("lock")[0].query.clone();
    assert_eq!(param(&first, "limit").as_deref(), Some("2"));
    let last = store::last_success(&store).await.expect("last success");
    assert_eq!(last.len(), 1);
    gw.shutdown().await;
    pg_drop(&name).await;
}
