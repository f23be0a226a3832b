//! A circuit breaker in front of the limit backend. After a failure that says the backend is
//! away (refused, dropped, timed out), calls fail at once, without a round trip, and
//! `on_backend_error` decides; a probe off the request path (one every [`PROBE_EVERY`], see
//! `RedisLimiter::trip`) closes the breaker when the backend answers again. Without it every
//! request paid a reconnection attempt while Redis refused connections (100-160 ms each).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::BackendError;

/// How often the backend is probed while the breaker is open.
pub(super) const PROBE_EVERY: Duration = Duration::from_secs(1);

/// Open (failing fast) or closed (calling through), and whether a probe is running.
#[derive(Debug, Default)]
pub(super) struct Breaker {
    open: AtomicBool,
    probing: AtomicBool,
}

impl Breaker {
    /// `Ok`: call the backend; `Err`: fail at once. One atomic load.
    pub(super) fn gate(&self) -> Result<(), BackendError> {
        if self.open.load(Ordering::Acquire) {
            return Err(BackendError::short_circuited());
        }
        Ok(())
    }

    /// The backend answered (a call or the probe).
    pub(super) fn succeeded(&self) {
        if self.open.swap(false, Ordering::AcqRel) {
            tracing::info!("limit backend answers again: limit checks resume");
        }
    }

    /// The backend is away: fail fast from now on. True when the caller is to start the probe
    /// (none runs yet).
    pub(super) fn failed(&self) -> bool {
        if !self.open.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                "limit backend unreachable: limit checks fail at once (on_backend_error applies) until a probe, one a second, finds it back"
            );
        }
        !self.probing.swap(true, Ordering::AcqRel)
    }

    /// The probe has ended (the backend is back, or the probe could not run).
    pub(super) fn probe_ended(&self) {
        self.probing.store(false, Ordering::Release);
    }

    /// Closes the breaker without a probe (when none can run).
    pub(super) fn reset(&self) {
        self.open.store(false, Ordering::Release);
        self.probe_ended();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_fails_fast_and_one_probe_runs_until_it_is_back() {
        let b = Breaker::default();
        assert!(b.gate().is_ok());
        assert!(b.failed(), "the first failure starts the probe");
        let e = b.gate().expect_err("open");
        assert!(e.short_circuited);
        assert!(!b.failed(), "one probe at a time");
        b.succeeded();
        b.probe_ended();
        assert!(b.gate().is_ok() && b.gate().is_ok(), "closed again");
        assert!(b.failed(), "a new outage starts a new probe");
        b.reset();
        assert!(b.gate().is_ok());
    }
}
