//! The ledger gauges of `/metrics`: requests and cost per (team, provider, model) over a time
//! window, read from the database and cached briefly so that scrapes cost one query per
//! `metrics_cache_secs` at most, and a slow database never holds a scrape for long.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};

use super::report::{GroupKey, ReportQuery};
use super::store::Store;
use crate::metrics::{LedgerSeries, LedgerWindow};

/// A half-open UTC window `[from, to)`.
pub type Window = (DateTime<Utc>, DateTime<Utc>);

/// The default window of the ledger gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsWindow {
    /// No ledger gauges unless a scrape asks for a window.
    None,
    /// The current UTC day.
    Day,
    /// The current UTC calendar month.
    Month,
}

impl MetricsWindow {
    /// `month`, `day` or `none`.
    pub fn parse(s: &str) -> Option<MetricsWindow> {
        match s {
            "month" => Some(MetricsWindow::Month),
            "day" => Some(MetricsWindow::Day),
            "none" => Some(MetricsWindow::None),
            _ => None,
        }
    }

    /// The half-open window `[from, to)` containing `now`.
    pub fn around(self, now: DateTime<Utc>) -> Option<Window> {
        let day = |y, m, d| Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).single();
        match self {
            MetricsWindow::None => None,
            MetricsWindow::Day => {
                let from = day(now.year(), now.month(), now.day())?;
                Some((from, from + chrono::Duration::days(1)))
            }
            MetricsWindow::Month => {
                let from = day(now.year(), now.month(), 1)?;
                let to = if now.month() == 12 {
                    day(now.year() + 1, 1, 1)?
                } else {
                    day(now.year(), now.month() + 1, 1)?
                };
                Some((from, to))
            }
        }
    }
}

/// How long a scrape waits for the ledger before it is served without (or with stale) gauges.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Windows remembered at once.
const MAX_ENTRIES: usize = 16;

/// When a window was computed, and its gauges.
type Cached = (Instant, Arc<LedgerWindow>);

/// Recently computed windows.
pub struct WindowCache {
    ttl: Duration,
    entries: tokio::sync::Mutex<HashMap<(i64, i64), Cached>>,
}

impl WindowCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> WindowCache {
        WindowCache {
            ttl,
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The gauges of `[from, to)`: cached, else queried (one query at a time), else the last
    /// value known, else none.
    pub async fn get(
        &self,
        store: &Store,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Option<Arc<LedgerWindow>> {
        let key = (from.timestamp_micros(), to.timestamp_micros());
        let mut entries = self.entries.lock().await;
        let stale = match entries.get(&key) {
            Some((at, w)) if at.elapsed() < self.ttl => return Some(w.clone()),
            Some((_, w)) => Some(w.clone()),
            None => None,
        };
        let query = ReportQuery {
            from,
            to,
            group_by: vec![GroupKey::Team, GroupKey::Provider, GroupKey::Model],
        };
        match tokio::time::timeout(QUERY_TIMEOUT, store.report(&query)).await {
            Ok(Ok(report)) => {
                let w = Arc::new(LedgerWindow {
                    series: report
                        .rows
                        .into_iter()
                        .map(|r| {
                            let mut g = r.groups.into_iter();
                            LedgerSeries {
                                team: g.next().unwrap_or_default(),
                                provider: g.next().unwrap_or_default(),
                                model: g.next().unwrap_or_default(),
                                requests: r.totals.requests,
                                cost_nanos: r.totals.cost_nanos,
                            }
                        })
                        .collect(),
                });
                if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
                    entries.clear();
                }
                entries.insert(key, (Instant::now(), w.clone()));
                Some(w)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "ledger gauges: query failed");
                stale
            }
            Err(_) => {
                tracing::warn!("ledger gauges: the database did not answer in time");
                stale
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_half_open_utc_periods() {
        let now = Utc
            .with_ymd_and_hms(2026, 12, 31, 23, 59, 59)
            .single()
            .expect("time");
        let (from, to) = MetricsWindow::Month.around(now).expect("month");
        assert_eq!(from.to_rfc3339(), "2026-12-01T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        let (from, to) = MetricsWindow::Day.around(now).expect("day");
        assert_eq!(from.to_rfc3339(), "2026-12-31T00:00:00+00:00");
        assert_eq!(to.to_rfc3339(), "2027-01-01T00:00:00+00:00");
        assert!(MetricsWindow::None.around(now).is_none());
    }
}
