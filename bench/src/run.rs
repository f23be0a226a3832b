//! One benchmark run, in order: start the simulated provider and every proxy in front of it;
//! check each answers; then each measurement goes through every path in turn (direct, nginx,
//! tollgate, litellm), so slow drift of the shared machine touches all paths alike; then the
//! scaling runs with fresh gateways of 10..10,000 keys; then the table, targets and JSON.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::Args;
use crate::load::{self, OpenStreams, Workload};
use crate::procs::{self, Proc};
use crate::report::{
    self, Closed, Figures, Fixed, GatewayView, Machine, PathResult, Results, Settings, Streaming,
};
use crate::setup::{self, GatewayOptions};
use crate::shapes::{self, Shapes};
use crate::stats::Percentiles;

/// Virtual keys of the main gateway; requests rotate over them on every path.
const MAIN_KEYS: usize = 10;

/// One path under test: where to send, and the proxy process to watch (none for direct).
struct Path_ {
    name: &'static str,
    addr: std::net::SocketAddr,
    proc: Option<Proc>,
    result: PathResult,
}

struct Plan {
    s: Settings,
    warm: Duration,
    grace: Duration,
    shapes: Option<shapes::Plan>,
}

fn plan(a: &Args, workers: usize) -> Plan {
    let smoke = a.smoke;
    let pick =
        |v: Option<f64>, full: f64, small: f64| v.unwrap_or(if smoke { small } else { full });
    let stream_tps = a.stream_tps.unwrap_or(if smoke { 200 } else { 20 });
    let stream_tokens = a.stream_tokens.unwrap_or(if smoke { 10 } else { 40 });
    let on = |x: &str| a.sections.iter().any(|s| s == x);
    let streams = a.streams.unwrap_or(if smoke { 20 } else { 1000 });
    Plan {
        s: Settings {
            closed_connections: if on("closed") {
                a.connections.clone().unwrap_or(vec![16, 64])
            } else {
                Vec::new()
            },
            closed_secs: pick(a.closed_secs, 5.0, 0.3),
            rates: if on("fixed") {
                a.rates.clone().unwrap_or(vec![1000, 5000])
            } else {
                Vec::new()
            },
            fixed_secs: pick(a.fixed_secs, 10.0, 0.4),
            fixed_rounds: a.fixed_rounds.unwrap_or(if smoke { 1 } else { 5 }).max(1),
            fixed_connections: a.fixed_connections.unwrap_or(64),
            streams: if on("stream") { streams } else { 0 },
            stream_tokens_per_second: stream_tps,
            stream_output_tokens: stream_tokens,
            stream_secs: pick(a.stream_secs, 6.0, 0.4),
            scaling_keys: if on("scaling") {
                a.scaling_keys.clone().unwrap_or(if smoke {
                    vec![10, 100]
                } else {
                    vec![10, 1000, 10000]
                })
            } else {
                Vec::new()
            },
            scaling_rate: a.scaling_rate.unwrap_or(5000),
            scaling_rounds: if smoke { 1 } else { 3 },
            gateway_check: String::new(),
            workers,
            request_bytes: setup::chat_body(false, 64).len(),
            response_bytes: 0,
            gateway_limits: !a.no_limits,
            gateway_ledger: !a.no_ledger,
        },
        warm: Duration::from_secs_f64(if smoke { 0.2 } else { 1.0 }),
        grace: Duration::from_secs_f64(if smoke { 1.0 } else { 3.0 }),
        // 200 streams at 100 tokens/s: ~20,000 events/s, the main stream section's rate
        // (1,000 at 20/s), in 5 s a shape; tools/call at 1,000/s as the fixed-rate section.
        shapes: (on("shapes") && a.paths.iter().any(|p| p == "tollgate")).then(|| shapes::Plan {
            streams: a.shapes_streams.unwrap_or(if smoke { 10 } else { 200 }),
            tps: a.shapes_tps.unwrap_or(if smoke { 400 } else { 100 }),
            tokens: a.shapes_tokens.unwrap_or(if smoke { 10 } else { 40 }),
            secs: pick(a.shapes_secs, 5.0, 0.4),
            mcp_rate: a.mcp_rate.unwrap_or(if smoke { 200 } else { 1000 }),
            mcp_secs: pick(a.mcp_secs, 10.0, 0.4),
            warm: Duration::from_secs_f64(if smoke { 0.2 } else { 1.0 }),
            grace: Duration::from_secs_f64(if smoke { 1.0 } else { 3.0 }),
        }),
    }
}

/// Runs the benchmark.
pub async fn run(a: Args) -> Result<(), String> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let templates = a.templates.clone().unwrap_or(repo.join("bench/templates"));
    let beside = std::env::current_exe()
        .map_err(|e| e.to_string())?
        .with_file_name("tollgate");
    // The gateway runs in its scratch directory: a relative `--tollgate-bin` must not depend
    // on where it starts.
    let absolute = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or(p.clone());
    let bin = a.tollgate_bin.as_ref().map_or(beside.clone(), absolute);
    let sim_bin = a.sim_bin.as_ref().map_or(beside, absolute);
    let workers = a
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let Plan {
        mut s,
        warm,
        grace,
        shapes: shapes_plan,
    } = plan(&a, workers);
    let started_at = rfc3339(SystemTime::now());
    let (load_before, rustc) = procs::machine_busy();
    if !a.smoke && (rustc || load_before > 1.0) {
        eprintln!(
            "warning: the machine is busy (load {load_before:.2}{}): figures will be noisy",
            if rustc { ", rustc running" } else { "" }
        );
    }
    let dir = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let bins = Bins {
        gateway: &bin,
        sim: &sim_bin,
    };
    let outcome = measure(
        &a,
        bins,
        &templates,
        &dir,
        &mut s,
        grace,
        warm,
        shapes_plan.as_ref(),
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
    let (paths, shapes) = outcome?;

    // Figures, targets, table, file.
    let mut figs = figures(&paths, &s);
    if let Some(sh) = &shapes {
        shapes::figures(sh, &mut figs);
    }
    let figs = figs.finish();
    let targets = report::targets(&figs, &s.scaling_keys);
    let names: Vec<String> = paths
        .iter()
        .filter(|p| p.available)
        .map(|p| p.name.clone())
        .collect();
    let results = Results {
        schema: report::SCHEMA.to_string(),
        mode: if a.smoke { "smoke" } else { "full" }.to_string(),
        started_at,
        finished_at: rfc3339(SystemTime::now()),
        git: git_describe(&repo),
        machine: Machine {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            load_before,
            load_after: procs::machine_busy().0,
            rustc_before: rustc,
        },
        settings: s,
        paths,
        shapes,
        figures: figs,
        targets,
    };
    // A smoke run's figures (debug build, tiny runs) mean nothing: a table of them, and of
    // targets "missed", would only be read as a regression. It says that it ran, once valid.
    if !a.smoke {
        print!("{}", figures_and_targets(&results, &names));
    }
    for p in results.paths.iter().filter(|p| p.note.is_some()) {
        println!("note: {}: {}", p.name, p.note.as_deref().unwrap_or(""));
    }
    let out = match &a.out {
        Some(o) => o.clone(),
        None if a.smoke => std::env::temp_dir(),
        None => repo.join("bench/results"),
    };
    std::fs::create_dir_all(&out).map_err(|e| e.to_string())?;
    let file = out.join(format!(
        "{}{}.json",
        results.started_at.replace(':', "-"),
        if a.smoke { "-smoke" } else { "" }
    ));
    let text = serde_json::to_string_pretty(&results).map_err(|e| e.to_string())?;
    std::fs::write(&file, &text).map_err(|e| e.to_string())?;
    println!("\nresults: {}", file.display());
    let need: Vec<&str> = ["direct", "nginx", "tollgate"]
        .into_iter()
        .filter(|p| a.paths.iter().any(|x| x == p))
        .collect();
    let problems = report::validate(&text, &need, shapes_plan.is_some());
    if problems.is_empty() {
        println!("results file valid ({})", report::SCHEMA);
        if a.smoke {
            println!("{}", smoke_summary(&results));
        }
        Ok(())
    } else {
        Err(format!(
            "results file invalid:\n  {}",
            problems.join("\n  ")
        ))
    }
}

/// The figures table and the targets table of a full run.
fn figures_and_targets(results: &Results, names: &[String]) -> String {
    use std::fmt::Write;
    let mut out = format!("\n{}\n", report::table(&results.figures, names));
    out.push_str(
        "(cells: value (+added over direct for latencies, ×nginx, ×direct); µs, req/s, MB)\n\n",
    );
    out.push_str("| target | measured | bound | met |\n| --- | --- | --- | --- |\n");
    for t in &results.targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "n/a",
        };
        let v = t.value.map_or("–".into(), |v| format!("{v:.2}"));
        let _ = writeln!(out, "| {} | {v} | {} | {met} |", t.name, t.bound);
    }
    out
}

/// The one line a smoke run ends with.
fn smoke_summary(results: &Results) -> String {
    let ran: Vec<&str> = results
        .paths
        .iter()
        .filter(|p| p.available)
        .map(|p| p.name.as_str())
        .collect();
    format!("smoke run ok ({})", ran.join(", "))
}

/// The binaries: the gateway under test and the simulated provider.
#[derive(Clone, Copy)]
struct Bins<'a> {
    gateway: &'a Path,
    sim: &'a Path,
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    a: &Args,
    bins: Bins<'_>,
    templates: &Path,
    dir: &Path,
    s: &mut Settings,
    grace: Duration,
    warm: Duration,
    shapes_plan: Option<&shapes::Plan>,
) -> Result<(Vec<PathResult>, Option<Shapes>), String> {
    let bin = bins.gateway;
    let sim = setup::start_sim(bins.sim, s.workers)?;
    load::check_loopback(sim.addr)?;
    eprintln!("simulated provider on {}", sim.addr);
    let want = |x: &str| a.paths.iter().any(|p| p == x);
    let mut paths = Vec::new();
    if want("direct") {
        paths.push(Path_ {
            name: "direct",
            addr: sim.addr,
            proc: None,
            result: PathResult {
                name: "direct".into(),
                available: true,
                ..Default::default()
            },
        });
    }
    if want("nginx") {
        let started = procs::which("nginx")
            .ok_or_else(|| "nginx is not installed (bench/run installs it)".to_string())
            .and_then(|n| setup::start_nginx(&n, templates, dir, sim.addr, s.workers));
        paths.push(path("nginx", started));
    }
    let main_keys = MAIN_KEYS;
    if want("tollgate") {
        let gw = setup::gateway_config(&GatewayOptions {
            templates,
            dir,
            sim: sim.addr,
            keys: main_keys,
            limits: !a.no_limits,
            ledger: !a.no_ledger,
            workers: s.workers,
            shapes: false,
        })
        .and_then(|c| {
            s.gateway_check = setup::check_gateway(bin, &c)?;
            setup::start_gateway(bin, &c, s.workers)
        });
        if let Err(e) = &gw {
            return Err(format!("tollgate: {e}"));
        }
        paths.push(path("tollgate", gw));
    }

    sections(&mut paths, s, &sim, warm, grace).await?;
    // The gateway's own view of what it served, then the scaling runs on fresh gateways.
    for p in paths
        .iter_mut()
        .filter(|p| p.name == "tollgate" && p.result.available)
    {
        p.result.gateway = gateway_view(p.addr).await;
        if let Some(g) = p.proc.take() {
            g.stop();
        }
        // One gateway per key count, all at once, so their runs can interleave.
        let mut gateways = Vec::new();
        for &k in &s.scaling_keys {
            let cfg = setup::gateway_config(&GatewayOptions {
                templates,
                dir,
                sim: sim.addr,
                keys: k,
                limits: !a.no_limits,
                ledger: !a.no_ledger,
                workers: s.workers,
                shapes: false,
            })?;
            let g = setup::start_gateway(bin, &cfg, s.workers)?;
            let w = setup::chat_workload(g.addr, setup::auth_headers(k));
            // Every key once (its label sets exist), then a short warm-up.
            let _ = load::closed_loop(w.clone(), 64, Duration::from_secs(60), Some(k as u64)).await;
            let _ = load::closed_loop(w, 16, warm, None).await;
            gateways.push((k, g));
        }
        p.result.scaling_closed = scaling_closed(&gateways, s, &sim).await;
        for (k, g) in &gateways {
            let w = setup::chat_workload(g.addr, setup::auth_headers(*k));
            let f = fixed(w, s.scaling_rate, *k, s, grace, Some(g), &sim).await;
            eprintln!(
                "scaling {k} keys, {} req/s: p50 {:.0} µs, cpu {:.1} µs/req",
                s.scaling_rate,
                f.latency_us.p50,
                f.proxy_cpu_us_per_req.unwrap_or(0.0)
            );
            p.result.scaling.push(f);
        }
        for (_, g) in gateways {
            g.stop();
        }
    }
    // Other shapes of traffic, on a gateway of their own (the main one's config and figures
    // stay as they were), alone on the machine.
    let shapes = match shapes_plan {
        Some(plan) => {
            let cfg = setup::gateway_config(&GatewayOptions {
                templates,
                dir,
                sim: sim.addr,
                keys: main_keys,
                limits: !a.no_limits,
                ledger: !a.no_ledger,
                workers: s.workers,
                shapes: true,
            })?;
            let g = setup::start_gateway(bin, &cfg, s.workers)?;
            let sh = shapes::run(plan, s, &g, &sim, main_keys).await;
            g.stop();
            Some(sh?)
        }
        None => None,
    };
    // LiteLLM last and alone: its workers are not idle when idle, and it is slow enough to
    // need its own time.
    let want_litellm = want("litellm")
        && match a.litellm.as_str() {
            "on" => true,
            "off" => false,
            _ => !a.smoke && procs::which("litellm").is_some(),
        };
    if want_litellm {
        let started = procs::which("litellm")
            .ok_or_else(|| "litellm is not installed".to_string())
            .and_then(|l| {
                let tps = s.stream_tokens_per_second;
                setup::start_litellm(&l, templates, dir, sim.addr, s.workers, tps)
            });
        let mut ll = vec![path("litellm", started)];
        sections(&mut ll, s, &sim, warm, grace).await?;
        paths.extend(ll);
    }
    Ok((paths.into_iter().map(|p| p.result).collect(), shapes))
}

/// Every section through `paths` in turn: a first request and a warm-up each, then the
/// closed-loop, fixed-rate and streaming runs.
async fn sections(
    paths: &mut [Path_],
    s: &mut Settings,
    sim: &Proc,
    warm: Duration,
    grace: Duration,
) -> Result<(), String> {
    let main_keys = MAIN_KEYS;
    // Does every path answer? Warm each up.
    for p in paths.iter_mut().filter(|p| p.result.available) {
        load::check_loopback(p.addr)?;
        let w = setup::chat_workload(p.addr, setup::keys_for(p.name, main_keys));
        match load::probe(&w).await {
            Ok(n) => {
                if p.name == "direct" {
                    s.response_bytes = n;
                }
                let _ = load::closed_loop(w, 16, warm, None).await;
            }
            Err(e) => {
                p.result.available = false;
                p.result.note = Some(format!("no answer: {e}"));
            }
        }
        eprintln!(
            "{}: {}",
            p.name,
            p.result.note.as_deref().unwrap_or("ready")
        );
    }

    for &c in &s.closed_connections {
        for p in paths.iter_mut().filter(|p| p.result.available) {
            let w = setup::chat_workload(p.addr, setup::keys_for(p.name, main_keys));
            let before = Cpu::now(p.proc.as_ref(), sim);
            let o = load::closed_loop(w, c, Duration::from_secs_f64(s.closed_secs), None).await;
            let (proxy, simc, me) = before.delta(p.proc.as_ref(), sim);
            let per = |x: f64| x * 1e6 / o.ok.max(1) as f64;
            let secs = o.elapsed.as_secs_f64();
            eprintln!("closed c{c} {}: {:.0} req/s", p.name, o.ok as f64 / secs);
            p.result.closed_loop.push(Closed {
                connections: c,
                keys: main_keys,
                secs,
                ok: o.ok,
                errors: o.errors,
                rps: o.ok as f64 / secs,
                latency_us: o.latency,
                proxy_cpu_us_per_req: proxy.map(per),
                sim_cpu_us_per_req: per(simc),
                loadgen_cpu_us_per_req: per(me),
                first_error: o.first_error,
            });
        }
    }
    for &rate in &s.rates {
        // Interleaved rounds, each starting with the next path, pooled per path: a minute of
        // drift on the shared machine (which moved the p50 ±50 µs between whole runs) then
        // touches every path alike.
        let n = paths.len();
        let mut acc: Vec<FixedSum> = (0..n).map(|_| FixedSum::default()).collect();
        let round_secs = s.fixed_secs / s.fixed_rounds as f64;
        for r in 0..s.fixed_rounds {
            for k in 0..n {
                let i = (r + k) % n;
                let p = &paths[i];
                if !p.result.available {
                    continue;
                }
                let w = setup::chat_workload(p.addr, setup::keys_for(p.name, main_keys));
                acc[i]
                    .add(w, rate, round_secs, s, grace, p.proc.as_ref(), sim)
                    .await;
            }
        }
        for (p, a) in paths.iter_mut().zip(acc) {
            if !p.result.available {
                continue;
            }
            let f = a.finish(rate, main_keys, p.proc.as_ref());
            eprintln!(
                "fixed {rate}/s {}: p50 {:.0} µs p99 {:.0} µs",
                p.name, f.latency_us.p50, f.latency_us.p99
            );
            p.result.fixed_rate.push(f);
        }
    }
    for p in paths
        .iter_mut()
        .filter(|p| p.result.available && s.streams > 0)
    {
        let w = setup::stream_workload(
            p.addr,
            setup::keys_for(p.name, main_keys),
            s.stream_tokens_per_second,
            s.stream_output_tokens,
        );
        let st = streaming(w, s, p.proc.as_ref(), sim).await;
        eprintln!(
            "streams {}: ttft p50 {:.0} µs, max open {}",
            p.name, st.ttft_us.p50, st.max_open
        );
        p.result.streaming = Some(st);
    }
    Ok(())
}

/// Closed-loop runs at 64 connections through each scaling gateway, in `scaling_rounds`
/// interleaved rounds (drift of the shared machine touches every key count alike); the rounds
/// of one key count are summed.
async fn scaling_closed(gateways: &[(usize, Proc)], s: &Settings, sim: &Proc) -> Vec<Closed> {
    let secs = Duration::from_secs_f64(s.closed_secs);
    let mut acc: Vec<Sum> = gateways.iter().map(|_| Sum::default()).collect();
    for _ in 0..s.scaling_rounds.max(1) {
        for ((k, g), a) in gateways.iter().zip(acc.iter_mut()) {
            let w = setup::chat_workload(g.addr, setup::auth_headers(*k));
            let before = Cpu::now(Some(g), sim);
            let o = load::closed_loop(w, 64, secs, None).await;
            let (pc, sc, me) = before.delta(Some(g), sim);
            a.ok += o.ok;
            a.errors += o.errors;
            a.secs += o.elapsed.as_secs_f64();
            a.proxy += pc.unwrap_or(0.0);
            a.sim += sc;
            a.me += me;
            a.samples.extend(o.samples);
            if a.first_error.is_none() {
                a.first_error = o.first_error;
            }
        }
    }
    gateways
        .iter()
        .zip(acc)
        .map(|((k, _), mut a)| {
            let per = |x: f64| x * 1e6 / a.ok.max(1) as f64;
            eprintln!(
                "scaling {k} keys, 64 conns: {:.0} req/s, cpu {:.1} µs/req",
                a.ok as f64 / a.secs,
                per(a.proxy)
            );
            Closed {
                connections: 64,
                keys: *k,
                secs: a.secs,
                ok: a.ok,
                errors: a.errors,
                rps: a.ok as f64 / a.secs.max(1e-9),
                latency_us: Percentiles::of(&mut a.samples),
                proxy_cpu_us_per_req: Some(per(a.proxy)),
                sim_cpu_us_per_req: per(a.sim),
                loadgen_cpu_us_per_req: per(a.me),
                first_error: a.first_error,
            }
        })
        .collect()
}

/// Closed-loop rounds of one key count, summed.
#[derive(Default)]
struct Sum {
    ok: u64,
    errors: u64,
    secs: f64,
    proxy: f64,
    sim: f64,
    me: f64,
    samples: Vec<u64>,
    first_error: Option<String>,
}

fn path(name: &'static str, started: Result<Proc, String>) -> Path_ {
    match started {
        Ok(p) => Path_ {
            name,
            addr: p.addr,
            proc: Some(p),
            result: PathResult {
                name: name.into(),
                available: true,
                ..Default::default()
            },
        },
        Err(e) => {
            eprintln!("{name}: not measured: {e}");
            Path_ {
                name,
                addr: ([127, 0, 0, 1], 9).into(),
                proc: None,
                result: PathResult {
                    name: name.into(),
                    available: false,
                    note: Some(e),
                    ..Default::default()
                },
            }
        }
    }
}

/// CPU seconds of the proxy, the simulator and this process at one moment.
pub(crate) struct Cpu(Option<f64>, f64, f64);

impl Cpu {
    pub(crate) fn now(proxy: Option<&Proc>, sim: &Proc) -> Cpu {
        Cpu(
            proxy.map(Proc::cpu_seconds),
            sim.cpu_seconds(),
            procs::self_cpu_seconds(),
        )
    }

    pub(crate) fn delta(&self, proxy: Option<&Proc>, sim: &Proc) -> (Option<f64>, f64, f64) {
        let n = Cpu::now(proxy, sim);
        (
            n.0.zip(self.0).map(|(a, b)| a - b),
            n.1 - self.1,
            n.2 - self.2,
        )
    }
}

async fn fixed(
    w: Arc<Workload>,
    rate: u32,
    keys: usize,
    s: &Settings,
    grace: Duration,
    proxy: Option<&Proc>,
    sim: &Proc,
) -> Fixed {
    let mut a = FixedSum::default();
    a.add(w, rate, s.fixed_secs, s, grace, proxy, sim).await;
    a.finish(rate, keys, proxy)
}

/// Fixed-rate rounds of one path, pooled.
#[derive(Default)]
pub(crate) struct FixedSum {
    scheduled: u64,
    ok: u64,
    errors: u64,
    incomplete: u64,
    secs: f64,
    proxy: Option<f64>,
    sim: f64,
    samples: Vec<u64>,
    lags: Vec<u64>,
    first_error: Option<String>,
}

impl FixedSum {
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn add(
        &mut self,
        w: Arc<Workload>,
        rate: u32,
        secs: f64,
        s: &Settings,
        grace: Duration,
        proxy: Option<&Proc>,
        sim: &Proc,
    ) {
        let before = Cpu::now(proxy, sim);
        let secs = Duration::from_secs_f64(secs);
        let o = load::fixed_rate(w, rate, secs, s.fixed_connections, grace).await;
        let (pc, sc, _) = before.delta(proxy, sim);
        self.scheduled += o.scheduled;
        self.ok += o.ok;
        self.errors += o.errors;
        self.incomplete += o.incomplete;
        self.secs += o.elapsed.as_secs_f64();
        if let Some(pc) = pc {
            *self.proxy.get_or_insert(0.0) += pc;
        }
        self.sim += sc;
        self.samples.extend(o.samples);
        self.lags.extend(o.lags);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    pub(crate) fn finish(mut self, rate: u32, keys: usize, proxy: Option<&Proc>) -> Fixed {
        let per = |x: f64| x * 1e6 / self.ok.max(1) as f64;
        Fixed {
            rate,
            keys,
            scheduled: self.scheduled,
            ok: self.ok,
            errors: self.errors,
            incomplete: self.incomplete,
            achieved_rps: self.ok as f64 / self.secs.max(1e-9),
            latency_us: Percentiles::of(&mut self.samples),
            pacer_lag_us: Percentiles::of(&mut self.lags),
            proxy_cpu_us_per_req: self.proxy.map(per),
            sim_cpu_us_per_req: per(self.sim),
            proxy_rss_bytes: proxy.map(Proc::rss_bytes),
            first_error: self.first_error,
        }
    }
}

async fn streaming(w: Arc<Workload>, s: &Settings, proxy: Option<&Proc>, sim: &Proc) -> Streaming {
    let events = s.stream_output_tokens + 3;
    let stream_len =
        Duration::from_secs_f64(events as f64 / f64::from(s.stream_tokens_per_second.max(1)));
    let open = Arc::new(OpenStreams::default());
    let before = Cpu::now(proxy, sim);
    let task = tokio::spawn(load::streams(
        w,
        s.streams,
        stream_len,
        Duration::from_secs_f64(s.stream_secs),
        open.clone(),
    ));
    // Sample memory while the streams are open; keep the largest with most streams open.
    let (mut rss, mut open_at) = (None::<u64>, 0u64);
    let t0 = Instant::now();
    while !task.is_finished() {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = open.now() as u64;
        // Only while (nearly) every stream is open: that is the memory the figure is about.
        if t0.elapsed() >= stream_len
            && n * 10 >= s.streams as u64 * 9
            && let Some(p) = proxy
        {
            let r = p.rss_bytes();
            if rss.is_none_or(|m| r > m) {
                rss = Some(r);
                open_at = n;
            }
        }
    }
    let o = task.await.unwrap_or_default();
    let (pc, _, _) = before.delta(proxy, sim);
    Streaming {
        streams: s.streams,
        max_open: o.max_open,
        started: o.started,
        completed: o.completed,
        errors: o.errors,
        ttft_us: o.ttft,
        proxy_rss_bytes: rss,
        open_at_rss: open_at,
        proxy_cpu_us_per_stream: pc.map(|c| c * 1e6 / o.started.max(1) as f64),
        first_error: o.first_error,
    }
}

/// Requests, mean overhead and cost from the gateway's /metrics.
async fn gateway_view(addr: std::net::SocketAddr) -> Option<GatewayView> {
    let text = load::get(addr, "/metrics").await.ok()?;
    let sum = |prefix: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (osum, ocount) = (
        sum("llm_gateway_overhead_seconds_sum"),
        sum("llm_gateway_overhead_seconds_count"),
    );
    Some(GatewayView {
        requests: sum("llm_gateway_requests_total{"),
        overhead_mean_us: (ocount > 0.0).then(|| osum / ocount * 1e6),
        cost_usd: sum("llm_gateway_cost_usd_total{"),
    })
}

fn figures(paths: &[PathResult], s: &Settings) -> Figures {
    let mut f = Figures::default();
    for p in paths.iter().filter(|p| p.available) {
        let n = p.name.as_str();
        for c in &p.closed_loop {
            let k = c.connections;
            f.add(
                format!("closed.c{k}.rps"),
                format!("closed loop {k} conns: req/s"),
                n,
                c.rps,
            );
            if let Some(cpu) = c.proxy_cpu_us_per_req {
                f.add(
                    format!("closed.c{k}.cpu_us"),
                    format!("closed loop {k} conns: proxy CPU µs/req"),
                    n,
                    cpu,
                );
            }
        }
        let lat = |prefix: &str, label: &str, x: &Fixed, f: &mut Figures| {
            for (q, v) in [
                ("p50", x.latency_us.p50),
                ("p90", x.latency_us.p90),
                ("p99", x.latency_us.p99),
                ("p99.9", x.latency_us.p999),
            ] {
                let id = q.replace('.', "");
                f.add(
                    format!("{prefix}.{id}_us"),
                    format!("{label}: {q} µs"),
                    n,
                    v,
                );
            }
            if let Some(cpu) = x.proxy_cpu_us_per_req {
                f.add(
                    format!("{prefix}.cpu_us"),
                    format!("{label}: proxy CPU µs/req"),
                    n,
                    cpu,
                );
            }
        };
        for x in &p.fixed_rate {
            lat(
                &format!("fixed.r{}", x.rate),
                &format!("fixed {} req/s", x.rate),
                x,
                &mut f,
            );
        }
        if let Some(st) = &p.streaming {
            let label = format!("{} streams", s.streams);
            f.add(
                "stream.ttft_p50_us".into(),
                format!("{label}: TTFT p50 µs"),
                n,
                st.ttft_us.p50,
            );
            f.add(
                "stream.ttft_p99_us".into(),
                format!("{label}: TTFT p99 µs"),
                n,
                st.ttft_us.p99,
            );
            if let Some(r) = st.proxy_rss_bytes {
                f.add(
                    "stream.rss_mb".into(),
                    format!("{label}: proxy RSS MB"),
                    n,
                    r as f64 / 1048576.0,
                );
            }
        }
        for c in &p.scaling_closed {
            let prefix = format!("scaling.k{}.c{}", c.keys, c.connections);
            let label = format!("{} keys, {} conns", c.keys, c.connections);
            f.add(format!("{prefix}.rps"), format!("{label}: req/s"), n, c.rps);
            if let Some(cpu) = c.proxy_cpu_us_per_req {
                f.add(
                    format!("{prefix}.cpu_us"),
                    format!("{label}: proxy CPU µs/req"),
                    n,
                    cpu,
                );
            }
        }
        for x in &p.scaling {
            let prefix = format!("scaling.k{}.r{}", x.keys, x.rate);
            lat(
                &prefix,
                &format!("{} keys @ {} req/s", x.keys, x.rate),
                x,
                &mut f,
            );
            if let Some(r) = x.proxy_rss_bytes {
                f.add(
                    format!("{prefix}.rss_mb"),
                    format!("{} keys @ {} req/s: proxy RSS MB", x.keys, x.rate),
                    n,
                    r as f64 / 1048576.0,
                );
            }
        }
    }
    f
}

fn git_describe(repo: &Path) -> Option<String> {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smoke_run_says_ok_in_one_line_and_a_full_run_keeps_its_tables() {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("bench/results/2026-11-30T23-22-36Z.json"),
        )
        .expect("the committed full run");
        let mut results: Results = serde_json::from_str(&text).expect("results");
        let names: Vec<String> = results.paths.iter().map(|p| p.name.clone()).collect();
        results.targets[0].met = Some(false);
        let full = figures_and_targets(&results, &names);
        assert!(
            full.contains("| target | measured | bound | met |"),
            "{full}"
        );
        assert!(full.contains("| NO |"), "{full}");
        let smoke = smoke_summary(&results);
        assert!(
            smoke.starts_with("smoke run ok (direct, nginx, tollgate"),
            "{smoke}"
        );
        assert!(!smoke.contains('\n') && !smoke.contains("NO"), "{smoke}");
    }

    #[test]
    fn utc_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_430_000);
        assert_eq!(rfc3339(t), "2026-11-23T10:33:20Z");
    }
}
