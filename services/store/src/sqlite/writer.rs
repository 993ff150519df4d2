//! The writer thread: it owns the one connection that writes, folds the batches queued
//! while it commits into one transaction (group commit: under load many requests share
//! one fsync, and each response still waits for the fsync that covers it), and counts the
//! batches it made durable so that the core knows which rows it may drop from memory.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

use rusqlite::{Connection, Transaction, params};
use tokio::sync::oneshot;

use super::err;
use super::schema;
use crate::model::RolloutMode;
use crate::persist::{Change, StorageError};

/// Settings ([`Change::Meta`]) are `kv` rows under this prefix.
pub(super) const META_PREFIX: &str = "meta:";

/// Most batches folded into one transaction.
const MAX_GROUP: usize = 4096;

pub(super) enum Msg {
    Commit(Vec<Change>, oneshot::Sender<Result<(), StorageError>>),
    Backup(
        std::path::PathBuf,
        oneshot::Sender<Result<(), StorageError>>,
    ),
    Close(oneshot::Sender<Result<(), StorageError>>),
}

fn to_json<T: serde::Serialize>(value: &T) -> rusqlite::Result<String> {
    serde_json::to_string(value).map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))
}

fn apply(tx: &Transaction<'_>, change: &Change) -> rusqlite::Result<()> {
    match change {
        Change::Rollout(r) => {
            tx.prepare_cached(
                "INSERT INTO rollouts (rollout_id, status, doc, mode, start_time, end_time) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (rollout_id) DO UPDATE SET status = excluded.status, \
                 doc = excluded.doc, mode = excluded.mode, start_time = excluded.start_time, \
                 end_time = excluded.end_time",
            )?
            .execute(params![
                r.rollout_id,
                r.status.as_str(),
                to_json(r)?,
                r.mode.map(RolloutMode::as_str),
                r.start_time,
                r.end_time,
            ])?;
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
        Change::Pack { rollout_id, spans } => {
            // The pack replaces the rows (in this transaction, so a reader sees one or the
            // other); spans added later are rows again, read after the pack.
            tx.prepare_cached(
                "INSERT OR REPLACE INTO span_packs (rollout_id, packed) VALUES (?1, ?2)",
            )?
            .execute(params![rollout_id, super::pack::encode(spans)])?;
            tx.prepare_cached("DELETE FROM spans WHERE rollout_id = ?1")?
                .execute(params![rollout_id])?;
        }
        Change::Meta { key, value } => {
            let key = format!("{META_PREFIX}{key}");
            match value {
                Some(value) => tx
                    .prepare_cached(
                        "INSERT INTO kv (key, value) VALUES (?1, ?2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    )?
                    .execute(params![key, value])?,
                None => tx
                    .prepare_cached("DELETE FROM kv WHERE key = ?1")?
                    .execute(params![key])?,
            };
        }
        Change::DeleteRollout(id) => {
            for table in [
                "spans",
                "span_packs",
                "attempts",
                "sequences",
                "queue",
                "rollouts",
            ] {
                tx.prepare_cached(&format!("DELETE FROM {table} WHERE rollout_id = ?1"))?
                    .execute(params![id])?;
            }
        }
        Change::QueuePop(id) => {
            tx.prepare_cached("DELETE FROM queue WHERE rollout_id = ?1")?
                .execute(params![id])?;
        }
        Change::Counts(counts) => schema::write_counts(tx, counts)?,
    }
    Ok(())
}

fn commit(conn: &mut Connection, batches: &[Vec<Change>]) -> Result<(), StorageError> {
    let tx = conn
        .transaction()
        .map_err(err("cannot begin a transaction"))?;
    // Each batch ends with the totals after it: the group's last ones are all it needs.
    let last_counts = batches
        .iter()
        .rev()
        .flatten()
        .find(|c| matches!(c, Change::Counts(_)));
    for change in batches.iter().flatten() {
        if matches!(change, Change::Counts(_)) {
            continue;
        }
        apply(&tx, change).map_err(err("cannot write"))?;
    }
    if let Some(counts) = last_counts {
        apply(&tx, counts).map_err(err("cannot write"))?;
    }
    tx.commit().map_err(err("cannot commit"))
}

/// The writer loop: folds queued batches into one transaction, answers each after commit.
/// After a failed commit the store refuses every later write: what is on disk stays the
/// last consistent state, and a restart resumes from it.
pub(super) fn writer(mut conn: Connection, rx: &mpsc::Receiver<Msg>, durable: &Arc<AtomicU64>) {
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
                if result.is_ok() {
                    durable.fetch_add(batches.len() as u64, Ordering::Release);
                }
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
