//! The two backends behind one type: SQLite (embedded, WAL) and PostgreSQL (several replicas
//! writing to one store). Queries are built at run time; nothing needs a database to compile.

use std::collections::HashSet;
use std::ops::DerefMut;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Executor, Row};

use super::LedgerError;
use super::config::redact;
use super::report::{GroupKey, Report, ReportQuery, ReportRow, Totals};
use super::rollup::Rollups;
use super::row::{UsageRow, micros, tokens};
use super::sqlite_thread::{SqliteThread, Target};

/// Schema migrations, in order: (version, SQL).
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_usage.sql")),
    (2, include_str!("migrations/sqlite/0002_hourly_rollup.sql")),
    (3, include_str!("migrations/sqlite/0003_spend_rollup.sql")),
    (
        4,
        include_str!("migrations/sqlite/0004_unauthenticated.sql"),
    ),
    (5, include_str!("migrations/sqlite/0005_price_columns.sql")),
    (6, include_str!("migrations/sqlite/0006_usage_source.sql")),
    (7, include_str!("migrations/sqlite/0007_billing.sql")),
    (
        8,
        include_str!("migrations/sqlite/0008_upstream_endpoint.sql"),
    ),
    (9, include_str!("migrations/sqlite/0009_cache.sql")),
    (10, include_str!("migrations/sqlite/0010_mcp.sql")),
    (
        11,
        include_str!("migrations/sqlite/0011_rollups_by_the_writer.sql"),
    ),
];
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/postgres/0001_usage.sql")),
    (
        2,
        include_str!("migrations/postgres/0002_hourly_rollup.sql"),
    ),
    (3, include_str!("migrations/postgres/0003_spend_rollup.sql")),
    (
        4,
        include_str!("migrations/postgres/0004_unauthenticated.sql"),
    ),
    (
        5,
        include_str!("migrations/postgres/0005_price_columns.sql"),
    ),
    (6, include_str!("migrations/postgres/0006_usage_source.sql")),
    (7, include_str!("migrations/postgres/0007_billing.sql")),
    (
        8,
        include_str!("migrations/postgres/0008_upstream_endpoint.sql"),
    ),
    (9, include_str!("migrations/postgres/0009_cache.sql")),
    (10, include_str!("migrations/postgres/0010_mcp.sql")),
    (
        11,
        include_str!("migrations/postgres/0011_rollups_by_the_writer.sql"),
    ),
];

/// Columns of `tollgate_usage`, in insert order.
pub(super) const COLUMNS: &str = "id, started_at, duration_us, ttft_us, key_name, team, customer, provider, \
    requested_model, model, endpoint, stream, status_code, error_type, input_tokens, \
    output_tokens, cached_read_tokens, cache_write_tokens, cache_write_1h_tokens, \
    reasoning_tokens, cost_nanos, estimated, upstream_request_id, price_id, cost_source, \
    service_tier, usage_source, upstream_endpoint, cache_status, saved_cost_nanos, mcp_outcome, \
    response_bytes";

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
    Sqlite(Box<SqliteStore>),
    /// PostgreSQL.
    Postgres(PgPool),
}

/// The SQLite pool, and what the writer's integrity checks need beside it.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The writes and the writer's checks (sqlite_thread.rs).
    thread: SqliteThread,
    /// The database file; `None` for an in-memory database.
    path: Option<PathBuf>,
    reset: Arc<ResetMark>,
}

/// Pooled connections opened before the last [`Store::reset_connections`] are closed when
/// next acquired instead of being used (a replaced file, rows found missing); so are the
/// SQLite thread's, by generation.
pub(super) struct ResetMark {
    base: std::time::Instant,
    /// Microseconds after `base` of the last reset; 0: never.
    at_us: AtomicU64,
    /// Resets so far.
    generation: AtomicU64,
}

impl SqliteStore {
    /// The pool.
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl ResetMark {
    /// Resets so far: a connection opened in an older generation is closed, not used.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn opened_before_reset(&self, age: Duration) -> bool {
        let at = self.at_us.load(Ordering::Acquire);
        if at == 0 {
            return false;
        }
        let reset_at = self.base + Duration::from_micros(at);
        std::time::Instant::now()
            .checked_sub(age)
            .is_none_or(|opened| opened < reset_at)
    }
}

/// Which file a path names (device and inode): a database deleted or replaced under the
/// gateway keeps its open connections writing into the old, unlinked file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The identity of the file at `path` (one `stat`).
    pub(super) fn of(path: &std::path::Path) -> std::io::Result<FileId> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path)?;
        Ok(FileId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }
}

/// A pooled connection closed, not returned to the pool, unless the operation using it
/// finished: after an error (or a timeout dropping the operation midway) SQLite may have rolled
/// the transaction back by itself (SQLITE_FULL, SQLITE_IOERR) while sqlx still counts it open,
/// and every later `commit` on that connection only released a savepoint of a transaction
/// that was never committed: rows counted as written, then lost (4,300 requests, 1,000 rows
/// after a restart).
struct CloseUnlessDone<C: DerefMut + Send>(Option<C>, fn(&mut C));

impl<C: DerefMut + Send> CloseUnlessDone<C> {
    fn done(mut self) {
        self.0.take();
    }
}

impl<C: DerefMut + Send> Drop for CloseUnlessDone<C> {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            (self.1)(c);
        }
    }
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
            // Statement logging off: sqlx's slow-statement warning quotes the whole
            // 64-row insert (~9 KB a line) at every stall.
            let opts = SqliteConnectOptions::from_str(url)
                .map_err(bad)?
                .create_if_missing(create)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(timeout)
                .disable_statement_logging();
            let memory = url.contains(":memory:") || url.contains("mode=memory");
            let path = (!memory).then(|| opts.get_filename().to_path_buf());
            let reset = Arc::new(ResetMark {
                base: std::time::Instant::now(),
                at_us: AtomicU64::new(0),
                generation: AtomicU64::new(0),
            });
            let thread = SqliteThread::start(Target {
                filename: opts.get_filename().to_path_buf(),
                memory,
                busy_timeout: timeout,
                reset: reset.clone(),
            })
            .map_err(LedgerError::Thread)?;
            let mark = reset.clone();
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .before_acquire(move |_, meta| {
                    let keep = !mark.opened_before_reset(meta.age);
                    Box::pin(async move { Ok(keep) })
                })
                .connect_lazy_with(opts.clone());
            Ok(Store::Sqlite(Box::new(SqliteStore {
                pool,
                thread,
                path,
                reset,
            })))
        } else {
            let opts = PgConnectOptions::from_str(url)
                .map_err(bad)?
                .disable_statement_logging();
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(timeout)
                .connect_lazy_with(opts);
            Ok(Store::Postgres(pool))
        }
    }

    /// The SQLite pool, for the billing tables kept in the same database.
    pub(crate) fn sqlite_pool(&self) -> Option<&SqlitePool> {
        match self {
            Store::Sqlite(s) => Some(&s.pool),
            Store::Postgres(_) => None,
        }
    }

    /// The PostgreSQL pool, for the billing tables kept in the same database.
    pub(crate) fn pg_pool(&self) -> Option<&PgPool> {
        match self {
            Store::Postgres(p) => Some(p),
            Store::Sqlite(_) => None,
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
            Store::Sqlite(s) => {
                let mut tx = s.pool.begin().await?;
                sqlx::query(TABLE).execute(&mut *tx).await?;
                let applied: Vec<i64> =
                    sqlx::query_scalar("SELECT version FROM tollgate_migrations")
                        .fetch_all(&mut *tx)
                        .await?;
                for &(v, sql) in SQLITE_MIGRATIONS {
                    // By set, not by the highest: a version numbered below one already
                    // applied (10, from a branch merged after 11) still runs.
                    if applied.contains(&v) {
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
                let applied: Vec<i64> =
                    sqlx::query_scalar("SELECT version FROM tollgate_migrations")
                        .fetch_all(&mut *tx)
                        .await?;
                for &(v, sql) in POSTGRES_MIGRATIONS {
                    // By set, not by the highest: a version numbered below one already
                    // applied (10, from a branch merged after 11) still runs.
                    if applied.contains(&v) {
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

    /// Inserts `rows` in one transaction: on SQLite's thread a prepared single-row insert per
    /// row, on PostgreSQL `UNNEST` of one array per column. Rows already present (a
    /// retried batch) are skipped; returns how many were new. The rollups get the sums of the
    /// new rows only, in the same transaction ([`Rollups`]), so a row counts in them exactly
    /// once however often its batch is retried. A connection that saw an error is closed,
    /// never reused.
    pub async fn insert(&self, rows: &[UsageRow]) -> Result<u64, LedgerError> {
        match self {
            _ if rows.is_empty() => Ok(0),
            Store::Sqlite(s) => s.thread.insert(Arc::new(rows.to_vec())).await,
            Store::Postgres(pool) => insert_postgres(pool, rows).await,
        }
    }

    /// [`Store::insert`] of rows the SQLite thread may hold without a copy (the writer's
    /// batches); the caller takes them back from the `Arc` once answered.
    pub(super) async fn insert_shared(&self, rows: Arc<Vec<UsageRow>>) -> Result<u64, LedgerError> {
        match self {
            _ if rows.is_empty() => Ok(0),
            Store::Sqlite(s) => s.thread.insert(rows).await,
            Store::Postgres(pool) => insert_postgres(pool, &rows).await,
        }
    }

    /// Adds per-minute counts of requests refused before a key was known, one transaction:
    /// `(error_type, endpoint, requests)` for the minute starting at `minute`.
    pub async fn add_unauthenticated(
        &self,
        minute: DateTime<Utc>,
        counts: &[(&str, &str, u64)],
    ) -> Result<(), LedgerError> {
        let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        match self {
            Store::Sqlite(s) => {
                let conn = s.pool.acquire().await?;
                let mut guard = CloseUnlessDone(Some(conn), |c| c.close_on_drop());
                let Some(conn) = guard.0.as_mut() else {
                    return Ok(());
                };
                let mut tx = conn.begin().await?;
                for &(error_type, endpoint, requests) in counts {
                    sqlx::query(
                        "INSERT INTO tollgate_unauthenticated (minute, error_type, endpoint, requests) \
                         VALUES (?, ?, ?, ?) ON CONFLICT (minute, error_type, endpoint) \
                         DO UPDATE SET requests = requests + excluded.requests",
                    )
                    .bind(minute.timestamp_micros())
                    .bind(error_type)
                    .bind(endpoint)
                    .bind(n(requests))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                guard.done();
            }
            Store::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                for &(error_type, endpoint, requests) in counts {
                    sqlx::query(
                        "INSERT INTO tollgate_unauthenticated AS u (minute, error_type, endpoint, requests) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (minute, error_type, endpoint) \
                         DO UPDATE SET requests = u.requests + EXCLUDED.requests",
                    )
                    .bind(minute)
                    .bind(error_type)
                    .bind(endpoint)
                    .bind(n(requests))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
            }
        }
        Ok(())
    }

    /// Requests refused before a key was known in `[from, to)` (whole minutes), by reason.
    pub async fn unauthenticated(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(String, i64)>, LedgerError> {
        let rows: Vec<(String, i64)> = match self {
            Store::Sqlite(s) => sqlx::query_as(
                "SELECT error_type, CAST(SUM(requests) AS BIGINT) FROM tollgate_unauthenticated \
                     WHERE minute >= ? AND minute < ? GROUP BY error_type ORDER BY error_type",
            )
            .bind(from.timestamp_micros())
            .bind(to.timestamp_micros())
            .fetch_all(&s.pool)
            .await?,
            Store::Postgres(pool) => sqlx::query_as(
                "SELECT error_type, CAST(SUM(requests) AS BIGINT) FROM tollgate_unauthenticated \
                     WHERE minute >= $1 AND minute < $2 GROUP BY error_type ORDER BY error_type",
            )
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await?,
        };
        Ok(rows)
    }

    /// Of `ids`, those whose rows another connection than the writer's finds committed: on
    /// SQLite the SQLite thread's second connection (the writing one inside a broken
    /// transaction would see its own uncommitted rows; both are reopened after every reset,
    /// and the file's identity is checked before, [`Store::file_id`]), on PostgreSQL the pool
    /// (a batch is one transaction, committed or not).
    pub async fn committed_ids(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<HashSet<uuid::Uuid>, LedgerError> {
        let mut found = HashSet::with_capacity(ids.len());
        // SQLite's default limit is 32,766 parameters; 500 keeps each query small.
        for chunk in ids.chunks(500) {
            match self {
                Store::Sqlite(s) => found.extend(s.thread.committed(chunk.to_vec()).await?),
                Store::Postgres(pool) => {
                    let present: Vec<uuid::Uuid> =
                        sqlx::query_scalar("SELECT id FROM tollgate_usage WHERE id = ANY($1)")
                            .bind(chunk)
                            .fetch_all(pool)
                            .await?;
                    found.extend(present);
                }
            }
        }
        Ok(found)
    }

    /// The SQLite file's identity now; `Ok(None)` for PostgreSQL and in-memory databases.
    /// A missing file is an error.
    pub async fn file_id(&self) -> std::io::Result<Option<FileId>> {
        match self {
            // On the SQLite thread: a `stat` that never blocks the runtime.
            Store::Sqlite(s) => s.thread.file_id().await,
            Store::Postgres(_) => Ok(None),
        }
    }

    /// The SQLite file, when there is one.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            Store::Sqlite(s) => s.path.as_deref(),
            Store::Postgres(_) => None,
        }
    }

    /// Makes the pool close every connection it holds now instead of using it again, so that
    /// the next ones open the file the path names now. (PostgreSQL: nothing to do.)
    pub fn reset_connections(&self) {
        if let Store::Sqlite(s) = self {
            let us = u64::try_from(s.reset.base.elapsed().as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            s.reset.at_us.store(us, Ordering::Release);
            s.reset.generation.fetch_add(1, Ordering::AcqRel);
        }
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
            Store::Sqlite(s) => sqlx::query(&sql)
                .bind(q.from.timestamp_micros())
                .bind(q.to.timestamp_micros())
                .fetch_all(&s.pool)
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
            Store::Sqlite(s) => {
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
                    .fetch_one(&s.pool)
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
            Store::Sqlite(s) => {
                s.pool.close().await;
                s.thread.close().await;
            }
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

/// The PostgreSQL insert of `rows` (not empty) and their rollup sums, one transaction; how
/// many rows were new. A connection that saw an error is closed, never reused.
async fn insert_postgres(pool: &PgPool, rows: &[UsageRow]) -> Result<u64, LedgerError> {
    let conn = pool.acquire().await?;
    let mut guard = CloseUnlessDone(Some(conn), |c| c.close_on_drop());
    let Some(conn) = guard.0.as_mut() else {
        return Ok(0);
    };
    let sql = format!(
        "INSERT INTO tollgate_usage ({COLUMNS}) SELECT * FROM UNNEST(\
             $1::uuid[], $2::timestamptz[], $3::int8[], $4::int8[], $5::text[], \
             $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], \
             $12::bool[], $13::int4[], $14::text[], $15::int8[], $16::int8[], \
             $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::int8[], \
             $22::bool[], $23::text[], $24::text[], $25::text[], $26::text[], $27::text[], \
             $28::text[], $29::text[], $30::int8[], $31::text[], $32::int8[]) \
             ON CONFLICT (id) DO NOTHING RETURNING id"
    );
    let mut tx = conn.begin().await?;
    let col = |f: &dyn Fn(&UsageRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
    let new = sqlx::query(&sql)
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
                .map(|r| r.price_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(UsageRow::cost_source).collect::<Vec<_>>())
        .bind(
            rows.iter()
                .map(|r| r.service_tier.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            rows.iter()
                .map(|r| r.usage_source.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(rows.iter().map(|r| r.upstream_endpoint).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.cache_status).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.saved_cost_nanos).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.mcp_outcome).collect::<Vec<_>>())
        .bind(rows.iter().map(|r| r.response_bytes).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
    // Only the rows this statement added (RETURNING skips the conflicts).
    let mut sums = Rollups::default();
    if new.len() == rows.len() {
        sums.add_all(rows);
    } else if !new.is_empty() {
        let new: HashSet<uuid::Uuid> = new.iter().map(|r| r.get::<uuid::Uuid, _>(0)).collect();
        for r in rows.iter().filter(|r| new.contains(&r.id)) {
            sums.add(r);
        }
    }
    sums.upsert_postgres(&mut tx).await?;
    tx.commit().await?;
    guard.done();
    Ok(new.len() as u64)
}
