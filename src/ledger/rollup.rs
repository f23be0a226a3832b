//! The two hourly rollups (`tollgate_usage_hourly`, `tollgate_spend_hourly`), summed by the
//! writer per batch and upserted in the batch's own transaction, from the rows the insert
//! actually added: a retried batch whose rows are already stored adds nothing, and a batch that
//! does not commit adds nothing either.
//!
//! Until migration 11 two triggers kept them, one row at a time on SQLite: 19,100 of the
//! 39,500 instructions SQLite spent on a row (callgrind, bench/results/2026-12-03-profile.md).
//! Summed here, a batch costs one upsert per group (team, provider, model and hour; team, key,
//! requested model and hour), bound in a few multi-row statements.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::row::{UsageRow, tokens};
use super::sqlite_thread::Binder;
use chrono::{DateTime, Utc};

const HOUR_MICROS: i64 = 3_600_000_000;

/// Sums of one `tollgate_usage_hourly` group.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HourlySums {
    /// Rows.
    pub requests: i64,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Cache reads.
    pub cached_read_tokens: i64,
    /// Cache writes.
    pub cache_write_tokens: i64,
    /// Reasoning tokens.
    pub reasoning_tokens: i64,
    /// Cost, nano-USD.
    pub cost_nanos: i64,
}

/// `(hour µs, team, provider, model)`.
type HourlyKey<'a> = (i64, &'a str, &'a str, &'a str);
/// `(hour µs, team, key_name, requested_model)`.
type SpendKey<'a> = (i64, &'a str, &'a str, &'a str);

/// What a batch adds to the rollups. Sorted maps: the upserts touch the groups in key order,
/// so two PostgreSQL replicas writing the same groups take their row locks in the same order
/// (no deadlock), as the statement triggers' `ORDER BY` did.
#[derive(Debug, Default)]
pub struct Rollups<'a> {
    hourly: BTreeMap<HourlyKey<'a>, HourlySums>,
    spend: BTreeMap<SpendKey<'a>, i64>,
}

/// Start of the UTC hour of `micros`, as the triggers computed it (`t - t % 3600000000` on
/// SQLite, `date_trunc('hour', t, 'UTC')` on PostgreSQL; the same for every time after 1970).
pub fn hour_of(micros: i64) -> i64 {
    micros - micros.rem_euclid(HOUR_MICROS)
}

impl<'a> Rollups<'a> {
    /// Adds one row the insert added.
    pub fn add(&mut self, r: &'a UsageRow) {
        let hour = hour_of(r.started_at_micros());
        let h = self
            .hourly
            .entry((hour, &*r.team, &*r.provider, &*r.model))
            .or_default();
        h.requests += 1;
        h.input_tokens = h.input_tokens.saturating_add(tokens(r.usage.input));
        h.output_tokens = h.output_tokens.saturating_add(tokens(r.usage.output));
        h.cached_read_tokens = h
            .cached_read_tokens
            .saturating_add(tokens(r.usage.cached_read));
        h.cache_write_tokens = h
            .cache_write_tokens
            .saturating_add(tokens(r.usage.cache_write));
        h.reasoning_tokens = h.reasoning_tokens.saturating_add(tokens(r.usage.reasoning));
        h.cost_nanos = h.cost_nanos.saturating_add(r.cost_nanos);
        let s = self
            .spend
            .entry((hour, &*r.team, &*r.key_name, &*r.requested_model))
            .or_default();
        *s = s.saturating_add(r.cost_nanos);
    }

    /// Adds every row of `rows`.
    pub fn add_all(&mut self, rows: &'a [UsageRow]) {
        for r in rows {
            self.add(r);
        }
    }

    /// True when no row was added.
    pub fn is_empty(&self) -> bool {
        self.hourly.is_empty()
    }

    /// Executes the SQLite upserts on `conn` (inside the batch's transaction, on the ledger's
    /// SQLite thread), each statement prepared once per connection.
    pub(super) fn upsert_sqlite(&self, conn: &rusqlite::Connection) -> rusqlite::Result<()> {
        let hourly: Vec<_> = self.hourly.iter().collect();
        for chunk in fixed_chunks(&hourly) {
            let mut stmt = conn.prepare_cached(sqlite_upsert_sql(Table::Hourly, chunk.len()))?;
            let mut b = Binder::new(&mut stmt);
            for ((hour, team, provider, model), s) in chunk {
                b.bind(*hour)?;
                b.bind(*team)?;
                b.bind(*provider)?;
                b.bind(*model)?;
                b.bind(s.requests)?;
                b.bind(s.input_tokens)?;
                b.bind(s.output_tokens)?;
                b.bind(s.cached_read_tokens)?;
                b.bind(s.cache_write_tokens)?;
                b.bind(s.reasoning_tokens)?;
                b.bind(s.cost_nanos)?;
            }
            stmt.raw_execute()?;
        }
        let spend: Vec<_> = self.spend.iter().collect();
        for chunk in fixed_chunks(&spend) {
            let mut stmt = conn.prepare_cached(sqlite_upsert_sql(Table::Spend, chunk.len()))?;
            let mut b = Binder::new(&mut stmt);
            for ((hour, team, key, model), cost) in chunk {
                b.bind(*hour)?;
                b.bind(*team)?;
                b.bind(*key)?;
                b.bind(*model)?;
                b.bind(**cost)?;
            }
            stmt.raw_execute()?;
        }
        Ok(())
    }

    /// Executes the PostgreSQL upserts on `conn` (inside the batch's transaction): one
    /// statement per rollup, one array per column.
    pub async fn upsert_postgres(&self, conn: &mut sqlx::PgConnection) -> sqlx::Result<()> {
        if self.is_empty() {
            return Ok(());
        }
        let at = |h: i64| DateTime::<Utc>::from_timestamp_micros(h).unwrap_or_default();
        let hk = || self.hourly.keys();
        let hv = |f: fn(&HourlySums) -> i64| self.hourly.values().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO tollgate_usage_hourly AS h (hour, team, provider, model, requests, \
             input_tokens, output_tokens, cached_read_tokens, cache_write_tokens, \
             reasoning_tokens, cost_nanos) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], \
             $5::int8[], $6::int8[], $7::int8[], $8::int8[], $9::int8[], $10::int8[], $11::int8[]) \
             ON CONFLICT (hour, team, provider, model) DO UPDATE SET \
             requests = h.requests + EXCLUDED.requests, \
             input_tokens = h.input_tokens + EXCLUDED.input_tokens, \
             output_tokens = h.output_tokens + EXCLUDED.output_tokens, \
             cached_read_tokens = h.cached_read_tokens + EXCLUDED.cached_read_tokens, \
             cache_write_tokens = h.cache_write_tokens + EXCLUDED.cache_write_tokens, \
             reasoning_tokens = h.reasoning_tokens + EXCLUDED.reasoning_tokens, \
             cost_nanos = h.cost_nanos + EXCLUDED.cost_nanos",
        )
        .bind(hk().map(|k| at(k.0)).collect::<Vec<_>>())
        .bind(hk().map(|k| k.1).collect::<Vec<_>>())
        .bind(hk().map(|k| k.2).collect::<Vec<_>>())
        .bind(hk().map(|k| k.3).collect::<Vec<_>>())
        .bind(hv(|s| s.requests))
        .bind(hv(|s| s.input_tokens))
        .bind(hv(|s| s.output_tokens))
        .bind(hv(|s| s.cached_read_tokens))
        .bind(hv(|s| s.cache_write_tokens))
        .bind(hv(|s| s.reasoning_tokens))
        .bind(hv(|s| s.cost_nanos))
        .execute(&mut *conn)
        .await?;
        let sk = || self.spend.keys();
        sqlx::query(
            "INSERT INTO tollgate_spend_hourly AS s (hour, team, key_name, requested_model, \
             cost_nanos) \
             SELECT * FROM UNNEST($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
             ON CONFLICT (hour, team, key_name, requested_model) DO UPDATE SET \
             cost_nanos = s.cost_nanos + EXCLUDED.cost_nanos",
        )
        .bind(sk().map(|k| at(k.0)).collect::<Vec<_>>())
        .bind(sk().map(|k| k.1).collect::<Vec<_>>())
        .bind(sk().map(|k| k.2).collect::<Vec<_>>())
        .bind(sk().map(|k| k.3).collect::<Vec<_>>())
        .bind(self.spend.values().copied().collect::<Vec<i64>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }

    /// The hourly sums (tests).
    pub fn hourly(&self) -> impl Iterator<Item = (&HourlyKey<'a>, &HourlySums)> {
        self.hourly.iter()
    }
}

/// Group upserts per SQLite statement, largest first: a connection prepares at most seven per
/// rollup. (A batch has few groups, so their texts stay within SQLite's lookaside.)
const UPSERT_ROWS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// `items` cut into chunks of the sizes of `UPSERT_ROWS`.
fn fixed_chunks<'s, T>(mut items: &'s [T]) -> impl Iterator<Item = &'s [T]> + 's {
    std::iter::from_fn(move || {
        if items.is_empty() {
            return None;
        }
        let n = UPSERT_ROWS
            .iter()
            .copied()
            .find(|&n| n <= items.len())
            .unwrap_or(1);
        let (chunk, rest) = items.split_at(n);
        items = rest;
        Some(chunk)
    })
}

#[derive(Clone, Copy)]
enum Table {
    Hourly,
    Spend,
}

/// The multi-row upsert of `n` groups (one of `UPSERT_ROWS`) into a rollup; texts built once.
fn sqlite_upsert_sql(table: Table, n: usize) -> &'static str {
    static HOURLY: OnceLock<[String; UPSERT_ROWS.len()]> = OnceLock::new();
    static SPEND: OnceLock<[String; UPSERT_ROWS.len()]> = OnceLock::new();
    let build = |head: &str, columns: usize, tail: &str| {
        UPSERT_ROWS.map(|n| {
            let tuple = format!("({})", vec!["?"; columns].join(", "));
            format!("{head} VALUES {} {tail}", vec![tuple; n].join(", "))
        })
    };
    let all = match table {
        Table::Hourly => HOURLY.get_or_init(|| {
            build(
                "INSERT INTO tollgate_usage_hourly (hour, team, provider, model, requests, \
                 input_tokens, output_tokens, cached_read_tokens, cache_write_tokens, \
                 reasoning_tokens, cost_nanos)",
                11,
                "ON CONFLICT (hour, team, provider, model) DO UPDATE SET \
                 requests = requests + excluded.requests, \
                 input_tokens = input_tokens + excluded.input_tokens, \
                 output_tokens = output_tokens + excluded.output_tokens, \
                 cached_read_tokens = cached_read_tokens + excluded.cached_read_tokens, \
                 cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens, \
                 reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens, \
                 cost_nanos = cost_nanos + excluded.cost_nanos",
            )
        }),
        Table::Spend => SPEND.get_or_init(|| {
            build(
                "INSERT INTO tollgate_spend_hourly (hour, team, key_name, requested_model, \
                 cost_nanos)",
                5,
                "ON CONFLICT (hour, team, key_name, requested_model) DO UPDATE SET \
                 cost_nanos = cost_nanos + excluded.cost_nanos",
            )
        }),
    };
    let i = UPSERT_ROWS
        .iter()
        .position(|&m| m == n)
        .unwrap_or(UPSERT_ROWS.len() - 1);
    &all[i]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_sum_per_hour_and_chunks_have_fixed_sizes() {
        let mut a = UsageRow::blank();
        a.team = "t".into();
        a.provider = "p".into();
        a.model = "m".into();
        a.started_at = DateTime::from_timestamp_micros(2 * HOUR_MICROS + 5).unwrap();
        a.usage.input = 3;
        a.cost_nanos = 7;
        let mut b = a.clone();
        b.usage.input = 4;
        b.cost_nanos = 11;
        let mut c = a.clone();
        c.started_at = DateTime::from_timestamp_micros(3 * HOUR_MICROS).unwrap();
        let rows = [a, b, c];
        let mut r = Rollups::default();
        r.add_all(&rows);
        let got: Vec<_> = r
            .hourly()
            .map(|(k, s)| (k.0, s.requests, s.input_tokens, s.cost_nanos))
            .collect();
        assert_eq!(
            got,
            vec![(2 * HOUR_MICROS, 2, 7, 18), (3 * HOUR_MICROS, 1, 3, 7)]
        );
        assert_eq!(r.spend.len(), 2);
        let items: Vec<u32> = (0..77).collect();
        let sizes: Vec<usize> = fixed_chunks(&items).map(<[u32]>::len).collect();
        assert_eq!(sizes, vec![64, 8, 4, 1]);
        assert!(
            sqlite_upsert_sql(Table::Spend, 2)
                .matches("(?, ?, ?, ?, ?)")
                .count()
                == 2
        );
    }
}
