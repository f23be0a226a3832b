//! The provider compliance suite: every folder `tests/fixtures/<provider>/` is discovered, and
//! every recorded fixture in it replayed by a mock upstream through a real gateway, asserting
//! the client's bytes, what the upstream received, and the usage, cost and error metrics. How
//! the provider is configured, what its clients send and what the upstream must receive is the
//! folder's `provider.toml`: nothing here branches on a provider.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use support::{MockReply, Scrape, TestGateway, mock_upstream, post_streaming, sse_events};
use tollgate::metering::{PriceTable, Usage};
use tollgate::providers::{Endpoint, ProviderKind};

#[derive(Deserialize)]
struct Case {
    endpoint: String,
    request: String,
    status: u16,
    content_type: String,
    response_file: String,
    client_file: Option<String>,
    cut_after_bytes: Option<usize>,
    client_disconnect_after_events: Option<usize>,
    error_type: Option<String>,
    /// The path and query the upstream must see (when it differs by provider).
    upstream_path: Option<String>,
    /// A body that is not SSE is sent in frames of this many bytes (1: every message of a
    /// binary stream arrives split at every byte boundary); else in two halves.
    frame_bytes: Option<usize>,
    expect: Expect,
}

/// A folder's `provider.toml`. `{upstream}`, `{client_key}` and `{upstream_key}` are filled in.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderFile {
    kind: String,
    base_url: String,
    /// More keys of the `[[providers]]` entry (the kind's own), as TOML lines.
    #[serde(default)]
    extra: String,
    /// Headers the provider's official client sends.
    client_headers: std::collections::BTreeMap<String, String>,
    /// Headers the upstream must receive: the provider's own credentials.
    upstream_headers: std::collections::BTreeMap<String, String>,
}

impl ProviderFile {
    fn read(dir: &Path) -> ProviderFile {
        let text = std::fs::read_to_string(dir.join("provider.toml"))
            .unwrap_or_else(|e| panic!("{}/provider.toml: {e}", dir.display()));
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}/provider.toml: {e}", dir.display()))
    }
}

fn fill(s: &str, upstream: &str) -> String {
    s.replace("{upstream}", upstream)
        .replace("{client_key}", CLIENT_KEY)
        .replace("{upstream_key}", UPSTREAM_KEY)
}

#[derive(Deserialize)]
struct Expect {
    input: u64,
    output: u64,
    cached_read: u64,
    cache_write: u64,
    cache_write_1h: u64,
    reasoning: u64,
    estimated: bool,
    response_model: String,
    /// With `estimated`: the input and output the provider itself reported before the stream
    /// ended (a `partial` row: only the rest rests on the estimate).
    #[serde(default)]
    reported_input: u64,
    #[serde(default)]
    reported_output: u64,
}

const CLIENT_KEY: &str = "tg-compliance-key";
const UPSTREAM_KEY: &str = "sk-upstream-secret";

fn config(provider: &str, file: &ProviderFile, upstream: &str) -> String {
    format!(
        r#"
[[providers]]
name = "{provider}"
kind = "{kind}"
base_url = "{base}"
api_key = "{UPSTREAM_KEY}"
models = ["*"]
{extra}

[[keys]]
name = "ck"
key = "{CLIENT_KEY}"
team = "compliance"
"#,
        kind = file.kind,
        base = fill(&file.base_url, upstream),
        extra = file.extra,
    )
}

/// Reads the response until it ends, breaks, or `max_events` SSE events were read.
async fn read_client(
    resp: hyper::Response<hyper::body::Incoming>,
    max_events: Option<usize>,
) -> Vec<u8> {
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            out.extend_from_slice(&data);
        }
        if let Some(n) = max_events
            && out.windows(2).filter(|w| w == b"\n\n").count() >= n
        {
            break; // dropping the body hangs up
        }
    }
    out
}

async fn run_case(
    provider: &str,
    file: &ProviderFile,
    dir: &Path,
    name: &str,
) -> Result<(), String> {
    let case: Case = toml::from_str(
        &std::fs::read_to_string(dir.join(format!("{name}.toml"))).map_err(|e| e.to_string())?,
    )
    .map_err(|e| format!("fixture: {e}"))?;
    let upstream_bytes = std::fs::read(dir.join(&case.response_file)).map_err(|e| e.to_string())?;
    let sse = case.content_type.starts_with("text/event-stream");
    let sent = match case.cut_after_bytes {
        Some(n) => &upstream_bytes[..n.min(upstream_bytes.len())],
        None => &upstream_bytes[..],
    };
    let frames = if sse {
        sse_events(sent)
    } else if let Some(n) = case.frame_bytes {
        sent.chunks(n.max(1)).map(Bytes::copy_from_slice).collect()
    } else {
        let mid = sent.len() / 2;
        vec![
            Bytes::copy_from_slice(&sent[..mid]),
            Bytes::copy_from_slice(&sent[mid..]),
        ]
    };
    let (addr, seen) = mock_upstream(MockReply {
        status: case.status,
        content_type: case.content_type.clone(),
        frames,
        cut: case.cut_after_bytes.is_some(),
        frame_delay: if case.client_disconnect_after_events.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::ZERO
        },
    })
    .await;
    let upstream = addr.to_string();
    let gw = TestGateway::start(&config(provider, file, &upstream)).await;
    let client_headers: Vec<(String, String)> = file
        .client_headers
        .iter()
        .map(|(k, v)| (k.clone(), fill(v, &upstream)))
        .collect();
    let headers: Vec<(&str, &str)> = client_headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let client_path = fill(&case.endpoint, &upstream);
    let resp = post_streaming(&gw.url(&client_path), &headers, &case.request).await;
    let status = resp.status().as_u16();
    let client_bytes = read_client(resp, case.client_disconnect_after_events).await;
    let scrape: Scrape = gw.wait_requests(1.0).await;

    let mut errors = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            errors.push(what);
        }
    };
    check(
        status == case.status,
        format!("status {status}, want {}", case.status),
    );

    // The client's bytes: exactly what the provider would have sent it.
    let expected_client = match &case.client_file {
        Some(f) => std::fs::read(dir.join(f)).map_err(|e| e.to_string())?,
        None => upstream_bytes.clone(),
    };
    if case.cut_after_bytes.is_some() || case.client_disconnect_after_events.is_some() {
        check(
            expected_client.starts_with(&client_bytes) && !client_bytes.is_empty(),
            format!(
                "client bytes are not a prefix of the expected stream ({} bytes)",
                client_bytes.len()
            ),
        );
    } else {
        check(
            client_bytes == expected_client,
            format!(
                "client bytes differ:\n--- got\n{}\n--- want\n{}",
                String::from_utf8_lossy(&client_bytes),
                String::from_utf8_lossy(&expected_client)
            ),
        );
    }

    // The upstream saw the provider's key, never the client's, and include_usage when added.
    let seen = seen.lock().map_err(|_| "lock")?.clone();
    check(
        seen.bodies.len() == 1,
        format!("upstream saw {} requests", seen.bodies.len()),
    );
    if let (Some(h), Some(body)) = (seen.headers.first(), seen.bodies.first()) {
        let all: String = h
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("")))
            .collect();
        check(
            !all.contains(CLIENT_KEY),
            "the client's key reached the upstream".into(),
        );
        let auth_ok = file.upstream_headers.iter().all(|(k, v)| {
            h.get(k.as_str()).and_then(|v| v.to_str().ok()) == Some(fill(v, &upstream).as_str())
        });
        check(auth_ok, format!("upstream auth headers wrong:\n{all}"));
        if let (Some(want), Some(got)) = (&case.upstream_path, seen.paths.first()) {
            check(
                got == want && !got.contains(CLIENT_KEY),
                format!("upstream path {got:?}, want {want:?}"),
            );
        }
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("upstream body: {e}"))?;
        if case.client_file.is_some() {
            check(
                v["stream_options"]["include_usage"] == true,
                "include_usage was not added upstream".into(),
            );
        }
        let original: serde_json::Value =
            serde_json::from_str(&case.request).map_err(|e| e.to_string())?;
        check(
            v["messages"] == original["messages"]
                && v["contents"] == original["contents"]
                && v["model"] == original["model"],
            "request content changed".into(),
        );
    }

    // Usage, cost and error metrics.
    let requested: serde_json::Value =
        serde_json::from_str(&case.request).map_err(|e| e.to_string())?;
    // The endpoint label, and the model when the path names it (Azure, Gemini).
    let (endpoint, path_model) = Endpoint::from_path(client_path.split('?').next().unwrap_or(""))
        .ok_or_else(|| format!("{client_path} is not a proxied path"))?;
    // A model in the path comes percent-encoded (Bedrock's ids), as the gateway decodes it.
    let path_model = path_model.map(|m| {
        tollgate::providers::decode_path_model(m).map_or(m.to_string(), |d| d.into_owned())
    });
    let requested_model = path_model
        .as_deref()
        .or(requested["model"].as_str())
        .unwrap_or("")
        .to_string();
    let model = if case.expect.response_model.is_empty() {
        requested_model.clone()
    } else {
        case.expect.response_model.clone()
    };
    let m = [
        ("model", model.as_str()),
        ("team", "compliance"),
        ("key", "ck"),
        ("provider", provider),
    ];
    let got = |name: &str| scrape.sum(name, &m) as u64;
    let e = &case.expect;
    let (input, output) = (
        got("llm_gateway_prompt_tokens_total"),
        got("llm_gateway_completion_tokens_total"),
    );
    if e.estimated {
        check(
            input > 0 && output > 0,
            format!("estimated usage should be > 0, got {input}/{output}"),
        );
    } else {
        check(
            input == e.input,
            format!("prompt tokens {input}, want {}", e.input),
        );
        check(
            output == e.output,
            format!("completion tokens {output}, want {}", e.output),
        );
    }
    check(
        got("llm_gateway_total_tokens_total") == input + output,
        "total != prompt + completion".into(),
    );
    for (family, want) in [
        ("llm_gateway_cached_prompt_tokens_total", e.cached_read),
        ("llm_gateway_cache_write_tokens_total", e.cache_write),
        ("llm_gateway_reasoning_tokens_total", e.reasoning),
    ] {
        check(
            got(family) == want,
            format!("{family} = {}, want {want}", got(family)),
        );
    }
    let estimated = scrape.sum(
        "llm_gateway_estimated_usage_requests_total",
        &[("model", &model)],
    );
    check(
        (estimated == 1.0) == e.estimated,
        format!("estimated_usage_requests_total = {estimated}"),
    );
    let prices = PriceTable::builtin().map_err(|e| e.to_string())?;
    let usage = Usage {
        input,
        output,
        cached_read: e.cached_read,
        cache_write: e.cache_write,
        cache_write_1h: e.cache_write_1h,
        reasoning: e.reasoning,
    };
    let cost = scrape.sum("llm_gateway_cost_usd_total", &m);
    // Priced by the model that served, else by the one requested (as the gateway does).
    match prices
        .lookup(&model)
        .or_else(|| prices.lookup(&requested_model))
    {
        Some(p) => {
            let want = p.cost_nanos(&usage) as f64 / 1e9;
            check(
                (cost - want).abs() < 1e-12,
                format!("cost {cost}, want {want}"),
            );
            check(
                input + output == 0 || cost > 0.0,
                "priced model with tokens cost nothing".into(),
            );
            // The cost that rests on estimates: all of it when the tokens were estimated, what
            // the estimate added to the provider's own counts when some were reported.
            let estimated_cost =
                scrape.sum("llm_gateway_estimated_cost_usd_total", &[("model", &model)]);
            let reported = Usage {
                input: e.reported_input,
                output: e.reported_output,
                ..Usage::default()
            };
            let want_estimated = if e.estimated {
                cost - p.cost_nanos(&reported) as f64 / 1e9
            } else {
                0.0
            };
            check(
                (estimated_cost - want_estimated).abs() < 1e-12,
                format!("estimated_cost_usd_total {estimated_cost}, want {want_estimated}"),
            );
        }
        None => {
            check(cost == 0.0, format!("unpriced model cost {cost}"));
            let unpriced = scrape.sum("llm_gateway_unpriced_requests_total", &[("model", &model)]);
            check(
                input + output == 0 || unpriced == 1.0,
                format!("unpriced_requests_total = {unpriced}"),
            );
        }
    }
    let want_status = if case.client_disconnect_after_events.is_some() {
        "499".to_string()
    } else {
        case.status.to_string()
    };
    check(
        scrape.sum(
            "llm_gateway_requests_total",
            &[("status_code", &want_status), ("endpoint", endpoint.path())],
        ) == 1.0,
        format!(
            "requests_total{{status_code={want_status}}} != 1: {:?}",
            scrape
                .samples
                .iter()
                .filter(|s| s.0 == "llm_gateway_requests_total")
                .collect::<Vec<_>>()
        ),
    );
    let want_error = match (&case.error_type, case.client_disconnect_after_events) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(_)) => Some("client_disconnected".to_string()),
        (None, None) => None,
    };
    let errors_total = scrape.sum("llm_gateway_errors_total", &[]);
    match want_error {
        Some(t) => check(
            scrape.sum("llm_gateway_errors_total", &[("error_type", &t)]) == 1.0
                && errors_total == 1.0,
            format!(
                "errors_total{{error_type={t}}} missing: {:?}",
                scrape
                    .samples
                    .iter()
                    .filter(|s| s.0 == "llm_gateway_errors_total")
                    .collect::<Vec<_>>()
            ),
        ),
        None => check(
            errors_total == 0.0,
            format!("unexpected errors_total {errors_total}"),
        ),
    }
    check(
        scrape.sum("llm_gateway_requests_in_flight", &[]) == 0.0,
        "requests still in flight".into(),
    );
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n  "))
    }
}

async fn run_provider(provider: &str, dir: &Path) -> Vec<String> {
    let file = ProviderFile::read(dir);
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("fixture folder")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .filter(|n| *n != "provider.toml")
                .and_then(|n| n.strip_suffix(".toml"))
                .map(String::from)
        })
        .collect();
    names.sort();
    assert!(
        names.len() >= 5,
        "too few fixtures for {provider}: {names:?}"
    );
    let mut failures = Vec::new();
    for name in &names {
        if let Err(e) = run_case(provider, &file, dir, name).await {
            failures.push(format!("{provider}/{name}:\n  {e}"));
        }
    }
    failures
}

/// Every folder under `tests/fixtures/`, each a provider kind's recorded shapes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_folder_passes() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut folders: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("tests/fixtures")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    folders.sort();
    let names: Vec<String> = folders
        .iter()
        .filter_map(|p| p.file_name()?.to_str().map(String::from))
        .collect();
    // Every registered kind has its folder.
    for kind in ProviderKind::ALL {
        assert!(
            names.iter().any(|n| n == kind.as_str()),
            "no fixture folder tests/fixtures/{}: {names:?}",
            kind.as_str()
        );
    }
    let mut failures = Vec::new();
    for (dir, name) in folders.iter().zip(&names) {
        failures.extend(run_provider(name, dir).await);
    }
    assert!(
        failures.is_empty(),
        "{} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
