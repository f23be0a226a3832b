//! The results file (schema `tollgate-bench/1`, documented in bench/README.md), the table of
//! figures with their ratios to nginx and to direct, and the targets.

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

/// Version of the JSON layout; bump on incompatible changes.
pub const SCHEMA: &str = "tollgate-bench/1";

/// One benchmark run.
#[derive(Debug, Serialize, Deserialize)]
pub struct Results {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// `full` or `smoke`.
    pub mode: String,
    /// UTC, RFC 3339.
    pub started_at: String,
    /// UTC, RFC 3339.
    pub finished_at: String,
    /// `git describe --always --dirty` of the tree, if known.
    pub git: Option<String>,
    /// The machine.
    pub machine: Machine,
    /// What was run.
    pub settings: Settings,
    /// One entry per path: direct, nginx, tollgate, litellm.
    pub paths: Vec<PathResult>,
    /// The shapes section (other shapes of traffic through a gateway of their own); null when
    /// it did not run.
    #[serde(default)]
    pub shapes: Option<crate::shapes::Shapes>,
    /// Every figure with its ratios, in table order.
    pub figures: Vec<Figure>,
    /// The targets, evaluated on this run.
    pub targets: Vec<Target>,
}

/// The machine the run was on.
#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// `uname -r`.
    pub kernel: String,
    /// 1-minute load average just before the run.
    pub load_before: f64,
    /// 1-minute load average at its end (it counts the benchmark's own processes too, so
    /// expect about 2; much more means something else was running).
    pub load_after: f64,
    /// Whether a compiler was running at the start.
    pub rustc_before: bool,
}

/// The run's parameters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// Closed-loop connection counts.
    pub closed_connections: Vec<usize>,
    /// Seconds per closed-loop run.
    pub closed_secs: f64,
    /// Fixed rates, requests/s.
    pub rates: Vec<u32>,
    /// Seconds per fixed-rate run (per path and rate, over all rounds).
    pub fixed_secs: f64,
    /// Interleaved rounds each fixed-rate run is split into; latencies pooled.
    #[serde(default = "one")]
    pub fixed_rounds: usize,
    /// Connections the fixed-rate load uses.
    pub fixed_connections: usize,
    /// Concurrent streams.
    pub streams: usize,
    /// Simulated stream cadence, tokens/s.
    pub stream_tokens_per_second: u32,
    /// Output tokens per stream.
    pub stream_output_tokens: u64,
    /// Seconds of the streaming run after its ramp.
    pub stream_secs: f64,
    /// Virtual key counts of the scaling runs.
    pub scaling_keys: Vec<usize>,
    /// Interleaved rounds of the closed-loop scaling runs (each `closed_secs` long).
    pub scaling_rounds: usize,
    /// Rate of the scaling runs.
    pub scaling_rate: u32,
    /// Worker threads of the gateway; nginx gets as many worker processes.
    pub workers: usize,
    /// Request body bytes (chat completion, not streamed).
    pub request_bytes: usize,
    /// Response body bytes from the simulated provider.
    pub response_bytes: usize,
    /// Gateway sections enabled from the templates.
    pub gateway_limits: bool,
    /// Gateway sections enabled from the templates.
    pub gateway_ledger: bool,
    /// What `tollgate check` said of the main gateway's config (what it has on).
    #[serde(default)]
    pub gateway_check: String,
}

/// Everything measured on one path.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PathResult {
    /// `direct`, `nginx`, `tollgate` or `litellm`.
    pub name: String,
    /// Whether the path ran.
    pub available: bool,
    /// Why not, or anything notable.
    pub note: Option<String>,
    /// Closed-loop runs.
    pub closed_loop: Vec<Closed>,
    /// Fixed-rate runs.
    pub fixed_rate: Vec<Fixed>,
    /// The streaming run.
    pub streaming: Option<Streaming>,
    /// Fixed-rate runs with many virtual keys (Tollgate only).
    pub scaling: Vec<Fixed>,
    /// Closed-loop runs with many virtual keys, several interleaved rounds summed (Tollgate
    /// only): the steadiest measure of cost per request.
    pub scaling_closed: Vec<Closed>,
    /// The gateway's own view, from its /metrics (Tollgate only).
    pub gateway: Option<GatewayView>,
}

/// A closed-loop run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Closed {
    /// Connections.
    pub connections: usize,
    /// Distinct virtual keys the requests rotate over.
    pub keys: usize,
    /// Measured seconds.
    pub secs: f64,
    /// 2xx responses.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// ok / secs.
    pub rps: f64,
    /// Latency (not corrected; closed loop), µs.
    pub latency_us: Percentiles,
    /// CPU of the proxy's process tree per request, µs (none for direct).
    pub proxy_cpu_us_per_req: Option<f64>,
    /// CPU of the simulated provider per request, µs.
    pub sim_cpu_us_per_req: f64,
    /// CPU of the load generator per request, µs.
    pub loadgen_cpu_us_per_req: f64,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// A fixed-rate run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Fixed {
    /// Target rate, requests/s.
    pub rate: u32,
    /// Distinct virtual keys the requests rotate over.
    pub keys: usize,
    /// Requests scheduled.
    pub scheduled: u64,
    /// 2xx responses.
    pub ok: u64,
    /// Failures.
    pub errors: u64,
    /// Scheduled but not answered before the hard stop.
    pub incomplete: u64,
    /// ok / elapsed.
    pub achieved_rps: f64,
    /// From scheduled send to full answer (coordinated omission corrected), µs.
    pub latency_us: Percentiles,
    /// Lateness of the pacer (floor of every latency), µs.
    pub pacer_lag_us: Percentiles,
    /// CPU of the proxy per request, µs.
    pub proxy_cpu_us_per_req: Option<f64>,
    /// CPU of the simulated provider per request, µs.
    pub sim_cpu_us_per_req: f64,
    /// Resident memory of the proxy after the run, bytes.
    pub proxy_rss_bytes: Option<u64>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// The streaming run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Streaming {
    /// Concurrent streams targeted.
    pub streams: usize,
    /// The most open at one time.
    pub max_open: u64,
    /// Streams begun.
    pub started: u64,
    /// Streams read to the end.
    pub completed: u64,
    /// Failed streams.
    pub errors: u64,
    /// Time to first byte of the body, µs, streams begun with all slots open.
    pub ttft_us: Percentiles,
    /// Largest resident memory of the proxy seen while the streams were open, bytes.
    pub proxy_rss_bytes: Option<u64>,
    /// Open streams when that memory was sampled.
    pub open_at_rss: u64,
    /// CPU of the proxy per stream, µs.
    pub proxy_cpu_us_per_stream: Option<f64>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// What the gateway itself reported.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GatewayView {
    /// Sum of `llm_gateway_requests_total`.
    pub requests: f64,
    /// Mean of `llm_gateway_overhead_seconds`, µs.
    pub overhead_mean_us: Option<f64>,
    /// Sum of `llm_gateway_cost_usd_total`.
    pub cost_usd: f64,
}

/// One figure of one path with its ratios.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    /// Stable identifier, e.g. `closed.c64.rps`, `fixed.r1000.p99_us`.
    pub id: String,
    /// Human label for the table.
    pub label: String,
    /// Path name.
    pub path: String,
    /// The value.
    pub value: f64,
    /// value / nginx's value of the same figure.
    pub vs_nginx: Option<f64>,
    /// value / direct's value of the same figure.
    pub vs_direct: Option<f64>,
    /// value - direct's value (latencies only), µs.
    pub added_vs_direct: Option<f64>,
}

/// One target of the issue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// What is promised.
    pub name: String,
    /// Measured value.
    pub value: Option<f64>,
    /// The bound.
    pub bound: String,
    /// Met, missed, or not measurable in this run (null).
    pub met: Option<bool>,
}

/// Accumulates figures; ratios are filled in once every path has reported.
#[derive(Default)]
pub struct Figures(pub Vec<Figure>);

impl Figures {
    /// Adds one figure.
    pub fn add(&mut self, id: String, label: String, path: &str, value: f64) {
        self.0.push(Figure {
            id,
            label,
            path: path.to_string(),
            value,
            vs_nginx: None,
            vs_direct: None,
            added_vs_direct: None,
        });
    }

    /// Fills in ratios against the same figure id on nginx and direct. Scaling figures
    /// (`scaling.k*.<metric>`) compare with the fixed-rate figure at the same rate.
    pub fn finish(mut self) -> Vec<Figure> {
        let find = |figs: &[Figure], path: &str, id: &str| {
            figs.iter()
                .find(|f| f.path == path && f.id == id)
                .map(|f| f.value)
        };
        let snapshot = self.0.clone();
        for f in &mut self.0 {
            let base_id = base_id(&f.id);
            let div = |b: Option<f64>| b.filter(|b| *b != 0.0).map(|b| f.value / b);
            if f.path != "nginx" {
                f.vs_nginx = div(find(&snapshot, "nginx", &base_id));
            }
            if f.path != "direct" {
                let d = find(&snapshot, "direct", &base_id);
                f.vs_direct = div(d);
                if f.id.ends_with("_us") {
                    f.added_vs_direct = d.map(|d| f.value - d);
                }
            }
        }
        self.0
    }
}

/// `scaling.k1000.r5000.p50_us` compares with `fixed.r5000.p50_us`, `scaling.k1000.c64.rps`
/// with `closed.c64.rps`.
fn base_id(id: &str) -> String {
    if let Some(rest) = id.strip_prefix("scaling.")
        && let Some((_, tail)) = rest.split_once('.')
    {
        let section = if tail.starts_with('c') {
            "closed"
        } else {
            "fixed"
        };
        return format!("{section}.{tail}");
    }
    id.to_string()
}

/// The targets, from the figures.
pub fn targets(figs: &[Figure], scaling_keys: &[usize]) -> Vec<Target> {
    let get = |path: &str, id: &str| figs.iter().find(|f| f.path == path && f.id == id);
    let val = |path: &str, id: &str| get(path, id).map(|f| f.value);
    let mut t = Vec::new();
    let mut push = |name: &str, value: Option<f64>, bound: String, ok: Option<bool>| {
        t.push(Target {
            name: name.to_string(),
            value,
            bound,
            met: ok,
        })
    };
    let r = get("tollgate", "closed.c64.rps").and_then(|f| f.vs_nginx);
    push(
        "throughput at 64 connections, Tollgate / nginx",
        r,
        ">= 0.60".into(),
        r.map(|r| r >= 0.6),
    );
    let r = match (
        val("tollgate", "closed.c64.rps"),
        val("litellm", "closed.c64.rps"),
    ) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    push(
        "throughput at 64 connections, Tollgate / LiteLLM",
        r,
        ">= 100".into(),
        r.map(|r| r >= 100.0),
    );
    let r = get("tollgate", "closed.c64.cpu_us").and_then(|f| f.vs_nginx);
    push(
        "CPU per request at 64 connections, Tollgate / nginx",
        r,
        "<= 2.0".into(),
        r.map(|r| r <= 2.0),
    );
    let added = |path: &str, id: &str| get(path, id).and_then(|f| f.added_vs_direct);
    let (tg, ng) = (
        added("tollgate", "fixed.r1000.p50_us"),
        added("nginx", "fixed.r1000.p50_us"),
    );
    push(
        "added p50 at 1k req/s, Tollgate (µs over direct)",
        tg,
        ng.map_or("<= nginx's added p50".into(), |n| {
            format!("<= nginx's added p50 ({n:.0} µs)")
        }),
        tg.zip(ng).map(|(a, b)| a <= b),
    );
    let r = get("tollgate", "fixed.r1000.p99_us").and_then(|f| f.vs_nginx);
    push(
        "p99 at 1k req/s, Tollgate / nginx",
        r,
        "<= 1.2".into(),
        r.map(|r| r <= 1.2),
    );
    let a = added("tollgate", "stream.ttft_p50_us");
    push(
        "streaming: added time to first token at p50 (µs over direct)",
        a,
        "<= 100".into(),
        a.map(|a| a <= 100.0),
    );
    let m = val("tollgate", "stream.rss_mb");
    push(
        "streaming: resident memory with all streams open (MB)",
        m,
        "<= 64".into(),
        m.map(|m| m <= 64.0),
    );
    let costs: Vec<f64> = scaling_keys
        .iter()
        .filter_map(|k| val("tollgate", &format!("scaling.k{k}.c64.cpu_us")))
        .collect();
    let spread = if costs.len() >= 2 {
        let lo = costs.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = costs.iter().cloned().fold(0.0, f64::max);
        (lo > 0.0).then(|| hi / lo - 1.0)
    } else {
        None
    };
    push(
        "CPU per request at 64 connections, spread over the key counts (max/min - 1)",
        spread,
        "<= 0.10".into(),
        spread.map(|s| s <= 0.10),
    );
    t
}

/// The table as Markdown: one row per figure, one column per path; each cell the value and
/// its ratios to nginx and direct.
pub fn table(figs: &[Figure], paths: &[String]) -> String {
    let mut out = String::new();
    out.push_str("| figure |");
    for p in paths {
        out.push_str(&format!(" {p} |"));
    }
    out.push_str("\n| --- |");
    for _ in paths {
        out.push_str(" --- |");
    }
    out.push('\n');
    // Rows in the order of the path with the most figures (sections stay together), then any
    // figure only other paths have.
    let richest = paths
        .iter()
        .max_by_key(|p| figs.iter().filter(|f| &f.path == *p).count());
    let mut ids: Vec<(&str, &str)> = Vec::new();
    let ordered = figs
        .iter()
        .filter(|f| Some(&f.path) == richest)
        .chain(figs.iter());
    for f in ordered {
        if !ids.iter().any(|(i, _)| *i == f.id) {
            ids.push((&f.id, &f.label));
        }
    }
    for (id, label) in ids {
        out.push_str(&format!("| {label} |"));
        for p in paths {
            let cell = figs
                .iter()
                .find(|f| f.id == id && &f.path == p)
                .map_or("–".to_string(), cell);
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

fn cell(f: &Figure) -> String {
    let mut s = number(f.value);
    let mut extra = Vec::new();
    if let Some(a) = f.added_vs_direct {
        extra.push(format!("{}{}", if a >= 0.0 { "+" } else { "" }, number(a)));
    }
    if let Some(r) = f.vs_nginx {
        extra.push(format!("{r:.2}×ng"));
    }
    if let Some(r) = f.vs_direct {
        extra.push(format!("{r:.2}×d"));
    }
    if !extra.is_empty() {
        s.push_str(&format!(" ({})", extra.join(", ")));
    }
    s
}

fn number(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        let n = v.round() as i64;
        let digits = n.unsigned_abs().to_string();
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if n < 0 {
            format!("-{grouped}")
        } else {
            grouped
        }
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Checks a results file: it parses as [`Results`], has the schema, and every available path
/// answered in every section it ran. Returns the problems found.
pub fn validate(text: &str, need_paths: &[&str], need_shapes: bool) -> Vec<String> {
    let r: Results = match serde_json::from_str(text) {
        Ok(r) => r,
        Err(e) => return vec![format!("not a valid results file: {e}")],
    };
    let mut problems = Vec::new();
    if r.schema != SCHEMA {
        problems.push(format!("schema is {:?}, expected {SCHEMA:?}", r.schema));
    }
    for name in need_paths {
        let Some(p) = r.paths.iter().find(|p| p.name == *name) else {
            problems.push(format!("path {name} missing"));
            continue;
        };
        if !p.available {
            problems.push(format!("path {name} did not run: {:?}", p.note));
            continue;
        }
        for c in &p.closed_loop {
            if c.ok == 0 {
                problems.push(format!(
                    "{name}: closed loop c{} got no answer",
                    c.connections
                ));
            }
        }
        for c in &p.scaling_closed {
            if c.ok == 0 {
                problems.push(format!(
                    "{name}: scaling closed loop, {} keys, no answer",
                    c.keys
                ));
            }
        }
        for f in p.fixed_rate.iter().chain(&p.scaling) {
            if f.ok == 0 {
                problems.push(format!(
                    "{name}: fixed rate {} (keys {}) got no answer",
                    f.rate, f.keys
                ));
            }
        }
        match &p.streaming {
            _ if r.settings.streams == 0 => {}
            Some(s) if s.completed > 0 && s.ttft_us.count > 0 => {}
            _ => problems.push(format!("{name}: no stream completed")),
        }
        if p.closed_loop.len() != r.settings.closed_connections.len()
            || p.fixed_rate.len() != r.settings.rates.len()
        {
            problems.push(format!("{name}: a section is missing runs"));
        }
    }
    if let Some(tg) = r.paths.iter().find(|p| p.name == "tollgate") {
        if tg.available
            && (tg.scaling.len() != r.settings.scaling_keys.len()
                || tg.scaling_closed.len() != r.settings.scaling_keys.len())
        {
            problems.push("tollgate: scaling runs missing".into());
        }
        let ran = !r.settings.closed_connections.is_empty() || !r.settings.rates.is_empty();
        if tg.available && ran && tg.gateway.as_ref().is_none_or(|g| g.requests <= 0.0) {
            problems.push("tollgate: its metrics counted no request".into());
        }
    }
    if need_shapes {
        problems.extend(crate::shapes::problems(r.shapes.as_ref()));
    }
    if r.figures.is_empty() || r.targets.is_empty() {
        problems.push("no figures or targets".into());
    }
    problems
}

fn one() -> usize {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_and_scaling_baseline() {
        let mut f = Figures::default();
        f.add("fixed.r5000.p50_us".into(), "p50".into(), "direct", 100.0);
        f.add("fixed.r5000.p50_us".into(), "p50".into(), "nginx", 200.0);
        f.add("fixed.r5000.p50_us".into(), "p50".into(), "tollgate", 250.0);
        f.add(
            "scaling.k1000.r5000.p50_us".into(),
            "p50".into(),
            "tollgate",
            300.0,
        );
        let figs = f.finish();
        let tg = &figs[2];
        assert_eq!(tg.vs_nginx, Some(1.25));
        assert_eq!(tg.vs_direct, Some(2.5));
        assert_eq!(tg.added_vs_direct, Some(150.0));
        assert_eq!(figs[3].vs_nginx, Some(1.5));
        assert_eq!(figs[3].added_vs_direct, Some(200.0));
        assert!(figs[0].vs_direct.is_none());
        let t = table(&figs, &["direct".into(), "nginx".into(), "tollgate".into()]);
        assert!(t.contains("250 (+150, 1.25×ng, 2.50×d)"), "{t}");
    }

    #[test]
    fn validate_finds_silent_paths() {
        let settings = Settings {
            closed_connections: vec![16],
            closed_secs: 1.0,
            rates: vec![],
            fixed_secs: 1.0,
            fixed_rounds: 1,
            fixed_connections: 1,
            streams: 0,
            stream_tokens_per_second: 20,
            stream_output_tokens: 4,
            stream_secs: 1.0,
            scaling_keys: vec![],
            scaling_rounds: 1,
            scaling_rate: 1,
            workers: 2,
            request_bytes: 1,
            response_bytes: 1,
            gateway_limits: false,
            gateway_ledger: false,
            gateway_check: String::new(),
        };
        let closed = |ok| Closed {
            connections: 16,
            keys: 10,
            secs: 1.0,
            ok,
            errors: 0,
            rps: ok as f64,
            latency_us: Percentiles::default(),
            proxy_cpu_us_per_req: None,
            sim_cpu_us_per_req: 0.0,
            loadgen_cpu_us_per_req: 0.0,
            first_error: None,
        };
        let path = |name: &str, ok| PathResult {
            name: name.into(),
            available: true,
            closed_loop: vec![closed(ok)],
            ..Default::default()
        };
        let results = |paths| Results {
            schema: SCHEMA.into(),
            mode: "smoke".into(),
            started_at: String::new(),
            finished_at: String::new(),
            git: None,
            machine: Machine {
                cores: 2,
                kernel: String::new(),
                load_before: 0.0,
                load_after: 0.0,
                rustc_before: false,
            },
            settings: settings.clone(),
            paths,
            shapes: None,
            figures: vec![Figure {
                id: "x".into(),
                label: "x".into(),
                path: "direct".into(),
                value: 1.0,
                vs_nginx: None,
                vs_direct: None,
                added_vs_direct: None,
            }],
            targets: vec![Target {
                name: "x".into(),
                value: None,
                bound: String::new(),
                met: None,
            }],
        };
        let good = serde_json::to_string(&results(vec![path("direct", 5)])).expect("json");
        assert!(validate(&good, &["direct"], false).is_empty());
        let silent = serde_json::to_string(&results(vec![path("direct", 0)])).expect("json");
        assert_eq!(validate(&silent, &["direct"], false).len(), 1);
        assert_eq!(validate(&good, &["direct", "nginx"], false).len(), 1);
        assert_eq!(validate("{}", &["direct"], false).len(), 1);
        // A shapes section that should have run and did not, or ran empty.
        assert_eq!(
            validate(&good, &["direct"], true),
            ["shapes: section missing"]
        );
        let mut empty = results(vec![path("direct", 5)]);
        empty.shapes = Some(crate::shapes::Shapes::default());
        let empty = serde_json::to_string(&empty).expect("json");
        let problems = validate(&empty, &["direct"], true);
        assert!(problems.len() >= 4, "{problems:?}");
        assert!(
            problems.iter().any(|p| p.contains("mcp tollgate")),
            "{problems:?}"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(number(28123.4), "28,123");
        assert_eq!(number(-1234.0), "-1,234");
        assert_eq!(number(42.25), "42.2");
        assert_eq!(number(1.234), "1.23");
    }
}
