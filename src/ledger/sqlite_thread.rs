//! The SQLite ledger's writes, on a thread of their own with one connection (rusqlite): the
//! batch inserts and their rollup upserts, the writer's checks (the file's identity, rows
//! looked up from a second connection). Reports, spend queries, migrations and billing stay
//! on the sqlx pool.
//!
//! Through sqlx a row cost the SQLite threads 28,769 instructions and the writer's runtime
//! 10,343 (bench/results/2026-12-03-profile.md): each text bound was copied twice, every
//! statement went through sqlx's worker channel and statement iterator, `BEGIN` and `COMMIT`
//! were parsed anew, and every check opened a new connection (`sqlite3_open_v2`, ~100,000
//! instructions). Here every statement is prepared once per connection (`prepare_cached`,
//! `BEGIN IMMEDIATE` and `COMMIT` too), values are bound straight from the row's fields (SQLite
//! copies a text once, into its lookaside), and the checks reuse a second connection kept open
//! beside the first.
//!
//! The async side sends a job through a bounded channel and awaits the answer on a oneshot:
//! nothing blocks the runtime. A full channel (the thread stalled behind a locked database)
//! is an error the writer retries like any other.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Statement, ToSql};
use tokio::sync::oneshot;

use super::LedgerError;
use super::rollup::Rollups;
use super::row::{UsageRow, micros, tokens};
use super::store::{COLUMNS, FileId, ResetMark};

/// Jobs waiting for the thread at most: the writer sends one at a time, so more means the
/// thread is stuck (a database locked for longer than the writer's timeout).
const QUEUE: usize = 4;

/// Statements a connection keeps prepared: `BEGIN IMMEDIATE`, `COMMIT`, the row insert, seven
/// upserts per rollup, the check's lookup (rusqlite's default is 16).
const PREPARED: usize = 32;

/// The handle: cheap to clone; the thread ends when the last clone is dropped.
#[derive(Clone)]
pub(super) struct SqliteThread {
    jobs: mpsc::SyncSender<Job>,
}

enum Job {
    Insert(Arc<Vec<UsageRow>>, oneshot::Sender<rusqlite::Result<u64>>),
    Committed(
        Vec<uuid::Uuid>,
        oneshot::Sender<rusqlite::Result<HashSet<uuid::Uuid>>>,
    ),
    FileId(oneshot::Sender<std::io::Result<Option<FileId>>>),
    Close(oneshot::Sender<()>),
}

/// Where the connections go, and how they are opened.
pub(super) struct Target {
    /// The file, or sqlx's name of a shared in-memory database.
    pub(super) filename: PathBuf,
    /// An in-memory database (shared cache, the name sqlx gave it).
    pub(super) memory: bool,
    /// SQLite's wait on a locked database.
    pub(super) busy_timeout: Duration,
    /// Connections opened before the last reset are closed, not used.
    pub(super) reset: Arc<ResetMark>,
}

impl SqliteThread {
    /// Starts the thread (it opens nothing until the first job).
    pub(super) fn start(target: Target) -> std::io::Result<SqliteThread> {
        let (jobs, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("tollgate-ledger-sqlite".into())
            .spawn(move || {
                let mut w = Worker {
                    target,
                    writer: None,
                    reader: None,
                };
                while let Ok(job) = rx.recv() {
                    w.run(job);
                }
            })?;
        Ok(SqliteThread { jobs })
    }

    async fn ask<T>(&self, job: impl FnOnce(oneshot::Sender<T>) -> Job) -> Result<T, LedgerError> {
        let (tx, rx) = oneshot::channel();
        self.jobs.try_send(job(tx)).map_err(|e| match e {
            mpsc::TrySendError::Full(_) => LedgerError::Busy,
            mpsc::TrySendError::Disconnected(_) => LedgerError::Gone,
        })?;
        rx.await.map_err(|_| LedgerError::Gone)
    }

    /// Inserts `rows` and their rollup sums in one transaction; how many rows were new.
    pub(super) async fn insert(&self, rows: Arc<Vec<UsageRow>>) -> Result<u64, LedgerError> {
        Ok(self.ask(|tx| Job::Insert(rows, tx)).await??)
    }

    /// Of `ids`, those the second connection finds committed.
    pub(super) async fn committed(
        &self,
        ids: Vec<uuid::Uuid>,
    ) -> Result<HashSet<uuid::Uuid>, LedgerError> {
        Ok(self.ask(|tx| Job::Committed(ids, tx)).await??)
    }

    /// The file's device and inode now (`None` in memory); a missing file is an error.
    pub(super) async fn file_id(&self) -> std::io::Result<Option<FileId>> {
        self.ask(Job::FileId)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?
    }

    /// Closes both connections (the next job opens them again).
    pub(super) async fn close(&self) {
        let _ = self.ask(Job::Close).await;
    }
}

struct Worker {
    target: Target,
    /// The connection that writes, and the reset generation it was opened in.
    writer: Option<(Connection, u64)>,
    /// The checks' connection: a second one, so it sees only what was committed.
    reader: Option<(Connection, u64)>,
}

impl Worker {
    fn run(&mut self, job: Job) {
        match job {
            Job::Insert(rows, reply) => {
                let result = with_conn(&self.target, &mut self.writer, |c| insert(c, &rows));
                // The writer takes its rows back from the Arc once answered.
                drop(rows);
                let _ = reply.send(result);
            }
            Job::Committed(ids, reply) => {
                let result = with_conn(&self.target, &mut self.reader, |c| committed(c, &ids));
                let _ = reply.send(result);
            }
            Job::FileId(reply) => {
                let _ = reply.send(self.file_id());
            }
            Job::Close(reply) => {
                self.writer = None;
                self.reader = None;
                let _ = reply.send(());
            }
        }
    }

    fn file_id(&self) -> std::io::Result<Option<FileId>> {
        if self.target.memory {
            return Ok(None);
        }
        FileId::of(&self.target.filename).map(Some)
    }
}

/// Runs `f` on the connection in `slot`, opened first when there is none or it was opened
/// before the last reset. A connection that saw an error is closed, never reused: SQLite may
/// have rolled its transaction back by itself (SQLITE_FULL, SQLITE_IOERR), and closing it rolls
/// back whatever is left.
fn with_conn<T>(
    target: &Target,
    slot: &mut Option<(Connection, u64)>,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    let generation = target.reset.generation();
    if slot.as_ref().is_none_or(|c| c.1 != generation) {
        *slot = None;
        *slot = Some((target.open()?, generation));
    }
    let Some((conn, _)) = slot.as_ref() else {
        return Err(rusqlite::Error::InvalidQuery);
    };
    let result = f(conn);
    if result.is_err() {
        *slot = None;
    }
    result
}

impl Target {
    /// A connection to the target; never creates the file (the pool's migration does, so a
    /// file deleted under the gateway gets its schema before any row).
    fn open(&self) -> rusqlite::Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        if self.memory {
            flags |= OpenFlags::SQLITE_OPEN_MEMORY | OpenFlags::SQLITE_OPEN_SHARED_CACHE;
        }
        let conn = Connection::open_with_flags(&self.filename, flags)?;
        conn.busy_timeout(self.busy_timeout)?;
        // Per connection, as the pool's: a commit is durable in the WAL, fsync at checkpoints.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.set_prepared_statement_cache_capacity(PREPARED);
        Ok(conn)
    }
}

/// One transaction: the rows, one execution of one prepared single-row insert each, then the
/// rollup sums of the rows the executions added. Each execution's change count says whether
/// its row was new (0: stored already, a retried batch), so a row counts in the rollups
/// exactly once however often its batch is retried.
///
/// A row a statement, not 64: a 64-row statement held 640 texts bound at once, past SQLite's
/// lookaside slots, so each went through `malloc` (behind SQLite's memory-statistics mutex) and
/// came back through `sqlite3_clear_bindings`: the two were 10,900 of the 26,400 instructions a
/// row on this thread (callgrind, bench/results/2026-12-03-ledger-profile.md). A row's ten texts fit in
/// the lookaside, and rebinding a parameter frees the previous row's value there.
fn insert(conn: &Connection, rows: &[UsageRow]) -> rusqlite::Result<u64> {
    conn.prepare_cached("BEGIN IMMEDIATE")?.raw_execute()?;
    let mut sums = Rollups::default();
    let mut added = 0;
    {
        let mut stmt = conn.prepare_cached(insert_sql())?;
        for r in rows {
            bind_row(&mut Binder::new(&mut stmt), r)?;
            if stmt.raw_execute()? == 1 {
                sums.add(r);
                added += 1;
            }
        }
    }
    sums.upsert_sqlite(conn)?;
    conn.prepare_cached("COMMIT")?.raw_execute()?;
    // A commit that left the connection inside a transaction committed nothing (what sqlx's
    // savepoints once hid): an error, so the connection is closed and the batch retried.
    if !conn.is_autocommit() {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("still inside a transaction after COMMIT".into()),
        ));
    }
    Ok(added)
}

/// Of `ids`, those present: one prepared point lookup each (a check covers a few batches'
/// first and last rows).
fn committed(conn: &Connection, ids: &[uuid::Uuid]) -> rusqlite::Result<HashSet<uuid::Uuid>> {
    let mut stmt = conn.prepare_cached("SELECT 1 FROM tollgate_usage WHERE id = ?1")?;
    let mut found = HashSet::with_capacity(ids.len());
    for id in ids {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text: &str = id.hyphenated().encode_lower(&mut buf);
        if stmt.exists([text])? {
            found.insert(*id);
        }
    }
    Ok(found)
}

/// Binds values to a statement's parameters in order.
pub(super) struct Binder<'s, 'c> {
    stmt: &'s mut Statement<'c>,
    next: usize,
}

impl<'s, 'c> Binder<'s, 'c> {
    pub(super) fn new(stmt: &'s mut Statement<'c>) -> Self {
        Binder { stmt, next: 1 }
    }

    /// Binds `v` to the next parameter. A `&str` is bound by pointer and copied once, by
    /// SQLite (sqlx copied it into its arguments first).
    pub(super) fn bind<T: ToSql>(&mut self, v: T) -> rusqlite::Result<()> {
        self.stmt.raw_bind_parameter(self.next, v)?;
        self.next += 1;
        Ok(())
    }
}

/// One row's 32 values, in the order of `COLUMNS`.
fn bind_row(b: &mut Binder<'_, '_>, r: &UsageRow) -> rusqlite::Result<()> {
    let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
    b.bind(&*r.id.hyphenated().encode_lower(&mut id))?;
    b.bind(r.started_at_micros())?;
    b.bind(micros(r.duration))?;
    b.bind(r.time_to_first_token.map(micros))?;
    b.bind(&*r.key_name)?;
    b.bind(&*r.team)?;
    b.bind(r.customer.as_deref())?;
    b.bind(&*r.provider)?;
    b.bind(&*r.requested_model)?;
    b.bind(&*r.model)?;
    b.bind(r.endpoint)?;
    b.bind(r.stream)?;
    b.bind(i32::from(r.status_code))?;
    b.bind(r.error_type)?;
    b.bind(tokens(r.usage.input))?;
    b.bind(tokens(r.usage.output))?;
    b.bind(tokens(r.usage.cached_read))?;
    b.bind(tokens(r.usage.cache_write))?;
    b.bind(tokens(r.usage.cache_write_1h))?;
    b.bind(tokens(r.usage.reasoning))?;
    b.bind(r.cost_nanos)?;
    b.bind(r.estimated())?;
    b.bind(r.upstream_request_id.as_deref())?;
    b.bind(r.price_id.as_deref())?;
    b.bind(r.cost_source())?;
    b.bind(r.service_tier.as_str())?;
    b.bind(r.usage_source.as_str())?;
    b.bind(r.upstream_endpoint)?;
    b.bind(r.cache_status)?;
    b.bind(r.saved_cost_nanos)?;
    b.bind(r.mcp_outcome)?;
    b.bind(r.response_bytes)?;
    Ok(())
}

/// The `INSERT OR IGNORE` of one row into `tollgate_usage`; built once.
fn insert_sql() -> &'static str {
    static SQL: OnceLock<String> = OnceLock::new();
    SQL.get_or_init(|| {
        let params = vec!["?"; COLUMNS.split(',').count()].join(", ");
        format!("INSERT OR IGNORE INTO tollgate_usage ({COLUMNS}) VALUES ({params})")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::ledger::row::UsageRow;
    use crate::ledger::store::Store;

    /// sqlx names a shared in-memory database; the thread's connection must reach the same
    /// one, or rows would go to a database no report reads.
    #[tokio::test]
    async fn an_in_memory_ledger_is_one_database_for_the_thread_and_the_pool() {
        let store =
            Store::connect_lazy("sqlite::memory:", true, Duration::from_secs(5)).expect("store");
        store.migrate().await.expect("migrate");
        let rows: Vec<UsageRow> = (0..3).map(|_| UsageRow::blank()).collect();
        assert_eq!(store.insert(&rows).await.expect("insert"), 3);
        assert_eq!(store.insert(&rows).await.expect("retry"), 0);
        let ids: Vec<uuid::Uuid> = rows.iter().map(|r| r.id).collect();
        assert_eq!(store.committed_ids(&ids).await.expect("check").len(), 3);
        let pool = store.sqlite_pool().expect("sqlite");
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tollgate_usage")
            .fetch_one(pool)
            .await
            .expect("count");
        assert_eq!(n, 3);
        assert_eq!(store.file_id().await.expect("file id"), None);
    }
}
