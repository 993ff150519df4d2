//! The store file's schema and its versions. A file records its version in
//! `PRAGMA user_version`; opening applies the migrations it lacks, one version at a time,
//! each in its own transaction, and refuses a file written by a newer agl-store.
//!
//! * v1: one JSON document per row, spans with their indexed fields as columns;
//! * v2: the database is the authority for history: rollouts carry their status as a column
//!   (indexed, so start-up reads only live rollouts and status queries do not parse every
//!   document), and the running totals are kept in `kv` so that a restart does not count;
//! * v3: `span_packs`, a finished rollout's spans as one row (see `pack.rs`);
//! * v4: rollouts carry their mode, start and end times as indexed columns, so that the
//!   dashboard's filters and sorts read a page, not every document.

use rusqlite::{Connection, OptionalExtension as _, params};

use super::err;
use crate::model::{AttemptStatus, RolloutStatus};
use crate::persist::{Counts, StorageError};

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = 4;

const V1: &str = "
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

const V2: &str = "
ALTER TABLE rollouts ADD COLUMN status TEXT;
UPDATE rollouts SET status = json_extract(doc, '$.status');
CREATE INDEX rollouts_by_status ON rollouts (status);
";

const V3: &str = "CREATE TABLE span_packs (rollout_id TEXT PRIMARY KEY, packed BLOB NOT NULL);";

const V4: &str = "
ALTER TABLE rollouts ADD COLUMN mode TEXT;
ALTER TABLE rollouts ADD COLUMN start_time REAL;
ALTER TABLE rollouts ADD COLUMN end_time REAL;
UPDATE rollouts SET mode = json_extract(doc, '$.mode'),
    start_time = json_extract(doc, '$.start_time'), end_time = json_extract(doc, '$.end_time');
CREATE INDEX rollouts_by_mode ON rollouts (mode);
CREATE INDEX rollouts_by_start ON rollouts (start_time);
CREATE INDEX rollouts_by_end ON rollouts (end_time);
";

/// The `kv` key of the running totals.
pub const COUNTS_KEY: &str = "counts";

/// Brings the file at `shown` up to [`SCHEMA_VERSION`].
pub fn migrate(conn: &mut Connection, shown: &str) -> Result<(), StorageError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err("cannot read the schema version"))?;
    if version == 0 {
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(err("cannot inspect the file"))?;
        if tables > 0 {
            return Err(StorageError(format!(
                "{shown} is an SQLite database of another program (no agl-store schema version)"
            )));
        }
    }
    if version > SCHEMA_VERSION {
        return Err(StorageError(format!(
            "{shown} has schema version {version}, newer than this agl-store understands \
             ({SCHEMA_VERSION}); run a newer agl-store"
        )));
    }
    if version < 0 {
        return Err(StorageError(format!(
            "{shown} has unknown schema version {version}"
        )));
    }
    for next in version + 1..=SCHEMA_VERSION {
        let tx = conn
            .transaction()
            .map_err(err("cannot begin a migration"))?;
        match next {
            1 => tx.execute_batch(V1),
            2 => tx
                .execute_batch(V2)
                .and_then(|()| write_counts(&tx, &count_rows(&tx)?)),
            3 => tx.execute_batch(V3),
            4 => tx.execute_batch(V4),
            _ => unreachable!("a migration per version up to SCHEMA_VERSION"),
        }
        .map_err(|e| {
            StorageError(format!(
                "cannot migrate {shown} to schema version {next}: {e}"
            ))
        })?;
        tx.pragma_update(None, "user_version", next)
            .map_err(err("cannot record the schema version"))?;
        tx.commit().map_err(err("cannot commit a migration"))?;
        if version > 0 {
            tracing::info!(file = shown, version = next, "store file migrated");
        }
    }
    Ok(())
}

/// Counts what a file holds, the slow way (once, when a v1 file is migrated).
fn count_rows(conn: &Connection) -> rusqlite::Result<Counts> {
    let mut counts = Counts::default();
    let mut q = conn.prepare("SELECT status, count(*) FROM rollouts GROUP BY status")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (status, n) = row?;
        if let Some(s) = RolloutStatus::parse(&status) {
            counts.rollouts[s.index()] += usize::try_from(n).unwrap_or(0);
        }
    }
    let mut q =
        conn.prepare("SELECT json_extract(doc, '$.status'), count(*) FROM attempts GROUP BY 1")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))? {
        let (status, n) = row?;
        if let Some(s) = AttemptStatus::parse(&status) {
            counts.attempts[s.index()] += usize::try_from(n).unwrap_or(0);
        }
    }
    let (spans, bytes): (i64, i64) = conn.query_row(
        "SELECT count(*), coalesce(sum(length(CAST(doc AS BLOB))), 0) FROM spans",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    counts.spans = usize::try_from(spans).unwrap_or(0);
    counts.span_bytes = usize::try_from(bytes).unwrap_or(0);
    let resources: i64 = conn.query_row("SELECT count(*) FROM resources", [], |r| r.get(0))?;
    counts.resources = usize::try_from(resources).unwrap_or(0);
    Ok(counts)
}

/// Records the running totals.
pub fn write_counts(conn: &Connection, counts: &Counts) -> rusqlite::Result<()> {
    let text = serde_json::to_string(counts)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    conn.prepare_cached(
        "INSERT INTO kv (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![COUNTS_KEY, text])?;
    Ok(())
}

/// Reads the running totals.
pub fn read_counts(conn: &Connection) -> rusqlite::Result<Counts> {
    let text: Option<String> = conn
        .query_row("SELECT value FROM kv WHERE key = ?1", [COUNTS_KEY], |r| {
            r.get(0)
        })
        .optional()?;
    match text {
        None => Ok(Counts::default()),
        Some(text) => serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Text,
                format!("bad totals document: {e}").into(),
            )
        }),
    }
}

/// The statuses of rollouts the core keeps in memory (and reads at start-up), as SQL.
pub fn live_statuses_sql() -> String {
    let names: Vec<String> = RolloutStatus::ALL
        .iter()
        .filter(|s| !s.is_finished())
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!("({})", names.join(", "))
}
