//! The JSON files the subcommands write and `report` reads: one file per measurement, tagged
//! by `kind`, so a benchmark run is a folder of files that can be re-rendered at any time.

use serde::{Deserialize, Serialize};

/// Any result file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ResultFile {
    /// Output of `agl-bench run`.
    Run(RunResult),
    /// Output of `agl-bench grow`.
    Grow(GrowResult),
    /// Output of `agl-bench startup`.
    Startup(StartupResult),
    /// One `pgbench` run of the store's transactions, written by `scripts/bench.sh`.
    Pgbench(PgbenchResult),
    /// Output of `agl-bench dashboard` (rendered by that subcommand, not by `report`).
    Dashboard(DashboardResult),
}

/// `pgbench` repeating the statements of one store request (services/bench/pgbench/).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PgbenchResult {
    /// The script's name, which is the bench scenario it mirrors (`span-add`, ...).
    pub scenario: String,
    /// Script runs per second (one run = one store request, or one dequeue + update pair).
    pub tps: f64,
    pub concurrency: usize,
    pub duration_s: f64,
}

/// The machine a measurement ran on, read from `/proc` when it ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs available to the process.
    pub cpus: usize,
    /// `model name` from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// `MemTotal` from `/proc/meminfo`, in KiB.
    pub mem_total_kb: u64,
    /// Kernel release from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
}

impl Machine {
    /// Describes the machine this process runs on.
    pub fn current() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_kb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        Self {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            mem_total_kb,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }
    }
}

/// What a path's numbers mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// One HTTP request.
    Http,
    /// A sequence of requests the scenario counts as one operation (for example a dequeue
    /// and the attempt update that follows it).
    Op,
    /// Requests that keep a scenario going (refilling the queue) and are not what it
    /// measures; reported for completeness.
    Aux,
}

/// Numbers for one path (an HTTP route or a compound operation) of one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PathStats {
    /// `METHOD /route/{template}` or a description of the compound operation.
    pub path: String,
    /// Request or operation.
    pub kind: PathKind,
    /// Completed inside the measured window (after warm-up, before the deadline).
    pub requests: u64,
    /// Non-2xx answers, transport failures and answers that say the write was refused.
    pub errors: u64,
    /// `requests / window_s`.
    pub throughput_per_s: f64,
    /// Length of the measured window, seconds (absent in files of earlier versions).
    #[serde(default)]
    pub window_s: f64,
    /// Items carried by one request (rollouts per enqueue, spans per OTLP batch), so
    /// item throughput is `throughput_per_s * items_per_request`.
    pub items_per_request: u64,
    /// Median latency in milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency in milliseconds.
    pub p99_ms: f64,
    /// Slowest request in milliseconds.
    pub max_ms: f64,
    /// Mean latency in milliseconds.
    pub mean_ms: f64,
    /// Latency the path cannot go below by design (a wait's timeout), in milliseconds.
    pub floor_ms: Option<f64>,
    /// The first error seen, for diagnosis.
    pub first_error: Option<String>,
}

/// What the server process did during one scenario (with `--server-pid`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerStats {
    /// `VmRSS` before the scenario's set-up, KiB.
    pub rss_start_kb: u64,
    /// Largest `VmRSS` sampled during the scenario, KiB.
    pub rss_peak_kb: u64,
    /// `VmHWM` (the kernel's own high-water mark) at the end, KiB.
    pub vm_hwm_kb: u64,
    /// User + system CPU seconds the server used inside the measured window.
    pub cpu_s: f64,
    /// `cpu_s` per 1000 HTTP requests of the window.
    pub cpu_s_per_1000_ops: f64,
}

/// One scenario of a `run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Scenario name (`health`, `enqueue`, ...).
    pub name: String,
    /// Length of the measured window in seconds.
    pub window_s: f64,
    /// Per-path numbers, in the order the scenario first used them.
    pub paths: Vec<PathStats>,
    /// Server process numbers, when its pid was given.
    pub server: Option<ServerStats>,
    /// Facts needed to read the numbers right.
    pub notes: Vec<String>,
}

/// Output of `agl-bench run`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Which server this was (`agl-store`, `python`, `ceiling`).
    pub label: String,
    /// Base URL driven.
    pub target: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Measured seconds per scenario.
    pub duration_s: f64,
    /// Warm-up seconds per scenario.
    pub warmup_s: f64,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Where it ran.
    pub machine: Machine,
    /// The server's command line, from `/proc/PID/cmdline` when `--server-pid` was given
    /// (absent in files of earlier versions).
    #[serde(default)]
    pub server_command: Vec<String>,
    /// Scenarios in the order they ran.
    pub scenarios: Vec<ScenarioResult>,
}

/// One store size of a `grow` run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrowStep {
    /// Spans stored when the throughput runs began (the query run sees this many).
    pub spans: u64,
    /// Spans stored after the span add run, which writes into the same store (absent in
    /// files of earlier versions).
    #[serde(default)]
    pub spans_after_add: u64,
    /// Server `VmRSS` right after filling to `spans`, KiB.
    pub rss_kb: u64,
    /// `(rss_kb - RSS before the first span) / spans`, bytes.
    pub bytes_per_span: f64,
    /// On-disk size of the store's file at the same moment (with `--disk-file`): the
    /// database and its write-ahead log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUsage>,
    /// Single-span `POST /v1/agl/spans` at this size.
    pub span_add: PathStats,
    /// `GET /v1/agl/spans?rollout_id=R` for random 100-span rollouts at this size.
    pub span_query: PathStats,
}

/// Bytes a file-backed store occupies on disk (file lengths).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// The database file.
    pub main_bytes: u64,
    /// Its write-ahead log (`FILE-wal`), 0 when there is none.
    pub wal_bytes: u64,
}

impl DiskUsage {
    /// The database file and its write-ahead log together.
    pub fn total(&self) -> u64 {
        self.main_bytes + self.wal_bytes
    }

    /// Reads the lengths of `file` and `file-wal` (a missing file counts 0; the database
    /// file itself must exist).
    pub fn of(file: &std::path::Path) -> std::io::Result<Self> {
        let main_bytes = std::fs::metadata(file)?.len();
        let mut wal = file.as_os_str().to_owned();
        wal.push("-wal");
        let wal_bytes = std::fs::metadata(std::path::Path::new(&wal)).map_or(0, |m| m.len());
        Ok(Self {
            main_bytes,
            wal_bytes,
        })
    }
}

/// Output of `agl-bench grow`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrowResult {
    /// Which server this was.
    pub label: String,
    /// Base URL driven.
    pub target: String,
    /// Concurrent clients of the fills and the throughput runs.
    pub concurrency: usize,
    /// Measured seconds of each throughput run (longer where a slow server needed it: see
    /// each run's `window_s`).
    pub step_duration_s: f64,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Where it ran.
    pub machine: Machine,
    /// `VmRSS` before anything was written, KiB.
    pub rss_base_kb: u64,
    /// Rollouts enqueued for the rollout-memory measurement.
    pub rollouts: u64,
    /// `VmRSS` after enqueueing them, KiB.
    pub rss_after_rollouts_kb: u64,
    /// RSS growth per 100 000 rollouts, KiB.
    #[serde(deserialize_with = "nan_if_null")]
    pub kb_per_100k_rollouts: f64,
    /// Size of one stored span as the server returns it in JSON, bytes.
    pub json_bytes_per_span: f64,
    /// The server's command line, from `/proc/PID/cmdline` (absent in files of earlier
    /// versions).
    #[serde(default)]
    pub server_command: Vec<String>,
    /// On-disk size of the store's file before anything was written (with `--disk-file`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_base: Option<DiskUsage>,
    /// On-disk size after enqueueing the rollouts, which is where the spans' share starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_after_rollouts: Option<DiskUsage>,
    /// One entry per requested size.
    pub steps: Vec<GrowStep>,
    /// Facts needed to read the numbers right.
    pub notes: Vec<String>,
}

/// Output of `agl-bench startup`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StartupResult {
    /// Which server this was.
    pub label: String,
    /// The command that was started.
    pub command: Vec<String>,
    /// Exec to first `200` from the health route, per repeat, milliseconds.
    pub runs_ms: Vec<f64>,
    /// Median of `runs_ms`.
    pub median_ms: f64,
    /// `VmRSS` one second after becoming healthy, with no request since (median), KiB.
    pub idle_rss_kb: u64,
    /// The file removed before every start (so each start created it anew), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fresh_file: Option<String>,
    /// Seconds since the Unix epoch when the measurement started.
    pub started_unix: u64,
    /// Where it ran.
    pub machine: Machine,
}

/// Output of `agl-bench dashboard`: each dashboard page's latency on a filled store, one
/// entry per storage backend.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardResult {
    /// The `agl-bench` command line that produced it.
    pub command: Vec<String>,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Where it ran.
    pub machine: Machine,
    /// Measured requests per page.
    pub requests: usize,
    /// Unmeasured requests per page before them (the first is reported as `first_ms`).
    pub warmup: usize,
    /// Concurrent clients of the fill.
    pub fill_concurrency: usize,
    /// One store per backend, filled and measured in turn.
    pub backends: Vec<DashboardBackend>,
}

/// One filled store and its pages.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DashboardBackend {
    /// `memory` or `sqlite`.
    pub backend: String,
    /// The server's command line.
    pub server_command: Vec<String>,
    /// What was put in and how long it took.
    pub fill: DashboardFill,
    /// Server `VmRSS` after the fill, KiB.
    pub rss_after_fill_kb: u64,
    /// Largest `VmRSS` sampled during the fill, KiB.
    pub rss_peak_fill_kb: u64,
    /// Server `VmRSS` after the measurements, KiB.
    pub rss_after_pages_kb: u64,
    /// The machine's 1-minute load average when the page requests began and ended (from
    /// `/proc/loadavg`): above the CPU count, something else competed for the CPUs.
    #[serde(default)]
    pub loadavg_pages: (f64, f64),
    /// The SQLite file and its write-ahead log after the fill.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<DiskUsage>,
    /// `GET /v1/agl/statistics` after the fill, as the server answered it.
    pub statistics: serde_json::Value,
    /// One entry per page or API request, in the order measured.
    pub pages: Vec<PageLatency>,
}

/// The fill of a dashboard measurement.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DashboardFill {
    /// Rollouts enqueued (the big rollout not counted).
    pub rollouts: u64,
    /// Of them, enqueued in `val` mode (the rest `train`).
    pub val_rollouts: u64,
    /// Dequeued by a worker and given spans.
    pub dequeued: u64,
    /// Of the dequeued, finished `succeeded` and `failed`; the rest stay `running`.
    pub succeeded: u64,
    pub failed: u64,
    /// Spans sent to the dequeued rollouts over OTLP.
    pub spans: u64,
    /// Spans of the one big rollout (nested, with LLM calls and a reward).
    pub big_rollout_spans: u64,
    /// Resource versions added.
    pub resource_versions: u64,
    /// Seconds to enqueue the rollouts.
    pub enqueue_s: f64,
    /// Seconds to build the big rollout.
    pub big_rollout_s: f64,
    /// Seconds to dequeue, send the spans of and finish the rollouts.
    pub spans_s: f64,
    /// Wall time of the whole fill, seconds.
    pub total_s: f64,
}

/// Latency of one page (or API request) over sequential requests from one client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PageLatency {
    /// What the request shows.
    pub name: String,
    /// `page` (dashboard HTML) or `api` (the JSON API, for comparison).
    pub kind: String,
    /// Path and query requested.
    pub path: String,
    /// Measured requests (fewer than asked when the page's time budget ran out).
    pub requests: usize,
    /// Non-2xx answers and transport failures among them.
    pub errors: usize,
    /// The first request to this page after the fill (cold), milliseconds.
    pub first_ms: f64,
    /// Client-side latency on loopback, milliseconds (nearest rank).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Size of the response body, bytes.
    pub bytes: usize,
    /// The server's own timing from its request-duration histogram, when it exports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerLatency>,
    /// The first error seen, for diagnosis.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

/// Server-side latency of the measured requests, from the difference of the server's
/// `http_request_duration_seconds` histogram before and after them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerLatency {
    /// The route template the requests were counted under.
    pub route: String,
    /// Requests counted.
    pub count: u64,
    /// Exact mean (the histogram's sum ÷ count), milliseconds.
    pub mean_ms: f64,
    /// Upper bounds of the buckets holding the median and the 99th percentile,
    /// milliseconds (`None`: beyond the last bucket).
    pub p50_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
    /// Requests that took at most 50 ms (a bucket bound).
    pub within_50ms: u64,
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An `f64` that JSON wrote as `null` (NaN, "not measured") reads back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(<Option<f64> as serde::Deserialize>::deserialize(d)?.unwrap_or(f64::NAN))
}
