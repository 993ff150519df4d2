//! The SQLite backend: one file, WAL mode, every batch fsynced before it is acknowledged,
//! and the file is the authority for history.
//!
//! * [`schema`]: tables, versions and migrations;
//! * [`writer`]: the thread that owns the writing connection (group commit);
//! * [`read`]: the live part read at start-up, and reads of everything else afterwards;
//! * [`pack`]: a finished rollout's spans as one row, for reading them back at once.
//!
//! At start-up only what the hot paths need is read (unfinished rollouts with their
//! attempts, spans and counters, the queue, workers, the recent resources versions and the
//! totals), so restart time follows the live work, not the history. A second server on the same file fails
//! at start: the first holds an exclusive lock on `FILE-lock` for as long as it runs.

mod pack;
mod read;
mod schema;
mod writer;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::oneshot;

use crate::persist::{Backend, Change, Durable, History, Snapshot, StorageError};
pub use schema::SCHEMA_VERSION;
use writer::Msg;

/// Files up to this size get a full integrity check at start; larger ones would make the
/// start take as long as reading the whole history.
const CHECKED_AT_START: u64 = 64 << 20;

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

/// A store file, the thread that writes it and the connections that read it.
pub struct Sqlite {
    tx: mpsc::Sender<Msg>,
    snapshot: parking_lot::Mutex<Option<Snapshot>>,
    reader: Arc<read::Reader>,
    /// Held (locked) for as long as this server uses the file; dropped last.
    _lock: File,
}

/// Turns a SQLite error into a storage error that says what was being done.
fn err(context: &str) -> impl Fn(rusqlite::Error) -> StorageError + '_ {
    move |e| StorageError(format!("{context}: {e}"))
}

/// The lock file beside a store file.
fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-lock");
    PathBuf::from(name)
}

fn locked(path: &Path) -> StorageError {
    StorageError(format!(
        "{} is locked by another process (is another agl-store using it?)",
        path.display()
    ))
}

/// Takes the file for this process alone, now: a second server fails here, at start.
fn lock(path: &Path) -> Result<File, StorageError> {
    let lock_file = lock_path(path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_file)
        .map_err(|e| StorageError(format!("cannot open {}: {e}", lock_file.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(locked(path)),
        Err(std::fs::TryLockError::Error(e)) => Err(StorageError(format!(
            "cannot lock {}: {e}",
            lock_file.display()
        ))),
    }
}

impl Sqlite {
    /// Opens (or creates) the store file at `path`, checks it, migrates it, reads its live
    /// part, and starts the writer thread. Errors say what is wrong with the file.
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
        let lock = lock(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| StorageError(format!("cannot open {}: {e}", path.display())))?;
        let conn = prepare(conn, path, durability)?;
        let snapshot = read::load_live(&conn)
            .map_err(|e| StorageError(format!("cannot read {}: {e}", path.display())))?;
        let durable = Arc::new(AtomicU64::new(0));
        let reader = Arc::new(read::Reader::new(path.to_owned(), Arc::clone(&durable)));
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("agl-sqlite-writer".into())
            .spawn(move || writer::writer(conn, &rx, &durable))
            .map_err(|e| StorageError(format!("cannot start the writer thread: {e}")))?;
        Ok(Self {
            tx,
            snapshot: parking_lot::Mutex::new(Some(snapshot)),
            reader,
            _lock: lock,
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

    fn history(&self) -> Option<Arc<dyn History>> {
        Some(Arc::clone(&self.reader) as Arc<dyn History>)
    }
}

/// Pragmas, integrity and schema; refuses files it must not touch.
fn prepare(
    mut conn: Connection,
    path: &Path,
    durability: Durability,
) -> Result<Connection, StorageError> {
    let shown = path.display().to_string();
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(err("cannot set the busy timeout"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .map_err(|e| locked_or(&shown, e))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StorageError(format!(
            "{shown} cannot switch to WAL journaling (got {mode})"
        )));
    }
    // Another program holding the file (not an agl-store: those hold the lock file) fails here.
    conn.execute_batch("BEGIN IMMEDIATE; COMMIT;")
        .map_err(|e| locked_or(&shown, e))?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)
        .map_err(err("cannot set synchronous"))?;
    let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    check(&conn, size)
        .map_err(|e| StorageError(format!("{shown} is not a usable agl-store database: {e}")))?
        .map_or(Ok(()), |problem| {
            Err(StorageError(format!(
                "{shown} is corrupted (integrity check: {problem}); restore it from a backup"
            )))
        })?;
    schema::migrate(&mut conn, &shown)?;
    Ok(conn)
}

/// Checks a file of `size` bytes at start; `Some` names what is wrong. Files up to
/// [`CHECKED_AT_START`] get SQLite's quick check of every page; for larger ones only the
/// schema is read, and a damaged page further in surfaces as a storage error (5xx) when it
/// is read, the writes before it intact.
fn check(conn: &Connection, size: u64) -> rusqlite::Result<Option<String>> {
    let sql = if size <= CHECKED_AT_START {
        "PRAGMA quick_check"
    } else {
        "SELECT CASE WHEN count(*) >= 0 THEN 'ok' END FROM sqlite_master"
    };
    let answer: String = conn.query_row(sql, [], |r| r.get(0))?;
    Ok((answer != "ok").then_some(answer))
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

/// Copies a store file that no server holds open (offline backup), through SQLite's
/// backup API so a half-written WAL is folded in.
pub fn backup_offline(from: &Path, to: &Path) -> Result<(), StorageError> {
    // A server holds the lock file while it runs; take it too, so that none starts during
    // the copy.
    let _lock = match File::open(lock_path(from)) {
        Ok(file) => match file.try_lock_shared() {
            Ok(()) => Some(file),
            Err(std::fs::TryLockError::WouldBlock) => return Err(locked(from)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(StorageError(format!("cannot lock {}: {e}", from.display())));
            }
        },
        Err(_) => None,
    };
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::StoredSpan;
    use crate::persist::Change;

    fn span(id: &str, seq: i64) -> Arc<StoredSpan> {
        let json = format!(
            r#"{{"rollout_id":"ro-1","attempt_id":"at-1","sequence_id":{seq},"trace_id":"t","span_id":"{id}","parent_id":null,"name":"n{id}","status":{{"status_code":"OK"}},"attributes":{{}},"events":[],"links":[],"start_time":1.0,"end_time":2.0,"context":null,"parent":null,"resource":{{"attributes":{{}},"schema_url":""}}}}"#
        );
        Arc::new(StoredSpan::from_json(&json).unwrap())
    }

    fn written(spans: &[Arc<StoredSpan>]) -> Vec<Change> {
        spans
            .iter()
            .map(|s| Change::Span {
                rollout_id: "ro-1".into(),
                span: Arc::clone(s),
            })
            .collect()
    }

    /// A rollout's spans are its pack's followed by the rows added after it: the case of a
    /// span that arrives while the pack written in place of the rows is still on its way.
    #[tokio::test]
    async fn spans_read_back_from_a_pack_and_the_rows_added_after_it() {
        let dir = std::env::temp_dir().join(format!("agl-pack-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.db");
        let (a, b, c) = (span("a", 2), span("b", 1), span("c", 1));
        {
            let db = Sqlite::open(&path, Durability::Normal).unwrap();
            db.submit(written(&[Arc::clone(&a), Arc::clone(&b)]));
            db.submit(vec![Change::Pack {
                rollout_id: "ro-1".into(),
                spans: vec![Arc::clone(&a), Arc::clone(&b)],
            }]);
            db.submit(written(&[Arc::clone(&c)]))
                .await
                .unwrap()
                .unwrap();
            let history = db.history().unwrap();
            let ids = |spans: Vec<StoredSpan>| -> Vec<String> {
                spans.iter().map(|s| s.span_id().to_string()).collect()
            };
            assert_eq!(ids(history.spans("ro-1", None).unwrap()), ["a", "b", "c"]);
            assert_eq!(ids(history.spans("ro-1", Some("at-2")).unwrap()), [""; 0]);
            // By sequence id, then arrival (the pack's spans arrived first).
            let texts = history.span_texts("ro-1", None, false).unwrap();
            assert_eq!(texts, [b.to_json(), c.to_json(), a.to_json()]);
            let texts = history.span_texts("ro-1", None, true).unwrap();
            assert_eq!(texts, [a.to_json(), b.to_json(), c.to_json()]);
            let rows = history.rollout_rows("ro-1").unwrap();
            assert!(rows.is_none(), "no rollout row was written");
            db.close().await.unwrap().unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM spans", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1, "the pack replaced the rows it holds");
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_start_check_passes_a_sound_file_of_any_size() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        assert_eq!(check(&conn, 0).unwrap(), None);
        assert_eq!(check(&conn, CHECKED_AT_START + 1).unwrap(), None);
    }
}
