//! Model name to price: the catalog imported from LiteLLM, the hand-checked built-in table
//! over it, the config over both; each model may have several prices by `effective_from`.

use std::collections::HashMap;
use std::sync::Arc;

use super::pricing::{
    BUILTIN_PRICES, CATALOG_PRICES, Price, PriceSource, PriceSpec, Rates, ServiceTier, TierRates,
    format_per_million, format_usd_pico,
};

/// A price file: `prices/prices.toml` (hand-checked) or `prices/catalog.toml` (imported).
#[derive(Debug, Clone, Default)]
pub struct PriceFile {
    /// The date of the sources.
    pub as_of: String,
    /// Where the prices were read.
    pub sources: Vec<String>,
    /// `(name, provider, aliases, price spec)` in file order.
    pub models: Vec<FileModel>,
}

/// One `[[models]]` entry of a price file.
#[derive(Debug, Clone)]
pub struct FileModel {
    /// The model id.
    pub name: String,
    /// The provider whose price it is.
    pub provider: String,
    /// Other ids with the same price (dated snapshots, inference profiles).
    pub aliases: Vec<String>,
    /// The rates.
    pub spec: PriceSpec,
}

impl PriceFile {
    /// Reads a price file; every entry's fields are checked (unknown ones are errors).
    pub fn parse(text: &str) -> Result<PriceFile, String> {
        let mut root: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        let as_of = match root.remove("as_of") {
            Some(toml::Value::String(s)) => s,
            _ => return Err("as_of: a date string is required".into()),
        };
        let sources = match root.remove("sources") {
            Some(v) => v
                .try_into::<Vec<String>>()
                .map_err(|e| format!("sources: {e}"))?,
            None => Vec::new(),
        };
        let models = match root.remove("models") {
            Some(toml::Value::Array(a)) => a,
            Some(_) => return Err("models: must be an array of tables".into()),
            None => Vec::new(),
        };
        if let Some(k) = root.keys().next() {
            return Err(format!("unknown key {k:?}"));
        }
        let mut out = Vec::with_capacity(models.len());
        for (i, m) in models.into_iter().enumerate() {
            let toml::Value::Table(mut t) = m else {
                return Err(format!("models[{i}]: must be a table"));
            };
            let mut take_str = |k: &str| match t.remove(k) {
                Some(toml::Value::String(s)) => Ok(s),
                _ => Err(format!("models[{i}].{k}: a string is required")),
            };
            let name = take_str("name")?;
            let provider = take_str("provider")?;
            let aliases = match t.remove("aliases") {
                Some(v) => v
                    .try_into::<Vec<String>>()
                    .map_err(|e| format!("models[{i}] ({name}).aliases: {e}"))?,
                None => Vec::new(),
            };
            let spec: PriceSpec = toml::Value::Table(t)
                .try_into()
                .map_err(|e| format!("models[{i}] ({name}): {e}"))?;
            out.push(FileModel {
                name,
                provider,
                aliases,
                spec,
            });
        }
        Ok(PriceFile {
            as_of,
            sources,
            models: out,
        })
    }
}

/// Model name to its prices, ascending by `effective_from`, with the lookup rules for dated
/// snapshot ids.
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    prices: HashMap<Box<str>, Arc<[Price]>>,
    /// Which provider each model's built-in or catalog price belongs to.
    providers: HashMap<Box<str>, Box<str>>,
    as_of: String,
    catalog_as_of: String,
    /// Per-provider multipliers in parts per million (only those other than 1).
    multipliers: Vec<(Box<str>, u64)>,
}

impl PriceTable {
    /// The catalog, with the hand-checked built-in table over it. Parsed once per process
    /// (the catalog's ~13,000 lines took 0.4 s in a debug build), then cloned.
    pub fn builtin() -> Result<PriceTable, String> {
        static BUILTIN: std::sync::OnceLock<Result<PriceTable, String>> =
            std::sync::OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                let mut t = PriceTable::default();
                let catalog =
                    PriceFile::parse(CATALOG_PRICES).map_err(|e| format!("catalog: {e}"))?;
                t.catalog_as_of = catalog.as_of.clone();
                t.add_file(&catalog, PriceSource::Catalog)
                    .map_err(|e| format!("catalog: {e}"))?;
                let builtin = PriceFile::parse(BUILTIN_PRICES)?;
                t.as_of = builtin.as_of.clone();
                t.add_file(&builtin, PriceSource::Builtin)?;
                Ok(t)
            })
            .clone()
    }

    /// Reads one table in the format of `prices/prices.toml`, alone.
    pub fn from_toml(text: &str) -> Result<PriceTable, String> {
        let file = PriceFile::parse(text)?;
        let mut t = PriceTable {
            as_of: file.as_of.clone(),
            ..PriceTable::default()
        };
        t.add_file(&file, PriceSource::Builtin)?;
        Ok(t)
    }

    /// Adds every entry of `file`; an entry replaces what the table had for its names. A
    /// hand-checked entry that says nothing of context tiers, service tiers, audio or fees
    /// takes them from the catalog's entry of the same name when both agree on the standard
    /// rates (the catalog knows Gemini's 200k tier; a disagreeing catalog is not trusted).
    pub fn add_file(&mut self, file: &PriceFile, source: PriceSource) -> Result<(), String> {
        let mut seen: HashMap<&str, ()> = HashMap::new();
        for m in &file.models {
            let mut price = m
                .spec
                .to_price_for(&m.name, source)
                .map_err(|e| format!("{}: {e}", m.name))?;
            if source == PriceSource::Builtin
                && let Some([imported]) = self.prices.get(m.name.as_str()).map(|v| &**v)
                && imported.source == PriceSource::Catalog
            {
                price.fill_from(&m.spec, imported);
            }
            for name in std::iter::once(&m.name).chain(m.aliases.iter()) {
                // Several dated entries of one model in one file add up; a later file replaces.
                if seen.insert(name, ()).is_some() {
                    self.add_version(name, price.clone());
                } else {
                    self.set(name, price.clone());
                }
                self.providers
                    .insert(name.as_str().into(), m.provider.as_str().into());
            }
        }
        Ok(())
    }

    /// Multiplies every cost of `provider` by `ppm` / 1,000,000.
    pub fn set_multiplier(&mut self, provider: &str, ppm: u64) {
        self.multipliers.retain(|(p, _)| &**p != provider);
        if ppm != 1_000_000 {
            self.multipliers.push((provider.into(), ppm));
        }
    }

    /// The multiplier of `provider`, parts per million (1,000,000 when none is set). A scan
    /// of the few configured ones; none configured costs a length check.
    pub fn multiplier(&self, provider: &str) -> u64 {
        self.multipliers
            .iter()
            .find(|(p, _)| &**p == provider)
            .map_or(1_000_000, |(_, m)| *m)
    }

    /// The date the hand-checked prices were checked.
    pub fn as_of(&self) -> &str {
        &self.as_of
    }

    /// The date of the imported catalog.
    pub fn catalog_as_of(&self) -> &str {
        &self.catalog_as_of
    }

    /// Number of model ids (names and aliases) with a price.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    /// True when no model has a price.
    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    /// Every model id with a price.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.prices.keys().map(|k| &**k)
    }

    /// The provider a built-in or catalog price was listed under.
    pub fn provider_of(&self, model: &str) -> Option<&str> {
        self.providers.get(model).map(|p| &**p)
    }

    /// Sets the price of one model id: undated, it replaces every price the id had; dated, it
    /// is added beside them (replacing one of the same date).
    pub fn set(&mut self, model: &str, mut price: Price) {
        if price.id.is_empty() {
            price.id = model.into();
        }
        if price.effective_from == i64::MIN {
            self.prices.insert(model.into(), Arc::from(vec![price]));
        } else {
            self.add_version(model, price);
        }
    }

    fn add_version(&mut self, model: &str, price: Price) {
        let mut v: Vec<Price> = self
            .prices
            .get(model)
            .map(|p| p.to_vec())
            .unwrap_or_default();
        v.retain(|p| p.effective_from != price.effective_from);
        v.push(price);
        v.sort_by_key(|p| p.effective_from);
        self.prices.insert(model.into(), Arc::from(v));
    }

    /// The price of `model` now (see [`PriceTable::lookup_at`]).
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        let versions = self.versions(model)?;
        match versions {
            [only] if only.effective_from == i64::MIN => Some(only),
            _ => pick(versions, chrono::Utc::now().timestamp()),
        }
    }

    /// The price of `model` that applied at `at` (seconds since the epoch): the exact id,
    /// else the id without a date suffix (`gpt-4o-2024-08-06`, `claude-sonnet-4-20250514`),
    /// else without a `vendor/` prefix; of its prices the last whose `effective_from` is not
    /// after `at` (a row keeps the price of its own time).
    pub fn lookup_at(&self, model: &str, at: i64) -> Option<&Price> {
        pick(self.versions(model)?, at)
    }

    /// Every price of `model` (after the lookup rules), ascending by date.
    pub fn versions(&self, model: &str) -> Option<&[Price]> {
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
            Some((_, bare)) => self.versions(bare),
            None => None,
        }
    }

    /// What `tollgate prices show MODEL` prints: every price of the model with its rates,
    /// tiers, service tiers, fees, date and source.
    pub fn describe(&self, model: &str) -> Option<String> {
        let versions = self.versions(model)?;
        let mut out = String::new();
        let provider = self.provider_of(model).unwrap_or("");
        for p in versions {
            let from = if p.effective_from == i64::MIN {
                "always".to_string()
            } else {
                chrono::DateTime::from_timestamp(p.effective_from, 0)
                    .map_or_else(String::new, |d| d.format("%Y-%m-%d").to_string())
            };
            out.push_str(&format!(
                "{model}: price id {}, from {from}, source {}{}\n",
                p.id,
                p.source.as_str(),
                if provider.is_empty() {
                    String::new()
                } else {
                    format!(", provider {provider}")
                }
            ));
            out.push_str("  USD per 1M tokens: input / cached input / cache write 5m / cache write 1h / output [/ audio in / audio out]\n");
            for tier in [
                ServiceTier::Standard,
                ServiceTier::Priority,
                ServiceTier::Flex,
                ServiceTier::Batch,
            ] {
                let own = match tier {
                    ServiceTier::Priority => p.priority.is_some(),
                    ServiceTier::Flex => p.flex.is_some(),
                    _ => true,
                };
                if !own {
                    out.push_str(&format!("  {:<9} as standard\n", tier.as_str()));
                    continue;
                }
                describe_tier(&mut out, tier.as_str(), p.rates_for(tier));
            }
            if p.per_request > 0 {
                out.push_str(&format!(
                    "  per request: {} USD\n",
                    format_usd_pico(p.per_request)
                ));
            }
            if p.web_search_call > 0 {
                out.push_str(&format!(
                    "  per web-search call: {} USD\n",
                    format_usd_pico(p.web_search_call)
                ));
            }
        }
        Some(out)
    }
}

fn describe_tier(out: &mut String, name: &str, set: &TierRates) {
    let line = |r: &Rates| {
        let mut s = [
            r.input,
            r.cached_input,
            r.cache_write,
            r.cache_write_1h,
            r.output,
        ]
        .map(format_per_million)
        .join(" / ");
        if r.audio_input.is_some() || r.audio_output.is_some() {
            for a in [r.audio_input, r.audio_output] {
                s.push_str(" / ");
                s.push_str(&a.map_or_else(|| "-".into(), format_per_million));
            }
        }
        s
    };
    out.push_str(&format!("  {name:<9} {}\n", line(&set.base)));
    for t in &set.tiers {
        out.push_str(&format!(
            "  {:<9} above {} input tokens (the whole request): {}\n",
            "",
            t.above_input_tokens,
            line(&t.rates)
        ));
    }
}

fn pick(versions: &[Price], at: i64) -> Option<&Price> {
    versions.iter().rev().find(|p| p.effective_from <= at)
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
