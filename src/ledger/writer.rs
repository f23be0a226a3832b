//! The writer task: takes rows from the channel, inserts them in batches (when a batch is full,
//! or `flush_interval` after the oldest row waiting), and survives a database that is down or
//! stalled: every operation has a timeout, failures are retried with exponential backoff, and
//! meanwhile rows are kept in memory up to `max_buffered_rows`. Past that bound it stops
//! taking rows, the channel fills, and the request path counts what it cannot hand over as
//! dropped. On stop it drains the channel and writes everything, within `drain_timeout`.
//!
//! What it counts as written it checks: every `verify_interval` the first and last row of each
//! batch committed since the last check are looked up from another connection than the one
//! that wrote them (SQLite: a second connection the ledger's SQLite thread keeps open; it sees
//! only what was committed; a batch commits whole or not at all), and the SQLite file's device
//! and inode are compared with those it opened (one `stat`: what a deleted or replaced file
//! changes). Batches are kept in memory until checked; a batch not found is written again and
//! every connection is replaced, so a fault that slips past the error handling (a file deleted
//! or replaced under the gateway, a connection left inside a transaction) costs no row that was
//! still held, and says so loudly. (The check opened a new SQLite connection each time until
//! 2026-12-03: ~100,000 instructions, every 4 batches or every second.)

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Instant;

use super::config::LedgerConfig;
use super::row::UsageRow;
use super::store::{FileId, Store};
use crate::metrics::{LedgerFault, Metrics};

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
    /// Set once the schema is in place (budgets are restored from the ledger only then).
    pub(super) migrated: watch::Sender<bool>,
    /// Stored at every check interval as per-minute counts.
    pub(super) unauthenticated: Arc<super::Unauthenticated>,
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
    /// Rows at the front of `buf` already counted as written once (found missing since).
    recounted: usize,
    /// Batches committed and not yet found from another connection, oldest first.
    unverified: VecDeque<Vec<UsageRow>>,
    unverified_rows: usize,
    verify_at: Instant,
    /// The SQLite file the pool opened (None: PostgreSQL, in memory, or not yet known).
    file: Option<FileId>,
    last_fault_log: Option<Instant>,
    /// Emptied batch buffers, reused (a batch moves whole to `unverified`).
    spare: Vec<Vec<UsageRow>>,
}

/// Verify early once this many batches' rows wait, whatever the interval, bounding the
/// memory held for checks (4 full batches of 1,000 rows are ~1 MB).
const VERIFY_AFTER_BATCHES: usize = 4;

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
            recounted: 0,
            unverified: VecDeque::new(),
            unverified_rows: 0,
            verify_at: Instant::now() + self.cfg.verify_interval,
            file: None,
            last_fault_log: None,
            spare: Vec::new(),
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
                _ = tokio::time::sleep_until(st.verify_at), if st.migrated => {
                    self.verify(&mut st).await;
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

    /// Writes everything: what is buffered and what is still in the channel, and checks it.
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
        while (!st.buf.is_empty() || !st.unverified.is_empty()) && Instant::now() < deadline {
            if !st.migrated {
                self.try_migrate(st).await;
            }
            if st.migrated {
                self.flush(st, true).await;
            }
            if st.migrated && st.buf.is_empty() {
                // Rows found missing go back to the buffer and round the loop again.
                self.verify(st).await;
            }
            if !st.buf.is_empty() || !st.unverified.is_empty() {
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
            self.verify(st).await;
        }
        if st.migrated {
            self.store_unauthenticated().await;
        }
        if st.unverified_rows > 0 {
            tracing::warn!(
                rows = st.unverified_rows,
                "ledger: rows written just before exit could not be checked from another connection"
            );
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
                self.migrated.send_replace(true);
                st.file = self.store.file_id().await.ok().flatten();
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
            // The batch moves out of the buffer to the SQLite thread, which binds it where it
            // is; it comes back from the Arc once answered (a copy only after a timeout, the
            // thread still holding it).
            let batch = if n == st.buf.len() {
                let next = st
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(self.cfg.batch_size));
                std::mem::replace(&mut st.buf, next)
            } else {
                st.buf.drain(..n).collect()
            };
            let batch = Arc::new(batch);
            let result = tokio::time::timeout(
                self.cfg.write_timeout,
                self.store.insert_shared(batch.clone()),
            )
            .await;
            let batch = Arc::try_unwrap(batch).unwrap_or_else(|shared| shared.to_vec());
            match result {
                Ok(Ok(_)) => {
                    // Counted once its commit succeeded; kept until a check finds it.
                    let again = st.recounted.min(n);
                    st.recounted -= again;
                    self.metrics.ledger_written.add((n - again) as u64);
                    st.unverified_rows += n;
                    st.unverified.push_back(batch);
                    if st.unverified.len() >= VERIFY_AFTER_BATCHES {
                        st.verify_at = Instant::now();
                    }
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
                Ok(Err(e)) => {
                    self.put_back(st, batch);
                    return self.failed(st, &e.to_string());
                }
                Err(_) => {
                    self.put_back(st, batch);
                    return self.failed(st, "timed out");
                }
            }
        }
    }

    /// A batch that failed goes back to the front of the buffer, in order.
    fn put_back(&self, st: &mut State, mut batch: Vec<UsageRow>) {
        let rest = std::mem::take(&mut st.buf);
        batch.extend(rest);
        st.buf = batch;
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

    /// Checks the SQLite file's identity and looks up the batches written since the last
    /// check from another connection; batches not found go back to the front of the buffer.
    async fn verify(&self, st: &mut State) {
        st.verify_at = Instant::now() + self.cfg.verify_interval;
        self.store_unauthenticated().await;
        let path = self.store.path().map(|p| p.display().to_string());
        match self.store.file_id().await {
            Ok(now) => {
                if st.file.is_some() && now != st.file {
                    self.fault(
                        st,
                        LedgerFault::FileReplaced,
                        path.as_deref(),
                        "ledger: the database file was REPLACED under the running gateway (another file at its path): reopening it; rows written before are in the old file",
                    );
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && st.file.is_some() => {
                self.fault(
                    st,
                    LedgerFault::FileDeleted,
                    path.as_deref(),
                    "ledger: the database file was DELETED under the running gateway: creating it anew; rows written before it was deleted are lost with it",
                );
            }
            Err(_) => {}
        }
        if !st.migrated {
            self.try_migrate(st).await;
            if !st.migrated {
                return;
            }
        }
        if st.unverified.is_empty() {
            return;
        }
        let ids: Vec<uuid::Uuid> = st
            .unverified
            .iter()
            .flat_map(|b| [b.first(), b.last()])
            .flatten()
            .map(|r| r.id)
            .collect();
        let found = match tokio::time::timeout(
            self.cfg.write_timeout,
            self.store.committed_ids(&ids),
        )
        .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => return self.unverifiable(st, &e.to_string()),
            Err(_) => return self.unverifiable(st, "timed out"),
        };
        let mut missing: Vec<UsageRow> = Vec::new();
        while let Some(mut batch) = st.unverified.pop_front() {
            let whole = [batch.first(), batch.last()]
                .into_iter()
                .flatten()
                .all(|r| found.contains(&r.id));
            if whole {
                batch.clear();
                if st.spare.len() < 2 {
                    st.spare.push(batch);
                }
            } else {
                missing.append(&mut batch);
            }
        }
        st.unverified_rows = 0;
        if missing.is_empty() {
            return;
        }
        let n = missing.len();
        self.metrics.ledger_rewritten.add(n as u64);
        self.fault(
            st,
            LedgerFault::RowsMissing,
            path.as_deref(),
            "ledger: rows counted as written were NOT FOUND from another connection: writing them again on new connections (llm_gateway_ledger_integrity_errors_total)",
        );
        tracing::error!(rows = n, "ledger: rows written again after a failed check");
        st.recounted += n;
        missing.append(&mut st.buf);
        st.buf = missing;
        st.oldest = Some(Instant::now() - self.cfg.flush_interval);
        self.set_buffered(st);
    }

    /// Adds the counts of unauthenticated requests since the last call to the current UTC
    /// minute (a count may land in the minute after its request, by at most the interval).
    async fn store_unauthenticated(&self) {
        let counts = self.unauthenticated.take();
        if counts.is_empty() {
            return;
        }
        let now = chrono::Utc::now();
        let minute_us = now.timestamp_micros().div_euclid(60_000_000) * 60_000_000;
        let minute = chrono::DateTime::from_timestamp_micros(minute_us).unwrap_or(now);
        let stored = tokio::time::timeout(
            self.cfg.write_timeout,
            self.store.add_unauthenticated(minute, &counts),
        )
        .await;
        match stored {
            Ok(Ok(())) => {
                let n: u64 = counts.iter().map(|c| c.2).sum();
                self.metrics.ledger_unauthenticated.add(n);
            }
            _ => self.unauthenticated.give_back(&counts),
        }
    }

    /// A fault the checks found: counted, logged as an error (at most every 10 s per writer),
    /// and the pool's connections replaced so that the next writes open the file afresh.
    fn fault(&self, st: &mut State, fault: LedgerFault, path: Option<&str>, message: &str) {
        self.metrics.ledger_fault(fault);
        self.store.reset_connections();
        if matches!(fault, LedgerFault::FileDeleted | LedgerFault::FileReplaced) {
            // The schema goes into the new file before anything else.
            st.migrated = false;
            st.file = None;
        }
        let due = st
            .last_fault_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY);
        if due {
            st.last_fault_log = Some(Instant::now());
            tracing::error!(
                backend = self.store.backend(),
                path = path.unwrap_or(""),
                kind = fault.as_str(),
                "{message}"
            );
        }
    }

    /// The check itself failed (database down): keep the batches for the next one, within
    /// the writer's memory bound.
    fn unverifiable(&self, st: &mut State, error: &str) {
        while st.unverified_rows > self.cfg.max_buffered_rows {
            match st.unverified.pop_front() {
                Some(b) => st.unverified_rows -= b.len(),
                None => break,
            }
        }
        let due = st
            .last_error_log
            .is_none_or(|t| t.elapsed() >= ERROR_LOG_EVERY);
        if due {
            st.last_error_log = Some(Instant::now());
            tracing::warn!(
                backend = self.store.backend(),
                error,
                rows = st.unverified_rows,
                "ledger: could not check the rows written; checking again later"
            );
        }
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
