//! Log lines that repeat per cause are written at most once per period, with how many were
//! left out since: 2,753 identical "upstream request failed" warnings in 3 minutes told an
//! operator nothing the first one and `llm_gateway_errors_total` did not.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// How often a line per provider is written at most.
pub const UPSTREAM_FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Causes seen at most (providers are few; this bounds the map whatever the keys).
const MAX_KEYS: usize = 1024;

/// The last line written per key, and the lines left out since.
#[derive(Debug)]
pub struct LogLimiter {
    every: Duration,
    seen: Mutex<HashMap<Box<str>, (Instant, u64)>>,
}

impl LogLimiter {
    /// At most one line per key every `every`.
    pub fn new(every: Duration) -> LogLimiter {
        LogLimiter {
            every,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(left_out)`: write the line now, saying `left_out` were left out since the last;
    /// `None`: leave it out (counted).
    pub fn allow(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock();
        match seen.get_mut(key) {
            Some((last, left_out)) if now.duration_since(*last) < self.every => {
                *left_out += 1;
                None
            }
            Some((last, left_out)) => {
                *last = now;
                Some(std::mem::take(left_out))
            }
            None => {
                if seen.len() < MAX_KEYS {
                    seen.insert(key.into(), (now, 0));
                }
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_and_period_with_the_count_left_out() {
        let l = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(l.allow("a"), Some(0));
        assert_eq!(l.allow("b"), Some(0), "keys are limited apart");
        for _ in 0..500 {
            assert_eq!(l.allow("a"), None);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(l.allow("a"), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(l.allow("a"), Some(501));
        assert_eq!(l.allow("a"), None);
        assert_eq!(l.allow("b"), Some(0));
    }
}
