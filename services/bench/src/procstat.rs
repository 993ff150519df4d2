//! Reading a server process's memory and CPU time from `/proc/PID`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Linux reports `utime`/`stime` in clock ticks of `USER_HZ`, which the kernel fixes at 100
/// for user space on every architecture agl builds for (reading `sysconf` would need
/// `unsafe`, which the workspace forbids).
const USER_HZ: f64 = 100.0;

/// A `VmRSS`-style field of `/proc/PID/status`, in KiB.
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident set size now, KiB.
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_kb(pid, "VmRSS")
}

/// The process's command line, from `/proc/PID/cmdline` (empty if it cannot be read).
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline")).map_or_else(
        |_| Vec::new(),
        |raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        },
    )
}

/// User + system CPU seconds the process has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields are counted
    // from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

/// Samples `VmRSS` in the background and keeps the largest value seen.
pub struct RssSampler {
    peak: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl RssSampler {
    /// Starts sampling `pid` every 20 ms.
    pub fn start(pid: u32) -> Self {
        let peak = Arc::new(AtomicU64::new(rss_kb(pid).unwrap_or(0)));
        let p = Arc::clone(&peak);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(20));
            loop {
                tick.tick().await;
                if let Some(kb) = rss_kb(pid) {
                    p.fetch_max(kb, Ordering::Relaxed);
                }
            }
        });
        Self { peak, task }
    }

    /// Stops sampling and returns the peak, including one last sample.
    pub fn finish(self, pid: u32) -> u64 {
        self.task.abort();
        if let Some(kb) = rss_kb(pid) {
            self.peak.fetch_max(kb, Ordering::Relaxed);
        }
        self.peak.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kb(pid).unwrap() > 0);
        assert!(status_kb(pid, "VmHWM").unwrap() > 0);
        assert!(cpu_seconds(pid).unwrap() >= 0.0);
        assert!(!cmdline(pid).is_empty());
    }
}
