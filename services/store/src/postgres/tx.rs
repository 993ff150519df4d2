//! One change as one transaction: lock and read the rows the change names ([`Need`]),
//! hand them to the core, write what it decided, commit. Rows are locked in one order
//! (queue or watched rollouts skipping held ones, then named rollouts by id, sequence
//! counters by id, workers by id, resources by id), so transactions never deadlock on
//! each other; a new id that another process took meanwhile (a unique violation) or a
//! serialization failure runs the whole transaction again on fresh rows.

use std::collections::HashSet;

use deadpool_postgres::{Pool, Transaction};
use tokio_postgres::error::SqlState;

use super::{FINISHED_CHANNEL, describe};
use crate::model::{Attempt, ResourcesUpdate, Rollout, StoredSpan, Worker};
use crate::persist::{Change, CountsDelta, Decide, Decision, Need, Snapshot, StorageError};

/// Runs of one transaction before a conflict is reported.
const TRIES: usize = 8;

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

/// Locks and reads what `need` names.
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
        for row in tx.query(&q, &[&limit]).await? {
            let doc: &str = row.get(0);
            rollouts.push((
                serde_json::from_str(doc).map_err(bad_doc("rollout"))?,
                row.get(1),
            ));
        }
    }
    if need.watched {
        let q = tx
            .prepare_cached(
                "SELECT doc, queue_pos FROM agl_rollouts \
                 WHERE status IN ('preparing', 'running') \
                 ORDER BY rollout_id FOR UPDATE SKIP LOCKED",
            )
            .await?;
        for row in tx.query(&q, &[]).await? {
            let doc: &str = row.get(0);
            rollouts.push((
                serde_json::from_str(doc).map_err(bad_doc("rollout"))?,
                row.get(1),
            ));
        }
    }
    let named = sorted(need.rollouts.iter().cloned());
    if !named.is_empty() {
        let q = tx
            .prepare_cached(
                "SELECT doc, queue_pos FROM agl_rollouts WHERE rollout_id = ANY($1) \
                 ORDER BY rollout_id FOR UPDATE",
            )
            .await?;
        for row in tx.query(&q, &[&named]).await? {
            let doc: &str = row.get(0);
            let rollout: Rollout = serde_json::from_str(doc).map_err(bad_doc("rollout"))?;
            if !rollouts
                .iter()
                .any(|(r, _)| r.rollout_id == rollout.rollout_id)
            {
                rollouts.push((rollout, row.get(1)));
            }
        }
    }
    let ids: Vec<String> = rollouts.iter().map(|(r, _)| r.rollout_id.clone()).collect();
    if !ids.is_empty() {
        let q = tx
            .prepare_cached("SELECT doc FROM agl_attempts WHERE rollout_id = ANY($1)")
            .await?;
        for row in tx.query(&q, &[&ids]).await? {
            let doc: &str = row.get(0);
            rows.attempts
                .push(serde_json::from_str::<Attempt>(doc).map_err(bad_doc("attempt"))?);
        }
    }
    if need.sequences && !named.is_empty() {
        // A counter row for every id first, so that there is a row to lock even for an id
        // no counter was issued for yet (two first issues must not both start at 0).
        let q = tx
            .prepare_cached(
                "INSERT INTO agl_sequences (rollout_id, value) SELECT unnest($1::text[]), 0 \
                 ON CONFLICT (rollout_id) DO NOTHING",
            )
            .await?;
        tx.execute(&q, &[&named]).await?;
        let q = tx
            .prepare_cached(
                "SELECT rollout_id, value FROM agl_sequences WHERE rollout_id = ANY($1) \
                 ORDER BY rollout_id FOR UPDATE",
            )
            .await?;
        for row in tx.query(&q, &[&named]).await? {
            rows.sequences.push((row.get(0), row.get(1)));
        }
    }
    if !need.spans.is_empty() {
        let (mut r, mut a, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for (rollout_id, attempt_id, span_id) in &need.spans {
            r.push(rollout_id.as_str());
            a.push(attempt_id.as_str());
            s.push(span_id.as_str());
        }
        let q = tx
            .prepare_cached(
                "SELECT s.rollout_id, s.doc FROM agl_spans s \
                 JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(r, a, s) \
                 ON s.rollout_id = k.r AND s.attempt_id = k.a AND s.span_id = k.s \
                 ORDER BY s.id",
            )
            .await?;
        for row in tx.query(&q, &[&r, &a, &s]).await? {
            let doc: &str = row.get(1);
            let span = StoredSpan::from_json(doc)
                .map_err(|e| Failed::Fatal(StorageError(format!("bad span document: {e}"))))?;
            rows.spans.push((row.get(0), span));
        }
    }
    let workers = sorted(
        need.workers
            .iter()
            .cloned()
            .chain(rows.attempts.iter().filter_map(|a| a.worker_id.clone()))
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
            let doc: &str = row.get(0);
            rows.workers
                .push(serde_json::from_str::<Worker>(doc).map_err(bad_doc("worker"))?);
        }
    }
    let mut resources = HashSet::new();
    let wanted = sorted(need.resources.iter().cloned());
    if !wanted.is_empty() {
        let q = tx
            .prepare_cached(
                "SELECT doc FROM agl_resources WHERE resources_id = ANY($1) \
                 ORDER BY resources_id FOR UPDATE",
            )
            .await?;
        for row in tx.query(&q, &[&wanted]).await? {
            let doc: &str = row.get(0);
            let r: ResourcesUpdate = serde_json::from_str(doc).map_err(bad_doc("resources"))?;
            resources.insert(r.resources_id.clone());
            rows.resources.push(r);
        }
    }
    if need.latest_resources {
        let q = tx
            .prepare_cached("SELECT value FROM agl_meta WHERE key = 'latest_resources'")
            .await?;
        rows.latest_resources = tx.query_opt(&q, &[]).await?.map(|row| row.get(0));
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

/// New spans, column by column (bound as arrays and inserted by one `unnest`).
#[derive(Default)]
struct SpanColumns<'a> {
    rollout_ids: Vec<&'a str>,
    attempt_ids: Vec<String>,
    span_ids: Vec<String>,
    sequence_ids: Vec<i64>,
    docs: Vec<String>,
}

/// Writes a decision's rows in the order the core recorded them.
async fn write(
    tx: &Transaction<'_>,
    rollouts: &HashSet<String>,
    resources: &HashSet<String>,
    decision: &Decision,
) -> Result<(), Failed> {
    // Spans go in as one statement, after the rows they belong to.
    let mut spans = SpanColumns::default();
    for change in &decision.changes {
        match change {
            Change::Rollout(r) => {
                let sql = if rollouts.contains(&r.rollout_id) {
                    "UPDATE agl_rollouts SET status = $2, doc = $3 WHERE rollout_id = $1"
                } else {
                    // A new id: a unique violation (another process took it) runs the
                    // transaction again with a fresh one.
                    "INSERT INTO agl_rollouts (rollout_id, status, doc) VALUES ($1, $2, $3)"
                };
                let q = tx.prepare_cached(sql).await?;
                tx.execute(&q, &[&r.rollout_id, &r.status.as_str(), &to_json(r)])
                    .await?;
            }
            Change::Attempt(a) => {
                let q = tx
                    .prepare_cached(
                        "INSERT INTO agl_attempts (rollout_id, sequence_id, doc) \
                         VALUES ($1, $2, $3) ON CONFLICT (rollout_id, sequence_id) \
                         DO UPDATE SET doc = EXCLUDED.doc",
                    )
                    .await?;
                tx.execute(&q, &[&a.rollout_id, &a.sequence_id, &to_json(a)])
                    .await?;
            }
            Change::Span { rollout_id, span } => {
                spans.rollout_ids.push(rollout_id);
                spans.attempt_ids.push(span.attempt_id().into_owned());
                spans.span_ids.push(span.span_id().into_owned());
                spans.sequence_ids.push(span.sequence_id());
                spans.docs.push(span.to_json());
            }
            Change::Worker(w) => {
                let q = tx
                    .prepare_cached(
                        "INSERT INTO agl_workers (worker_id, doc) VALUES ($1, $2) \
                         ON CONFLICT (worker_id) DO UPDATE SET doc = EXCLUDED.doc",
                    )
                    .await?;
                tx.execute(&q, &[&w.worker_id, &to_json(w)]).await?;
            }
            Change::Resources(r) => {
                let sql = if resources.contains(&r.resources_id) {
                    "UPDATE agl_resources SET doc = $2 WHERE resources_id = $1"
                } else {
                    "INSERT INTO agl_resources (resources_id, doc) VALUES ($1, $2)"
                };
                let q = tx.prepare_cached(sql).await?;
                tx.execute(&q, &[&r.resources_id, &to_json(r)]).await?;
            }
            Change::LatestResources(id) => {
                let q = tx
                    .prepare_cached(
                        "INSERT INTO agl_meta (key, value) VALUES ('latest_resources', $1) \
                         ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    )
                    .await?;
                tx.execute(&q, &[id]).await?;
            }
            Change::Sequence { rollout_id, value } => {
                let q = tx
                    .prepare_cached(
                        "INSERT INTO agl_sequences (rollout_id, value) VALUES ($1, $2) \
                         ON CONFLICT (rollout_id) \
                         DO UPDATE SET value = GREATEST(agl_sequences.value, EXCLUDED.value)",
                    )
                    .await?;
                tx.execute(&q, &[rollout_id, value]).await?;
            }
            Change::QueuePush(id) => {
                let q = tx
                    .prepare_cached(
                        "UPDATE agl_rollouts SET queue_pos = nextval('agl_queue_pos') \
                         WHERE rollout_id = $1 AND queue_pos IS NULL",
                    )
                    .await?;
                tx.execute(&q, &[id]).await?;
            }
            Change::QueuePop(id) => {
                let q = tx
                    .prepare_cached(
                        "UPDATE agl_rollouts SET queue_pos = NULL WHERE rollout_id = $1",
                    )
                    .await?;
                tx.execute(&q, &[id]).await?;
            }
            // The totals are kept as changes per connection (below), not as one row every
            // transaction would queue behind.
            Change::Counts(_) => {}
        }
    }
    if !spans.rollout_ids.is_empty() {
        let q = tx
            .prepare_cached(
                "INSERT INTO agl_spans (rollout_id, attempt_id, span_id, sequence_id, doc) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[]) \
                 ON CONFLICT (rollout_id, attempt_id, span_id) DO NOTHING",
            )
            .await?;
        let SpanColumns {
            rollout_ids,
            attempt_ids,
            span_ids,
            sequence_ids,
            docs,
        } = &spans;
        tx.execute(
            &q,
            &[rollout_ids, attempt_ids, span_ids, sequence_ids, docs],
        )
        .await?;
    }
    add_counts(tx, &decision.counts).await?;
    for id in &decision.finished {
        let q = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
        tx.execute(&q, &[&FINISHED_CHANNEL, id]).await?;
    }
    Ok(())
}

/// Adds a transaction's change of the totals to its connection's row (one row per server
/// process: no two transactions ever wait for the same one).
async fn add_counts(tx: &Transaction<'_>, d: &CountsDelta) -> Result<(), Failed> {
    if d.is_zero() {
        return Ok(());
    }
    let q = tx.prepare_cached(ADD_COUNTS).await?;
    let r = &d.rollouts;
    let a = &d.attempts;
    tx.execute(
        &q,
        &[
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
    )
    .await?;
    Ok(())
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
