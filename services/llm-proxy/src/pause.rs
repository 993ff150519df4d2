//! Pausing and draining: the calls in flight are counted; a pause refuses new ones (a 429
//! with `Retry-After`, upstream v1's answer) until resumed, so that a trainer can wait for
//! the count to reach zero and sync weights; draining refuses them for good (shutdown).
//!
//! The check and the count change together under one lock, so that once a pause is
//! answered no new call can slip in before the count it reports.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

/// Upstream v1's default `retry_after_seconds`.
pub const DEFAULT_RETRY_AFTER_SECONDS: u64 = 5;

/// What `POST /proxy/pause`, `/proxy/resume` and `GET /proxy/state` answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GateState {
    pub paused: bool,
    pub retry_after_seconds: u64,
    pub reason: Option<String>,
    pub inflight: usize,
}

/// The body of upstream v1's answer to a call while paused (a `429`).
pub fn paused_body(reason: Option<&str>) -> serde_json::Value {
    serde_json::json!({"error": "gateway paused", "reason": reason})
}

/// The headers of that answer: when to come back, and that this is a pause.
pub fn paused_headers(retry_after_seconds: u64) -> [(http::HeaderName, http::HeaderValue); 2] {
    [
        (
            http::header::RETRY_AFTER,
            http::HeaderValue::from(retry_after_seconds),
        ),
        (
            http::HeaderName::from_static("x-agl-paused"),
            http::HeaderValue::from_static("true"),
        ),
    ]
}

/// Why a call may not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Paused: come back after this many seconds.
    Paused {
        retry_after_seconds: u64,
        reason: Option<String>,
    },
    /// Shutting down.
    Draining,
}

struct Pause {
    paused: bool,
    retry_after_seconds: u64,
    reason: Option<String>,
}

/// The gate every generation call passes.
pub struct Gate {
    pause: Mutex<Pause>,
    draining: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            pause: Mutex::new(Pause {
                paused: false,
                retry_after_seconds: DEFAULT_RETRY_AFTER_SECONDS,
                reason: None,
            }),
            draining: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        }
    }
}

/// A call in flight: counted until dropped.
pub struct Pass(Arc<Gate>);

impl Drop for Pass {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pause> {
        self.pause.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Lets a call in, counting it, unless paused or draining.
    pub fn enter(self: &Arc<Self>) -> Result<Pass, Refusal> {
        let pause = self.lock();
        if self.draining.load(Ordering::SeqCst) {
            return Err(Refusal::Draining);
        }
        if pause.paused {
            return Err(Refusal::Paused {
                retry_after_seconds: pause.retry_after_seconds,
                reason: pause.reason.clone(),
            });
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        Ok(Pass(Arc::clone(self)))
    }

    /// Refuses new calls until [`Gate::resume`]; the state, with the calls still in flight.
    pub fn pause(&self, retry_after_seconds: u64, reason: Option<String>) -> GateState {
        let mut pause = self.lock();
        pause.paused = true;
        pause.retry_after_seconds = retry_after_seconds;
        pause.reason = reason;
        self.state_of(&pause)
    }

    /// Lets calls in again (the retry hint stays as it was set).
    pub fn resume(&self) -> GateState {
        let mut pause = self.lock();
        pause.paused = false;
        pause.reason = None;
        self.state_of(&pause)
    }

    pub fn state(&self) -> GateState {
        self.state_of(&self.lock())
    }

    fn state_of(&self, pause: &Pause) -> GateState {
        GateState {
            paused: pause.paused,
            retry_after_seconds: pause.retry_after_seconds,
            reason: pause.reason.clone(),
            inflight: self.in_flight(),
        }
    }

    /// Refuses every new call from now on.
    pub fn start_draining(&self) {
        let _pause = self.lock();
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no call is in flight, at most `timeout`; whether it got there.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a call ending in between still wakes us.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pause_refuses_new_calls_and_counts_those_in_flight() {
        let gate = Arc::new(Gate::default());
        let first = gate.enter().unwrap();
        let state = gate.pause(7, Some("weight sync".into()));
        assert_eq!(
            state,
            GateState {
                paused: true,
                retry_after_seconds: 7,
                reason: Some("weight sync".into()),
                inflight: 1
            }
        );
        assert_eq!(
            gate.enter().err(),
            Some(Refusal::Paused {
                retry_after_seconds: 7,
                reason: Some("weight sync".into())
            })
        );
        assert!(!gate.wait_idle(Duration::from_millis(20)).await);
        drop(first);
        assert!(gate.wait_idle(Duration::from_secs(5)).await);
        let resumed = gate.resume();
        assert!(!resumed.paused && resumed.reason.is_none());
        assert_eq!(resumed.retry_after_seconds, 7);
        let again = gate.enter().unwrap();
        assert_eq!(gate.state().inflight, 1);
        drop(again);
        gate.start_draining();
        assert_eq!(gate.enter().err(), Some(Refusal::Draining));
    }
}
