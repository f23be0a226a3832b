use std::time::Duration;

use super::*;

fn observation<'a>(model: &'a str, usage: Usage, cost_nanos: u64) -> Observation<'a> {
    Observation {
        provider: "openai",
        model,
        team: "search",
        key: "search-app",
        endpoint: "/v1/chat/completions",
        status_code: "200",
        error_type: None,
        usage,
        cost_nanos,
        estimated_cost_nanos: 0,
        priced: cost_nanos > 0,
        usage_source: UsageSource::Reported,
        duration: Duration::from_millis(120),
        upstream: Some(Duration::from_millis(119)),
        time_to_first_token: None,
        overhead: Some(Duration::from_micros(40)),
        cache: Default::default(),
    }
}

#[test]
fn text_format_has_total_names_and_cost_in_usd() {
    let m = Metrics::new(&MetricsOptions::default());
    let usage = Usage {
        input: 100,
        output: 20,
        cached_read: 40,
        ..Usage::default()
    };
    m.record(&observation("gpt-4o", usage, 4_000_000));
    m.record(&observation("gpt-4o", usage, 4_000_000));
    let text = m.render(Format::Text);
    let labels = r#"{provider="openai",model="gpt-4o",team="search",key="search-app"}"#;
    assert!(text.contains("# TYPE llm_gateway_prompt_tokens_total counter\n"));
    assert!(text.contains(&format!("llm_gateway_prompt_tokens_total{labels} 200\n")));
    assert!(text.contains(&format!("llm_gateway_completion_tokens_total{labels} 40\n")));
    assert!(text.contains(&format!("llm_gateway_total_tokens_total{labels} 240\n")));
    assert!(text.contains(&format!(
        "llm_gateway_cached_prompt_tokens_total{labels} 80\n"
    )));
    assert!(text.contains(&format!("llm_gateway_cost_usd_total{labels} 0.008\n")));
    assert!(text.contains(r#"llm_gateway_requests_total{provider="openai",model="gpt-4o",team="search",key="search-app",endpoint="/v1/chat/completions",status_code="200"} 2"#));
    assert!(text.contains(
        r#"llm_gateway_overhead_seconds_bucket{endpoint="/v1/chat/completions",le="5e-05"} 2"#
    ));
    assert!(text.contains("process_cpu_seconds_total "));
    assert!(!text.contains("# EOF"));
}

#[test]
fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
    let m = Metrics::new(&MetricsOptions::default());
    m.record(&observation(
        "gpt-4o",
        Usage {
            input: 1,
            ..Usage::default()
        },
        1,
    ));
    let om = m.render(Format::OpenMetrics);
    assert!(om.contains("# TYPE llm_gateway_prompt_tokens counter\n"));
    assert!(om.contains("llm_gateway_prompt_tokens_total{"));
    assert!(om.ends_with("# EOF\n"));
}

#[test]
fn label_values_are_escaped() {
    let m = Metrics::new(&MetricsOptions::default());
    m.record(&observation(
        "we\"ird\\model\n",
        Usage {
            input: 1,
            ..Usage::default()
        },
        0,
    ));
    let text = m.render(Format::Text);
    assert!(text.contains(r#"model="we\"ird\\model\n""#), "{text}");
}

#[test]
fn unpriced_requests_are_counted() {
    let m = Metrics::new(&MetricsOptions::default());
    m.record(&observation(
        "llama3.2",
        Usage {
            input: 5,
            ..Usage::default()
        },
        0,
    ));
    let text = m.render(Format::Text);
    assert!(
        text.contains(
            r#"llm_gateway_unpriced_requests_total{provider="openai",model="llama3.2"} 1"#
        )
    );
}

#[test]
fn disabling_the_key_label_removes_it_everywhere() {
    let opts = MetricsOptions {
        labels: vec!["provider".into(), "model".into(), "team".into()],
        ..MetricsOptions::default()
    };
    let m = Metrics::new(&opts);
    m.record(&observation(
        "gpt-4o",
        Usage {
            input: 1,
            ..Usage::default()
        },
        0,
    ));
    let text = m.render(Format::Text);
    assert!(!text.contains("key="));
    assert!(!text.contains("endpoint="));
    assert!(text.contains(
        r#"llm_gateway_prompt_tokens_total{provider="openai",model="gpt-4o",team="search"} 1"#
    ));
}

#[test]
fn recording_through_a_key_cache_equals_recording_without_it() {
    let usage = Usage {
        input: 100,
        output: 20,
        cached_read: 40,
        ..Usage::default()
    };
    let plain = Metrics::new(&MetricsOptions::default());
    let cached = Metrics::new(&MetricsOptions::default());
    let cache = SeriesCache::default();
    // Hits, a new model, a new status, and back: each must land in its own series.
    let seq: Vec<Observation<'_>> = vec![
        observation("gpt-4o", usage, 4_000_000),
        observation("gpt-4o", usage, 4_000_000),
        observation("gpt-4o-mini", usage, 1_000),
        Observation {
            status_code: "500",
            error_type: Some("upstream_error"),
            usage: Usage::default(),
            cost_nanos: 0,
            ..observation("gpt-4o-mini", usage, 0)
        },
        observation("gpt-4o", usage, 4_000_000),
        // A model whose only request failed before any token: no usage series.
        Observation {
            status_code: "502",
            error_type: Some("upstream_unreachable"),
            usage: Usage::default(),
            cost_nanos: 0,
            ..observation("claude-haiku-4-5", usage, 0)
        },
    ];
    for o in &seq {
        plain.record(o);
        cached.record_for_key(o, &cache);
    }
    let a = without_process(plain.render(Format::Text));
    let b = without_process(cached.render(Format::Text));
    assert_eq!(a, b);
    assert!(b.contains(r#"llm_gateway_requests_total{provider="openai",model="gpt-4o",team="search",key="search-app",endpoint="/v1/chat/completions",status_code="200"} 3"#));
    assert!(b.contains(r#"status_code="500"} 1"#));
    assert!(
        !b.contains(
            r#"llm_gateway_prompt_tokens_total{provider="openai",model="claude-haiku-4-5""#
        )
    );
    assert!(b.contains(r#"model="claude-haiku-4-5",team="search",key="search-app",endpoint="/v1/chat/completions",status_code="502"} 1"#));
}

#[test]
fn allowed_counts_through_a_key_cache_equal_counts_without_it() {
    let plain = Metrics::new(&MetricsOptions::default());
    let cached = Metrics::new(&MetricsOptions::default());
    let (a, b) = (SeriesCache::default(), SeriesCache::default());
    for (cache, key, slot, limit, n) in [
        (&a, "k1", 0, "requests", 3),
        (&a, "k1", 1, "tokens", 2),
        (&b, "k2", 0, "requests", 1),
        (&a, "k1", 0, "requests", 1),
    ] {
        for _ in 0..n {
            plain.rate_limit_allowed("t", key, limit);
            cached.rate_limit_allowed_for_key(cache, slot, "t", key, limit);
        }
    }
    let text = without_process(cached.render(Format::Text));
    assert!(
        text.contains(
            r#"llm_gateway_rate_limit_allowed_total{team="t",key="k1",limit="requests"} 4"#
        )
    );
    assert!(
        text.contains(
            r#"llm_gateway_rate_limit_allowed_total{team="t",key="k1",limit="tokens"} 2"#
        )
    );
    assert!(
        text.contains(
            r#"llm_gateway_rate_limit_allowed_total{team="t",key="k2",limit="requests"} 1"#
        )
    );
    assert_eq!(text, without_process(plain.render(Format::Text)));
}

/// An exposition without the `process_*` metrics, which differ from one render to the next.
fn without_process(text: String) -> String {
    text.lines()
        .filter(|l| !l.contains("process_"))
        .collect::<Vec<_>>()
        .join("\n")
}
