//! The usage ledger: one [`UsageRow`] per finished request, kept in SQLite (default) or
//! PostgreSQL, with the reports behind `GET /api/v1/usage` and `tollgate usage`.
//!
//! The request path only calls [`Ledger::record`], a `try_send` into a bounded channel: it
//! never waits and never fails. A full channel counts the row in
//! `llm_gateway_ledger_dropped_rows_total` (and says so in the log, at most every 10 s). The
//! [`writer`] task batches rows into the database and retries while it is down; at shutdown
//! [`Ledger::close`] makes it write everything it holds before the process exits.

pub mod config;
pub mod report;
pub mod reprice;
pub mod rollup;
pub mod row;
mod sqlite_thread;
pub mod store;
pub mod window;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, watch};

pub use config::{LedgerConfig, RawLedger};
pub use report::{Report, ReportQuery};
pub use row::UsageRow;
pub use store::{SpendFilter, Store};
pub use window::MetricsWindow;

use crate::metrics::{LedgerWindow, Metrics};

/// What can go wrong talking to the ledger database.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// `[ledger] enabled = false`.
    #[error("the ledger is disabled ([ledger] enabled = false)")]
    Disabled,
    /// The URL could not be read.
    #[error("invalid ledger URL {url}: {reason}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// Why.
        reason: String,
    },
    /// The database answered with an error (or could not be reached).
    #[error("ledger database: {0}")]
    Database(#[from] sqlx::Error),
    /// SQLite answered with an error (the writes, on the ledger's SQLite thread).
    #[error("ledger database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The SQLite thread could not be started.
    #[error("could not start the ledger's SQLite thread: {0}")]
    Thread(std::io::Error),
    /// The SQLite thread still has jobs waiting (stuck behind a locked database).
    #[error("the ledger's SQLite thread is busy")]
    Busy,
    /// The SQLite thread is gone (it panicked).
    #[error("the ledger's SQLite thread is gone")]
    Gone,
    /// The database did not answer in time.
    #[error("the ledger database did not answer within {0:?}")]
    Timeout(Duration),
}

/// The ledger handle: cheap to clone, shared by the request path and the admin endpoints.
#[derive(Clone)]
pub struct Ledger {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<UsageRow>,
    /// Requests refused before a key was known, counted until the writer stores them.
    unauthenticated: Arc<Unauthenticated>,
    /// Wakes the writer early: a full batch is waiting in the channel.
    wake: Arc<Notify>,
    store: Store,
    cfg: LedgerConfig,
    metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
    windows: window::WindowCache,
    /// Seconds since `epoch` of the last "channel full" log line, plus one (0: never).
    last_drop_log: AtomicU64,
    epoch: Instant,
    /// True once the writer has put the schema in place.
    migrated: watch::Receiver<bool>,
}

/// Seconds between two "rows dropped" log lines.
const DROP_LOG_EVERY_SECS: u64 = 10;

impl Ledger {
    /// A ledger that keeps nothing (`[ledger] enabled = false`, and in-process tests).
    pub fn disabled() -> Ledger {
        Ledger { inner: None }
    }

    /// Opens the store of `cfg` (lazily: a database that is down is retried by the writer,
    /// the gateway starts anyway) and starts the writer. Must run inside a Tokio runtime.
    pub fn open(cfg: &LedgerConfig, metrics: Arc<Metrics>) -> Result<Ledger, LedgerError> {
        if !cfg.enabled {
            return Ok(Ledger::disabled());
        }
        let store = Store::connect_lazy(&cfg.url, true, cfg.write_timeout)?;
        let (tx, rx) = mpsc::channel(cfg.channel_capacity);
        let (stop, stop_rx) = watch::channel(false);
        let (migrated, migrated_rx) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let unauthenticated = Arc::new(Unauthenticated::default());
        let writer = writer::Writer {
            rx,
            wake: wake.clone(),
            stop: stop_rx,
            store: store.clone(),
            cfg: cfg.clone(),
            metrics: metrics.clone(),
            migrated,
            unauthenticated: unauthenticated.clone(),
        };
        let handle = tokio::spawn(writer.run());
        let windows = window::WindowCache::new(
            cfg.metrics_cache,
            metrics.max_series_per_family,
            metrics.max_label_value_bytes(),
        );
        tracing::info!(
            url = %config::redact(&cfg.url),
            backend = store.backend(),
            "ledger: writing usage rows"
        );
        Ok(Ledger {
            inner: Some(Arc::new(Inner {
                tx,
                unauthenticated,
                wake,
                store,
                cfg: cfg.clone(),
                metrics,
                stop,
                writer: Mutex::new(Some(handle)),
                windows,
                last_drop_log: AtomicU64::new(0),
                epoch: Instant::now(),
                migrated: migrated_rx,
            })),
        })
    }

    /// True when rows are kept.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The validated config, when enabled.
    pub fn config(&self) -> Option<&LedgerConfig> {
        self.inner.as_ref().map(|i| &i.cfg)
    }

    /// Hands `row` to the writer without waiting. A full channel drops the row, counts it in
    /// `llm_gateway_ledger_dropped_rows_total` and logs (at most every 10 s).
    pub fn record(&self, row: UsageRow) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.tx.try_send(row).is_err() {
            inner.metrics.ledger_dropped.add(1);
            inner.log_drop();
            return;
        }
        // The writer looks at the channel once per flush interval, not per row (a wake-up
        // per row cost every request a cross-thread wake); a full batch calls it sooner.
        let waiting = inner.tx.max_capacity() - inner.tx.capacity();
        if waiting >= inner.cfg.batch_size {
            inner.wake.notify_one();
        }
    }

    /// Hands the row of a request the gateway refused itself (bad body, unknown model, a
    /// limit) to the writer, only while the channel is at most half full: the other half is
    /// kept for the rows of requests a provider served and billed, which a flood of refusals
    /// must never push out. Past that the row is dropped and counted.
    pub fn record_refusal(&self, row: UsageRow) {
        let Some(inner) = &self.inner else {
            return;
        };
        if inner.tx.capacity() * 2 < inner.tx.max_capacity() {
            inner.metrics.ledger_dropped.add(1);
            inner.log_drop();
            return;
        }
        self.record(row);
    }

    /// Counts a request refused before a key was known (`missing_key`, `invalid_key`). These
    /// take no row and no room in the rows' channel: the writer stores per-minute counts
    /// (table `tollgate_unauthenticated`). Cheap: a short lock on a handful of counters.
    pub fn record_unauthenticated(&self, error_type: &'static str, endpoint: &'static str) {
        if let Some(inner) = &self.inner {
            inner.unauthenticated.add(error_type, endpoint);
        }
    }

    /// Hands `row` to the writer, waiting for room in the channel. For benchmarks and tools,
    /// never for the request path.
    #[doc(hidden)]
    pub async fn record_waiting(&self, row: UsageRow) {
        if let Some(inner) = &self.inner {
            let _ = inner.tx.send(row).await;
        }
    }

    /// The database behind the ledger, for reports.
    pub fn store(&self) -> Result<&Store, LedgerError> {
        self.inner
            .as_ref()
            .map(|i| &i.store)
            .ok_or(LedgerError::Disabled)
    }

    /// Waits until the writer has put the schema in place (at most `timeout`); false when it
    /// has not (database down): queries before that find no tables.
    pub async fn wait_migrated(&self, timeout: Duration) -> bool {
        let Some(inner) = &self.inner else {
            return false;
        };
        let mut rx = inner.migrated.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|m| *m)).await,
            Ok(Ok(_))
        )
    }

    /// Cost in nano-USD of a team's or a key's requests since `since` (budgets restore their
    /// period's spend from this at start-up). Rows not yet written are not included.
    pub async fn spend_nanos(
        &self,
        filter: SpendFilter<'_>,
        since: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        let inner = self.inner.as_ref().ok_or(LedgerError::Disabled)?;
        let timeout = inner.cfg.write_timeout;
        tokio::time::timeout(timeout, inner.store.spend_nanos(filter, since))
            .await
            .map_err(|_| LedgerError::Timeout(timeout))?
    }

    /// A usage report, bounded by the configured database timeout. A report asked for just
    /// after start waits for the schema (a new database has no tables until the writer's first
    /// migration; the usage API answered 503 "no such table" then).
    pub async fn report(&self, q: &ReportQuery) -> Result<Report, LedgerError> {
        let inner = self.inner.as_ref().ok_or(LedgerError::Disabled)?;
        let timeout = inner.cfg.write_timeout;
        if !self.wait_migrated(timeout).await {
            return Err(LedgerError::Timeout(timeout));
        }
        tokio::time::timeout(timeout, inner.store.report(q))
            .await
            .map_err(|_| LedgerError::Timeout(timeout))?
    }

    /// The ledger gauges for `[from, to)`, or for the configured default window when `None`;
    /// cached for `metrics_cache_secs`.
    pub async fn window_gauges(&self, window: Option<window::Window>) -> Option<Arc<LedgerWindow>> {
        let inner = self.inner.as_ref()?;
        // No gauges before the schema exists (a scrape never waits for it).
        if !*inner.migrated.borrow() {
            return None;
        }
        let (from, to) = window.or_else(|| inner.cfg.metrics_window.around(Utc::now()))?;
        inner.windows.get(&inner.store, from, to).await
    }

    /// Stops the writer after it has written every row it holds or that is waiting in the
    /// channel (within `drain_timeout`). Call after the server has finished its requests.
    pub async fn close(&self) {
        let Some(inner) = &self.inner else {
            return;
        };
        let _ = inner.stop.send(true);
        let handle = inner.writer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

/// Counts of requests refused before a key was known, per (error type, endpoint), since the
/// writer last stored them. A few entries (2 reasons times the endpoints), so a scan.
#[derive(Default)]
pub(crate) struct Unauthenticated {
    counts: Mutex<Vec<(&'static str, &'static str, u64)>>,
}

impl Unauthenticated {
    fn add(&self, error_type: &'static str, endpoint: &'static str) {
        let mut c = self.counts.lock();
        match c
            .iter_mut()
            .find(|(e, p, _)| *e == error_type && *p == endpoint)
        {
            Some(entry) => entry.2 += 1,
            None => c.push((error_type, endpoint, 1)),
        }
    }

    /// Takes the counts (leaving none).
    pub(crate) fn take(&self) -> Vec<(&'static str, &'static str, u64)> {
        std::mem::take(&mut *self.counts.lock())
    }

    /// Gives back counts the database did not take.
    pub(crate) fn give_back(&self, counts: &[(&'static str, &'static str, u64)]) {
        for &(e, p, n) in counts {
            let mut c = self.counts.lock();
            match c.iter_mut().find(|(e2, p2, _)| *e2 == e && *p2 == p) {
                Some(entry) => entry.2 += n,
                None => c.push((e, p, n)),
            }
        }
    }
}

impl Inner {
    fn log_drop(&self) {
        let now = self.epoch.elapsed().as_secs() + 1;
        let last = self.last_drop_log.load(Ordering::Relaxed);
        if (last == 0 || now >= last + DROP_LOG_EVERY_SECS)
            && self
                .last_drop_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                dropped_total = self.metrics.ledger_dropped.get(),
                "ledger: the writer is behind and its channel is full; usage rows are being dropped (llm_gateway_ledger_dropped_rows_total)"
            );
        }
    }
}
