//! `[ledger]`: as written ([`RawLedger`]) and validated ([`LedgerConfig`]).

use std::time::Duration;

use serde::Deserialize;

use super::window::MetricsWindow;

/// The default store: an SQLite file beside the process, created if missing.
pub const DEFAULT_URL: &str = "sqlite://tollgate.db";

/// `[ledger]` as written.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLedger {
    /// Default true.
    pub enabled: Option<bool>,
    /// `sqlite://FILE` (default `sqlite://tollgate.db`) or `postgres://...`.
    pub url: Option<String>,
    /// Bearer token for `GET /api/v1/usage`; the endpoint is off without it.
    pub admin_token: Option<String>,
    /// Window of the `llm_gateway_ledger_*` gauges: `month` (default), `day` or `none`.
    pub metrics_window: Option<String>,
    /// How long the window gauges are cached (default 15 s).
    pub metrics_cache_secs: Option<u64>,
    /// Rows per insert (default 1000).
    pub batch_size: Option<usize>,
    /// Longest wait before a partial batch is written (default 100 ms).
    pub flush_interval_ms: Option<u64>,
    /// Rows waiting between the request path and the writer (default 65536).
    pub channel_capacity: Option<usize>,
    /// Rows the writer keeps in memory while the database is unavailable (default 100000).
    pub max_buffered_rows: Option<usize>,
    /// Longest a database operation may take before it is retried (default 5 s).
    pub write_timeout_secs: Option<u64>,
    /// At shutdown, how long the writer may take to write what it holds (default 15 s).
    pub drain_timeout_secs: Option<u64>,
    /// How often written rows are checked from another connection (default 1000 ms).
    pub verify_interval_ms: Option<u64>,
}

/// The validated `[ledger]`.
#[derive(Debug, Clone)]
pub struct LedgerConfig {
    /// When false, no rows are kept and the usage API is off.
    pub enabled: bool,
    /// Database URL (secrets resolved).
    pub url: String,
    /// Bearer token of the usage API.
    pub admin_token: Option<String>,
    /// Default window of the ledger gauges.
    pub metrics_window: MetricsWindow,
    /// Cache lifetime of the ledger gauges.
    pub metrics_cache: Duration,
    /// Rows per insert.
    pub batch_size: usize,
    /// Longest wait before a partial batch is written.
    pub flush_interval: Duration,
    /// Channel capacity.
    pub channel_capacity: usize,
    /// In-memory bound while the database is down.
    pub max_buffered_rows: usize,
    /// Timeout of one database operation.
    pub write_timeout: Duration,
    /// Drain deadline at shutdown.
    pub drain_timeout: Duration,
    /// How often the rows written since the last check are looked up from another connection
    /// (and the SQLite file's identity checked); rows not found are written again.
    pub verify_interval: Duration,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            enabled: true,
            url: DEFAULT_URL.into(),
            admin_token: None,
            metrics_window: MetricsWindow::Month,
            metrics_cache: Duration::from_secs(15),
            batch_size: 1000,
            flush_interval: Duration::from_millis(100),
            channel_capacity: 65_536,
            max_buffered_rows: 100_000,
            write_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(15),
            verify_interval: Duration::from_secs(1),
        }
    }
}

/// The largest batch (rows per transaction).
pub const MAX_BATCH: usize = 1400;

impl RawLedger {
    /// Validates, with `resolve` for `${VAR}` secrets; errors are `(key path, message)`.
    pub fn validate(
        &self,
        resolve: &mut dyn FnMut(&str, &str) -> Option<String>,
    ) -> Result<LedgerConfig, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let d = LedgerConfig::default();
        // `None`: interpolation failed and `resolve` has reported it.
        let url = match &self.url {
            Some(u) => resolve("ledger.url", u),
            None => Some(d.url.clone()),
        };
        let url_ok = url.as_deref().is_none_or(|url| {
            url.starts_with("sqlite:")
                || url.starts_with("postgres://")
                || url.starts_with("postgresql://")
        });
        let url = url.unwrap_or_default();
        if !url_ok {
            errors.push((
                "ledger.url".into(),
                format!(
                    "{:?} is not a database URL: use sqlite://FILE or postgres://USER@HOST/DB",
                    redact(&url)
                ),
            ));
        }
        let admin_token = self
            .admin_token
            .as_deref()
            .and_then(|t| resolve("ledger.admin_token", t))
            .filter(|t| !t.is_empty());
        if admin_token.as_ref().is_some_and(|t| t.len() < 8) {
            errors.push((
                "ledger.admin_token".into(),
                "must be at least 8 characters".into(),
            ));
        }
        let metrics_window = match self.metrics_window.as_deref() {
            None => d.metrics_window,
            Some(w) => MetricsWindow::parse(w).unwrap_or_else(|| {
                errors.push((
                    "ledger.metrics_window".into(),
                    format!("unknown window {w:?}; one of month, day, none"),
                ));
                d.metrics_window
            }),
        };
        let batch_size = self.batch_size.unwrap_or(d.batch_size);
        if !(1..=MAX_BATCH).contains(&batch_size) {
            errors.push((
                "ledger.batch_size".into(),
                format!("must be between 1 and {MAX_BATCH}"),
            ));
        }
        let mut positive = |name: &str, v: Option<u64>| {
            if v == Some(0) {
                errors.push((format!("ledger.{name}"), "must be greater than 0".into()));
            }
        };
        positive("flush_interval_ms", self.flush_interval_ms);
        positive("write_timeout_secs", self.write_timeout_secs);
        positive("verify_interval_ms", self.verify_interval_ms);
        positive("channel_capacity", self.channel_capacity.map(|v| v as u64));
        positive(
            "max_buffered_rows",
            self.max_buffered_rows.map(|v| v as u64),
        );
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(LedgerConfig {
            enabled: self.enabled.unwrap_or(true),
            url,
            admin_token,
            metrics_window,
            metrics_cache: self
                .metrics_cache_secs
                .map_or(d.metrics_cache, Duration::from_secs),
            batch_size,
            flush_interval: self
                .flush_interval_ms
                .map_or(d.flush_interval, Duration::from_millis),
            channel_capacity: self.channel_capacity.unwrap_or(d.channel_capacity),
            max_buffered_rows: self.max_buffered_rows.unwrap_or(d.max_buffered_rows),
            write_timeout: self
                .write_timeout_secs
                .map_or(d.write_timeout, Duration::from_secs),
            drain_timeout: self
                .drain_timeout_secs
                .map_or(d.drain_timeout, Duration::from_secs),
            verify_interval: self
                .verify_interval_ms
                .map_or(d.verify_interval, Duration::from_millis),
        })
    }
}

/// The URL without its password, for messages and logs.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or("");
            format!("{scheme}://{name}:***@{host}")
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validate(raw: RawLedger) -> Result<LedgerConfig, Vec<(String, String)>> {
        raw.validate(&mut |_, v| Some(v.to_string()))
    }

    #[test]
    fn defaults_are_sqlite_and_the_month() {
        let c = validate(RawLedger::default()).expect("valid");
        assert_eq!(c.url, DEFAULT_URL);
        assert!(c.enabled);
        assert_eq!(c.metrics_window, MetricsWindow::Month);
        assert!(c.admin_token.is_none());
    }

    #[test]
    fn every_bad_key_is_reported() {
        let errors = validate(RawLedger {
            url: Some("mysql://x".into()),
            metrics_window: Some("year".into()),
            batch_size: Some(0),
            admin_token: Some("short".into()),
            ..RawLedger::default()
        })
        .expect_err("invalid");
        let paths: Vec<_> = errors.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "ledger.url",
                "ledger.admin_token",
                "ledger.metrics_window",
                "ledger.batch_size"
            ]
        );
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact("postgres://u:secret@db:5432/x"),
            "postgres://u:***@db:5432/x"
        );
        assert_eq!(redact("sqlite://a.db"), "sqlite://a.db");
    }
}
