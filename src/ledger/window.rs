//! The ledger gauges of `/metrics`: requests and cost per (team, provider, model) over a time
//! window, read from the database and cached briefly so that scrapes cost one query per
//! `metrics_cache_secs` at most, and a slow database never holds a scrape for long.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, TimeZone, Utc};

use super::report::{GroupKey, ReportQuery};
use super::store::Store;
use crate::metrics::{LedgerSeries, LedgerWindow, OVERFLOW_VALUE};

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
    max_series: usize,
    max_value_bytes: usize,
    entries: tokio::sync::Mutex<HashMap<(i64, i64), Cached>>,
}

impl WindowCache {
    /// A cache whose entries live `ttl`, each with at most `max_series` series and label
    /// values of at most `max_value_bytes` bytes.
    pub fn new(ttl: Duration, max_series: usize, max_value_bytes: usize) -> WindowCache {
        WindowCache {
            ttl,
            max_series: max_series.max(1),
            max_value_bytes,
            entries: tokio::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The gauges of `[from, to)`: cached, else queried (one query at a time), else the last
    /// value known (empty if none).
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
        if entries.len() >= MAX_ENTRIES && !entries.contains_key(&key) {
            entries.clear();
        }
        match tokio::time::timeout(QUERY_TIMEOUT, store.report(&query)).await {
            Ok(Ok(report)) => {
                let series = report
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
                    .collect();
                let w = Arc::new(LedgerWindow {
                    series: capped(folded(series, self.max_value_bytes), self.max_series),
                });
                entries.insert(key, (Instant::now(), w.clone()));
                Some(w)
            }
            failed => {
                match failed {
                    Ok(Err(e)) => tracing::warn!(error = %e, "ledger gauges: query failed"),
                    _ => tracing::warn!("ledger gauges: the database did not answer in time"),
                }
                // Served, and not asked again, until the entry expires: a database that is
                // down costs one wait per `ttl`, not one per scrape.
                let w = stale.unwrap_or_default();
                entries.insert(key, (Instant::now(), w.clone()));
                Some(w)
            }
        }
    }
}

/// Groups with a value longer than `max` bytes (models the ledger keeps up to 256 characters),
/// merged per team into `__other__`, as the metric families fold long values.
fn folded(series: Vec<LedgerSeries>, max: usize) -> Vec<LedgerSeries> {
    if series
        .iter()
        .all(|s| s.team.len() <= max && s.provider.len() <= max && s.model.len() <= max)
    {
        return series;
    }
    let fold = |v: String| {
        if v.len() > max {
            OVERFLOW_VALUE.to_string()
        } else {
            v
        }
    };
    let mut merged: HashMap<(String, String, String), LedgerSeries> = HashMap::new();
    for s in series {
        let key = (fold(s.team), fold(s.provider), fold(s.model));
        let m = merged.entry(key.clone()).or_insert_with(|| LedgerSeries {
            team: key.0,
            provider: key.1,
            model: key.2,
            ..LedgerSeries::default()
        });
        m.requests = m.requests.saturating_add(s.requests);
        m.cost_nanos = m.cost_nanos.saturating_add(s.cost_nanos);
    }
    let mut out: Vec<LedgerSeries> = merged.into_values().collect();
    out.sort_by(|a, b| (&a.team, &a.provider, &a.model).cmp(&(&b.team, &b.provider, &b.model)));
    out
}

/// At most `cap` series: the cheapest (team, provider, model) groups beyond it are folded
/// into one `provider="__other__", model="__other__"` series per team (teams come from the
/// config, so they are bounded), as the metric families fold their overflow.
fn capped(mut series: Vec<LedgerSeries>, cap: usize) -> Vec<LedgerSeries> {
    if series.len() <= cap {
        return series;
    }
    series.sort_by(|a, b| {
        b.cost_nanos
            .cmp(&a.cost_nanos)
            .then(b.requests.cmp(&a.requests))
    });
    let keep = (cap / 2).max(1);
    let rest = series.split_off(keep);
    let mut other: HashMap<String, LedgerSeries> = HashMap::new();
    for s in rest {
        let o = other.entry(s.team.clone()).or_insert_with(|| LedgerSeries {
            team: s.team.clone(),
            provider: OVERFLOW_VALUE.into(),
            model: OVERFLOW_VALUE.into(),
            ..LedgerSeries::default()
        });
        o.requests = o.requests.saturating_add(s.requests);
        o.cost_nanos = o.cost_nanos.saturating_add(s.cost_nanos);
    }
    if keep + other.len() > cap {
        // More teams than room: one series for all of the rest.
        let mut all = LedgerSeries {
            team: OVERFLOW_VALUE.into(),
            provider: OVERFLOW_VALUE.into(),
            model: OVERFLOW_VALUE.into(),
            ..LedgerSeries::default()
        };
        for o in other.into_values() {
            all.requests = all.requests.saturating_add(o.requests);
            all.cost_nanos = all.cost_nanos.saturating_add(o.cost_nanos);
        }
        series.push(all);
    } else {
        series.extend(other.into_values());
    }
    series.sort_by(|a, b| (&a.team, &a.provider, &a.model).cmp(&(&b.team, &b.provider, &b.model)));
    series
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

    #[test]
    fn long_values_fold_into_other_per_team() {
        let s = |model: &str, cost: i64| LedgerSeries {
            team: "a".into(),
            provider: "p".into(),
            model: model.into(),
            requests: 1,
            cost_nanos: cost,
        };
        let out = folded(
            vec![
                s("short", 1),
                s(&"x".repeat(200), 2),
                s(&"y".repeat(300), i64::MAX),
            ],
            128,
        );
        assert_eq!(out.len(), 2);
        let other = out
            .iter()
            .find(|s| s.model == OVERFLOW_VALUE)
            .expect("folded");
        assert_eq!((other.team.as_str(), other.requests), ("a", 2));
        assert_eq!(other.cost_nanos, i64::MAX, "sums saturate");
    }

    #[test]
    fn gauges_past_the_cap_fold_into_other_per_team() {
        let series: Vec<LedgerSeries> = (0..100)
            .map(|i| LedgerSeries {
                team: if i % 2 == 0 { "a" } else { "b" }.into(),
                provider: "p".into(),
                model: format!("m{i}"),
                requests: 1,
                cost_nanos: i,
            })
            .collect();
        let out = capped(series, 10);
        assert!(out.len() <= 10, "{}", out.len());
        assert_eq!(out.iter().map(|s| s.requests).sum::<i64>(), 100);
        assert_eq!(
            out.iter().map(|s| s.cost_nanos).sum::<i64>(),
            (0..100).sum::<i64>()
        );
        assert!(
            out.iter()
                .any(|s| s.team == "a" && s.model == OVERFLOW_VALUE)
        );
        assert!(
            out.iter().any(|s| s.model == "m99"),
            "the most expensive stay"
        );
    }
}
