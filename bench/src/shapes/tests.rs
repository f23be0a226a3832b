//! The shapes section's validation, figures and request bodies.

use super::*;

fn row(name: &str) -> ShapeStream {
    ShapeStream {
        name: name.into(),
        client_endpoint: String::new(),
        upstream_endpoint: String::new(),
        started: 3,
        completed: 3,
        errors: 0,
        events: 39,
        events_per_stream: 13.0,
        ttft_us: Percentiles {
            count: 3,
            ..Default::default()
        },
        proxy_cpu_us_per_stream: Some(30.0),
        proxy_cpu_us_per_event: Some(2.0),
        sim_cpu_us_per_stream: 1.0,
        cpu_per_stream_vs_sse: None,
        cpu_per_event_vs_sse: None,
        first_error: None,
    }
}

#[test]
fn a_complete_section_passes_and_each_gap_is_named() {
    let names = [
        "openai_sse",
        "anthropic_sse",
        "bedrock_converse_stream",
        "openai_to_anthropic",
    ];
    let calls = |ok| Fixed {
        rate: 10,
        keys: 10,
        scheduled: 10,
        ok,
        errors: 0,
        incomplete: 0,
        achieved_rps: 10.0,
        latency_us: Percentiles::default(),
        pacer_lag_us: Percentiles::default(),
        proxy_cpu_us_per_req: None,
        sim_cpu_us_per_req: 0.0,
        proxy_rss_bytes: None,
        first_error: None,
    };
    let mut sh = Shapes {
        streams_by_shape: names.iter().map(|n| row(n)).collect(),
        mcp: vec![
            McpCalls {
                path: "direct".into(),
                calls: calls(10),
            },
            McpCalls {
                path: "tollgate".into(),
                calls: calls(10),
            },
        ],
        gateway: Some(ShapesGateway {
            requests: 12.0,
            bedrock_completion_tokens: 30.0,
            mcp_tool_calls_ok: 10.0,
        }),
        ..Default::default()
    };
    assert!(problems(Some(&sh)).is_empty(), "{:?}", problems(Some(&sh)));
    sh.streams_by_shape[2].completed = 0;
    sh.mcp[1].calls.ok = 0;
    if let Some(g) = sh.gateway.as_mut() {
        g.bedrock_completion_tokens = 0.0;
    }
    let p = problems(Some(&sh));
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].contains("bedrock_converse_stream"), "{p:?}");
    let mut f = Figures::default();
    figures(&sh, &mut f);
    let ids: Vec<(String, String)> = f.0.iter().map(|x| (x.path.clone(), x.id.clone())).collect();
    assert!(ids.contains(&(
        "tollgate".into(),
        "shapes.openai_to_anthropic.cpu_us_per_event".into()
    )));
    assert!(ids.contains(&("direct".into(), "mcp.tools_call.p99_us".into())));
}

#[test]
fn each_body_is_its_api_s_shape_of_one_conversation() {
    let specs = specs(7);
    let json = |b: &Bytes| serde_json::from_slice::<serde_json::Value>(b).expect("json");
    let m = json(&specs[1].body);
    assert_eq!(
        (m["max_tokens"].clone(), m["stream"].clone()),
        (7.into(), true.into())
    );
    assert_eq!(m["system"], setup::SYSTEM);
    assert_eq!(m["messages"].as_array().map(Vec::len), Some(3));
    let c = json(&specs[2].body);
    assert_eq!(c["inferenceConfig"]["maxTokens"], 7);
    assert_eq!(c["messages"][2]["content"][0]["text"], setup::TURNS[2].1);
    let t = json(&specs[3].body);
    assert_eq!(
        (t["model"].clone(), t["stream"].clone()),
        (CLAUDE.into(), true.into())
    );
}
