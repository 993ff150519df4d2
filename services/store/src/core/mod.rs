//! The store's semantics, written once: rollout and attempt status machines, the FIFO
//! queue, retries, the watchdog, workers, versioned resources, spans with per-rollout
//! sequence ids, and waiting for rollouts to finish.
//!
//! All state sits behind one mutex that is held only for the mutation itself: request
//! bodies are parsed before it is taken and responses are serialized after it is released
//! (stored documents are shared `Arc`s, so reads copy pointers, not data). Every hot path
//! touches one rollout's entry through a hash lookup; nothing scans the whole store except
//! the queries that are defined as scans (listing rollouts, workers, resources), and the
//! watchdog, which only visits rollouts that are preparing or running.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as AtomicOrdering};
use std::time::Duration;

use indexmap::IndexSet;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::value::RawValue;
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::model::{
    Attempt, AttemptStatus, Json, NamedResources, Page, ResourcesUpdate, Rollout, RolloutConfig,
    RolloutMode, RolloutStatus, RolloutView, StoredSpan, V1Fields, Worker, WorkerStatus,
};
use crate::persist::{
    Backend, Durable, History, Memory, Need, RolloutColumn, RolloutFilter, RolloutOrder, Shared,
    StorageError,
};
use crate::span::SpanInput;
use crate::stored_span::SpanDoc;

mod query;
mod sharded;
mod shared;
mod state;
mod v1;
mod waiters;

pub use v1::{COMPLETION_LOG, V1Patch};

use query::{
    PageExt as _, attempt_key, paginate, resources_key, rollout_key, span_key, worker_key,
};
use state::{Entry, Fetched, Key, OwnedKey, State};
use waiters::Waiters;

/// What a store operation can fail with. Messages follow upstream's wording.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    #[error("Rollout {0} not found")]
    RolloutNotFound(String),
    #[error("No attempts found for rollout {0}")]
    NoAttempts(String),
    #[error("Attempt {attempt_id} not found for rollout {rollout_id}")]
    AttemptNotFound {
        rollout_id: String,
        attempt_id: String,
    },
    #[error("cannot sort by {field}: its values are not comparable")]
    Unsortable { field: String },
    /// A v1 state change its state machine does not allow.
    #[error("Rollout {rollout_id}: cannot transition {from} -> {to}")]
    InvalidTransition {
        rollout_id: String,
        from: &'static str,
        to: &'static str,
    },
    /// Enqueueing would take the queue past `--max-queued-rollouts`.
    #[error(
        "the queue would hold more than {limit} rollouts, the most it may hold: retry once \
         runners have claimed some"
    )]
    QueueFull { limit: usize },
    /// A span beyond `--max-spans-per-rollout` for one rollout.
    #[error("rollout {rollout_id} holds {limit} spans, the most a rollout may hold")]
    TooManySpans { rollout_id: String, limit: usize },
    /// The backend failed; the store refuses writes until it is restarted.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Tunables of the semantics layer.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Minimum seconds between two watchdog scans triggered by calls; 0 scans on every call.
    pub scan_debounce_seconds: f64,
    /// With a backend that keeps history: bytes of finished rollouts (their spans' text and
    /// a fixed cost each) kept in memory once durable; older ones are read back when asked.
    pub cache_bytes: usize,
    /// Most rollouts waiting in the queue (queued rollouts are held in memory by the
    /// single-node backends); enqueueing beyond it is refused.
    pub max_queued_rollouts: usize,
    /// Most spans one rollout may hold (a live rollout's spans are held in memory by the
    /// single-node backends); further spans are refused.
    pub max_spans_per_rollout: usize,
}

/// The default of [`StoreConfig::max_queued_rollouts`].
pub const DEFAULT_MAX_QUEUED_ROLLOUTS: usize = 1_000_000;
/// The default of [`StoreConfig::max_spans_per_rollout`].
pub const DEFAULT_MAX_SPANS_PER_ROLLOUT: usize = 1_000_000;

/// Reads of the rows of one change before [`Store::try_write_on`] gives up.
const READ_AGAIN: usize = 16;

/// The default of [`StoreConfig::cache_bytes`].
pub const DEFAULT_CACHE_BYTES: usize = 64 << 20;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            scan_debounce_seconds: 10.0,
            cache_bytes: DEFAULT_CACHE_BYTES,
            max_queued_rollouts: DEFAULT_MAX_QUEUED_ROLLOUTS,
            max_spans_per_rollout: DEFAULT_MAX_SPANS_PER_ROLLOUT,
        }
    }
}

/// A rollout to create.
#[derive(Debug, Clone)]
pub struct NewRollout {
    pub input: Json,
    pub mode: Option<RolloutMode>,
    pub resources_id: Option<String>,
    pub config: Option<RolloutConfig>,
    pub metadata: Option<Json>,
    /// A caller's id (the v1 protocol lets callers choose); a fresh one when `None`.
    pub rollout_id: Option<String>,
    /// The v1 protocol's fields, for a rollout it creates.
    pub v1: Option<Box<V1Fields>>,
}

/// Fields of a rollout update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct RolloutPatch {
    pub input: Option<Json>,
    pub mode: Option<Option<RolloutMode>>,
    pub resources_id: Option<Option<String>>,
    pub status: Option<RolloutStatus>,
    pub config: Option<RolloutConfig>,
    pub metadata: Option<Option<Json>>,
}

/// Fields of an attempt update; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AttemptPatch {
    pub status: Option<AttemptStatus>,
    pub worker_id: Option<String>,
    pub last_heartbeat_time: Option<f64>,
    pub metadata: Option<Json>,
}

/// Pagination and ordering of a query.
#[derive(Debug, Clone)]
pub struct PageRequest {
    /// `-1` for everything.
    pub limit: i64,
    pub offset: i64,
    pub sort_by: Option<String>,
    pub descending: bool,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: -1,
            offset: 0,
            sort_by: None,
            descending: false,
        }
    }
}

/// Filters of a rollout query.
#[derive(Debug, Clone, Default)]
pub struct RolloutQuery {
    pub status_in: Option<Vec<RolloutStatus>>,
    pub rollout_id_in: Option<Vec<String>>,
    pub rollout_id_contains: Option<String>,
    /// Rollouts of these modes (a rollout without a mode matches none).
    pub mode_in: Option<Vec<RolloutMode>>,
    /// Rollouts started at or after this epoch time.
    pub started_from: Option<f64>,
    /// Rollouts started before this epoch time.
    pub started_before: Option<f64>,
    /// Combine the filters with OR instead of AND.
    pub any: bool,
    /// Without `page.sort_by`: newest first (the dashboard's list). The protocols never
    /// set it: upstream ignores a sort order given without a field, and so do they.
    pub newest_first: bool,
    pub page: PageRequest,
}

impl RolloutQuery {
    /// Whether no filter but the status one is given (the store counts rollouts by status).
    fn filters_only_status(&self) -> bool {
        let RolloutFilter {
            status_in: _,
            rollout_id_in,
            rollout_id_contains,
            mode_in,
            started_from,
            started_before,
            any: _,
        } = self.filter();
        rollout_id_in.is_none()
            && rollout_id_contains.is_none()
            && mode_in.is_none()
            && started_from.is_none()
            && started_before.is_none()
    }

    /// Whether the answer is creation order read backwards.
    fn reversed(&self) -> bool {
        self.newest_first && self.page.sort_by.is_none()
    }

    /// The order a backend can cut a window in, if the query has one.
    fn window_order(&self) -> Option<RolloutOrder> {
        match &self.page.sort_by {
            None => Some(RolloutOrder {
                by: RolloutColumn::Created,
                descending: self.newest_first,
            }),
            Some(field) => RolloutColumn::of_field(field).map(|by| RolloutOrder {
                by,
                descending: self.page.descending,
            }),
        }
    }

    /// The filters, for a backend that answers the query.
    fn filter(&self) -> RolloutFilter<'_> {
        RolloutFilter {
            status_in: self.status_in.as_deref(),
            rollout_id_in: self.rollout_id_in.as_deref(),
            rollout_id_contains: self.rollout_id_contains.as_deref(),
            mode_in: self.mode_in.as_deref(),
            started_from: self.started_from,
            started_before: self.started_before,
            any: self.any,
        }
    }
}

/// Filters of a worker query.
#[derive(Debug, Clone, Default)]
pub struct WorkerQuery {
    pub status_in: Option<Vec<WorkerStatus>>,
    pub worker_id_contains: Option<String>,
    pub any: bool,
    pub page: PageRequest,
}

/// Filters of a resources query.
#[derive(Debug, Clone, Default)]
pub struct ResourcesQuery {
    pub resources_id: Option<String>,
    pub resources_id_contains: Option<String>,
    pub page: PageRequest,
}

/// Filters of a span query; `rollout_id` (and `attempt_id`, `"latest"` allowed) always apply.
#[derive(Debug, Clone, Default)]
pub struct SpanQuery {
    pub rollout_id: String,
    pub attempt_id: Option<String>,
    pub trace_id: Option<String>,
    pub trace_id_contains: Option<String>,
    pub span_id: Option<String>,
    pub span_id_contains: Option<String>,
    pub parent_id: Option<String>,
    pub parent_id_contains: Option<String>,
    pub name: Option<String>,
    pub name_contains: Option<String>,
    pub any: bool,
    pub page: PageRequest,
}

/// A test of one span field against a query's value.
type FieldTest = fn(&StoredSpan, &str) -> bool;

impl SpanQuery {
    /// The field filters given, each with its value and test (the one list of them: whether
    /// any is given and whether a span matches both read it).
    fn field_filters(&self) -> Vec<(&str, FieldTest)> {
        let all: [(Option<&String>, FieldTest); 8] = [
            (self.trace_id.as_ref(), |s, v| s.trace_id() == v),
            (self.trace_id_contains.as_ref(), |s, v| {
                s.trace_id().contains(v)
            }),
            (self.span_id.as_ref(), |s, v| s.span_id() == v),
            (self.span_id_contains.as_ref(), |s, v| {
                s.span_id().contains(v)
            }),
            (self.parent_id.as_ref(), |s, v| {
                s.parent_id().as_deref() == Some(v)
            }),
            (self.parent_id_contains.as_ref(), |s, v| {
                s.parent_id().is_some_and(|p| p.contains(v))
            }),
            (self.name.as_ref(), |s, v| s.name() == v),
            (self.name_contains.as_ref(), |s, v| s.name().contains(v)),
        ];
        // Each field is read only when a filter names it: reading one costs a lookup.
        all.into_iter()
            .filter_map(|(value, test)| value.map(|v| (v.as_str(), test)))
            .collect()
    }
}

/// A span waiting to be stored with a sequence id the store assigns (OTLP ingestion).
#[derive(Debug)]
pub struct UnsequencedSpan {
    pub span: SpanInput,
    /// The explicit sequence id, if the span carried one.
    pub sequence_id: Option<i64>,
}

/// Outcome of a bulk span insert.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BulkOutcome {
    pub stored: usize,
    pub duplicates: usize,
    /// Spans naming a rollout or attempt the store does not know.
    pub rejected: usize,
}

/// Numbers of `GET /statistics`.
#[derive(Debug, Clone, Serialize)]
pub struct Statistics {
    pub name: &'static str,
    pub backend: &'static str,
    pub total_rollouts: usize,
    pub total_attempts: usize,
    pub total_spans: usize,
    pub total_resources: usize,
    pub total_workers: usize,
    pub uptime: f64,
    pub total_span_bytes: usize,
    pub queue_length: usize,
}

/// Monotonic counters of what the store did, for metrics.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans stored, through any route.
    pub spans_stored: AtomicU64,
    /// Spans stored from OTLP payloads.
    pub otlp_spans_stored: AtomicU64,
    /// OTLP spans refused (unknown rollout or attempt).
    pub otlp_spans_rejected: AtomicU64,
    /// OTLP spans without a rollout or attempt id (nothing to file them under).
    pub otlp_spans_unattributed: AtomicU64,
    /// OTLP payloads that carried such spans.
    pub otlp_unattributed_payloads: AtomicU64,
    /// OTLP payloads decoded and applied.
    pub otlp_payloads_accepted: AtomicU64,
    /// OTLP payloads refused (bad content type, encoding or protobuf).
    pub otlp_payloads_rejected: AtomicU64,
    /// Attempts the watchdog marked `timeout`.
    pub watchdog_timeouts: AtomicU64,
    /// Attempts the watchdog marked `unresponsive`.
    pub watchdog_unresponsive: AtomicU64,
}

impl Gauges {
    /// The gauges of these totals and workers.
    fn of<'a>(
        c: &crate::persist::Counts,
        workers: impl Iterator<Item = &'a Worker>,
        queue_depth: usize,
        waiting_calls: usize,
        rollouts_in_memory: usize,
    ) -> Self {
        let mut by_status = [0usize; 3];
        for w in workers {
            by_status[w.status.index()] += 1;
        }
        Self {
            rollouts_by_status: RolloutStatus::ALL
                .iter()
                .map(|s| (*s, c.rollouts[s.index()]))
                .collect(),
            attempts_by_status: AttemptStatus::ALL
                .iter()
                .map(|s| (*s, c.attempts[s.index()]))
                .collect(),
            workers_by_status: WorkerStatus::ALL
                .iter()
                .map(|s| (*s, by_status[s.index()]))
                .collect(),
            queue_depth,
            spans: c.spans,
            waiting_calls,
            rollouts_in_memory,
        }
    }
}

/// Told about every rollout that reaches a finished status: status, mode, seconds since start.
pub type FinishHook = Box<dyn Fn(RolloutStatus, Option<RolloutMode>, f64) + Send + Sync>;

/// Gauges for the metrics endpoint.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub rollouts_by_status: Vec<(RolloutStatus, usize)>,
    pub attempts_by_status: Vec<(AttemptStatus, usize)>,
    pub workers_by_status: Vec<(WorkerStatus, usize)>,
    pub queue_depth: usize,
    pub spans: usize,
    pub waiting_calls: usize,
    /// Rollouts held in memory (with a backend that keeps history, a part of them).
    pub rollouts_in_memory: usize,
}

pub struct Store {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    config: StoreConfig,
    created: f64,
    started: std::time::Instant,
    draining: AtomicBool,
    drain: Notify,
    counters: Counters,
    backend: Arc<dyn Backend>,
    /// What memory does not hold, when the backend keeps history.
    disk: Option<Arc<dyn History>>,
    /// Set after a failed commit: memory may be ahead of the disk, so no more writes.
    storage_failed: AtomicBool,
    /// The database, when several store processes share one; then memory holds nothing
    /// but the waiters (see `shared.rs`).
    shared: Option<Arc<dyn Shared>>,
    waiters: Arc<Waiters>,
    /// The shared database's totals as last read (metrics are collected without waiting).
    totals: Mutex<Option<crate::persist::Totals>>,
    /// With a shared database: groups concurrent span changes into shared transactions.
    grouper: Option<shared::Grouper>,
}

/// `prefix` followed by `digits` (even, at most 32) random lowercase hex digits, as
/// upstream's ids look; [`fresh_id`] makes them unique.
fn random_id(prefix: &str, digits: usize) -> String {
    let mut raw = [0_u8; 16];
    let mut hex = [0_u8; 32];
    let bytes = digits / 2;
    fastrand::fill(&mut raw[..bytes]);
    hex::encode_to_slice(&raw[..bytes], &mut hex[..digits])
        .expect("two hex digits per byte fit the buffer");
    let mut out = String::with_capacity(prefix.len() + digits);
    out.push_str(prefix);
    out.push_str(std::str::from_utf8(&hex[..digits]).expect("hex digits are ASCII"));
    out
}

/// A random id that `taken` does not know yet.
fn fresh_id(prefix: &str, digits: usize, taken: impl Fn(&str) -> bool) -> String {
    loop {
        let id = random_id(prefix, digits);
        if !taken(&id) {
            return id;
        }
    }
}

fn empty_object() -> Json {
    Arc::from(RawValue::from_string("{}".to_owned()).expect("valid json"))
}

impl Store {
    /// An empty in-memory store.
    pub fn new(config: StoreConfig, clock: Arc<dyn Clock>) -> Self {
        Self::open(config, clock, Arc::new(Memory)).expect("the memory backend cannot fail")
    }

    /// A store over `backend`, resuming from what it holds.
    pub fn open(
        config: StoreConfig,
        clock: Arc<dyn Clock>,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, StorageError> {
        let snapshot = backend.load()?;
        let disk = backend.history();
        let state = State::restore(snapshot, backend.journaling(), disk.clone());
        Ok(Self::assemble(config, clock, state, backend, disk, None))
    }

    /// The store around its parts (`shared` with its grouper, for a shared database).
    fn assemble(
        config: StoreConfig,
        clock: Arc<dyn Clock>,
        mut state: State,
        backend: Arc<dyn Backend>,
        disk: Option<Arc<dyn History>>,
        shared: Option<(Arc<dyn Shared>, shared::Grouper)>,
    ) -> Self {
        let waiters = Arc::new(Waiters::default());
        state.waiters = Arc::clone(&waiters);
        let (shared, grouper) = shared.unzip();
        Self {
            state: Mutex::new(state),
            created: clock.now(),
            clock,
            config,
            started: std::time::Instant::now(),
            draining: AtomicBool::new(false),
            drain: Notify::new(),
            counters: Counters::default(),
            backend,
            disk,
            storage_failed: AtomicBool::new(false),
            shared,
            waiters,
            totals: Mutex::new(None),
            grouper,
        }
    }

    /// The backend's name (`memory`, `sqlite`, `postgres`).
    pub fn backend_name(&self) -> &'static str {
        match &self.shared {
            Some(db) => db.name(),
            None => self.backend.name(),
        }
    }

    /// Writes a consistent copy of the store to `path` (SQLite only).
    pub async fn backup(&self, path: std::path::PathBuf) -> Result<(), StoreError> {
        if self.shared.is_some() {
            return Err(StoreError::Storage(StorageError(
                "a shared database is backed up with its own tools (pg_dump, or the \
                 operator's backups), not through a store process"
                    .into(),
            )));
        }
        let durable = self.backend.backup(path);
        self.wait_durable(Some(durable)).await
    }

    /// Finishes pending writes and closes the backend (call once, at shutdown).
    pub async fn close(&self) -> Result<(), StoreError> {
        if self.shared.is_some() {
            return Ok(());
        }
        let durable = {
            let mut st = self.state.lock();
            let pending = self.submit(&mut st);
            drop(pending);
            self.backend.close()
        };
        self.wait_durable(Some(durable)).await
    }

    /// Whether writes are refused after a storage failure.
    pub fn storage_failed(&self) -> bool {
        self.storage_failed.load(AtomicOrdering::SeqCst)
    }

    /// Runs a mutation under the lock (after a watchdog scan if `scan`), hands its changes
    /// to the backend in order, and returns once they are durable.
    async fn try_write<T>(
        &self,
        scan: bool,
        f: impl FnOnce(&mut State, f64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        if self.storage_failed() {
            return Err(StoreError::Storage(StorageError(
                "an earlier write failed; restart the store to resume from its last durable state"
                    .into(),
            )));
        }
        let (out, durable) = {
            let now = self.now();
            let mut st = self.state.lock();
            if scan {
                self.scan_if_due(&mut st, now);
            }
            let out = f(&mut st, now);
            (out, self.submit(&mut st))
        };
        self.wait_durable(durable).await?;
        out
    }

    /// [`Self::try_write`] of a change to the rows named by `keys` (rollouts, sequence
    /// counters, resources versions). With a backend that keeps history, what memory does
    /// not hold of them is read first, outside the lock, and put in place under it before
    /// `f` runs, so that no read of the disk ever holds up the other requests. Rows that may
    /// have gone stale in between (they left memory meanwhile) are read again.
    async fn try_write_on<T>(
        &self,
        keys: &[Key<'_>],
        scan: bool,
        f: impl FnOnce(&mut State, f64) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let Some(disk) = &self.disk else {
            return self.try_write(scan, f).await;
        };
        let mut f = Some(f);
        for _ in 0..READ_AGAIN {
            let (missing, since) = {
                let st = self.state.lock();
                let missing: Vec<usize> = (0..keys.len()).filter(|&i| !st.holds(keys[i])).collect();
                (missing, st.evictions)
            };
            let fetched = if missing.is_empty() {
                Vec::new()
            } else {
                let wanted: Vec<OwnedKey> = missing.iter().map(|&i| keys[i].owned()).collect();
                self.read_disk(disk, move |d| {
                    wanted
                        .into_iter()
                        .map(|key| match key {
                            OwnedKey::Resources(id) => {
                                let row = d.resources(&id)?;
                                Ok(Fetched::Resources { id, row })
                            }
                            OwnedKey::Rollout(id) => {
                                let rows = d.rollout_rows(&id)?.map(Box::new);
                                let sequence = match &rows {
                                    Some(_) => None,
                                    None => d.sequence(&id)?,
                                };
                                Ok(Fetched::Rollout { id, rows, sequence })
                            }
                        })
                        .collect::<Result<Vec<_>, StorageError>>()
                })
                .await?
            };
            let done = self
                .try_write(scan, |st, now| {
                    for one in fetched {
                        if !st.install(one, since) {
                            return Ok(None);
                        }
                    }
                    // Held at the check but dropped since: read it. (An id the backend does
                    // not know either stays unheld: memory keeps nothing for it.)
                    if (0..keys.len()).any(|i| !missing.contains(&i) && !st.holds(keys[i])) {
                        return Ok(None);
                    }
                    let f = f.take().expect("runs once");
                    f(st, now).map(Some)
                })
                .await?;
            if let Some(out) = done {
                return Ok(out);
            }
        }
        Err(StoreError::Storage(StorageError(
            "the rows of this change kept leaving memory while they were read; try again".into(),
        )))
    }

    /// A change of the rows `need` names (see [`Need`]): in memory (after reading what it
    /// does not hold of them), or as one transaction of a shared database. `f` decides the
    /// change either way; with a shared database it may run again on fresh rows when the
    /// transaction is retried.
    async fn change<T: Send>(
        &self,
        need: Need,
        scan: bool,
        f: impl FnMut(&mut State, f64) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        if let Some(db) = &self.shared {
            if scan {
                self.scan_shared(db).await;
            }
            return self.transact_shared(db, &need, f).await;
        }
        let keys: Vec<Key<'_>> = need
            .rollouts
            .iter()
            .map(|id| Key::Rollout(id))
            .chain(need.resources.iter().map(|id| Key::Resources(id)))
            .collect();
        if keys.is_empty() {
            self.try_write(scan, f).await
        } else {
            self.try_write_on(&keys, scan, f).await
        }
    }

    /// [`Self::change`] of one of the hot, small changes (spans, sequence ids), which runs
    /// once: in memory as any other; with a shared database in a group of concurrent ones
    /// that share one transaction (see `shared.rs`).
    async fn change_once<T: Send + 'static>(
        &self,
        need: Need,
        f: impl FnOnce(&mut State, f64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if let Some(grouper) = &self.grouper {
            return grouper.run(need, f).await;
        }
        let mut f = Some(f);
        self.change(need, false, move |st, now| {
            f.take().ok_or_else(retried_span)?(st, now)
        })
        .await
    }

    /// Hands the recorded changes to the backend (called with the lock held, so batches
    /// reach it in the order they were applied), then lets the cache drop what is durable.
    fn submit(&self, st: &mut State) -> Option<Durable> {
        let changes = st.take_changes();
        let durable = (!changes.is_empty()).then(|| {
            st.batches += 1;
            self.backend.submit(changes)
        });
        st.evict(self.config.cache_bytes);
        // What left memory goes to the backend as packs of spans, in a batch of their own
        // (nobody waits for it: until it is written, reads find the spans one by one).
        let packs = std::mem::take(&mut st.packs);
        if !packs.is_empty() {
            st.batches += 1;
            drop(self.backend.submit(packs));
        }
        durable
    }

    /// Resolves once every change applied before the call is durable, so that a read the
    /// backend answers sees everything memory showed before it.
    async fn barrier(&self) -> Result<(), StoreError> {
        if self.shared.is_some() {
            // Every change is committed before it is answered.
            return Ok(());
        }
        let durable = {
            let mut st = self.state.lock();
            st.batches += 1;
            self.backend.submit(Vec::new())
        };
        self.wait_durable(Some(durable)).await
    }

    /// Runs a read of the backend's history off the async threads.
    async fn read_disk<T: Send + 'static>(
        &self,
        disk: &Arc<dyn History>,
        f: impl FnOnce(&dyn History) -> Result<T, StorageError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let disk = Arc::clone(disk);
        tokio::task::spawn_blocking(move || f(&*disk))
            .await
            .map_err(|e| StorageError(format!("a storage read failed: {e}")))?
            .map_err(StoreError::Storage)
    }

    async fn wait_durable(&self, durable: Option<Durable>) -> Result<(), StoreError> {
        let Some(durable) = durable else {
            return Ok(());
        };
        let result = durable
            .await
            .unwrap_or_else(|_| Err(StorageError("the storage writer stopped".into())));
        if let Err(err) = result {
            self.storage_failed.store(true, AtomicOrdering::SeqCst);
            return Err(StoreError::Storage(err));
        }
        Ok(())
    }

    /// The watchdog scan of a read: its changes are persisted, without the read waiting.
    fn scan_and_submit(&self, st: &mut State, now: f64) {
        // A shared database's scan is a transaction of its own (`before_read`).
        if self.storage_failed() || self.shared.is_some() {
            return;
        }
        self.scan_if_due(st, now);
        if let Some(durable) = self.submit(st) {
            drop(durable);
        }
    }

    /// The keys of spans to be added, which a shared database reads back to tell
    /// duplicates (memory holds every span of a rollout it changes: none are needed there).
    fn stored_span_keys<'a>(
        &self,
        spans: impl IntoIterator<Item = (&'a String, &'a StoredSpan)>,
    ) -> Vec<(String, String, String)> {
        if self.shared.is_none() {
            return Vec::new();
        }
        spans
            .into_iter()
            .map(|(rollout_id, span)| {
                (
                    rollout_id.clone(),
                    span.attempt_id().into_owned(),
                    span.span_id().into_owned(),
                )
            })
            .collect()
    }

    /// Before a read: the watchdog's scan, when it is due and the database is shared (in
    /// memory, reads scan under the lock they take anyway).
    async fn before_read(&self) {
        if let Some(db) = &self.shared {
            self.scan_shared(db).await;
        }
    }

    /// Calls `hook` whenever a rollout finishes.
    pub fn set_finish_hook(&self, hook: FinishHook) {
        self.state.lock().finish_hook = Some(Arc::new(hook));
    }

    /// What the store has done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The store's clock.
    pub fn now(&self) -> f64 {
        self.clock.now()
    }

    /// The watchdog debounce in seconds.
    pub fn scan_debounce_seconds(&self) -> f64 {
        self.config.scan_debounce_seconds
    }

    /// Ends every pending `wait_for_rollouts` now with what it has (used on shutdown).
    pub fn drain_waiters(&self) {
        self.draining.store(true, AtomicOrdering::SeqCst);
        self.drain.notify_waiters();
    }

    // ----- rollouts -------------------------------------------------------------------

    /// Creates a rollout with its first attempt, claimed at once (not queued).
    pub async fn start_rollout(
        &self,
        new: NewRollout,
        worker_id: Option<String>,
    ) -> Result<RolloutView, StoreError> {
        let need = Need {
            latest_resources: true,
            workers: worker_id.iter().cloned().collect(),
            ..Need::default()
        };
        self.change(need, true, |st, now| {
            let rollout_id = st.insert_rollout(new.clone(), RolloutStatus::Preparing, now);
            let attempt = st.create_attempt(&rollout_id, worker_id.clone(), now, now);
            st.set_active(&rollout_id, true);
            if attempt.worker_id.is_some() {
                st.sync_worker(&attempt, now, false);
            }
            Ok(RolloutView {
                rollout: st.rollouts[&rollout_id].rollout.clone(),
                attempt: Some(attempt),
            })
        })
        .await
    }

    /// Creates rollouts and appends them to the queue, in order.
    pub async fn enqueue_rollouts(
        &self,
        news: Vec<NewRollout>,
    ) -> Result<Vec<Rollout>, StoreError> {
        let need = Need {
            latest_resources: true,
            ..Need::default()
        };
        let limit = self.queue_limit();
        self.change(need, true, |st, now| {
            st.check_queue_room(limit, news.len())?;
            Ok(news
                .iter()
                .map(|new| {
                    let id = st.insert_rollout(new.clone(), RolloutStatus::Queuing, now);
                    st.push_queue(&id);
                    st.rollouts[&id].rollout.clone()
                })
                .collect())
        })
        .await
    }

    /// Claims up to `limit` queued rollouts, creating a new attempt for each.
    pub async fn dequeue(
        &self,
        limit: usize,
        worker_id: Option<String>,
    ) -> Result<Vec<RolloutView>, StoreError> {
        let need = Need {
            queue: limit,
            workers: worker_id.iter().cloned().collect(),
            ..Need::default()
        };
        self.change(need, true, |st, now| {
        let mut claimed = Vec::new();
        while claimed.len() < limit {
            let Some(id) = st.pop_queue() else {
                break;
            };
            let Some(entry) = st.rollouts.get(&id) else {
                continue;
            };
            if !entry.rollout.status.is_queuing() {
                tracing::debug!(rollout_id = %id, status = %entry.rollout.status, "skipping stale queue entry");
                continue;
            }
            let attempt = st.create_attempt(&id, worker_id.clone(), now, now);
            st.set_rollout_status(&id, RolloutStatus::Preparing, now);
            claimed.push(RolloutView {
                rollout: st.rollouts[&id].rollout.clone(),
                attempt: Some(attempt),
            });
        }
        if let Some(worker_id) = &worker_id {
            match claimed.last().and_then(|v| v.attempt.as_ref()) {
                Some(attempt) => {
                    st.sync_worker(attempt, now, true);
                }
                None => {
                    let worker = st.worker_mut(worker_id);
                    if worker.status != WorkerStatus::Idle {
                        worker.status = WorkerStatus::Idle;
                        worker.last_idle_time = Some(now);
                    }
                    worker.last_dequeue_time = Some(now);
                }
            }
        }
        Ok(claimed)
        })
        .await
    }

    /// Starts a new attempt of an existing rollout, whatever its status.
    pub async fn start_attempt(
        &self,
        rollout_id: &str,
        worker_id: Option<String>,
    ) -> Result<RolloutView, StoreError> {
        let need = Need {
            workers: worker_id.iter().cloned().collect(),
            ..Need::rollouts([rollout_id])
        };
        self.change(need, true, |st, now| {
            if !st.rollouts.contains_key(rollout_id) {
                return Err(StoreError::RolloutNotFound(rollout_id.to_owned()));
            }
            let attempt = st.create_attempt(rollout_id, worker_id.clone(), now, now);
            st.set_rollout_status(rollout_id, RolloutStatus::Preparing, now);
            if attempt.worker_id.is_some() {
                st.sync_worker(&attempt, now, false);
            }
            Ok(RolloutView {
                rollout: st.rollouts[rollout_id].rollout.clone(),
                attempt: Some(attempt),
            })
        })
        .await
    }

    /// One rollout with its latest attempt, or `None`.
    pub async fn get_rollout(&self, rollout_id: &str) -> Result<Option<RolloutView>, StoreError> {
        self.before_read().await;
        {
            let now = self.now();
            let mut st = self.state.lock();
            self.scan_and_submit(&mut st, now);
            if let Some(entry) = st.rollouts.get(rollout_id) {
                return Ok(Some(entry.view()));
            }
        }
        // Not in memory: finished and durable, or unknown.
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let id = rollout_id.to_owned();
        self.read_disk(disk, move |d| d.rollout_view(&id)).await
    }

    /// Rollouts matching `q`, each with its latest attempt.
    pub async fn query_rollouts(&self, q: &RolloutQuery) -> Result<Page<RolloutView>, StoreError> {
        self.before_read().await;
        if let Some(disk) = &self.disk {
            // History is in the backend: it answers, once it holds everything memory shows.
            {
                let now = self.now();
                let mut st = self.state.lock();
                self.scan_and_submit(&mut st, now);
            }
            self.barrier().await?;
            let q2 = q.clone();

            // In an order a column gives, a page is cut by the backend; another is sorted
            // here.
            if let Some(order) = q.window_order().filter(|_| q.page.limit >= 0) {
                let offset = usize::try_from(q.page.offset.max(0)).unwrap_or(usize::MAX);
                let limit = usize::try_from(q.page.limit).unwrap_or(usize::MAX);
                let (items, total) = self
                    .read_disk(disk, move |d| {
                        d.rollouts_window(q2.filter(), order, offset, limit)
                    })
                    .await?;
                return Ok(Page {
                    items,
                    limit: q.page.limit,
                    offset: q.page.offset,
                    total,
                });
            }
            let mut matches = self
                .read_disk(disk, move |d| d.rollouts(q2.filter()))
                .await?;
            if q.reversed() {
                matches.reverse();
            }
            return paginate(matches, &q.page, |v, field| rollout_key(&v.rollout, field));
        }
        let now = self.now();
        let mut st = self.state.lock();
        self.scan_and_submit(&mut st, now);
        let status_set: Option<HashSet<RolloutStatus>> =
            q.status_in.as_ref().map(|s| s.iter().copied().collect());
        if q.page.sort_by.is_none() && q.page.limit >= 0 && q.filters_only_status() {
            // Creation order with at most a status filter: the total is counted already,
            // and the window is found from its own end of `order`, so a page costs its rows
            // (and the rows it skips over, when filtered), not a visit of every rollout.
            let total = status_set.as_ref().map_or(st.order.len(), |set| {
                set.iter().map(|s| st.rollout_counts[s.index()]).sum()
            });
            let offset = usize::try_from(q.page.offset.max(0)).unwrap_or(usize::MAX);
            let limit = usize::try_from(q.page.limit).unwrap_or(usize::MAX);
            let ids: &[String] = match &status_set {
                // Unfiltered, the window is a slice.
                None if q.newest_first => {
                    let end = st.order.len().saturating_sub(offset);
                    &st.order[end.saturating_sub(limit)..end]
                }
                None => {
                    let start = offset.min(st.order.len());
                    &st.order[start..(start.saturating_add(limit)).min(st.order.len())]
                }
                Some(_) => &st.order,
            };
            let walk: Box<dyn Iterator<Item = &String>> = if q.newest_first {
                Box::new(ids.iter().rev())
            } else {
                Box::new(ids.iter())
            };
            let skip = if status_set.is_some() { offset } else { 0 };
            let items = walk
                .filter_map(|id| st.rollouts.get(id))
                .filter(|e| {
                    status_set
                        .as_ref()
                        .is_none_or(|set| set.contains(&e.rollout.status))
                })
                .skip(skip)
                .take(limit)
                .map(|e| e.view())
                .collect();
            return Ok(Page {
                items,
                limit: q.page.limit,
                offset: q.page.offset,
                total,
            });
        }
        let id_set: Option<HashSet<&str>> = q
            .rollout_id_in
            .as_ref()
            .map(|ids| ids.iter().map(String::as_str).collect());
        let matches: Vec<&Entry> = match (&id_set, q.any) {
            // Only the listed ids can match: look them up instead of walking everything.
            (Some(ids), false) => st
                .order
                .iter()
                .filter(|id| ids.contains(id.as_str()))
                .filter_map(|id| st.rollouts.get(id).map(|e| &**e))
                .collect(),
            _ => st
                .order
                .iter()
                .filter_map(|id| st.rollouts.get(id).map(|e| &**e))
                .collect(),
        };
        let mut matches: Vec<&Entry> = matches
            .into_iter()
            .filter(|e| {
                let r = &e.rollout;
                let conds = [
                    status_set.as_ref().map(|s| s.contains(&r.status)),
                    id_set.as_ref().map(|s| s.contains(r.rollout_id.as_str())),
                    q.rollout_id_contains
                        .as_ref()
                        .map(|c| r.rollout_id.contains(c.as_str())),
                    q.mode_in
                        .as_ref()
                        .map(|m| r.mode.is_some_and(|mode| m.contains(&mode))),
                    q.started_from.map(|t| r.start_time >= t),
                    q.started_before.map(|t| r.start_time < t),
                ];
                combine(&conds, q.any)
            })
            .collect();
        if q.reversed() {
            matches.reverse();
        }
        let page = paginate(matches, &q.page, |e, field| rollout_key(&e.rollout, field))?;
        Ok(page.map(|e| e.view()))
    }

    /// Applies an update to a rollout.
    pub async fn update_rollout(
        &self,
        rollout_id: &str,
        patch: RolloutPatch,
    ) -> Result<Rollout, StoreError> {
        self.change(Need::rollouts([rollout_id]), true, |st, now| {
            let patch = patch.clone();
            let entry = st
                .rollouts
                .get_mut(rollout_id)
                .ok_or_else(|| StoreError::RolloutNotFound(rollout_id.to_owned()))?;
            let r = &mut entry.rollout;
            if let Some(input) = patch.input {
                r.input = input;
            }
            if let Some(mode) = patch.mode {
                r.mode = mode;
            }
            if let Some(resources_id) = patch.resources_id {
                r.resources_id = resources_id;
            }
            if let Some(config) = patch.config {
                r.config = config;
            }
            if let Some(metadata) = patch.metadata {
                r.metadata = metadata;
            }
            st.mark_rollout(rollout_id);
            if let Some(status) = patch.status {
                st.set_rollout_status(rollout_id, status, now);
            }
            Ok(st.rollouts[rollout_id].rollout.clone())
        })
        .await
    }

    /// Blocks until each listed rollout has finished or `timeout` seconds passed (`None`:
    /// no limit), then returns the finished ones in the order asked.
    pub async fn wait_for_rollouts(&self, ids: &[String], timeout: Option<f64>) -> Vec<Rollout> {
        if let Some(db) = &self.shared {
            return self.wait_shared(db, ids, timeout).await;
        }
        let now = self.now();
        let mut pending = Vec::new();
        {
            let mut st = self.state.lock();
            self.scan_and_submit(&mut st, now);
            if timeout.is_none_or(|t| t > 0.0) && !self.draining.load(AtomicOrdering::SeqCst) {
                for id in ids {
                    if let Some(e) = st.rollouts.get(id)
                        && !e.rollout.status.is_finished()
                    {
                        // Registered under the lock, so a finish right after unlocking is seen.
                        pending.push(self.waiters.register(id));
                    }
                }
            }
        }
        if !pending.is_empty() {
            let _call = self.waiters.enter();
            let all = futures::future::join_all(pending);
            let drain = self.drain.notified();
            let limit = timeout.map(|t| Duration::try_from_secs_f64(t).unwrap_or(Duration::MAX));
            tokio::select! {
                _ = all => {}
                () = drain => {}
                () = sleep_or_forever(limit) => {}
            }
            self.waiters.release(ids);
        }
        let (mut found, elsewhere): (HashMap<String, Rollout>, Vec<String>) = {
            let st = self.state.lock();
            let mut found = HashMap::new();
            let mut elsewhere = Vec::new();
            for id in ids {
                match st.rollouts.get(id) {
                    Some(e) => {
                        found.insert(id.clone(), e.rollout.clone());
                    }
                    None => elsewhere.push(id.clone()),
                }
            }
            (found, elsewhere)
        };
        // Rollouts memory does not hold are finished (and durable) or unknown: one read.
        if let Some(disk) = &self.disk
            && !elsewhere.is_empty()
        {
            let read = self
                .read_disk(disk, move |d| {
                    d.rollouts(RolloutFilter {
                        rollout_id_in: Some(&elsewhere),
                        ..RolloutFilter::default()
                    })
                })
                .await;
            match read {
                Ok(views) => found.extend(
                    views
                        .into_iter()
                        .map(|v| (v.rollout.rollout_id.clone(), v.rollout)),
                ),
                // The caller sees these as not finished yet and asks again.
                Err(e) => tracing::warn!(error = %e, "cannot read finished rollouts"),
            }
        }
        ids.iter()
            .filter_map(|id| found.remove(id))
            .filter(|r| r.status.is_finished())
            .collect()
    }

    // ----- attempts -------------------------------------------------------------------

    /// Applies an update to an attempt (`"latest"` names the newest), propagating its
    /// status to the rollout when it is the latest attempt.
    pub async fn update_attempt(
        &self,
        rollout_id: &str,
        attempt_id: &str,
        patch: AttemptPatch,
    ) -> Result<Attempt, StoreError> {
        let need = Need {
            workers: patch.worker_id.iter().cloned().collect(),
            ..Need::rollouts([rollout_id])
        };
        self.change(need, true, |st, now| {
            let entry = st
                .rollouts
                .get(rollout_id)
                .ok_or_else(|| StoreError::RolloutNotFound(rollout_id.to_owned()))?;
            if entry.attempts.is_empty() {
                return Err(StoreError::NoAttempts(rollout_id.to_owned()));
            }
            let idx =
                entry
                    .attempt_index(attempt_id)
                    .ok_or_else(|| StoreError::AttemptNotFound {
                        rollout_id: rollout_id.to_owned(),
                        attempt_id: attempt_id.to_owned(),
                    })?;
            Ok(st.apply_attempt_patch(rollout_id, idx, patch.clone(), now))
        })
        .await
    }

    /// Attempts of a rollout by sequence id (none for an unknown rollout).
    async fn attempts_of(&self, rollout_id: &str) -> Result<Vec<Attempt>, StoreError> {
        self.before_read().await;
        {
            let now = self.now();
            let mut st = self.state.lock();
            self.scan_and_submit(&mut st, now);
            if let Some(entry) = st.rollouts.get(rollout_id) {
                return Ok(entry.attempts.clone());
            }
        }
        let Some(disk) = &self.disk else {
            return Ok(Vec::new());
        };
        let id = rollout_id.to_owned();
        self.read_disk(disk, move |d| d.attempts(&id)).await
    }

    /// Attempts of a rollout (none for an unknown rollout).
    pub async fn query_attempts(
        &self,
        rollout_id: &str,
        page: &PageRequest,
    ) -> Result<Page<Attempt>, StoreError> {
        let attempts = self.attempts_of(rollout_id).await?;
        let mut page_req = page.clone();
        page_req
            .sort_by
            .get_or_insert_with(|| "sequence_id".to_owned());
        Ok(paginate(attempts.iter().collect(), &page_req, attempt_key)?.map(Clone::clone))
    }

    /// The newest attempt of a rollout, if any.
    pub async fn latest_attempt(&self, rollout_id: &str) -> Result<Option<Attempt>, StoreError> {
        Ok(self.attempts_of(rollout_id).await?.pop())
    }

    // ----- resources ------------------------------------------------------------------

    /// Stores a new resources version under a fresh id; it becomes the latest.
    pub async fn add_resources(
        &self,
        resources: NamedResources,
    ) -> Result<ResourcesUpdate, StoreError> {
        self.change(Need::default(), false, |st, now| {
            let id = fresh_id("rs-", 12, |id| st.resources_id_taken(id));
            Ok(st.upsert_resources(id, resources.clone(), now))
        })
        .await
    }

    /// Replaces (or creates) the resources under `id`, bumping its version.
    pub async fn update_resources(
        &self,
        id: &str,
        resources: NamedResources,
    ) -> Result<ResourcesUpdate, StoreError> {
        let need = Need {
            resources: vec![id.to_owned()],
            ..Need::default()
        };
        self.change(need, true, |st, now| {
            Ok(st.upsert_resources(id.to_owned(), resources.clone(), now))
        })
        .await
    }

    /// Resources by id.
    pub async fn get_resources(&self, id: &str) -> Result<Option<ResourcesUpdate>, StoreError> {
        if let Some(held) = self.state.lock().resources.get(id) {
            return Ok(Some(held.clone()));
        }
        let Some(disk) = &self.disk else {
            return Ok(None);
        };
        let id = id.to_owned();
        self.read_disk(disk, move |d| d.resources(&id)).await
    }

    /// The latest resources.
    pub async fn latest_resources(&self) -> Result<Option<ResourcesUpdate>, StoreError> {
        if let Some(db) = &self.shared {
            return Ok(db.latest_resources().await?);
        }
        let st = self.state.lock();
        Ok(st
            .latest_resources_id()
            .and_then(|id| st.resources.get(&id).cloned()))
    }

    /// Resources matching `q`.
    pub async fn query_resources(
        &self,
        q: &ResourcesQuery,
    ) -> Result<Page<ResourcesUpdate>, StoreError> {
        let all: Vec<ResourcesUpdate> = match &self.disk {
            // Memory holds the recent versions only: the backend answers, once it holds
            // everything memory shows.
            Some(disk) => {
                self.barrier().await?;
                self.read_disk(disk, |d| d.all_resources()).await?
            }
            None => self.state.lock().resources.values().cloned().collect(),
        };
        let matches: Vec<&ResourcesUpdate> = all
            .iter()
            .filter(|r| {
                q.resources_id
                    .as_ref()
                    .is_none_or(|id| &r.resources_id == id)
                    && q.resources_id_contains
                        .as_ref()
                        .is_none_or(|c| r.resources_id.contains(c.as_str()))
            })
            .collect();
        Ok(paginate(matches, &q.page, resources_key)?.map(Clone::clone))
    }

    // ----- spans ----------------------------------------------------------------------

    /// Issues the next span sequence id of a rollout (known or not, as upstream does).
    pub async fn next_sequence_id(&self, rollout_id: &str) -> Result<i64, StoreError> {
        let need = Need {
            sequences: true,
            attempt_workers: false,
            ..Need::rollouts([rollout_id])
        };
        let rollout_id = rollout_id.to_owned();
        self.change_once(need, move |st, _now| {
            let counter = st.sequence.entry(rollout_id.clone()).or_insert(0);
            *counter += 1;
            let issued = *counter;
            st.mark_sequence(&rollout_id);
            Ok(issued)
        })
        .await
    }

    /// Stores one span; `Ok(None)` when a span with the same attempt and span id exists.
    pub async fn add_span(&self, input: SpanInput) -> Result<Option<Arc<StoredSpan>>, StoreError> {
        let SpanInput { rollout_id, span } = input;
        let need = Need {
            sequences: true,
            attempt_workers: false,
            spans: self.stored_span_keys([(&rollout_id, &span)]),
            ..Need::rollouts([rollout_id.as_str()])
        };
        let limit = self.span_limit();
        let stored = self
            .change_once(need, move |st, now| {
                st.bump_sequence(&rollout_id, span.sequence_id());
                st.check_attempt(&rollout_id, &span.attempt_id())?;
                st.check_span_room(&rollout_id, limit)?;
                let stored = st.insert_span(&rollout_id, span);
                if let Some(stored) = &stored {
                    st.heartbeat(&rollout_id, &stored.attempt_id(), now);
                }
                Ok(stored)
            })
            .await?;
        if stored.is_some() {
            self.counters
                .spans_stored
                .fetch_add(1, AtomicOrdering::Relaxed);
        }
        Ok(stored)
    }

    /// Stores spans that may lack sequence ids (OTLP): missing ids are issued per rollout in
    /// order of appearance. Spans of unknown rollouts or attempts are counted as rejected
    /// rather than failing the whole batch.
    pub async fn add_spans_bulk(
        &self,
        spans: Vec<UnsequencedSpan>,
    ) -> Result<BulkOutcome, StoreError> {
        // A batch is mostly one rollout's spans.
        let ids: Vec<String> = spans
            .iter()
            .map(|s| s.span.rollout_id.as_str())
            .collect::<IndexSet<&str>>()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let need = Need {
            sequences: true,
            attempt_workers: false,
            spans: self.stored_span_keys(spans.iter().map(|s| (&s.span.rollout_id, &s.span.span))),
            ..Need::rollouts(ids)
        };
        let limit = self.span_limit();
        let outcome = self
            .change_once(need, move |st, now| {
                let mut outcome = BulkOutcome::default();
                // Reserve implicit ids per rollout in one step, as upstream's bulk issue does.
                let mut implicit: HashMap<&str, i64> = HashMap::new();
                for s in &spans {
                    if s.sequence_id.is_none() {
                        *implicit.entry(s.span.rollout_id.as_str()).or_default() += 1;
                    }
                }
                let mut next: HashMap<String, i64> = HashMap::new();
                for (rollout_id, count) in implicit {
                    let counter = st.sequence.entry(rollout_id.to_owned()).or_insert(0);
                    next.insert(rollout_id.to_owned(), *counter + 1);
                    *counter += count;
                    st.mark_sequence(rollout_id);
                }
                let mut touched: IndexSet<(String, String)> = IndexSet::new();
                for UnsequencedSpan {
                    span:
                        SpanInput {
                            rollout_id,
                            mut span,
                        },
                    sequence_id,
                } in spans
                {
                    let sequence_id = match sequence_id {
                        Some(id) => id,
                        None => {
                            let n = next.get_mut(&rollout_id).expect("reserved above");
                            *n += 1;
                            *n - 1
                        }
                    };
                    span.set_sequence_id(sequence_id);
                    st.bump_sequence(&rollout_id, sequence_id);
                    if st.check_attempt(&rollout_id, &span.attempt_id()).is_err()
                        || st.check_span_room(&rollout_id, limit).is_err()
                    {
                        outcome.rejected += 1;
                        continue;
                    }
                    let Some(stored) = st.insert_span(&rollout_id, span) else {
                        outcome.duplicates += 1;
                        continue;
                    };
                    outcome.stored += 1;
                    // A batch is mostly one attempt's spans: skip the set for repeats.
                    let attempt_id = stored.attempt_id();
                    if touched
                        .last()
                        .is_none_or(|(r, a)| *r != rollout_id || *a != attempt_id)
                    {
                        touched.insert((rollout_id, attempt_id.into_owned()));
                    }
                }
                for (rollout_id, attempt_id) in touched {
                    st.heartbeat(&rollout_id, &attempt_id, now);
                }
                Ok(outcome)
            })
            .await?;
        self.counters
            .spans_stored
            .fetch_add(outcome.stored as u64, AtomicOrdering::Relaxed);
        Ok(outcome)
    }

    /// Spans of one rollout matching `q`.
    pub async fn query_spans(&self, q: &SpanQuery) -> Result<Page<SpanDoc>, StoreError> {
        self.before_read().await;
        // Only the lookup and the pointer copies hold the lock; filtering by field, sorting
        // and cutting the page work on the copies after it is released.
        let empty = || Page {
            items: Vec::new(),
            limit: q.page.limit,
            offset: q.page.offset,
            total: 0,
        };
        let held: Option<Vec<Arc<StoredSpan>>> = {
            let now = self.now();
            let mut st = self.state.lock();
            self.scan_and_submit(&mut st, now);
            match st.rollouts.get(&q.rollout_id) {
                None => None,
                Some(entry) => {
                    let attempt_filter = match q.attempt_id.as_deref() {
                        Some("latest") => match entry.attempts.last() {
                            Some(a) => Some(a.attempt_id.as_str()),
                            None => return Ok(empty()),
                        },
                        other => other,
                    };
                    Some(
                        entry
                            .spans
                            .iter()
                            .filter(|s| attempt_filter.is_none_or(|a| s.attempt_id() == a))
                            .cloned()
                            .collect(),
                    )
                }
            }
        };
        let candidates = match (held, &self.disk) {
            (Some(spans), _) => spans,
            (None, None) => return Ok(empty()),
            (None, Some(disk)) => return self.query_stored_spans(disk, q).await,
        };
        filter_spans(candidates, q)
    }

    /// [`Self::query_spans`] of a rollout memory does not hold. An unfiltered query in
    /// sequence order (what clients ask nearly always) is answered with the stored texts as
    /// they are; any other is answered by the same filters and sort as a held rollout's.
    async fn query_stored_spans(
        &self,
        disk: &Arc<dyn History>,
        q: &SpanQuery,
    ) -> Result<Page<SpanDoc>, StoreError> {
        let in_sequence = q.page.sort_by.as_deref().is_none_or(|f| f == "sequence_id");
        let (rollout_id, attempt_id) = (q.rollout_id.clone(), q.attempt_id.clone());
        if in_sequence && q.field_filters().is_empty() {
            let descending = q.page.descending;
            let texts = self
                .read_disk(disk, move |d| {
                    let Some(attempt) = stored_attempt(d, &rollout_id, attempt_id)? else {
                        return Ok(Vec::new());
                    };
                    d.span_texts(&rollout_id, attempt.as_deref(), descending)
                })
                .await?;
            // Already in order: only the page is cut.
            let page = PageRequest {
                sort_by: None,
                ..q.page.clone()
            };
            return paginate(
                texts.into_iter().map(SpanDoc::Text).collect(),
                &page,
                |_, _| None,
            );
        }
        // One span by id (a dashboard's span details): only the documents whose text holds
        // the id are parsed, not every span of a long rollout. (Under OR another filter may
        // match a span without that id: then every document is read.)
        let one = q.span_id.clone().filter(|_| !q.any);
        let spans = self
            .read_disk(disk, move |d| {
                let Some(attempt) = stored_attempt(d, &rollout_id, attempt_id)? else {
                    return Ok(Vec::new());
                };
                let Some(id) = one else {
                    return d.spans(&rollout_id, attempt.as_deref());
                };
                d.span_texts(&rollout_id, attempt.as_deref(), false)?
                    .iter()
                    .filter(|text| text.contains(id.as_str()))
                    .map(|text| {
                        StoredSpan::from_json(text)
                            .map_err(|e| StorageError(format!("bad span document: {e}")))
                    })
                    .collect()
            })
            .await?;
        filter_spans(spans.into_iter().map(Arc::new).collect(), q)
    }

    // ----- workers --------------------------------------------------------------------

    /// Records a heartbeat of a worker (created if unknown), replacing its stats if given.
    pub async fn update_worker(
        &self,
        worker_id: &str,
        stats: Option<Json>,
    ) -> Result<Worker, StoreError> {
        let need = Need {
            workers: vec![worker_id.to_owned()],
            ..Need::default()
        };
        self.change(need, false, |st, now| {
            let w = st.worker_mut(worker_id);
            w.last_heartbeat_time = Some(now);
            if let Some(stats) = &stats {
                w.heartbeat_stats = Some(stats.clone());
            }
            Ok(w.clone())
        })
        .await
    }

    /// A worker by id.
    pub async fn get_worker(&self, worker_id: &str) -> Result<Option<Worker>, StoreError> {
        if let Some(db) = &self.shared {
            return Ok(db.worker(worker_id).await?);
        }
        Ok(self.state.lock().workers.get(worker_id).cloned())
    }

    /// Workers matching `q`.
    pub async fn query_workers(&self, q: &WorkerQuery) -> Result<Page<Worker>, StoreError> {
        let workers: Vec<Worker> = match &self.shared {
            Some(db) => {
                self.scan_shared(db).await;
                db.totals().await?.workers
            }
            None => {
                let now = self.now();
                let mut st = self.state.lock();
                self.scan_and_submit(&mut st, now);
                st.workers.values().cloned().collect()
            }
        };
        let matches: Vec<&Worker> = workers
            .iter()
            .filter(|w| {
                let conds = [
                    q.status_in.as_ref().map(|s| s.contains(&w.status)),
                    q.worker_id_contains
                        .as_ref()
                        .map(|c| w.worker_id.contains(c.as_str())),
                ];
                combine(&conds, q.any)
            })
            .collect();
        Ok(paginate(matches, &q.page, worker_key)?.map(Clone::clone))
    }

    // ----- housekeeping ---------------------------------------------------------------

    /// Runs the watchdog now unless the debounce says a scan ran too recently; with a
    /// shared database, also refreshes the totals metrics report.
    pub async fn watchdog_tick(&self) {
        if let Some(db) = &self.shared {
            self.scan_shared(db).await;
            return;
        }
        let now = self.now();
        let mut st = self.state.lock();
        self.scan_and_submit(&mut st, now);
    }

    /// Reads the totals [`Self::gauges`] reports, when they live in a shared database.
    pub async fn refresh_gauges(&self) {
        if let Some(db) = &self.shared {
            match db.totals().await {
                Ok(totals) => *self.totals.lock() = Some(totals),
                Err(e) => tracing::warn!(error = %e, "cannot read the totals"),
            }
        }
    }

    /// Whether the storage answers within a second (always, unless it is a database).
    pub async fn storage_reachable(&self) -> bool {
        match &self.shared {
            Some(db) => tokio::time::timeout(Duration::from_secs(1), db.ping())
                .await
                .is_ok_and(|r| r.is_ok()),
            None => true,
        }
    }

    /// Whether the storage is a database other processes share.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// `--max-queued-rollouts` where the store holds the queue (not with shared storage,
    /// where it lives in the database and a replica sees only the rows a change reads).
    pub(crate) fn queue_limit(&self) -> Option<usize> {
        (!self.is_shared()).then_some(self.config.max_queued_rollouts)
    }

    /// `--max-spans-per-rollout` where a live rollout's spans are held in memory (not with
    /// shared storage).
    pub(crate) fn span_limit(&self) -> Option<usize> {
        (!self.is_shared()).then_some(self.config.max_spans_per_rollout)
    }

    /// Collection sizes and uptime.
    pub async fn statistics(&self) -> Result<Statistics, StoreError> {
        if let Some(db) = &self.shared {
            let totals = db.totals().await?;
            let c = &totals.counts;
            let stats = Statistics {
                name: "PostgresLightningStore",
                backend: db.name(),
                total_rollouts: c.rollouts.iter().sum(),
                total_attempts: c.attempts.iter().sum(),
                total_spans: c.spans,
                total_resources: c.resources,
                total_workers: totals.workers.len(),
                uptime: self.started.elapsed().as_secs_f64(),
                total_span_bytes: c.span_bytes,
                queue_length: totals.queue,
            };
            *self.totals.lock() = Some(totals);
            return Ok(stats);
        }
        let st = self.state.lock();
        Ok(Statistics {
            name: match self.backend.name() {
                "sqlite" => "SqliteLightningStore",
                _ => "InMemoryLightningStore",
            },
            backend: self.backend.name(),
            // Memory may hold only part of the rollouts; the counts are of all of them.
            total_rollouts: st.rollout_counts.iter().sum(),
            total_attempts: st.total_attempts,
            total_spans: st.total_spans,
            total_resources: st.total_resources,
            total_workers: st.workers.len(),
            uptime: self.started.elapsed().as_secs_f64(),
            total_span_bytes: st.span_bytes,
            queue_length: st.queue.len(),
        })
    }

    /// Current gauge values for metrics (kept incrementally: no scan).
    pub fn gauges(&self) -> Gauges {
        if self.shared.is_some() {
            return self.shared_gauges();
        }
        let st = self.state.lock();
        Gauges::of(
            &st.counts(),
            st.workers.values(),
            st.queue.len(),
            self.waiters.calls(),
            st.rollouts.len(),
        )
    }

    /// Seconds since the store was created, by its clock.
    pub fn created_at(&self) -> f64 {
        self.created
    }

    fn scan_if_due(&self, st: &mut State, now: f64) {
        let debounce = self.config.scan_debounce_seconds;
        if debounce > 0.0 && st.last_scan.is_some_and(|last| now - last < debounce) {
            return;
        }
        st.last_scan = Some(now);
        let (timeouts, unresponsive) = st.scan(now);
        self.counters
            .watchdog_timeouts
            .fetch_add(timeouts, AtomicOrdering::Relaxed);
        self.counters
            .watchdog_unresponsive
            .fetch_add(unresponsive, AtomicOrdering::Relaxed);
    }
}

/// A span change decided again after its transaction was retried: its spans were handed
/// over already. (Span changes create no ids and lock in one order, so a shared database
/// has no reason to retry them.)
pub(super) fn retried_span() -> StoreError {
    StoreError::Storage(StorageError(
        "a span write was retried after a conflict; send it again".into(),
    ))
}

/// The field filters, sort and page of a span query over one rollout's spans.
fn filter_spans(
    candidates: Vec<Arc<StoredSpan>>,
    q: &SpanQuery,
) -> Result<Page<SpanDoc>, StoreError> {
    let filters = q.field_filters();
    let matches: Vec<Arc<StoredSpan>> = if filters.is_empty() {
        candidates
    } else {
        candidates
            .into_iter()
            .filter(|s| {
                let mut results = filters.iter().map(|(value, test)| test(s, value));
                if q.any {
                    results.any(|b| b)
                } else {
                    results.all(|b| b)
                }
            })
            .collect()
    };
    let mut page_req = q.page.clone();
    page_req
        .sort_by
        .get_or_insert_with(|| "sequence_id".to_owned());
    let rollout_id = q.rollout_id.as_str();
    Ok(paginate(matches, &page_req, |s, f| span_key(rollout_id, s, f))?.map(SpanDoc::Held))
}

/// The attempt a span query of a stored rollout names: `None` when it asks for the latest
/// and the rollout has none (nothing matches); `Some(None)` for every attempt.
fn stored_attempt(
    d: &dyn History,
    rollout_id: &str,
    attempt_id: Option<String>,
) -> Result<Option<Option<String>>, StorageError> {
    Ok(match attempt_id.as_deref() {
        Some("latest") => d.attempts(rollout_id)?.pop().map(|a| Some(a.attempt_id)),
        _ => Some(attempt_id),
    })
}

async fn sleep_or_forever(limit: Option<Duration>) {
    match limit {
        Some(d) if d < Duration::from_secs(10 * 365 * 24 * 3600) => tokio::time::sleep(d).await,
        _ => std::future::pending().await,
    }
}

/// Combines filter results; `None` entries are filters that were not given.
fn combine(conds: &[Option<bool>], any: bool) -> bool {
    let mut given = conds.iter().flatten().peekable();
    if given.peek().is_none() {
        return true;
    }
    if any {
        given.copied().any(|b| b)
    } else {
        given.copied().all(|b| b)
    }
}

#[cfg(test)]
mod tests {
    use super::query::time_key;
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn random_ids_are_prefixed_lowercase_hex_of_the_asked_length() {
        let mut seen = std::collections::HashSet::new();
        for digits in [8, 12, 16, 20] {
            for _ in 0..200 {
                let id = random_id("ro-", digits);
                let hex = id.strip_prefix("ro-").expect("prefix");
                assert_eq!(hex.len(), digits);
                assert!(
                    hex.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                );
                assert!(seen.insert(id));
            }
        }
        // Every digit value turns up, at every position.
        let ids: Vec<String> = (0..2000).map(|_| random_id("", 12)).collect();
        for pos in 0..12 {
            let digits: std::collections::HashSet<u8> =
                ids.iter().map(|id| id.as_bytes()[pos]).collect();
            assert_eq!(digits.len(), 16, "position {pos}");
        }
    }

    fn store(clock: Arc<ManualClock>) -> Store {
        Store::new(
            StoreConfig {
                scan_debounce_seconds: 0.0,
                ..StoreConfig::default()
            },
            clock,
        )
    }

    fn raw(s: &str) -> Json {
        Arc::from(RawValue::from_string(s.to_owned()).unwrap())
    }

    fn new_rollout(config: Option<RolloutConfig>) -> NewRollout {
        NewRollout {
            input: raw("1"),
            mode: None,
            resources_id: None,
            config,
            metadata: None,
            rollout_id: None,
            v1: None,
        }
    }

    #[tokio::test]
    async fn retry_then_fail_follows_max_attempts() {
        let clock = Arc::new(ManualClock::new(1000.0));
        let s = store(clock);
        let cfg = RolloutConfig {
            max_attempts: 2,
            retry_condition: vec![AttemptStatus::Failed],
            ..RolloutConfig::default()
        };
        let r = &s
            .enqueue_rollouts(vec![new_rollout(Some(cfg))])
            .await
            .unwrap()[0];
        let first = s.dequeue(1, Some("w".into())).await.unwrap();
        assert_eq!(first[0].attempt.as_ref().unwrap().sequence_id, 1);
        let fail = AttemptPatch {
            status: Some(AttemptStatus::Failed),
            ..AttemptPatch::default()
        };
        s.update_attempt(&r.rollout_id, "latest", fail.clone())
            .await
            .unwrap();
        assert_eq!(
            s.get_rollout(&r.rollout_id)
                .await
                .unwrap()
                .unwrap()
                .rollout
                .status,
            RolloutStatus::Requeuing
        );
        let second = s.dequeue(1, None).await.unwrap();
        assert_eq!(second[0].attempt.as_ref().unwrap().sequence_id, 2);
        s.update_attempt(&r.rollout_id, "latest", fail)
            .await
            .unwrap();
        let done = s.get_rollout(&r.rollout_id).await.unwrap().unwrap().rollout;
        assert_eq!(done.status, RolloutStatus::Failed);
        assert!(done.end_time.is_some());
        assert!(s.dequeue(1, None).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn watchdog_times_out_from_attempt_start_and_marks_worker_unknown() {
        let clock = Arc::new(ManualClock::new(1000.0));
        let s = store(Arc::clone(&clock));
        let cfg = RolloutConfig {
            timeout_seconds: Some(5.0),
            max_attempts: 2,
            retry_condition: vec![AttemptStatus::Timeout],
            ..RolloutConfig::default()
        };
        let r = &s
            .enqueue_rollouts(vec![new_rollout(Some(cfg))])
            .await
            .unwrap()[0];
        s.dequeue(1, Some("w1".into())).await.unwrap();
        clock.advance(5.0);
        s.watchdog_tick().await;
        assert_eq!(
            s.latest_attempt(&r.rollout_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            AttemptStatus::Preparing
        );
        clock.advance(0.5);
        s.watchdog_tick().await;
        let attempt = s.latest_attempt(&r.rollout_id).await.unwrap().unwrap();
        assert_eq!(attempt.status, AttemptStatus::Timeout);
        assert_eq!(attempt.end_time, None);
        assert_eq!(
            s.get_rollout(&r.rollout_id)
                .await
                .unwrap()
                .unwrap()
                .rollout
                .status,
            RolloutStatus::Requeuing
        );
        let w = s.get_worker("w1").await.unwrap().unwrap();
        assert_eq!(w.status, WorkerStatus::Unknown);
        assert_eq!(w.current_rollout_id, None);
    }

    #[tokio::test]
    async fn debounce_limits_scans() {
        let clock = Arc::new(ManualClock::new(1000.0));
        let s = Store::new(
            StoreConfig {
                scan_debounce_seconds: 10.0,
                ..StoreConfig::default()
            },
            Arc::clone(&clock) as Arc<dyn Clock>,
        );
        let cfg = RolloutConfig {
            timeout_seconds: Some(1.0),
            ..RolloutConfig::default()
        };
        // First call scans (nothing to do), arming the debounce.
        let r = &s
            .enqueue_rollouts(vec![new_rollout(Some(cfg))])
            .await
            .unwrap()[0];
        s.dequeue(1, None).await.unwrap();
        clock.advance(2.0);
        s.watchdog_tick().await;
        assert_eq!(
            s.latest_attempt(&r.rollout_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            AttemptStatus::Preparing
        );
        clock.advance(8.5);
        s.watchdog_tick().await;
        assert_eq!(
            s.latest_attempt(&r.rollout_id)
                .await
                .unwrap()
                .unwrap()
                .status,
            AttemptStatus::Timeout
        );
    }

    #[test]
    fn sorting_nulls_and_desc() {
        let items = vec![(1, Some(2.0)), (2, None), (3, Some(1.0))];
        let page = PageRequest {
            sort_by: Some("t".into()),
            ..PageRequest::default()
        };
        let key = |it: &(i32, Option<f64>), _: &str| time_key(it.1);
        let asc = paginate(items.clone(), &page, key).unwrap();
        assert_eq!(asc.items.iter().map(|i| i.0).collect::<Vec<_>>(), [3, 1, 2]);
        let desc = PageRequest {
            descending: true,
            limit: 2,
            offset: 0,
            ..page
        };
        let d = paginate(items, &desc, key).unwrap();
        assert_eq!(d.items.iter().map(|i| i.0).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(d.total, 3);
    }

    #[test]
    fn combine_treats_missing_filters_as_match_all() {
        assert!(combine(&[None, None], false));
        assert!(combine(&[None, None], true));
        assert!(combine(&[Some(true), Some(false)], true));
        assert!(!combine(&[Some(true), Some(false)], false));
    }
}
