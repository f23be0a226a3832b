//! The bill in the ledger database: replacing fetched days, the fetch history, and reading
//! lines back for the reconciliation and the gauges.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use sqlx::Row;

use super::source::{BilledLine, Dataset};
use crate::ledger::{LedgerError, Store};

/// A line's identity: (day, dataset, model, project, api key, item, service tier).
type LineKey = (NaiveDate, Dataset, String, String, String, String, String);

/// Sums lines with the same identity (a bill grouped by fewer keys than the table has, or a
/// line split over pages).
pub fn aggregate(lines: Vec<BilledLine>) -> Vec<BilledLine> {
    let mut m: BTreeMap<LineKey, BilledLine> = BTreeMap::new();
    for l in lines {
        let k = (
            l.day,
            l.dataset,
            l.model.clone(),
            l.project.clone(),
            l.api_key.clone(),
            l.item.clone(),
            l.service_tier.clone(),
        );
        match m.get_mut(&k) {
            Some(e) => {
                e.cost_nanos += l.cost_nanos;
                e.quantity += l.quantity;
            }
            None => {
                m.insert(k, l);
            }
        }
    }
    m.into_values().collect()
}

/// One fetch as the history keeps it.
#[derive(Debug, Clone)]
pub struct FetchRecord {
    /// Source name.
    pub source: String,
    /// Microseconds since the epoch.
    pub started_at: i64,
    /// Microseconds since the epoch.
    pub finished_at: i64,
    /// First day fetched.
    pub from: NaiveDate,
    /// Day after the last.
    pub to: NaiveDate,
    /// `ok` or a bounded reason.
    pub outcome: String,
    /// Lines stored.
    pub lines: i64,
    /// The error, or empty.
    pub message: String,
}

const UPSERT_COLUMNS: &str = "source, day, dataset, model, project, api_key, item, service_tier, \
    cost_nanos, quantity, fetched_at";

fn sql_upsert(pg: bool) -> String {
    let ph: Vec<String> = (1..=11)
        .map(|i| if pg { format!("${i}") } else { "?".into() })
        .collect();
    format!(
        "INSERT INTO tollgate_billing ({UPSERT_COLUMNS}) VALUES ({}) \
         ON CONFLICT (source, day, dataset, model, project, api_key, item, service_tier) \
         DO UPDATE SET cost_nanos = excluded.cost_nanos, quantity = excluded.quantity, \
         fetched_at = excluded.fetched_at",
        ph.join(", ")
    )
}

macro_rules! bind_line {
    ($q:expr, $source:expr, $l:expr, $at:expr) => {
        $q.bind($source)
            .bind($l.day.to_string())
            .bind($l.dataset.as_str())
            .bind(&$l.model)
            .bind(&$l.project)
            .bind(&$l.api_key)
            .bind(&$l.item)
            .bind(&$l.service_tier)
            .bind($l.cost_nanos)
            .bind($l.quantity)
            .bind($at)
    };
}

/// Replaces the days `[from, to)` of `source` with `lines` (aggregated), in one transaction:
/// a revised day replaces the old one, a line that disappeared from it is gone.
pub async fn replace_days(
    store: &Store,
    source: &str,
    from: NaiveDate,
    to: NaiveDate,
    lines: &[BilledLine],
    fetched_at: i64,
) -> Result<(), LedgerError> {
    let (f, t) = (from.to_string(), to.to_string());
    if let Some(pool) = store.sqlite_pool() {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM tollgate_billing WHERE source = ? AND day >= ? AND day < ?")
            .bind(source)
            .bind(&f)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        let sql = sql_upsert(false);
        for l in lines {
            bind_line!(sqlx::query(&sql), source, l, fetched_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    } else if let Some(pool) = store.pg_pool() {
        let mut tx = pool.begin().await?;
        sqlx::query("DELETE FROM tollgate_billing WHERE source = $1 AND day >= $2 AND day < $3")
            .bind(source)
            .bind(&f)
            .bind(&t)
            .execute(&mut *tx)
            .await?;
        let sql = sql_upsert(true);
        for l in lines {
            bind_line!(sqlx::query(&sql), source, l, fetched_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Appends a fetch to the history.
pub async fn record_fetch(store: &Store, r: &FetchRecord) -> Result<(), LedgerError> {
    let pg = store.pg_pool().is_some();
    let ph: Vec<String> = (1..=8)
        .map(|i| if pg { format!("${i}") } else { "?".into() })
        .collect();
    let sql = format!(
        "INSERT INTO tollgate_billing_fetches (source, started_at, finished_at, from_day, \
         to_day, outcome, lines, message) VALUES ({}) ON CONFLICT DO NOTHING",
        ph.join(", ")
    );
    macro_rules! binds {
        ($q:expr) => {
            $q.bind(&r.source)
                .bind(r.started_at)
                .bind(r.finished_at)
                .bind(r.from.to_string())
                .bind(r.to.to_string())
                .bind(&r.outcome)
                .bind(r.lines)
                .bind(&r.message)
        };
    }
    if let Some(pool) = store.sqlite_pool() {
        binds!(sqlx::query(&sql)).execute(pool).await?;
    } else if let Some(pool) = store.pg_pool() {
        binds!(sqlx::query(&sql)).execute(pool).await?;
    }
    Ok(())
}

/// A stored line with its source.
#[derive(Debug, Clone)]
pub struct StoredLine {
    /// Source name.
    pub source: String,
    /// The line.
    pub line: BilledLine,
}

/// Every stored line of the days `[from, to)`.
pub async fn lines(
    store: &Store,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<StoredLine>, LedgerError> {
    let cols = "source, day, dataset, model, project, api_key, item, service_tier, \
        cost_nanos, quantity";
    let read = |r: &dyn Fn(usize) -> Result<String, sqlx::Error>,
                n: &dyn Fn(usize) -> Result<i64, sqlx::Error>|
     -> Result<StoredLine, sqlx::Error> {
        let day = NaiveDate::parse_from_str(&r(1)?, "%Y-%m-%d")
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        Ok(StoredLine {
            source: r(0)?,
            line: BilledLine {
                day,
                dataset: Dataset::parse(&r(2)?),
                model: r(3)?,
                project: r(4)?,
                api_key: r(5)?,
                item: r(6)?,
                service_tier: r(7)?,
                cost_nanos: n(8)?,
                quantity: n(9)?,
            },
        })
    };
    let (f, t) = (from.to_string(), to.to_string());
    let mut out = Vec::new();
    if let Some(pool) = store.sqlite_pool() {
        let sql = format!("SELECT {cols} FROM tollgate_billing WHERE day >= ? AND day < ?");
        for row in sqlx::query(&sql).bind(&f).bind(&t).fetch_all(pool).await? {
            out.push(read(&|i| row.try_get(i), &|i| row.try_get(i))?);
        }
    } else if let Some(pool) = store.pg_pool() {
        let sql = format!("SELECT {cols} FROM tollgate_billing WHERE day >= $1 AND day < $2");
        for row in sqlx::query(&sql).bind(&f).bind(&t).fetch_all(pool).await? {
            out.push(read(&|i| row.try_get(i), &|i| row.try_get(i))?);
        }
    }
    Ok(out)
}

/// The end of the last successful fetch per source, in seconds since the epoch.
pub async fn last_success(store: &Store) -> Result<Vec<(String, f64)>, LedgerError> {
    let sql = "SELECT source, MAX(finished_at) FROM tollgate_billing_fetches \
        WHERE outcome = 'ok' GROUP BY source ORDER BY source";
    let mut out = Vec::new();
    if let Some(pool) = store.sqlite_pool() {
        for row in sqlx::query(sql).fetch_all(pool).await? {
            let at: i64 = row.try_get(1)?;
            out.push((row.try_get(0)?, at as f64 / 1e6));
        }
    } else if let Some(pool) = store.pg_pool() {
        for row in sqlx::query(sql).fetch_all(pool).await? {
            let at: i64 = row.try_get(1)?;
            out.push((row.try_get(0)?, at as f64 / 1e6));
        }
    }
    Ok(out)
}

/// The last `n` fetches of `source`, newest first.
pub async fn history(store: &Store, source: &str, n: i64) -> Result<Vec<FetchRecord>, LedgerError> {
    let pg = store.pg_pool().is_some();
    let sql = format!(
        "SELECT source, started_at, finished_at, from_day, to_day, outcome, lines, message \
         FROM tollgate_billing_fetches WHERE source = {} ORDER BY started_at DESC LIMIT {}",
        if pg { "$1" } else { "?" },
        if pg { "$2" } else { "?" }
    );
    let day = |s: String| {
        NaiveDate::parse_from_str(&s, "%Y-%m-%d").map_err(|e| sqlx::Error::Decode(Box::new(e)))
    };
    let mut out = Vec::new();
    macro_rules! read {
        ($rows:expr) => {
            for row in $rows {
                out.push(FetchRecord {
                    source: row.try_get(0)?,
                    started_at: row.try_get(1)?,
                    finished_at: row.try_get(2)?,
                    from: day(row.try_get(3)?)?,
                    to: day(row.try_get(4)?)?,
                    outcome: row.try_get(5)?,
                    lines: row.try_get(6)?,
                    message: row.try_get(7)?,
                });
            }
        };
    }
    if let Some(pool) = store.sqlite_pool() {
        read!(
            sqlx::query(&sql)
                .bind(source)
                .bind(n)
                .fetch_all(pool)
                .await?
        );
    } else if let Some(pool) = store.pg_pool() {
        read!(
            sqlx::query(&sql)
                .bind(source)
                .bind(n)
                .fetch_all(pool)
                .await?
        );
    }
    Ok(out)
}
