use super::*;
use crate::metering::PriceTable;

fn spec(toml_text: &str) -> PriceSpec {
    toml::from_str(toml_text).expect("price spec")
}

fn price(toml_text: &str) -> Price {
    spec(toml_text)
        .to_price_for("m", PriceSource::Config)
        .expect("valid price")
}

fn usage(input: u64, output: u64) -> Usage {
    Usage {
        input,
        output,
        ..Usage::default()
    }
}

#[test]
fn parses_prices_exactly() {
    assert_eq!(parse_usd_per_million("2.50"), Ok(2_500_000));
    assert_eq!(parse_usd_per_million("0.075"), Ok(75_000));
    assert_eq!(parse_usd_per_million("0.000001"), Ok(1));
    assert_eq!(parse_usd_per_million("15"), Ok(15_000_000));
    assert!(parse_usd_per_million("0.0000001").is_err());
    assert!(parse_usd_per_million("-1").is_err());
    assert!(parse_usd_per_million("abc").is_err());
    assert!(parse_usd_per_million(".").is_err());
    assert_eq!(parse_usd_pico("0.01"), Ok(10_000_000_000));
    assert_eq!(parse_usd_pico("0.000000000001"), Ok(1));
    assert_eq!(format_per_million(2_500_000), "2.5");
    assert_eq!(format_per_million(75_000), "0.075");
    assert_eq!(format_per_million(15_000_000), "15");
    assert_eq!(format_usd_pico(10_000_000_000), "0.01");
}

#[test]
fn openai_cost_bills_cached_tokens_at_the_cached_rate() {
    // gpt-4o: $2.50 in, $10 out, $1.25 cached. 1000 prompt of which 400 cached, 200 out:
    // 600*2.5e-6 + 400*1.25e-6 + 200*10e-6 = 0.0015 + 0.0005 + 0.002 = 0.004 USD.
    let p = price(
        r#"input = "2.50"
output = "10.00"
cached_input = "1.25""#,
    );
    let u = Usage {
        cached_read: 400,
        ..usage(1000, 200)
    };
    assert_eq!(p.cost_nanos(&u), 4_000_000);
}

#[test]
fn anthropic_cost_bills_both_cache_write_ttls() {
    // claude-sonnet-4-5: $3 in, $15 out, $0.30 read, $3.75 write 5m, $6 write 1h.
    let p = price(
        r#"input = "3"
output = "15"
cached_input = "0.30"
cache_write = "3.75"
cache_write_1h = "6""#,
    );
    let u = Usage {
        input: 10 + 1000 + 300,
        output: 50,
        cached_read: 1000,
        cache_write: 300,
        cache_write_1h: 100,
        reasoning: 0,
    };
    // 10*3000000 + 1000*300000 + 200*3750000 + 100*6000000 + 50*15000000 pico
    let pico = 30_000_000u64 + 300_000_000 + 750_000_000 + 600_000_000 + 750_000_000;
    assert_eq!(p.cost_nanos(&u), pico / 1000);
}

#[test]
fn cost_rounds_to_nearest_nano() {
    let p = price("input = \"0.0015\"\noutput = \"0\"");
    assert_eq!(p.cost_nanos(&usage(1, 0)), 2);
    let p = price("input = \"0.0014\"\noutput = \"0\"");
    assert_eq!(p.cost_nanos(&usage(1, 0)), 1);
}

/// Gemini 2.5 Pro: $1.25 / $10 up to 200k input tokens, $2.50 / $15 above, for every token
/// of the request (a cliff, not a marginal rate).
#[test]
fn context_tiers_are_cliffs_at_the_threshold() {
    let p = price(
        r#"input = "1.25"
output = "10"
cached_input = "0.125"
tiers = [{ above_input_tokens = 200000, input = "2.50", output = "15", cached_input = "0.25" }]"#,
    );
    // Exactly 200,000: 200000*1.25e-6 + 1000*10e-6 = 0.25 + 0.01 = 0.26 USD.
    assert_eq!(p.cost_nanos(&usage(200_000, 1000)), 260_000_000);
    // One above: 200001*2.5e-6 + 1000*15e-6 = 0.5000025 + 0.015 = 0.5150025 USD.
    assert_eq!(p.cost_nanos(&usage(200_001, 1000)), 515_002_500);
    // Cached reads above the threshold at the tier's cached rate:
    // 1 * 2.5e-6 + 200000 * 0.25e-6 = 0.0000025 + 0.05 = 0.0500025 USD.
    let u = Usage {
        cached_read: 200_000,
        ..usage(200_001, 0)
    };
    assert_eq!(p.cost_nanos(&u), 50_002_500);
}

#[test]
fn tiers_must_ascend() {
    let e = spec(
        r#"input = "1"
output = "2"
tiers = [{ above_input_tokens = 272000, input = "2", output = "4" }, { above_input_tokens = 128000, input = "3", output = "6" }]"#,
    )
    .to_price_for("m", PriceSource::Config)
    .expect_err("descending tiers");
    assert!(e.contains("ascending"), "{e}");
}

/// Batch defaults to half of standard (OpenAI and Anthropic publish 50 %), tiers included.
#[test]
fn batch_is_half_price_unless_priced() {
    let p = price(
        r#"input = "2.50"
output = "10"
tiers = [{ above_input_tokens = 128000, input = "5", output = "20" }]"#,
    );
    let batch = Billing {
        service_tier: ServiceTier::Batch,
        ..Billing::default()
    };
    // 1000*1.25e-6 + 1000*5e-6 = 0.00625 USD.
    assert_eq!(p.cost_nanos_for(&usage(1000, 1000), &batch), 6_250_000);
    // Above the tier: 128001*2.5e-6 + 0 = 0.3200025 USD.
    assert_eq!(p.cost_nanos_for(&usage(128_001, 0), &batch), 320_002_500);
    let p = price(
        r#"input = "2.50"
output = "10"
batch = { input = "1", output = "4" }"#,
    );
    // 1000*1e-6 + 1000*4e-6 = 0.005 USD.
    assert_eq!(p.cost_nanos_for(&usage(1000, 1000), &batch), 5_000_000);
}

/// GPT-5 priority: $2.50 in, $0.25 cached, $20 out; flex without its own rates is standard.
#[test]
fn priority_and_flex_service_tiers() {
    let p = price(
        r#"input = "1.25"
output = "10"
cached_input = "0.125"
priority = { input = "2.50", output = "20", cached_input = "0.25" }"#,
    );
    let u = Usage {
        cached_read: 200,
        ..usage(1000, 100)
    };
    let at = |t| Billing {
        service_tier: t,
        ..Billing::default()
    };
    // 800*2.5e-6 + 200*0.25e-6 + 100*20e-6 = 0.002 + 0.00005 + 0.002 = 0.00405 USD.
    assert_eq!(p.cost_nanos_for(&u, &at(ServiceTier::Priority)), 4_050_000);
    // 800*1.25e-6 + 200*0.125e-6 + 100*10e-6 = 0.001 + 0.000025 + 0.001 = 0.002025 USD.
    assert_eq!(p.cost_nanos_for(&u, &at(ServiceTier::Flex)), 2_025_000);
    assert_eq!(p.cost_nanos_for(&u, &at(ServiceTier::Standard)), 2_025_000);
    assert_eq!(ServiceTier::parse("priority"), ServiceTier::Priority);
    assert_eq!(ServiceTier::parse("default"), ServiceTier::Standard);
    assert_eq!(ServiceTier::parse("auto"), ServiceTier::Standard);
}

#[test]
fn multipliers_scale_the_cost_rounding_to_nearest() {
    assert_eq!(apply_multiplier(4_050_000, 850_000), 3_442_500);
    assert_eq!(apply_multiplier(4_050_000, 1_000_000), 4_050_000);
    assert_eq!(apply_multiplier(3, 500_000), 2);
    assert_eq!(apply_multiplier(1_000, 1_100_000), 1_100);
    // Saturates at the ledger's maximum, so metrics and ledger record the same cost.
    assert_eq!(apply_multiplier(u64::MAX, 2_000_000), MAX_COST_NANOS);
}

/// Audio tokens at their own rates: gpt-4o-audio-like $2.50 text in, $40 audio in, $10 text
/// out, $80 audio out.
#[test]
fn audio_tokens_at_their_own_rates() {
    let p = price(
        r#"input = "2.50"
output = "10"
audio_input = "40"
audio_output = "80""#,
    );
    let b = Billing {
        audio_input: 600,
        audio_output: 300,
        ..Billing::default()
    };
    // 400*2.5e-6 + 600*40e-6 + 200*10e-6 + 300*80e-6 = 0.001 + 0.024 + 0.002 + 0.024 = 0.051.
    assert_eq!(p.cost_nanos_for(&usage(1000, 500), &b), 51_000_000);
    // Without audio rates, audio is billed as text: 1000*2.5e-6 + 500*10e-6 = 0.0075.
    let p = price("input = \"2.50\"\noutput = \"10\"");
    assert_eq!(p.cost_nanos_for(&usage(1000, 500), &b), 7_500_000);
}

#[test]
fn request_and_web_search_fees() {
    let p = price(
        r#"input = "3"
output = "15"
per_request = "0.001"
web_search_call = "0.01""#,
    );
    let b = Billing {
        web_search_calls: 3,
        ..Billing::default()
    };
    // 1000*3e-6 + 100*15e-6 + 0.001 + 3*0.01 = 0.003 + 0.0015 + 0.001 + 0.03 = 0.0355 USD.
    assert_eq!(p.cost_nanos_for(&usage(1000, 100), &b), 35_500_000);
}

#[test]
fn absurd_counts_saturate_instead_of_wrapping() {
    let p = price("input = \"999999\"\noutput = \"999999\"\nper_request = \"1000000\"");
    let b = Billing {
        web_search_calls: u64::MAX,
        ..Billing::default()
    };
    assert_eq!(
        p.cost_nanos_for(&usage(u64::MAX, u64::MAX), &b),
        MAX_COST_NANOS
    );
}

/// A price change applies from its date; a row keeps the price of its own time.
#[test]
fn effective_dates_pick_the_price_of_the_time() {
    let mut t = PriceTable::default();
    let old = spec("input = \"2\"\noutput = \"8\"")
        .to_price_for("m", PriceSource::Config)
        .expect("old");
    let new = spec("input = \"1\"\noutput = \"4\"\neffective_from = \"2026-06-01\"")
        .to_price_for("m", PriceSource::Config)
        .expect("new");
    t.set("m", old);
    t.set("m", new);
    let june = parse_day("2026-06-01").expect("day");
    let u = usage(1_000_000, 0);
    let before = t.lookup_at("m", june - 1).expect("price before");
    assert_eq!(before.cost_nanos(&u), 2_000_000_000);
    assert_eq!(&*before.id, "m");
    let after = t.lookup_at("m", june).expect("price from the date");
    assert_eq!(after.cost_nanos(&u), 1_000_000_000);
    assert_eq!(&*after.id, "m@2026-06-01");
    // An undated price set later replaces both.
    t.set(
        "m",
        spec("input = \"3\"\noutput = \"9\"")
            .to_price_for("m", PriceSource::Config)
            .expect("undated"),
    );
    assert_eq!(
        t.lookup_at("m", june).map(|p| p.cost_nanos(&u)),
        Some(3_000_000_000)
    );
}

#[test]
fn lookup_falls_back_to_undated_and_unprefixed_ids() {
    let mut t = PriceTable::default();
    let p = price("input = \"1\"\noutput = \"2\"\ncached_input = \"0.5\"");
    t.set("gpt-4o", p.clone());
    t.set("claude-3-5-haiku", p.clone());
    let cost = |m: &str| t.lookup(m).map(|p| p.cost_nanos(&usage(1000, 0)));
    // 1000 tokens at $1 per 1M: 0.001 USD.
    assert_eq!(cost("gpt-4o"), Some(1_000_000));
    assert_eq!(cost("gpt-4o-2024-08-06"), Some(1_000_000));
    assert_eq!(cost("claude-3-5-haiku-20241022"), Some(1_000_000));
    assert_eq!(cost("openai/gpt-4o"), Some(1_000_000));
    assert_eq!(cost("gpt-4o-mini"), None);
    assert_eq!(cost("llama3.2"), None);
}

#[test]
fn builtin_table_loads_and_prices_the_common_models() {
    let t = PriceTable::builtin().expect("built-in prices parse");
    assert!(!t.as_of().is_empty());
    for m in [
        "gpt-4o",
        "gpt-4o-mini",
        "claude-sonnet-4-5",
        "text-embedding-3-small",
    ] {
        let p = t
            .lookup(m)
            .unwrap_or_else(|| panic!("{m} has no built-in price"));
        assert!(p.standard.base.input > 0, "{m}");
        assert_eq!(p.source, PriceSource::Builtin, "{m}: hand-checked wins");
    }
}

#[test]
fn cost_saturates_at_the_ledger_maximum() {
    // Rates near u64::MAX pico-USD a token: five products near 2^128 each, whose sum
    // overflows u128 unless it saturates.
    let p = price(
        r#"input = "18446744073709"
output = "18446744073709"
cached_input = "18446744073709"
cache_write = "18446744073709"
cache_write_1h = "18446744073709""#,
    );
    let all = Usage {
        input: u64::MAX,
        output: u64::MAX,
        cached_read: u64::MAX / 3,
        cache_write: u64::MAX / 3,
        cache_write_1h: u64::MAX / 5,
        reasoning: 0,
    };
    assert_eq!(p.cost_nanos(&all), MAX_COST_NANOS);
    // 9.2e18 output tokens at $0.60 per 1M: 5.5e12 USD, counted and stored as the maximum.
    let gpt = price(
        r#"input = "0.15"
output = "0.60""#,
    );
    let absurd = usage(0, 9_200_000_000_000_000_000);
    assert_eq!(gpt.cost_nanos(&absurd), MAX_COST_NANOS);
    assert_eq!(i64::try_from(MAX_COST_NANOS), Ok(i64::MAX));
    assert_eq!(apply_multiplier(MAX_COST_NANOS, 3_000_000), MAX_COST_NANOS);
    // At the plausibility bound the cost is exact: 10M output tokens at $0.60 = $6.
    let (bounded, _) = absurd.bounded(crate::metering::DEFAULT_MAX_TOKENS_PER_REQUEST);
    assert_eq!(gpt.cost_nanos(&bounded), 6_000_000_000);
    assert_eq!(gpt.cost_nanos(&Usage::default()), 0);
}
