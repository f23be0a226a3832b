//! The ledger's commands: `tollgate usage` (a report in the terminal) and the hidden
//! `tollgate ledger-bench` (writer throughput and the cost of `record` on the request path).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tollgate::ledger::{Ledger, LedgerConfig, Report, ReportQuery, Store, UsageRow};
use tollgate::metering::Usage;
use tollgate::metrics::{Metrics, MetricsOptions};

/// Runs `query` against the ledger of `cfg`, without creating a missing SQLite file.
pub async fn usage_report(cfg: &LedgerConfig, query: &ReportQuery) -> Result<Report, String> {
    if !cfg.enabled {
        return Err("the ledger is disabled in this config ([ledger] enabled = false)".into());
    }
    let store =
        Store::connect_lazy(&cfg.url, false, cfg.write_timeout).map_err(|e| e.to_string())?;
    let report = tokio::time::timeout(cfg.write_timeout * 6, store.report(query))
        .await
        .map_err(|_| "the ledger database did not answer in time".to_string())?
        .map_err(|e| {
            format!(
                "{e}\n(is [ledger] url right, and has the gateway run with it? url: {})",
                tollgate::ledger::config::redact(&cfg.url)
            )
        });
    store.close().await;
    report
}

/// `tollgate reprice`: the rows of `[from, to)` at `prices`, rows and rollups together.
pub async fn reprice(
    cfg: &LedgerConfig,
    prices: &tollgate::metering::PriceTable,
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
    dry_run: bool,
) -> Result<tollgate::ledger::reprice::RepriceSummary, String> {
    if !cfg.enabled {
        return Err("the ledger is disabled in this config ([ledger] enabled = false)".into());
    }
    let store =
        Store::connect_lazy(&cfg.url, false, cfg.write_timeout).map_err(|e| e.to_string())?;
    let out = tollgate::ledger::reprice::reprice(&store, prices, from, to, dry_run)
        .await
        .map_err(|e| e.to_string());
    store.close().await;
    out
}

/// Row `i` of the benchmark; with `keys` > 0, key and team rotate over that many (one team a
/// key), as the gateway's benchmark rotates its virtual keys.
fn sample_row(i: usize, keys: usize) -> UsageRow {
    const TEAMS: [&str; 4] = ["search", "support", "research", "growth"];
    const MODELS: [&str; 4] = [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
    ];
    let (key_name, team) = if keys > 0 {
        (
            format!("key-{:05}", i % keys),
            format!("team-{:05}", i % keys),
        )
    } else {
        (format!("{}-app", TEAMS[i % 4]), TEAMS[i % 4].to_string())
    };
    UsageRow {
        key_name: key_name.into(),
        team: team.into(),
        customer: Some(format!("customer-{}", i % 100).into()),
        provider: if i % 4 < 2 { "openai" } else { "anthropic" }.into(),
        requested_model: MODELS[i % 4].into(),
        model: MODELS[i % 4].into(),
        stream: i % 2 == 0,
        time_to_first_token: Some(Duration::from_millis(80)),
        usage: Usage {
            input: 1200,
            output: 300,
            cached_read: 400,
            ..Usage::default()
        },
        cost_nanos: 4_250_000,
        upstream_request_id: Some(format!("req_{i:024}").into()),
        ..UsageRow::blank()
    }
}

/// Writes `rows` rows through the real writer into `url` and reports rows per second, then
/// times `record` calls against a writer.
pub async fn ledger_bench(url: &str, rows: usize, batch: usize, keys: usize) -> Result<(), String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
    }
    let cfg = LedgerConfig {
        url: url.to_string(),
        batch_size: batch,
        channel_capacity: 65_536,
        max_buffered_rows: 1_000_000,
        drain_timeout: Duration::from_secs(600),
        ..LedgerConfig::default()
    };
    // Schema first, so that the timing is the writing only.
    let store = Store::connect_lazy(url, true, cfg.write_timeout).map_err(|e| e.to_string())?;
    store.migrate().await.map_err(|e| e.to_string())?;
    store.close().await;

    let prepared: Vec<UsageRow> = (0..rows).map(|i| sample_row(i, keys)).collect();
    let metrics = Metrics::new(&MetricsOptions::default());
    let ledger = Ledger::open(&cfg, metrics.clone()).map_err(|e| e.to_string())?;
    let start = Instant::now();
    for row in prepared {
        ledger.record_waiting(row).await;
    }
    ledger.close().await;
    let elapsed = start.elapsed();
    let written = metrics.ledger_written.get();
    println!(
        "writer: {written} rows into {} in {:.3} s = {:.0} rows/s (batch {batch}; {}; dropped {})",
        store.backend(),
        elapsed.as_secs_f64(),
        written as f64 / elapsed.as_secs_f64(),
        if keys > 0 {
            format!("{keys} keys")
        } else {
            "4 keys".to_string()
        },
        metrics.ledger_dropped.get()
    );

    // The request path: `record` alone (rows built beforehand), then building the row as
    // settlement does and recording it. The writer runs meanwhile; the channel is big enough
    // that nothing is dropped, so every call is a successful hand-over.
    let n = 50_000.min(rows.max(1));
    let small = LedgerConfig {
        channel_capacity: n + 1,
        ..cfg.clone()
    };
    let key: Arc<str> = "search-app".into();
    let team: Arc<str> = "search".into();
    let price_id: Arc<str> = "gpt-4o-mini".into();
    // As settlement builds it (src/proxy/settle.rs).
    let build = |i: usize| UsageRow {
        id: uuid::Uuid::now_v7(),
        started_at: chrono::Utc::now() - Duration::from_millis(120),
        duration: Duration::from_millis(120),
        time_to_first_token: None,
        key_name: key.clone(),
        team: team.clone(),
        customer: None,
        provider: "openai".into(),
        requested_model: "gpt-4o-mini".into(),
        model: "gpt-4o-mini-2024-07-18".into(),
        endpoint: "/v1/chat/completions",
        stream: false,
        status_code: 200,
        error_type: None,
        usage: Usage {
            input: 1200,
            output: 300,
            ..Usage::default()
        },
        cost_nanos: i as i64,
        usage_source: tollgate::metering::UsageSource::Reported,
        upstream_request_id: Some("req_0123456789abcdef".into()),
        price_id: Some(price_id.clone()),
        service_tier: tollgate::metering::ServiceTier::Standard,
        upstream_endpoint: None,
        cache_status: None,
        saved_cost_nanos: None,
        mcp_outcome: None,
        response_bytes: None,
    };
    for built_on_the_path in [false, true] {
        let metrics = Metrics::new(&MetricsOptions::default());
        let ledger = Ledger::open(&small, metrics.clone()).map_err(|e| e.to_string())?;
        let prebuilt: Vec<UsageRow> = if built_on_the_path {
            Vec::new()
        } else {
            (0..n).map(build).collect()
        };
        let start = Instant::now();
        if built_on_the_path {
            for i in 0..n {
                ledger.record(build(i));
            }
        } else {
            for row in prebuilt {
                ledger.record(row);
            }
        }
        let per_call = start.elapsed().as_nanos() as f64 / n as f64;
        ledger.close().await;
        println!(
            "request path: {per_call:.0} ns per {} ({n} calls, dropped {}, written {})",
            if built_on_the_path {
                "row built and recorded"
            } else {
                "record() of a built row"
            },
            metrics.ledger_dropped.get(),
            metrics.ledger_written.get()
        );
    }
    Ok(())
}
