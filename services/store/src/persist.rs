//! The narrow seam between the semantics core and durable storage.
//!
//! The core keeps the working set in memory and decides every transition itself; a backend
//! only (1) hands back what it holds at start-up and (2) makes a batch of changed rows
//! durable, in the order the core produced them. A new backend therefore never re-implements
//! the status machines, the queue, retries or the watchdog.

use std::sync::Arc;

use tokio::sync::oneshot;

use crate::model::{Attempt, ResourcesUpdate, Rollout, StoredSpan, Worker};

/// A row the core changed. Rows are whole (upserts), except spans, which are only added,
/// and queue operations, which are applied in order.
#[derive(Debug, Clone)]
pub enum Change {
    Rollout(Rollout),
    Attempt(Attempt),
    Span {
        rollout_id: String,
        span: Arc<StoredSpan>,
    },
    Worker(Worker),
    Resources(ResourcesUpdate),
    LatestResources(String),
    Sequence {
        rollout_id: String,
        value: i64,
    },
    QueuePush(String),
    QueuePop(String),
}

/// Everything a backend holds, in the orders the core needs back.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// In creation order.
    pub rollouts: Vec<Rollout>,
    /// Any order; the core sorts them by sequence id per rollout.
    pub attempts: Vec<Attempt>,
    /// Per rollout, in arrival order.
    pub spans: Vec<(String, StoredSpan)>,
    /// In creation order.
    pub workers: Vec<Worker>,
    /// In creation order.
    pub resources: Vec<ResourcesUpdate>,
    pub latest_resources: Option<String>,
    pub sequences: Vec<(String, i64)>,
    /// Head first.
    pub queue: Vec<String>,
}

/// A storage failure, reported to clients as a 5xx.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("storage error: {0}")]
pub struct StorageError(pub String);

/// Resolves when a submitted batch is durable (or failed to be).
pub type Durable = oneshot::Receiver<Result<(), StorageError>>;

/// Durable storage under the core.
pub trait Backend: Send + Sync + 'static {
    /// A short name for logs and statistics (`memory`, `sqlite`).
    fn name(&self) -> &'static str;

    /// Whether the core should record changes for [`Backend::submit`] at all.
    fn journaling(&self) -> bool;

    /// What the backend holds; called once, before serving.
    fn load(&self) -> Result<Snapshot, StorageError>;

    /// Queues `changes` for durable application after every batch submitted before it.
    /// Called with the core's lock held, so it must not block.
    fn submit(&self, changes: Vec<Change>) -> Durable;

    /// Writes a consistent copy of the whole store to `path` (an online backup).
    fn backup(&self, path: std::path::PathBuf) -> Durable;

    /// Finishes pending writes and closes the storage cleanly (at shutdown).
    fn close(&self) -> Durable;
}

/// No storage: everything lives and dies with the process (the reference's behaviour).
#[derive(Debug, Default, Clone, Copy)]
pub struct Memory;

impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn journaling(&self) -> bool {
        false
    }

    fn load(&self) -> Result<Snapshot, StorageError> {
        Ok(Snapshot::default())
    }

    fn submit(&self, _changes: Vec<Change>) -> Durable {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }

    fn backup(&self, _path: std::path::PathBuf) -> Durable {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Err(StorageError(
            "the memory backend has nothing on disk to back up".into(),
        )));
        rx
    }

    fn close(&self) -> Durable {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(()));
        rx
    }
}
