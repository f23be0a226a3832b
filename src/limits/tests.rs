use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::metrics::{Format, MetricsOptions};

fn limiter() -> Arc<Limiter> {
    Arc::new(Limiter::new(
        Backend::Memory,
        OnBackendError::Allow,
        0,
        Metrics::new(&MetricsOptions::default()),
    ))
}

fn rpm(n: u64) -> Limits {
    Limits {
        requests_per_minute: Some(n),
        ..Limits::default()
    }
}

async fn admit(
    l: &Limiter,
    rules: Vec<Arc<Rule>>,
    tokens: u64,
    cost: u64,
) -> Result<Admission, Rejection> {
    l.admit(
        rules,
        Demand {
            tokens,
            cost_nanos: cost,
        },
        "t",
        "k",
        &SeriesCache::default(),
    )
    .await
    .expect("memory never fails")
}

#[tokio::test(start_paused = true)]
async fn request_bucket_allows_the_limit_then_refills_over_the_minute() {
    let l = limiter();
    let rule = Rule::new(ScopeKind::Key, "k", rpm(6), None);
    for _ in 0..6 {
        assert!(admit(&l, vec![rule.clone()], 0, 0).await.is_ok());
    }
    let rej = admit(&l, vec![rule.clone()], 0, 0)
        .await
        .expect_err("7th is refused");
    assert_eq!(rej.limit, LimitKind::Requests);
    assert!(
        (rej.retry_after - 10.0).abs() < 0.01,
        "one request refills in 10 s: {}",
        rej.retry_after
    );
    tokio::time::advance(Duration::from_secs(9)).await;
    assert!(admit(&l, vec![rule.clone()], 0, 0).await.is_err());
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(admit(&l, vec![rule.clone()], 0, 0).await.is_ok());
    // A full minute later the bucket is full again, not more.
    tokio::time::advance(Duration::from_secs(600)).await;
    for _ in 0..6 {
        assert!(admit(&l, vec![rule.clone()], 0, 0).await.is_ok());
    }
    assert!(admit(&l, vec![rule], 0, 0).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn tokens_are_reserved_then_settled_to_actual_use() {
    let l = limiter();
    let limits = Limits {
        tokens_per_minute: Some(1000),
        ..Limits::default()
    };
    let rule = Rule::new(ScopeKind::Team, "t", limits, None);
    let a = admit(&l, vec![rule.clone()], 900, 0).await.expect("fits");
    assert_eq!(a.quota.tokens.map(|q| q.1), Some(100));
    // Only 50 were used: 850 come back.
    l.settle(a, 50, 0);
    let a = admit(&l, vec![rule.clone()], 900, 0)
        .await
        .expect("fits after refund");
    assert_eq!(a.quota.tokens.map(|q| q.1), Some(50));
    // Used more than reserved: the bucket goes into debt and blocks.
    l.settle(a, 2000, 0);
    let rej = admit(&l, vec![rule.clone()], 1, 0)
        .await
        .expect_err("in debt");
    assert_eq!(rej.limit, LimitKind::Tokens);
    // Debt of 1050 repays at 1000/min: open again after ~63 s.
    tokio::time::advance(Duration::from_secs(62)).await;
    assert!(admit(&l, vec![rule.clone()], 1, 0).await.is_err());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(admit(&l, vec![rule], 1, 0).await.is_ok());
}

#[tokio::test(start_paused = true)]
async fn concurrent_reservations_cannot_overshoot() {
    let l = limiter();
    let rule = Rule::new(ScopeKind::Key, "k", rpm(50), None);
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let (l, rule) = (l.clone(), rule.clone());
        tasks.push(tokio::spawn(async move {
            admit(&l, vec![rule], 0, 0).await.is_ok()
        }));
    }
    let mut allowed = 0;
    for t in tasks {
        allowed += usize::from(t.await.expect("join"));
    }
    assert_eq!(allowed, 50);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_consumes_nothing_from_the_other_rules() {
    let l = limiter();
    let key = Rule::new(ScopeKind::Key, "k", rpm(100), None);
    let team = Rule::new(ScopeKind::Team, "t", rpm(1), None);
    assert!(
        admit(&l, vec![key.clone(), team.clone()], 0, 0)
            .await
            .is_ok()
    );
    for _ in 0..5 {
        let rej = admit(&l, vec![key.clone(), team.clone()], 0, 0)
            .await
            .expect_err("team limit");
        assert_eq!((rej.scope, &*rej.name), (ScopeKind::Team, "t"));
    }
    let a = admit(&l, vec![key], 0, 0).await.expect("key alone");
    assert_eq!(
        a.quota.requests.map(|q| q.1),
        Some(98),
        "only the two admitted requests were taken"
    );
}

#[tokio::test(start_paused = true)]
async fn parallel_limit_counts_requests_in_flight() {
    let l = limiter();
    let rule = Rule::new(
        ScopeKind::Key,
        "k",
        Limits {
            max_parallel_requests: Some(2),
            ..Limits::default()
        },
        None,
    );
    let a = admit(&l, vec![rule.clone()], 0, 0).await.expect("1");
    let _b = admit(&l, vec![rule.clone()], 0, 0).await.expect("2");
    assert_eq!(
        admit(&l, vec![rule.clone()], 0, 0)
            .await
            .expect_err("3")
            .limit,
        LimitKind::Parallel
    );
    l.settle(a, 0, 0);
    assert!(admit(&l, vec![rule], 0, 0).await.is_ok());
}

#[tokio::test]
async fn blocking_budget_counts_reservations_and_spend() {
    let l = limiter();
    let budget = Budget {
        limit_nanos: 10_000_000,
        period: Period::Month,
        action: BudgetAction::Block,
        overshoot: Overshoot::Bounded,
    };
    let rule = Rule::new(ScopeKind::Team, "search", Limits::default(), Some(budget));
    // A 1-cent budget. Two concurrent requests reserving 0.6 cent each: the second still
    // passes (0.6 < 1), the third sees both reservations.
    let a = admit(&l, vec![rule.clone()], 0, 6_000_000)
        .await
        .expect("first");
    let b = admit(&l, vec![rule.clone()], 0, 6_000_000)
        .await
        .expect("second");
    let rej = admit(&l, vec![rule.clone()], 0, 1)
        .await
        .expect_err("1.2 cents in flight");
    assert_eq!(rej.limit, LimitKind::Budget);
    assert!(
        rej.message().contains("team `search`") && rej.message().contains("resets at"),
        "{}",
        rej.message()
    );
    assert!(rej.retry_after > 0.0);
    // They cost 0.1 cent each in the end.
    l.settle(a, 10, 1_000_000);
    l.settle(b, 10, 1_000_000);
    assert!(admit(&l, vec![rule.clone()], 0, 0).await.is_ok());
    let text = l.metrics.render(Format::Text);
    assert!(
        text.contains(
            r#"llm_gateway_budget_spent_usd{scope="team",name="search",team="search",period="month"} 0.002"#
        ),
        "{text}"
    );
    assert!(text.contains(
        r#"llm_gateway_budget_limit_usd{scope="team",name="search",team="search",period="month"} 0.01"#
    ));
}

#[tokio::test]
async fn alert_budgets_let_requests_through() {
    let l = limiter();
    let budget = Budget {
        limit_nanos: 1,
        period: Period::Day,
        action: BudgetAction::Alert,
        overshoot: Overshoot::Bounded,
    };
    let rule = Rule::new(ScopeKind::Key, "k", Limits::default(), Some(budget));
    for _ in 0..3 {
        let a = admit(&l, vec![rule.clone()], 0, 5)
            .await
            .expect("alert only");
        l.settle(a, 1, 5);
    }
    let text = l.metrics.render(Format::Text);
    assert!(
        text.contains(
            r#"llm_gateway_budget_spent_usd{scope="key",name="k",team="",period="day"} 0.000000015"#
        ),
        "{text}"
    );
    assert!(
        text.contains(r#"llm_gateway_rate_limit_allowed_total{team="t",key="k",limit="budget"} 3"#)
    );
}

#[tokio::test]
async fn restored_spend_counts_against_the_budget() {
    let l = limiter();
    let budget = Budget {
        limit_nanos: 100,
        period: Period::Week,
        action: BudgetAction::Block,
        overshoot: Overshoot::Bounded,
    };
    let rule = Rule::new(ScopeKind::Key, "k", Limits::default(), Some(budget));
    l.restore_spend(&rule, 100);
    assert_eq!(
        admit(&l, vec![rule], 0, 0)
            .await
            .expect_err("spent before the restart")
            .limit,
        LimitKind::Budget
    );
}

#[test]
fn quota_headers_use_openai_names_and_formats() {
    let q = Quota {
        requests: Some((60, 59, 1.0)),
        tokens: Some((1000, -5, 90.5)),
    };
    let mut h = http::HeaderMap::new();
    q.write_headers(&mut h);
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(String::from);
    assert_eq!(get("x-ratelimit-limit-requests").as_deref(), Some("60"));
    assert_eq!(get("x-ratelimit-remaining-requests").as_deref(), Some("59"));
    assert_eq!(get("x-ratelimit-reset-requests").as_deref(), Some("1s"));
    assert_eq!(get("x-ratelimit-remaining-tokens").as_deref(), Some("0"));
    assert_eq!(get("x-ratelimit-reset-tokens").as_deref(), Some("1m31s"));
    assert_eq!(get("x-ratelimit-limit-tokens").as_deref(), Some("1000"));
    assert_eq!(h.len(), 6);
    // Only the kinds limited; the upstream's own headers stay.
    let mut h = http::HeaderMap::new();
    h.insert("x-request-id", http::HeaderValue::from_static("req-1"));
    Quota {
        requests: None,
        tokens: Some((u64::MAX, i64::MAX, 0.02)),
    }
    .write_headers(&mut h);
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(String::from);
    assert_eq!(
        get("x-ratelimit-limit-tokens").as_deref(),
        Some("18446744073709551615")
    );
    assert_eq!(
        get("x-ratelimit-remaining-tokens").as_deref(),
        Some("9223372036854775807")
    );
    assert_eq!(get("x-ratelimit-reset-tokens").as_deref(), Some("20ms"));
    assert_eq!(get("x-request-id").as_deref(), Some("req-1"));
    assert_eq!(h.len(), 4);
    let mut h = http::HeaderMap::new();
    Quota::default().write_headers(&mut h);
    assert!(h.is_empty());
    assert_eq!(format_duration(0.02), "20ms");
    assert_eq!(format_duration(3723.0), "1h2m3s");
    assert_eq!(format_duration(0.0), "0ms");
    assert_eq!(format_duration(-3.0), "0ms");
    assert_eq!(format_duration(1.0), "1s");
    assert_eq!(format_duration(359.2), "6m0s");
    assert_eq!(format_duration(86_400.0 * 31.0), "744h0m0s");
}

#[tokio::test]
async fn a_budget_without_overshoot_refuses_what_does_not_fit() {
    let l = limiter();
    let budget = Budget {
        limit_nanos: 10_000_000,
        period: Period::Month,
        action: BudgetAction::Block,
        overshoot: Overshoot::None,
    };
    let rule = Rule::new(ScopeKind::Team, "search", Limits::default(), Some(budget));
    // A 1-cent budget: 0.6 cent reserved, then 0.5 more does not fit (1.1 > 1), 0.4 does.
    let a = admit(&l, vec![rule.clone()], 0, 6_000_000)
        .await
        .expect("first");
    let rej = admit(&l, vec![rule.clone()], 0, 5_000_000)
        .await
        .expect_err("0.5 cent more would exceed the budget");
    assert_eq!(rej.limit, LimitKind::Budget);
    assert!(rej.message().contains("maximum cost"), "{}", rej.message());
    let b = admit(&l, vec![rule.clone()], 0, 4_000_000)
        .await
        .expect("exactly the limit fits");
    l.settle(a, 0, 6_000_000);
    l.settle(b, 0, 4_000_000);
    // Spent to the nano-dollar: nothing more fits, not even a free request's 1 nano-USD.
    admit(&l, vec![rule.clone()], 0, 1)
        .await
        .expect_err("spent");
}
