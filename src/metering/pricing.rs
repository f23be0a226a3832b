//! The price of one request: every axis providers publish. Rates are held as integer
//! pico-USD (1e-12 USD) per token, which represents every price quoted to six decimals per
//! million tokens exactly; fees are pico-USD per call; costs come out as integer nano-USD.
//!
//! What a request's price depends on, beside its tokens ([`Billing`]):
//! - the **service tier** (`priority`, `flex`, `batch`, else standard), each with its own
//!   rates; `batch` defaults to half the standard rates (OpenAI's and Anthropic's batch APIs);
//! - **context tiers with cliff semantics**: above a threshold of input tokens (128k, 200k,
//!   272k) every token of the request is billed at the tier's rates, not only the excess
//!   (Gemini 2.5 Pro, Claude long context, GPT-5.x);
//! - cache reads, 5-minute and 1-hour cache writes, audio input and output tokens;
//! - a fee per request and per web-search call where the provider's usage reports them.
//!
//! The provider's multiplier (a negotiated discount, a regional uplift) and the price's
//! `effective_from` date are applied by the caller and the [`super::PriceTable`].

use serde::Deserialize;

use super::Usage;

/// The built-in, hand-checked table, embedded so the binary needs no file at run time.
pub const BUILTIN_PRICES: &str = include_str!("../../prices/prices.toml");
/// The catalog imported from LiteLLM's price list (`tollgate prices import`); the hand-checked
/// table wins over it.
pub const CATALOG_PRICES: &str = include_str!("../../prices/catalog.toml");

/// The largest cost of one request, in nano-USD: the ledger stores costs as signed 64-bit
/// integers, so a larger value would be cut there and not in the metrics. Both record this
/// one value, so they always agree (9.2e9 USD; the plausibility bound keeps real costs far
/// below).
pub const MAX_COST_NANOS: u64 = i64::MAX as u64;

/// Per-token rates in pico-USD (1e-12 USD) per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rates {
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
    /// Audio input tokens (a part of the uncached input), when priced apart.
    pub audio_input: Option<u64>,
    /// Audio output tokens (a part of the output), when priced apart.
    pub audio_output: Option<u64>,
}

impl Rates {
    /// The token part of a request's cost, in pico-USD, exact.
    fn pico(&self, u: &Usage, b: &Billing) -> u128 {
        let u = u.clamped();
        let uncached = u.input - u.cached_read - u.cache_write;
        let write_5m = u.cache_write - u.cache_write_1h;
        let (audio_in, text_in) = match self.audio_input {
            Some(rate) => {
                let a = b.audio_input.min(uncached);
                (a as u128 * rate as u128, uncached - a)
            }
            None => (0, uncached),
        };
        let (audio_out, text_out) = match self.audio_output {
            Some(rate) => {
                let a = b.audio_output.min(u.output);
                (a as u128 * rate as u128, u.output - a)
            }
            None => (0, u.output),
        };
        // Each product of two u64 fits a u128; their sum may not (counts come from providers):
        // it saturates.
        [
            text_in as u128 * self.input as u128,
            audio_in,
            u.cached_read as u128 * self.cached_input as u128,
            write_5m as u128 * self.cache_write as u128,
            u.cache_write_1h as u128 * self.cache_write_1h as u128,
            text_out as u128 * self.output as u128,
            audio_out,
        ]
        .into_iter()
        .fold(0u128, u128::saturating_add)
    }

    /// Every rate times `num / den`, rounded to nearest (a service tier's context tiers).
    fn scaled(&self, num: u64, den: u64) -> Rates {
        let s = |v: u64| ratio(v, num, den);
        Rates {
            input: s(self.input),
            output: s(self.output),
            cached_input: s(self.cached_input),
            cache_write: s(self.cache_write),
            cache_write_1h: s(self.cache_write_1h),
            audio_input: self.audio_input.map(s),
            audio_output: self.audio_output.map(s),
        }
    }

    /// Every rate halved (the batch APIs' price), rounded up to whole pico-USD.
    fn halved(&self) -> Rates {
        let h = |v: u64| v.div_ceil(2);
        Rates {
            input: h(self.input),
            output: h(self.output),
            cached_input: h(self.cached_input),
            cache_write: h(self.cache_write),
            cache_write_1h: h(self.cache_write_1h),
            audio_input: self.audio_input.map(h),
            audio_output: self.audio_output.map(h),
        }
    }
}

/// A context tier: above `above_input_tokens` input tokens, the whole request at `rates`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    /// The threshold; a request with exactly this many input tokens is still below it.
    pub above_input_tokens: u64,
    /// The rates of every token of a request above it.
    pub rates: Rates,
}

/// The rates of one service tier: standard ones and their context tiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TierRates {
    /// Below every context tier.
    pub base: Rates,
    /// Ascending by threshold.
    pub tiers: Vec<Tier>,
}

impl TierRates {
    /// The rates that apply to a request with `input` tokens (cliff semantics).
    pub fn for_input(&self, input: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|t| input > t.above_input_tokens)
            .map_or(&self.base, |t| &t.rates)
    }
}

/// The service tier a request was served at (the response's `service_tier` when it names one,
/// else the request's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceTier {
    /// Standard (`default`, `auto`, `standard`, `standard_only`).
    #[default]
    Standard,
    /// Priority processing (OpenAI `priority`, Anthropic `priority`).
    Priority,
    /// OpenAI `flex`.
    Flex,
    /// The batch APIs.
    Batch,
}

impl ServiceTier {
    /// Reads a provider's name for it; unknown names are standard.
    pub fn parse(s: &str) -> ServiceTier {
        match s {
            "priority" => ServiceTier::Priority,
            "flex" => ServiceTier::Flex,
            "batch" => ServiceTier::Batch,
            _ => ServiceTier::Standard,
        }
    }

    /// The name used in config and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceTier::Standard => "standard",
            ServiceTier::Priority => "priority",
            ServiceTier::Flex => "flex",
            ServiceTier::Batch => "batch",
        }
    }
}

/// What a request's price depends on beside its [`Usage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Billing {
    /// The service tier it was served at.
    pub service_tier: ServiceTier,
    /// Audio input tokens (a part of the uncached input).
    pub audio_input: u64,
    /// Audio output tokens (a part of the output).
    pub audio_output: u64,
    /// Web-search (server tool) calls the provider reported.
    pub web_search_calls: u64,
}

/// What a response says about its price beyond its [`Usage`]: the tier it names (if any) and
/// the counts that have their own rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BillingFacts {
    /// The service tier the response says it was served at.
    pub service_tier: Option<ServiceTier>,
    /// Audio input tokens (a part of the input).
    pub audio_input: u64,
    /// Audio output tokens (a part of the output).
    pub audio_output: u64,
    /// Web-search calls the provider reported.
    pub web_search_calls: u64,
}

impl BillingFacts {
    /// The billing of a request that asked for `requested`: the response's tier wins.
    pub fn billing(self, requested: ServiceTier) -> Billing {
        Billing {
            service_tier: self.service_tier.unwrap_or(requested),
            audio_input: self.audio_input,
            audio_output: self.audio_output,
            web_search_calls: self.web_search_calls,
        }
    }

    /// Folds in a later report of the same response (streams repeat cumulative counts).
    pub fn merge(&mut self, later: BillingFacts) {
        self.service_tier = later.service_tier.or(self.service_tier);
        self.audio_input = self.audio_input.max(later.audio_input);
        self.audio_output = self.audio_output.max(later.audio_output);
        self.web_search_calls = self.web_search_calls.max(later.web_search_calls);
    }
}

/// Where a price came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PriceSource {
    /// `prices/prices.toml`, checked by hand against the providers' pages.
    #[default]
    Builtin,
    /// `prices/catalog.toml`, imported from LiteLLM's price list.
    Catalog,
    /// The config's `[[prices]]` or a `[[models]]` entry's `price`.
    Config,
}

impl PriceSource {
    /// For `tollgate prices show`.
    pub fn as_str(self) -> &'static str {
        match self {
            PriceSource::Builtin => "built-in (prices/prices.toml, hand-checked)",
            PriceSource::Catalog => "catalog (prices/catalog.toml, imported from LiteLLM)",
            PriceSource::Config => "config",
        }
    }
}

/// The full price of one model from one date on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Price {
    /// Standard service tier.
    pub standard: TierRates,
    /// `priority` rates; a priority request of a model without them is billed at standard.
    pub priority: Option<TierRates>,
    /// `flex` rates; without them, standard.
    pub flex: Option<TierRates>,
    /// `batch` rates (default: half of standard, context tiers included).
    pub batch: TierRates,
    /// Fee per request, pico-USD.
    pub per_request: u64,
    /// Fee per web-search call, pico-USD.
    pub web_search_call: u64,
    /// First day (UTC, seconds since the epoch) this price applies; `i64::MIN`: always.
    pub effective_from: i64,
    /// A name for this price, stored with every ledger row: `model` or `model@YYYY-MM-DD`
    /// (shared: a row takes a reference, not a copy).
    pub id: std::sync::Arc<str>,
    /// Where it came from.
    pub source: PriceSource,
}

impl Price {
    /// The cost of `usage` at standard service, in nano-USD.
    pub fn cost_nanos(&self, usage: &Usage) -> u64 {
        self.cost_nanos_for(usage, &Billing::default())
    }

    /// The cost of `usage` with `billing`, in nano-USD, rounded to the nearest nano-USD once
    /// per request (the error is below 5e-10 USD a request). Saturates, never wraps, at
    /// [`MAX_COST_NANOS`].
    pub fn cost_nanos_for(&self, usage: &Usage, billing: &Billing) -> u64 {
        let set = self.rates_for(billing.service_tier);
        let rates = set.for_input(usage.input);
        let pico = rates
            .pico(usage, billing)
            .saturating_add(u128::from(self.per_request))
            .saturating_add(
                u128::from(billing.web_search_calls) * u128::from(self.web_search_call),
            );
        u64::try_from(pico.saturating_add(500) / 1000)
            .map_or(MAX_COST_NANOS, |n| n.min(MAX_COST_NANOS))
    }

    /// Takes from `other` (the same model's imported price) every axis `spec` left unsaid,
    /// when both have the same standard base rates.
    pub fn fill_from(&mut self, spec: &PriceSpec, other: &Price) {
        if self.standard.base.input != other.standard.base.input
            || self.standard.base.output != other.standard.base.output
        {
            return;
        }
        if spec.tiers.is_empty() {
            self.standard.tiers = other.standard.tiers.clone();
        }
        if spec.priority.is_none() {
            self.priority = other.priority.clone();
        }
        if spec.flex.is_none() {
            self.flex = other.flex.clone();
        }
        if spec.batch.is_none() {
            self.batch = other.batch.clone();
        }
        let b = &mut self.standard.base;
        if spec.audio_input.is_none() {
            b.audio_input = other.standard.base.audio_input;
        }
        if spec.audio_output.is_none() {
            b.audio_output = other.standard.base.audio_output;
        }
        if spec.web_search_call.is_none() {
            self.web_search_call = other.web_search_call;
        }
        if spec.per_request.is_none() {
            self.per_request = other.per_request;
        }
    }

    /// The rates of a service tier (standard where the tier has none of its own).
    pub fn rates_for(&self, tier: ServiceTier) -> &TierRates {
        match tier {
            ServiceTier::Standard => &self.standard,
            ServiceTier::Priority => self.priority.as_ref().unwrap_or(&self.standard),
            ServiceTier::Flex => self.flex.as_ref().unwrap_or(&self.standard),
            ServiceTier::Batch => &self.batch,
        }
    }
}

/// `v * num / den`, rounded to nearest; `v` when `den` is 0.
fn ratio(v: u64, num: u64, den: u64) -> u64 {
    if den == 0 {
        return v;
    }
    let r = (u128::from(v) * u128::from(num) + u128::from(den / 2)) / u128::from(den);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// Scales a cost by a multiplier in parts per million (1,000,000 = 1x), rounding to nearest,
/// at most [`MAX_COST_NANOS`].
pub fn apply_multiplier(nanos: u64, ppm: u64) -> u64 {
    if ppm == 1_000_000 {
        return nanos;
    }
    let scaled = (u128::from(nanos) * u128::from(ppm) + 500_000) / 1_000_000;
    u64::try_from(scaled).map_or(MAX_COST_NANOS, |n| n.min(MAX_COST_NANOS))
}

/// Rates as written in TOML: USD per million tokens, as decimal strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RatesSpec {
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
    /// Audio input tokens; without it audio input is billed as input.
    pub audio_input: Option<String>,
    /// Audio output tokens; without it audio output is billed as output.
    pub audio_output: Option<String>,
}

/// The seven rate fields, shared by every price shape (serde's `flatten` cannot be combined
/// with `deny_unknown_fields`).
macro_rules! rate_fields {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($extra:tt)* }) => {
        $(#[$m])*
        $vis struct $name {
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
            /// Audio input tokens; without it audio input is billed as input.
            pub audio_input: Option<String>,
            /// Audio output tokens; without it audio output is billed as output.
            pub audio_output: Option<String>,
            $($extra)*
        }

        impl $name {
            /// The rate fields alone.
            pub fn rates_spec(&self) -> RatesSpec {
                RatesSpec {
                    input: self.input.clone(),
                    output: self.output.clone(),
                    cached_input: self.cached_input.clone(),
                    cache_write: self.cache_write.clone(),
                    cache_write_1h: self.cache_write_1h.clone(),
                    audio_input: self.audio_input.clone(),
                    audio_output: self.audio_output.clone(),
                }
            }
        }
    };
}

rate_fields! {
    /// A context tier as written: `{ above_input_tokens = 200000, input = "2.50", ... }`.
    #[derive(Debug, Clone, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct TierSpec {
        /// The threshold (exclusive).
        pub above_input_tokens: u64,
    }
}

rate_fields! {
    /// A service tier as written: its base rates and, optionally, its own context tiers.
    #[derive(Debug, Clone, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct ServiceSpec {
        /// Context tiers of this service tier.
        #[serde(default)]
        pub tiers: Vec<TierSpec>,
    }
}

rate_fields! {
    /// A price as written in TOML (`prices/*.toml`, `[[prices]]`, a model's `price`).
    #[derive(Debug, Clone, Deserialize, Default, PartialEq)]
    #[serde(deny_unknown_fields)]
    pub struct PriceSpec {
        /// Context tiers (cliff): `[{ above_input_tokens = 200000, input = "...", ... }]`.
        #[serde(default)]
        pub tiers: Vec<TierSpec>,
        /// Priority service tier.
        pub priority: Option<ServiceSpec>,
        /// Flex service tier.
        pub flex: Option<ServiceSpec>,
        /// Batch API rates (default: half of the standard ones).
        pub batch: Option<ServiceSpec>,
        /// USD per request.
        pub per_request: Option<String>,
        /// USD per web-search call.
        pub web_search_call: Option<String>,
        /// `YYYY-MM-DD` (UTC): the first day this price applies.
        pub effective_from: Option<String>,
    }
}

impl RatesSpec {
    fn to_rates(&self, path: &str) -> Result<Rates, String> {
        let field = |name: &str, v: &str| {
            parse_usd_per_million(v).map_err(|e| format!("{path}{name}: {e}"))
        };
        let input = field("input", &self.input)?;
        let opt = |name: &str, v: &Option<String>| v.as_deref().map(|v| field(name, v)).transpose();
        let cache_write = opt("cache_write", &self.cache_write)?.unwrap_or(input);
        Ok(Rates {
            input,
            output: field("output", &self.output)?,
            cached_input: opt("cached_input", &self.cached_input)?.unwrap_or(input),
            cache_write,
            cache_write_1h: opt("cache_write_1h", &self.cache_write_1h)?.unwrap_or(cache_write),
            audio_input: opt("audio_input", &self.audio_input)?,
            audio_output: opt("audio_output", &self.audio_output)?,
        })
    }
}

fn tier_rates(base: Rates, tiers: &[TierSpec], path: &str) -> Result<TierRates, String> {
    let mut out = Vec::with_capacity(tiers.len());
    for (i, t) in tiers.iter().enumerate() {
        let mut rates = t.rates_spec().to_rates(&format!("{path}tiers[{i}]."))?;
        // Unsaid cache rates follow the base ones by the tier's input ratio, not its input.
        let scale = |v: u64| ratio(v, rates.input, base.input);
        if t.cached_input.is_none() {
            rates.cached_input = scale(base.cached_input);
        }
        if t.cache_write.is_none() {
            rates.cache_write = scale(base.cache_write);
        }
        if t.cache_write_1h.is_none() {
            rates.cache_write_1h = scale(base.cache_write_1h);
        }
        if out
            .last()
            .is_some_and(|p: &Tier| p.above_input_tokens >= t.above_input_tokens)
        {
            return Err(format!(
                "{path}tiers[{i}].above_input_tokens: tiers must be in ascending order"
            ));
        }
        out.push(Tier {
            above_input_tokens: t.above_input_tokens,
            rates,
        });
    }
    Ok(TierRates { base, tiers: out })
}

impl PriceSpec {
    /// Converts to integer rates, or says which field is not a price. The price's id is
    /// `model`, with `@effective_from` when dated.
    pub fn to_price_for(&self, model: &str, source: PriceSource) -> Result<Price, String> {
        let standard = tier_rates(self.rates_spec().to_rates("")?, &self.tiers, "")?;
        // A service tier's cache and audio rates, and its context tiers, default to the
        // standard ones scaled by the tier's input ratio (OpenAI's batch and priority prices
        // scale cached input with input), not to the tier's own input rate.
        let service = |s: &Option<ServiceSpec>, name: &str| -> Result<Option<TierRates>, String> {
            s.as_ref()
                .map(|s| {
                    let p = format!("{name}.");
                    let mut base = s.rates_spec().to_rates(&p)?;
                    let std = &standard.base;
                    let scale = |v: u64| ratio(v, base.input, std.input);
                    if s.cached_input.is_none() {
                        base.cached_input = scale(std.cached_input);
                    }
                    if s.cache_write.is_none() {
                        base.cache_write = scale(std.cache_write);
                    }
                    if s.cache_write_1h.is_none() {
                        base.cache_write_1h = scale(std.cache_write_1h);
                    }
                    if s.audio_input.is_none() {
                        base.audio_input = std.audio_input.map(scale);
                    }
                    if s.audio_output.is_none() {
                        base.audio_output =
                            std.audio_output.map(|v| ratio(v, base.output, std.output));
                    }
                    let mut set = tier_rates(base, &s.tiers, &p)?;
                    if s.tiers.is_empty() {
                        set.tiers = standard
                            .tiers
                            .iter()
                            .map(|t| Tier {
                                above_input_tokens: t.above_input_tokens,
                                rates: t.rates.scaled(set.base.input, std.input),
                            })
                            .collect();
                    }
                    Ok(set)
                })
                .transpose()
        };
        let batch = service(&self.batch, "batch")?.unwrap_or_else(|| TierRates {
            base: standard.base.halved(),
            tiers: standard
                .tiers
                .iter()
                .map(|t| Tier {
                    above_input_tokens: t.above_input_tokens,
                    rates: t.rates.halved(),
                })
                .collect(),
        });
        let fee = |name: &str, v: &Option<String>| {
            v.as_deref()
                .map(|v| parse_usd_pico(v).map_err(|e| format!("{name}: {e}")))
                .transpose()
                .map(Option::unwrap_or_default)
        };
        let (effective_from, id) = match &self.effective_from {
            Some(d) => (
                parse_day(d).map_err(|e| format!("effective_from: {e}"))?,
                format!("{model}@{d}").into(),
            ),
            None => (i64::MIN, model.into()),
        };
        Ok(Price {
            priority: service(&self.priority, "priority")?,
            flex: service(&self.flex, "flex")?,
            batch,
            per_request: fee("per_request", &self.per_request)?,
            web_search_call: fee("web_search_call", &self.web_search_call)?,
            standard,
            effective_from,
            id,
            source,
        })
    }

    /// [`PriceSpec::to_price_for`] for a price set in the config, named `model`.
    pub fn to_price(&self) -> Result<Price, String> {
        self.to_price_for("", PriceSource::Config)
    }
}

/// Parses "2.50" (USD per 1M tokens) into pico-USD per token, exactly.
pub fn parse_usd_per_million(s: &str) -> Result<u64, String> {
    parse_decimal(s, 6).map_err(|e| format!("{e} of USD per 1M tokens"))
}

/// Parses "0.01" (USD) into pico-USD, exactly.
pub fn parse_usd_pico(s: &str) -> Result<u64, String> {
    parse_decimal(s, 12).map_err(|e| format!("{e} of USD"))
}

/// A non-negative decimal with at most `scale` decimals, as an integer of 10^-scale units.
fn parse_decimal(s: &str, scale: usize) -> Result<u64, String> {
    let s = s.trim();
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    if whole.is_empty() && frac.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(format!("{s:?} is not a decimal number"));
    }
    if frac.len() > scale {
        return Err(format!("{s:?} has more than {scale} decimals"));
    }
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| format!("{s:?} is too large"))?
    };
    let mut frac_val: u64 = 0;
    for i in 0..scale {
        frac_val = frac_val * 10 + frac.as_bytes().get(i).map_or(0, |b| u64::from(b - b'0'));
    }
    whole
        .checked_mul(10u64.pow(scale as u32))
        .and_then(|w| w.checked_add(frac_val))
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `YYYY-MM-DD` to seconds since the epoch at its midnight UTC.
pub fn parse_day(s: &str) -> Result<i64, String> {
    chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp())
        .ok_or_else(|| format!("{s:?} is not a date (YYYY-MM-DD)"))
}

/// Pico-USD per token as USD per 1M tokens, the shortest exact decimal ("2.5", "0.075").
pub fn format_per_million(pico: u64) -> String {
    let whole = pico / 1_000_000;
    let frac = pico % 1_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:06}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

/// Pico-USD as USD, the shortest exact decimal.
pub fn format_usd_pico(pico: u64) -> String {
    let whole = pico / 1_000_000_000_000;
    let frac = pico % 1_000_000_000_000;
    if frac == 0 {
        return whole.to_string();
    }
    let f = format!("{frac:012}");
    format!("{whole}.{}", f.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
