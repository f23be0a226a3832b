//! `tollgate prices import --format litellm`: LiteLLM's `model_prices_and_context_window.json`
//! (shipped in the `litellm` wheel as `model_prices_and_context_window_backup.json`) to a price
//! file in the format of `prices/prices.toml`. Pure: the caller reads and writes the files.
//!
//! LiteLLM's prices are USD per token as JSON floats. Each float is converted through its
//! shortest round-trip decimal (what its author wrote: `1.25e-06` -> "0.00000125"), so the
//! conversion is exact; a value finer than 1e-12 USD per token is not representable in
//! pico-USD and is skipped, and so is one above 0.001 USD per token (1,000 USD per 1M), which
//! is a price in the wrong unit (per 1K or per 1M tokens) rather than a price.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write;

use serde_json::{Map, Value};

use super::price_table::FileModel;
use super::pricing::{PriceSpec, TierSpec};

/// Rates above this (pico-USD per token: 0.001 USD) are in the wrong unit.
const MAX_PICO_PER_TOKEN: u64 = 1_000_000_000;

/// The modes whose prices are per token.
const TOKEN_MODES: [&str; 4] = ["chat", "completion", "responses", "embedding"];

/// What an import produced and what it left out.
#[derive(Debug, Default)]
pub struct Imported {
    /// The models, in the file's order.
    pub models: Vec<FileModel>,
    /// Skipped entries by reason, each with the model names.
    pub skipped: BTreeMap<String, Vec<String>>,
    /// Kept entries with something odd (cache rates out of the usual ratios, a field dropped).
    pub warnings: Vec<String>,
}

/// Reads LiteLLM's JSON. `providers`: keep only entries whose `litellm_provider` starts with
/// one of these (empty: all).
pub fn import_litellm(json: &str, providers: &[String]) -> Result<Imported, String> {
    let root: Value = serde_json::from_str(json).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(entries) = root else {
        return Err("the top level must be an object of models".into());
    };
    let mut out = Imported::default();
    let skip = |out: &mut Imported, why: &str, name: &str| {
        out.skipped
            .entry(why.to_string())
            .or_default()
            .push(name.to_string());
    };
    for (name, entry) in &entries {
        let Value::Object(e) = entry else {
            skip(&mut out, "not an object", name);
            continue;
        };
        if name == "sample_spec" {
            continue;
        }
        let provider = e
            .get("litellm_provider")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !providers.is_empty() && !providers.iter().any(|p| provider.starts_with(p.as_str())) {
            skip(&mut out, "provider not selected", name);
            continue;
        }
        let mode = e.get("mode").and_then(Value::as_str).unwrap_or("chat");
        if !TOKEN_MODES.contains(&mode) {
            skip(
                &mut out,
                &format!("mode {mode:?} is not priced per token"),
                name,
            );
            continue;
        }
        match entry_spec(e, mode) {
            Ok((spec, warnings)) => {
                for w in warnings {
                    out.warnings.push(format!("{name}: {w}"));
                }
                out.models.push(FileModel {
                    name: name.clone(),
                    provider: provider.to_string(),
                    aliases: Vec::new(),
                    spec,
                });
            }
            Err(why) => skip(&mut out, &why, name),
        }
    }
    add_bare_aliases(&mut out.models);
    Ok(out)
}

/// `bedrock/us.anthropic.claude-...` is sent by clients as `us.anthropic.claude-...`: the
/// name without LiteLLM's routing prefix becomes an alias where no entry has it as its own
/// name and only one entry would claim it.
fn add_bare_aliases(models: &mut [FileModel]) {
    let names: HashSet<String> = models.iter().map(|m| m.name.clone()).collect();
    let mut claims: HashMap<String, usize> = HashMap::new();
    for m in models.iter() {
        if let Some((_, bare)) = m.name.split_once('/')
            && !bare.is_empty()
            && !names.contains(bare)
        {
            *claims.entry(bare.to_string()).or_default() += 1;
        }
    }
    for m in models.iter_mut() {
        if let Some((_, bare)) = m.name.split_once('/')
            && claims.get(bare) == Some(&1)
        {
            m.aliases.push(bare.to_string());
        }
    }
}

/// A per-token USD float as USD per 1M tokens, exactly.
fn per_million(v: &Value) -> Result<Option<String>, String> {
    let Some(f) = v.as_f64() else {
        return Err(format!("{v} is not a number"));
    };
    if f < 0.0 || !f.is_finite() {
        return Err(format!("{f} is not a price"));
    }
    let text = format!("{f}");
    let pico = super::pricing::parse_usd_pico(&text)
        .map_err(|_| format!("{text} USD per token is finer than 1e-12 USD"))?;
    if pico > MAX_PICO_PER_TOKEN {
        return Err(format!(
            "{text} USD per token looks like a price per 1K or 1M tokens"
        ));
    }
    Ok(Some(super::pricing::format_per_million(pico)))
}

/// One LiteLLM entry as a price.
fn entry_spec(e: &Map<String, Value>, mode: &str) -> Result<(PriceSpec, Vec<String>), String> {
    let mut warnings = Vec::new();
    let rate = |key: &str| -> Result<Option<String>, String> {
        match e.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => per_million(v).map_err(|err| format!("{key}: {err}")),
        }
    };
    let input = rate("input_cost_per_token")?.ok_or("no input_cost_per_token")?;
    let output = match rate("output_cost_per_token")? {
        Some(o) => o,
        None if mode == "embedding" => "0".into(),
        None => return Err("no output_cost_per_token".into()),
    };
    let mut spec = PriceSpec {
        input,
        output,
        cached_input: rate("cache_read_input_token_cost")?,
        cache_write: rate("cache_creation_input_token_cost")?,
        cache_write_1h: rate("cache_creation_input_token_cost_above_1hr")?,
        audio_input: rate("input_cost_per_audio_token")?,
        audio_output: rate("output_cost_per_audio_token")?,
        ..PriceSpec::default()
    };
    spec.tiers = tiers(e, "")?;
    let service = |suffix: &str| -> Result<Option<super::pricing::ServiceSpec>, String> {
        let (Some(input), Some(output)) = (
            rate(&format!("input_cost_per_token{suffix}"))?,
            rate(&format!("output_cost_per_token{suffix}"))?,
        ) else {
            return Ok(None);
        };
        Ok(Some(super::pricing::ServiceSpec {
            input,
            output,
            cached_input: rate(&format!("cache_read_input_token_cost{suffix}"))?,
            cache_write: rate(&format!("cache_creation_input_token_cost{suffix}"))?,
            cache_write_1h: None,
            audio_input: None,
            audio_output: None,
            tiers: tiers(e, suffix)?,
        }))
    };
    spec.priority = service("_priority")?;
    spec.flex = service("_flex")?;
    spec.batch = service("_batches")?;
    if let Some(q) = e
        .get("search_context_cost_per_query")
        .and_then(|v| v.get("search_context_size_medium"))
        .and_then(Value::as_f64)
    {
        let text = format!("{q}");
        match super::pricing::parse_usd_pico(&text) {
            Ok(_) => spec.web_search_call = Some(text),
            Err(_) => warnings.push(format!("web search price {text} dropped")),
        }
    }
    if e.contains_key("tiered_pricing") {
        warnings.push("tiered_pricing (volume tiers) not imported".into());
    }
    let pico = |s: &Option<String>| {
        s.as_deref()
            .and_then(|v| super::pricing::parse_usd_per_million(v).ok())
    };
    let (inp, cached, write) = (
        pico(&Some(spec.input.clone())).unwrap_or(0),
        pico(&spec.cached_input),
        pico(&spec.cache_write),
    );
    if let Some(c) = cached
        && inp > 0
        && c > inp
    {
        warnings.push(format!(
            "cache read {} above input {}",
            spec.cached_input.as_deref().unwrap_or(""),
            spec.input
        ));
    }
    if let (Some(c), Some(w)) = (cached, write)
        && w < c
    {
        warnings.push("cache write below cache read".into());
    }
    Ok((spec, warnings))
}

/// The context tiers LiteLLM writes as `input_cost_per_token_above_200k_tokens{suffix}`.
fn tiers(e: &Map<String, Value>, suffix: &str) -> Result<Vec<TierSpec>, String> {
    let mut out = Vec::new();
    for key in e.keys() {
        let Some(rest) = key.strip_prefix("input_cost_per_token_above_") else {
            continue;
        };
        let Some(k) = rest
            .strip_suffix(suffix)
            .and_then(|r| r.strip_suffix("k_tokens"))
        else {
            continue;
        };
        let Ok(thousands) = k.parse::<u64>() else {
            continue;
        };
        let tag = format!("above_{k}k_tokens{suffix}");
        let get = |name: &str| -> Result<Option<String>, String> {
            match e.get(&format!("{name}_{tag}")) {
                None | Some(Value::Null) => Ok(None),
                Some(v) => per_million(v).map_err(|err| format!("{name}_{tag}: {err}")),
            }
        };
        let base_output = e
            .get(&format!("output_cost_per_token{suffix}"))
            .or_else(|| e.get("output_cost_per_token"));
        let output = match get("output_cost_per_token")? {
            Some(o) => o,
            None => match base_output {
                Some(v) => per_million(v)?.unwrap_or_default(),
                None => "0".into(),
            },
        };
        out.push(TierSpec {
            above_input_tokens: thousands * 1000,
            input: get("input_cost_per_token")?.unwrap_or_default(),
            output,
            cached_input: get("cache_read_input_token_cost")?,
            cache_write: get("cache_creation_input_token_cost")?,
            cache_write_1h: None,
            audio_input: None,
            audio_output: None,
        });
    }
    out.sort_by_key(|t| t.above_input_tokens);
    Ok(out)
}

/// The import as a price file (the format of `prices/prices.toml`).
pub fn to_toml(imported: &Imported, as_of: &str, source: &str) -> String {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Generated by `tollgate prices import --format litellm` from {source}.\n\
         # Do not edit by hand: prices/prices.toml (hand-checked) wins over every entry here.\n\
         # USD per 1M tokens, converted exactly from LiteLLM's per-token floats; fees in USD."
    );
    let _ = writeln!(out, "as_of = {}", q(as_of));
    let _ = writeln!(out, "sources = [{}]\n", q(source));
    let rates = |out: &mut String, r: &[(&str, &Option<String>)]| {
        for (k, v) in r {
            if let Some(v) = v {
                let _ = write!(out, ", {k} = {}", q(v));
            }
        }
    };
    for m in &imported.models {
        let s = &m.spec;
        let _ = writeln!(out, "[[models]]");
        let _ = writeln!(out, "name = {}", q(&m.name));
        let _ = writeln!(out, "provider = {}", q(&m.provider));
        let _ = writeln!(out, "input = {}", q(&s.input));
        let _ = writeln!(out, "output = {}", q(&s.output));
        for (k, v) in [
            ("cached_input", &s.cached_input),
            ("cache_write", &s.cache_write),
            ("cache_write_1h", &s.cache_write_1h),
            ("audio_input", &s.audio_input),
            ("audio_output", &s.audio_output),
            ("web_search_call", &s.web_search_call),
        ] {
            if let Some(v) = v {
                let _ = writeln!(out, "{k} = {}", q(v));
            }
        }
        let tier_list = |out: &mut String, tiers: &[TierSpec]| {
            out.push('[');
            for (i, t) in tiers.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(
                    out,
                    "{{ above_input_tokens = {}, input = {}, output = {}",
                    t.above_input_tokens,
                    q(&t.input),
                    q(&t.output)
                );
                rates(
                    out,
                    &[
                        ("cached_input", &t.cached_input),
                        ("cache_write", &t.cache_write),
                    ],
                );
                out.push_str(" }");
            }
            out.push(']');
        };
        if !s.tiers.is_empty() {
            out.push_str("tiers = ");
            tier_list(&mut out, &s.tiers);
            out.push('\n');
        }
        for (k, v) in [
            ("priority", &s.priority),
            ("flex", &s.flex),
            ("batch", &s.batch),
        ] {
            let Some(v) = v else { continue };
            let _ = write!(
                out,
                "{k} = {{ input = {}, output = {}",
                q(&v.input),
                q(&v.output)
            );
            rates(
                &mut out,
                &[
                    ("cached_input", &v.cached_input),
                    ("cache_write", &v.cache_write),
                ],
            );
            if !v.tiers.is_empty() {
                out.push_str(", tiers = ");
                tier_list(&mut out, &v.tiers);
            }
            out.push_str(" }\n");
        }
        if !m.aliases.is_empty() {
            let list: Vec<String> = m.aliases.iter().map(|a| q(a)).collect();
            let _ = writeln!(out, "aliases = [{}]", list.join(", "));
        }
        out.push('\n');
    }
    out
}

/// A one-screen summary of an import: kept, skipped by reason, warnings.
pub fn report(imported: &Imported) -> String {
    let mut out = format!("imported {} models\n", imported.models.len());
    for (why, names) in &imported.skipped {
        let sample: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
        let _ = writeln!(
            out,
            "skipped {} ({why}): {}{}",
            names.len(),
            sample.join(", "),
            if names.len() > 3 { ", ..." } else { "" }
        );
    }
    if !imported.warnings.is_empty() {
        let _ = writeln!(out, "{} warnings:", imported.warnings.len());
        for w in imported.warnings.iter().take(20) {
            let _ = writeln!(out, "  {w}");
        }
        if imported.warnings.len() > 20 {
            let _ = writeln!(out, "  ...");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_convert_exactly_and_wrong_units_are_refused() {
        let v = |x: f64| per_million(&serde_json::json!(x));
        assert_eq!(v(1.25e-06), Ok(Some("1.25".into())));
        assert_eq!(v(3e-07), Ok(Some("0.3".into())));
        assert_eq!(v(1.5e-05), Ok(Some("15".into())));
        assert_eq!(v(7.5e-08), Ok(Some("0.075".into())));
        assert_eq!(v(0.0), Ok(Some("0".into())));
        assert!(v(2.5).is_err(), "2.5 USD per token is a per-1M price");
        assert!(v(1.234e-13).is_err(), "finer than pico-USD");
        assert!(v(-1e-6).is_err());
    }

    #[test]
    fn tiers_service_tiers_and_aliases_are_read() {
        let json = r#"{
          "sample_spec": {"input_cost_per_token": 0},
          "gemini-2.5-pro": {"litellm_provider": "gemini", "mode": "chat",
            "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
            "cache_read_input_token_cost": 1.25e-07,
            "input_cost_per_token_above_200k_tokens": 2.5e-06,
            "output_cost_per_token_above_200k_tokens": 1.5e-05,
            "cache_read_input_token_cost_above_200k_tokens": 2.5e-07},
          "gpt-5": {"litellm_provider": "openai", "mode": "chat",
            "input_cost_per_token": 1.25e-06, "output_cost_per_token": 1e-05,
            "input_cost_per_token_priority": 2.5e-06, "output_cost_per_token_priority": 2e-05,
            "input_cost_per_token_batches": 6.25e-07, "output_cost_per_token_batches": 5e-06,
            "search_context_cost_per_query": {"search_context_size_medium": 0.01}},
          "bedrock/us.anthropic.claude-x-v1:0": {"litellm_provider": "bedrock", "mode": "chat",
            "input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05},
          "dall-e-3": {"litellm_provider": "openai", "mode": "image_generation"},
          "broken": {"litellm_provider": "openai", "mode": "chat", "input_cost_per_token": 3.0,
            "output_cost_per_token": 1e-05}
        }"#;
        let imp = import_litellm(json, &[]).expect("import");
        let names: Vec<&str> = imp.models.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "bedrock/us.anthropic.claude-x-v1:0",
                "gemini-2.5-pro",
                "gpt-5"
            ]
        );
        let g = &imp.models[1].spec;
        assert_eq!(g.tiers.len(), 1);
        assert_eq!(g.tiers[0].above_input_tokens, 200_000);
        assert_eq!(g.tiers[0].input, "2.5");
        assert_eq!(g.tiers[0].output, "15");
        assert_eq!(g.tiers[0].cached_input.as_deref(), Some("0.25"));
        let o = &imp.models[2].spec;
        assert_eq!(o.priority.as_ref().map(|p| p.input.as_str()), Some("2.5"));
        assert_eq!(o.batch.as_ref().map(|p| p.output.as_str()), Some("5"));
        assert_eq!(o.web_search_call.as_deref(), Some("0.01"));
        assert_eq!(imp.models[0].aliases, ["us.anthropic.claude-x-v1:0"]);
        assert_eq!(imp.skipped.values().map(Vec::len).sum::<usize>(), 2);
        // The file written reads back as the same prices.
        let text = to_toml(&imp, "2026-12-02", "test");
        let file = super::super::price_table::PriceFile::parse(&text).expect("reads back");
        assert_eq!(file.models.len(), 3);
        for (a, b) in file.models.iter().zip(&imp.models) {
            assert_eq!(a.spec, b.spec, "{}", a.name);
            assert_eq!(a.aliases, b.aliases);
        }
        // Only the providers asked for (a prefix: "gemini" and not "vertex_ai").
        let only = import_litellm(json, &["gemini".into()]).expect("import");
        assert_eq!(only.models.len(), 1);
    }

    /// The real LiteLLM file (trimmed, unchanged entries): every model of the hand-checked
    /// table it lists has the same standard rates there, exactly.
    #[test]
    fn litellm_rates_equal_the_hand_checked_rows() {
        let json = include_str!("../../tests/data/litellm/model_prices_trimmed.json");
        let imp = import_litellm(json, &[]).expect("import");
        let hand = crate::metering::PriceTable::from_toml(super::super::pricing::BUILTIN_PRICES)
            .expect("hand-checked table");
        let mut compared = 0;
        for m in &imp.models {
            let Some(mine) = hand.versions(&m.name).and_then(<[_]>::last) else {
                continue;
            };
            let theirs = m
                .spec
                .to_price_for(&m.name, crate::metering::PriceSource::Catalog)
                .expect("imported price");
            let (a, b) = (&mine.standard.base, &theirs.standard.base);
            assert_eq!(
                (
                    a.input,
                    a.output,
                    a.cached_input,
                    a.cache_write,
                    a.cache_write_1h
                ),
                (
                    b.input,
                    b.output,
                    b.cached_input,
                    b.cache_write,
                    b.cache_write_1h
                ),
                "{}",
                m.name
            );
            compared += 1;
        }
        assert!(compared >= 30, "compared {compared}");
        // Gemini 2.5 Pro's 200k tier and GPT-5's priority rates come through.
        let g = imp
            .models
            .iter()
            .find(|m| m.name == "gemini-2.5-pro")
            .expect("gemini-2.5-pro");
        assert_eq!(g.spec.tiers[0].above_input_tokens, 200_000);
        assert!(imp.skipped.values().flatten().all(|n| n != "gpt-4o"));
    }
}
