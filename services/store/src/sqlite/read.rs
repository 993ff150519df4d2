//! Reading the store file: the live part at start-up, and afterwards whatever the core no
//! longer holds in memory (finished rollouts, their attempts and spans, sequence counters)
//! and the queries over everything.
//!
//! Reads run on their own connections (a small pool), so they never wait behind the
//! writer's fsyncs; in WAL mode each read sees the last commit made before it began.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Condvar, Mutex};
use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension as _, params};

use super::pack;
use super::schema::{self, live_statuses_sql};
use crate::model::{Attempt, ResourcesUpdate, Rollout, RolloutView, StoredSpan, Worker};
use crate::persist::{History, RolloutFilter, RolloutOrder, RolloutRows, Snapshot, StorageError};
use crate::sql::{self, SqlArg, Sqlite};

/// Resources versions read at start-up (besides the latest).
const RESOURCES_AT_START: i64 = 64;

/// Read connections: reads beyond this many wait for one to be free (on two cores more
/// would only share the same CPUs, and opening a connection costs more than a read).
const POOL: usize = 8;

fn doc<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Text,
            format!("bad {what} document: {e}").into(),
        )
    })
}

fn span_doc(json: &str) -> rusqlite::Result<StoredSpan> {
    StoredSpan::from_json(json).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
    })
}

/// The live part of the store: unfinished rollouts with their attempts, spans and
/// counters, the queue, workers, resources, and the totals of everything.
pub(super) fn load_live(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let live = live_statuses_sql();
    let mut snap = Snapshot::default();
    let mut q = conn.prepare(&format!(
        "SELECT doc FROM rollouts WHERE status IN {live} ORDER BY rowid"
    ))?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.rollouts.push(doc::<Rollout>(&row?, "rollout")?);
    }
    let mut q = conn.prepare(&format!(
        "SELECT a.doc FROM rollouts r JOIN attempts a ON a.rollout_id = r.rollout_id \
         WHERE r.status IN {live}"
    ))?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.attempts.push(doc::<Attempt>(&row?, "attempt")?);
    }
    // A rollout reopened after it left memory finished: the spans of its pack came first.
    let mut q = conn.prepare(&format!(
        "SELECT p.rollout_id, p.packed FROM rollouts r \
         JOIN span_packs p ON p.rollout_id = r.rollout_id WHERE r.status IN {live}"
    ))?;
    for row in q.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
    })? {
        let (rollout_id, bytes) = row?;
        let spans = pack::decode(&bytes).ok_or_else(|| bad_pack(&rollout_id))?;
        for span in spans {
            snap.spans.push((rollout_id.clone(), span_doc(span.doc)?));
        }
    }
    let mut q = conn.prepare(&format!(
        "SELECT s.rollout_id, s.doc FROM rollouts r JOIN spans s ON s.rollout_id = r.rollout_id \
         WHERE r.status IN {live} ORDER BY s.id"
    ))?;
    let rows = q.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, span_doc(&r.get::<_, String>(1)?)?))
    })?;
    for row in rows {
        snap.spans.push(row?);
    }
    let mut q = conn.prepare(&format!(
        "SELECT q.rollout_id, q.value FROM rollouts r JOIN sequences q \
         ON q.rollout_id = r.rollout_id WHERE r.status IN {live}"
    ))?;
    for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))? {
        snap.sequences.push(row?);
    }
    let mut q = conn.prepare("SELECT doc FROM workers ORDER BY rowid")?;
    for row in q.query_map([], |r| r.get::<_, String>(0))? {
        snap.workers.push(doc::<Worker>(&row?, "worker")?);
    }
    // The most recent resources versions and the latest (an update keeps its row's place).
    let mut q = conn.prepare(
        "SELECT doc FROM resources WHERE rowid IN ( \
             SELECT rowid FROM resources ORDER BY rowid DESC LIMIT ?1) \
         OR resources_id = (SELECT value FROM kv WHERE key = 'latest_resources') \
         ORDER BY rowid",
    )?;
    for row in q.query_map([RESOURCES_AT_START], |r| r.get::<_, String>(0))? {
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
    let mut q = conn.prepare("SELECT rollout_id FROM queue ORDER BY pos")?;
    for row in q.query_map([], |r| r.get(0))? {
        snap.queue.push(row?);
    }
    let mut q = conn.prepare("SELECT key, value FROM kv WHERE key LIKE 'meta:%' ORDER BY key")?;
    for row in q.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (key, value) = row?;
        let key = key
            .strip_prefix(super::writer::META_PREFIX)
            .unwrap_or(&key)
            .to_owned();
        snap.meta.push((key, value));
    }
    snap.counts = Some(schema::read_counts(conn)?);
    Ok(snap)
}

/// The [`History`] of a store file.
pub(super) struct Reader {
    path: PathBuf,
    pool: Mutex<Pool>,
    freed: Condvar,
    /// The connection of the read the core makes while it holds its lock (is a new id
    /// unused?): never waits behind a long query of the pool.
    lookup: Mutex<Option<Connection>>,
    durable: Arc<AtomicU64>,
}

/// Open connections not in use, and how many are open in all.
struct Pool {
    idle: Vec<Connection>,
    open: usize,
}

impl Reader {
    pub(super) fn new(path: PathBuf, durable: Arc<AtomicU64>) -> Self {
        Self {
            path,
            pool: Mutex::new(Pool {
                idle: Vec::new(),
                open: 0,
            }),
            freed: Condvar::new(),
            lookup: Mutex::new(None),
            durable,
        }
    }

    /// Runs `f` on a read connection: an idle one, a new one while fewer than [`POOL`] are
    /// open, or else the next one freed.
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let conn = {
            let mut pool = self.pool.lock();
            loop {
                if let Some(conn) = pool.idle.pop() {
                    break conn;
                }
                if pool.open < POOL {
                    pool.open += 1;
                    drop(pool);
                    match self.open() {
                        Ok(conn) => break conn,
                        Err(e) => {
                            self.pool.lock().open -= 1;
                            self.freed.notify_one();
                            return Err(e);
                        }
                    }
                }
                self.freed.wait(&mut pool);
            }
        };
        let out =
            f(&conn).map_err(|e| StorageError(format!("cannot read {}: {e}", self.path.display())));
        self.pool.lock().idle.push(conn);
        self.freed.notify_one();
        out
    }

    /// Runs `f` on the lookup connection.
    fn with_lookup<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let mut lookup = self.lookup.lock();
        let conn = match &mut *lookup {
            Some(conn) => conn,
            empty => empty.insert(self.open()?),
        };
        f(conn).map_err(|e| StorageError(format!("cannot read {}: {e}", self.path.display())))
    }

    fn open(&self) -> Result<Connection, StorageError> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| {
            conn.pragma_update(None, "query_only", true)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            Ok(conn)
        })
        .map_err(|e| {
            StorageError(format!(
                "cannot open {} for reading: {e}",
                self.path.display()
            ))
        })?;
        Ok(conn)
    }
}

fn attempts_of(conn: &Connection, rollout_id: &str) -> rusqlite::Result<Vec<Attempt>> {
    let mut q =
        conn.prepare_cached("SELECT doc FROM attempts WHERE rollout_id = ?1 ORDER BY sequence_id")?;
    let rows = q.query_map([rollout_id], |r| r.get::<_, String>(0))?;
    rows.map(|row| doc::<Attempt>(&row?, "attempt")).collect()
}

fn rollout_of(conn: &Connection, rollout_id: &str) -> rusqlite::Result<Option<Rollout>> {
    let text: Option<String> = conn
        .prepare_cached("SELECT doc FROM rollouts WHERE rollout_id = ?1")?
        .query_row([rollout_id], |r| r.get(0))
        .optional()?;
    text.map(|t| doc::<Rollout>(&t, "rollout")).transpose()
}

fn sequence_of(conn: &Connection, rollout_id: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT value FROM sequences WHERE rollout_id = ?1")?
        .query_row([rollout_id], |r| r.get(0))
        .optional()
}

/// A rollout's spans in arrival order, of one attempt if given, as (sequence id, stored
/// text): those of its pack, then its rows. Read in one transaction, so that a pack written
/// in place of the rows meanwhile is seen either way but never as neither.
fn span_rows(
    conn: &Connection,
    rollout_id: &str,
    attempt_id: Option<&str>,
) -> rusqlite::Result<Vec<(i64, String)>> {
    let tx = conn.unchecked_transaction()?;
    let mut out = Vec::new();
    let packed: Option<Vec<u8>> = tx
        .prepare_cached("SELECT packed FROM span_packs WHERE rollout_id = ?1")?
        .query_row([rollout_id], |r| r.get(0))
        .optional()?;
    if let Some(bytes) = packed {
        let spans = pack::decode(&bytes).ok_or_else(|| bad_pack(rollout_id))?;
        out.extend(
            spans
                .into_iter()
                .filter(|s| attempt_id.is_none_or(|a| s.attempt_id == a))
                .map(|s| (s.sequence_id, s.doc.to_owned())),
        );
    }
    let mut q = tx.prepare_cached(
        "SELECT sequence_id, doc FROM spans WHERE rollout_id = ?1 \
         AND (?2 IS NULL OR attempt_id = ?2) ORDER BY id",
    )?;
    for row in q.query_map(params![rollout_id, attempt_id], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })? {
        out.push(row?);
    }
    drop(q);
    tx.commit()?;
    Ok(out)
}

fn bad_pack(rollout_id: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        0,
        rusqlite::types::Type::Blob,
        format!("the span pack of {rollout_id} is damaged").into(),
    )
}

fn spans_of(
    conn: &Connection,
    rollout_id: &str,
    attempt_id: Option<&str>,
) -> rusqlite::Result<Vec<StoredSpan>> {
    span_rows(conn, rollout_id, attempt_id)?
        .iter()
        .map(|(_, text)| span_doc(text))
        .collect()
}

/// A JSON array of strings, bound as one parameter and read with `json_each`.
fn json_list<'a>(items: impl Iterator<Item = &'a str>) -> Value {
    Value::Text(serde_json::to_string(&items.collect::<Vec<_>>()).expect("strings serialize"))
}

impl History for Reader {
    fn durable_batches(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    fn rollout_exists(&self, rollout_id: &str) -> Result<bool, StorageError> {
        self.with_lookup(|conn| {
            conn.prepare_cached("SELECT 1 FROM rollouts WHERE rollout_id = ?1")?
                .exists([rollout_id])
        })
    }

    fn resources_exist(&self, resources_id: &str) -> Result<bool, StorageError> {
        self.with_lookup(|conn| {
            conn.prepare_cached("SELECT 1 FROM resources WHERE resources_id = ?1")?
                .exists([resources_id])
        })
    }

    fn resources(&self, resources_id: &str) -> Result<Option<ResourcesUpdate>, StorageError> {
        self.with(|conn| {
            let text: Option<String> = conn
                .prepare_cached("SELECT doc FROM resources WHERE resources_id = ?1")?
                .query_row([resources_id], |r| r.get(0))
                .optional()?;
            text.map(|t| doc(&t, "resources")).transpose()
        })
    }

    fn all_resources(&self) -> Result<Vec<ResourcesUpdate>, StorageError> {
        self.with(|conn| {
            let mut q = conn.prepare_cached("SELECT doc FROM resources ORDER BY rowid")?;
            let rows = q.query_map([], |r| r.get::<_, String>(0))?;
            rows.map(|row| doc(&row?, "resources")).collect()
        })
    }

    fn rollout_rows(&self, rollout_id: &str) -> Result<Option<RolloutRows>, StorageError> {
        self.with(|conn| {
            let Some(rollout) = rollout_of(conn, rollout_id)? else {
                return Ok(None);
            };
            Ok(Some(RolloutRows {
                rollout,
                attempts: attempts_of(conn, rollout_id)?,
                spans: spans_of(conn, rollout_id, None)?,
                sequence: sequence_of(conn, rollout_id)?,
            }))
        })
    }

    fn sequence(&self, rollout_id: &str) -> Result<Option<i64>, StorageError> {
        self.with(|conn| sequence_of(conn, rollout_id))
    }

    fn rollout_view(&self, rollout_id: &str) -> Result<Option<RolloutView>, StorageError> {
        let sql = format!("{ROLLOUT_VIEWS} WHERE r.rollout_id = ?1");
        self.with(|conn| {
            let views = read_views(conn, &sql, &[Value::Text(rollout_id.to_owned())])?;
            Ok(views.into_iter().next())
        })
    }

    fn attempts(&self, rollout_id: &str) -> Result<Vec<Attempt>, StorageError> {
        self.with(|conn| attempts_of(conn, rollout_id))
    }

    fn spans(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
    ) -> Result<Vec<StoredSpan>, StorageError> {
        self.with(|conn| spans_of(conn, rollout_id, attempt_id))
    }

    fn span_texts(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
        descending: bool,
    ) -> Result<Vec<String>, StorageError> {
        self.with(|conn| {
            let mut spans = span_rows(conn, rollout_id, attempt_id)?;
            // Stable: equal sequence ids keep their arrival order either way.
            if descending {
                spans.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
            } else {
                spans.sort_by_key(|(seq, _)| *seq);
            }
            Ok(spans.into_iter().map(|(_, text)| text).collect())
        })
    }

    fn rollouts(&self, filter: RolloutFilter<'_>) -> Result<Vec<RolloutView>, StorageError> {
        let (filter_sql, args) = rollout_filter_sql(filter);
        let sql = format!("{ROLLOUT_VIEWS} {filter_sql} ORDER BY r.rowid");
        self.with(|conn| read_views(conn, &sql, &args))
    }

    fn rollouts_window(
        &self,
        filter: RolloutFilter<'_>,
        order: RolloutOrder,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RolloutView>, usize), StorageError> {
        let (filter_sql, mut args) = rollout_filter_sql(filter);
        let count_sql = format!("SELECT count(*) FROM rollouts r {filter_sql}");
        let n = args.len();
        let order_sql = sql::rollout_order::<Sqlite>(order);
        // The page's row ids first, from the indexes alone; then the documents of those
        // rows only (an ORDER BY over the documents would read every match into a sorter).
        let sql = format!(
            "SELECT r.doc, ({LATEST_ATTEMPT}) FROM \
             (SELECT r.rowid AS id FROM rollouts r {filter_sql} ORDER BY {order_sql} \
              LIMIT ?{} OFFSET ?{}) p \
             CROSS JOIN rollouts r ON r.rowid = p.id ORDER BY {order_sql}",
            n + 1,
            n + 2
        );
        self.with(|conn| {
            // The count and the page from one snapshot.
            let tx = conn.unchecked_transaction()?;
            let total: i64 = tx
                .prepare_cached(&count_sql)?
                .query_row(rusqlite::params_from_iter(args.iter()), |r| r.get(0))?;
            args.push(Value::Integer(i64::try_from(limit).unwrap_or(i64::MAX)));
            args.push(Value::Integer(i64::try_from(offset).unwrap_or(i64::MAX)));
            let views = read_views(&tx, &sql, &args)?;
            tx.commit()?;
            Ok((views, usize::try_from(total).unwrap_or(0)))
        })
    }
}

/// The latest attempt of the rollout `r` (a macro, for `concat!`).
macro_rules! latest_attempt {
    () => {
        "SELECT a.doc FROM attempts a WHERE a.rollout_id = r.rollout_id \
         ORDER BY a.sequence_id DESC LIMIT 1"
    };
}
const LATEST_ATTEMPT: &str = latest_attempt!();

/// Rollouts with their latest attempts; a filter and an order follow.
const ROLLOUT_VIEWS: &str = concat!("SELECT r.doc, (", latest_attempt!(), ") FROM rollouts r");

/// The `WHERE` clause of a rollout filter and its parameters, in order.
fn rollout_filter_sql(filter: RolloutFilter<'_>) -> (String, Vec<Value>) {
    let (clause, args) = sql::rollout_filter::<Sqlite>(filter);
    let args = args
        .into_iter()
        .map(|arg| match arg {
            SqlArg::Text(t) => Value::Text(t),
            SqlArg::Real(x) => Value::Real(x),
            SqlArg::Texts(list) => json_list(list.iter().map(String::as_str)),
        })
        .collect();
    (clause, args)
}

fn read_views(conn: &Connection, sql: &str, args: &[Value]) -> rusqlite::Result<Vec<RolloutView>> {
    let mut q = conn.prepare_cached(sql)?;
    let rows = q.query_map(rusqlite::params_from_iter(args.iter()), |r| {
        let rollout = doc::<Rollout>(r.get_ref(0)?.as_str()?, "rollout")?;
        let attempt = match r.get_ref(1)?.as_str_or_null()? {
            Some(t) => Some(doc::<Attempt>(t, "attempt")?),
            None => None,
        };
        Ok(RolloutView { rollout, attempt })
    })?;
    rows.collect()
}
