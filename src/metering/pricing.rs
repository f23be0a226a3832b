//! The price table: built-in prices (`prices/prices.toml`, compiled in) plus overrides from the
//! config. Rates are held as integer pico-USD per token, which represents every price quoted to
//! six decimals per million tokens exactly; costs come out as integer nano-USD.

use std::collections::HashMap;

use serde::Deserialize;

use super::Usage;

/// The built-in table, embedded so the binary needs no file at run time.
pub const BUILTIN_PRICES: &str = include_str!("../../prices/prices.toml");

/// Per-token rates of one model, in pico-USD (1e-12 USD) per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Price {
    /// Uncached input.
    pub input: u64,
    /// Output, reasoning included.
    pub output: u64,
    /// Input read from the prompt cache.
    pub cached_input: u64,
    /// Input written to the prompt cache (five-minute TTL).
    pub cache_write: u64,
    /// Input written to the prompt cache with a one-hour TTL.
    pub cache_write_1h: u64,
}

impl Price {
    /// The cost of `usage` at these rates, in nano-USD, rounded to the nearest nano-USD once
    /// per request (the error is below 5e-10 USD a request).
    pub fn cost_nanos(&self, usage: &Usage) -> u64 {
        let u = usage.clamped();
        let uncached = u.input - u.cached_read - u.cache_write;
        let write_5m = u.cache_write - u.cache_write_1h;
        let pico: u128 = uncached as u128 * self.input as u128
            + u.cached_read as u128 * self.cached_input as u128
            + write_5m as u128 * self.cache_write as u128
            + u.cache_write_1h as u128 * self.cache_write_1h as u128
            + u.output as u128 * self.output as u128;
        u64::try_from((pico + 500) / 1000).unwrap_or(u64::MAX)
    }
}

/// Prices as written in TOML: USD per million tokens, as decimal strings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// Uncached input, USD per 1M tokens.
    pub input: String,
    /// Output, USD per 1M tokens.
    pub output: String,
    /// Cached input; defaults to `input`.
    pub cached_input: Option<String>,
    /// Cache write (5 min TTL); defaults to `input`.
    pub cache_write: Option<String>,
    /// Cache write (1 h TTL); defaults to `cache_write`.
    pub cache_write_1h: Option<String>,
}

impl PriceSpec {
    /// Converts to integer rates, or says which field is not a price.
    pub fn to_price(&self) -> Result<Price, String> {
        let field =
            |name: &str, v: &str| parse_usd_per_million(v).map_err(|e| format!("{name}: {e}"));
        let input = field("input", &self.input)?;
        let output = field("output", &self.output)?;
        let cached_input = match &self.cached_input {
            Some(v) => field("cached_input", v)?,
            None => input,
        };
        let cache_write = match &self.cache_write {
            Some(v) => field("cache_write", v)?,
            None => input,
        };
        let cache_write_1h = match &self.cache_write_1h {
            Some(v) => field("cache_write_1h", v)?,
            None => cache_write,
        };
        Ok(Price {
            input,
            output,
            cached_input,
            cache_write,
            cache_write_1h,
        })
    }
}

/// Parses "2.50" (USD per 1M tokens) into pico-USD per token, exactly.
pub fn parse_usd_per_million(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!(
            "{s:?} is not a decimal number of USD per 1M tokens"
        ));
    }
    if frac.len() > 6 {
        return Err(format!("{s:?} has more than 6 decimals"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("{s:?} is too large"))?
    };
    let mut frac_val: u64 = 0;
    for i in 0..6 {
        frac_val = frac_val * 10 + frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
    }
    whole
        .checked_mul(1_000_000)
        .and_then(|w| w.checked_add(frac_val))
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    as_of: String,
    #[serde(default)]
    #[allow(dead_code)]
    sources: Vec<String>,
    models: Vec<PriceFileModel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFileModel {
    name: String,
    #[allow(dead_code)]
    provider: String,
    input: String,
    output: String,
    cached_input: Option<String>,
    cache_write: Option<String>,
    cache_write_1h: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
}

/// Model name to price, with the lookup rules for dated snapshot ids.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<Box<str>, Price>,
    as_of: String,
}

impl PriceTable {
    /// The built-in table.
    pub fn builtin() -> Result<PriceTable, String> {
        PriceTable::from_toml(BUILTIN_PRICES)
    }

    /// Reads a table in the format of `prices/prices.toml`.
    pub fn from_toml(text: &str) -> Result<PriceTable, String> {
        let file: PriceFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut table = PriceTable {
            prices: HashMap::new(),
            as_of: file.as_of,
        };
        for m in file.models {
            let spec = PriceSpec {
                input: m.input,
                output: m.output,
                cached_input: m.cached_input,
                cache_write: m.cache_write,
                cache_write_1h: m.cache_write_1h,
            };
            let price = spec.to_price().map_err(|e| format!("{}: {e}", m.name))?;
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                table.prices.insert(name.as_str().into(), price);
            }
        }
        Ok(table)
    }

    /// The date the built-in prices were checked.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// Number of model ids (names and aliases) with a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Every model id (names and aliases) with a price, in no order.
    pub fn model_ids(&self) -> impl Iterator<Item = &str> {
        self.prices.keys().map(|k| &**k)
    }

    /// Sets or replaces the price of one model id.
    pub fn set(&mut self, model: &str, price: Price) {
        self.prices.insert(model.into(), price);
    }

    /// The price of `model`: the exact id, else the id without a date suffix
    /// (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`), else without a `vendor/` prefix.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.prices.get(model) {
            return Some(p);
        }
        let undated = strip_date_suffix(model);
        if undated.len() != model.len()
            && let Some(p) = self.prices.get(undated)
        {
            return Some(p);
        }
        match model.rsplit_once('/') {
            Some((_, bare)) => self.lookup(bare),
            None => None,
        }
    }
}

/// `gpt-4o-2024-08-06` -> `gpt-4o`, `claude-3-5-haiku-20241022` -> `claude-3-5-haiku`.
fn strip_date_suffix(model: &str) -> &str {
    let b = model.as_bytes();
    let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
    // -YYYY-MM-DD
    if b.len() > 11 {
        let t = &b[b.len() - 11..];
        if t[0] == b'-'
            && digits(&t[1..5])
            && t[5] == b'-'
            && digits(&t[6..8])
            && t[8] == b'-'
            && digits(&t[9..])
        {
            return &model[..model.len() - 11];
        }
    }
    // -YYYYMMDD
    if b.len() > 9 {
        let t = &b[b.len() - 9..];
        if t[0] == b'-' && digits(&t[1..]) && t[1] == b'2' {
            return &model[..model.len() - 9];
        }
    }
    model
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price(input: &str, output: &str, cached: &str) -> Price {
        PriceSpec {
            input: input.into(),
            output: output.into(),
            cached_input: Some(cached.into()),
            ..PriceSpec::default()
        }
        .to_price()
        .expect("valid price")
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
    }

    #[test]
    fn openai_cost_bills_cached_tokens_at_the_cached_rate() {
        // gpt-4o: $2.50 in, $10 out, $1.25 cached. 1000 prompt of which 400 cached, 200 out:
        // 600*2.5e-6 + 400*1.25e-6 + 200*10e-6 = 0.0015 + 0.0005 + 0.002 = 0.004 USD.
        let p = price("2.50", "10.00", "1.25");
        let u = Usage {
            input: 1000,
            output: 200,
            cached_read: 400,
            ..Usage::default()
        };
        assert_eq!(p.cost_nanos(&u), 4_000_000);
    }

    #[test]
    fn anthropic_cost_bills_both_cache_write_ttls() {
        // claude-sonnet-4-5: $3 in, $15 out, $0.30 read, $3.75 write 5m, $6 write 1h.
        let p = PriceSpec {
            input: "3".into(),
            output: "15".into(),
            cached_input: Some("0.30".into()),
            cache_write: Some("3.75".into()),
            cache_write_1h: Some("6".into()),
        }
        .to_price()
        .expect("valid");
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
        let p = price("0.0015", "0", "0"); // 1500 pico per token
        assert_eq!(
            p.cost_nanos(&Usage {
                input: 1,
                ..Usage::default()
            }),
            2
        );
        let p = price("0.0014", "0", "0");
        assert_eq!(
            p.cost_nanos(&Usage {
                input: 1,
                ..Usage::default()
            }),
            1
        );
    }

    #[test]
    fn lookup_falls_back_to_undated_and_unprefixed_ids() {
        let mut t = PriceTable::default();
        let p = price("1", "2", "0.5");
        t.set("gpt-4o", p);
        t.set("claude-3-5-haiku", p);
        assert_eq!(t.lookup("gpt-4o"), Some(&p));
        assert_eq!(t.lookup("gpt-4o-2024-08-06"), Some(&p));
        assert_eq!(t.lookup("claude-3-5-haiku-20241022"), Some(&p));
        assert_eq!(t.lookup("openai/gpt-4o"), Some(&p));
        assert_eq!(t.lookup("gpt-4o-mini"), None);
        assert_eq!(t.lookup("llama3.2"), None);
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
            assert!(p.input > 0, "{m}");
        }
    }
}
