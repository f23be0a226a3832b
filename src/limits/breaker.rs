//! A circuit breaker in front of the limit backend. After a failure that says the backend is
//! away (refused, dropped, timed out), checks fail at once, without a round trip, and
//! `on_backend_error` decides; one call every [`PROBE_EVERY`] goes through as a probe, and the
//! first that succeeds closes the breaker. Without it every request paid a reconnection
//! attempt while Redis refused connections (~100-160 ms each).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

use super::BackendError;

/// How often a call goes through to the backend while the breaker is open.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Open (failing fast) or closed (calling through).
#[derive(Debug)]
pub(super) struct Breaker {
    open: AtomicBool,
    /// While open: when the next call may go through as a probe.
    probe_at: Mutex<Instant>,
}

impl Breaker {
    pub(super) fn new() -> Breaker {
        Breaker {
            open: AtomicBool::new(false),
            probe_at: Mutex::new(Instant::now()),
        }
    }

    /// `Ok`: call the backend (it is thought up, or this call is the probe); `Err`: fail at
    /// once. Closed, this is one atomic load.
    pub(super) fn gate(&self) -> Result<(), BackendError> {
        if !self.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut at = self.probe_at.lock();
        let now = Instant::now();
        if now >= *at {
            // This call probes; the others fail fast until it is back or the next probe.
            *at = now + PROBE_EVERY;
            return Ok(());
        }
        Err(BackendError::short_circuited())
    }

    /// The backend answered.
    pub(super) fn succeeded(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!("limit backend answers again: limit checks resume");
        }
    }

    /// The backend is away: fail fast until a probe succeeds.
    pub(super) fn failed(&self) {
        *self.probe_at.lock() = Instant::now() + PROBE_EVERY;
        if !self.open.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "limit backend unreachable: limit checks fail at once (on_backend_error applies) until a probe, one a second, succeeds"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn open_fails_fast_and_lets_one_probe_through_a_second() {
        let b = Breaker::new();
        assert!(b.gate().is_ok());
        b.failed();
        let e = b.gate().expect_err("open");
        assert!(e.short_circuited);
        tokio::time::advance(PROBE_EVERY).await;
        assert!(b.gate().is_ok(), "the probe goes through");
        assert!(b.gate().is_err(), "only one probe");
        b.failed();
        assert!(b.gate().is_err());
        tokio::time::advance(PROBE_EVERY).await;
        assert!(b.gate().is_ok());
        b.succeeded();
        assert!(b.gate().is_ok() && b.gate().is_ok(), "closed again");
    }
}
