//! `tollgate-bench`: the same workload straight to the simulated provider, through nginx,
//! through Tollgate and (if installed) through LiteLLM; closed-loop throughput and CPU per
//! request, fixed-rate latency corrected for coordinated omission, time to first token with
//! many open streams, cost per request over 10 to 10,000 virtual keys, and other shapes of
//! traffic (Bedrock event streams, translated streams, MCP tool calls). Prints a table,
//! writes bench/results/<timestamp>.json (schema in bench/README.md). `--smoke` does all of it
//! in a few seconds and validates the file; it asserts no performance figure.

#![forbid(unsafe_code)]

mod load;
mod procs;
mod report;
mod run;
mod setup;
mod shapes;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line options. Every duration and count has a default for the full run and a
/// smaller one for `--smoke`.
#[derive(Parser, Debug)]
#[command(
    name = "tollgate-bench",
    about = "Tollgate vs direct, nginx and LiteLLM"
)]
pub struct Args {
    /// A few seconds through every path; validates the results file; no thresholds.
    #[arg(long)]
    pub smoke: bool,
    /// Where the results file goes (default bench/results; a temporary directory for --smoke).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// The tollgate binary of the gateway under test (default: beside this one).
    #[arg(long, env = "TOLLGATE_BIN")]
    pub tollgate_bin: Option<PathBuf>,
    /// The tollgate binary whose `sim` serves as the provider (default: beside this one; it
    /// needs the `x-sim-tokens-per-second` header, so it may differ from --tollgate-bin).
    #[arg(long)]
    pub sim_bin: Option<PathBuf>,
    /// Template directory (default bench/templates of this source tree).
    #[arg(long)]
    pub templates: Option<PathBuf>,
    /// Measure the gateway without its rate limits (by default every key has limits.toml's
    /// and key-limits.toml's generous limits: each request is checked, none refused).
    #[arg(long)]
    pub no_limits: bool,
    /// Measure the gateway without its usage ledger (by default ledger.toml: SQLite in the
    /// run's scratch directory).
    #[arg(long)]
    pub no_ledger: bool,
    /// Accepted for older command lines: limits and ledger are on by default.
    #[arg(long, hide = true, conflicts_with = "no_limits")]
    pub limits: bool,
    /// Accepted for older command lines: limits and ledger are on by default.
    #[arg(long, hide = true, conflicts_with = "no_ledger")]
    pub ledger: bool,
    /// LiteLLM proxy: auto (if `litellm` is on PATH, not in smoke mode), on, off.
    #[arg(long, default_value = "auto")]
    pub litellm: String,
    /// Paths to measure, of direct, nginx, tollgate, litellm (litellm still only if installed
    /// or `--litellm on`). Ratios need direct and nginx.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,nginx,tollgate,litellm"
    )]
    pub paths: Vec<String>,
    /// Sections to run, of closed, fixed, stream, scaling, shapes (e.g. `--paths tollgate
    /// --sections closed --closed-secs 20` to profile the gateway under load). `shapes` needs
    /// the tollgate path.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "closed,fixed,stream,scaling,shapes"
    )]
    pub sections: Vec<String>,
    /// Closed-loop connection counts.
    #[arg(long, value_delimiter = ',')]
    pub connections: Option<Vec<usize>>,
    /// Seconds per closed-loop run.
    #[arg(long)]
    pub closed_secs: Option<f64>,
    /// Fixed rates, requests/s.
    #[arg(long, value_delimiter = ',')]
    pub rates: Option<Vec<u32>>,
    /// Seconds per fixed-rate run.
    #[arg(long)]
    pub fixed_secs: Option<f64>,
    /// Connections of the fixed-rate load.
    #[arg(long)]
    pub fixed_connections: Option<usize>,
    /// Interleaved rounds of each fixed-rate run (`fixed_secs` is split over them; the
    /// rounds' latencies are pooled): run-to-run drift then touches every path alike.
    #[arg(long)]
    pub fixed_rounds: Option<usize>,
    /// Concurrent streams.
    #[arg(long)]
    pub streams: Option<usize>,
    /// Stream cadence of the simulated provider, tokens/s.
    #[arg(long)]
    pub stream_tps: Option<u32>,
    /// Output tokens per stream.
    #[arg(long)]
    pub stream_tokens: Option<u64>,
    /// Seconds of the streaming run after its ramp.
    #[arg(long)]
    pub stream_secs: Option<f64>,
    /// Virtual key counts of the scaling runs.
    #[arg(long, value_delimiter = ',')]
    pub scaling_keys: Option<Vec<usize>>,
    /// Rate of the scaling runs, requests/s.
    #[arg(long)]
    pub scaling_rate: Option<u32>,
    /// Concurrent streams of each stream shape (shapes section).
    #[arg(long)]
    pub shapes_streams: Option<usize>,
    /// Stream cadence of the shapes section, tokens/s.
    #[arg(long)]
    pub shapes_tps: Option<u32>,
    /// Output tokens per stream of the shapes section.
    #[arg(long)]
    pub shapes_tokens: Option<u64>,
    /// Seconds of each stream shape after its ramp.
    #[arg(long)]
    pub shapes_secs: Option<f64>,
    /// MCP `tools/call` per second (shapes section).
    #[arg(long)]
    pub mcp_rate: Option<u32>,
    /// Seconds of the MCP runs per path (split into `--fixed-rounds` interleaved rounds).
    #[arg(long)]
    pub mcp_secs: Option<f64>,
    /// Worker threads of the gateway and the simulator, worker processes of nginx
    /// (default: the number of cores).
    #[arg(long)]
    pub workers: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The pacer sleeps between requests; the default 50 µs timer slack would be a 50 µs floor
    // under every latency. Threads started from here on inherit the finer slack.
    let _ = std::fs::write("/proc/self/timerslack_ns", "1000");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run::run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tollgate-bench: {e}");
            ExitCode::from(1)
        }
    }
}
