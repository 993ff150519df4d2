//! One change as one transaction: lock and read the rows the change names ([`Need`]),
//! hand them to the core, write what it decided, commit. Rows are locked in one order
//! (queue or watched rollouts skipping held ones, then named rollouts by id, sequence
//! counters by id, workers by id, resources by id), so transactions never deadlock on
//! each other; a new id that another process took meanwhile (a unique violation) or a
//! serialization failure runs the whole transaction again on fresh rows.

use std::collections::HashSet;

use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::{FINISHED_CHANNEL, describe};
use crate::model::{Attempt, ResourcesUpdate, Rollout, RolloutMode, StoredSpan, Worker};
use crate::persist::{Change, Decide, Decision, Need, Snapshot, StorageError};

/// Runs of one transaction before a conflict is reported.
const TRIES: usize = 8;

/// Settings ([`Change::Meta`]) are `agl_meta` rows under this prefix.
pub(super) const META_PREFIX: &str = "meta:";

/// What went wrong in one run of a transaction.
enum Failed {
    /// Worth running again.
    Conflict(String),
    Fatal(StorageError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = e.code().is_some_and(|c| {
            *c == SqlState::UNIQUE_VIOLATION
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::T_R_DEADLOCK_DETECTED
        });
        if retry {
            Failed::Conflict(describe(&e))
        } else {
            Failed::Fatal(StorageError(format!("database error: {}", describe(&e))))
        }
    }
}

impl From<StorageError> for Failed {
    fn from(e: StorageError) -> Self {
        Failed::Fatal(e)
    }
}

fn bad_doc(what: &str) -> impl Fn(serde_json::Error) -> Failed + '_ {
    move |e| Failed::Fatal(StorageError(format!("bad {what} document: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("rows serialize")
}

pub(super) async fn transact(
    pool: &Pool,
    need: &Need,
    decide: &mut Decide<'_>,
) -> Result<bool, StorageError> {
    let mut last = String::new();
    for _ in 0..TRIES {
        let mut client = super::read::client(pool).await?;
        let tx = client
            .transaction()
            .await
            .map_err(super::pg_err("cannot begin a transaction"))?;
        match run(&tx, need, decide).await {
            Ok(false) => {
                // Nothing to write: the rollback only releases the locks.
                let _ = tx.rollback().await;
                return Ok(false);
            }
            Ok(true) => match tx.commit().await {
                Ok(()) => return Ok(true),
                Err(e) => match Failed::from(e) {
                    Failed::Conflict(why) => last = why,
                    Failed::Fatal(e) => return Err(e),
                },
            },
            Err(Failed::Conflict(why)) => {
                let _ = tx.rollback().await;
                last = why;
            }
            Err(Failed::Fatal(e)) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
    }
    Err(StorageError(format!(
        "the change kept conflicting with concurrent ones: {last}"
    )))
}

/// One run: read, decide, write. False when the core rolled back.
async fn run(tx: &Transaction<'_>, need: &Need, decide: &mut Decide<'_>) -> Result<bool, Failed> {
    let loaded = load(tx, need).await?;
    let Some(decision) = decide(loaded.rows) else {
        return Ok(false);
    };
    write(tx, &loaded.rollouts, &loaded.resources, &decision).await?;
    Ok(true)
}

struct Loaded {
    rows: Snapshot,
    /// Rollouts and resources versions that exist (others in the decision are new rows).
    rollouts: HashSet<String>,
    resources: HashSet<String>,
}

fn sorted(ids: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Reads rollouts (`doc`, `queue_pos`) into `into`, skipping ids read already.
fn push_rollouts(
    into: &mut Vec<(Rollout, Option<i64>)>,
    rows: Vec<tokio_postgres::Row>,
) -> Result<(), Failed> {
    for row in rows {
        let rollout: Rollout =
            serde_json::from_str(row.get::<_, &str>(0)).map_err(bad_doc("rollout"))?;
        if !into.iter().any(|(r, _)| r.rollout_id == rollout.rollout_id) {
            into.push((rollout, row.get(1)));
        }
    }
    Ok(())
}

/// Locks and reads what `need` names: first the rollouts (the locks that order everything
/// else), then in one pipelined round trip their attempts, the sequence counters, the spans
/// already stored and the resources, then the workers of the attempts.
async fn load(tx: &Transaction<'_>, need: &Need) -> Result<Loaded, Failed> {
    let mut rows = Snapshot::default();
    // (rollout, queue position) of every rollout read.
    let mut rollouts: Vec<(Rollout, Option<i64>)> = Vec::new();
    if need.queue > 0 {
        let limit = i64::try_from(need.queue).unwrap_or(i64::MAX);
        let q = tx
            .prepare_cached(
                "SELECT doc, queue_pos FROM agl_rollouts WHERE queue_pos IS NOT NULL \
                 ORDER BY queue_pos LIMIT $1 FOR UPDATE SKIP LOCKED",
            )
            .await?;
        push_rollouts(&mut rollouts, tx.query(&q, &[&limit]).await?)?;
    }
    if let Some(now) = need.watched {
        // Only rollouts whose latest attempt is past a limit: a superset of what the
        // watchdog (State::scan) flags, which still decides; rollouts without limits are
        // never read.
        let q = tx
            .prepare_cached(
                "SELECT r.doc, r.queue_pos FROM agl_rollouts r \
                 JOIN agl_attempts a ON a.rollout_id = r.rollout_id AND a.sequence_id = \
                   (SELECT max(sequence_id) FROM agl_attempts WHERE rollout_id = r.rollout_id) \
                 WHERE r.status IN ('preparing', 'running') \
                 AND (r.timeout_s IS NOT NULL OR r.unresponsive_s IS NOT NULL) \
                 AND ($1 - a.start_time > r.timeout_s OR $1 - a.alive_time > r.unresponsive_s) \
                 ORDER BY r.rollout_id FOR UPDATE OF r SKIP LOCKED",
            )
            .await?;
        push_rollouts(&mut rollouts, tx.query(&q, &[&now]).await?)?;
    }
    let named = sorted(need.rollouts.iter().cloned());
    if !named.is_empty() {
        let q = tx
            .prepare_cached(
                "SELECT doc, queue_pos FROM agl_rollouts WHERE rollout_id = ANY($1) \
                 ORDER BY rollout_id FOR UPDATE",
            )
            .await?;
        push_rollouts(&mut rollouts, tx.query(&q, &[&named]).await?)?;
    }
    let ids: Vec<String> = rollouts.iter().map(|(r, _)| r.rollout_id.clone()).collect();
    let (mut span_r, mut span_a, mut span_s) = (Vec::new(), Vec::new(), Vec::new());
    for (rollout_id, attempt_id, span_id) in &need.spans {
        span_r.push(rollout_id.as_str());
        span_a.push(attempt_id.as_str());
        span_s.push(span_id.as_str());
    }
    let wanted = sorted(need.resources.iter().cloned());

    // Prepared first (cached per connection), then sent together: the answers come back in
    // one round trip.
    let q_attempts = tx
        .prepare_cached("SELECT doc FROM agl_attempts WHERE rollout_id = ANY($1)")
        .await?;
    // An upsert that locks the counter row and returns it, creating it at 0 when no id was
    // issued yet (two first issues must not both start from nothing).
    let q_sequences = tx
        .prepare_cached(
            "INSERT INTO agl_sequences (rollout_id, value) \
             SELECT id, 0 FROM unnest($1::text[]) AS u(id) ORDER BY id \
             ON CONFLICT (rollout_id) DO UPDATE SET value = agl_sequences.value \
             RETURNING rollout_id, value",
        )
        .await?;
    let q_spans = tx
        .prepare_cached(
            "SELECT s.rollout_id, s.doc FROM agl_spans s \
             JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(r, a, s) \
             ON s.rollout_id = k.r AND s.attempt_id = k.a AND s.span_id = k.s \
             ORDER BY s.id",
        )
        .await?;
    let q_resources = tx
        .prepare_cached(
            "SELECT doc FROM agl_resources WHERE resources_id = ANY($1) \
             ORDER BY resources_id FOR UPDATE",
        )
        .await?;
    let q_latest = tx
        .prepare_cached("SELECT value FROM agl_meta WHERE key = 'latest_resources'")
        .await?;
    let none = Vec::new;
    let (attempt_rows, sequence_rows, span_rows, resource_rows, latest_rows) = futures::try_join!(
        async {
            if ids.is_empty() {
                Ok(none())
            } else {
                tx.query(&q_attempts, &[&ids]).await
            }
        },
        async {
            if need.sequences && !named.is_empty() {
                tx.query(&q_sequences, &[&named]).await
            } else {
                Ok(none())
            }
        },
        async {
            if span_r.is_empty() {
                Ok(none())
            } else {
                tx.query(&q_spans, &[&span_r, &span_a, &span_s]).await
            }
        },
        async {
            if wanted.is_empty() {
                Ok(none())
            } else {
                tx.query(&q_resources, &[&wanted]).await
            }
        },
        async {
            if need.latest_resources {
                tx.query(&q_latest, &[]).await
            } else {
                Ok(none())
            }
        },
    )?;
    for row in attempt_rows {
        rows.attempts.push(
            serde_json::from_str::<Attempt>(row.get::<_, &str>(0)).map_err(bad_doc("attempt"))?,
        );
    }
    for row in sequence_rows {
        rows.sequences.push((row.get(0), row.get(1)));
    }
    for row in span_rows {
        let span = StoredSpan::from_json(row.get::<_, &str>(1))
            .map_err(|e| Failed::Fatal(StorageError(format!("bad span document: {e}"))))?;
        rows.spans.push((row.get(0), span));
    }
    let mut resources = HashSet::new();
    for row in resource_rows {
        let r: ResourcesUpdate =
            serde_json::from_str(row.get::<_, &str>(0)).map_err(bad_doc("resources"))?;
        resources.insert(r.resources_id.clone());
        rows.resources.push(r);
    }
    rows.latest_resources = latest_rows.first().map(|row| row.get(0));
    if !need.meta.is_empty() {
        // Locked, and created empty (read as absent) when missing, so that two changes of
        // a setting never both start from nothing.
        let keys = sorted(need.meta.iter().map(|k| format!("{META_PREFIX}{k}")));
        let q = tx
            .prepare_cached(
                "INSERT INTO agl_meta (key, value) \
                 SELECT k, '' FROM unnest($1::text[]) AS u(k) ORDER BY k \
                 ON CONFLICT (key) DO UPDATE SET value = agl_meta.value \
                 RETURNING key, value",
            )
            .await?;
        for row in tx.query(&q, &[&keys]).await? {
            let (key, value): (String, String) = (row.get(0), row.get(1));
            if !value.is_empty() {
                let key = key.strip_prefix(META_PREFIX).unwrap_or(&key).to_owned();
                rows.meta.push((key, value));
            }
        }
    }

    // Workers: those named, and those of the attempts read when the change may move them.
    let from_attempts = need
        .attempt_workers
        .then(|| rows.attempts.iter().filter_map(|a| a.worker_id.clone()));
    let workers = sorted(
        need.workers
            .iter()
            .cloned()
            .chain(from_attempts.into_iter().flatten())
            .filter(|w| !w.is_empty()),
    );
    if !workers.is_empty() {
        let q = tx
            .prepare_cached(
                "SELECT doc FROM agl_workers WHERE worker_id = ANY($1) \
                 ORDER BY worker_id FOR UPDATE",
            )
            .await?;
        for row in tx.query(&q, &[&workers]).await? {
            rows.workers.push(
                serde_json::from_str::<Worker>(row.get::<_, &str>(0)).map_err(bad_doc("worker"))?,
            );
        }
    }
    // The queue in its order: what a claim pops, and which rollouts are queued at all.
    let mut queued: Vec<(i64, String)> = rollouts
        .iter()
        .filter_map(|(r, pos)| pos.map(|p| (p, r.rollout_id.clone())))
        .collect();
    queued.sort_unstable();
    rows.queue = queued.into_iter().map(|(_, id)| id).collect();
    let existing = rollouts.iter().map(|(r, _)| r.rollout_id.clone()).collect();
    rows.rollouts = rollouts.into_iter().map(|(r, _)| r).collect();
    Ok(Loaded {
        rows,
        rollouts: existing,
        resources,
    })
}

/// Executes a prepared (cached) statement.
async fn exec(tx: &Transaction<'_>, sql: &str, args: &[&(dyn ToSql + Sync)]) -> Result<(), Failed> {
    let q = tx.prepare_cached(sql).await?;
    tx.execute(&q, args).await?;
    Ok(())
}

/// Statements sent together: prepared one by one (cached per connection), then executed
/// as one pipeline, in order, so that a decision's writes cost one round trip.
#[derive(Default)]
struct Pipeline<'a> {
    statements: Vec<(&'static str, Vec<&'a (dyn ToSql + Sync)>)>,
}

impl<'a> Pipeline<'a> {
    fn push(&mut self, sql: &'static str, args: Vec<&'a (dyn ToSql + Sync)>) {
        self.statements.push((sql, args));
    }

    async fn run(self, tx: &Transaction<'_>) -> Result<(), Failed> {
        let mut prepared = Vec::with_capacity(self.statements.len());
        for (sql, _) in &self.statements {
            prepared.push(tx.prepare_cached(sql).await?);
        }
        // Each execute sends its request when first polled, and the join polls them in
        // order: the server runs them in this order.
        futures::future::try_join_all(
            prepared
                .iter()
                .zip(&self.statements)
                .map(|(q, (_, args))| tx.execute(q, args)),
        )
        .await?;
        Ok(())
    }
}

/// Writes a decision's rows: each kind of row as one statement over arrays (`unnest`), in
/// the order the core's journal lists them (rollouts before the attempts, spans and queue
/// positions that refer to them), all sent as one pipeline.
async fn write(
    tx: &Transaction<'_>,
    rollouts: &HashSet<String>,
    resources: &HashSet<String>,
    decision: &Decision,
) -> Result<(), Failed> {
    let mut new_rollouts = Columns::default();
    let mut old_rollouts = Columns::default();
    let mut attempts = Columns::default();
    let mut spans = Columns::default();
    let mut workers = Columns::default();
    let mut sequences = Columns::default();
    let mut deleted: Vec<&str> = Vec::new();
    for change in &decision.changes {
        match change {
            Change::Rollout(r) => {
                // A new id (not read under lock) is inserted: a unique violation (another
                // process took it meanwhile) runs the transaction again with a fresh one.
                let rows = if rollouts.contains(&r.rollout_id) {
                    &mut old_rollouts
                } else {
                    &mut new_rollouts
                };
                rows.text[0].push(r.rollout_id.clone());
                rows.text[1].push(r.status.as_str().to_owned());
                rows.text[2].push(to_json(r));
                rows.text[3].push(r.mode.map_or("", RolloutMode::as_str).to_owned());
                rows.float[0].push(r.config.timeout_seconds);
                rows.float[1].push(r.config.unresponsive_seconds);
                rows.float[2].push(Some(r.start_time));
                rows.float[3].push(r.end_time);
            }
            Change::Attempt(a) => {
                attempts.text[0].push(a.rollout_id.clone());
                attempts.int.push(a.sequence_id);
                attempts.text[1].push(to_json(a));
                attempts.float[0].push(Some(a.start_time));
                attempts.float[1].push(Some(a.last_heartbeat_time.unwrap_or(a.start_time)));
            }
            Change::Span { rollout_id, span } => {
                spans.text[0].push(rollout_id.clone());
                spans.text[1].push(span.attempt_id().into_owned());
                spans.text[2].push(span.span_id().into_owned());
                spans.int.push(span.sequence_id());
                spans.text[3].push(span.to_json());
            }
            Change::Worker(w) => {
                workers.text[0].push(w.worker_id.clone());
                workers.text[1].push(to_json(w));
            }
            Change::Sequence { rollout_id, value } => {
                sequences.text[0].push(rollout_id.clone());
                sequences.int.push(*value);
            }
            // Rare: one statement each, before the rest.
            Change::Resources(r) => {
                let sql = if resources.contains(&r.resources_id) {
                    "UPDATE agl_resources SET doc = $2 WHERE resources_id = $1"
                } else {
                    "INSERT INTO agl_resources (resources_id, doc) VALUES ($1, $2)"
                };
                exec(tx, sql, &[&r.resources_id, &to_json(r)]).await?;
            }
            Change::LatestResources(id) => {
                exec(
                    tx,
                    "INSERT INTO agl_meta (key, value) VALUES ('latest_resources', $1) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[id],
                )
                .await?;
            }
            // Queue operations are written after the rows, in their order (below).
            Change::QueuePush(_) | Change::QueuePop(_) => {}
            // Packs are for a store that keeps rollouts in memory and drops them.
            Change::Pack { .. } => {}
            Change::DeleteRollout(id) => deleted.push(id),
            // Rare: one statement each. Cleared is empty (the row stays, as the lock made it).
            Change::Meta { key, value } => {
                exec(
                    tx,
                    "INSERT INTO agl_meta (key, value) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[
                        &format!("{META_PREFIX}{key}"),
                        &value.clone().unwrap_or_default(),
                    ],
                )
                .await?;
            }
            // The totals are kept as changes per connection (below), not as one row every
            // transaction would queue behind.
            Change::Counts(_) => {}
        }
    }
    let queue = queue_runs(&decision.changes);
    let d = &decision.counts;
    let mut p = Pipeline::default();
    if !new_rollouts.is_empty() {
        p.push(
            "INSERT INTO agl_rollouts (rollout_id, status, doc, timeout_s, unresponsive_s, \
             mode, start_time, end_time) \
             SELECT id, status, doc, t, u, NULLIF(mode, ''), s, e \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
             $6::text[], $7::float8[], $8::float8[]) AS v(id, status, doc, t, u, mode, s, e)",
            rollout_args(&new_rollouts),
        );
    }
    if !old_rollouts.is_empty() {
        p.push(
            "UPDATE agl_rollouts r SET status = v.status, doc = v.doc, timeout_s = v.t, \
             unresponsive_s = v.u, mode = NULLIF(v.mode, ''), start_time = v.s, \
             end_time = v.e \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::float8[], \
             $6::text[], $7::float8[], $8::float8[]) \
             AS v(id, status, doc, t, u, mode, s, e) WHERE r.rollout_id = v.id",
            rollout_args(&old_rollouts),
        );
    }
    if !attempts.is_empty() {
        let [ids, docs, ..] = &attempts.text;
        let [starts, alive, ..] = &attempts.float;
        p.push(
            "INSERT INTO agl_attempts (rollout_id, sequence_id, doc, start_time, alive_time) \
             SELECT * FROM unnest($1::text[], $2::int8[], $3::text[], $4::float8[], $5::float8[]) \
             ON CONFLICT (rollout_id, sequence_id) DO UPDATE SET doc = EXCLUDED.doc, \
             start_time = EXCLUDED.start_time, alive_time = EXCLUDED.alive_time",
            vec![ids, &attempts.int, docs, starts, alive],
        );
    }
    if !workers.is_empty() {
        let [ids, docs, ..] = &workers.text;
        p.push(
            "INSERT INTO agl_workers (worker_id, doc) \
             SELECT * FROM unnest($1::text[], $2::text[]) \
             ON CONFLICT (worker_id) DO UPDATE SET doc = EXCLUDED.doc",
            vec![ids, docs],
        );
    }
    if !sequences.is_empty() {
        p.push(
            "INSERT INTO agl_sequences (rollout_id, value) \
             SELECT * FROM unnest($1::text[], $2::int8[]) ON CONFLICT (rollout_id) \
             DO UPDATE SET value = GREATEST(agl_sequences.value, EXCLUDED.value)",
            vec![&sequences.text[0], &sequences.int],
        );
    }
    if !spans.is_empty() {
        let [rollout_ids, attempt_ids, span_ids, docs] = &spans.text;
        p.push(
            "INSERT INTO agl_spans (rollout_id, attempt_id, span_id, sequence_id, doc) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[]) \
             ON CONFLICT (rollout_id, attempt_id, span_id) DO NOTHING",
            vec![rollout_ids, attempt_ids, span_ids, &spans.int, docs],
        );
    }
    for (push, ids) in &queue {
        let sql = if *push {
            // Positions taken from the queue's sequence in the order pushed.
            "UPDATE agl_rollouts r SET queue_pos = v.pos \
             FROM (SELECT id, nextval('agl_queue_pos') AS pos FROM ( \
                   SELECT id FROM unnest($1::text[]) WITH ORDINALITY AS u(id, n) ORDER BY n \
                   ) AS o) AS v \
             WHERE r.rollout_id = v.id AND r.queue_pos IS NULL"
        } else {
            "UPDATE agl_rollouts SET queue_pos = NULL WHERE rollout_id = ANY($1)"
        };
        p.push(sql, vec![ids]);
    }
    if !deleted.is_empty() {
        // The state read for the change holds no spans of the rollouts it deleted: the spans
        // taken off the totals are those this statement removes.
        p.push(
            "WITH s AS (DELETE FROM agl_spans WHERE rollout_id = ANY($1) \
                        RETURNING octet_length(doc) AS n), \
                  a AS (DELETE FROM agl_attempts WHERE rollout_id = ANY($1)), \
                  q AS (DELETE FROM agl_sequences WHERE rollout_id = ANY($1)), \
                  r AS (DELETE FROM agl_rollouts WHERE rollout_id = ANY($1)) \
             INSERT INTO agl_counts (slot, spans, span_bytes) \
             SELECT pg_backend_pid(), -count(*), -coalesce(sum(n), 0) FROM s \
             ON CONFLICT (slot) DO UPDATE SET spans = agl_counts.spans + EXCLUDED.spans, \
             span_bytes = agl_counts.span_bytes + EXCLUDED.span_bytes",
            vec![&deleted],
        );
    }
    // The totals are kept as changes per server connection (one row each): no row that
    // every transaction would queue behind.
    if !d.is_zero() {
        let (r, a) = (&d.rollouts, &d.attempts);
        p.push(
            ADD_COUNTS,
            vec![
                &r[0],
                &r[1],
                &r[2],
                &r[3],
                &r[4],
                &r[5],
                &r[6],
                &a[0],
                &a[1],
                &a[2],
                &a[3],
                &a[4],
                &a[5],
                &d.spans,
                &d.span_bytes,
                &d.resources,
            ],
        );
    }
    for id in &decision.finished {
        p.push("SELECT pg_notify($1, $2)", vec![&FINISHED_CHANNEL, id]);
    }
    p.run(tx).await
}

/// Queue operations in their order, as runs of pushes or of pops (one statement each).
fn queue_runs(changes: &[Change]) -> Vec<(bool, Vec<&str>)> {
    let ops: Vec<(bool, &str)> = changes
        .iter()
        .filter_map(|c| match c {
            Change::QueuePush(id) => Some((true, id.as_str())),
            Change::QueuePop(id) => Some((false, id.as_str())),
            _ => None,
        })
        .collect();
    ops.chunk_by(|a, b| a.0 == b.0)
        .map(|run| (run[0].0, run.iter().map(|(_, id)| *id).collect()))
        .collect()
}

/// The parameters of the rollout statements, in their `unnest` order: id, status, document,
/// timeout, unresponsive limit, mode, start and end time.
fn rollout_args(c: &Columns) -> Vec<&(dyn ToSql + Sync)> {
    let [ids, statuses, docs, modes] = &c.text;
    let [timeouts, unresponsive, starts, ends] = &c.float;
    vec![
        ids,
        statuses,
        docs,
        timeouts,
        unresponsive,
        modes,
        starts,
        ends,
    ]
}

/// Rows of one kind, column by column, bound as arrays.
#[derive(Default)]
struct Columns {
    text: [Vec<String>; 4],
    int: Vec<i64>,
    float: [Vec<Option<f64>>; 4],
}

impl Columns {
    fn is_empty(&self) -> bool {
        self.text[0].is_empty()
    }
}

const ADD_COUNTS: &str = "INSERT INTO agl_counts \
    (slot, r0, r1, r2, r3, r4, r5, r6, a0, a1, a2, a3, a4, a5, spans, span_bytes, resources) \
    VALUES (pg_backend_pid(), $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
    ON CONFLICT (slot) DO UPDATE SET \
    r0 = agl_counts.r0 + EXCLUDED.r0, r1 = agl_counts.r1 + EXCLUDED.r1, \
    r2 = agl_counts.r2 + EXCLUDED.r2, r3 = agl_counts.r3 + EXCLUDED.r3, \
    r4 = agl_counts.r4 + EXCLUDED.r4, r5 = agl_counts.r5 + EXCLUDED.r5, \
    r6 = agl_counts.r6 + EXCLUDED.r6, a0 = agl_counts.a0 + EXCLUDED.a0, \
    a1 = agl_counts.a1 + EXCLUDED.a1, a2 = agl_counts.a2 + EXCLUDED.a2, \
    a3 = agl_counts.a3 + EXCLUDED.a3, a4 = agl_counts.a4 + EXCLUDED.a4, \
    a5 = agl_counts.a5 + EXCLUDED.a5, spans = agl_counts.spans + EXCLUDED.spans, \
    span_bytes = agl_counts.span_bytes + EXCLUDED.span_bytes, \
    resources = agl_counts.resources + EXCLUDED.resources";
