//! `tollgate reprice`: recomputes the stored cost of the rows of a window at the current price
//! table (each row at the price in force when it started, with its service tier and the
//! provider's multiplier), after a price correction. Rows and both rollups change together,
//! chunk by chunk in one transaction each, so reports agree at every commit.

use std::collections::BTreeMap;
use std::fmt::Write;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::LedgerError;
use super::store::Store;
use crate::metering::pricing::apply_multiplier;
use crate::metering::{Billing, PriceTable, ServiceTier, Usage};

/// Rows read and updated per transaction.
const CHUNK: i64 = 2000;

/// What a reprice changed (or would change), per team and model.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepriceSummary {
    /// Rows with tokens in the window.
    pub rows_seen: u64,
    /// Rows whose cost or price id changed.
    pub rows_changed: u64,
    /// `(team, model)` -> (rows changed, old nano-USD, new nano-USD).
    pub groups: BTreeMap<(String, String), (u64, i64, i64)>,
}

impl RepriceSummary {
    /// The difference per team and model, as a table.
    pub fn to_table(&self, dry_run: bool) -> String {
        let mut out = format!(
            "{} rows with tokens in the window, {} {}repriced\n",
            self.rows_seen,
            self.rows_changed,
            if dry_run { "would be " } else { "" }
        );
        if self.groups.is_empty() {
            return out;
        }
        let _ = writeln!(
            out,
            "{:<20} {:<36} {:>8} {:>16} {:>16} {:>16}",
            "team", "model", "rows", "old USD", "new USD", "difference USD"
        );
        let usd = |n: i64| format!("{:.9}", n as f64 / 1e9);
        for ((team, model), (rows, old, new)) in &self.groups {
            let _ = writeln!(
                out,
                "{:<20} {:<36} {:>8} {:>16} {:>16} {:>16}",
                team,
                model,
                rows,
                usd(*old),
                usd(*new),
                usd(new - old)
            );
        }
        out
    }
}

/// One stored row, as much as pricing needs.
struct Stored {
    id: String,
    started_us: i64,
    team: String,
    key_name: String,
    provider: String,
    requested_model: String,
    model: String,
    usage: Usage,
    cost_nanos: i64,
    price_id: Option<String>,
    service_tier: ServiceTier,
}

/// A row's new cost and price id under `prices`.
fn new_cost(prices: &PriceTable, r: &Stored) -> (i64, Option<String>) {
    let at = r.started_us.div_euclid(1_000_000);
    let price = prices
        .lookup_at(&r.model, at)
        .or_else(|| prices.lookup_at(&r.requested_model, at));
    let Some(p) = price else {
        return (0, None);
    };
    let billing = Billing {
        service_tier: r.service_tier,
        ..Billing::default()
    };
    let nanos = apply_multiplier(
        p.cost_nanos_for(&r.usage, &billing),
        prices.multiplier(&r.provider),
    );
    (
        i64::try_from(nanos).unwrap_or(i64::MAX),
        Some(p.id.to_string()),
    )
}

/// Reprices `[from, to)`; with `dry_run` nothing is written.
pub async fn reprice(
    store: &Store,
    prices: &PriceTable,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    dry_run: bool,
) -> Result<RepriceSummary, LedgerError> {
    let mut summary = RepriceSummary::default();
    let mut after: (i64, String) = (from.timestamp_micros() - 1, String::new());
    loop {
        let rows = read_chunk(store, &after, to).await?;
        let Some(last) = rows.last() else {
            break;
        };
        after = (last.started_us, last.id.clone());
        let mut changes = Vec::new();
        for r in &rows {
            summary.rows_seen += 1;
            let (cost, id) = new_cost(prices, r);
            if cost == r.cost_nanos && id == r.price_id {
                continue;
            }
            summary.rows_changed += 1;
            let g = summary
                .groups
                .entry((r.team.clone(), r.model.clone()))
                .or_default();
            g.0 += 1;
            g.1 += r.cost_nanos;
            g.2 += cost;
            changes.push((r, cost, id));
        }
        if !dry_run && !changes.is_empty() {
            write_chunk(store, &changes).await?;
        }
        if (rows.len() as i64) < CHUNK {
            break;
        }
    }
    Ok(summary)
}

const SELECT: &str = "id, started_at, team, key_name, provider, requested_model, model, \
    input_tokens, output_tokens, cached_read_tokens, cache_write_tokens, cache_write_1h_tokens, \
    reasoning_tokens, cost_nanos, price_id, service_tier";

async fn read_chunk(
    store: &Store,
    after: &(i64, String),
    to: DateTime<Utc>,
) -> Result<Vec<Stored>, LedgerError> {
    let tokens = "(input_tokens > 0 OR output_tokens > 0)";
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    macro_rules! stored {
        ($row:expr, $id:expr, $started:expr) => {{
            let r = $row;
            Stored {
                id: $id,
                started_us: $started,
                team: r.try_get("team")?,
                key_name: r.try_get("key_name")?,
                provider: r.try_get("provider")?,
                requested_model: r.try_get("requested_model")?,
                model: r.try_get("model")?,
                usage: Usage {
                    input: n(r.try_get("input_tokens")?),
                    output: n(r.try_get("output_tokens")?),
                    cached_read: n(r.try_get("cached_read_tokens")?),
                    cache_write: n(r.try_get("cache_write_tokens")?),
                    cache_write_1h: n(r.try_get("cache_write_1h_tokens")?),
                    reasoning: n(r.try_get("reasoning_tokens")?),
                },
                cost_nanos: r.try_get("cost_nanos")?,
                price_id: r.try_get("price_id")?,
                service_tier: ServiceTier::parse(
                    r.try_get::<Option<String>, _>("service_tier")?
                        .as_deref()
                        .unwrap_or(""),
                ),
            }
        }};
    }
    let mut out = Vec::new();
    match store {
        Store::Sqlite(s) => {
            let sql = format!(
                "SELECT {SELECT} FROM tollgate_usage WHERE (started_at, id) > (?, ?) \
                 AND started_at < ? AND {tokens} ORDER BY started_at, id LIMIT {CHUNK}"
            );
            let rows = sqlx::query(&sql)
                .bind(after.0)
                .bind(&after.1)
                .bind(to.timestamp_micros())
                .fetch_all(s.pool())
                .await?;
            for r in &rows {
                let id: String = r.try_get("id")?;
                let started: i64 = r.try_get("started_at")?;
                out.push(stored!(r, id, started));
            }
        }
        Store::Postgres(pool) => {
            let sql = format!(
                "SELECT {SELECT} FROM tollgate_usage WHERE (started_at, id) > ($1, $2) \
                 AND started_at < $3 AND {tokens} ORDER BY started_at, id LIMIT {CHUNK}"
            );
            let after_at = DateTime::from_timestamp_micros(after.0).unwrap_or_default();
            let after_id = uuid::Uuid::parse_str(&after.1).unwrap_or(uuid::Uuid::nil());
            let rows = sqlx::query(&sql)
                .bind(after_at)
                .bind(after_id)
                .bind(to)
                .fetch_all(pool)
                .await?;
            for r in &rows {
                let id: uuid::Uuid = r.try_get("id")?;
                let started: DateTime<Utc> = r.try_get("started_at")?;
                out.push(stored!(
                    r,
                    id.hyphenated().to_string(),
                    started.timestamp_micros()
                ));
            }
        }
    }
    Ok(out)
}

const HOUR_US: i64 = 3_600_000_000;

/// Updates the rows and adds the differences to both rollups, in one transaction.
async fn write_chunk(
    store: &Store,
    changes: &[(&Stored, i64, Option<String>)],
) -> Result<(), LedgerError> {
    // Differences per rollup row.
    let mut hourly: BTreeMap<(i64, &str, &str, &str), i64> = BTreeMap::new();
    let mut spend: BTreeMap<(i64, &str, &str, &str), i64> = BTreeMap::new();
    for (r, cost, _) in changes {
        let d = cost - r.cost_nanos;
        let hour = r.started_us.div_euclid(HOUR_US) * HOUR_US;
        *hourly
            .entry((hour, &*r.team, &*r.provider, &*r.model))
            .or_default() += d;
        *spend
            .entry((hour, &*r.team, &*r.key_name, &*r.requested_model))
            .or_default() += d;
    }
    let source = |id: &Option<String>| if id.is_some() { "priced" } else { "unpriced" };
    match store {
        Store::Sqlite(s) => {
            let mut tx = s.pool().begin().await?;
            for (r, cost, id) in changes {
                sqlx::query(
                    "UPDATE tollgate_usage SET cost_nanos = ?, price_id = ?, cost_source = ? WHERE id = ?",
                )
                .bind(cost)
                .bind(id.as_deref())
                .bind(source(id))
                .bind(&r.id)
                .execute(&mut *tx)
                .await?;
            }
            for ((hour, team, provider, model), d) in &hourly {
                sqlx::query(
                    "UPDATE tollgate_usage_hourly SET cost_nanos = cost_nanos + ? \
                     WHERE hour = ? AND team = ? AND provider = ? AND model = ?",
                )
                .bind(d)
                .bind(hour)
                .bind(team)
                .bind(provider)
                .bind(model)
                .execute(&mut *tx)
                .await?;
            }
            for ((hour, team, key, model), d) in &spend {
                sqlx::query(
                    "UPDATE tollgate_spend_hourly SET cost_nanos = cost_nanos + ? \
                     WHERE hour = ? AND team = ? AND key_name = ? AND requested_model = ?",
                )
                .bind(d)
                .bind(hour)
                .bind(team)
                .bind(key)
                .bind(model)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
        Store::Postgres(pool) => {
            let mut tx = pool.begin().await?;
            let at = |us: i64| DateTime::from_timestamp_micros(us).unwrap_or_default();
            for (r, cost, id) in changes {
                sqlx::query(
                    "UPDATE tollgate_usage SET cost_nanos = $1, price_id = $2, cost_source = $3 WHERE id = $4",
                )
                .bind(cost)
                .bind(id.as_deref())
                .bind(source(id))
                .bind(uuid::Uuid::parse_str(&r.id).unwrap_or(uuid::Uuid::nil()))
                .execute(&mut *tx)
                .await?;
            }
            for ((hour, team, provider, model), d) in &hourly {
                sqlx::query(
                    "UPDATE tollgate_usage_hourly SET cost_nanos = cost_nanos + $1 \
                     WHERE hour = $2 AND team = $3 AND provider = $4 AND model = $5",
                )
                .bind(d)
                .bind(at(*hour))
                .bind(team)
                .bind(provider)
                .bind(model)
                .execute(&mut *tx)
                .await?;
            }
            for ((hour, team, key, model), d) in &spend {
                sqlx::query(
                    "UPDATE tollgate_spend_hourly SET cost_nanos = cost_nanos + $1 \
                     WHERE hour = $2 AND team = $3 AND key_name = $4 AND requested_model = $5",
                )
                .bind(d)
                .bind(at(*hour))
                .bind(team)
                .bind(key)
                .bind(model)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        }
    }
    Ok(())
}
