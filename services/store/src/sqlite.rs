//! The SQLite backend: one file, WAL mode, every batch fsynced before it is acknowledged.
//!
//! One writer thread owns the connection. Batches queue up while it commits, and the next
//! transaction takes all of them at once (group commit): under load many requests share one
//! fsync, and each response still waits for the fsync that covers it. The file is opened in
//! exclusive locking mode, so a second server on the same file fails at start instead of
//! interleaving writes.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension as _, Transaction, params};
use tokio::sync::oneshot;

use crate::model::{Attempt, ResourcesUpdate, Rollout, StoredSpan, Worker};
use crate::persist::{Backend, Change, Durable, Snapshot, StorageError};

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = 1;

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 4096;

const SCHEMA_V1: &str = "
CREATE TABLE rollouts (rollout_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE attempts (
    rollout_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    doc TEXT NOT NULL,
    PRIMARY KEY (rollout_id, sequence_id)
) WITHOUT ROWID;
CREATE TABLE spans (
    id INTEGER PRIMARY KEY,
    rollout_id TEXT NOT NULL,
    attempt_id TEXT NOT NULL,
    span_id TEXT NOT NULL,
    sequence_id INTEGER NOT NULL,
    trace_id TEXT NOT NULL,
    parent_id TEXT,
    name TEXT NOT NULL,
    start_time REAL,
    end_time REAL,
    doc TEXT NOT NULL,
    UNIQUE (rollout_id, attempt_id, span_id)
);
CREATE TABLE workers (worker_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE resources (resources_id TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE sequences (rollout_id TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE queue (pos INTEGER PRIMARY KEY AUTOINCREMENT, rollout_id TEXT NOT NULL UNIQUE);
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
";

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync on every commit: an acknowledged write survives a crash of the process, the
    /// kernel or the machine.
    #[default]
    Full,
    /// fsync only at checkpoints: acknowledged writes survive a crash of the process, not a
    /// power loss. Faster on slow disks.
    Normal,
}

enum Msg {
    Commit(Vec<Change>, oneshot::Sender<Result<(), StorageError>>),
    Backup(PathBuf, oneshot::Sender<Result<(), StorageError>>),
    Close(oneshot::Sender<Result<(), StorageError>>),
}

/// A store file and the thread that writes it.
pub struct Sqlite {
    tx: mpsc::Sender<Msg>,
    snapshot: parking_lot::Mutex<Option<Snapshot>>,
}

fn err(context: &str) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |e| StorageError(format!("{context}: {e}"))
}

impl Sqlite {
    /// Opens (or creates) the store file at `path`, checks it, loads it, and starts the
    /// writer thread. Errors say what is wrong with the file.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StorageError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
            && !parent.is_dir()
        {
            return Err(StorageError(format!(
                "cannot open {}: directory {} does not exist",
                path.display(),
                parent.display()
            )));
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
        let conn = prepare(conn, path, durability)?;
        let snapshot = load(&conn)
            .map_err(|e| StorageError(format!("cannot read {}: {e}", path.display())))?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("agl-sqlite-writer".into())
            .spawn(move || writer(conn, &rx))
            .map_err(|e| StorageError(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            snapshot: parking_lot::Mutex::new(Some(snapshot)),
        })
    }

    fn send(&self, msg: impl FnOnce(oneshot::Sender<Result<(), StorageError>>) -> Msg) -> Durable {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::SendError(msg)) = self.tx.send(msg(done)) {
            let reply = match msg {
                Msg::Commit(_, r) | Msg::Backup(_, r) | Msg::Close(r) => r,
            };
            let _ = reply.send(Err(StorageError("the writer thread has stopped".into())));
        }
        rx
    }
}

impl Backend for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn journaling(&self) -> bool {
        true
    }

    fn load(&self) -> Result<Snapshot, StorageError> {
        Ok(self.snapshot.lock().take().unwrap_or_default())
    }

    fn submit(&self, changes: Vec<Change>) -> Durable {
        self.send(|done| Msg::Commit(changes, done))
    }

    fn backup(&self, path: PathBuf) -> Durable {
        self.send(|done| Msg::Backup(path, done))
    }

    fn close(&self) -> Durable {
        self.send(Msg::Close)
    }
}

/// Pragmas, lock, integrity and schema; refuses files it must not touch.
fn prepare(
    conn: Connection,
    path: &Path,
    durability: Durability,
) -> Result<Connection, StorageError> {
    let shown = path.display().to_string();
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(err("cannot set the busy timeout"))?;
    // Take the file for this process alone, now: a second server fails here, at start.
    conn.pragma_update(None, "locking_mode", "EXCLUSIVE")
        .map_err(err("cannot set the locking mode"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| locked_or(&shown, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError(format!(
            "{shown}: cannot switch to WAL journaling (got {mode})"
        )));
    }
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(|e| locked_or(&shown, e))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(err("cannot set synchronous"))?;
    let check: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(|e| StorageError(format!("{shown} is not a usable agl-store database: {e}")))?;
    if check != "ok" {
        return Err(StorageError(format!(
            "{shown} is corrupted (integrity check: {check}); restore it from a backup"
        )));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err("cannot read the schema version"))?;
    match version {
        0 => {
            let tables: i64 = conn
                .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
                .map_err(err("cannot inspect the file"))?;
            if tables > 0 {
                return Err(StorageError(format!(
                    "{shown} is an SQLite database of another program (no agl-store schema version)"
                )));
            }
            conn.execute_batch(&format!(
                "BEGIN; {SCHEMA_V1} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(err("cannot create the schema"))?;
        }
        SCHEMA_VERSION => {}
        v if v > SCHEMA_VERSION => {
            return Err(StorageError(format!(
                "{shown} has schema version {v}, newer than this agl-store understands \
                 ({SCHEMA_VERSION}); run a newer agl-store"
            )));
        }
        v => {
            // Future schema changes migrate here, one version at a time, in a transaction.
            return Err(StorageError(format!(
                "{shown} has unknown schema version {v}"
            )));
        }
    }
    Ok(conn)
}

fn locked_or(path: &str, e: rusqlite::Error) -> StorageError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StorageError(format!(
                "{path} is locked by another process (is another agl-store using it?)"
            ))
        }
        Some(rusqlite::ErrorCode::NotADatabase) => {
            StorageError(format!("{path} is not an SQLite database (corrupted?)"))
        }
        _ => StorageError(format!("cannot use {path}: {e}")),
    }
}

fn doc<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad {what} document: {e}").into(),
        )
    })
}

fn load(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snap = Snapshot::default();
    let mut q = conn.prepare("SELECT doc FROM rollouts ORDER BY rowid")?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.rollouts.push(doc::<Rollout>(&row?, "rollout")?);
    }
    let mut q = conn.prepare("SELECT doc FROM attempts")?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.attempts.push(doc::<Attempt>(&row?, "attempt")?);
    }
    // The indexed columns are copies of fields of `doc`, which the span reads them from.
    let mut q = conn.prepare("SELECT rollout_id, doc FROM spans ORDER BY id")?;
    let rows = q.query_map([], |r| {
        let json: String = r.get(1)?;
        let span = StoredSpan::from_json(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(1, rusqlite::types::Type::Text, e.into())
        })?;
        Ok((r.get::<_, String>(0)?, span))
    })?;
    for row in rows {
        snap.spans.push(row?);
    }
    let mut q = conn.prepare("SELECT doc FROM workers ORDER BY rowid")?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.workers.push(doc::<Worker>(&row?, "worker")?);
    }
    let mut q = conn.prepare("SELECT doc FROM resources ORDER BY rowid")?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.resources
            .push(doc::<ResourcesUpdate>(&row?, "resources")?);
    }
    snap.latest_resources = conn
        .query_row(
            "SELECT value FROM kv WHERE key = 'latest_resources'",
            [],
            |r| r.get(0),
        )
        .optional()?;
    let mut q = conn.prepare("SELECT rollout_id, value FROM sequences")?;
    for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        snap.sequences.push(row?);
    }
    let mut q = conn.prepare("SELECT rollout_id FROM queue ORDER BY pos")?;
    for row in q.query_map([], |r| r.get(0))? {
        snap.queue.push(row?);
    }
    Ok(snap)
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn apply(tx: &Transaction<'_>, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::Rollout(r) => {
            tx.prepare_cached(
                "INSERT INTO rollouts (rollout_id, doc) VALUES (?1, ?2) \
                 ON CONFLICT (rollout_id) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![r.rollout_id, to_json(r)?])?;
        }
        Change::Attempt(a) => {
            tx.prepare_cached(
                "INSERT INTO attempts (rollout_id, sequence_id, doc) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (rollout_id, sequence_id) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![a.rollout_id, a.sequence_id, to_json(a)?])?;
        }
        Change::Span { rollout_id, span } => {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO spans (rollout_id, attempt_id, span_id, sequence_id, \
                 trace_id, parent_id, name, start_time, end_time, doc) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?
            .execute(params![
                rollout_id,
                span.attempt_id(),
                span.span_id(),
                span.sequence_id(),
                span.trace_id(),
                span.parent_id(),
                span.name(),
                span.start_time(),
                span.end_time(),
                span.to_json(),
            ])?;
        }
        Change::Worker(w) => {
            tx.prepare_cached(
                "INSERT INTO workers (worker_id, doc) VALUES (?1, ?2) \
                 ON CONFLICT (worker_id) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![w.worker_id, to_json(w)?])?;
        }
        Change::Resources(r) => {
            tx.prepare_cached(
                "INSERT INTO resources (resources_id, doc) VALUES (?1, ?2) \
                 ON CONFLICT (resources_id) DO UPDATE SET doc = excluded.doc",
            )?
            .execute(params![r.resources_id, to_json(r)?])?;
        }
        Change::LatestResources(id) => {
            tx.prepare_cached(
                "INSERT INTO kv (key, value) VALUES ('latest_resources', ?1) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![id])?;
        }
        Change::Sequence { rollout_id, value } => {
            tx.prepare_cached(
                "INSERT INTO sequences (rollout_id, value) VALUES (?1, ?2) \
                 ON CONFLICT (rollout_id) DO UPDATE SET value = max(value, excluded.value)",
            )?
            .execute(params![rollout_id, value])?;
        }
        Change::QueuePush(id) => {
            tx.prepare_cached("INSERT OR IGNORE INTO queue (rollout_id) VALUES (?1)")?
                .execute(params![id])?;
        }
        Change::QueuePop(id) => {
            tx.prepare_cached("DELETE FROM queue WHERE rollout_id = ?1")?
                .execute(params![id])?;
        }
    }
    Ok(())
}

fn commit(conn: &mut Connection, batches: &[Vec<Change>]) -> Result<(), StorageError> {
    let tx = conn
        .transaction()
        .map_err(err("cannot begin a transaction"))?;
    for change in batches.iter().flatten() {
        apply(&tx, change).map_err(err("cannot write"))?;
    }
    tx.commit().map_err(err("cannot commit"))
}

/// The writer loop: folds queued batches into one transaction, answers each after commit.
/// After a failed commit the store refuses every later write: what is on disk stays the
/// last consistent state, and a restart resumes from it.
fn writer(mut conn: Connection, rx: &mpsc::Receiver<Msg>) {
    let mut failed: Option<StorageError> = None;
    let mut pending: Option<Msg> = None;
    let closed_by = loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => break None,
            },
        };
        match first {
            Msg::Close(reply) => break Some(reply),
            Msg::Backup(path, reply) => {
                let result = match &failed {
                    Some(e) => Err(e.clone()),
                    None => backup(&conn, &path),
                };
                let _ = reply.send(result);
            }
            Msg::Commit(changes, reply) => {
                let mut batches = vec![changes];
                let mut replies = vec![reply];
                while batches.len() < MAX_GROUP {
                    match rx.try_recv() {
                        Ok(Msg::Commit(c, r)) => {
                            batches.push(c);
                            replies.push(r);
                        }
                        Ok(other) => {
                            pending = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                let result = match &failed {
                    Some(e) => Err(e.clone()),
                    None => commit(&mut conn, &batches),
                };
                if let Err(e) = &result
                    && failed.is_none()
                {
                    tracing::error!(error = %e, "storage failed; refusing further writes until restart");
                    failed = Some(e.clone());
                }
                for reply in replies {
                    let _ = reply.send(result.clone());
                }
            }
        }
    };
    // Closing the last connection checkpoints the WAL into the main file and removes it.
    let closed = conn
        .close()
        .map_err(|(_, e)| StorageError(format!("cannot close the store file: {e}")));
    if let Err(e) = &closed {
        tracing::warn!(error = %e, "store file not closed cleanly; the WAL is replayed at next start");
    }
    if let Some(reply) = closed_by {
        let _ = reply.send(closed);
    }
}

/// `VACUUM INTO`: a compact, consistent copy, taken between two commits.
fn backup(conn: &Connection, path: &Path) -> Result<(), StorageError> {
    if path.exists() {
        return Err(StorageError(format!(
            "backup target {} already exists",
            path.display()
        )));
    }
    let target = path
        .to_str()
        .ok_or_else(|| StorageError("backup path is not valid UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", params![target])
        .map(|_| ())
        .map_err(|e| StorageError(format!("backup to {} failed: {e}", path.display())))
}

/// Copies a store file that no server holds open (offline backup), through SQLite's
/// backup API so a half-written WAL is folded in.
pub fn backup_offline(from: &Path, to: &Path) -> Result<(), StorageError> {
    let src = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| StorageError(format!("cannot open {}: {e}", from.display())))?;
    let mut dst = Connection::open(to)
        .map_err(|e| StorageError(format!("cannot create {}: {e}", to.display())))?;
    let shown = from.display().to_string();
    let backup = rusqlite::backup::Backup::new(&src, &mut dst).map_err(|e| locked_or(&shown, e))?;
    // One step copies every page; a file a running server holds answers busy or locked,
    // which must fail, not spin (use `--url` to back up a running server).
    match backup.step(-1).map_err(|e| locked_or(&shown, e))? {
        rusqlite::backup::StepResult::Done => Ok(()),
        _ => Err(StorageError(format!(
            "{shown} is locked by another process (a running server? back it up with --url)"
        ))),
    }
}
