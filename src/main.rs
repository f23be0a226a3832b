//! The `tollgate` command: `serve`, `check`, `usage`, `demo` and `sim`.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tokio::net::TcpListener;
use tollgate::config::Config;
use tollgate::ledger::{Ledger, ReportQuery};
use tollgate::metrics::Metrics;
use tollgate::proxy::Gateway;
use tollgate::{demo, server, sim};

mod billing_cli;
mod ledger_cli;
mod prices_cli;

#[derive(Parser)]
#[command(
    name = "tollgate",
    version,
    about = "An LLM gateway that meters every token"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log filter (tracing env-filter syntax), e.g. `info` or `tollgate=debug`.
    #[arg(long, global = true, env = "TOLLGATE_LOG", default_value = "info")]
    log: String,
    /// Log as JSON lines.
    #[arg(long, global = true, env = "TOLLGATE_LOG_JSON")]
    log_json: bool,
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Times an exact scan against a graph search of the semantic index at several sizes
    /// (random unit vectors, near-duplicate queries); run it on a release build.
    MeasureIndex {
        /// Vector dimensions (text-embedding-3-small: 1536).
        #[arg(long, default_value_t = 1536)]
        dims: usize,
        /// Vectors in the group, comma-separated.
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "500,1000,2000,5000,10000"
        )]
        entries: Vec<usize>,
        /// Queries per size.
        #[arg(long, default_value_t = 200)]
        queries: usize,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// The config file.
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
        config: PathBuf,
        /// Listen address, overriding `server.listen`.
        #[arg(long)]
        listen: Option<SocketAddr>,
    },
    /// Validate a config file and print every error with its key path.
    Check {
        /// The config file.
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
        config: PathBuf,
    },
    /// Run the gateway in front of a simulated provider, with synthetic traffic from demo teams.
    Demo {
        /// Listen address of the gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Synthetic requests per second (0 for none).
        #[arg(long, default_value_t = 5)]
        rate: u32,
    },
    /// Usage from the ledger: requests, tokens and cost per group over [from, to), UTC.
    Usage {
        /// The config file: only its `[ledger]` section is read (provider secrets need not be
        /// set).
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
        config: PathBuf,
        /// The ledger database (sqlite://FILE or postgres://...), instead of a config file.
        #[arg(long, env = "TOLLGATE_LEDGER_URL")]
        ledger_url: Option<String>,
        /// Start, inclusive: a date (2026-11-01, midnight UTC) or an RFC 3339 time. Default:
        /// the start of the current month (UTC).
        #[arg(long)]
        from: Option<String>,
        /// End, exclusive: a date or an RFC 3339 time. Default: the start of the next month.
        #[arg(long)]
        to: Option<String>,
        /// Group columns, comma-separated: team, key, customer, provider, model,
        /// requested_model, endpoint, status_code, error_type, stream, estimated, usage_source,
        /// cost_source, price_id, service_tier, month, day, hour.
        #[arg(long, default_value = "")]
        by: String,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Recompute the stored cost of the rows of [from, to) at the config's current prices
    /// (after a price correction), rows and rollups together; prints the difference per team
    /// and model.
    Reprice {
        /// The config file (its prices and `[ledger] url`).
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
        config: PathBuf,
        /// Start, inclusive: a date (2026-11-01, midnight UTC) or an RFC 3339 time.
        #[arg(long)]
        from: String,
        /// End, exclusive: a date or an RFC 3339 time.
        #[arg(long)]
        to: String,
        /// Print what would change; write nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The provider's bill beside the ledger: billed and metered cost and tokens, the
    /// difference, the capture ratio and its explanation, per UTC day [from, to).
    Billing {
        /// The config file (its `[ledger] url` and `[[billing]]` are read).
        #[arg(long, short, env = "TOLLGATE_CONFIG", default_value = "tollgate.toml")]
        config: PathBuf,
        /// First day, inclusive (2026-11-01).
        #[arg(long)]
        from: String,
        /// Last day, exclusive.
        #[arg(long)]
        to: String,
        /// Group columns, comma-separated: provider, model, day (default all three).
        #[arg(long, default_value = "")]
        by: String,
        /// CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// Measures the ledger writer: rows per second into a database, and the cost of one
    /// `record` call on the request path.
    #[command(hide = true)]
    LedgerBench {
        /// Database URL (sqlite://FILE or postgres://...).
        #[arg(long)]
        url: String,
        /// Rows to write.
        #[arg(long, default_value_t = 200_000)]
        rows: usize,
        /// Rows per insert.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        /// Distinct keys (one team each) the rows rotate over; 0: four keys and teams.
        #[arg(long, default_value_t = 0)]
        keys: usize,
    },
    /// The response cache's tools: `measure-index` (exact scan vs HNSW graph search).
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// The price table: `show MODEL`, `check [FILE]`, `import --format litellm FILE`.
    Prices {
        #[command(subcommand)]
        command: prices_cli::PricesCommand,
    },
    /// Run only the simulated provider (OpenAI and Anthropic shapes), for tests and benchmarks.
    Sim {
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Delay before each response, in milliseconds.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Streaming cadence in tokens per second (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        tokens_per_second: u32,
        /// Output tokens when a request sets no max_tokens.
        #[arg(long, default_value_t = 16)]
        output_tokens: u64,
        /// Output tokens at most, whatever max_tokens asks.
        #[arg(long, default_value_t = sim::DEFAULT_MAX_OUTPUT_TOKENS)]
        max_output_tokens: u64,
    },
}

fn init_logs(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour escapes only for a person at a terminal: a file, a pipe or a log collector gets
    // plain text (and NO_COLOR, https://no-color.org, turns colour off everywhere).
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down: no new connections, finishing requests in flight");
}

fn announce(addr: SocketAddr) {
    // Tests and scripts wait for this exact line on stdout.
    println!("listening on http://{addr}");
    let _ = std::io::stdout().flush();
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))
}

async fn serve(config: Config, listen: Option<SocketAddr>) -> Result<(), String> {
    let addr = listen.unwrap_or(config.server.listen);
    let grace = config.server.shutdown_grace;
    for w in &config.warnings {
        tracing::warn!("config: {w}");
    }
    if config.keys.is_open() {
        tracing::warn!(
            "no [[keys]] configured: the gateway is OPEN, every request is team \"default\""
        );
    }
    tracing::info!(
        providers = config.providers.len(),
        keys = config.keys.len(),
        prices = config.prices.len(),
        prices_as_of = config.prices.as_of(),
        "config loaded"
    );
    let metrics = Metrics::new(&config.metrics.options);
    let ledger = Ledger::open(&config.ledger, metrics.clone()).map_err(|e| e.to_string())?;
    let gateway = Gateway::with_ledger(config, metrics, ledger.clone())?;
    gateway.restore_budgets().await;
    // On this (background) runtime, never on the workers serving requests.
    gateway.billing.start();
    wait_for_credentials(&gateway.config.providers, Duration::from_secs(10)).await;
    let listener = bind(addr).await?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(maddr) = gateway.config.metrics.listen {
        let ml = bind(maddr).await?;
        tracing::info!(addr = %ml.local_addr().map_err(|e| e.to_string())?, "metrics listener");
        let routes = server::metrics_routes(gateway.clone());
        let mut rx = stop_rx.clone();
        tasks.push(tokio::spawn(server::run(
            ml,
            routes,
            async move {
                let _ = rx.changed().await;
            },
            grace,
        )));
    }
    announce(local);
    let workers = gateway.config.server.workers;
    tracing::info!(addr = %local, workers, "gateway listening");
    let routes = server::main_routes(gateway.clone());
    let served = server::run_workers(listener, routes, workers, shutdown_signal(), grace).await;
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    gateway.billing.close().await;
    // Every request has finished and settled: the writer writes what it holds, then exits.
    ledger.close().await;
    served
}

/// Gives providers whose credentials are fetched (Vertex AI's service-account tokens) up to
/// `limit` to have them before the listener opens, so that the first requests are not refused
/// for want of a token (a local exchange takes milliseconds, Google's ~100 ms). Past it the
/// gateway serves anyway and says which providers refuse requests and why.
async fn wait_for_credentials(
    providers: &[std::sync::Arc<dyn tollgate::providers::Provider>],
    limit: Duration,
) {
    let start = tokio::time::Instant::now();
    loop {
        let waiting = providers.iter().filter(|p| p.unavailable().is_some());
        if waiting.clone().next().is_none() {
            return;
        }
        if start.elapsed() >= limit {
            for p in waiting {
                let reason = p.unavailable().unwrap_or_default();
                tracing::warn!(
                    provider = p.name(),
                    "serving without upstream credentials (requests are answered 502 until they arrive): {reason}"
                );
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config, listen } => {
            let cfg = Config::load(&config)
                .map_err(|e| format!("invalid config {}:\n{e}", config.display()))?;
            serve(cfg, listen).await
        }
        Command::Check { .. } => unreachable!("handled before the runtime starts"),
        Command::Prices { .. } | Command::Cache { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Usage {
            config,
            ledger_url,
            from,
            to,
            by,
            csv,
        } => {
            let ledger = match ledger_url {
                Some(url) => tollgate::ledger::LedgerConfig {
                    url,
                    ..Default::default()
                },
                None => Config::load_ledger(&config)
                    .map_err(|e| format!("invalid config {}:\n{e}", config.display()))?,
            };
            let (month_start, month_end) = tollgate::ledger::report::month_of(chrono::Utc::now());
            let query = ReportQuery::parse(
                Some(from.as_deref().unwrap_or(&month_start)),
                Some(to.as_deref().unwrap_or(&month_end)),
                Some(&by),
            )?;
            let report = ledger_cli::usage_report(&ledger, &query).await?;
            let out = if csv {
                report.to_csv()
            } else {
                report.to_table()
            };
            print!("{out}");
            Ok(())
        }
        Command::Reprice {
            config,
            from,
            to,
            dry_run,
        } => {
            let cfg = Config::load(&config)
                .map_err(|e| format!("invalid config {}:\n{e}", config.display()))?;
            let window = ReportQuery::parse(Some(&from), Some(&to), None)?;
            let summary =
                ledger_cli::reprice(&cfg.ledger, &cfg.prices, window.from, window.to, dry_run)
                    .await?;
            print!("{}", summary.to_table(dry_run));
            Ok(())
        }
        Command::Billing {
            config,
            from,
            to,
            by,
            csv,
        } => {
            let cfg = Config::load(&config)
                .map_err(|e| format!("invalid config {}:\n{e}", config.display()))?;
            print!(
                "{}",
                billing_cli::billing_report(&cfg, &from, &to, &by, csv).await?
            );
            Ok(())
        }
        Command::LedgerBench {
            url,
            rows,
            batch,
            keys,
        } => ledger_cli::ledger_bench(&url, rows, batch, keys).await,
        Command::Sim {
            listen,
            delay_ms,
            tokens_per_second,
            output_tokens,
            max_output_tokens,
        } => {
            let listener = bind(listen).await?;
            announce(listener.local_addr().map_err(|e| e.to_string())?);
            let opts = sim::SimOptions {
                delay: Duration::from_millis(delay_ms),
                tokens_per_second,
                default_output_tokens: output_tokens,
                max_output_tokens,
            };
            sim::serve(listener, opts, shutdown_signal()).await;
            Ok(())
        }
        Command::Demo { listen, rate } => {
            let sim_listener = bind("127.0.0.1:0".parse().map_err(|_| "address")?).await?;
            let sim_addr = sim_listener.local_addr().map_err(|e| e.to_string())?;
            let opts = sim::SimOptions {
                delay: Duration::from_millis(30),
                tokens_per_second: 200,
                default_output_tokens: 24,
                ..sim::SimOptions::default()
            };
            tokio::spawn(sim::serve(sim_listener, opts, std::future::pending()));
            let text = demo::demo_config(&sim_addr.to_string(), &listen.to_string());
            let cfg = Config::from_toml(&text, &tollgate::config::env::ProcessEnv)
                .map_err(|e| format!("demo config: {e}"))?;
            eprintln!(
                "Tollgate demo: simulated provider on {sim_addr}; gateway on http://{listen}\n\
                 metrics: curl http://{listen}/metrics\n\
                 usage:   curl -H 'Authorization: Bearer tg-demo-admin' 'http://{listen}/api/v1/usage?from=2026-01-01&to=2100-01-01&group_by=team,model'\n\
                 try:     curl http://{listen}/v1/chat/completions -H 'Authorization: Bearer tg-demo-search' \\\n\
                 \x20          -H 'Content-Type: application/json' -d '{{\"model\":\"gpt-4o-mini\",\"messages\":[{{\"role\":\"user\",\"content\":\"hi\"}}]}}'"
            );
            if rate > 0 {
                tokio::spawn(demo::traffic(listen.to_string(), rate));
            }
            serve(cfg, None).await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs(&cli.log, cli.log_json);
    if let Command::Cache {
        command:
            CacheCommand::MeasureIndex {
                dims,
                entries,
                queries,
            },
    } = &cli.command
    {
        println!("dims {dims}, {queries} near-duplicate queries per size");
        println!("entries   exact µs   graph µs   build ms   recall@1");
        for m in tollgate::cache::index::measure(*dims, entries, (*queries).max(1)) {
            println!(
                "{:>7} {:>10.1} {:>10.1} {:>10.0} {:>10.3}",
                m.entries, m.exact_us, m.ann_us, m.build_ms, m.recall
            );
        }
        return ExitCode::SUCCESS;
    }
    if let Command::Prices { command } = cli.command {
        return match prices_cli::run(command) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(1)
            }
        };
    }
    if let Command::Check { config } = &cli.command {
        return match Config::load(config) {
            Ok(cfg) => {
                let ledger = if cfg.ledger.enabled {
                    tollgate::ledger::config::redact(&cfg.ledger.url)
                } else {
                    "off".into()
                };
                println!(
                    "{}: OK ({} providers, {} keys, {} priced model ids, prices as of {}, ledger {ledger}, {} billing sources)",
                    config.display(),
                    cfg.providers.len(),
                    cfg.keys.len(),
                    cfg.prices.len(),
                    cfg.prices.as_of(),
                    cfg.billing.len()
                );
                for w in &cfg.warnings {
                    eprintln!("  warning: {w}");
                }
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprintln!("{}: {} error(s)", config.display(), errors.0.len());
                for e in &errors.0 {
                    eprintln!("  {e}");
                }
                ExitCode::from(1)
            }
        };
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if matches!(cli.command, Command::Serve { .. } | Command::Demo { .. }) {
        // Requests are served by the worker threads of `server::workers`; this runtime only
        // accepts connections and runs the background tasks (ledger writer, Redis, metrics
        // listener, the demo's simulator).
        builder.worker_threads(1);
    }
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}
