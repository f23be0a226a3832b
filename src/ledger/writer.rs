//! The writer task: takes rows from the channel, inserts them in batches (when a batch is full,
//! or `flush_interval` after the oldest row waiting), and survives a database that is down or
//! stalled: every operation has a timeout, failures are retried with exponential backoff, and
//! meanwhile rows are kept in memory up to `max_buffered_rows`. Past that bound it stops
//! taking rows, the channel fills, and the request path counts what it cannot hand over as
//! dropped. On stop it drains the channel and writes everything, within `drain_timeout`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::config::LedgerConfig;
use super::row::UsageRow;
use super::store::Store;
use crate::metrics::Metrics;

const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// At most one error line per this interval while the database stays down.
const ERROR_LOG_EVERY: Duration = Duration::from_secs(10);

pub(super) struct Writer {
    pub(super) rx: mpsc::Receiver<UsageRow>,
    pub(super) wake: Arc<Notify>,
    pub(super) stop: watch::Receiver<bool>,
    pub(super) store: Store,
    pub(super) cfg: LedgerConfig,
    pub(super) metrics: Arc<Metrics>,
}

struct State {
    buf: Vec<UsageRow>,
    /// When the oldest row of `buf` arrived.
    oldest: Option<Instant>,
    migrated: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
    last_error_log: Option<Instant>,
    failures: u64,
}

impl Writer {
    pub(super) async fn run(mut self) {
        let mut st = State {
            buf: Vec::with_capacity(self.cfg.batch_size),
            oldest: None,
            migrated: false,
            backoff: MIN_BACKOFF,
            retry_at: None,
            last_error_log: None,
            failures: 0,
        };
        self.try_migrate(&mut st).await;
        loop {
            let room = self.cfg.max_buffered_rows.saturating_sub(st.buf.len());
            let deadline = match (st.retry_at, st.oldest) {
                (Some(r), _) => Some(r),
                (None, Some(o)) if st.buf.len() >= self.cfg.batch_size => {
                    Some(o.min(Instant::now()))
                }
                (None, Some(o)) => Some(o + self.cfg.flush_interval),
                (None, None) if !st.migrated => Some(Instant::now() + MAX_BACKOFF),
                (None, None) => None,
            };
            // An empty buffer waits for the first row; after that the channel is read only at
            // the deadline or when a sender reports a full batch waiting, so that a steady
            // stream of rows wakes this task a few times per flush interval, not once a row.
            let idle = st.buf.is_empty();
            tokio::select! {
                biased;
                _ = self.stop.changed() => break,
                n = self.rx.recv_many(&mut st.buf, room.min(self.cfg.batch_size)), if room > 0 && idle => {
                    if n == 0 {
                        break; // every sender is gone
                    }
                    st.oldest.get_or_insert_with(Instant::now);
                    self.set_buffered(&st);
                    if st.buf.len() >= self.cfg.batch_size && st.retry_at.is_none() {
                        self.flush(&mut st, false).await;
                    }
                }
                _ = self.wake.notified(), if !idle => {
                    self.take_waiting(&mut st);
                    if st.buf.len() >= self.cfg.batch_size && st.retry_at.is_none() {
                        self.flush(&mut st, false).await;
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.take_waiting(&mut st);
                    st.retry_at = None;
                    if !st.migrated {
                        self.try_migrate(&mut st).await;
                    }
                    if st.migrated {
                        self.flush(&mut st, false).await;
                    }
                }
            }
        }
        self.drain(&mut st).await;
    }

    /// Moves the rows waiting in the channel to the buffer, as far as it has room.
    fn take_waiting(&mut self, st: &mut State) {
        while st.buf.len() < self.cfg.max_buffered_rows {
            match self.rx.try_recv() {
                Ok(row) => st.buf.push(row),
                Err(_) => break,
            }
        }
        if !st.buf.is_empty() {
            st.oldest.get_or_insert_with(Instant::now);
        }
        self.set_buffered(st);
    }

    /// Writes everything: what is buffered and what is still in the channel.
    async fn drain(&mut self, st: &mut State) {
        let deadline = Instant::now() + self.cfg.drain_timeout;
        while let Ok(row) = self.rx.try_recv() {
            st.buf.push(row);
        }
        self.set_buffered(st);
        let total = st.buf.len();
        if total > 0 {
            tracing::info!(rows = total, "ledger: writing the rows held before exit");
        }
        while !st.buf.is_empty() && Instant::now() < deadline {
            if !st.migrated {
                self.try_migrate(st).await;
            }
            if st.migrated {
                self.flush(st, true).await;
            }
            if !st.buf.is_empty() {
                let wait = st
                    .backoff
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(wait).await;
            }
        }
        // Rows that arrived during the drain (late settlements) get one more chance.
        while let Ok(row) = self.rx.try_recv() {
            st.buf.push(row);
        }
        if !st.buf.is_empty() && st.migrated && Instant::now() < deadline {
            self.flush(st, true).await;
        }
        if !st.buf.is_empty() {
            let n = st.buf.len();
            self.metrics.ledger_dropped.add(n as u64);
            tracing::error!(
                rows = n,
                "ledger: the database could not take these rows before the drain deadline; they are lost (counted in llm_gateway_ledger_dropped_rows_total)"
            );
            st.buf.clear();
        }
        self.set_buffered(st);
        self.store.close().await;
    }

    async fn try_migrate(&self, st: &mut State) {
        match tokio::time::timeout(self.cfg.write_timeout, self.store.migrate()).await {
            Ok(Ok(())) => {
                st.migrated = true;
                if st.failures > 0 {
                    tracing::info!(failures = st.failures, "ledger: database reachable again");
                }
            }
            Ok(Err(e)) => self.failed(st, &e.to_string()),
            Err(_) => self.failed(st, "timed out"),
        }
    }

    /// Inserts batches while a full one is waiting (or, when `all`, until empty).
    async fn flush(&self, st: &mut State, all: bool) {
        while !st.buf.is_empty() {
            let n = st.buf.len().min(self.cfg.batch_size);
            let due = all
                || st
                    .oldest
                    .is_some_and(|o| o.elapsed() >= self.cfg.flush_interval);
            if n < self.cfg.batch_size && !due {
                return;
            }
            let result =
                tokio::time::timeout(self.cfg.write_timeout, self.store.insert(&st.buf[..n])).await;
            match result {
                Ok(Ok(())) => {
                    st.buf.drain(..n);
                    self.metrics.ledger_written.add(n as u64);
                    if st.failures > 0 {
                        tracing::info!(failures = st.failures, "ledger: writing again");
                        st.failures = 0;
                    }
                    st.backoff = MIN_BACKOFF;
                    st.oldest = if st.buf.is_empty() {
                        None
                    } else {
                        Some(Instant::now())
                    };
                    self.set_buffered(st);
                }
                Ok(Err(e)) => return self.failed(st, &e.to_string()),
                Err(_) => return self.failed(st, "timed out"),
            }
        }
    }

    fn failed(&self, st: &mut State, error: &str) {
        st.failures += 1;
        st.retry_at = Some(Instant::now() + st.backoff);
        let due = st
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY);
        if due {
            st.last_error_log = Some(Instant::now());
            tracing::error!(
                backend = self.store.backend(),
                error,
                buffered = st.buf.len(),
                retry_in_ms = st.backoff.as_millis() as u64,
                failures = st.failures,
                "ledger: database write failed; keeping rows in memory and retrying"
            );
        }
        st.backoff = (st.backoff * 2).min(MAX_BACKOFF);
    }

    fn set_buffered(&self, st: &State) {
        self.metrics
            .ledger_buffered
            .set(i64::try_from(st.buf.len()).unwrap_or(i64::MAX));
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
