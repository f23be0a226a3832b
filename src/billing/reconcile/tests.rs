use super::*;
use crate::billing::config::{Mapping, SourceConfig, SourceKind};
use crate::billing::source::BilledLine;
use crate::ledger::report::{GroupKey, ReportQuery, ReportRow, Totals};

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 12, 1).expect("date")
}

fn source(name: &str, kind: SourceKind, provider: &str) -> SourceConfig {
    SourceConfig {
        name: name.into(),
        kind,
        admin_key: "k".into(),
        base_url: "http://x".into(),
        interval: std::time::Duration::from_secs(3600),
        lookback_days: 3,
        timeout: std::time::Duration::from_secs(30),
        mappings: vec![Mapping {
            provider: provider.into(),
            projects: vec!["proj_gw".into()],
            api_keys: vec![],
        }],
    }
}

fn line(
    source: &str,
    ds: Dataset,
    model: &str,
    project: &str,
    item: &str,
    cost: i64,
    q: i64,
) -> StoredLine {
    StoredLine {
        source: source.into(),
        line: BilledLine {
            day: day(),
            dataset: ds,
            model: model.into(),
            project: project.into(),
            api_key: String::new(),
            item: item.into(),
            service_tier: String::new(),
            cost_nanos: cost,
            quantity: q,
        },
    }
}

fn metered(rows: Vec<(&str, &str, Totals)>) -> Report {
    Report {
        query: ReportQuery {
            from: chrono::Utc::now(),
            to: chrono::Utc::now(),
            group_by: vec![GroupKey::Provider, GroupKey::Model, GroupKey::Day],
        },
        rows: rows
            .into_iter()
            .map(|(p, m, t)| ReportRow {
                groups: vec![p.into(), m.into(), day().to_string()],
                totals: t,
            })
            .collect(),
    }
}

#[test]
fn bypass_and_price_errors_are_explained() {
    let prices = PriceTable::builtin().expect("prices");
    let model = "gpt-4o-mini";
    let rates = prices
        .lookup(model)
        .expect("priced")
        .rates_for(ServiceTier::Standard)
        .for_input(0);
    // Metered: 1M input, 100k output at the table's rates.
    let m_cost = (1_000_000 * rates.input + 100_000 * rates.output) as i64 / 1000;
    let t = Totals {
        requests: 10,
        input_tokens: 1_000_000,
        output_tokens: 100_000,
        cost_nanos: m_cost,
        ..Totals::default()
    };
    let out_cost_doubled = (100_000 * rates.output * 2) as i64 / 1000;
    let in_cost = (1_000_000 * rates.input) as i64 / 1000;
    let lines = vec![
        // Same tokens, output billed at twice the table's rate.
        line(
            "oa",
            Dataset::Usage,
            model,
            "proj_gw",
            "input",
            0,
            1_000_000,
        ),
        line("oa", Dataset::Usage, model, "proj_gw", "output", 0, 100_000),
        line(
            "oa",
            Dataset::Cost,
            model,
            "proj_gw",
            "input_tokens",
            in_cost,
            0,
        ),
        line(
            "oa",
            Dataset::Cost,
            model,
            "proj_gw",
            "output_tokens",
            out_cost_doubled,
            0,
        ),
        // Another project's lines are not the gateway's.
        line(
            "oa",
            Dataset::Cost,
            model,
            "proj_other",
            "input_tokens",
            999,
            0,
        ),
        // Anthropic: a quarter more tokens billed than metered.
        line(
            "an",
            Dataset::Usage,
            "claude-x",
            "proj_gw",
            "input",
            0,
            1250,
        ),
        line(
            "an",
            Dataset::Usage,
            "claude-x",
            "proj_gw",
            "output",
            0,
            125,
        ),
        line(
            "an",
            Dataset::Cost,
            "claude-x",
            "proj_gw",
            "output_tokens",
            1250,
            0,
        ),
    ];
    let sources = [
        source("oa", SourceKind::OpenAi, "openai"),
        source("an", SourceKind::Anthropic, "anthropic"),
    ];
    let rec = reconcile(
        day(),
        day() + chrono::Duration::days(1),
        parse_group_by("").expect("all"),
        &sources,
        &lines,
        &metered(vec![
            ("openai", model, t),
            (
                "anthropic",
                "claude-x",
                Totals {
                    input_tokens: 1000,
                    output_tokens: 100,
                    cost_nanos: 1000,
                    ..Totals::default()
                },
            ),
        ]),
        Some(&prices),
    );
    let oa = rec
        .rows
        .iter()
        .find(|r| r.groups[0] == "openai")
        .expect("openai row");
    assert_eq!(
        oa.billed_nanos,
        in_cost + out_cost_doubled,
        "other project excluded"
    );
    assert!(
        oa.explanation.contains("price table is wrong"),
        "{}",
        oa.explanation
    );
    assert!(oa.explanation.contains("output: $"), "{}", oa.explanation);
    assert!(!oa.explanation.contains("input: $"), "{}", oa.explanation);
    let an = rec
        .rows
        .iter()
        .find(|r| r.groups[0] == "anthropic")
        .expect("anthropic row");
    assert_eq!(an.capture_ratio(), Some(0.8));
    assert!(
        an.explanation
            .contains("250 input and 25 output tokens billed but not metered (20.0%"),
        "{}",
        an.explanation
    );
    let csv = rec.to_csv();
    assert!(
        csv.starts_with("provider,model,day,billed_usd,metered_usd,"),
        "{csv}"
    );
    assert!(rec.to_table().contains("bill vs meter"));
    let j = rec.to_json();
    assert_eq!(j["rows"][0]["capture_ratio"], 0.8);
    assert!(parse_group_by("provider,colour").is_err());
}
