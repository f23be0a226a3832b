//! What the benchmark starts and sends: the configs rendered from bench/templates/, the
//! processes of each path, and the request bodies.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue};

use crate::load::{Framing, Workload};
use crate::procs::{Proc, free_port};

/// Fills `{{name}}` placeholders; an unknown placeholder is an error, so a template and the
/// code cannot drift apart silently.
pub fn render(template: &str, vars: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(i) = rest.find("{{") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let j = after.find("}}").ok_or("unclosed {{ in a template")?;
        let name = &after[..j];
        let v = vars
            .iter()
            .find(|(k, _)| *k == name)
            .ok_or_else(|| format!("template placeholder {{{{{name}}}}} has no value"))?;
        out.push_str(v.1);
        rest = &after[j + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads one template file.
pub fn template(dir: &Path, name: &str) -> Result<String, String> {
    std::fs::read_to_string(dir.join(name))
        .map_err(|e| format!("template {}: {e}", dir.join(name).display()))
}

/// The virtual key of number `i` (what clients send).
pub fn key(i: usize) -> String {
    format!("tg-bench-{i:05}")
}

/// `Authorization` values for keys `0..n`.
pub fn auth_headers(n: usize) -> Vec<HeaderValue> {
    (0..n)
        .filter_map(|i| HeaderValue::from_str(&format!("Bearer {}", key(i))).ok())
        .collect()
}

/// LiteLLM's master key (it refuses to start without one); its path sends this instead of
/// the virtual keys.
pub const LITELLM_MASTER_KEY: &str = "sk-bench-litellm-master-key";

/// The `Authorization` values a path's requests rotate over.
pub fn keys_for(path: &str, n: usize) -> Vec<HeaderValue> {
    if path == "litellm" {
        vec![HeaderValue::from_static(
            "Bearer sk-bench-litellm-master-key",
        )]
    } else {
        auth_headers(n)
    }
}

/// Options for the gateway's config.
pub struct GatewayOptions<'a> {
    /// bench/templates.
    pub templates: &'a Path,
    /// Scratch directory.
    pub dir: &'a Path,
    /// The simulated provider.
    pub sim: SocketAddr,
    /// Virtual keys (one team each).
    pub keys: usize,
    /// Add limits.toml and per-key limits (else no limits).
    pub limits: bool,
    /// Add ledger.toml (else the ledger is off).
    pub ledger: bool,
    /// Worker threads (`[server] workers`).
    pub workers: usize,
    /// Add shapes.toml (the Bedrock provider and the MCP server of the shapes section).
    pub shapes: bool,
}

/// Renders the gateway config and returns its path.
pub fn gateway_config(o: &GatewayOptions) -> Result<PathBuf, String> {
    let dir = o.dir.to_string_lossy().to_string();
    let key_t = template(
        o.templates,
        if o.limits {
            "key-limits.toml"
        } else {
            "key.toml"
        },
    )?;
    let mut keys = String::new();
    for i in 0..o.keys {
        let (name, team) = (format!("bench-{i:05}"), format!("team-{i:05}"));
        keys.push_str(&render(
            &key_t,
            &[("name", &name), ("key", &key(i)), ("team", &team)],
        )?);
        keys.push('\n');
    }
    let limits = if o.limits {
        render(&template(o.templates, "limits.toml")?, &[("dir", &dir)])?
    } else {
        String::new()
    };
    let ledger = if o.ledger {
        render(&template(o.templates, "ledger.toml")?, &[("dir", &dir)])?
    } else {
        // The gateway keeps a ledger unless told not to.
        "[ledger]\nenabled = false\n".to_string()
    };
    let sim = o.sim.to_string();
    let max_series = (o.keys * 4).max(10_000).to_string();
    let shapes = if o.shapes {
        render(&template(o.templates, "shapes.toml")?, &[("sim", &sim)])?
    } else {
        String::new()
    };
    let text = render(
        &template(o.templates, "gateway.toml")?,
        &[
            ("listen", "127.0.0.1:0"),
            ("sim", &sim),
            ("max_series", &max_series),
            ("workers", &o.workers.to_string()),
            ("limits", &limits),
            ("ledger", &ledger),
            ("keys", &keys),
            ("shapes", &shapes),
        ],
    )?;
    let name = if o.shapes {
        "tollgate-shapes.toml".to_string()
    } else {
        format!("tollgate-{}keys.toml", o.keys)
    };
    let path = o.dir.join(name);
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}

/// Validates `config` with `tollgate check`; its report (what the gateway has on).
pub fn check_gateway(bin: &Path, config: &Path) -> Result<String, String> {
    let check = Command::new(bin)
        .args(["check", "--config"])
        .arg(config)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", bin.display()))?;
    if !check.status.success() {
        return Err(format!(
            "the generated gateway config is rejected:\n{}",
            String::from_utf8_lossy(&check.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&check.stdout).trim().to_string())
}

/// Starts the gateway on `config` (validated first, for a clear error). It runs in the
/// config's directory, so files it creates by default (a ledger database) stay in the run's
/// scratch directory.
pub fn start_gateway(bin: &Path, config: &Path, workers: usize) -> Result<Proc, String> {
    check_gateway(bin, config)?;
    let mut cmd = Command::new(bin);
    cmd.args([
        "serve",
        "--log",
        "warn",
        "--listen",
        "127.0.0.1:0",
        "--config",
    ])
    .arg(config)
    .env("TOKIO_WORKER_THREADS", workers.to_string());
    if let Some(dir) = config.parent() {
        cmd.current_dir(dir);
    }
    Proc::announced("tollgate", cmd)
}

/// Starts the simulated provider.
pub fn start_sim(bin: &Path, workers: usize) -> Result<Proc, String> {
    let mut cmd = Command::new(bin);
    cmd.args(["sim", "--log", "warn", "--listen", "127.0.0.1:0"])
        .env("TOKIO_WORKER_THREADS", workers.to_string());
    Proc::announced("sim", cmd)
}

/// Renders nginx.conf and starts nginx in front of `sim`.
pub fn start_nginx(
    nginx: &Path,
    templates: &Path,
    dir: &Path,
    sim: SocketAddr,
    workers: usize,
) -> Result<Proc, String> {
    let addr = free_port()?;
    let d = dir.to_string_lossy().to_string();
    let text = render(
        &template(templates, "nginx.conf")?,
        &[
            ("workers", &workers.to_string()),
            ("dir", &d),
            ("listen", &addr.to_string()),
            ("sim", &sim.to_string()),
        ],
    )?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(nginx);
    cmd.arg("-p")
        .arg(dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(dir.join("nginx-error.log"));
    Proc::on_port("nginx", cmd, addr, Duration::from_secs(10))
}

/// Renders litellm.yaml and starts `litellm` (LiteLLM proxy) in front of `sim`.
pub fn start_litellm(
    litellm: &Path,
    templates: &Path,
    dir: &Path,
    sim: SocketAddr,
    workers: usize,
    tps: u32,
) -> Result<Proc, String> {
    let addr = free_port()?;
    let text = render(
        &template(templates, "litellm.yaml")?,
        &[
            ("sim", &sim.to_string()),
            ("tps", &tps.to_string()),
            ("master_key", LITELLM_MASTER_KEY),
        ],
    )?;
    let conf = dir.join("litellm.yaml");
    std::fs::write(&conf, text).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(litellm);
    cmd.arg("--config")
        .arg(&conf)
        .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
        .args(["--num_workers", &workers.to_string()])
        .stderr(std::process::Stdio::null());
    Proc::on_port("litellm", cmd, addr, Duration::from_secs(180))
}

/// The system prompt of every benchmark request.
pub const SYSTEM: &str = "You are a support assistant for an online bookshop. Answer briefly and \
    politely, cite the order number when the customer gives one, never invent a delivery \
    date, and hand over to a human agent when the customer asks for a refund above 100 EUR \
    or mentions a legal complaint. Keep answers under 120 words.";

/// The conversation of every benchmark request after the system prompt: (role, text).
pub const TURNS: [(&str, &str); 3] = [
    (
        "user",
        "Hi, I ordered three books last Tuesday (order 48213) and only two arrived. The parcel looked intact.",
    ),
    (
        "assistant",
        "I am sorry to hear that. Could you tell me which title is missing, so I can check whether it was shipped separately?",
    ),
    (
        "user",
        "The missing one is 'The Art of Computer Programming, Volume 1'. Can you check where it is and when it will arrive?",
    ),
];

/// A chat completion of realistic size: a system prompt, two turns, a question.
pub fn chat_body(stream: bool, max_tokens: u64) -> Bytes {
    chat_body_for("gpt-4o-mini", stream, max_tokens)
}

/// [`chat_body`] asking for `model`.
pub fn chat_body_for(model: &str, stream: bool, max_tokens: u64) -> Bytes {
    let mut messages = vec![serde_json::json!({"role": "system", "content": SYSTEM})];
    for (role, text) in TURNS {
        messages.push(serde_json::json!({"role": role, "content": text}));
    }
    let mut v = serde_json::json!({
        "model": model,
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": max_tokens,
        "user": "customer-48213"
    });
    if stream {
        v["stream"] = serde_json::Value::Bool(true);
    }
    Bytes::from(v.to_string())
}

/// The non-streamed workload to `addr`, rotating over `keys`.
pub fn chat_workload(addr: SocketAddr, keys: Vec<HeaderValue>) -> Arc<Workload> {
    Arc::new(Workload {
        addr,
        path: "/v1/chat/completions",
        body: chat_body(false, 64),
        keys,
        headers: Vec::new(),
        framing: Framing::None,
    })
}

/// The streaming workload: the simulated provider streams at `tps` tokens a second.
pub fn stream_workload(
    addr: SocketAddr,
    keys: Vec<HeaderValue>,
    tps: u32,
    tokens: u64,
) -> Arc<Workload> {
    let tps = HeaderValue::from_str(&tps.to_string()).unwrap_or(HeaderValue::from_static("20"));
    Arc::new(Workload {
        addr,
        path: "/v1/chat/completions",
        body: chat_body(true, tokens),
        keys,
        headers: vec![(HeaderName::from_static("x-sim-tokens-per-second"), tps)],
        // The streaming section reports no event count: the load generator does as before.
        framing: Framing::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fills_and_refuses_unknown() {
        assert_eq!(
            render("a {{x}} b {{y}}", &[("x", "1"), ("y", "2")]).ok(),
            Some("a 1 b 2".to_string())
        );
        assert!(render("{{z}}", &[("x", "1")]).is_err());
    }

    #[test]
    fn the_request_is_the_one_every_committed_run_sent() {
        // Runs are compared over time: the body (850 bytes in every file of bench/results)
        // must not change when its parts are shared with other shapes.
        assert_eq!(chat_body(false, 64).len(), 850);
        let v: serde_json::Value = serde_json::from_slice(&chat_body(true, 9)).expect("json");
        assert_eq!(v["messages"].as_array().map(Vec::len), Some(4));
        assert_eq!(
            (v["stream"].clone(), v["max_tokens"].clone()),
            (true.into(), 9.into())
        );
    }

    #[test]
    fn templates_render_to_a_valid_gateway_config() {
        let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/templates");
        let dir = std::env::temp_dir().join(format!("tg-bench-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).ok();
        let path = gateway_config(&GatewayOptions {
            templates: &templates,
            dir: &dir,
            sim: "127.0.0.1:9".parse().expect("addr"),
            keys: 3,
            limits: false,
            ledger: false,
            workers: 3,
            shapes: false,
        })
        .expect("renders");
        let text = std::fs::read_to_string(&path).expect("written");
        let cfg = tollgate::config::Config::from_toml(&text, &tollgate::config::env::ProcessEnv);
        assert!(cfg.is_ok(), "{text}");
        assert_eq!(
            cfg.map(|c| (c.keys.len(), c.server.workers, c.providers.len()))
                .ok(),
            Some((3, 3, 2))
        );
        let path = gateway_config(&GatewayOptions {
            templates: &templates,
            dir: &dir,
            sim: "127.0.0.1:9".parse().expect("addr"),
            keys: 3,
            limits: true,
            ledger: true,
            workers: 2,
            shapes: true,
        })
        .expect("renders");
        let text = std::fs::read_to_string(&path).expect("written");
        let cfg = tollgate::config::Config::from_toml(&text, &tollgate::config::env::ProcessEnv);
        assert!(cfg.is_ok(), "{text}");
        let names: Vec<String> = cfg
            .as_ref()
            .map(|c| c.providers.iter().map(|p| p.name().to_string()).collect())
            .unwrap_or_default();
        assert_eq!(names, ["openai", "anthropic", "bedrock"], "{text}");
        assert!(
            cfg.is_ok_and(|c| c.mcp.servers.contains_key("sim")),
            "{text}"
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
