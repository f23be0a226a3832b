//! Usage, prices and cost. Pure computation: nothing here does I/O.
//!
//! Token counts are normalised across providers so that every family means the same thing
//! whoever served the request: `input` is every input token the provider processed (for
//! Anthropic that is `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`,
//! for OpenAI `prompt_tokens`, which already includes cached tokens), `cached_read` and
//! `cache_write` are subsets of `input`, `reasoning` is a subset of `output`.
//!
//! Counts come from providers and are not trusted: every sum saturates, and
//! [`Usage::bounded`] clamps a request's counts to the configured plausibility bound
//! (`[metering] max_tokens_per_request`) before anything is priced or recorded.

pub mod estimate;
pub mod price_import;
pub mod price_table;
pub mod pricing;

pub use price_table::PriceTable;
pub use pricing::{Billing, BillingFacts, MAX_COST_NANOS, Price, PriceSource, ServiceTier};

/// Default of `[metering] max_tokens_per_request`. The largest context windows offered today
/// are 1-2 million tokens (Gemini 2M, GPT-4.1 and Claude Sonnet 4 1M) and the largest output
/// limits 128k, so no single request can report more than ~2.2M input or output tokens; 10M
/// leaves 4x headroom for larger windows, yet bounds one request's cost at the priciest rate
/// in the table ($600 per 1M output tokens) to $6,000 rather than billions.
pub const DEFAULT_MAX_TOKENS_PER_REQUEST: u64 = 10_000_000;

/// Where a request's token counts come from: the ledger's `usage_source` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UsageSource {
    /// The provider's own counts (also requests that consumed nothing).
    #[default]
    Reported,
    /// A stream cut off after some usage was reported: the counts seen so far.
    Partial,
    /// The provider reported none: counted with the tokenizer.
    Estimated,
    /// The provider reported counts above `max_tokens_per_request`: clamped to it.
    Implausible,
}

impl UsageSource {
    /// The value stored and shown: `reported`, `partial`, `estimated` or `implausible`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageSource::Reported => "reported",
            UsageSource::Partial => "partial",
            UsageSource::Estimated => "estimated",
            UsageSource::Implausible => "implausible",
        }
    }
}

/// Normalised token usage of one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// All input tokens, cached and cache-written included.
    pub input: u64,
    /// All output tokens, reasoning included.
    pub output: u64,
    /// Input tokens read from the provider's prompt cache (subset of `input`).
    pub cached_read: u64,
    /// Input tokens written to the provider's prompt cache (subset of `input`).
    pub cache_write: u64,
    /// Of `cache_write`, those written with a one-hour TTL (Anthropic bills them higher).
    pub cache_write_1h: u64,
    /// Output tokens spent on reasoning (subset of `output`).
    pub reasoning: u64,
}

impl Usage {
    /// Input plus output (saturating: the counts come from providers).
    pub fn total(&self) -> u64 {
        self.input.saturating_add(self.output)
    }

    /// Every count clamped to `max` (the plausibility bound of one request), subsets kept inside
    /// their totals; `true` when a count was above it.
    pub fn bounded(self, max: u64) -> (Usage, bool) {
        let fields = [
            self.input,
            self.output,
            self.cached_read,
            self.cache_write,
            self.cache_write_1h,
            self.reasoning,
        ];
        let implausible = fields.iter().any(|n| *n > max);
        let u = Usage {
            input: self.input.min(max),
            output: self.output.min(max),
            cached_read: self.cached_read.min(max),
            cache_write: self.cache_write.min(max),
            cache_write_1h: self.cache_write_1h.min(max),
            reasoning: self.reasoning.min(max),
        };
        (u.clamped(), implausible)
    }

    /// True when the provider reported nothing at all.
    pub fn is_zero(&self) -> bool {
        *self == Usage::default()
    }

    /// Keeps the subsets inside their totals, whatever a provider sent.
    pub fn clamped(mut self) -> Usage {
        self.cached_read = self.cached_read.min(self.input);
        self.cache_write = self.cache_write.min(self.input - self.cached_read);
        self.cache_write_1h = self.cache_write_1h.min(self.cache_write);
        self.reasoning = self.reasoning.min(self.output);
        self
    }

    /// Merges a later, cumulative report into this one: each field keeps the larger value,
    /// because streamed usage only ever grows (Anthropic's `message_delta` repeats totals).
    pub fn merge_max(&mut self, other: &Usage) {
        self.input = self.input.max(other.input);
        self.output = self.output.max(other.output);
        self.cached_read = self.cached_read.max(other.cached_read);
        self.cache_write = self.cache_write.max(other.cache_write);
        self.cache_write_1h = self.cache_write_1h.max(other.cache_write_1h);
        self.reasoning = self.reasoning.max(other.reasoning);
    }
}

/// Nano-USD (1e-9 USD) to USD, for rendering only.
pub fn nanos_to_usd(nanos: u64) -> f64 {
    nanos as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clamp_keeps_subsets_inside_totals() {
        let u = Usage {
            input: 10,
            output: 5,
            cached_read: 8,
            cache_write: 7,
            cache_write_1h: 9,
            reasoning: 6,
        }
        .clamped();
        assert_eq!(u.cached_read, 8);
        assert_eq!(u.cache_write, 2);
        assert_eq!(u.cache_write_1h, 2);
        assert_eq!(u.reasoning, 5);
        assert_eq!(u.total(), 15);
    }

    #[test]
    fn totals_saturate_and_the_bound_clamps_every_count() {
        let huge = Usage {
            input: u64::MAX,
            output: u64::MAX,
            cached_read: u64::MAX,
            cache_write: 9_200_000_000_000_000_000,
            cache_write_1h: u64::MAX,
            reasoning: u64::MAX,
        };
        assert_eq!(huge.total(), u64::MAX);
        let (u, implausible) = huge.bounded(10_000_000);
        assert!(implausible);
        assert_eq!(
            (u.input, u.output, u.reasoning),
            (10_000_000, 10_000_000, 10_000_000)
        );
        assert_eq!(
            u.cached_read + u.cache_write,
            u.input,
            "subsets stay inside input"
        );
        assert!(u.cache_write_1h <= u.cache_write);
        let small = Usage {
            input: 10,
            output: 10_000_000,
            ..Usage::default()
        };
        assert_eq!(
            small.bounded(10_000_000),
            (small, false),
            "the bound itself is plausible"
        );
    }

    #[test]
    fn merge_keeps_cumulative_maximum() {
        let mut a = Usage {
            input: 100,
            output: 1,
            ..Usage::default()
        };
        a.merge_max(&Usage {
            output: 42,
            ..Usage::default()
        });
        assert_eq!((a.input, a.output), (100, 42));
    }
}
