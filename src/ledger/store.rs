//! The two backends behind one type: SQLite (embedded, WAL) and PostgreSQL (several replicas
//! writing to one store). Queries are built at run time; nothing needs a database to compile.

use std::str::FromStr;
use std::sync::OnceLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{Executor, Row};

use super::LedgerError;
use super::config::redact;
use super::report::{GroupKey, Report, ReportQuery, ReportRow, Totals};
use super::row::{UsageRow, micros, tokens};

/// Schema migrations, in order: (version, SQL).
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_usage.sql")),
    (2, include_str!("migrations/sqlite/0002_hourly_rollup.sql")),
    (3, include_str!("migrations/sqlite/0003_spend_rollup.sql")),
    (4, include_str!("migrations/sqlite/0004_usage_source.sql")),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_usage.sql")),
    (
        2,
        include_str!("migrations/postgres/0002_hourly_rollup.sql"),
    ),
    (3, include_str!("migrations/postgres/0003_spend_rollup.sql")),
    (4, include_str!("migrations/postgres/0004_usage_source.sql")),
];

/// Columns of `tollgate_usage`, in insert order.
const COLUMNS: &str = "id, started_at, duration_us, ttft_us, key_name, team, customer, provider, \
    requested_model, model, endpoint, stream, status_code, error_type, input_tokens, \
    output_tokens, cached_read_tokens, cache_write_tokens, cache_write_1h_tokens, \
    reasoning_tokens, cost_nanos, estimated, upstream_request_id, usage_source";

/// Which rows a spend query sums.
#[derive(Debug, Clone, Copy)]
pub enum SpendFilter<'a> {
    /// Every key of a team.
    Team(&'a str),
    /// One virtual key, by name.
    Key(&'a str),
    /// A team's requests for one model, as the clients named it.
    TeamModel(&'a str, &'a str),
}

/// A connection pool to the ledger database.
#[derive(Clone)]
pub enum Store {
    /// Embedded SQLite.
    Sqlite(SqlitePool),
    /// PostgreSQL.
    Postgres(PgPool),
}

impl Store {
    /// A pool for `url` that connects on first use; `create` makes a missing SQLite file.
    /// `timeout` bounds acquiring a connection and SQLite's wait on a locked database.
    pub fn connect_lazy(url: &str, create: bool, timeout: Duration) -> Result<Store, LedgerError> {
        let bad = |e: sqlx::Error| LedgerError::Url {
            url: redact(url),
            reason: e.to_string(),
        };
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(bad)?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .connect_lazy_with(opts);
            Ok(Store::Sqlite(pool))
        } else {
            let opts = PgConnectOptions::from_str(url).map_err(bad)?;
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .connect_lazy_with(opts);
            Ok(Store::Postgres(pool))
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Applies the migrations this database has not seen. On PostgreSQL an advisory lock makes
    /// replicas starting together apply them once.
    pub async fn migrate(&self) -> Result<(), LedgerError> {
        const TABLE: &str = "CREATE TABLE IF NOT EXISTS tollgate_migrations \
            (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL)";
        let now = Utc::now().to_rfc3339();
        match self {
            Store::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query(TABLE).execute(&mut *tx).await?;
                let current: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM tollgate_migrations")
                        .fetch_one(&mut *tx)
                        .await?;
                for &(v, sql) in SQLITE_MIGRATIONS {
                    if v <= current {
                        continue;
                    }
                    // Several statements: run as one (unprepared, no arguments).
                    (&mut *tx).execute(sql).await?;
                    sqlx::query(
                        "INSERT INTO tollgate_migrations (version, applied_at) VALUES (?, ?)",
                    )
                    .bind(v)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(version = v, "ledger: applied SQLite migration");
                }
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock(7470657721)")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(TABLE).execute(&mut *tx).await?;
                let current: i64 =
                    sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM tollgate_migrations")
                        .fetch_one(&mut *tx)
                        .await?;
                for &(v, sql) in POSTGRES_MIGRATIONS {
                    if v <= current {
                        continue;
                    }
                    // Several statements: run as one (unprepared, no arguments).
                    (&mut *tx).execute(sql).await?;
                    sqlx::query(
                        "INSERT INTO tollgate_migrations (version, applied_at) VALUES ($1, $2)",
                    )
                    .bind(v)
                    .bind(&now)
                    .execute(&mut *tx)
                    .await?;
                    tracing::info!(version = v, "ledger: applied PostgreSQL migration");
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Inserts `rows` in one transaction: multi-row `VALUES` statements of fixed sizes on
    /// SQLite, `UNNEST` of one array per column on PostgreSQL. Rows already present (a
    /// retried batch) are skipped.
    pub async fn insert(&self, rows: &[UsageRow]) -> Result<(), LedgerError> {
        if rows.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(pool) => {
                // Fixed statement sizes, each prepared once per connection: one statement per
                // batch had a new text for every row count, and the full batch's (23,000
                // parameters) alone held 3.4 MB prepared, while a partial batch, the usual one
                // below a few thousand requests/s, was parsed anew at every flush.
                let mut tx = pool.begin().await?;
                let mut rest = rows;
                while !rest.is_empty() {
                    let n = SQLITE_STATEMENT_ROWS
                        .iter()
                        .copied()
                        .find(|&n| n <= rest.len())
                        .unwrap_or(1);
                    let (chunk, tail) = rest.split_at(n.min(rest.len()));
                    sqlite_insert(chunk).execute(&mut *tx).await?;
                    rest = tail;
                }
                tx.commit().await?;
            }
            Store::Postgres(pool) => {
                let sql = format!(
                    "INSERT INTO tollgate_usage ({COLUMNS}) SELECT * FROM UNNEST(\
                     $1::uuid[], $2::timestamptz[], $3::int8[], $4::int8[], $5::text[], \
                     $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
                     $12::bool[], $13::int4[], $14::text[], $15::int8[], $16::int8[], \
                     $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::int8[], \
                     $22::bool[], $23::text[], $24::text[]) ON CONFLICT (id) DO NOTHING"
                );
                let col = |f: &dyn Fn(&UsageRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
                sqlx::query(&sql)
                    .bind(rows.iter().map(|r| r.id).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.started_at).collect::<Vec<_>>())
                    .bind(col(&|r| micros(r.duration)))
                    .bind(
                        rows.iter()
                            .map(|r| r.time_to_first_token.map(micros))
                            .collect::<Vec<_>>(),
                    )
                    .bind(rows.iter().map(|r| &*r.key_name).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| &*r.team).collect::<Vec<_>>())
                    .bind(
                        rows.iter()
                            .map(|r| r.customer.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(rows.iter().map(|r| &*r.provider).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| &*r.requested_model).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| &*r.model).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.endpoint).collect::<Vec<_>>())
                    .bind(rows.iter().map(|r| r.stream).collect::<Vec<_>>())
                    .bind(
                        rows.iter()
                            .map(|r| i32::from(r.status_code))
                            .collect::<Vec<_>>(),
                    )
                    .bind(rows.iter().map(|r| r.error_type).collect::<Vec<_>>())
                    .bind(col(&|r| tokens(r.usage.input)))
                    .bind(col(&|r| tokens(r.usage.output)))
                    .bind(col(&|r| tokens(r.usage.cached_read)))
                    .bind(col(&|r| tokens(r.usage.cache_write)))
                    .bind(col(&|r| tokens(r.usage.cache_write_1h)))
                    .bind(col(&|r| tokens(r.usage.reasoning)))
                    .bind(col(&|r| r.cost_nanos))
                    .bind(rows.iter().map(|r| r.estimated()).collect::<Vec<_>>())
                    .bind(
                        rows.iter()
                            .map(|r| r.upstream_request_id.as_deref())
                            .collect::<Vec<_>>(),
                    )
                    .bind(
                        rows.iter()
                            .map(|r| r.usage_source.as_str())
                            .collect::<Vec<_>>(),
                    )
                    .execute(pool)
                    .await?;
            }
        }
        Ok(())
    }

    /// Sums per group over `[from, to)`, sorted by the group values: from the hourly rollup
    /// when it holds the answer (a window on whole UTC hours, grouped by team, provider, model
    /// or time buckets), else from the rows.
    pub async fn report(&self, q: &ReportQuery) -> Result<Report, LedgerError> {
        self.report_from(q, rollup_answers(q)).await
    }

    /// The same report, always read from the rows themselves (for checks and comparisons).
    pub async fn report_rows(&self, q: &ReportQuery) -> Result<Report, LedgerError> {
        self.report_from(q, false).await
    }

    async fn report_from(&self, q: &ReportQuery, hourly: bool) -> Result<Report, LedgerError> {
        let pg = matches!(self, Store::Postgres(_));
        let (table, time) = if hourly {
            ("tollgate_usage_hourly", "hour")
        } else {
            ("tollgate_usage", "started_at")
        };
        let mut select: Vec<String> = q
            .group_by
            .iter()
            .enumerate()
            .map(|(i, k)| format!("{} AS g{i}", k.sql(pg).replace("started_at", time)))
            .collect();
        select.push(if hourly {
            "CAST(COALESCE(SUM(requests), 0) AS BIGINT) AS requests".into()
        } else {
            "COUNT(*) AS requests".into()
        });
        for c in [
            "input_tokens",
            "output_tokens",
            "cached_read_tokens",
            "cache_write_tokens",
            "reasoning_tokens",
            "cost_nanos",
        ] {
            select.push(format!("CAST(COALESCE(SUM({c}), 0) AS BIGINT) AS {c}"));
        }
        let (p1, p2) = if pg { ("$1", "$2") } else { ("?", "?") };
        let mut sql = format!(
            "SELECT {} FROM {table} WHERE {time} >= {p1} AND {time} < {p2}",
            select.join(", ")
        );
        if !q.group_by.is_empty() {
            let groups: Vec<String> = (0..q.group_by.len()).map(|i| format!("g{i}")).collect();
            sql.push_str(&format!(
                " GROUP BY {g} ORDER BY {g}",
                g = groups.join(", ")
            ));
        }
        let n = q.group_by.len();
        let read = |row: &dyn RowLike| -> Result<ReportRow, sqlx::Error> {
            let groups = (0..n).map(|i| row.text(i)).collect::<Result<Vec<_>, _>>()?;
            Ok(ReportRow {
                groups,
                totals: Totals {
                    requests: row.int(n)?,
                    input_tokens: row.int(n + 1)?,
                    output_tokens: row.int(n + 2)?,
                    cached_read_tokens: row.int(n + 3)?,
                    cache_write_tokens: row.int(n + 4)?,
                    reasoning_tokens: row.int(n + 5)?,
                    cost_nanos: row.int(n + 6)?,
                },
            })
        };
        let mut rows = match self {
            Store::Sqlite(pool) => sqlx::query(&sql)
                .bind(q.from.timestamp_micros())
                .bind(q.to.timestamp_micros())
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| read(r))
                .collect::<Result<Vec<_>, _>>()?,
            Store::Postgres(pool) => sqlx::query(&sql)
                .bind(q.from)
                .bind(q.to)
                .fetch_all(pool)
                .await?
                .iter()
                .map(|r| read(r))
                .collect::<Result<Vec<_>, _>>()?,
        };
        // Totals over an empty window: no line rather than a line of zeros.
        if n == 0 && rows.first().is_some_and(|r| r.totals.requests == 0) {
            rows.clear();
        }
        Ok(Report {
            query: q.clone(),
            rows,
        })
    }

    /// Cost in nano-USD of a team's or a key's requests since `since`: whole hours from the
    /// spend rollup, and the rows of the hour `since` falls in (budget periods start on a
    /// whole hour except in offsets such as +05:30) from the rows themselves.
    pub async fn spend_nanos(
        &self,
        filter: SpendFilter<'_>,
        since: DateTime<Utc>,
    ) -> Result<i64, LedgerError> {
        const HOUR_MICROS: i64 = 3_600_000_000;
        // (column, value, and a second condition on requested_model for team-model budgets)
        let (column, value, model) = match filter {
            SpendFilter::Team(t) => ("team", t, None),
            SpendFilter::Key(k) => ("key_name", k, None),
            SpendFilter::TeamModel(t, m) => ("team", t, Some(m)),
        };
        let since_us = since.timestamp_micros();
        let hour_us = since_us
            .div_euclid(HOUR_MICROS)
            .saturating_add(i64::from(since_us.rem_euclid(HOUR_MICROS) != 0))
            .saturating_mul(HOUR_MICROS);
        let sum = "CAST(COALESCE(SUM(cost_nanos), 0) AS BIGINT)";
        let n: i64 = match self {
            Store::Sqlite(pool) => {
                // ?3 is bound either way (SQLite counts parameters).
                let extra = if model.is_some() {
                    " AND requested_model = ?3"
                } else {
                    " AND ?3 = ''"
                };
                let sql = format!(
                    "SELECT (SELECT {sum} FROM tollgate_spend_hourly \
                       WHERE {column} = ?1 AND hour >= ?4{extra}) \
                     + (SELECT {sum} FROM tollgate_usage \
                       WHERE started_at >= ?2 AND started_at < ?4 AND {column} = ?1{extra})"
                );
                sqlx::query_scalar(&sql)
                    .bind(value)
                    .bind(since_us)
                    .bind(model.unwrap_or(""))
                    .bind(hour_us)
                    .fetch_one(pool)
                    .await?
            }
            Store::Postgres(pool) => {
                let extra = if model.is_some() {
                    " AND requested_model = $3"
                } else {
                    " AND $3 = ''"
                };
                let sql = format!(
                    "SELECT CAST((SELECT {sum} FROM tollgate_spend_hourly \
                       WHERE {column} = $1 AND hour >= $4{extra}) \
                     + (SELECT {sum} FROM tollgate_usage \
                       WHERE started_at >= $2 AND started_at < $4 AND {column} = $1{extra}) AS BIGINT)"
                );
                let hour = DateTime::from_timestamp_micros(hour_us).unwrap_or(since);
                sqlx::query_scalar(&sql)
                    .bind(value)
                    .bind(since)
                    .bind(model.unwrap_or(""))
                    .bind(hour)
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(n)
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}

/// Can the hourly rollup answer `q` exactly?
fn rollup_answers(q: &ReportQuery) -> bool {
    const HOUR_MICROS: i64 = 3_600_000_000;
    let whole_hour = |t: DateTime<Utc>| {
        t.timestamp_micros().rem_euclid(HOUR_MICROS) == 0 && t.timestamp_subsec_nanos() % 1000 == 0
    };
    whole_hour(q.from)
        && whole_hour(q.to)
        && q.group_by.iter().all(|k| {
            matches!(
                k,
                GroupKey::Team
                    | GroupKey::Provider
                    | GroupKey::Model
                    | GroupKey::Month
                    | GroupKey::Day
                    | GroupKey::Hour
            )
        })
}

/// Reading a result row by index, whichever the backend.
trait RowLike {
    fn text(&self, i: usize) -> Result<String, sqlx::Error>;
    fn int(&self, i: usize) -> Result<i64, sqlx::Error>;
}

impl RowLike for sqlx::sqlite::SqliteRow {
    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        Ok(self.try_get::<Option<String>, _>(i)?.unwrap_or_default())
    }
    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.try_get(i)
    }
}

impl RowLike for sqlx::postgres::PgRow {
    fn text(&self, i: usize) -> Result<String, sqlx::Error> {
        Ok(self.try_get::<Option<String>, _>(i)?.unwrap_or_default())
    }
    fn int(&self, i: usize) -> Result<i64, sqlx::Error> {
        self.try_get(i)
    }
}

/// Rows per SQLite insert statement, largest first: a batch is cut into these, so a
/// connection prepares at most these seven statements.
const SQLITE_STATEMENT_ROWS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

/// The `INSERT OR IGNORE` into SQLite's `tollgate_usage` of `n` rows (one of
/// `SQLITE_STATEMENT_ROWS`), one `VALUES` tuple a row. Built once: building the text at every
/// flush cost the writer ~6,000 instructions a row (bench profile, 2026-11-30).
fn sqlite_insert_sql(n: usize) -> &'static str {
    static SQL: OnceLock<[String; SQLITE_STATEMENT_ROWS.len()]> = OnceLock::new();
    let all = SQL.get_or_init(|| {
        SQLITE_STATEMENT_ROWS.map(|n| {
            let tuple = format!("({})", vec!["?"; COLUMNS.split(',').count()].join(", "));
            format!(
                "INSERT OR IGNORE INTO tollgate_usage ({COLUMNS}) VALUES {}",
                vec![tuple; n].join(", ")
            )
        })
    });
    let i = SQLITE_STATEMENT_ROWS
        .iter()
        .position(|&m| m == n)
        .unwrap_or(SQLITE_STATEMENT_ROWS.len() - 1);
    &all[i]
}

/// The insert of `rows` (as many as one of `SQLITE_STATEMENT_ROWS`), with their values bound.
fn sqlite_insert(rows: &[UsageRow]) -> Query<'_, sqlx::Sqlite, SqliteArguments<'_>> {
    let mut q = sqlx::query(sqlite_insert_sql(rows.len()));
    for r in rows {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        q = q
            .bind(r.id.hyphenated().encode_lower(&mut id).to_owned())
            .bind(r.started_at_micros())
            .bind(micros(r.duration))
            .bind(r.time_to_first_token.map(micros))
            .bind(&*r.key_name)
            .bind(&*r.team)
            .bind(r.customer.as_deref())
            .bind(&*r.provider)
            .bind(&*r.requested_model)
            .bind(&*r.model)
            .bind(r.endpoint)
            .bind(r.stream)
            .bind(i32::from(r.status_code))
            .bind(r.error_type)
            .bind(tokens(r.usage.input))
            .bind(tokens(r.usage.output))
            .bind(tokens(r.usage.cached_read))
            .bind(tokens(r.usage.cache_write))
            .bind(tokens(r.usage.cache_write_1h))
            .bind(tokens(r.usage.reasoning))
            .bind(r.cost_nanos)
            .bind(r.estimated())
            .bind(r.upstream_request_id.as_deref())
            .bind(r.usage_source.as_str());
    }
    q
}
