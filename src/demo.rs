//! `tollgate demo`: the simulated provider on a loopback port, a gateway in front of it with
//! three demo teams, and a little synthetic traffic, so a new user sees live metrics at once.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};

/// Config text for a gateway in front of a simulated provider at `sim_addr`.
pub fn demo_config(sim_addr: &str, listen: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[ledger]
url = "sqlite://tollgate-demo.db"
admin_token = "tg-demo-admin"
metrics_window = "day"

[[providers]]
name = "openai"
kind = "openai"
base_url = "http://{sim_addr}/v1"
forward_headers = ["x-sim-*"]
api_key = "sk-demo-openai"
models = ["gpt-4o", "gpt-4o-mini", "gpt-4.1-mini", "o4-mini", "text-embedding-3-small"]

[[providers]]
name = "anthropic"
kind = "anthropic"
base_url = "http://{sim_addr}"
forward_headers = ["x-sim-*"]
api_key = "sk-ant-demo"
model_prefixes = ["claude-"]

[[providers]]
name = "local-vllm"
kind = "openai-compatible"
base_url = "http://{sim_addr}/v1"
forward_headers = ["x-sim-*"]
models = ["meta-llama/Llama-3.1-8B-Instruct"]

[[providers]]
name = "gemini"
kind = "gemini"
base_url = "http://{sim_addr}"
forward_headers = ["x-sim-*"]
api_key = "AIza-demo-gemini"
model_prefixes = ["gemini-"]

[[providers]]
name = "azure"
kind = "azure-openai"
base_url = "http://{sim_addr}"
api_version = "2024-10-21"
forward_headers = ["x-sim-*"]
api_key = "az-demo-key"

[[providers]]
name = "bedrock"
kind = "bedrock"
base_url = "http://{sim_addr}"
region = "us-east-1"
forward_headers = ["x-sim-*"]
api_key = "ABSK-demo-bedrock"
model_prefixes = ["us.anthropic.", "amazon.nova-"]

[[models]]
name = "azure-gpt-4o"
provider = "azure"
deployment = "gpt4o-prod"
base_model = "gpt-4o-2024-11-20"

[[keys]]
name = "search-app"
key = "tg-demo-search"
team = "search"

[[keys]]
name = "support-bot"
key = "tg-demo-support"
team = "support"

[[keys]]
name = "research-agent"
key = "tg-demo-research"
team = "research"
limits = {{ requests_per_minute = 40, max_parallel_requests = 8 }}

[[teams]]
name = "search"
budget = {{ usd = 20, period = "month", action = "block" }}

[[teams]]
name = "research"
budget = {{ usd = 5, period = "day", action = "alert" }}

[[teams.models]]
model = "o4-mini"
limits = {{ tokens_per_minute = 20000 }}
"#
    )
}

/// One synthetic request: (key, path, body, extra header).
fn workload(
    i: u64,
) -> (
    &'static str,
    &'static str,
    String,
    Option<(&'static str, &'static str)>,
) {
    match i % 10 {
        0 => ("tg-demo-search", "/v1/chat/completions",
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Find documents about token metering"}],"max_tokens":40}"#.into(), None),
        1 => ("tg-demo-search", "/v1/embeddings",
            r#"{"model":"text-embedding-3-small","input":["token metering","cost per team"]}"#.into(), None),
        2 => ("tg-demo-support", "/v1/messages",
            r#"{"model":"claude-sonnet-4-5","max_tokens":60,"messages":[{"role":"user","content":"My invoice looks wrong"}],"stream":true}"#.into(),
            Some(("x-sim-cached-tokens", "512"))),
        3 => ("tg-demo-support", "/v1/chat/completions",
            r#"{"model":"gpt-4o","messages":[{"role":"user","content":"Summarise this ticket"}],"stream":true}"#.into(), None),
        4 => ("tg-demo-research", "/v1/responses",
            r#"{"model":"o4-mini","input":"Plan an experiment on caching","max_output_tokens":120}"#.into(),
            Some(("x-sim-reasoning-tokens", "64"))),
        5 => ("tg-demo-research", "/v1/chat/completions",
            r#"{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hello"}]}"#.into(), None),
        6 => ("tg-demo-search", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse",
            r#"{"contents":[{"role":"user","parts":[{"text":"Rank these results by relevance"}]}],"generationConfig":{"maxOutputTokens":50}}"#.into(),
            Some(("x-sim-reasoning-tokens", "32"))),
        7 => ("tg-demo-support", "/openai/deployments/azure-gpt-4o/chat/completions?api-version=2024-10-21",
            r#"{"messages":[{"role":"user","content":"Draft a reply to this customer"}],"max_tokens":50}"#.into(), None),
        8 => ("tg-demo-support", "/model/us.anthropic.claude-haiku-4-5-20251001-v1%3A0/converse-stream",
            r#"{"messages":[{"role":"user","content":[{"text":"Classify this ticket"}]}],"inferenceConfig":{"maxTokens":40}}"#.into(),
            Some(("x-sim-cached-tokens", "256"))),
        _ => ("tg-demo-research", "/v1/messages",
            r#"{"model":"claude-haiku-4-5","max_tokens":30,"messages":[{"role":"user","content":"ping"}]}"#.into(),
            Some(("x-sim-status", "529"))),
    }
}

/// Sends the demo workload to the gateway at `gateway_addr`, about `per_second` requests a
/// second, until the task is dropped.
pub async fn traffic(gateway_addr: String, per_second: u32) {
    let client = crate::proxy::upstream::tls_client();
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_second.max(1));
    for i in 0u64.. {
        tick.tick().await;
        let (key, path, body, extra) = workload(i);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(format!("http://{gateway_addr}{path}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {key}"));
        if let Some((k, v)) = extra {
            req = req.header(k, v);
        }
        let Ok(req) = req.body(Full::new(Bytes::from(body))) else {
            continue;
        };
        let client = client.clone();
        tokio::spawn(async move {
            if let Ok(resp) = client.request(req).await {
                let _ = resp.into_body().collect().await;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Endpoint;

    #[test]
    fn the_demo_config_is_valid_and_every_workload_path_is_served() {
        let text = demo_config("127.0.0.1:9", "127.0.0.1:8080");
        let vars: std::collections::HashMap<String, String> = Default::default();
        let cfg = crate::config::Config::from_toml(&text, &vars).expect("valid demo config");
        for i in 0..10 {
            let (_, path, _, _) = workload(i);
            let path = path.split('?').next().unwrap_or(path);
            let (endpoint, path_model) = Endpoint::from_path(path).expect(path);
            if let Some(m) = path_model {
                let m = crate::providers::decode_path_model(m).expect("decodes");
                let route = cfg.router.route(&m).expect(path);
                assert!(route.provider.supports(endpoint), "{path}");
            }
        }
    }
}
