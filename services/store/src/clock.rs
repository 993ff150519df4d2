//! Time as the store sees it: the wall clock in production, a hand-moved one in tests.

use std::time::{SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

/// A source of "now" in seconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> f64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> f64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A clock that only moves when told to, so watchdog timeouts can be tested exactly.
#[derive(Debug)]
pub struct ManualClock(Mutex<f64>);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: f64) -> Self {
        Self(Mutex::new(start))
    }

    /// Moves the clock forward by `seconds`.
    pub fn advance(&self, seconds: f64) {
        *self.0.lock() += seconds;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> f64 {
        *self.0.lock()
    }
}
