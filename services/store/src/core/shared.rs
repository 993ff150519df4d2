//! The store over a database that several store processes share ([`Shared`], Postgres).
//!
//! No process holds authoritative state. A change is one transaction: the database locks
//! and reads the rows the change names ([`Need`]), they become a small state of their own
//! ([`State::ephemeral`]), the change's closure runs on it — the same closure, status
//! machines and rules as in memory — and what it recorded is written before the commit. A
//! rollout that finishes is announced by the database to every process, whose waiters
//! then read it; the watchdog runs in one process per debounce period.
//!
//! The hot, small changes (spans, sequence ids) are grouped ([`Grouper`]): those that
//! arrive while earlier groups commit share the next transaction, their closures run one
//! after the other on one state as they would under the memory store's lock, and all of
//! them are answered after its commit. So a span costs a share of a commit, not one.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering as AtomicOrdering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::state::State;
use super::{Gauges, Store, StoreConfig, StoreError, retried_span};
use crate::clock::Clock;
use crate::model::Rollout;
use crate::persist::{Decision, Memory, Need, RolloutFilter, Shared, Snapshot, StorageError};

/// How often a waiter reads its rollouts again even without a notice (a notice can be
/// lost while the listening connection is down).
const RECHECK: Duration = Duration::from_secs(2);

impl Store {
    /// A store whose state lives in `db`, shared with any number of other processes.
    pub fn open_shared(config: StoreConfig, clock: Arc<dyn Clock>, db: Arc<dyn Shared>) -> Self {
        let grouper = Grouper::start(Arc::clone(&db), Arc::clone(&clock));
        let store = Self::assemble(
            config,
            clock,
            State::default(),
            Arc::new(Memory),
            Some(db.history()),
            Some((Arc::clone(&db), grouper)),
        );
        let wake = Arc::clone(&store.waiters);
        db.listen(Arc::new(move |id: Option<&str>| match id {
            Some(id) => wake.wake(id),
            None => wake.wake_all(),
        }));
        store
    }

    /// One change as one transaction of `db`: `f` decides on the rows read, what it
    /// changed is written, and the transaction commits before the answer.
    pub(super) async fn transact_shared<T: Send>(
        &self,
        db: &Arc<dyn Shared>,
        need: &Need,
        mut f: impl FnMut(&mut State, f64) -> Result<T, StoreError> + Send,
    ) -> Result<T, StoreError> {
        let hook = self.state.lock().finish_hook.clone();
        let clock = &self.clock;
        let mut out: Option<Result<T, StoreError>> = None;
        let mut decide = |rows: Snapshot| {
            let mut st = State::ephemeral(rows, hook.clone());
            let before = st.counts();
            // What a failing change did before it failed stays, as it does in memory (a
            // span of an unknown rollout still raises that id's sequence counter).
            out = Some(f(&mut st, clock.now()));
            let changes = st.take_changes();
            (!changes.is_empty()).then(|| Decision {
                changes,
                counts: st.counts().minus(&before),
                finished: st.finished_now.take().unwrap_or_default(),
            })
        };
        db.transact(need, &mut decide).await?;
        out.unwrap_or_else(|| {
            Err(StoreError::Storage(crate::persist::StorageError(
                "the transaction ended without deciding".into(),
            )))
        })
    }

    /// The watchdog's scan, when its debounce allows: first by this process's own clock
    /// (so that most calls cost nothing), then across all processes by the database's.
    pub(super) async fn scan_shared(&self, db: &Arc<dyn Shared>) {
        let debounce = self.config.scan_debounce_seconds;
        let now = self.now();
        {
            let mut st = self.state.lock();
            if debounce > 0.0 && st.last_scan.is_some_and(|last| now - last < debounce) {
                return;
            }
            st.last_scan = Some(now);
        }
        match db.watchdog_due(now, debounce).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot run the watchdog");
                return;
            }
        }
        // The verdicts move the attempts' workers too.
        let need = Need {
            watched: Some(now),
            attempt_workers: true,
            ..Need::default()
        };
        match self
            .transact_shared(db, &need, |st, now| Ok(st.scan(now)))
            .await
        {
            Ok((timeouts, unresponsive)) => {
                let c = &self.counters;
                c.watchdog_timeouts
                    .fetch_add(timeouts, AtomicOrdering::Relaxed);
                c.watchdog_unresponsive
                    .fetch_add(unresponsive, AtomicOrdering::Relaxed);
            }
            Err(e) => tracing::warn!(error = %e, "the watchdog's scan failed"),
        }
    }

    /// `wait_for_rollouts` over a shared database: a waiter registers before it reads, so
    /// a finish committed after the read wakes it; it reads again on every wake and every
    /// [`RECHECK`] until all have finished, the time is up or the store drains.
    pub(super) async fn wait_shared(
        &self,
        db: &Arc<dyn Shared>,
        ids: &[String],
        timeout: Option<f64>,
    ) -> Vec<Rollout> {
        self.scan_shared(db).await;
        let deadline = timeout.map(|t| {
            let limit = Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX);
            Instant::now().checked_add(limit)
        });
        let history = db.history();
        let mut call = None;
        loop {
            let notices: Vec<_> = ids.iter().map(|id| self.waiters.register(id)).collect();
            let wanted = ids.to_vec();
            let history = Arc::clone(&history);
            let read = self
                .read_disk(&history, move |d| {
                    d.rollouts(RolloutFilter {
                        rollout_id_in: Some(&wanted),
                        ..RolloutFilter::default()
                    })
                })
                .await;
            let found: HashMap<String, Rollout> = match read {
                Ok(views) => views
                    .into_iter()
                    .map(|v| (v.rollout.rollout_id.clone(), v.rollout))
                    .collect(),
                Err(e) => {
                    // Seen as not finished: read again at the next check.
                    tracing::warn!(error = %e, "cannot read the rollouts waited for");
                    HashMap::new()
                }
            };
            let pending: Vec<usize> = (0..ids.len())
                .filter(|&i| found.get(&ids[i]).is_some_and(|r| !r.status.is_finished()))
                .collect();
            let expired = deadline.is_some_and(|d| d.is_none_or(|d| d <= Instant::now()));
            let stop = timeout.is_some_and(|t| t <= 0.0)
                || expired
                || self.draining.load(AtomicOrdering::SeqCst);
            if pending.is_empty() || stop {
                drop(notices);
                self.waiters.release(ids);
                return ids
                    .iter()
                    .filter_map(|id| found.get(id))
                    .filter(|r| r.status.is_finished())
                    .cloned()
                    .collect();
            }
            if call.is_none() {
                call = Some(self.waiters.enter());
            }
            let mut notices: Vec<_> = notices
                .into_iter()
                .enumerate()
                .filter(|(i, _)| pending.contains(i))
                .map(|(_, n)| Box::pin(n))
                .collect();
            let any = futures::future::select_all(notices.iter_mut());
            let until = match deadline {
                Some(Some(d)) => (d - Instant::now()).min(RECHECK),
                _ => RECHECK,
            };
            tokio::select! {
                _ = any => {}
                () = self.drain.notified() => {}
                () = tokio::time::sleep(until) => {}
            }
        }
    }

    /// Gauges from the totals last read (by the ticker, a scrape or a statistics call).
    pub(super) fn shared_gauges(&self) -> Gauges {
        let totals = self.totals.lock().clone().unwrap_or_default();
        Gauges::of(
            &totals.counts,
            totals.workers.iter(),
            totals.queue,
            self.waiters.calls(),
            0,
        )
    }
}

/// Changes waiting in one group at most.
const MAX_GROUP: usize = 256;

/// Transactions of groups in flight at once (each holds a pooled connection).
const GROUPS_IN_FLIGHT: usize = 8;

/// A grouped change's closure; it sends its own answer.
type Job = Box<dyn FnOnce(&mut State, f64) + Send>;

/// One grouped change: what it needs, its closure, and where to say whether the group
/// committed.
struct Queued {
    need: Need,
    job: Job,
    committed: oneshot::Sender<Result<(), StoreError>>,
}

/// Groups concurrent small changes into shared transactions: [`GROUPS_IN_FLIGHT`] tasks
/// take turns at the queue; each takes what has queued up (at least one change), commits
/// it as one transaction, and answers every change in it.
pub(super) struct Grouper {
    queue: mpsc::UnboundedSender<Queued>,
}

impl Grouper {
    fn start(db: Arc<dyn Shared>, clock: Arc<dyn Clock>) -> Self {
        let (queue, rx) = mpsc::unbounded_channel::<Queued>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..GROUPS_IN_FLIGHT {
            let (db, clock, rx) = (Arc::clone(&db), Arc::clone(&clock), Arc::clone(&rx));
            tokio::spawn(async move {
                loop {
                    let mut group = Vec::new();
                    {
                        let mut rx = rx.lock().await;
                        // Ends when the store (the only sender) is gone.
                        let Some(first) = rx.recv().await else {
                            return;
                        };
                        group.push(first);
                        while group.len() < MAX_GROUP {
                            match rx.try_recv() {
                                Ok(next) => group.push(next),
                                Err(_) => break,
                            }
                        }
                    }
                    commit_group(&*db, &*clock, group).await;
                }
            });
        }
        Self { queue }
    }

    /// Runs `f` in the next group; its answer once the group committed.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        need: Need,
        f: impl FnOnce(&mut State, f64) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = oneshot::channel();
        let (committed, commit) = oneshot::channel();
        let job: Job = Box::new(move |st: &mut State, now: f64| {
            let _ = answer.send(f(st, now));
        });
        let stopped = || StoreError::Storage(StorageError("the store is shutting down".into()));
        self.queue
            .send(Queued {
                need,
                job,
                committed,
            })
            .map_err(|_| stopped())?;
        commit.await.map_err(|_| stopped())??;
        answered.await.map_err(|_| stopped())?
    }
}

/// One group's transaction. (The changes grouped never finish a rollout, so no finish hook
/// is needed.)
async fn commit_group(db: &dyn Shared, clock: &dyn Clock, group: Vec<Queued>) {
    let mut need = Need::default();
    let mut jobs = Vec::with_capacity(group.len());
    let mut replies = Vec::with_capacity(group.len());
    for Queued {
        need: n,
        job,
        committed,
    } in group
    {
        need.rollouts.extend(n.rollouts);
        need.sequences |= n.sequences;
        need.spans.extend(n.spans);
        need.workers.extend(n.workers);
        need.attempt_workers |= n.attempt_workers;
        need.resources.extend(n.resources);
        jobs.push(job);
        replies.push(committed);
    }
    let mut jobs = Some(jobs);
    let mut retried = false;
    let mut decide = |rows: Snapshot| {
        let Some(jobs) = jobs.take() else {
            // The closures ran already: their spans were handed over.
            retried = true;
            return None;
        };
        let mut st = State::ephemeral(rows, None);
        let before = st.counts();
        let now = clock.now();
        for job in jobs {
            job(&mut st, now);
        }
        let changes = st.take_changes();
        (!changes.is_empty()).then(|| Decision {
            changes,
            counts: st.counts().minus(&before),
            finished: st.finished_now.take().unwrap_or_default(),
        })
    };
    let result = db.transact(&need, &mut decide).await;
    let outcome = match result {
        Ok(_) if retried => Err(retried_span()),
        Ok(_) => Ok(()),
        Err(e) => Err(StoreError::Storage(e)),
    };
    for reply in replies {
        let _ = reply.send(outcome.clone());
    }
}
