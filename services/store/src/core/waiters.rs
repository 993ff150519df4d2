//! Calls blocked in `wait_for_rollouts`, by the rollout they wait for. A finish wakes the
//! waiters of its rollout: in memory, from the status change itself; with a shared
//! database, from the notice every store process receives when the finish commits.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::sync::futures::OwnedNotified;

#[derive(Default)]
pub(super) struct Waiters {
    by_rollout: Mutex<HashMap<String, Arc<Notify>>>,
    /// Calls waiting now, for metrics.
    calls: AtomicUsize,
}

impl Waiters {
    /// A future that resolves when `id` is woken. It counts from this call on, not from its
    /// first poll, so a wake between registering and waiting is not lost.
    pub(super) fn register(&self, id: &str) -> OwnedNotified {
        let notify = Arc::clone(self.by_rollout.lock().entry(id.to_owned()).or_default());
        notify.notified_owned()
    }

    /// Wakes the waiters of `id`.
    pub(super) fn wake(&self, id: &str) {
        if let Some(notify) = self.by_rollout.lock().remove(id) {
            notify.notify_waiters();
        }
    }

    /// Wakes every waiter (they look again at what they wait for).
    pub(super) fn wake_all(&self) {
        for (_, notify) in self.by_rollout.lock().drain() {
            notify.notify_waiters();
        }
    }

    /// Forgets the entries of `ids` nobody waits on any more.
    pub(super) fn release(&self, ids: &[String]) {
        let mut map = self.by_rollout.lock();
        for id in ids {
            if map.get(id).is_some_and(|n| Arc::strong_count(n) == 1) {
                map.remove(id);
            }
        }
    }

    /// Counts a call that starts waiting; the guard counts it out.
    pub(super) fn enter(&self) -> CallGuard<'_> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        CallGuard(self)
    }

    pub(super) fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

pub(super) struct CallGuard<'a>(&'a Waiters);

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        self.0.calls.fetch_sub(1, Ordering::Relaxed);
    }
}
