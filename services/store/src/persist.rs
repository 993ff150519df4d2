//! The narrow seam between the semantics core and durable storage.
//!
//! The core keeps the working set in memory and decides every transition itself; a backend
//! only (1) hands back what it holds at start-up, (2) makes a batch of changed rows durable,
//! in the order the core produced them, and (3), when it keeps history the core does not
//! hold ([`History`]), reads rows back: one rollout's rows to bring it into memory again,
//! and the answers to queries over everything. A new backend therefore never re-implements
//! the status machines, the queue, retries or the watchdog.
//!
//! A backend several store processes share ([`Shared`], Postgres) holds no state in any of
//! them: each change is one database transaction that locks and reads the rows the change
//! names ([`Need`]), lets the core decide on them exactly as it does in memory, and writes
//! what the core changed before it commits.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::oneshot;

use crate::model::{
    Attempt, ResourcesUpdate, Rollout, RolloutMode, RolloutStatus, RolloutView, StoredSpan, Worker,
};

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
    /// A rollout is gone, with its attempts, spans (rows and pack), sequence counter and
    /// place in the queue.
    DeleteRollout(String),
    /// A setting kept beside the rows (v1's model registry): its JSON text, or `None` when
    /// it is cleared.
    Meta {
        key: String,
        value: Option<String>,
    },
    /// A finished rollout left memory with these spans (all of them, in arrival order,
    /// each written before as a [`Change::Span`]): a backend that reads history back may
    /// store them together in place of their rows, so that reading them is one read.
    Pack {
        rollout_id: String,
        spans: Vec<Arc<StoredSpan>>,
    },
    /// The store's running totals after the batch (kept beside the rows so that a restart
    /// need not count history).
    Counts(Counts),
}

/// Running totals of what the store holds, history included.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Rollouts per status, by `RolloutStatus::index`.
    pub rollouts: [usize; 7],
    /// Attempts per status, by `AttemptStatus::index`.
    pub attempts: [usize; 6],
    pub spans: usize,
    pub span_bytes: usize,
    /// Resources versions (ids).
    #[serde(default)]
    pub resources: usize,
}

impl Counts {
    /// What changed from `before` to `self`, per total.
    pub fn minus(&self, before: &Counts) -> CountsDelta {
        let d = |a: usize, b: usize| {
            i64::try_from(a).unwrap_or(i64::MAX) - i64::try_from(b).unwrap_or(i64::MAX)
        };
        CountsDelta {
            rollouts: std::array::from_fn(|i| d(self.rollouts[i], before.rollouts[i])),
            attempts: std::array::from_fn(|i| d(self.attempts[i], before.attempts[i])),
            spans: d(self.spans, before.spans),
            span_bytes: d(self.span_bytes, before.span_bytes),
            resources: d(self.resources, before.resources),
        }
    }
}

/// A change of the running totals (one transaction's, with a shared backend).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CountsDelta {
    pub rollouts: [i64; 7],
    pub attempts: [i64; 6],
    pub spans: i64,
    pub span_bytes: i64,
    pub resources: i64,
}

impl CountsDelta {
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }
}

/// What a backend hands the core at start-up, in the orders the core needs back: everything
/// it holds, or, for a backend with [`History`], the live part (unfinished rollouts with
/// their attempts, spans and sequence counters, the queue, workers, the latest and the most
/// recent resources versions) and the totals.
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
    /// Settings kept beside the rows ([`Change::Meta`]), as JSON text.
    pub meta: Vec<(String, String)>,
    /// The totals, when the snapshot is not everything the backend holds.
    pub counts: Option<Counts>,
}

/// One rollout's rows, as a backend with history reads them back.
#[derive(Debug)]
pub struct RolloutRows {
    pub rollout: Rollout,
    /// By sequence id.
    pub attempts: Vec<Attempt>,
    /// In arrival order.
    pub spans: Vec<StoredSpan>,
    pub sequence: Option<i64>,
}

/// Which rollouts a query asks for; `None` filters are not given.
#[derive(Debug, Clone, Copy, Default)]
pub struct RolloutFilter<'a> {
    pub status_in: Option<&'a [RolloutStatus]>,
    pub rollout_id_in: Option<&'a [String]>,
    pub rollout_id_contains: Option<&'a str>,
    pub mode_in: Option<&'a [RolloutMode]>,
    /// Started at or after (epoch seconds).
    pub started_from: Option<f64>,
    /// Started before (epoch seconds).
    pub started_before: Option<f64>,
    /// OR instead of AND.
    pub any: bool,
}

/// A column a window of rollouts can be ordered by without reading every document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RolloutColumn {
    /// Creation order (the store's own).
    #[default]
    Created,
    RolloutId,
    Status,
    StartTime,
    /// A rollout without an end sorts after every end (upstream's rule), first when
    /// descending.
    EndTime,
}

impl RolloutColumn {
    /// The column of a protocol's `sort_by` field, if it has one.
    pub fn of_field(field: &str) -> Option<Self> {
        Some(match field {
            "rollout_id" => Self::RolloutId,
            "status" => Self::Status,
            "start_time" => Self::StartTime,
            "end_time" => Self::EndTime,
            _ => return None,
        })
    }
}

/// The order of a window of rollouts: rollouts with equal keys keep creation order either
/// way, as Python's stable `sorted(reverse=True)` keeps them. By [`RolloutColumn::Created`]
/// descending is newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RolloutOrder {
    pub by: RolloutColumn,
    pub descending: bool,
}

/// Reads of what a backend keeps beyond the core's memory. Every call reads committed rows
/// only: the core drops a rollout from memory only once its last change is durable, and
/// waits for its pending batches before a query it hands to the backend. The core calls
/// [`History::rollout_exists`] and [`History::resources_exist`] with its lock held (a new
/// id must be unused), so they must not wait behind the others; every other read runs
/// outside the lock.
pub trait History: Send + Sync {
    /// Batches made durable so far (the core numbers what it submits from 1, in order).
    fn durable_batches(&self) -> u64;

    /// Whether a rollout with this id is stored.
    fn rollout_exists(&self, rollout_id: &str) -> Result<bool, StorageError>;

    /// Whether a resources version with this id is stored.
    fn resources_exist(&self, resources_id: &str) -> Result<bool, StorageError>;

    /// A resources version.
    fn resources(&self, resources_id: &str) -> Result<Option<ResourcesUpdate>, StorageError>;

    /// Every resources version, in creation order.
    fn all_resources(&self) -> Result<Vec<ResourcesUpdate>, StorageError>;

    /// A rollout with all its rows, to bring it back into memory.
    fn rollout_rows(&self, rollout_id: &str) -> Result<Option<RolloutRows>, StorageError>;

    /// The span sequence counter of an id (a rollout's, or one issued for an unknown id).
    fn sequence(&self, rollout_id: &str) -> Result<Option<i64>, StorageError>;

    /// A rollout with its latest attempt.
    fn rollout_view(&self, rollout_id: &str) -> Result<Option<RolloutView>, StorageError>;

    /// A rollout's attempts by sequence id.
    fn attempts(&self, rollout_id: &str) -> Result<Vec<Attempt>, StorageError>;

    /// A rollout's spans in arrival order, of one attempt if given.
    fn spans(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
    ) -> Result<Vec<StoredSpan>, StorageError>;

    /// The stored text of a rollout's spans, of one attempt if given, ordered by sequence id
    /// (ascending or descending) and then by arrival: the answer of an unfiltered span query,
    /// without parsing a document.
    fn span_texts(
        &self,
        rollout_id: &str,
        attempt_id: Option<&str>,
        descending: bool,
    ) -> Result<Vec<String>, StorageError>;

    /// Rollouts matching `filter` with their latest attempts, in creation order.
    fn rollouts(&self, filter: RolloutFilter<'_>) -> Result<Vec<RolloutView>, StorageError>;

    /// `limit` of the rollouts matching `filter` from `offset` on, in `order`, and how many
    /// match in all (one consistent read).
    fn rollouts_window(
        &self,
        filter: RolloutFilter<'_>,
        order: RolloutOrder,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<RolloutView>, usize), StorageError>;
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

    /// The backend's history, when it keeps rows the core may drop from memory.
    fn history(&self) -> Option<Arc<dyn History>> {
        None
    }
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

/// The rows a change reads and locks in a [`Shared`] backend's transaction. Ids are locked
/// in sorted order, rollouts before sequence counters before workers, so that two
/// transactions never wait for each other in a cycle.
#[derive(Debug, Clone, Default)]
pub struct Need {
    /// Rollouts with all their attempts, and their sequence counters when `sequences`.
    pub rollouts: Vec<String>,
    /// Lock the sequence counters of `rollouts` too (creating them at 0): ids may be issued.
    pub sequences: bool,
    /// Spans `(rollout, attempt, span id)` to be added: those already stored are read, so
    /// that the core sees them as duplicates.
    pub spans: Vec<(String, String, String)>,
    /// Workers (besides those of the attempts read, when `attempt_workers`).
    pub workers: Vec<String>,
    /// Also read the workers of the attempts read: the change may move them (a status
    /// change); span changes never do.
    pub attempt_workers: bool,
    /// Resources versions.
    pub resources: Vec<String>,
    /// The id of the latest resources version.
    pub latest_resources: bool,
    /// Claim up to this many queued rollouts, in queue order, skipping those another
    /// transaction holds.
    pub queue: usize,
    /// The rollouts the watchdog may have to act on at this time (by the store's clock):
    /// preparing or running, with a limit their latest attempt is past; held ones skipped.
    pub watched: Option<f64>,
    /// Settings ([`Change::Meta`]), locked: the change may rewrite them.
    pub meta: Vec<String>,
}

impl Need {
    /// The rows of these rollouts, and the workers of their attempts.
    pub fn rollouts<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Self {
            rollouts: ids.into_iter().map(Into::into).collect(),
            attempt_workers: true,
            ..Self::default()
        }
    }
}

/// What the core decided in a [`Shared`] transaction: rows to write, in order, the change
/// of the totals, and the rollouts that finished (their waiters, on any process, are told
/// once the transaction commits).
#[derive(Debug, Default)]
pub struct Decision {
    pub changes: Vec<Change>,
    pub counts: CountsDelta,
    pub finished: Vec<String>,
}

/// The core's side of a [`Shared`] transaction: given the rows read, the decision, or
/// `None` when nothing changed (the transaction rolls back; the core keeps its answer).
/// A change that fails after it changed rows still writes them, as memory keeps them. It may be called again when the
/// transaction is retried (a new id that another process took at the same moment).
pub type Decide<'a> = dyn FnMut(Snapshot) -> Option<Decision> + Send + 'a;

/// Told that a rollout finished (`Some`), or that notices may have been missed and every
/// waiter should look again (`None`).
pub type Wake = Arc<dyn Fn(Option<&str>) + Send + Sync>;

/// Totals a shared backend reports for statistics and metrics.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub counts: Counts,
    pub queue: usize,
    pub workers: Vec<Worker>,
}

/// A database several store processes use at once, none of them holding state of its own.
pub trait Shared: Send + Sync + 'static {
    /// A short name for logs and statistics (`postgres`).
    fn name(&self) -> &'static str;

    /// One transaction: reads and locks what `need` names, hands it to `decide`, writes the
    /// decision, commits. `Ok(false)`: `decide` rolled back.
    fn transact<'a>(
        &'a self,
        need: &'a Need,
        decide: &'a mut Decide<'a>,
    ) -> BoxFuture<'a, Result<bool, StorageError>>;

    /// Whether this process should run the watchdog now (`now` by the store's clock): true
    /// for one process per `debounce` seconds.
    fn watchdog_due(&self, now: f64, debounce: f64) -> BoxFuture<'_, Result<bool, StorageError>>;

    /// Reads of everything stored.
    fn history(&self) -> Arc<dyn History>;

    /// Calls `wake` for every rollout any process finishes, from now on.
    fn listen(&self, wake: Wake);

    /// A worker by id.
    fn worker(&self, worker_id: &str) -> BoxFuture<'_, Result<Option<Worker>, StorageError>>;

    /// The latest resources version.
    fn latest_resources(&self) -> BoxFuture<'_, Result<Option<ResourcesUpdate>, StorageError>>;

    /// A setting ([`Change::Meta`]), as committed.
    fn meta<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>>;

    /// The totals, the queue's length and the workers.
    fn totals(&self) -> BoxFuture<'_, Result<Totals, StorageError>>;

    /// Whether the database answers now.
    fn ping(&self) -> BoxFuture<'_, Result<(), StorageError>>;
}
