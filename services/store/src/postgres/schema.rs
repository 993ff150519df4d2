//! The Postgres schema and its versions. The version is a row of `agl_meta`; every process
//! applies what is missing at start under one advisory lock (so replicas that start at once
//! migrate once), and refuses a database written by a newer agl-store.
//!
//! Each row keeps its document as JSON text (as the SQLite file does) beside the columns
//! the queries select and order by, and those the watchdog's sweep needs to find the
//! attempts that may be due without reading every running rollout. The queue is a column of the rollout
//! (`queue_pos`), so that a claim and the status it implies are one row's update and
//! cannot drift apart.

use tokio_postgres::Client;

use super::pg_err;
use crate::persist::StorageError;

/// The schema version this binary writes and understands.
pub const SCHEMA_VERSION: i64 = 2;

/// The advisory lock migrations hold (any constant other programs are unlikely to pick).
const MIGRATION_LOCK: i64 = 0x6167_6c5f_7374_6f72; // "agl_stor"

const V1: &str = "
CREATE TABLE agl_rollouts (
    rollout_id text PRIMARY KEY,
    created bigserial NOT NULL,
    status text NOT NULL,
    queue_pos bigint,
    -- The watchdog's limits from the rollout's config (NULL: none).
    timeout_s double precision,
    unresponsive_s double precision,
    doc text NOT NULL
) WITH (fillfactor = 80);
CREATE INDEX agl_rollouts_created ON agl_rollouts (created);
CREATE INDEX agl_rollouts_status ON agl_rollouts (status, created);
CREATE INDEX agl_rollouts_queue ON agl_rollouts (queue_pos) WHERE queue_pos IS NOT NULL;
CREATE INDEX agl_rollouts_watched ON agl_rollouts (rollout_id)
    WHERE status IN ('preparing', 'running')
    AND (timeout_s IS NOT NULL OR unresponsive_s IS NOT NULL);
CREATE SEQUENCE agl_queue_pos;
CREATE TABLE agl_attempts (
    rollout_id text NOT NULL,
    sequence_id bigint NOT NULL,
    -- When the attempt started and last showed life (its start until then).
    start_time double precision NOT NULL,
    alive_time double precision NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (rollout_id, sequence_id)
) WITH (fillfactor = 80);
CREATE TABLE agl_spans (
    id bigserial PRIMARY KEY,
    rollout_id text NOT NULL,
    attempt_id text NOT NULL,
    span_id text NOT NULL,
    sequence_id bigint NOT NULL,
    doc text NOT NULL,
    UNIQUE (rollout_id, attempt_id, span_id)
);
CREATE INDEX agl_spans_order ON agl_spans (rollout_id, sequence_id, id);
CREATE TABLE agl_workers (
    worker_id text PRIMARY KEY,
    created bigserial NOT NULL,
    doc text NOT NULL
);
CREATE TABLE agl_resources (
    resources_id text PRIMARY KEY,
    created bigserial NOT NULL,
    doc text NOT NULL
);
CREATE TABLE agl_sequences (
    rollout_id text PRIMARY KEY,
    value bigint NOT NULL
) WITH (fillfactor = 50);
CREATE TABLE agl_counts (
    slot integer PRIMARY KEY,
    r0 bigint NOT NULL DEFAULT 0, r1 bigint NOT NULL DEFAULT 0, r2 bigint NOT NULL DEFAULT 0,
    r3 bigint NOT NULL DEFAULT 0, r4 bigint NOT NULL DEFAULT 0, r5 bigint NOT NULL DEFAULT 0,
    r6 bigint NOT NULL DEFAULT 0,
    a0 bigint NOT NULL DEFAULT 0, a1 bigint NOT NULL DEFAULT 0, a2 bigint NOT NULL DEFAULT 0,
    a3 bigint NOT NULL DEFAULT 0, a4 bigint NOT NULL DEFAULT 0, a5 bigint NOT NULL DEFAULT 0,
    spans bigint NOT NULL DEFAULT 0,
    span_bytes bigint NOT NULL DEFAULT 0,
    resources bigint NOT NULL DEFAULT 0
);
CREATE TABLE agl_watchdog (id integer PRIMARY KEY, last_scan double precision NOT NULL);
INSERT INTO agl_watchdog VALUES (1, '-infinity');
";

/// v2: rollouts carry their mode, start and end times as indexed columns, so that the
/// dashboard's filters and sorts read a page, not every document.
const V2: &str = "
ALTER TABLE agl_rollouts ADD COLUMN mode text, ADD COLUMN start_time double precision,
    ADD COLUMN end_time double precision;
UPDATE agl_rollouts SET mode = doc::json ->> 'mode',
    start_time = (doc::json ->> 'start_time')::float8,
    end_time = (doc::json ->> 'end_time')::float8;
CREATE INDEX agl_rollouts_mode ON agl_rollouts (mode, created);
CREATE INDEX agl_rollouts_start ON agl_rollouts (start_time, created);
CREATE INDEX agl_rollouts_end ON agl_rollouts (end_time, created);
";

/// Brings the database up to [`SCHEMA_VERSION`], holding the migration lock meanwhile.
pub async fn migrate(client: &mut Client, shown: &str) -> Result<(), StorageError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("cannot take the migration lock"))?;
    let result = migrate_locked(client, shown).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("cannot release the migration lock"));
    result.and(unlocked.map(|_| ()))
}

async fn migrate_locked(client: &mut Client, shown: &str) -> Result<(), StorageError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS agl_meta (key text PRIMARY KEY, value text NOT NULL)",
        )
        .await
        .map_err(pg_err("cannot create agl_meta"))?;
    let version: i64 = client
        .query_opt(
            "SELECT value FROM agl_meta WHERE key = 'schema_version'",
            &[],
        )
        .await
        .map_err(pg_err("cannot read the schema version"))?
        .map(|row| row.get::<_, String>(0))
        .map(|v| {
            v.parse()
                .map_err(|_| StorageError(format!("{shown} has schema version {v:?}")))
        })
        .transpose()?
        .unwrap_or(0);
    if version > SCHEMA_VERSION {
        return Err(StorageError(format!(
            "{shown} has schema version {version}, newer than this agl-store understands \
             ({SCHEMA_VERSION}); run a newer agl-store"
        )));
    }
    for next in version + 1..=SCHEMA_VERSION {
        let tx = client
            .transaction()
            .await
            .map_err(pg_err("cannot begin a migration"))?;
        let sql = match next {
            1 => V1,
            2 => V2,
            _ => unreachable!("a migration per version up to SCHEMA_VERSION"),
        };
        tx.batch_execute(sql).await.map_err(|e| {
            StorageError(format!(
                "cannot migrate {shown} to schema version {next}: {e}"
            ))
        })?;
        tx.execute(
            "INSERT INTO agl_meta (key, value) VALUES ('schema_version', $1) \
             ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
            &[&next.to_string()],
        )
        .await
        .map_err(pg_err("cannot record the schema version"))?;
        tx.commit()
            .await
            .map_err(pg_err("cannot commit a migration"))?;
        tracing::info!(database = shown, version = next, "database migrated");
    }
    Ok(())
}
