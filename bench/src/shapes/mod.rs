//! The shapes section: what other shapes of traffic cost the gateway, each next to the plain
//! OpenAI SSE pass-through. Streams of four kinds through one gateway (its own, with the
//! Bedrock provider and the MCP server of bench/templates/shapes.toml): OpenAI SSE passed
//! through, Anthropic SSE passed through, Bedrock ConverseStream (AWS event stream, SigV4 to
//! the simulator) and an OpenAI-format client's stream translated from an Anthropic model;
//! proxy CPU per stream and per event the client received. Then `tools/call` through the MCP
//! gateway and straight to the simulator's MCP server at a fixed rate: added latency and CPU
//! per call.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::load::{self, Framing, OpenStreams, Workload};
use crate::procs::Proc;
use crate::report::{Figures, Fixed, Settings};
use crate::run::{Cpu, FixedSum};
use crate::setup;
use crate::stats::Percentiles;

/// Claude as Anthropic names it (the `anthropic` provider's route, `claude-` prefix).
const CLAUDE: &str = "claude-haiku-4-5-20251001";
/// Claude on Bedrock, a US cross-region inference profile, percent-encoded as the SDKs send it.
const BEDROCK_STREAM_PATH: &str =
    "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream";
/// The echo tool's argument: a short tool call, as most are.
const ECHO_TEXT: &str = "order 48213: where is 'The Art of Computer Programming, Volume 1'?";

/// What the shapes section measured (`shapes` in the results file).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Shapes {
    /// Concurrent streams of each stream shape.
    pub streams: usize,
    /// Simulated stream cadence, tokens/s.
    pub tokens_per_second: u32,
    /// Output tokens per stream.
    pub output_tokens: u64,
    /// Seconds of each stream run after its ramp.
    pub secs: f64,
    /// One row per stream shape; the first is the plain OpenAI SSE pass-through.
    pub streams_by_shape: Vec<ShapeStream>,
    /// `tools/call` at `mcp_rate`: the `direct` and the `tollgate` runs.
    pub mcp: Vec<McpCalls>,
    /// tools/call per second of the MCP runs.
    pub mcp_rate: u32,
    /// Seconds of each MCP run (over all rounds).
    pub mcp_secs: f64,
    /// The shapes gateway's own counts, from its /metrics.
    pub gateway: Option<ShapesGateway>,
}

/// One stream shape through the gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShapeStream {
    /// `openai_sse`, `anthropic_sse`, `bedrock_converse_stream`, `openai_to_anthropic`.
    pub name: String,
    /// What the client called.
    pub client_endpoint: String,
    /// What the gateway called upstream.
    pub upstream_endpoint: String,
    /// Streams begun.
    pub started: u64,
    /// Streams read to their end with a 2xx status.
    pub completed: u64,
    /// Failed streams.
    pub errors: u64,
    /// Events the client received over all streams (SSE events; event-stream messages).
    pub events: u64,
    /// events / started.
    pub events_per_stream: f64,
    /// Time to first body byte, µs, streams begun after the ramp.
    pub ttft_us: Percentiles,
    /// CPU of the gateway per stream begun, µs.
    pub proxy_cpu_us_per_stream: Option<f64>,
    /// CPU of the gateway per event the client received, µs.
    pub proxy_cpu_us_per_event: Option<f64>,
    /// CPU of the simulator per stream, µs.
    pub sim_cpu_us_per_stream: f64,
    /// proxy_cpu_us_per_stream / that of `openai_sse`.
    pub cpu_per_stream_vs_sse: Option<f64>,
    /// proxy_cpu_us_per_event / that of `openai_sse`.
    pub cpu_per_event_vs_sse: Option<f64>,
    /// The first error, if any.
    pub first_error: Option<String>,
}

/// `tools/call` on one path (`direct`: the simulator's `/mcp`; `tollgate`: `/mcp/sim`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McpCalls {
    /// `direct` or `tollgate`.
    pub path: String,
    /// The fixed-rate run: latency from the scheduled send, CPU per call.
    pub calls: Fixed,
}

/// What the shapes gateway counted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShapesGateway {
    /// Sum of `llm_gateway_requests_total` (the streams).
    pub requests: f64,
    /// Sum of `llm_gateway_completion_tokens_total` of the `bedrock` provider.
    pub bedrock_completion_tokens: f64,
    /// `llm_gateway_mcp_requests_total` of `tools/call` answered `ok`.
    pub mcp_tool_calls_ok: f64,
}

/// The section's durations and sizes.
pub struct Plan {
    /// Concurrent streams per shape.
    pub streams: usize,
    /// Cadence, tokens/s.
    pub tps: u32,
    /// Output tokens per stream.
    pub tokens: u64,
    /// Seconds per stream shape after its ramp.
    pub secs: f64,
    /// tools/call per second.
    pub mcp_rate: u32,
    /// Seconds per MCP path.
    pub mcp_secs: f64,
    /// Warm-up of each workload.
    pub warm: Duration,
    /// How long a run waits for what is in flight at its end.
    pub grace: Duration,
}

/// One stream shape: its request, and markers its answer must hold (they prove the shape:
/// a translated stream is OpenAI chunks of Claude's answer).
struct Spec {
    name: &'static str,
    client: &'static str,
    upstream: &'static str,
    body: Bytes,
    framing: Framing,
    markers: &'static [&'static [u8]],
}

fn specs(tokens: u64) -> Vec<Spec> {
    vec![
        Spec {
            name: "openai_sse",
            client: "/v1/chat/completions",
            upstream: "/v1/chat/completions",
            body: setup::chat_body(true, tokens),
            framing: Framing::Sse,
            markers: &[b"chat.completion.chunk", b"\"model\":\"gpt-4o-mini\""],
        },
        Spec {
            name: "anthropic_sse",
            client: "/v1/messages",
            upstream: "/v1/messages",
            body: messages_body(tokens),
            framing: Framing::Sse,
            markers: &[b"event: message_start", b"event: message_stop"],
        },
        Spec {
            name: "bedrock_converse_stream",
            client: BEDROCK_STREAM_PATH,
            upstream: BEDROCK_STREAM_PATH,
            body: converse_body(tokens),
            framing: Framing::EventStream,
            markers: &[b"contentBlockDelta", b"metadata"],
        },
        Spec {
            name: "openai_to_anthropic",
            client: "/v1/chat/completions",
            upstream: "/v1/messages",
            body: setup::chat_body_for(CLAUDE, true, tokens),
            framing: Framing::Sse,
            markers: &[
                b"chat.completion.chunk",
                b"claude-haiku-4-5",
                b"data: [DONE]",
            ],
        },
    ]
}

/// The benchmark's conversation as a streamed Messages request.
fn messages_body(tokens: u64) -> Bytes {
    let messages: Vec<_> = setup::TURNS
        .iter()
        .map(|(role, text)| json!({"role": role, "content": text}))
        .collect();
    let v = json!({"model": CLAUDE, "system": setup::SYSTEM, "messages": messages,
        "max_tokens": tokens, "temperature": 0.2, "stream": true,
        "metadata": {"user_id": "customer-48213"}});
    Bytes::from(v.to_string())
}

/// The benchmark's conversation as a Converse request (the model is in the path).
fn converse_body(tokens: u64) -> Bytes {
    let messages: Vec<_> = setup::TURNS
        .iter()
        .map(|(role, text)| json!({"role": role, "content": [{"text": text}]}))
        .collect();
    let v = json!({"system": [{"text": setup::SYSTEM}], "messages": messages,
        "inferenceConfig": {"maxTokens": tokens, "temperature": 0.2}});
    Bytes::from(v.to_string())
}

/// A `tools/call` of the simulator's `echo` tool, stateless (no session: the simulator's MCP
/// server keeps none).
pub fn mcp_workload(addr: std::net::SocketAddr, path: &'static str, keys: usize) -> Arc<Workload> {
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": ECHO_TEXT}}});
    Arc::new(Workload {
        addr,
        path,
        body: Bytes::from(body.to_string()),
        keys: setup::auth_headers(keys),
        headers: vec![
            (
                http::header::ACCEPT,
                HeaderValue::from_static("application/json, text/event-stream"),
            ),
            (
                HeaderName::from_static("mcp-protocol-version"),
                HeaderValue::from_static("2025-06-18"),
            ),
        ],
        framing: Framing::None,
    })
}

/// Runs the section: every stream shape through `gw` in turn, then `tools/call` direct and
/// through `gw` in interleaved rounds.
pub async fn run(
    p: &Plan,
    s: &Settings,
    gw: &Proc,
    sim: &Proc,
    keys: usize,
) -> Result<Shapes, String> {
    let tps = HeaderValue::from_str(&p.tps.to_string()).map_err(|e| e.to_string())?;
    let mut out = Shapes {
        streams: p.streams,
        tokens_per_second: p.tps,
        output_tokens: p.tokens,
        secs: p.secs,
        mcp_rate: p.mcp_rate,
        mcp_secs: p.mcp_secs,
        ..Default::default()
    };
    for spec in specs(p.tokens) {
        let w = Arc::new(Workload {
            addr: gw.addr,
            path: spec.client,
            body: spec.body.clone(),
            keys: setup::auth_headers(keys),
            headers: vec![(
                HeaderName::from_static("x-sim-tokens-per-second"),
                tps.clone(),
            )],
            framing: spec.framing,
        });
        let body = load::probe_body(&w)
            .await
            .map_err(|e| format!("shapes: {}: {e}", spec.name))?;
        if let Some(m) = spec
            .markers
            .iter()
            .find(|m| !body.windows(m.len()).any(|x| x == **m))
        {
            return Err(format!(
                "shapes: {}: the answer lacks {:?}: {}",
                spec.name,
                String::from_utf8_lossy(m),
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        let _ = load::closed_loop(w.clone(), 4, p.warm, None).await;
        let row = stream_row(&spec, w, p, gw, sim).await;
        eprintln!(
            "shapes {}: {} streams, {:.1} events each, cpu {:.0} µs/stream {:.2} µs/event",
            row.name,
            row.started,
            row.events_per_stream,
            row.proxy_cpu_us_per_stream.unwrap_or(0.0),
            row.proxy_cpu_us_per_event.unwrap_or(0.0)
        );
        out.streams_by_shape.push(row);
    }
    let base = out.streams_by_shape.first().cloned();
    for r in &mut out.streams_by_shape {
        let ratio =
            |a: Option<f64>, b: Option<f64>| a.zip(b.filter(|b| *b > 0.0)).map(|(a, b)| a / b);
        if let Some(b) = &base {
            r.cpu_per_stream_vs_sse = ratio(r.proxy_cpu_us_per_stream, b.proxy_cpu_us_per_stream);
            r.cpu_per_event_vs_sse = ratio(r.proxy_cpu_us_per_event, b.proxy_cpu_us_per_event);
        }
    }

    // tools/call: direct and through the gateway, interleaved rounds pooled per path.
    let paths: [(&str, Arc<Workload>, Option<&Proc>); 2] = [
        ("direct", mcp_workload(sim.addr, "/mcp", keys), None),
        (
            "tollgate",
            mcp_workload(gw.addr, "/mcp/sim", keys),
            Some(gw),
        ),
    ];
    for (name, w, _) in &paths {
        let body = load::probe_body(w)
            .await
            .map_err(|e| format!("shapes: mcp {name}: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| format!("shapes: mcp {name}: not JSON ({e})"))?;
        if v.pointer("/result/content/0/text").and_then(|t| t.as_str()) != Some(ECHO_TEXT) {
            return Err(format!("shapes: mcp {name}: not the echo result: {v}"));
        }
        let _ = load::closed_loop(w.clone(), 4, p.warm, None).await;
    }
    let rounds = s.fixed_rounds.max(1);
    let mut acc = [FixedSum::default(), FixedSum::default()];
    for r in 0..rounds {
        for k in 0..paths.len() {
            let i = (r + k) % paths.len();
            let (_, w, proxy) = &paths[i];
            let secs = p.mcp_secs / rounds as f64;
            acc[i]
                .add(w.clone(), p.mcp_rate, secs, s, p.grace, *proxy, sim)
                .await;
        }
    }
    for ((name, _, proxy), a) in paths.iter().zip(acc) {
        let calls = a.finish(p.mcp_rate, keys, *proxy);
        eprintln!(
            "shapes mcp {name}: p50 {:.0} µs p99 {:.0} µs",
            calls.latency_us.p50, calls.latency_us.p99
        );
        out.mcp.push(McpCalls {
            path: (*name).to_string(),
            calls,
        });
    }
    out.gateway = gateway_counts(gw.addr).await;
    Ok(out)
}

async fn stream_row(spec: &Spec, w: Arc<Workload>, p: &Plan, gw: &Proc, sim: &Proc) -> ShapeStream {
    // A stream's length at the cadence: a few events besides the tokens (start, stop, usage).
    let stream_len = Duration::from_secs_f64((p.tokens + 3) as f64 / f64::from(p.tps.max(1)));
    let before = Cpu::now(Some(gw), sim);
    let o = load::streams(
        w,
        p.streams,
        stream_len,
        Duration::from_secs_f64(p.secs),
        Arc::new(OpenStreams::default()),
    )
    .await;
    let (pc, sc, _) = before.delta(Some(gw), sim);
    let per = |x: f64, n: u64| x * 1e6 / n.max(1) as f64;
    ShapeStream {
        name: spec.name.to_string(),
        client_endpoint: spec.client.to_string(),
        upstream_endpoint: spec.upstream.to_string(),
        started: o.started,
        completed: o.completed,
        errors: o.errors,
        events: o.events,
        events_per_stream: o.events as f64 / o.started.max(1) as f64,
        ttft_us: o.ttft,
        proxy_cpu_us_per_stream: pc.map(|c| per(c, o.started)),
        proxy_cpu_us_per_event: pc.map(|c| per(c, o.events)),
        sim_cpu_us_per_stream: per(sc, o.started),
        cpu_per_stream_vs_sse: None,
        cpu_per_event_vs_sse: None,
        first_error: o.first_error,
    }
}

async fn gateway_counts(addr: std::net::SocketAddr) -> Option<ShapesGateway> {
    let text = load::get(addr, "/metrics").await.ok()?;
    let sum = |prefix: &str, must: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && must.iter().all(|m| l.contains(m)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    Some(ShapesGateway {
        requests: sum("llm_gateway_requests_total{", &[]),
        bedrock_completion_tokens: sum(
            "llm_gateway_completion_tokens_total{",
            &["provider=\"bedrock\""],
        ),
        mcp_tool_calls_ok: sum(
            "llm_gateway_mcp_requests_total{",
            &["method=\"tools/call\"", "outcome=\"ok\""],
        ),
    })
}

/// The section's figures: per stream shape (path `tollgate`), CPU per stream and per event;
/// `tools/call` latency and CPU on `direct` and `tollgate` (the table adds the difference).
pub fn figures(sh: &Shapes, f: &mut Figures) {
    for r in &sh.streams_by_shape {
        let label = format!("shape {}", r.name);
        if let Some(c) = r.proxy_cpu_us_per_stream {
            f.add(
                format!("shapes.{}.cpu_us_per_stream", r.name),
                format!("{label}: proxy CPU µs/stream"),
                "tollgate",
                c,
            );
        }
        if let Some(c) = r.proxy_cpu_us_per_event {
            f.add(
                format!("shapes.{}.cpu_us_per_event", r.name),
                format!("{label}: proxy CPU µs/event"),
                "tollgate",
                c,
            );
        }
    }
    for m in &sh.mcp {
        let label = format!("MCP tools/call @ {}/s", m.calls.rate);
        for (q, v) in [
            ("p50", m.calls.latency_us.p50),
            ("p99", m.calls.latency_us.p99),
        ] {
            f.add(
                format!("mcp.tools_call.{q}_us"),
                format!("{label}: {q} µs"),
                &m.path,
                v,
            );
        }
        if let Some(c) = m.calls.proxy_cpu_us_per_req {
            f.add(
                "mcp.tools_call.cpu_us".into(),
                format!("{label}: proxy CPU µs/call"),
                &m.path,
                c,
            );
        }
    }
}

/// What is wrong with a shapes section that should have run.
pub fn problems(sh: Option<&Shapes>) -> Vec<String> {
    let Some(sh) = sh else {
        return vec!["shapes: section missing".into()];
    };
    let mut out = Vec::new();
    let names: Vec<&str> = sh
        .streams_by_shape
        .iter()
        .map(|r| r.name.as_str())
        .collect();
    let want = [
        "openai_sse",
        "anthropic_sse",
        "bedrock_converse_stream",
        "openai_to_anthropic",
    ];
    if names != want {
        out.push(format!(
            "shapes: stream shapes {names:?}, expected {want:?}"
        ));
    }
    for r in &sh.streams_by_shape {
        if r.completed == 0 || r.events == 0 || r.ttft_us.count == 0 {
            out.push(format!("shapes: {}: no stream completed", r.name));
        }
        if r.proxy_cpu_us_per_event.is_none() {
            out.push(format!("shapes: {}: no CPU measured", r.name));
        }
    }
    for path in ["direct", "tollgate"] {
        match sh.mcp.iter().find(|m| m.path == path) {
            Some(m) if m.calls.ok > 0 => {}
            _ => out.push(format!("shapes: mcp {path}: no tools/call answered")),
        }
    }
    match &sh.gateway {
        Some(g) if g.mcp_tool_calls_ok > 0.0 && g.bedrock_completion_tokens > 0.0 => {}
        g => out.push(format!(
            "shapes: the gateway metered no Bedrock tokens or no MCP tool call: {g:?}"
        )),
    }
    out
}

#[cfg(test)]
mod tests;
