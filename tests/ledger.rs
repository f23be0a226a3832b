//! The usage ledger end to end, on SQLite and on the real PostgreSQL of this machine
//! (`TOLLGATE_TEST_POSTGRES`, default `postgres://postgres@127.0.0.1:5432/postgres`; each
//! test makes its own database and drops it). PostgreSQL not reachable is a failure.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Connection, Row};
use support::{TestGateway, get, post};
use tokio::net::TcpListener;
use tollgate::ledger::report::GroupKey;
use tollgate::ledger::{Ledger, LedgerConfig, ReportQuery, SpendFilter, Store, UsageRow};
use tollgate::metering::Usage;
use tollgate::metrics::{Metrics, MetricsOptions};
use tollgate::sim::{self, SimOptions};

const KEY: &str = "tg-ledger-search";
const KEY2: &str = "tg-ledger-support";
const ADMIN: &str = "ledger-admin-token";
/// Put in every prompt; must never reach the database or the logs.
const MARKER: &str = "PROMPT-MARKER-b7e1c9";

#[derive(Clone, Copy, Debug)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A database for one test: an SQLite file in its own directory, or a fresh PostgreSQL
/// database.
struct TestDb {
    url: String,
    backend: Backend,
    dir: PathBuf,
    pg_name: Option<String>,
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

fn pg_admin_url() -> String {
    std::env::var("TOLLGATE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl TestDb {
    async fn new(backend: Backend) -> TestDb {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}_{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("tollgate-ledger-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        match backend {
            Backend::Sqlite => TestDb {
                url: format!("sqlite://{}", dir.join("ledger.db").display()),
                backend,
                dir,
                pg_name: None,
            },
            Backend::Postgres => {
                let admin = pg_admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is not reachable at {admin}: {e}\nThe ledger tests need it: \
                         run scripts/setup (it starts the local cluster), or set \
                         TOLLGATE_TEST_POSTGRES"
                    )
                });
                // Databases of earlier runs that failed before dropping theirs.
                let stale: Vec<String> = sqlx::query_scalar(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'tollgate_test_%'",
                )
                .fetch_all(&mut conn)
                .await
                .expect("list databases");
                for old in stale {
                    let pid = old.trim_start_matches("tollgate_test_").split('_').next();
                    if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {old} WITH (FORCE)"))
                            .execute(&mut conn)
                            .await;
                    }
                }
                let name = format!("tollgate_test_{tag}");
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("drop old test database");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let url = match admin.rsplit_once('/') {
                    Some((base, _)) => format!("{base}/{name}"),
                    None => panic!("TOLLGATE_TEST_POSTGRES needs a database path"),
                };
                TestDb {
                    url,
                    backend,
                    dir,
                    pg_name: Some(name),
                }
            }
        }
    }

    async fn finish(self) {
        if let Some(name) = &self.pg_name {
            let mut conn = sqlx::PgConnection::connect(&pg_admin_url())
                .await
                .expect("postgres");
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&mut conn)
                .await
                .expect("drop test database");
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs `sql` (a single-row, single-column integer query) against the database directly.
    async fn scalar(&self, sql: &str) -> i64 {
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("sqlite");
                sqlx::query(sql)
                    .fetch_one(&mut c)
                    .await
                    .expect(sql)
                    .try_get::<i64, _>(0)
                    .expect("int")
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.url)
                    .await
                    .expect("postgres");
                sqlx::query(sql)
                    .fetch_one(&mut c)
                    .await
                    .expect(sql)
                    .try_get::<i64, _>(0)
                    .expect("int")
            }
        }
    }

    /// Does the marker appear anywhere in the stored rows (PostgreSQL) or in the database
    /// files (SQLite: the file, its WAL and shared memory)?
    async fn contains(&self, needle: &str) -> bool {
        match self.backend {
            Backend::Sqlite => std::fs::read_dir(&self.dir)
                .expect("dir")
                .filter_map(Result::ok)
                .any(|f| {
                    let bytes = std::fs::read(f.path()).unwrap_or_default();
                    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
                }),
            Backend::Postgres => {
                let sql = format!(
                    "SELECT COUNT(*) FROM tollgate_usage t WHERE t::text LIKE '%{needle}%'"
                );
                self.scalar(&sql).await > 0
            }
        }
    }
}

async fn start_sim(opts: SimOptions) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(sim::serve(l, opts, std::future::pending()));
    addr
}

fn config(sim: SocketAddr, url: &str, ledger_extra: &str) -> String {
    format!(
        r#"
[ledger]
url = "{url}"
admin_token = "{ADMIN}"
batch_size = 64
flush_interval_ms = 20
{ledger_extra}

[[providers]]
name = "sim-openai"
kind = "openai"
base_url = "http://{sim}/v1"
forward_headers = ["x-sim-*"]
api_key = "sk-sim"
models = ["gpt-4o-mini"]

[[providers]]
name = "sim-anthropic"
kind = "anthropic"
base_url = "http://{sim}"
forward_headers = ["x-sim-*"]
api_key = "sk-ant-sim"
model_prefixes = ["claude-"]

[[keys]]
name = "search-app"
key = "{KEY}"
team = "search"

[[keys]]
name = "support-app"
key = "{KEY2}"
team = "support"
"#
    )
}

/// Request `i` of a mixed load: OpenAI and Anthropic, streamed and not, a customer by header
/// or by `user`, provider errors and refused keys. Returns the status.
async fn request(addr: SocketAddr, i: usize) -> u16 {
    let url = |p: &str| format!("http://{addr}{p}");
    let bearer1 = format!("Bearer {KEY}");
    let bearer2 = format!("Bearer {KEY2}");
    let chat = |stream: bool, user: &str| {
        format!(
            r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{MARKER} tell me about request {i}"}}],"max_tokens":6,"stream":{stream}{user}}}"#
        )
    };
    let msg = |stream: bool| {
        format!(
            r#"{{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[{{"role":"user","content":"{MARKER} {i}"}}],"stream":{stream}}}"#
        )
    };
    let (status, _, _) = match i % 6 {
        0 => {
            post(
                &url("/v1/chat/completions"),
                &[
                    ("authorization", &bearer1),
                    ("x-tollgate-customer", "cust-header"),
                ],
                &chat(false, ""),
            )
            .await
        }
        1 => {
            post(
                &url("/v1/chat/completions"),
                &[("authorization", &bearer2)],
                &chat(true, r#","user":"cust-user""#),
            )
            .await
        }
        2 => post(&url("/v1/messages"), &[("x-api-key", KEY)], &msg(false)).await,
        3 => post(&url("/v1/messages"), &[("x-api-key", KEY2)], &msg(true)).await,
        4 => {
            post(
                &url("/v1/chat/completions"),
                &[("authorization", &bearer1), ("x-sim-status", "500")],
                &chat(false, ""),
            )
            .await
        }
        _ => {
            post(
                &url("/v1/chat/completions"),
                &[("authorization", "Bearer tg-not-a-key")],
                &chat(false, ""),
            )
            .await
        }
    };
    status
}

/// Sends requests `0..n`, `concurrency` at a time; returns their statuses.
async fn load(addr: SocketAddr, n: usize, concurrency: usize) -> Vec<u16> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push(request(addr, i).await);
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("load task"));
    }
    all
}

async fn wait_written(gw: &TestGateway, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while gw.gateway.metrics.ledger_written.get() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} rows written",
            gw.gateway.metrics.ledger_written.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_backends!(
    rows_written_under_concurrent_load_equal_requests_served,
    graceful_stop_under_load_loses_nothing,
    usage_api_cli_and_gauges_agree_with_the_rows,
    windows_are_half_open_and_utc,
    batches_of_every_size_are_written_whole_and_once,
    rollups_count_each_row_once_under_retried_and_failed_batches,
);

async fn rows_written_under_concurrent_load_equal_requests_served(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sim = start_sim(SimOptions::default()).await;
    let mut gw = TestGateway::start_with_ledger(&config(sim, &db.url, "")).await;
    let n = 300;
    let statuses = load(gw.addr, n, 24).await;
    assert_eq!(statuses.len(), n);
    let served_ok = statuses.iter().filter(|s| **s == 200).count();
    assert_eq!(served_ok, n / 6 * 4, "{statuses:?}");
    let scrape = gw.wait_requests(n as f64).await;
    gw.shutdown().await;

    let m = gw.gateway.metrics.clone();
    // Every request but the 50 with an unknown key is a row; those are counted per minute.
    let rows = n - n / 6;
    assert_eq!(m.ledger_written.get(), rows as u64);
    assert_eq!(m.ledger_unauthenticated.get(), 50);
    assert_eq!(m.ledger_dropped.get(), 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage").await,
        rows as i64
    );
    let count = |w: &str| format!("SELECT COUNT(*) FROM tollgate_usage WHERE {w}");
    assert_eq!(db.scalar(&count("status_code = 401")).await, 0);
    assert_eq!(
        db.scalar(
            "SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_unauthenticated \
             WHERE error_type = 'invalid_key' AND endpoint = '/v1/chat/completions'"
        )
        .await,
        50
    );
    assert_eq!(
        db.scalar(&count(
            "status_code = 500 AND error_type = 'upstream_server_error'"
        ))
        .await,
        50
    );
    assert_eq!(
        db.scalar(&count("customer = 'cust-header' AND team = 'search'"))
            .await,
        50
    );
    assert_eq!(
        db.scalar(&count(
            "customer = 'cust-user' AND team = 'support' AND stream"
        ))
        .await,
        50
    );
    assert_eq!(
        db.scalar(&count("upstream_request_id = 'req_sim'")).await,
        150,
        "JSON answers of the sim carry x-request-id"
    );
    assert_eq!(
        db.scalar(&count(
            "requested_model = 'gpt-4o-mini' AND model LIKE 'gpt-4o-mini%'"
        ))
        .await,
        150
    );
    assert_eq!(
        db.scalar(&count(
            "stream AND status_code = 200 AND ttft_us IS NOT NULL AND ttft_us <= duration_us"
        ))
        .await,
        100
    );
    assert_eq!(db.scalar(&count("duration_us <= 0")).await, 0);
    // The same tokens and cost as the metrics counted.
    let sum = |c: &str| format!("SELECT CAST(COALESCE(SUM({c}), 0) AS BIGINT) FROM tollgate_usage");
    assert_eq!(
        db.scalar(&sum("input_tokens")).await as f64,
        scrape.sum("llm_gateway_prompt_tokens_total", &[])
    );
    assert_eq!(
        db.scalar(&sum("output_tokens")).await as f64,
        scrape.sum("llm_gateway_completion_tokens_total", &[])
    );
    let cost = db.scalar(&sum("cost_nanos")).await as f64 / 1e9;
    assert!(cost > 0.0);
    assert!((cost - scrape.sum("llm_gateway_cost_usd_total", &[])).abs() < 1e-8);
    // The hourly rollup holds the same sums.
    let hourly = |c: &str| format!("SELECT CAST(SUM({c}) AS BIGINT) FROM tollgate_usage_hourly");
    assert_eq!(db.scalar(&hourly("requests")).await, rows as i64);
    for c in [
        "input_tokens",
        "output_tokens",
        "cached_read_tokens",
        "cost_nanos",
    ] {
        assert_eq!(db.scalar(&hourly(c)).await, db.scalar(&sum(c)).await, "{c}");
    }
    // Never the prompt.
    assert!(!db.contains(MARKER).await, "prompt text in the ledger");
    db.finish().await;
}

/// Waits until each of `n` requests is in flight or finished (so that a stop now interrupts
/// no connection that has not sent its request yet); returns how many are in flight.
async fn all_started(addr: SocketAddr, n: usize) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = get(&format!("http://{addr}/metrics"), &[]).await;
        let s = support::Scrape::parse(&String::from_utf8_lossy(&body));
        let in_flight = s.sum("llm_gateway_requests_in_flight", &[]);
        if in_flight + s.sum("llm_gateway_requests_total", &[]) >= n as f64 {
            return in_flight;
        }
        assert!(
            Instant::now() < deadline,
            "requests did not start: {in_flight} in flight"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn graceful_stop_under_load_loses_nothing(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sim = start_sim(SimOptions {
        delay: Duration::from_millis(500),
        ..SimOptions::default()
    })
    .await;
    let mut gw = TestGateway::start_with_ledger(&config(sim, &db.url, "")).await;
    let n = 120;
    let addr = gw.addr;
    let load = tokio::spawn(async move {
        let mut tasks = Vec::new();
        for i in 0..n {
            tasks.push(tokio::spawn(async move { request(addr, i * 6).await }));
        }
        let mut statuses = Vec::new();
        for t in tasks {
            statuses.push(t.await.expect("request"));
        }
        statuses
    });
    let in_flight = all_started(addr, n).await;
    assert!(
        in_flight > 50.0,
        "the stop comes under load: {in_flight} in flight"
    );
    gw.shutdown().await;
    let statuses = load.await.expect("load");
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(gw.gateway.metrics.ledger_dropped.get(), 0);
    assert_eq!(gw.gateway.metrics.ledger_written.get(), n as u64);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage").await,
        n as i64
    );
    db.finish().await;
}

async fn usage_api_cli_and_gauges_agree_with_the_rows(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sim = start_sim(SimOptions::default()).await;
    let text = config(sim, &db.url, "");
    let mut gw = TestGateway::start_with_ledger(&text).await;
    // 1 request in 6 has an unknown key: counted per minute, not a row.
    let n = 50;
    load(gw.addr, 60, 8).await;
    wait_written(&gw, n as u64).await;

    let window = "from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    let auth = format!("Bearer {ADMIN}");
    let api = |q: String| {
        let url = gw.url(&format!("/api/v1/usage?{q}"));
        let auth = auth.clone();
        async move { get(&url, &[("authorization", &auth)]).await }
    };
    let (status, h, body) = api(format!("{window}&group_by=team,model")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(h["content-type"], "application/json");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(v["total"]["requests"], n as i64);
    for r in rows {
        let (team, model) = (
            r["team"].as_str().expect("value"),
            r["model"].as_str().expect("value"),
        );
        let w = format!("team = '{team}' AND model = '{model}'");
        assert_eq!(
            r["requests"].as_i64().expect("value"),
            db.scalar(&format!("SELECT COUNT(*) FROM tollgate_usage WHERE {w}"))
                .await
        );
        assert_eq!(
            r["input_tokens"].as_i64().expect("value"),
            db.scalar(&format!("SELECT CAST(COALESCE(SUM(input_tokens), 0) AS BIGINT) FROM tollgate_usage WHERE {w}")).await
        );
        assert_eq!(
            r["cost_nanos"].as_i64().expect("value"),
            db.scalar(&format!(
                "SELECT CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) FROM tollgate_usage WHERE {w}"
            ))
            .await
        );
    }
    let total_cost = v["total"]["cost_nanos"].as_i64().expect("cost");
    assert!(total_cost > 0);

    // The CLI prints the same CSV as the API.
    let (status, h, api_csv) = api(format!("{window}&group_by=team,model&format=csv")).await;
    assert_eq!(status, 200);
    assert_eq!(h["content-type"], "text/csv; charset=utf-8");
    let cfg_path = db.dir.join("tollgate.toml");
    std::fs::write(&cfg_path, &text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "usage",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01T00:00:00Z",
            "--by",
            "team,model",
            "--csv",
            "--config",
        ])
        .arg(&cfg_path)
        .output()
        .expect("tollgate usage");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&api_csv)
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "usage",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--by",
            "team",
            "--config",
        ])
        .arg(&cfg_path)
        .output()
        .expect("tollgate usage");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("TOTAL")
            && table.contains("search")
            && table.contains(&tollgate::ledger::report::usd(total_cost)),
        "{table}"
    );

    // Invalid parameters: 400 saying what is wrong; no token: 401.
    for (q, says) in [
        (
            format!("{window}&group_by=colour"),
            "unknown group_by column",
        ),
        ("to=2026-12-01".to_string(), "missing parameter `from`"),
        (
            "from=2026-12-01&to=2026-11-01".to_string(),
            "must be before",
        ),
        (
            "from=2026-11-01T00:00:00 01:00&to=2026-12-01".to_string(),
            "%2B",
        ),
        (format!("{window}&format=xml"), "json or csv"),
        (format!("{window}&limit=5"), "unknown parameter"),
    ] {
        let (status, _, body) = api(q.replace(' ', "+")).await;
        assert_eq!(status, 400, "{q}");
        let msg = String::from_utf8_lossy(&body);
        assert!(msg.contains(says), "{q}: {msg}");
    }
    let (status, _, _) = get(&gw.url(&format!("/api/v1/usage?{window}")), &[]).await;
    assert_eq!(status, 401);
    let (status, _, _) = get(
        &gw.url(&format!("/api/v1/usage?{window}")),
        &[("authorization", "Bearer wrong-admin-token")],
    )
    .await;
    assert_eq!(status, 401);

    // The ledger gauges of that window, on /api/v1/metrics.
    let (status, _, body) = get(&gw.url(&format!("/api/v1/metrics?{window}")), &[]).await;
    assert_eq!(status, 200);
    let scrape = support::Scrape::parse(&String::from_utf8_lossy(&body));
    assert_eq!(scrape.sum("llm_gateway_ledger_requests", &[]), n as f64);
    assert_eq!(
        scrape.sum(
            "llm_gateway_ledger_requests",
            &[("team", "support"), ("provider", "sim-anthropic")]
        ),
        10.0
    );
    assert!(
        (scrape.sum("llm_gateway_ledger_cost_usd", &[]) - total_cost as f64 / 1e9).abs() < 1e-9
    );
    // The default window is this month: the same rows.
    let scrape = gw.scrape().await;
    assert_eq!(scrape.sum("llm_gateway_ledger_requests", &[]), n as f64);
    // A window with nothing in it has no series; a half window is a 400.
    let (_, _, body) = get(&gw.url("/metrics?from=2001-01-01&to=2001-02-01"), &[]).await;
    assert_eq!(
        support::Scrape::parse(&String::from_utf8_lossy(&body))
            .sum("llm_gateway_ledger_requests", &[]),
        0.0
    );
    let (status, _, _) = get(&gw.url("/metrics?from=2001-01-01"), &[]).await;
    assert_eq!(status, 400);
    gw.shutdown().await;
    db.finish().await;
}

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
        .single()
        .expect("time")
}

fn row(team: &str, key: &str, started_at: DateTime<Utc>, cost_nanos: i64) -> UsageRow {
    UsageRow {
        team: team.into(),
        key_name: key.into(),
        provider: "openai".into(),
        requested_model: "gpt-4o".into(),
        model: "gpt-4o".into(),
        started_at,
        cost_nanos,
        usage: Usage {
            input: 10,
            output: 1,
            ..Usage::default()
        },
        ..UsageRow::blank()
    }
}

async fn windows_are_half_open_and_utc(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrations apply once");
    let micro = chrono::Duration::microseconds(1);
    let rows = vec![
        row("a", "k1", at(2026, 11, 1, 0, 0, 0) - micro, 1), // October, by a microsecond
        row("a", "k1", at(2026, 11, 1, 0, 0, 0), 10),        // the first instant of November
        row("a", "k2", at(2026, 11, 15, 23, 30, 0), 100),
        row(
            "b",
            "k3",
            at(2026, 11, 30, 23, 59, 59) + micro * 999_999,
            1000,
        ), // the last one
        row("a", "k1", at(2026, 12, 1, 0, 0, 0), 10_000), // December: excluded
    ];
    store.insert(&rows).await.expect("insert");
    store
        .insert(&rows[..2])
        .await
        .expect("a retried batch is ignored");
    let q = |from: &str, to: &str, by: &str| {
        ReportQuery::parse(Some(from), Some(to), Some(by)).expect("query")
    };
    let november = store
        .report(&q("2026-11-01", "2026-12-01", ""))
        .await
        .expect("report");
    assert_eq!(november.rows.len(), 1);
    assert_eq!(november.rows[0].totals.requests, 3);
    assert_eq!(november.rows[0].totals.cost_nanos, 1110);
    assert_eq!(november.rows[0].totals.input_tokens, 30);
    // The same instants written with offsets.
    let same = store
        .report(&q(
            "2026-11-01T01:00:00+01:00",
            "2026-11-30T19:00:00-05:00",
            "",
        ))
        .await
        .expect("report");
    assert_eq!(same.rows, november.rows);
    let by_day = store
        .report(&q("2026-10-31", "2026-12-02", "day,team"))
        .await
        .expect("report");
    let days: Vec<(String, String, i64)> = by_day
        .rows
        .iter()
        .map(|r| {
            (
                r.groups[0].clone(),
                r.groups[1].clone(),
                r.totals.cost_nanos,
            )
        })
        .collect();
    assert_eq!(
        days,
        vec![
            ("2026-10-31".into(), "a".into(), 1),
            ("2026-11-01".into(), "a".into(), 10),
            ("2026-11-15".into(), "a".into(), 100),
            ("2026-11-30".into(), "b".into(), 1000),
            ("2026-12-01".into(), "a".into(), 10_000),
        ]
    );
    assert_eq!(by_day.query.group_by, vec![GroupKey::Day, GroupKey::Team]);
    let empty = store
        .report(&q("2020-01-01", "2020-02-01", "team"))
        .await
        .expect("report");
    assert!(empty.rows.is_empty());
    let empty = store
        .report(&q("2020-01-01", "2020-02-01", ""))
        .await
        .expect("report");
    assert!(empty.rows.is_empty());

    // The hourly rollup (kept by a trigger, and not doubled by the retried batch) answers
    // hour-aligned windows exactly as the rows do; other windows read the rows.
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_usage_hourly")
            .await,
        5
    );
    for (from, to) in [
        ("2026-10-01", "2027-01-01"),
        ("2026-11-01", "2026-12-01"),
        ("2026-11-15T23:00:00Z", "2026-11-16T00:00:00Z"),
        ("2026-11-15T23:30:00Z", "2026-12-01T00:00:00.000001Z"),
    ] {
        for by in [
            "",
            "team",
            "day,team",
            "model,provider,team",
            "hour",
            "month",
            "key",
        ] {
            let q = q(from, to, by);
            assert_eq!(
                store.report(&q).await.expect("report").rows,
                store.report_rows(&q).await.expect("report").rows,
                "{from} {to} {by}"
            );
        }
    }

    // Spend since a time, for budgets: inclusive of the start.
    let cfg = LedgerConfig {
        url: db.url.clone(),
        ..LedgerConfig::default()
    };
    let ledger = Ledger::open(&cfg, Metrics::new(&MetricsOptions::default())).expect("ledger");
    let nov = at(2026, 11, 1, 0, 0, 0);
    let spend = |f: SpendFilter<'static>, since: DateTime<Utc>| {
        let ledger = &ledger;
        async move { ledger.spend_nanos(f, since).await.expect("spend") }
    };
    assert_eq!(spend(SpendFilter::Team("a"), nov).await, 10_110);
    assert_eq!(spend(SpendFilter::Team("b"), nov).await, 1000);
    assert_eq!(spend(SpendFilter::Key("k1"), nov).await, 10_010);
    assert_eq!(spend(SpendFilter::Key("k1"), nov - micro).await, 10_011);
    assert_eq!(spend(SpendFilter::Team("nobody"), nov).await, 0);
    // A period starting inside an hour (an offset such as +05:30): that hour's rows count
    // from the start on, the later hours come from the spend rollup.
    assert_eq!(
        spend(SpendFilter::Team("a"), at(2026, 11, 15, 23, 15, 0)).await,
        10_100
    );
    assert_eq!(
        spend(SpendFilter::Team("a"), at(2026, 11, 15, 23, 45, 0)).await,
        10_000
    );
    assert_eq!(
        spend(SpendFilter::Key("k2"), at(2026, 11, 15, 23, 30, 0)).await,
        100
    );
    assert_eq!(
        spend(SpendFilter::Key("k2"), at(2026, 11, 15, 23, 30, 0) + micro).await,
        0
    );
    assert_eq!(
        spend(SpendFilter::TeamModel("a", "gpt-4o"), nov).await,
        10_110
    );
    assert_eq!(spend(SpendFilter::TeamModel("a", "o3"), nov).await, 0);
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_spend_hourly")
            .await,
        5,
        "one rollup row per hour and group; the retried batch added none"
    );
    ledger.close().await;
    store.close().await;
    db.finish().await;
}

/// SQLite writes a batch as statements of fixed row counts in one transaction: sizes around
/// and between those counts must each land whole, and a retried batch must add nothing.
async fn batches_of_every_size_are_written_whole_and_once(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    let start = at(2026, 11, 2, 10, 0, 0);
    let sizes = [1usize, 2, 3, 63, 64, 65, 127, 129, 1000];
    let mut expected_rows = 0;
    let mut expected_cost = 0;
    for (b, &n) in sizes.iter().enumerate() {
        let rows: Vec<UsageRow> = (0..n)
            .map(|i| {
                let key = format!("k{}", i % 7);
                let at = start + chrono::Duration::milliseconds((b * 10_000 + i) as i64);
                UsageRow {
                    id: uuid::Uuid::now_v7(),
                    ..row("t", &key, at, (i + 1) as i64)
                }
            })
            .collect();
        store.insert(&rows).await.expect("insert");
        store
            .insert(&rows)
            .await
            .expect("a retried batch is ignored");
        expected_rows += n as i64;
        expected_cost += (n * (n + 1) / 2) as i64;
        assert_eq!(
            db.scalar("SELECT COUNT(*) FROM tollgate_usage").await,
            expected_rows,
            "after a batch of {n}"
        );
    }
    assert_eq!(
        db.scalar("SELECT CAST(SUM(cost_nanos) AS BIGINT) FROM tollgate_usage")
            .await,
        expected_cost
    );
    assert_eq!(
        db.scalar("SELECT CAST(SUM(cost_nanos) AS BIGINT) FROM tollgate_spend_hourly")
            .await,
        expected_cost,
        "the rollup counts each row once"
    );
    store.close().await;
    db.finish().await;
}

/// Groups where a rollup differs from the sums of the rows themselves (0: they agree).
async fn rollup_mismatches(db: &TestDb) -> i64 {
    let hour = match db.backend {
        Backend::Sqlite => "started_at - started_at % 3600000000",
        Backend::Postgres => "date_trunc('hour', started_at, 'UTC')",
    };
    let sum = |c: &str| format!("CAST(SUM({c}) AS BIGINT)");
    let hourly_rows = format!(
        "SELECT {hour} AS hour, team, provider, model, COUNT(*) AS requests, {}, {}, {}, {}, {}, {} \
         FROM tollgate_usage GROUP BY 1, 2, 3, 4",
        sum("input_tokens"),
        sum("output_tokens"),
        sum("cached_read_tokens"),
        sum("cache_write_tokens"),
        sum("reasoning_tokens"),
        sum("cost_nanos"),
    );
    let hourly = "SELECT hour, team, provider, model, requests, input_tokens, output_tokens, \
        cached_read_tokens, cache_write_tokens, reasoning_tokens, cost_nanos \
        FROM tollgate_usage_hourly";
    let spend_rows = format!(
        "SELECT {hour} AS hour, team, key_name, requested_model, {} FROM tollgate_usage \
         GROUP BY 1, 2, 3, 4",
        sum("cost_nanos")
    );
    let spend =
        "SELECT hour, team, key_name, requested_model, cost_nanos FROM tollgate_spend_hourly";
    let diff = |a: &str, b: &str| format!("(SELECT COUNT(*) FROM ({a} EXCEPT {b}) d)");
    db.scalar(&format!(
        "SELECT CAST({} + {} + {} + {} AS BIGINT)",
        diff(&hourly_rows, hourly),
        diff(hourly, &hourly_rows),
        diff(&spend_rows, spend),
        diff(spend, &spend_rows)
    ))
    .await
}

/// The rollups are summed by the writer from the rows an insert actually added, in the
/// batch's transaction: a batch retried in full adds nothing, one retried with new rows mixed
/// in (the writer's next batch after a commit it could not confirm) adds only the new ones,
/// and a batch that fails adds nothing at all. After each, the hourly and spend rollups equal
/// the rows' own sums, group by group (a trigger left in place would count every row twice).
async fn rollups_count_each_row_once_under_retried_and_failed_batches(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    let start = at(2026, 11, 3, 9, 58, 0);
    let make = |n: usize, seed: usize| -> Vec<UsageRow> {
        (0..n)
            .map(|i| {
                let j = seed + i;
                // Three hours, three teams, five keys, two models.
                let at = start + chrono::Duration::seconds((j * 97 % 10_000) as i64);
                let mut r = row(
                    &format!("team{}", j % 3),
                    &format!("k{}", j % 5),
                    at,
                    1 + j as i64,
                );
                r.id = uuid::Uuid::now_v7();
                r.model = if j % 2 == 0 { "gpt-4o" } else { "gpt-4o-mini" }.into();
                r.requested_model = r.model.clone();
                r.usage = Usage {
                    input: 100 + j as u64,
                    output: 7 + (j % 11) as u64,
                    cached_read: (j % 4) as u64,
                    cache_write: (j % 3) as u64,
                    cache_write_1h: 0,
                    reasoning: (j % 5) as u64,
                };
                r
            })
            .collect()
    };
    let first = make(100, 0);
    assert_eq!(store.insert(&first).await.expect("insert"), 100);
    assert_eq!(rollup_mismatches(&db).await, 0, "after the first batch");

    // The same batch again: nothing new.
    assert_eq!(store.insert(&first).await.expect("retry"), 0);
    assert_eq!(rollup_mismatches(&db).await, 0, "after a full retry");

    // A retry with rows queued since, interleaved so that every 64-row statement holds old and
    // new rows: only the 70 new ones count.
    let fresh = make(70, 1000);
    let mut mixed = Vec::new();
    for (i, r) in fresh.iter().enumerate() {
        mixed.push(r.clone());
        if let Some(old) = first.get(i) {
            mixed.push(old.clone());
        }
    }
    assert_eq!(store.insert(&mixed).await.expect("mixed retry"), 70);
    assert_eq!(rollup_mismatches(&db).await, 0, "after a mixed retry");
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_usage_hourly")
            .await,
        170
    );

    // A batch that fails in its last statement (a duplicate id within the batch is fine, so a
    // constraint the row cannot meet: SQLite's NOT NULL through a trigger set up for the test,
    // PostgreSQL's refusal of a NUL character in text) leaves rows and rollups as they were.
    let mut failing = make(65, 5000);
    match backend {
        Backend::Sqlite => {
            let mut c = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("sqlite");
            sqlx::query(
                "CREATE TRIGGER test_refuse BEFORE INSERT ON tollgate_usage \
                 WHEN NEW.team = 'refused' BEGIN SELECT RAISE(ABORT, 'refused'); END",
            )
            .execute(&mut c)
            .await
            .expect("test trigger");
            c.close().await.ok();
            failing[64].team = "refused".into();
        }
        Backend::Postgres => failing[64].team = "nul\0team".into(),
    }
    store
        .insert(&failing)
        .await
        .expect_err("the batch's last statement fails");
    assert_eq!(db.scalar("SELECT COUNT(*) FROM tollgate_usage").await, 170);
    assert_eq!(rollup_mismatches(&db).await, 0, "after a failed batch");
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_usage_hourly")
            .await,
        170
    );
    // The same rows, fixed, go in once.
    failing[64].team = "team0".into();
    assert_eq!(store.insert(&failing).await.expect("insert"), 65);
    assert_eq!(store.insert(&failing).await.expect("retry"), 0);
    assert_eq!(rollup_mismatches(&db).await, 0, "at the end");
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_usage_hourly")
            .await,
        235
    );
    store.close().await;
    db.finish().await;
}

/// A "PostgreSQL server" that accepts connections and never says a word.
async fn stalled_postgres() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = l.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

/// Request latencies through two gateways, alternating, so both see the same machine load.
async fn latencies(a: SocketAddr, b: SocketAddr, n: usize) -> (Vec<Duration>, Vec<Duration>) {
    let (mut la, mut lb) = (Vec::new(), Vec::new());
    for i in 0..n {
        for (addr, out) in [(a, &mut la), (b, &mut lb)] {
            let t = Instant::now();
            let status = request(addr, (i % 2) * 2).await; // OpenAI and Anthropic, not streamed
            assert_eq!(status, 200);
            out.push(t.elapsed());
        }
    }
    la.sort();
    lb.sort();
    (la, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_never_slows_requests_and_drops_are_counted() {
    let sim = start_sim(SimOptions::default()).await;
    let stalled = stalled_postgres().await;
    let url = format!("postgres://postgres@{stalled}/tollgate");
    let extra = "write_timeout_secs = 1\ndrain_timeout_secs = 1\nchannel_capacity = 40\nmax_buffered_rows = 30";
    let mut gw = TestGateway::start_with_ledger(&config(sim, &url, extra)).await;
    let baseline_gw =
        TestGateway::start(&config(sim, "sqlite://unused.db", "enabled = false")).await;
    let n = 300;
    let (base, stalled_lat) = latencies(baseline_gw.addr, gw.addr, n).await;
    let p = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let (b50, b99, s50, s99) = (
        p(&base, 0.5),
        p(&base, 0.99),
        p(&stalled_lat, 0.5),
        p(&stalled_lat, 0.99),
    );
    eprintln!(
        "latency without a ledger p50 {b50:?} p99 {b99:?}; with a stalled database p50 {s50:?} p99 {s99:?}"
    );
    assert!(
        s50 < b50 * 3 + Duration::from_millis(2),
        "p50 {s50:?} vs {b50:?}"
    );
    assert!(
        s99 < b99 * 3 + Duration::from_millis(20),
        "p99 {s99:?} vs {b99:?}"
    );
    assert!(
        stalled_lat[n - 1] < Duration::from_millis(500),
        "no request waited on the database: max {:?}",
        stalled_lat[n - 1]
    );
    // Every request recorded (just after its response), its row offered to the ledger.
    gw.wait_requests(n as f64).await;
    let m = gw.gateway.metrics.clone();
    assert_eq!(m.ledger_written.get(), 0);
    let dropped = m.ledger_dropped.get();
    assert!(dropped as usize >= n - 40 - 30, "dropped {dropped}");
    // The writer keeps up to max_buffered_rows in memory while it retries.
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.ledger_buffered.get() < 30 {
        assert!(
            Instant::now() < deadline,
            "buffered {}",
            m.ledger_buffered.get()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let scrape = gw.scrape().await;
    assert_eq!(
        scrape.sum("llm_gateway_ledger_dropped_rows_total", &[]),
        dropped as f64
    );
    assert_eq!(scrape.sum("llm_gateway_ledger_buffered_rows", &[]), 30.0);
    // The usage API says the database cannot answer, in bounded time.
    let t = Instant::now();
    let (status, _, _) = get(
        &gw.url("/api/v1/usage?from=2026-01-01&to=2027-01-01"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(status, 503);
    assert!(t.elapsed() < Duration::from_secs(3));
    // At the stop, what could not be written is counted, never silently lost.
    let t = Instant::now();
    gw.shutdown().await;
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "drain bounded: {:?}",
        t.elapsed()
    );
    assert_eq!(m.ledger_written.get() + m.ledger_dropped.get(), n as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_api_is_off_without_an_admin_token() {
    let sim = start_sim(SimOptions::default()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let text = config(sim, &db.url, "").replace(&format!("admin_token = \"{ADMIN}\""), "");
    let mut gw = TestGateway::start_with_ledger(&text).await;
    let (status, _, body) = get(
        &gw.url("/api/v1/usage?from=2026-01-01&to=2027-01-01"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("admin_token"));
    gw.shutdown().await;
    db.finish().await;
}

/// `tollgate serve` as a process: SIGTERM under load, every request served is in the
/// database, the CLI reports them, and neither the database nor the logs hold prompt text.
/// `tollgate serve --config PATH` on a free port, with `extra` arguments; returns the child
/// (stdout read up to its "listening on" line, stderr piped) and its address.
async fn spawn_serve(
    cfg_path: &std::path::Path,
    extra: &[&str],
) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--config")
        .arg(cfg_path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("tollgate serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(Duration::from_secs(10), stdout.next_line())
        .await
        .expect("announces")
        .expect("line")
        .expect("listening line");
    let addr = line
        .strip_prefix("listening on http://")
        .expect("listening on")
        .parse()
        .expect("addr");
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_drains_the_ledger_on_sigterm_and_keeps_no_prompt_text() {
    use tokio::io::AsyncReadExt;

    let sim = start_sim(SimOptions {
        delay: Duration::from_millis(500),
        ..SimOptions::default()
    })
    .await;
    let db = TestDb::new(Backend::Sqlite).await;
    let cfg_path = db.dir.join("tollgate.toml");
    std::fs::write(&cfg_path, config(sim, &db.url, "")).expect("config");
    let (mut child, addr) = spawn_serve(&cfg_path, &["--log", "debug"]).await;
    let mut stderr = child.stderr.take().expect("stderr");
    let logs = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    let n = 90;
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(async move { request(addr, i).await }));
    }
    let in_flight = all_started(addr, n).await;
    assert!(
        in_flight > 30.0,
        "SIGTERM under load: {in_flight} in flight"
    );
    let pid = child.id().expect("pid").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.expect("request"));
    }
    let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .expect("exits")
        .expect("status");
    assert!(exit.success(), "{exit:?}");
    let logs = logs.await.expect("logs");
    assert_eq!(statuses.len(), n, "every request was answered");
    // 1 request in 6 has an unknown key: counted per minute, not a row.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage").await,
        (n - n / 6) as i64,
        "{logs}"
    );
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_unauthenticated")
            .await,
        (n / 6) as i64,
        "the unknown keys' requests are counted at shutdown"
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "usage",
            "--from",
            "2000-01-01",
            "--to",
            "2100-01-01",
            "--csv",
            "--config",
        ])
        .arg(&cfg_path)
        .output()
        .expect("tollgate usage");
    let csv = String::from_utf8_lossy(&out.stdout);
    assert!(
        csv.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with(&format!("{},", n - n / 6))),
        "{csv}"
    );
    assert!(!db.contains(MARKER).await, "prompt text in the database");
    assert!(!logs.contains(MARKER), "prompt text in the logs");
    assert!(logs.contains("ledger"), "{logs}");
    db.finish().await;
}

/// SQLite locked by another writer: requests go on unslowed, rows wait in memory, and once
/// the lock is gone every one of them is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_sqlite_database_is_retried_and_rows_catch_up() {
    let sim = start_sim(SimOptions::default()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    store.close().await;
    let mut locker = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("sqlite");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let mut gw =
        TestGateway::start_with_ledger(&config(sim, &db.url, "write_timeout_secs = 1")).await;
    let n = 60;
    let t = Instant::now();
    let statuses = load(gw.addr, n, 6).await;
    assert_eq!(statuses.len(), n);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "requests did not wait for the locked database: {:?}",
        t.elapsed()
    );
    let m = gw.gateway.metrics.clone();
    // The requests with an unknown key (1 in 6) are counted per minute, not as rows.
    let rows = n - n / 6;
    let deadline = Instant::now() + Duration::from_secs(5);
    while m.ledger_buffered.get() < rows as i64 {
        assert!(
            Instant::now() < deadline,
            "buffered {}",
            m.ledger_buffered.get()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(m.ledger_written.get(), 0, "the database is locked");
    sqlx::query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlock");
    drop(locker);
    wait_written(&gw, rows as u64).await;
    assert_eq!(m.ledger_dropped.get(), 0);
    assert_eq!(m.ledger_buffered.get(), 0);
    gw.shutdown().await;
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage").await,
        rows as i64
    );
    db.finish().await;
}

/// What clients send is bounded before it is stored: model names and customer ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_strings_are_bounded_in_the_ledger() {
    let sim = start_sim(SimOptions::default()).await;
    let db = TestDb::new(Backend::Sqlite).await;
    let mut gw = TestGateway::start_with_ledger(&config(sim, &db.url, "")).await;
    let bearer = format!("Bearer {KEY}");
    let long_customer = "c".repeat(1000);
    let body = format!(r#"{{"model":"{}","messages":[]}}"#, "m".repeat(5000));
    let (status, _, _) = post(
        &gw.url("/v1/chat/completions"),
        &[
            ("authorization", &bearer),
            ("x-tollgate-customer", &long_customer),
        ],
        &body,
    )
    .await;
    assert_eq!(status, 404);
    gw.shutdown().await;
    assert_eq!(
        db.scalar("SELECT LENGTH(requested_model) FROM tollgate_usage")
            .await,
        256
    );
    assert_eq!(
        db.scalar("SELECT LENGTH(customer) FROM tollgate_usage WHERE error_type = 'unknown_model'")
            .await,
        256
    );
    db.finish().await;
}

/// A first start on a new database restores budgets only after the schema exists: before,
/// 6 of 7 fresh starts logged "could not restore budget spend ... no such table". Several
/// starts, each on a new file, with budgets on a key and a team.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_start_restores_budgets_after_migrating() {
    use tokio::io::AsyncReadExt;

    let sim = start_sim(SimOptions::default()).await;
    for attempt in 0..4 {
        let db = TestDb::new(Backend::Sqlite).await;
        let cfg_path = db.dir.join("tollgate.toml");
        let cfg = config(sim, &db.url, "").replace(
            "team = \"search\"\n",
            "team = \"search\"\nbudget = { usd = 5, period = \"day\", action = \"block\" }\n\n[[teams]]\nname = \"support\"\nbudget = { usd = 50, period = \"month\", action = \"alert\" }\n",
        );
        assert!(cfg.contains("budget = { usd = 5"));
        std::fs::write(&cfg_path, cfg).expect("config");
        let (mut child, _) = spawn_serve(&cfg_path, &[]).await;
        let pid = child.id().expect("pid").to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        let mut logs = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut logs)
            .await
            .expect("logs");
        let _ = child.wait().await;
        assert!(
            !logs.contains("could not restore") && !logs.contains("no such table"),
            "start {attempt}: {logs}"
        );
        assert!(
            logs.contains("budget spend of the current periods restored"),
            "start {attempt}: {logs}"
        );
        db.finish().await;
    }
}

/// A flood of requests without a valid key beside billed traffic while the database is
/// locked, so that every row waits in the writer's buffer (200) and channel (256): the
/// unauthenticated requests take no room (counted per minute), refusals with a valid key
/// (unknown model) may fill only half of the channel, so every billed row is kept and written
/// once the lock goes. Before, each 401 was a row in the same channel and the flood filled it:
/// 72k 401s a second dropped 119 of 1,000 billed rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_refusals_never_costs_a_billed_row() {
    let db = TestDb::new(Backend::Sqlite).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    store.close().await;
    let mut locker = sqlx::SqliteConnection::connect(&db.url)
        .await
        .expect("sqlite");
    sqlx::query("BEGIN EXCLUSIVE")
        .execute(&mut locker)
        .await
        .expect("lock");
    let sim = start_sim(SimOptions::default()).await;
    let mut gw = TestGateway::start_with_ledger(&config(
        sim,
        &db.url,
        "channel_capacity = 256\nmax_buffered_rows = 200\nwrite_timeout_secs = 1",
    ))
    .await;
    let addr = gw.addr;
    let flood = |i: usize| async move {
        let url = format!("http://{addr}/v1/chat/completions");
        let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}"#;
        let unknown = r#"{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}"#;
        let bearer = format!("Bearer {KEY2}");
        let mut sent = (0usize, 0usize);
        for j in 0..400 {
            if (i + j) % 4 == 0 {
                let (s, _, _) = post(&url, &[("authorization", &bearer)], unknown).await;
                assert_eq!(s, 404);
                sent.1 += 1;
            } else {
                let (s, _, _) = post(&url, &[("authorization", "Bearer tg-flood-x")], body).await;
                assert_eq!(s, 401);
                sent.0 += 1;
            }
        }
        sent
    };
    let billed = |i: usize| async move {
        let mut ok = 0;
        for j in 0..20 {
            if request(addr, (i * 20 + j) * 6).await == 200 {
                ok += 1;
            }
        }
        ok
    };
    let floods: Vec<_> = (0..6).map(|i| tokio::spawn(flood(i))).collect();
    let bills: Vec<_> = (0..3).map(|i| tokio::spawn(billed(i))).collect();
    let (mut unauth, mut refused) = (0, 0);
    for f in floods {
        let (a, b) = f.await.expect("flood");
        unauth += a;
        refused += b;
    }
    let mut served = 0;
    for b in bills {
        served += b.await.expect("billed");
    }
    assert_eq!(served, 60);
    gw.wait_requests((unauth + refused + served) as f64).await;
    let m = gw.gateway.metrics.clone();
    assert_eq!(
        m.ledger_written.get(),
        0,
        "the database was locked throughout"
    );
    assert!(
        m.ledger_dropped.get() > 0,
        "the refusals filled their half of the channel"
    );
    sqlx::query("COMMIT")
        .execute(&mut locker)
        .await
        .expect("unlock");
    drop(locker);
    gw.shutdown().await;
    eprintln!(
        "refusal rows dropped under the flood: {}",
        m.ledger_dropped.get()
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage WHERE status_code = 200")
            .await,
        served as i64,
        "every billed row written (dropped {})",
        m.ledger_dropped.get()
    );
    assert_eq!(
        db.scalar("SELECT CAST(SUM(requests) AS BIGINT) FROM tollgate_unauthenticated")
            .await,
        unauth as i64
    );
    assert_eq!(m.ledger_unauthenticated.get(), unauth as u64);
    // What was refused with a valid key is a row or counted as dropped.
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage WHERE status_code = 404")
            .await
            + m.ledger_dropped.get() as i64,
        refused as i64
    );
    db.finish().await;
}

/// nothing.
async fn reprice_keeps_rows_rollups_and_reports_consistent(backend: Backend) {
    use tollgate::ledger::reprice::reprice;
    use tollgate::metering::pricing::PriceSpec;
    use tollgate::metering::{PriceSource, PriceTable};

    let db = TestDb::new(backend).await;
    let store = Store::connect_lazy(&db.url, true, Duration::from_secs(5)).expect("store");
    store.migrate().await.expect("migrate");
    let start = at(2026, 11, 2, 10, 0, 0);
    let usage = Usage {
        input: 1000,
        output: 100,
        ..Usage::default()
    };
    let mut rows = Vec::new();
    // gpt-4o at the built-in $2.50 / $10: 1000*2.5e-6 + 100*10e-6 = 0.0035 USD.
    for i in 0..10 {
        rows.push(UsageRow {
            id: uuid::Uuid::now_v7(),
            usage,
            price_id: Some("gpt-4o".into()),
            ..row(
                "t",
                "k",
                start + chrono::Duration::minutes(i * 7),
                3_500_000,
            )
        });
    }
    // A model that had no price.
    for i in 0..5 {
        rows.push(UsageRow {
            id: uuid::Uuid::now_v7(),
            usage,
            model: "house-model".into(),
            requested_model: "house-model".into(),
            ..row("t", "k2", start + chrono::Duration::minutes(i * 11), 0)
        });
    }
    // Outside the window.
    let outside = UsageRow {
        id: uuid::Uuid::now_v7(),
        usage,
        price_id: Some("gpt-4o".into()),
        ..row("t", "k", at(2026, 11, 3, 10, 0, 0), 3_500_000)
    };
    rows.push(outside.clone());
    store.insert(&rows).await.expect("insert");

    let mut prices = PriceTable::builtin().expect("prices");
    let spec = |i: &str, o: &str| PriceSpec {
        input: i.into(),
        output: o.into(),
        ..PriceSpec::default()
    };
    prices.set(
        "gpt-4o",
        spec("5", "20")
            .to_price_for("gpt-4o", PriceSource::Config)
            .expect("price"),
    );
    prices.set(
        "house-model",
        spec("1", "2")
            .to_price_for("house-model", PriceSource::Config)
            .expect("price"),
    );
    let (from, to) = (at(2026, 11, 2, 0, 0, 0), at(2026, 11, 3, 0, 0, 0));
    let sum = |t: &str| format!("SELECT CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT) FROM {t}");
    let before = db.scalar(&sum("tollgate_usage")).await;

    let dry = reprice(&store, &prices, from, to, true)
        .await
        .expect("dry run");
    assert_eq!((dry.rows_seen, dry.rows_changed), (15, 15));
    assert_eq!(
        db.scalar(&sum("tollgate_usage")).await,
        before,
        "a dry run writes nothing"
    );

    let done = reprice(&store, &prices, from, to, false)
        .await
        .expect("reprice");
    assert_eq!(done, dry, "the dry run said what the run did");
    // gpt-4o at $5 / $20: 0.007 USD a row; house-model at $1 / $2: 0.0012 USD a row.
    assert_eq!(
        done.groups[&("t".to_string(), "gpt-4o".to_string())],
        (10, 35_000_000, 70_000_000)
    );
    assert_eq!(
        done.groups[&("t".to_string(), "house-model".to_string())],
        (5, 0, 6_000_000)
    );
    let total = 70_000_000 + 6_000_000 + 3_500_000;
    assert_eq!(db.scalar(&sum("tollgate_usage")).await, total);
    assert_eq!(
        db.scalar(&sum("tollgate_usage_hourly")).await,
        total,
        "hourly rollup"
    );
    assert_eq!(
        db.scalar(&sum("tollgate_spend_hourly")).await,
        total,
        "spend rollup"
    );
    assert_eq!(
        db.scalar("SELECT COUNT(*) FROM tollgate_usage WHERE cost_source = 'priced' AND price_id IS NOT NULL")
            .await,
        16,
        "every repriced row names its price (and the one outside kept its own)"
    );
    // The usage report (read from the rollup for whole hours) equals the rows.
    let q = ReportQuery {
        from,
        to,
        group_by: vec![GroupKey::Team, GroupKey::Model],
    };
    let rollup = store.report(&q).await.expect("report");
    let rows_report = store.report_rows(&q).await.expect("report from rows");
    assert_eq!(rollup.rows, rows_report.rows);
    // Budgets restored at start-up read the spend rollup.
    assert_eq!(
        store
            .spend_nanos(SpendFilter::Team("t"), from)
            .await
            .expect("spend"),
        total
    );
    let again = reprice(&store, &prices, from, to, false)
        .await
        .expect("again");
    assert_eq!(again.rows_changed, 0, "idempotent");
    store.close().await;
    db.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_reprice_keeps_rows_rollups_and_reports_consistent() {
    reprice_keeps_rows_rollups_and_reports_consistent(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_reprice_keeps_rows_rollups_and_reports_consistent() {
    reprice_keeps_rows_rollups_and_reports_consistent(Backend::Postgres).await;
}

/// `tollgate usage` as a finance user runs it: with `--ledger-url` alone, or with a config
/// whose provider secrets are not set, and without `--from`/`--to` (this month); customer
/// names that are spreadsheet formulas come out defused in its CSV and the API's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_cli_needs_only_the_ledger_and_csv_defuses_formulas() {
    let db = TestDb::new(Backend::Sqlite).await;
    let sim = start_sim(SimOptions::default()).await;
    let text = config(sim, &db.url, "");
    let gw = TestGateway::start_with_ledger(&text).await;
    let customers = [
        "=HYPERLINK(\"http://evil\",\"x\")",
        "+1",
        "@SUM(A1)",
        "plain",
    ];
    let bearer = format!("Bearer {KEY}");
    for c in customers {
        let (status, _, _) = post(
            &gw.url("/v1/chat/completions"),
            &[("authorization", &bearer), ("x-tollgate-customer", c)],
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],"max_tokens":3}"#,
        )
        .await;
        assert_eq!(status, 200);
    }
    wait_written(&gw, customers.len() as u64).await;
    let expected_lines = [
        "\"'+1\",1,",
        "\"'=HYPERLINK(\"\"http://evil\"\",\"\"x\"\")\",1,",
        "\"'@SUM(A1)\",1,",
        "plain,1,",
    ];
    let check = |csv: &str| {
        let rows: Vec<&str> = csv
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(rows.len(), 4, "{csv}");
        for (row, start) in rows.iter().zip(expected_lines) {
            assert!(
                row.starts_with(start),
                "{row:?} should start with {start:?}"
            );
        }
    };
    let (status, _, api_csv) = get(
        &gw.url("/api/v1/usage?from=2000-01-01&to=2100-01-01&group_by=customer&format=csv"),
        &[("authorization", &format!("Bearer {ADMIN}"))],
    )
    .await;
    assert_eq!(status, 200);
    check(&String::from_utf8_lossy(&api_csv));

    let usage = |args: &[&str], env: &[(&str, &str)]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("usage")
            .args(args)
            .env_remove("TOLLGATE_CONFIG")
            .env_remove("TOLLGATE_LEDGER_URL")
            .envs(env.iter().copied())
            .current_dir(&db.dir)
            .output()
            .expect("tollgate usage");
        assert!(
            out.status.success(),
            "tollgate usage {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // The ledger URL alone, no config file (none in the working directory), this month.
    let csv = usage(&["--ledger-url", &db.url, "--by", "customer", "--csv"], &[]);
    check(&csv);
    let table = usage(&["--by", "customer"], &[("TOLLGATE_LEDGER_URL", &db.url)]);
    let (from, to) = tollgate::ledger::report::month_of(chrono::Utc::now());
    assert!(
        table.contains(&format!("usage from {from}T00:00:00Z to {to}T00:00:00Z")),
        "{table}"
    );
    assert!(
        table.contains("TOTAL") && table.contains("@SUM(A1)"),
        "{table}"
    );
    // A config whose provider secrets are unset: only [ledger] is read.
    let cfg = db.dir.join("finance.toml");
    std::fs::write(
        &cfg,
        text.replace("\"sk-sim\"", "\"${TOLLGATE_TEST_UNSET_OPENAI_KEY}\"")
            .replace("\"sk-ant-sim\"", "\"${TOLLGATE_TEST_UNSET_ANTHROPIC_KEY}\""),
    )
    .expect("config");
    let cfg = cfg.to_string_lossy().into_owned();
    assert!(
        tollgate::config::Config::load(std::path::Path::new(&cfg)).is_err(),
        "the full config needs the secrets"
    );
    check(&usage(
        &["--config", &cfg, "--by", "customer", "--csv"],
        &[],
    ));
    db.finish().await;
}
