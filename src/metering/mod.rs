//! Usage, prices and cost. Pure computation: nothing here does I/O.
//!
//! Token counts are normalised across providers so that every family means the same thing
//! whoever served the request: `input` is every input token the provider processed (for
//! Anthropic that is `input_tokens + cache_read_input_tokens + cache_creation_input_tokens`,
//! for OpenAI `prompt_tokens`, which already includes cached tokens), `cached_read` and
//! `cache_write` are subsets of `input`, `reasoning` is a subset of `output`.

pub mod estimate;
pub mod price_import;
pub mod price_table;
pub mod pricing;

pub use price_table::PriceTable;
pub use pricing::{Billing, Price, PriceSource, ServiceTier};

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
    /// Input plus output.
    pub fn total(&self) -> u64 {
        self.input + self.output
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
