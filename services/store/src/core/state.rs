//! The mutable state behind the store's lock and the transitions that change it. Every
//! status change of a rollout goes through [`State::set_rollout_status`], every attempt
//! change through [`State::apply_attempt_patch`]: the status machines live here, once.
//!
//! With a backend that keeps history ([`History`]) the state is a cache of it: it holds
//! every unfinished rollout and the most recently finished ones (up to a size), drops the
//! oldest finished ones once their last change is durable ([`State::evict`]), and takes a
//! rollout back, read from the backend outside the lock, before changing it
//! ([`State::install`], which refuses rows that may have gone stale meanwhile).

use std::collections::VecDeque;
use std::hash::BuildHasher as _;
use std::sync::Arc;

/// The store's indexes hash untrusted ids with a fast, randomly seeded hasher.
type Hasher = foldhash::fast::RandomState;
pub(super) type HashMap<K, V> = std::collections::HashMap<K, V, Hasher>;
pub(super) type IndexMap<K, V> = indexmap::IndexMap<K, V, Hasher>;
pub(super) type IndexSet<K> = indexmap::IndexSet<K, Hasher>;
use super::sharded::ShardedMap;
use super::waiters::Waiters;
use super::{AttemptPatch, FinishHook, NewRollout, StoreError, empty_object, fresh_id};
use crate::model::{
    Attempt, AttemptStatus, NamedResources, ResourcesUpdate, Rollout, RolloutConfig, RolloutStatus,
    RolloutView, StoredSpan, Worker, WorkerStatus,
};
use crate::persist::{Change, Counts, History, RolloutRows, Snapshot};
use hashbrown::hash_table::{self, HashTable};

/// What a rollout's entry costs beside its spans' text, for the cache's size.
const ENTRY_BYTES: usize = 1024;

pub(super) struct Entry {
    pub(super) rollout: Rollout,
    /// Index `i` holds the attempt with sequence id `i + 1`.
    pub(super) attempts: Vec<Attempt>,
    pub(super) spans: Vec<Arc<StoredSpan>>,
    /// Indexes into `spans` by `(attempt_id, span_id)`, for duplicate detection: the ids
    /// stay in the span documents instead of being copied into a set of strings.
    pub(super) span_keys: HashTable<u32>,
    /// In the queue: a rollout is queued at most once (a flag here rather than a set of
    /// ids, which would be one more table to grow under the lock).
    pub(super) queued: bool,
    /// The batch that carries the latest change of this rollout to the backend: the entry
    /// may be dropped from memory once that batch is durable.
    last_batch: u64,
    /// Read back from the backend, which holds all its spans as they are: leaving memory
    /// again needs no new pack unless a span was added since.
    packed: bool,
}

/// The duplicate-detection hash of a span.
fn span_hash(hasher: &Hasher, span: &StoredSpan) -> u64 {
    hasher.hash_one((&*span.attempt_id(), &*span.span_id()))
}

impl Entry {
    fn new(rollout: Rollout) -> Self {
        Self {
            rollout,
            attempts: Vec::new(),
            spans: Vec::new(),
            span_keys: HashTable::new(),
            queued: false,
            last_batch: 0,
            packed: false,
        }
    }

    /// What the entry holds, for the cache's size.
    fn bytes(&self) -> usize {
        ENTRY_BYTES + self.spans.iter().map(|s| s.json_len()).sum::<usize>()
    }

    pub(super) fn view(&self) -> RolloutView {
        RolloutView {
            rollout: self.rollout.clone(),
            attempt: self.attempts.last().cloned(),
        }
    }

    /// Appends `span` unless one with its attempt and span id is stored; returns it shared.
    fn push_span(&mut self, hasher: &Hasher, span: StoredSpan) -> Option<Arc<StoredSpan>> {
        // Four billion spans in one rollout would take terabytes; refusing is enough.
        let index = u32::try_from(self.spans.len()).ok()?;
        let spans = &self.spans;
        let (attempt_id, span_id) = (span.attempt_id(), span.span_id());
        let same = |&i: &u32| {
            let other = &spans[i as usize];
            other.span_id() == span_id && other.attempt_id() == attempt_id
        };
        match self.span_keys.entry(span_hash(hasher, &span), same, |&i| {
            span_hash(hasher, &spans[i as usize])
        }) {
            hash_table::Entry::Occupied(_) => return None,
            hash_table::Entry::Vacant(slot) => {
                slot.insert(index);
            }
        }
        let span = Arc::new(span);
        self.spans.push(Arc::clone(&span));
        Some(span)
    }

    pub(super) fn attempt_index(&self, attempt_id: &str) -> Option<usize> {
        if attempt_id == "latest" {
            return self.attempts.len().checked_sub(1);
        }
        self.attempts
            .iter()
            .rposition(|a| a.attempt_id == attempt_id)
    }
}

#[derive(Default)]
pub(super) struct State {
    /// Sharded, and boxed so that growing a shard moves pointers, not 256-byte entries:
    /// an insert that crosses a capacity step stalls the callers behind the lock briefly.
    pub(super) rollouts: ShardedMap<Box<Entry>>,
    /// Rollout ids in creation order (the natural order of unsorted queries); ids are
    /// unique by construction, so a list does without a table to rehash as it grows.
    pub(super) order: Vec<String>,
    pub(super) queue: VecDeque<String>,
    /// Rollouts the watchdog watches: those preparing or running.
    pub(super) active: IndexSet<String>,
    pub(super) workers: IndexMap<String, Worker>,
    pub(super) resources: IndexMap<String, ResourcesUpdate>,
    pub(super) latest_resources: Option<String>,
    pub(super) sequence: HashMap<String, i64>,
    /// Woken when a rollout finishes (those of the store; an ephemeral state has its own).
    pub(super) waiters: Arc<Waiters>,
    /// Rollouts that finished, recorded only in an ephemeral state (their waiters are told
    /// once the transaction commits).
    pub(super) finished_now: Option<Vec<String>>,
    pub(super) last_scan: Option<f64>,
    pub(super) total_attempts: usize,
    pub(super) total_spans: usize,
    pub(super) span_bytes: usize,
    /// Resources versions stored (with history, more than memory holds).
    pub(super) total_resources: usize,
    /// Hashes `(attempt_id, span_id)` for every rollout's `span_keys`.
    pub(super) span_hasher: Hasher,
    /// Rollouts per status, by `RolloutStatus::index`, kept as statuses change.
    pub(super) rollout_counts: [usize; 7],
    /// Attempts per status, by `AttemptStatus::index`.
    pub(super) attempt_counts: [usize; 6],
    pub(super) finish_hook: Option<FinishHookRef>,
    /// Present only when the backend persists changes.
    pub(super) journal: Option<Journal>,
    /// The rows memory does not hold, when the backend keeps history; `None`: memory holds
    /// everything (and `order` lists every rollout).
    pub(super) disk: Option<Arc<dyn History>>,
    /// Batches handed to the backend so far (every submit happens under the lock).
    pub(super) batches: u64,
    /// Finished rollouts still held, oldest first, with what each held when it finished.
    finished: VecDeque<(String, usize)>,
    finished_bytes: usize,
    /// Rollouts dropped from memory so far, and when each of the recent ones was (so that
    /// rows read outside the lock can be told stale, see [`State::install`]).
    pub(super) evictions: u64,
    evicted: HashMap<OwnedKey, u64>,
    evicted_order: VecDeque<(OwnedKey, u64)>,
    evicted_floor: u64,
    /// The batch carrying the latest change of each resources version held (history only).
    resources_batch: HashMap<String, u64>,
    /// Packs of the spans of rollouts that just left memory, for the backend.
    pub(super) packs: Vec<Change>,
    /// Settings kept beside the rows (all of them: a handful), as JSON text.
    pub(super) meta: HashMap<String, String>,
    /// Rollouts deleted, with the batch that deletes them from the backend: until it is
    /// durable, rows of them read from the backend are stale and not put back (history only).
    deleted: HashMap<String, u64>,
}

/// What a change needs in memory, by id.
#[derive(Debug, Clone, Copy)]
pub(super) enum Key<'a> {
    /// A rollout with its attempts, spans and sequence counter (or, for an id without a
    /// rollout, its sequence counter).
    Rollout(&'a str),
    /// A resources version.
    Resources(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum OwnedKey {
    Rollout(String),
    Resources(String),
}

impl Key<'_> {
    pub(super) fn owned(self) -> OwnedKey {
        match self {
            Key::Rollout(id) => OwnedKey::Rollout(id.to_owned()),
            Key::Resources(id) => OwnedKey::Resources(id.to_owned()),
        }
    }
}

/// Resources versions held in memory with a backend that keeps history (the latest always).
const RESOURCES_HELD: usize = 64;

/// What the backend holds for a key memory does not hold, read outside the lock.
pub(super) enum Fetched {
    Rollout {
        id: String,
        rows: Option<Box<RolloutRows>>,
        sequence: Option<i64>,
    },
    Resources {
        id: String,
        row: Option<ResourcesUpdate>,
    },
}

/// Evictions remembered one by one (about 3 MB of ids); older ones only as
/// [`State::evicted_floor`], so that a read outside the lock that outlasts this many
/// evictions is made again.
const EVICTIONS_REMEMBERED: usize = 1 << 14;

pub(super) type FinishHookRef = Arc<FinishHook>;

/// What changed since the last commit, for a journaling backend. Rows are recorded by key
/// and read back whole when the batch is taken, so several changes to one row in one call
/// become one write.
#[derive(Default)]
pub(super) struct Journal {
    rollouts: IndexSet<String>,
    attempts: IndexSet<(String, usize)>,
    workers: IndexSet<String>,
    resources: IndexSet<String>,
    latest_resources: bool,
    sequences: IndexSet<String>,
    spans: Vec<(String, Arc<StoredSpan>)>,
    /// Queue operations keep their order: a push and a pop of one id may both happen.
    queue: Vec<Change>,
    /// Rollouts deleted, written after everything else of the batch.
    deleted: Vec<String>,
    /// Settings set or cleared.
    meta: IndexSet<String>,
}

/// The LightningStore: cheap to share behind an `Arc`.
impl State {
    /// Rebuilds the working set from what a backend stored.
    pub(super) fn restore(
        snapshot: Snapshot,
        journaling: bool,
        disk: Option<Arc<dyn History>>,
    ) -> Self {
        let mut st = State {
            journal: journaling.then(Journal::default),
            disk,
            ..State::default()
        };
        for rollout in snapshot.rollouts {
            let id = rollout.rollout_id.clone();
            st.rollout_counts[rollout.status.index()] += 1;
            if rollout.status.is_running() {
                st.active.insert(id.clone());
            }
            if st.disk.is_none() {
                st.order.push(id.clone());
            }
            st.rollouts.insert(id, Box::new(Entry::new(rollout)));
        }
        let mut attempts = snapshot.attempts;
        attempts.sort_by_key(|a| a.sequence_id);
        for attempt in attempts {
            if let Some(entry) = st.rollouts.get_mut(&attempt.rollout_id) {
                st.attempt_counts[attempt.status.index()] += 1;
                st.total_attempts += 1;
                entry.attempts.push(attempt);
            }
        }
        for (rollout_id, span) in snapshot.spans {
            if let Some(entry) = st.rollouts.get_mut(&rollout_id) {
                let bytes = span.json_len();
                if entry.push_span(&st.span_hasher, span).is_some() {
                    st.span_bytes += bytes;
                    st.total_spans += 1;
                }
            }
        }
        for worker in snapshot.workers {
            st.workers.insert(worker.worker_id.clone(), worker);
        }
        for resources in snapshot.resources {
            st.resources
                .insert(resources.resources_id.clone(), resources);
        }
        st.total_resources = st.resources.len();
        st.latest_resources = snapshot.latest_resources;
        st.meta = snapshot.meta.into_iter().collect();
        st.sequence = snapshot.sequences.into_iter().collect();
        for id in snapshot.queue {
            if st.mark_queued(&id) {
                st.queue.push_back(id);
            }
        }
        // The snapshot is the live part only: the totals of everything come with it.
        if let Some(counts) = snapshot.counts {
            st.rollout_counts = counts.rollouts;
            st.attempt_counts = counts.attempts;
            st.total_attempts = counts.attempts.iter().sum();
            st.total_spans = counts.spans;
            st.span_bytes = counts.span_bytes;
            st.total_resources = counts.resources;
        }
        st
    }

    /// The rows a shared database's transaction read, as a state of their own, to decide one
    /// change on exactly as memory does (see [`crate::persist::Shared`]).
    pub(super) fn ephemeral(snapshot: Snapshot, finish_hook: Option<FinishHookRef>) -> Self {
        let mut st = Self::restore(snapshot, true, None);
        st.finished_now = Some(Vec::new());
        st.finish_hook = finish_hook;
        st
    }

    /// The running totals.
    pub(super) fn counts(&self) -> Counts {
        Counts {
            rollouts: self.rollout_counts,
            attempts: self.attempt_counts,
            spans: self.total_spans,
            span_bytes: self.span_bytes,
            resources: self.total_resources,
        }
    }

    /// Whether memory holds what a change needs of `key`: the rollout, or (for an id without
    /// one) its sequence counter; the resources version. Always true without history: then
    /// memory is everything.
    pub(super) fn holds(&self, key: Key<'_>) -> bool {
        self.disk.is_none()
            || match key {
                Key::Rollout(id) => {
                    self.rollouts.contains_key(id) || self.sequence.contains_key(id)
                }
                Key::Resources(id) => self.resources.contains_key(id),
            }
    }

    /// Whether `key` left memory after eviction number `since` (or may have: evictions
    /// before `evicted_floor` are forgotten), so that rows read since may be stale.
    pub(super) fn evicted_since(&self, key: Key<'_>, since: u64) -> bool {
        since < self.evicted_floor || self.evicted.get(&key.owned()).is_some_and(|&n| n > since)
    }

    /// Puts what the backend held for a key memory did not hold in place (rows read outside
    /// the lock after eviction number `since`); false when they may be stale, so the caller
    /// reads again. Rows memory holds meanwhile win: memory is never older than the disk.
    pub(super) fn install(&mut self, fetched: Fetched, since: u64) -> bool {
        let (id, rows, sequence) = match fetched {
            Fetched::Rollout { id, rows, sequence } => (id, rows, sequence),
            Fetched::Resources { id, row } => {
                if self.resources.contains_key(&id) {
                    return true;
                }
                if self.evicted_since(Key::Resources(&id), since) {
                    return false;
                }
                if let Some(row) = row {
                    self.resources.insert(id, row);
                }
                return true;
            }
        };
        if self.rollouts.contains_key(&id) {
            return true;
        }
        if self.evicted_since(Key::Rollout(&id), since) {
            return false;
        }
        let durable = self.disk.as_ref().map_or(0, |d| d.durable_batches());
        let rows = rows.filter(|_| self.deleted.get(&id).is_none_or(|&batch| batch <= durable));
        let Some(rows) = rows else {
            // Sequence ids are issued for unknown rollouts too.
            if let Some(value) = sequence {
                self.sequence.entry(id).or_insert(value);
            }
            return true;
        };
        let mut entry = Box::new(Entry::new(rows.rollout));
        entry.packed = true;
        entry.attempts = rows.attempts;
        for span in rows.spans {
            entry.push_span(&self.span_hasher, span);
        }
        let status = entry.rollout.status;
        let bytes = entry.bytes();
        self.rollouts.insert(id.clone(), entry);
        if let Some(value) = rows.sequence {
            let counter = self.sequence.entry(id.clone()).or_insert(value);
            *counter = (*counter).max(value);
        }
        // Only finished rollouts leave memory, but a damaged file may say otherwise.
        if status.is_running() {
            self.active.insert(id.clone());
        }
        if status.is_finished() {
            self.remember_finished(&id, bytes);
        }
        true
    }

    /// Notes that `key` left memory now.
    fn forget(&mut self, key: Key<'_>) {
        self.evictions += 1;
        let key = key.owned();
        self.evicted.insert(key.clone(), self.evictions);
        self.evicted_order.push_back((key, self.evictions));
        if self.evicted_order.len() > EVICTIONS_REMEMBERED
            && let Some((old, n)) = self.evicted_order.pop_front()
        {
            if self.evicted.get(&old) == Some(&n) {
                self.evicted.remove(&old);
            }
            self.evicted_floor = n;
        }
    }

    /// Whether a resources id is taken, in memory or in the backend's history.
    pub(super) fn resources_id_taken(&self, id: &str) -> bool {
        self.resources.contains_key(id)
            || self
                .disk
                .as_ref()
                .is_some_and(|disk| disk.resources_exist(id).unwrap_or(false))
    }

    /// Whether a rollout id is taken, in memory or in the backend's history.
    fn rollout_id_taken(&self, id: &str) -> bool {
        self.rollouts.contains_key(id)
            || self
                .disk
                .as_ref()
                .is_some_and(|disk| disk.rollout_exists(id).unwrap_or(false))
    }

    fn remember_finished(&mut self, id: &str, bytes: usize) {
        if self.disk.is_some() {
            self.finished.push_back((id.to_owned(), bytes));
            self.finished_bytes += bytes;
        }
    }

    /// Drops the oldest finished rollouts from memory while those held take more than
    /// `limit` bytes, each only once its last change is durable (reads then go to the
    /// backend, and a change brings it back first).
    pub(super) fn evict(&mut self, limit: usize) {
        let Some(disk) = self.disk.clone() else {
            return;
        };
        if self.resources.len() > RESOURCES_HELD {
            self.evict_resources(disk.durable_batches());
        }
        if !self.deleted.is_empty() {
            let durable = disk.durable_batches();
            self.deleted.retain(|_, batch| *batch > durable);
        }
        if self.finished_bytes <= limit {
            return;
        }
        let durable = disk.durable_batches();
        // Each remembered rollout is looked at once at most: one whose last change is not
        // durable yet goes to the back (it is, within a commit or two), so that it never
        // holds up the ones behind it.
        let mut waiting = 0;
        while self.finished_bytes > limit && waiting < self.finished.len() {
            let Some((id, bytes)) = self.finished.pop_front() else {
                break;
            };
            match self.rollouts.get(&id) {
                // Reopened since it finished (or queued again): it stays, and is remembered
                // again when it finishes again.
                Some(entry) if !entry.rollout.status.is_finished() || entry.queued => {}
                Some(entry) if entry.last_batch > durable => {
                    self.finished.push_back((id, bytes));
                    waiting += 1;
                    continue;
                }
                Some(_) => {
                    if let Some(entry) = self.rollouts.remove(&id)
                        && !entry.packed
                        && !entry.spans.is_empty()
                    {
                        self.packs.push(Change::Pack {
                            rollout_id: id.clone(),
                            spans: entry.spans,
                        });
                    }
                    self.sequence.remove(&id);
                    self.forget(Key::Rollout(&id));
                }
                None => {}
            }
            self.finished_bytes -= bytes;
        }
    }

    /// Drops the oldest resources versions past [`RESOURCES_HELD`], except the latest and
    /// those whose last change is not yet durable.
    fn evict_resources(&mut self, durable: u64) {
        while self.resources.len() > RESOURCES_HELD {
            let latest = self.latest_resources.as_deref();
            let Some(id) = self
                .resources
                .keys()
                .find(|id| {
                    Some(id.as_str()) != latest
                        && self.resources_batch.get(*id).is_none_or(|&b| b <= durable)
                })
                .cloned()
            else {
                break;
            };
            self.resources.shift_remove(&id);
            self.resources_batch.remove(&id);
            self.forget(Key::Resources(&id));
        }
    }

    /// Takes the changes recorded since the last call, as whole rows.
    pub(super) fn take_changes(&mut self) -> Vec<Change> {
        let Some(journal) = self.journal.as_mut() else {
            return Vec::new();
        };
        let j = std::mem::take(journal);
        let mut out = Vec::new();
        for id in j.rollouts {
            if let Some(e) = self.rollouts.get(&id) {
                out.push(Change::Rollout(e.rollout.clone()));
            }
        }
        for (id, idx) in j.attempts {
            if let Some(a) = self.rollouts.get(&id).and_then(|e| e.attempts.get(idx)) {
                out.push(Change::Attempt(a.clone()));
            }
        }
        for (rollout_id, span) in j.spans {
            out.push(Change::Span { rollout_id, span });
        }
        for id in j.workers {
            if let Some(w) = self.workers.get(&id) {
                out.push(Change::Worker(w.clone()));
            }
        }
        for id in j.resources {
            if let Some(r) = self.resources.get(&id) {
                out.push(Change::Resources(r.clone()));
            }
        }
        if j.latest_resources
            && let Some(id) = &self.latest_resources
        {
            out.push(Change::LatestResources(id.clone()));
        }
        for id in j.sequences {
            if let Some(v) = self.sequence.get(&id) {
                out.push(Change::Sequence {
                    rollout_id: id,
                    value: *v,
                });
            }
        }
        out.extend(j.queue);
        out.extend(j.deleted.into_iter().map(Change::DeleteRollout));
        for key in j.meta {
            let value = self.meta.get(&key).cloned();
            out.push(Change::Meta { key, value });
        }
        if !out.is_empty() {
            out.push(Change::Counts(self.counts()));
        }
        out
    }

    /// Notes that a rollout's row changes in the batch the next submit hands over.
    fn touch(&mut self, id: &str) {
        let next = self.batches + 1;
        if let Some(entry) = self.rollouts.get_mut(id) {
            entry.last_batch = next;
        }
    }

    pub(super) fn mark_rollout(&mut self, id: &str) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.rollouts.insert(id.to_owned());
        self.touch(id);
    }

    fn mark_attempt(&mut self, id: &str, idx: usize) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.attempts.insert((id.to_owned(), idx));
        self.touch(id);
    }

    pub(super) fn mark_sequence(&mut self, id: &str) {
        let Some(j) = self.journal.as_mut() else {
            return;
        };
        j.sequences.insert(id.to_owned());
        // The counter leaves memory with its rollout: not before it is durable, or the
        // file's older value would be issued again.
        self.touch(id);
    }

    /// Removes the head of the queue.
    pub(super) fn pop_queue(&mut self) -> Option<String> {
        let id = self.queue.pop_front()?;
        if let Some(entry) = self.rollouts.get_mut(&id) {
            entry.queued = false;
        }
        if let Some(j) = self.journal.as_mut() {
            j.queue.push(Change::QueuePop(id.clone()));
        }
        Some(id)
    }

    pub(super) fn insert_rollout(
        &mut self,
        new: NewRollout,
        status: RolloutStatus,
        now: f64,
    ) -> String {
        let id = match new.rollout_id {
            Some(id) => id,
            None => fresh_id("ro-", 12, |id| self.rollout_id_taken(id)),
        };
        let resources_id = new.resources_id.or_else(|| self.latest_resources_id());
        let rollout = Rollout {
            rollout_id: id.clone(),
            input: new.input,
            start_time: now,
            end_time: None,
            mode: new.mode,
            resources_id,
            status,
            config: new.config.unwrap_or_default(),
            metadata: Some(new.metadata.unwrap_or_else(empty_object)),
            v1: new.v1,
        };
        self.rollouts
            .insert(id.clone(), Box::new(Entry::new(rollout)));
        if self.disk.is_none() {
            self.order.push(id.clone());
        }
        self.rollout_counts[status.index()] += 1;
        self.mark_rollout(&id);
        id
    }

    pub(super) fn latest_resources_id(&self) -> Option<String> {
        if let Some(id) = &self.latest_resources {
            return Some(id.clone());
        }
        self.resources
            .values()
            .max_by(|a, b| a.update_time.total_cmp(&b.update_time))
            .map(|r| r.resources_id.clone())
    }

    pub(super) fn upsert_resources(
        &mut self,
        id: String,
        resources: NamedResources,
        now: f64,
    ) -> ResourcesUpdate {
        let resources = Arc::new(resources);
        let updated = match self.resources.get_mut(&id) {
            Some(existing) => {
                existing.resources = resources;
                existing.update_time = now;
                existing.version += 1;
                existing.clone()
            }
            None => {
                self.total_resources += 1;
                let update = ResourcesUpdate {
                    resources_id: id.clone(),
                    create_time: now,
                    update_time: now,
                    version: 1,
                    resources,
                };
                self.resources.insert(id.clone(), update.clone());
                update
            }
        };
        if let Some(j) = self.journal.as_mut() {
            j.resources.insert(id.clone());
            j.latest_resources = true;
            if self.disk.is_some() {
                self.resources_batch.insert(id.clone(), self.batches + 1);
            }
        }
        self.latest_resources = Some(id);
        updated
    }

    pub(super) fn create_attempt(
        &mut self,
        rollout_id: &str,
        worker_id: Option<String>,
        start_time: f64,
        _now: f64,
    ) -> Attempt {
        let entry = self.rollouts.get_mut(rollout_id).expect("caller checked");
        let attempt_id = fresh_id("at-", 8, |id| {
            entry.attempts.iter().any(|a| a.attempt_id == id)
        });
        let attempt = Attempt {
            rollout_id: rollout_id.to_owned(),
            attempt_id,
            sequence_id: i64::try_from(entry.attempts.len()).unwrap_or(i64::MAX - 1) + 1,
            start_time,
            end_time: None,
            status: AttemptStatus::Preparing,
            worker_id,
            last_heartbeat_time: None,
            metadata: None,
        };
        entry.attempts.push(attempt.clone());
        let idx = entry.attempts.len() - 1;
        self.total_attempts += 1;
        self.attempt_counts[AttemptStatus::Preparing.index()] += 1;
        self.mark_attempt(rollout_id, idx);
        attempt
    }

    /// Flags a rollout as queued; false when it already was.
    fn mark_queued(&mut self, id: &str) -> bool {
        // An id without a rollout (only a damaged file has one) is queued as it is;
        // dequeuing skips it.
        self.rollouts
            .get_mut(id)
            .is_none_or(|entry| !std::mem::replace(&mut entry.queued, true))
    }

    pub(super) fn push_queue(&mut self, id: &str) {
        if self.mark_queued(id) {
            self.queue.push_back(id.to_owned());
            if let Some(j) = self.journal.as_mut() {
                j.queue.push(Change::QueuePush(id.to_owned()));
            }
        }
    }

    pub(super) fn set_active(&mut self, id: &str, active: bool) {
        if active {
            self.active.insert(id.to_owned());
        } else {
            self.active.swap_remove(id);
        }
    }

    /// The one place a rollout's status changes: end time, queue, watchdog set, waiters.
    pub(super) fn set_rollout_status(&mut self, id: &str, status: RolloutStatus, now: f64) {
        let entry = self.rollouts.get_mut(id).expect("caller checked");
        self.rollout_counts[entry.rollout.status.index()] -= 1;
        self.rollout_counts[status.index()] += 1;
        entry.rollout.status = status;
        let finished_bytes = status.is_finished().then(|| entry.bytes());
        if status.is_finished() {
            entry.rollout.end_time = Some(now);
            if let Some(hook) = &self.finish_hook {
                hook(status, entry.rollout.mode, now - entry.rollout.start_time);
            }
        }
        if let Some(bytes) = finished_bytes {
            self.remember_finished(id, bytes);
        }
        self.mark_rollout(id);
        if status.is_queuing() {
            self.push_queue(id);
        }
        self.set_active(id, status.is_running());
        if status.is_finished() {
            self.waiters.wake(id);
            if let Some(finished) = self.finished_now.as_mut() {
                finished.push(id.to_owned());
            }
        }
    }

    /// Removes a rollout with its attempts, spans and sequence counter; false when there is
    /// none. Its place in the queue and in the watchdog's set goes with it; waiters on it keep
    /// waiting (it will never finish) until their timeout.
    pub(super) fn delete_rollout(&mut self, id: &str) -> bool {
        let Some(entry) = self.rollouts.remove(id) else {
            return false;
        };
        self.rollout_counts[entry.rollout.status.index()] -= 1;
        for attempt in &entry.attempts {
            self.attempt_counts[attempt.status.index()] -= 1;
        }
        self.total_attempts -= entry.attempts.len();
        self.total_spans -= entry.spans.len();
        self.span_bytes -= entry.spans.iter().map(|s| s.json_len()).sum::<usize>();
        if self.disk.is_none()
            && let Some(at) = self.order.iter().position(|o| o == id)
        {
            self.order.remove(at);
        }
        if entry.queued {
            self.queue.retain(|q| q != id);
        }
        self.active.swap_remove(id);
        self.sequence.remove(id);
        if let Some(j) = self.journal.as_mut() {
            j.deleted.push(id.to_owned());
            if self.disk.is_some() {
                self.deleted.insert(id.to_owned(), self.batches + 1);
                self.forget(Key::Rollout(id));
            }
        }
        true
    }

    /// Sets (or, with `None`, clears) a setting.
    pub(super) fn set_meta(&mut self, key: &str, value: Option<String>) {
        match value {
            Some(v) => self.meta.insert(key.to_owned(), v),
            None => self.meta.remove(key),
        };
        if let Some(j) = self.journal.as_mut() {
            j.meta.insert(key.to_owned());
        }
    }

    pub(super) fn apply_attempt_patch(
        &mut self,
        rollout_id: &str,
        idx: usize,
        patch: AttemptPatch,
        now: f64,
    ) -> Attempt {
        let entry = self.rollouts.get_mut(rollout_id).expect("caller checked");
        let is_latest = idx + 1 == entry.attempts.len();
        let attempt = &mut entry.attempts[idx];
        let worker_given = patch.worker_id.as_ref().is_some_and(|w| !w.is_empty());
        let status_given = patch.status.is_some();
        if let Some(worker_id) = patch.worker_id {
            attempt.worker_id = Some(worker_id);
        }
        if let Some(status) = patch.status {
            self.attempt_counts[attempt.status.index()] -= 1;
            self.attempt_counts[status.index()] += 1;
            attempt.status = status;
            if matches!(status, AttemptStatus::Failed | AttemptStatus::Succeeded) {
                attempt.end_time = Some(now);
            }
        }
        if let Some(t) = patch.last_heartbeat_time {
            attempt.last_heartbeat_time = Some(t);
        }
        if let Some(metadata) = patch.metadata {
            attempt.metadata = Some(metadata);
        }
        let attempt = attempt.clone();
        if is_latest {
            let target = rollout_status_from_attempt(&attempt, &entry.rollout.config);
            if target != entry.rollout.status {
                self.set_rollout_status(rollout_id, target, now);
            }
        }
        if worker_given || (status_given && attempt.worker_id.is_some()) {
            self.sync_worker(&attempt, now, false);
        }
        self.mark_attempt(rollout_id, idx);
        attempt
    }

    pub(super) fn worker_mut(&mut self, worker_id: &str) -> &mut Worker {
        if let Some(j) = self.journal.as_mut() {
            j.workers.insert(worker_id.to_owned());
        }
        self.workers
            .entry(worker_id.to_owned())
            .or_insert_with(|| Worker::new(worker_id))
    }

    /// Derives a worker's status from the attempt it runs.
    pub(super) fn sync_worker(&mut self, attempt: &Attempt, now: f64, dequeued: bool) {
        let Some(worker_id) = attempt.worker_id.as_deref().filter(|w| !w.is_empty()) else {
            return;
        };
        let w = self.worker_mut(worker_id);
        match attempt.status {
            AttemptStatus::Succeeded | AttemptStatus::Failed => {
                w.status = WorkerStatus::Idle;
                w.last_idle_time = Some(now);
                w.current_rollout_id = None;
                w.current_attempt_id = None;
            }
            AttemptStatus::Timeout | AttemptStatus::Unresponsive => {
                w.status = WorkerStatus::Unknown;
                w.last_idle_time = Some(now);
                w.current_rollout_id = None;
                w.current_attempt_id = None;
            }
            AttemptStatus::Preparing | AttemptStatus::Running => {
                w.status = WorkerStatus::Busy;
                w.last_busy_time = Some(now);
                w.current_rollout_id = Some(attempt.rollout_id.clone());
                w.current_attempt_id = Some(attempt.attempt_id.clone());
            }
        }
        if dequeued {
            w.last_dequeue_time = Some(now);
        }
    }

    pub(super) fn bump_sequence(&mut self, rollout_id: &str, sequence_id: i64) {
        let changed = match self.sequence.get_mut(rollout_id) {
            Some(c) if *c >= sequence_id => false,
            Some(c) => {
                *c = sequence_id;
                true
            }
            None => {
                self.sequence
                    .insert(rollout_id.to_owned(), sequence_id.max(0));
                true
            }
        };
        if changed {
            self.mark_sequence(rollout_id);
        }
    }

    pub(super) fn check_attempt(
        &self,
        rollout_id: &str,
        attempt_id: &str,
    ) -> Result<(), StoreError> {
        let entry = self
            .rollouts
            .get(rollout_id)
            .ok_or_else(|| StoreError::RolloutNotFound(rollout_id.to_owned()))?;
        // A v1 rollout's attempts are names its controller gives, never created first.
        if entry.rollout.v1.is_some() || entry.attempts.iter().any(|a| a.attempt_id == attempt_id) {
            Ok(())
        } else {
            Err(StoreError::AttemptNotFound {
                rollout_id: rollout_id.to_owned(),
                attempt_id: attempt_id.to_owned(),
            })
        }
    }

    /// Refuses `adding` more queued rollouts beyond `limit` (`None`: no limit here).
    pub(super) fn check_queue_room(
        &self,
        limit: Option<usize>,
        adding: usize,
    ) -> Result<(), StoreError> {
        let Some(limit) = limit else { return Ok(()) };
        let queued = self.rollout_counts[RolloutStatus::Queuing.index()]
            + self.rollout_counts[RolloutStatus::Requeuing.index()];
        if queued.saturating_add(adding) > limit {
            return Err(StoreError::QueueFull { limit });
        }
        Ok(())
    }

    /// Refuses one more span of `rollout_id` beyond `limit` (`None`: no limit here).
    pub(super) fn check_span_room(
        &self,
        rollout_id: &str,
        limit: Option<usize>,
    ) -> Result<(), StoreError> {
        let (Some(limit), Some(entry)) = (limit, self.rollouts.get(rollout_id)) else {
            return Ok(());
        };
        if entry.spans.len() >= limit {
            return Err(StoreError::TooManySpans {
                rollout_id: rollout_id.to_owned(),
                limit,
            });
        }
        Ok(())
    }

    pub(super) fn insert_span(
        &mut self,
        rollout_id: &str,
        span: StoredSpan,
    ) -> Option<Arc<StoredSpan>> {
        let entry = self.rollouts.get_mut(rollout_id)?;
        let bytes = span.json_len();
        let span = entry.push_span(&self.span_hasher, span)?;
        self.span_bytes += bytes;
        self.total_spans += 1;
        if let Some(j) = self.journal.as_mut() {
            j.spans.push((rollout_id.to_owned(), Arc::clone(&span)));
            entry.last_batch = self.batches + 1;
            entry.packed = false;
        }
        Some(span)
    }

    /// A stored span is a sign of life: the attempt runs, and so does its rollout.
    pub(super) fn heartbeat(&mut self, rollout_id: &str, attempt_id: &str, now: f64) {
        let Some(entry) = self.rollouts.get_mut(rollout_id) else {
            return;
        };
        let Some(idx) = entry.attempt_index(attempt_id) else {
            return;
        };
        let is_latest = idx + 1 == entry.attempts.len();
        let attempt = &mut entry.attempts[idx];
        attempt.last_heartbeat_time = Some(now);
        if let Some(j) = self.journal.as_mut() {
            j.attempts.insert((rollout_id.to_owned(), idx));
            entry.last_batch = self.batches + 1;
        }
        if matches!(
            attempt.status,
            AttemptStatus::Preparing | AttemptStatus::Unresponsive
        ) {
            self.attempt_counts[attempt.status.index()] -= 1;
            self.attempt_counts[AttemptStatus::Running.index()] += 1;
            attempt.status = AttemptStatus::Running;
        }
        if is_latest
            && matches!(
                entry.rollout.status,
                RolloutStatus::Preparing | RolloutStatus::Requeuing
            )
        {
            self.set_rollout_status(rollout_id, RolloutStatus::Running, now);
        }
    }

    /// Times out or flags unresponsive the latest attempts of running rollouts; returns how
    /// many of each it flagged.
    pub(super) fn scan(&mut self, now: f64) -> (u64, u64) {
        let mut flagged = (0, 0);
        let active: Vec<String> = self.active.iter().cloned().collect();
        for id in active {
            let Some(entry) = self.rollouts.get(&id) else {
                continue;
            };
            let Some(attempt) = entry.attempts.last() else {
                continue;
            };
            let cfg = &entry.rollout.config;
            let verdict = if cfg
                .timeout_seconds
                .is_some_and(|t| now - attempt.start_time > t)
            {
                Some(AttemptStatus::Timeout)
            } else if let Some(u) = cfg.unresponsive_seconds {
                let since = attempt.last_heartbeat_time.unwrap_or(attempt.start_time);
                (now - since > u).then_some(AttemptStatus::Unresponsive)
            } else {
                None
            };
            // Re-flagging an attempt that already carries the verdict would only rewrite it.
            if let Some(status) = verdict.filter(|s| *s != attempt.status) {
                let idx = entry.attempts.len() - 1;
                if status == AttemptStatus::Timeout {
                    flagged.0 += 1;
                } else {
                    flagged.1 += 1;
                }
                tracing::info!(rollout_id = %id, attempt_id = %attempt.attempt_id, status = %status, "watchdog flagged attempt");
                self.apply_attempt_patch(
                    &id,
                    idx,
                    AttemptPatch {
                        status: Some(status),
                        ..AttemptPatch::default()
                    },
                    now,
                );
            }
        }
        flagged
    }
}

/// The rollout status an attempt's status implies under the rollout's retry policy.
pub fn rollout_status_from_attempt(attempt: &Attempt, config: &RolloutConfig) -> RolloutStatus {
    match attempt.status {
        AttemptStatus::Preparing => RolloutStatus::Preparing,
        AttemptStatus::Running => RolloutStatus::Running,
        AttemptStatus::Succeeded => RolloutStatus::Succeeded,
        AttemptStatus::Failed | AttemptStatus::Timeout | AttemptStatus::Unresponsive => {
            if config.retry_condition.contains(&attempt.status)
                && attempt.sequence_id < config.max_attempts
            {
                RolloutStatus::Requeuing
            } else {
                RolloutStatus::Failed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attempt, RolloutView, StoredSpan};
    use crate::persist::{RolloutFilter, RolloutOrder, StorageError};
    use serde_json::value::RawValue;

    /// A history whose batches are durable up to a number the test sets (all, unless
    /// set); nothing is read from it in these tests.
    struct Durable(std::sync::atomic::AtomicU64);

    impl History for Durable {
        fn durable_batches(&self) -> u64 {
            self.0.load(std::sync::atomic::Ordering::SeqCst)
        }
        fn rollout_exists(&self, _: &str) -> Result<bool, StorageError> {
            Ok(false)
        }
        fn resources_exist(&self, _: &str) -> Result<bool, StorageError> {
            Ok(false)
        }
        fn resources(&self, _: &str) -> Result<Option<ResourcesUpdate>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn all_resources(&self) -> Result<Vec<ResourcesUpdate>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn rollout_rows(&self, _: &str) -> Result<Option<RolloutRows>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn sequence(&self, _: &str) -> Result<Option<i64>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn rollout_view(&self, _: &str) -> Result<Option<RolloutView>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn attempts(&self, _: &str) -> Result<Vec<Attempt>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn spans(&self, _: &str, _: Option<&str>) -> Result<Vec<StoredSpan>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn span_texts(
            &self,
            _: &str,
            _: Option<&str>,
            _: bool,
        ) -> Result<Vec<String>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn rollouts(&self, _: RolloutFilter<'_>) -> Result<Vec<RolloutView>, StorageError> {
            unreachable!("not read in these tests")
        }
        fn rollouts_window(
            &self,
            _: RolloutFilter<'_>,
            _: RolloutOrder,
            _: usize,
            _: usize,
        ) -> Result<(Vec<RolloutView>, usize), StorageError> {
            unreachable!("not read in these tests")
        }
    }

    fn state() -> State {
        state_with(Arc::new(Durable(u64::MAX.into())))
    }

    fn state_with(disk: Arc<Durable>) -> State {
        State::restore(Snapshot::default(), true, Some(disk))
    }

    /// A rollout that is created and finishes, its changes handed over in one batch.
    fn finished(st: &mut State) -> String {
        let new = NewRollout {
            input: Arc::from(RawValue::from_string("1".into()).unwrap()),
            mode: None,
            resources_id: None,
            config: None,
            metadata: None,
            rollout_id: None,
            v1: None,
        };
        let id = st.insert_rollout(new, RolloutStatus::Queuing, 1.0);
        st.set_rollout_status(&id, RolloutStatus::Succeeded, 2.0);
        st.take_changes();
        st.batches += 1;
        id
    }

    /// A rollout that finishes and leaves memory at once; returns it as the backend has it.
    fn finish_and_evict(st: &mut State) -> Rollout {
        let id = finished(st);
        let rollout = st.rollouts[&id].rollout.clone();
        st.evict(0);
        assert!(!st.holds(Key::Rollout(&id)), "dropped once durable");
        rollout
    }

    fn fetched(rollout: &Rollout) -> Fetched {
        Fetched::Rollout {
            id: rollout.rollout_id.clone(),
            rows: Some(Box::new(RolloutRows {
                rollout: rollout.clone(),
                attempts: Vec::new(),
                spans: Vec::new(),
                sequence: Some(3),
            })),
            sequence: None,
        }
    }

    #[test]
    fn rows_read_before_their_rollout_left_memory_are_refused() {
        let mut st = state();
        let before = st.evictions;
        let rollout = finish_and_evict(&mut st);
        // Read before the eviction: memory may have changed it after the read.
        assert!(!st.install(fetched(&rollout), before));
        assert!(!st.holds(Key::Rollout(&rollout.rollout_id)));
        // Read after it: nothing can have changed it since.
        assert!(st.install(fetched(&rollout), st.evictions));
        assert!(st.holds(Key::Rollout(&rollout.rollout_id)));
        assert_eq!(st.sequence[&rollout.rollout_id], 3);
        // Held rows win over any read.
        assert!(st.install(fetched(&rollout), before));
    }

    #[test]
    fn forgotten_evictions_make_older_reads_stale() {
        let mut st = state();
        let read_at = st.evictions;
        let first = finish_and_evict(&mut st);
        for _ in 0..EVICTIONS_REMEMBERED {
            finish_and_evict(&mut st);
        }
        // `first` left after the read; that eviction is no longer remembered by id, so
        // every read begun before it counts as stale.
        let key = Key::Rollout(&first.rollout_id);
        assert!(!st.evicted.contains_key(&key.owned()));
        assert!(st.evicted_since(key, read_at));
        assert!(!st.evicted_since(key, st.evictions));
        assert!(st.evicted.len() <= EVICTIONS_REMEMBERED);
    }

    #[test]
    fn old_resources_versions_leave_memory_and_the_latest_stays() {
        let mut st = state();
        let mut first = None;
        for i in 0..RESOURCES_HELD + 6 {
            let id = format!("rs-{i:03}");
            let before = st.evictions;
            let row = st.upsert_resources(id.clone(), NamedResources::default(), 1.0);
            first.get_or_insert((row, before));
            st.take_changes();
            st.batches += 1;
            st.evict(usize::MAX);
        }
        assert_eq!(st.resources.len(), RESOURCES_HELD);
        let latest = format!("rs-{:03}", RESOURCES_HELD + 5);
        assert!(st.holds(Key::Resources(&latest)));
        let (row, read_at) = first.expect("one version");
        let key = Key::Resources(&row.resources_id);
        assert!(!st.holds(key), "the oldest left memory");
        // A read begun before it left may be stale; one begun after may be installed.
        let fetched = |row: &ResourcesUpdate| Fetched::Resources {
            id: row.resources_id.clone(),
            row: Some(row.clone()),
        };
        assert!(!st.install(fetched(&row), read_at));
        assert!(st.install(fetched(&row), st.evictions));
        assert!(st.holds(key));
    }

    #[test]
    fn a_rollout_not_yet_durable_or_reopened_does_not_hold_up_the_others() {
        let disk = Arc::new(Durable(0.into()));
        let mut st = state_with(Arc::clone(&disk));
        let ids: Vec<String> = (0..3).map(|_| finished(&mut st)).collect();
        // The first is reopened and changes again in a batch that is not durable yet.
        st.set_rollout_status(&ids[0], RolloutStatus::Running, 3.0);
        st.take_changes();
        st.batches += 1;
        disk.0
            .store(st.batches - 1, std::sync::atomic::Ordering::SeqCst);
        st.evict(0);
        assert!(st.holds(Key::Rollout(&ids[0])), "live again: it stays");
        assert!(!st.holds(Key::Rollout(&ids[1])));
        assert!(!st.holds(Key::Rollout(&ids[2])));
        // It finishes again, in a batch not durable yet: it waits, and goes once durable.
        st.set_rollout_status(&ids[0], RolloutStatus::Failed, 4.0);
        st.take_changes();
        st.batches += 1;
        st.evict(0);
        assert!(st.holds(Key::Rollout(&ids[0])));
        disk.0
            .store(st.batches, std::sync::atomic::Ordering::SeqCst);
        st.evict(0);
        assert!(!st.holds(Key::Rollout(&ids[0])));
        assert_eq!(st.finished_bytes, 0);
    }
}
