//! `agl-bench dashboard`: what each page of the store's dashboard costs on a store the size
//! of a long training run. For each storage backend it starts a release `agl-store` on a
//! free loopback port (SQLite on a new file in a scratch folder), fills it over HTTP the way
//! a training run does (rollouts enqueued in `train` and `val` mode, most of them dequeued
//! by workers, given OTLP spans that nest with LLM calls and a reward, and finished
//! `succeeded` or `failed`; the rest left `running` or queued; one big rollout of thousands
//! of spans; a history of resource versions), then requests every page in turn from one
//! client, after a warm-up, and reads the server's own request-duration histogram before
//! and after each page, so the figures are the server's time as well as the client's. The
//! JSON API's answers for the same data are measured alongside as the floor a page is
//! compared with.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, status};
use parking_lot::Mutex;
use serde::Deserialize;

use agl_common::ui;

use crate::driver::Http;
use crate::payload::{self, kv, s};
use crate::procstat::{self, RssSampler};
use crate::report::{self, ms};
use crate::results::{
    DashboardBackend, DashboardFill, DashboardResult, DiskUsage, Machine, PageLatency, ResultFile,
    ServerLatency, unix_now,
};
use crate::scenario::wait_healthy;

/// Storage backends the store can be measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// `--storage memory`.
    Memory,
    /// `--storage sqlite:FILE` on a new file.
    Sqlite,
}

impl Backend {
    /// The name in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Sqlite => "sqlite",
        }
    }
}

/// Everything `dashboard` needs.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// The `agl-store` binary.
    pub store_bin: PathBuf,
    /// Further arguments for every server start.
    pub store_args: Vec<String>,
    /// Backends to measure, in turn.
    pub backends: Vec<Backend>,
    /// Rollouts to enqueue.
    pub rollouts: u64,
    /// Spans to spread over the dequeued rollouts.
    pub spans: u64,
    /// Spans of the one big rollout.
    pub big_rollout_spans: u64,
    /// Resource versions to add.
    pub resource_versions: u64,
    /// Measured requests per page.
    pub requests: usize,
    /// Unmeasured requests per page before them.
    pub warmup: usize,
    /// A page stops early once its requests have taken this long.
    pub page_budget: Duration,
    /// Concurrent clients of the fill.
    pub concurrency: usize,
    /// Folder for the SQLite files (a new one under the system's temporary folder when
    /// `None`); the files are removed after each backend.
    pub dir: Option<PathBuf>,
    /// Where the results go as JSON, written again after each backend.
    pub json: Option<PathBuf>,
    /// Keep each filled server running this long after its measurement, for a profiler or
    /// a look by hand.
    pub hold: Duration,
    /// Keep the SQLite file after the measurement (for `EXPLAIN QUERY PLAN` and the like).
    pub keep_db: bool,
    /// The command line, for the record.
    pub command: Vec<String>,
}

/// Rollouts per enqueue request.
const ENQUEUE_BATCH: u64 = 500;
/// Rollouts per dequeue request.
const DEQUEUE_BATCH: u64 = 20;
/// Most spans in one OTLP request.
const OTLP_BATCH: u64 = 500;
/// Spans of one turn of the agent (see [`tree_span`]).
const TURN: u64 = 10;
/// Time of one step of a turn, nanoseconds.
const STEP_NS: u64 = 40_000_000;
const MS_NS: u64 = 1_000_000;

/// Runs the measurement on every configured backend.
pub async fn dashboard(cfg: &DashboardConfig) -> anyhow::Result<DashboardResult> {
    anyhow::ensure!(
        cfg.store_bin.exists(),
        "{} does not exist: build it with `cargo build --release -p agl-store` or pass \
         --store-bin",
        cfg.store_bin.display()
    );
    anyhow::ensure!(
        cfg.rollouts >= 20,
        "--rollouts must be at least 20 (the list pages need some)"
    );
    let mut result = DashboardResult {
        command: cfg.command.clone(),
        started_unix: unix_now(),
        machine: Machine::current(),
        requests: cfg.requests,
        warmup: cfg.warmup,
        fill_concurrency: cfg.concurrency,
        backends: Vec::new(),
    };
    for &backend in &cfg.backends {
        result.backends.push(
            one_backend(cfg, backend)
                .await
                .with_context(|| format!("backend {}", backend.name()))?,
        );
        // What is measured so far, in case a later backend does not finish.
        if let Some(path) = &cfg.json {
            let text = serde_json::to_string_pretty(&ResultFile::Dashboard(result.clone()))?;
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(result)
}

/// The 1-minute load average now (`NaN` where `/proc/loadavg` cannot be read).
fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// A free loopback port (bound and released: a race with another process is possible but
/// shows up as a start that never becomes healthy).
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Removes an SQLite file and its companions, if present.
fn remove_db(file: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(&name);
    }
}

/// Fills the store at `http` and measures its pages, as [`dashboard`] does for each server
/// it starts (`backend` names it in the progress lines); for a server started otherwise,
/// such as an in-process one in a test.
pub async fn fill_and_measure(
    http: &Http,
    cfg: &DashboardConfig,
    backend: Backend,
) -> anyhow::Result<(DashboardFill, Vec<PageLatency>)> {
    let filled = fill(http, cfg).await?;
    let pages = measure_pages(http, cfg, &filled, backend).await?;
    Ok((filled.fill, pages))
}

async fn one_backend(cfg: &DashboardConfig, backend: Backend) -> anyhow::Result<DashboardBackend> {
    let port = free_port()?;
    let (scratch, own_scratch) = match &cfg.dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("agl-bench-dashboard-{}", std::process::id())),
            true,
        ),
    };
    let db = scratch.join(format!("dashboard-{port}.db"));
    let storage = match backend {
        Backend::Memory => "memory".to_owned(),
        Backend::Sqlite => {
            std::fs::create_dir_all(&scratch)
                .with_context(|| format!("creating {}", scratch.display()))?;
            remove_db(&db);
            format!("sqlite:{}", db.display())
        }
    };
    let mut args: Vec<String> = [
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--log-level",
        "warn",
        "--storage",
        &storage,
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(cfg.store_args.iter().cloned());
    eprintln!(
        "dashboard {}: starting {} {}",
        backend.name(),
        cfg.store_bin.display(),
        args.join(" ")
    );
    let mut child = tokio::process::Command::new(&cfg.store_bin)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", cfg.store_bin.display()))?;
    let pid = child.id().context("the server exited at once")?;
    let result = async {
        let http = Http::new(&format!("http://127.0.0.1:{port}"))?;
        wait_healthy(&http, Duration::from_secs(60)).await?;
        let server_command = procstat::cmdline(pid);

        let sampler = RssSampler::start(pid);
        let filled = fill(&http, cfg).await?;
        let rss_peak_fill_kb = sampler.finish(pid);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let rss_after_fill_kb = procstat::rss_kb(pid).unwrap_or(0);
        let disk = match backend {
            Backend::Memory => None,
            Backend::Sqlite => Some(DiskUsage::of(&db)?),
        };
        let statistics: serde_json::Value = serde_json::from_slice(
            &http
                .get("/v1/agl/statistics")
                .await
                .map_err(anyhow::Error::msg)?,
        )?;
        eprintln!(
            "dashboard {}: filled in {:.1} s (enqueue {:.1} s, big rollout {:.1} s, spans and \
             finishes {:.1} s), RSS {} MiB (peak {} MiB){}",
            backend.name(),
            filled.fill.total_s,
            filled.fill.enqueue_s,
            filled.fill.big_rollout_s,
            filled.fill.spans_s,
            rss_after_fill_kb >> 10,
            rss_peak_fill_kb >> 10,
            disk.map_or(String::new(), |d| format!(
                ", on disk {} MiB + {} MiB WAL",
                d.main_bytes >> 20,
                d.wal_bytes >> 20
            )),
        );
        let load_before = loadavg();
        let pages = measure_pages(&http, cfg, &filled, backend).await?;
        let loadavg_pages = (load_before, loadavg());
        let rss_after_pages_kb = procstat::rss_kb(pid).unwrap_or(0);
        if !cfg.hold.is_zero() {
            eprintln!(
                "dashboard {}: holding the server (pid {pid}) at {} for {:?}; big rollout {}, \
                 ordinary rollout {}",
                backend.name(),
                http.base(),
                cfg.hold,
                filled.big_rollout,
                filled.ordinary
            );
            tokio::time::sleep(cfg.hold).await;
        }
        anyhow::Ok(DashboardBackend {
            backend: backend.name().to_owned(),
            server_command,
            fill: filled.fill,
            rss_after_fill_kb,
            rss_peak_fill_kb,
            rss_after_pages_kb,
            loadavg_pages,
            disk,
            statistics,
            pages,
        })
    }
    .await;
    let _ = child.kill().await;
    if backend == Backend::Sqlite && cfg.keep_db {
        eprintln!("dashboard sqlite: kept {}", db.display());
    } else if backend == Backend::Sqlite {
        remove_db(&db);
        if own_scratch {
            let _ = std::fs::remove_dir(&scratch);
        }
    }
    result
}

// ---- the fill ---------------------------------------------------------------------------

/// What the measurement needs to know about the filled store.
struct Filled {
    fill: DashboardFill,
    /// Every enqueued rollout id, in enqueue order.
    ids: Vec<String>,
    big_rollout: String,
    /// An LLM-call span of the big rollout, in the middle of it.
    big_span: String,
    /// The turn span above it (its subtree: the turn's other nine spans).
    big_turn: String,
    /// A rollout finished early in the fill, with ordinary spans.
    ordinary: String,
    /// A start-time window holding about a tenth of the rollouts (`from`, `to`, how many
    /// it holds).
    window: (String, String, usize),
}

#[derive(Deserialize)]
struct RolloutRef {
    rollout_id: String,
    #[serde(default)]
    start_time: Option<f64>,
}

#[derive(Deserialize)]
struct AttemptRef {
    attempt_id: String,
}

#[derive(Deserialize)]
struct Attempted {
    rollout_id: String,
    attempt: AttemptRef,
}

fn post_err(what: &'static str) -> impl Fn(String) -> anyhow::Error {
    move |e| anyhow::anyhow!("{what}: {e}")
}

/// An enqueue body of rollouts `range` (every fifth in `val` mode).
fn enqueue_body(range: Range<u64>) -> String {
    let items: Vec<String> = range
        .map(|g| {
            let mode = if g % 5 == 4 { "val" } else { "train" };
            format!(
                r#"{{"input":{{"question":"{}","db":"hr.sqlite","index":{g}}},"mode":"{mode}"}}"#,
                payload::TASK
            )
        })
        .collect();
    format!(r#"{{"rollouts":[{}]}}"#, items.join(","))
}

/// A resources version: the policy model being trained and the agent's prompt.
fn resources_body(version: u64) -> String {
    format!(
        concat!(
            r#"{{"main_llm":{{"resource_type":"llm","endpoint":"http://127.0.0.1:8000/v1","#,
            r#""model":"{model}-step-{v}","sampling_parameters":{{"temperature":0.7,"top_p":0.95}}}},"#,
            r#""prompt":{{"resource_type":"prompt_template","engine":"f-string","#,
            r#""template":"You are a SQL expert (revision {v}). Answer: {{question}}"}}}}"#
        ),
        model = payload::MODEL,
        v = version
    )
}

/// What becomes of the `i`-th dequeued rollout: about one in nine stays running, and of
/// the others one in eight fails.
fn fate(i: u64) -> Option<&'static str> {
    if i % 9 == 8 {
        None
    } else if i % 8 == 7 {
        Some("failed")
    } else {
        Some("succeeded")
    }
}

/// Span `i` of a rollout's `total`-span trace, span ids `first_id + index`, the rollout
/// starting at `t0` (ns since the epoch). Index 0 is the agent's root span; the last (when
/// there are at least three) is the reward; the rest are turns of ten spans, four levels
/// deep: the turn, an LLM call (`gen_ai.*`, prompt and completion) with the model server's
/// request below it (token ids), two tool calls with two levels below each, and an
/// observation. One tool span in 25 turns fails.
fn tree_span(rollout_id: &str, trace: &[u8], first_id: u64, t0: u64, i: u64, total: u64) -> Span {
    let turns = total.saturating_sub(2).div_ceil(TURN);
    let id = |index: u64| (first_id + index).to_be_bytes().to_vec();
    let int = any_value::Value::IntValue;
    let ok = Status {
        message: String::new(),
        code: status::StatusCode::Ok as i32,
    };
    let mut span = Span {
        trace_id: trace.to_vec(),
        span_id: id(i),
        kind: 1,
        status: Some(ok),
        ..Span::default()
    };
    let root_end = t0 + (turns * TURN + 1) * STEP_NS;
    if i == 0 {
        span.name = "agent.rollout".into();
        span.start_time_unix_nano = t0;
        span.end_time_unix_nano = root_end;
        span.attributes = vec![
            kv("agentlightning.agent", s("sql-agent")),
            kv("rollout.id", s(rollout_id)),
            kv("agent.turns", int(turns as i64)),
        ];
        return span;
    }
    if total >= 3 && i == total - 1 {
        let h = first_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        span.name = "agentlightning.reward".into();
        span.parent_span_id = id(0);
        span.start_time_unix_nano = root_end - 2 * MS_NS;
        span.end_time_unix_nano = root_end - MS_NS;
        span.attributes = vec![
            kv("agentlightning.reward.0.name", s("primary")),
            kv(
                "agentlightning.reward.0.value",
                any_value::Value::DoubleValue((h % 1000) as f64 / 1000.0),
            ),
        ];
        return span;
    }
    let turn = (i - 1) / TURN;
    let base = 1 + turn * TURN;
    let tb = t0 + MS_NS + turn * TURN * STEP_NS;
    let at = |steps: u64| tb + steps * STEP_NS;
    let (name, parent, start, end, attributes) = match i - base {
        0 => (
            "agent.turn",
            0,
            tb,
            at(TURN),
            vec![kv("agent.turn", int(turn as i64))],
        ),
        1 => {
            span.kind = 3;
            (
                "openai.chat.completion",
                base,
                at(1),
                at(4),
                vec![
                    kv("gen_ai.system", s("openai")),
                    kv("gen_ai.request.model", s(payload::MODEL)),
                    kv("gen_ai.response.model", s(payload::MODEL)),
                    kv("gen_ai.prompt.0.role", s("system")),
                    kv(
                        "gen_ai.prompt.0.content",
                        s("You are a SQL expert. Answer with one query."),
                    ),
                    kv("gen_ai.prompt.1.role", s("user")),
                    kv("gen_ai.prompt.1.content", s(payload::PROMPT)),
                    kv("gen_ai.completion.0.role", s("assistant")),
                    kv("gen_ai.completion.0.content", s(payload::COMPLETION)),
                    kv("gen_ai.completion.0.finish_reason", s("stop")),
                    kv("gen_ai.usage.prompt_tokens", int(182)),
                    kv("gen_ai.usage.completion_tokens", int(64)),
                ],
            )
        }
        2 => {
            span.kind = 3;
            (
                "vllm.chat_completions",
                base + 1,
                at(1) + MS_NS,
                at(4) - MS_NS,
                vec![
                    kv("http.request.method", s("POST")),
                    kv("url.full", s("http://127.0.0.1:8000/v1/chat/completions")),
                    kv(
                        "llm.hosted_vllm.prompt_token_ids",
                        s(
                            "[151644, 8948, 198, 2610, 525, 264, 7870, 6203, 13, 21806, \
                           448, 825, 3239, 13, 151645, 198, 151644, 872, 198, 23085]",
                        ),
                    ),
                    kv(
                        "llm.hosted_vllm.response_token_ids",
                        s(
                            "[4858, 21205, 4295, 8491, 26870, 7710, 21205, 15520, 7710, \
                           84540, 1295, 352, 8, 16089, 10376, 220, 16, 151645]",
                        ),
                    ),
                ],
            )
        }
        3 | 6 => (
            "tool.call",
            base,
            at(if i - base == 3 { 4 } else { 6 }),
            at(if i - base == 3 { 6 } else { 9 }),
            vec![
                kv(
                    "tool.name",
                    s(if i - base == 3 {
                        "execute_sql"
                    } else {
                        "search_schema"
                    }),
                ),
                kv("tool.call_id", s(&format!("call_{:x}", first_id + i))),
            ],
        ),
        4 => {
            if turn % 25 == 24 {
                span.status = Some(Status {
                    message: "no such column: pay".into(),
                    code: status::StatusCode::Error as i32,
                });
            }
            (
                "sqlite.query",
                base + 3,
                at(4) + MS_NS,
                at(6) - MS_NS,
                vec![
                    kv("db.system", s("sqlite")),
                    kv("db.statement", s(payload::COMPLETION)),
                ],
            )
        }
        5 => (
            "sqlite.fetch",
            base + 4,
            at(5),
            at(6) - 2 * MS_NS,
            vec![kv("db.rows", int(1))],
        ),
        7 => {
            span.kind = 3;
            (
                "http.request",
                base + 6,
                at(6) + MS_NS,
                at(9) - MS_NS,
                vec![
                    kv("http.request.method", s("GET")),
                    kv("url.full", s("http://127.0.0.1:9000/schema?table=emp")),
                    kv("http.response.status_code", int(200)),
                ],
            )
        }
        8 => (
            "json.parse",
            base + 7,
            at(8),
            at(9) - 2 * MS_NS,
            vec![kv("json.bytes", int(2048))],
        ),
        _ => (
            "agent.observe",
            base,
            at(9),
            at(10),
            vec![kv("observation.chars", int(412))],
        ),
    };
    span.name = name.into();
    span.parent_span_id = id(parent);
    span.start_time_unix_nano = start;
    span.end_time_unix_nano = end;
    span.attributes = attributes;
    span
}

/// Sends a rollout's `total` spans in OTLP requests of at most [`OTLP_BATCH`].
async fn send_tree(
    http: &Http,
    rollout_id: &str,
    attempt_id: &str,
    first_id: u64,
    total: u64,
) -> anyhow::Result<()> {
    let trace = payload::trace_id_bytes(rollout_id);
    let t0 = u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos(),
    )?;
    let mut from = 0;
    while from < total {
        let to = (from + OTLP_BATCH).min(total);
        let spans = (from..to)
            .map(|i| tree_span(rollout_id, &trace, first_id, t0, i, total))
            .collect();
        http.post_protobuf(
            "/v1/traces",
            payload::otlp_request(rollout_id, attempt_id, spans),
        )
        .await
        .map_err(post_err("sending spans over OTLP"))?;
        from = to;
    }
    Ok(())
}

/// Runs `n` copies of `work` concurrently and waits for all of them.
async fn together<F, Fut>(n: usize, mut work: F) -> anyhow::Result<()>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(work(i))).collect();
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// An enqueue request's index and the ids it created.
type Batch = (u64, Vec<String>);

async fn fill(http: &Http, cfg: &DashboardConfig) -> anyhow::Result<Filled> {
    let t_all = Instant::now();
    let mut fill = DashboardFill {
        rollouts: cfg.rollouts,
        big_rollout_spans: cfg.big_rollout_spans,
        resource_versions: cfg.resource_versions,
        ..DashboardFill::default()
    };

    // Resource versions, as the algorithm publishes them over a run.
    for v in 0..cfg.resource_versions {
        http.post_json("/v1/agl/resources", resources_body(v))
            .await
            .map_err(post_err("adding resources"))?;
    }

    // The rollouts, in batches, several requests in flight.
    let t = Instant::now();
    let batches = cfg.rollouts.div_ceil(ENQUEUE_BATCH);
    let next = Arc::new(AtomicU64::new(0));
    let got: Arc<Mutex<Vec<Batch>>> = Arc::default();
    let times: Arc<Mutex<Vec<f64>>> = Arc::default();
    let rollouts = cfg.rollouts;
    together(cfg.concurrency, |_| {
        let (http, next, got) = (http.clone(), Arc::clone(&next), Arc::clone(&got));
        let times = Arc::clone(&times);
        async move {
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= batches {
                    return Ok(());
                }
                let range = b * ENQUEUE_BATCH..((b + 1) * ENQUEUE_BATCH).min(rollouts);
                let body = http
                    .post_json("/v1/agl/queues/rollouts/enqueue", enqueue_body(range))
                    .await
                    .map_err(post_err("enqueueing rollouts"))?;
                let items: Vec<RolloutRef> =
                    serde_json::from_slice(&body).context("reading the enqueued rollouts")?;
                times
                    .lock()
                    .extend(items.iter().filter_map(|r| r.start_time));
                got.lock()
                    .push((b, items.into_iter().map(|r| r.rollout_id).collect()));
            }
        }
    })
    .await?;
    let mut batches_got = std::mem::take(&mut *got.lock());
    batches_got.sort_by_key(|(b, _)| *b);
    let ids: Vec<String> = batches_got.into_iter().flat_map(|(_, v)| v).collect();
    anyhow::ensure!(ids.len() as u64 == cfg.rollouts, "enqueue lost rollouts");
    fill.val_rollouts = (0..cfg.rollouts).filter(|g| g % 5 == 4).count() as u64;
    fill.enqueue_s = t.elapsed().as_secs_f64();

    // A start-time window from the 40th to the 50th percentile of the start times (the
    // store's order need not be theirs: concurrent batches commit in any order).
    let mut starts = std::mem::take(&mut *times.lock());
    starts.sort_by(f64::total_cmp);
    anyhow::ensure!(
        !starts.is_empty(),
        "the enqueued rollouts carry no start time"
    );
    // Rollouts enqueued together share a start time: the window ends past the median's
    // batch, so it is never empty.
    let median = starts[starts.len() * 5 / 10];
    let after = starts
        .iter()
        .copied()
        .find(|t| *t > median)
        .unwrap_or(median + 0.001);
    let from = utc_iso(starts[starts.len() * 4 / 10]);
    let to = utc_iso(after);
    let (lo, hi) = (parse_iso(&from), parse_iso(&to));
    let in_window = starts.iter().filter(|t| **t >= lo && **t < hi).count();
    let window = (from, to, in_window);

    let span_ids = Arc::new(AtomicU64::new(1 << 40));

    // The big rollout, started directly by a worker, early: on SQLite it is history by the
    // time the pages are read.
    let t = Instant::now();
    let body = http
        .post_json(
            "/v1/agl/rollouts",
            format!(
                r#"{{"input":{{"question":"{}","db":"hr.sqlite","long":true}},"mode":"train","worker_id":"runner-big"}}"#,
                payload::TASK
            ),
        )
        .await
        .map_err(post_err("starting the big rollout"))?;
    let big: Attempted = serde_json::from_slice(&body)?;
    let first = span_ids.fetch_add(cfg.big_rollout_spans, Ordering::Relaxed);
    send_tree(
        http,
        &big.rollout_id,
        &big.attempt.attempt_id,
        first,
        cfg.big_rollout_spans,
    )
    .await?;
    http.post_json(
        &format!(
            "/v1/agl/rollouts/{}/attempts/{}",
            big.rollout_id, big.attempt.attempt_id
        ),
        payload::SUCCEEDED_BODY,
    )
    .await
    .map_err(post_err("finishing the big rollout"))?;
    // The LLM call of the middle turn.
    let turns = cfg
        .big_rollout_spans
        .saturating_sub(2)
        .div_ceil(TURN)
        .max(1);
    let big_turn = format!("{:016x}", first + 1 + (turns / 2) * TURN);
    let big_span = format!("{:016x}", first + 1 + (turns / 2) * TURN + 1);
    fill.big_rollout_s = t.elapsed().as_secs_f64();

    // Nine in ten rollouts dequeued by the workers, given their spans, and most finished.
    let t = Instant::now();
    let dequeued = cfg.rollouts - cfg.rollouts / 10;
    let per = cfg.spans.checked_div(dequeued).unwrap_or(0);
    let extra = cfg.spans.checked_rem(dequeued).unwrap_or(0);
    let next = Arc::new(AtomicU64::new(0));
    let ordinary: Arc<Mutex<Option<String>>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let progress = {
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                eprintln!(
                    "  {} of {dequeued} rollouts dequeued, given spans and finished",
                    done.load(Ordering::Relaxed)
                );
            }
        })
    };
    let outcome = together(cfg.concurrency, |w| {
        let (http, next, span_ids) = (http.clone(), Arc::clone(&next), Arc::clone(&span_ids));
        let (ordinary, done) = (Arc::clone(&ordinary), Arc::clone(&done));
        let worker = format!("runner-{w:02}");
        async move {
            loop {
                let k = next.fetch_add(DEQUEUE_BATCH, Ordering::Relaxed);
                if k >= dequeued {
                    return Ok(());
                }
                let n = DEQUEUE_BATCH.min(dequeued - k);
                let body = http
                    .post_json(
                        "/v1/agl/queues/rollouts/dequeue",
                        format!(r#"{{"limit":{n},"worker_id":"{worker}"}}"#),
                    )
                    .await
                    .map_err(post_err("dequeueing"))?;
                let got: Vec<Attempted> =
                    serde_json::from_slice(&body).context("reading dequeued rollouts")?;
                anyhow::ensure!(got.len() as u64 == n, "dequeued {} of {n}", got.len());
                for (j, a) in got.into_iter().enumerate() {
                    let i = k + j as u64;
                    let spans = per + u64::from(i < extra);
                    let first = span_ids.fetch_add(spans, Ordering::Relaxed);
                    send_tree(&http, &a.rollout_id, &a.attempt.attempt_id, first, spans).await?;
                    if let Some(status) = fate(i) {
                        http.post_json(
                            &format!(
                                "/v1/agl/rollouts/{}/attempts/{}",
                                a.rollout_id, a.attempt.attempt_id
                            ),
                            format!(r#"{{"status":"{status}"}}"#),
                        )
                        .await
                        .map_err(post_err("finishing a rollout"))?;
                    }
                    if i == 0 {
                        *ordinary.lock() = Some(a.rollout_id);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    })
    .await;
    progress.abort();
    outcome?;
    fill.dequeued = dequeued;
    fill.spans = cfg.spans;
    for i in 0..dequeued {
        match fate(i) {
            Some("succeeded") => fill.succeeded += 1,
            Some(_) => fill.failed += 1,
            None => {}
        }
    }
    fill.spans_s = t.elapsed().as_secs_f64();
    fill.total_s = t_all.elapsed().as_secs_f64();
    let ordinary = ordinary
        .lock()
        .take()
        .unwrap_or_else(|| big.rollout_id.clone());
    Ok(Filled {
        fill,
        ids,
        big_rollout: big.rollout_id,
        big_span,
        big_turn,
        ordinary,
        window,
    })
}

/// `2026-12-04T19:30:05.123456`, UTC, as the list's `from` and `to` take it (microseconds,
/// so that the window's bounds fall between two rollouts' start times).
fn utc_iso(unix: f64) -> String {
    let whole = unix.floor();
    let micros = ((unix - whole) * 1e6).floor() as u64;
    let secs = whole as i64;
    let (y, m, d) = ui::format::civil(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{micros:06}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Reads back a [`utc_iso`] time as the store does (the round trip the list's filter makes).
fn parse_iso(text: &str) -> f64 {
    ui::format::parse_local(text).unwrap_or(f64::NAN)
}

// ---- the measurement --------------------------------------------------------------------

/// One request to measure.
struct PageSpec {
    name: String,
    kind: &'static str,
    path: String,
}

fn pages(filled: &Filled, rollouts: u64) -> Vec<PageSpec> {
    let page = |name: &str, path: String| PageSpec {
        name: name.into(),
        kind: "page",
        path,
    };
    let api = |name: &str, path: String| PageSpec {
        name: name.into(),
        kind: "api",
        path,
    };
    let enc = ui::path_segment;
    // Half-way down the list, on a page boundary.
    let offset = (rollouts / 2) / 50 * 50;
    // Six characters of a rollout id from the middle of the queue (past its prefix).
    let id = &filled.ids[filled.ids.len() / 2];
    let part: String = id.chars().skip(id.len().saturating_sub(6)).collect();
    let big = &filled.big_rollout;
    vec![
        page("overview", "/".into()),
        page("rollouts, newest first (default)", "/ui/rollouts".into()),
        page(
            &format!("rollouts, page {} (offset {offset})", offset / 50 + 1),
            format!("/ui/rollouts?offset={offset}"),
        ),
        page(
            "rollouts, status succeeded",
            "/ui/rollouts?status=succeeded".into(),
        ),
        page("rollouts, mode val", "/ui/rollouts?mode=val".into()),
        page(
            "rollouts, id contains 6 characters",
            format!("/ui/rollouts?q={}", enc(&part)),
        ),
        page(
            "rollouts, sorted by start time ascending",
            "/ui/rollouts?sort=start_time&order=asc".into(),
        ),
        page(
            &format!(
                "rollouts, start-time range ({} rollouts)",
                grouped(filled.window.2 as u64)
            ),
            format!(
                "/ui/rollouts?from={}&to={}",
                enc(&filled.window.0),
                enc(&filled.window.1)
            ),
        ),
        page(
            &format!("rollout with {} spans (big)", filled.fill.big_rollout_spans),
            format!("/ui/rollouts/{}", enc(big)),
        ),
        page(
            "rollout with ordinary spans (finished early)",
            format!("/ui/rollouts/{}", enc(&filled.ordinary)),
        ),
        page(
            "span detail fragment (big rollout)",
            format!("/ui/rollouts/{}/spans/{}", enc(big), filled.big_span),
        ),
        page(
            "a turn's folded rows (big rollout)",
            format!("/ui/rollouts/{}/subtree/{}", enc(big), filled.big_turn),
        ),
        page(
            "LLM calls 51 to 100 (big rollout)",
            format!("/ui/rollouts/{}/calls?offset=50", enc(big)),
        ),
        page("resources", "/ui/resources".into()),
        page("workers", "/ui/workers".into()),
        page("API reference", "/ui/api".into()),
        api("rollouts, first 50", "/v1/agl/rollouts?limit=50".into()),
        api(
            &format!("rollouts, 50 at offset {offset}"),
            format!("/v1/agl/rollouts?limit=50&offset={offset}"),
        ),
        api(
            "rollouts, status succeeded, first 50",
            "/v1/agl/rollouts?status_in=succeeded&limit=50".into(),
        ),
        api(
            "rollouts sorted by start time, first 50",
            "/v1/agl/rollouts?sort_by=start_time&sort_order=asc&limit=50".into(),
        ),
        api(
            "spans of the big rollout (all)",
            format!("/v1/agl/spans?rollout_id={}", enc(big)),
        ),
    ]
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

async fn measure_pages(
    http: &Http,
    cfg: &DashboardConfig,
    filled: &Filled,
    backend: Backend,
) -> anyhow::Result<Vec<PageLatency>> {
    let mut out = Vec::new();
    for spec in pages(filled, cfg.rollouts) {
        let mut first_ms = f64::NAN;
        let mut first_error = None;
        for w in 0..cfg.warmup {
            let t0 = Instant::now();
            let r = http.get(&spec.path).await;
            if w == 0 {
                first_ms = t0.elapsed().as_secs_f64() * 1000.0;
            }
            if let Err(e) = r {
                first_error.get_or_insert(e);
            }
        }
        let before = Histograms::scrape(http).await;
        let mut ms = Vec::with_capacity(cfg.requests);
        let mut errors = 0;
        let mut bytes = 0;
        let began = Instant::now();
        for _ in 0..cfg.requests {
            let t0 = Instant::now();
            let r = http.get(&spec.path).await;
            ms.push(t0.elapsed().as_secs_f64() * 1000.0);
            match r {
                Ok(body) => bytes = body.len(),
                Err(e) => {
                    errors += 1;
                    first_error.get_or_insert(e);
                }
            }
            if began.elapsed() > cfg.page_budget {
                break;
            }
        }
        let after = Histograms::scrape(http).await;
        let server = match (before, after) {
            (Some(b), Some(a)) => a.since(&b),
            _ => None,
        };
        let mean_ms = ms.iter().sum::<f64>() / ms.len().max(1) as f64;
        ms.sort_by(f64::total_cmp);
        let p = PageLatency {
            name: spec.name,
            kind: spec.kind.into(),
            path: spec.path,
            requests: ms.len(),
            errors,
            first_ms,
            p50_ms: percentile(&ms, 0.50),
            p99_ms: percentile(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(f64::NAN),
            mean_ms,
            bytes,
            server,
            first_error,
        };
        eprintln!(
            "dashboard {}: {:<48} p50 {:>8.2} p99 {:>8.2} max {:>8.2} ms (server mean {}), \
             first {:>8.1} ms, {} KiB{}",
            backend.name(),
            p.name,
            p.p50_ms,
            p.p99_ms,
            p.max_ms,
            p.server
                .as_ref()
                .map_or("–".into(), |s| format!("{:.2} ms", s.mean_ms)),
            p.first_ms,
            p.bytes >> 10,
            if p.errors > 0 {
                format!(", {} errors: {:?}", p.errors, p.first_error)
            } else {
                String::new()
            }
        );
        out.push(p);
    }
    Ok(out)
}

// ---- the server's histogram ---------------------------------------------------------------

/// The request-duration histogram the store exports on `/metrics`, by route and method.
#[derive(Debug, Default, Clone, PartialEq)]
struct Histograms {
    /// `(route, method)` → (cumulative bucket counts by upper bound, sum, count).
    series: std::collections::BTreeMap<(String, String), Series>,
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Series {
    buckets: Vec<(f64, f64)>,
    sum: f64,
    count: f64,
}

const HISTOGRAM: &str = "http_request_duration_seconds";

/// The labels of a Prometheus sample, `{a="x",b="y"}`, and the value after them.
fn labels_and_value(rest: &str) -> Option<(Vec<(String, String)>, f64)> {
    let rest = rest.strip_prefix('{')?;
    let mut labels = Vec::new();
    let mut chars = rest.char_indices().peekable();
    let mut key = String::new();
    let end = loop {
        let (i, c) = chars.next()?;
        match c {
            '}' => break i,
            ',' | ' ' => {}
            '=' => {
                if chars.next()?.1 != '"' {
                    return None;
                }
                let mut value = String::new();
                loop {
                    match chars.next()?.1 {
                        '\\' => value.push(chars.next()?.1),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.push((std::mem::take(&mut key), value));
            }
            c => key.push(c),
        }
    };
    let value = rest[end + 1..].split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        v => v.parse().ok()?,
    };
    Some((labels, value))
}

impl Histograms {
    /// Parses the Prometheus text exposition.
    fn parse(text: &str) -> Self {
        let mut out = Self::default();
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let Some(at) = line.find(HISTOGRAM) else {
                continue;
            };
            let rest = &line[at + HISTOGRAM.len()..];
            let (part, rest) = match rest.find('{') {
                Some(b) => (&rest[..b], &rest[b..]),
                None => continue,
            };
            let Some((labels, value)) = labels_and_value(rest) else {
                continue;
            };
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(key, _)| key == k)
                    .map(|(_, v)| v.clone())
            };
            let key = (
                get("route").unwrap_or_default(),
                get("method").unwrap_or_default(),
            );
            let series = out.series.entry(key).or_default();
            match part {
                "_bucket" => {
                    let le = match get("le").as_deref() {
                        Some("+Inf") => f64::INFINITY,
                        Some(v) => v.parse().unwrap_or(f64::NAN),
                        None => continue,
                    };
                    series.buckets.push((le, value));
                }
                "_sum" => series.sum = value,
                "_count" => series.count = value,
                _ => {}
            }
        }
        for s in out.series.values_mut() {
            s.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        out
    }

    /// The histogram now, or `None` when the server exports none.
    async fn scrape(http: &Http) -> Option<Self> {
        let body = http.get("/metrics").await.ok()?;
        let h = Self::parse(&String::from_utf8_lossy(&body));
        (!h.series.is_empty()).then_some(h)
    }

    /// The requests served since `before`, on the route that served the most of them
    /// (other than `/metrics` itself).
    fn since(&self, before: &Self) -> Option<ServerLatency> {
        let empty = Series::default();
        let ((route, _), now, then) = self
            .series
            .iter()
            .filter(|((route, _), _)| route != "/metrics")
            .map(|(k, s)| (k, s, before.series.get(k).unwrap_or(&empty)))
            .max_by(|a, b| (a.1.count - a.2.count).total_cmp(&(b.1.count - b.2.count)))?;
        let count = now.count - then.count;
        if count < 1.0 {
            return None;
        }
        let bucket = |le: f64| {
            let at = |s: &Series| {
                s.buckets
                    .iter()
                    .find(|(b, _)| *b == le)
                    .map_or(0.0, |(_, n)| *n)
            };
            at(now) - at(then)
        };
        let quantile = |q: f64| {
            let rank = (q * count).ceil();
            now.buckets
                .iter()
                .find(|(le, _)| bucket(*le) >= rank)
                .and_then(|(le, _)| le.is_finite().then_some(le * 1000.0))
        };
        Some(ServerLatency {
            route: route.clone(),
            count: count as u64,
            mean_ms: (now.sum - then.sum) / count * 1000.0,
            p50_le_ms: quantile(0.50),
            p99_le_ms: quantile(0.99),
            within_50ms: bucket(0.05) as u64,
        })
    }
}

// ---- Markdown -----------------------------------------------------------------------------

/// The goal every page is held to: server time under 50 ms.
pub const GOAL_MS: f64 = 50.0;

fn size(bytes: usize) -> String {
    if bytes < 10 * 1024 {
        format!("{:.1} KB", bytes as f64 / 1024.0)
    } else if bytes < 1024 * 1024 {
        format!("{} KB", bytes / 1024)
    } else {
        format!("{:.1} MB", bytes as f64 / 1_048_576.0)
    }
}

fn grouped(n: u64) -> String {
    report::grouped(&n.to_string())
}

/// Whether a page met the goal: by the server's histogram (99 % of its requests within
/// 50 ms) when there is one, else by the client's p99.
pub fn meets_goal(p: &PageLatency) -> bool {
    match &p.server {
        Some(s) => p.errors == 0 && s.p99_le_ms.is_some_and(|b| b <= GOAL_MS),
        None => p.errors == 0 && p.p99_ms < GOAL_MS,
    }
}

/// The results as Markdown: per backend, the fill and one table of pages (of the first
/// result), then, given several results, each page's server time over all of them.
pub fn markdown(results: &[DashboardResult]) -> String {
    use std::fmt::Write as _;
    let Some(r) = results.first() else {
        return String::new();
    };
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "- **Command:** `{}`\n- **Date:** {}\n- **Machine:** {} CPUs ({}), {:.1} GiB RAM, \
         Linux {}; the load generator shares the CPUs with the server\n- **Requests:** {} \
         per page, one after the other from one client (keep-alive, loopback), after {} \
         unmeasured ones; *first* is the first of those, the page's first request after the \
         fill\n",
        r.command.join(" "),
        crate::report::utc_date(r.started_unix),
        m.cpus,
        m.cpu_model,
        m.mem_total_kb as f64 / 1_048_576.0,
        m.kernel,
        r.requests,
        r.warmup,
    );
    for b in &r.backends {
        let f = &b.fill;
        let _ = writeln!(out, "### {}\n", b.backend);
        let _ = writeln!(
            out,
            "- Server: `{}`\n- Fill: {} rollouts ({} in `val` mode) enqueued in {:.1} s; \
             one rollout of {} nested spans built in {:.1} s; {} rollouts dequeued by {} \
             workers and given {} spans over OTLP, {} finished `succeeded` and {} `failed` \
             (the rest left `running`, the last tenth queued), in {:.1} s; {} resource \
             versions. Whole fill: {:.1} s with {} concurrent clients\n- Server memory \
             after the fill: {:.0} MiB RSS (peak {:.0} MiB during it; {:.0} MiB after the \
             page requests); load average {:.1} when the page requests began, {:.1} when \
             they ended{}\n",
            b.server_command.join(" "),
            grouped(f.rollouts),
            grouped(f.val_rollouts),
            f.enqueue_s,
            grouped(f.big_rollout_spans),
            f.big_rollout_s,
            grouped(f.dequeued),
            r.fill_concurrency,
            grouped(f.spans),
            grouped(f.succeeded),
            grouped(f.failed),
            f.spans_s,
            f.resource_versions,
            f.total_s,
            r.fill_concurrency,
            b.rss_after_fill_kb as f64 / 1024.0,
            b.rss_peak_fill_kb as f64 / 1024.0,
            b.rss_after_pages_kb as f64 / 1024.0,
            b.loadavg_pages.0,
            b.loadavg_pages.1,
            b.disk.map_or(String::new(), |d| format!(
                "\n- On disk after the fill: {:.0} MiB database + {:.0} MiB write-ahead log",
                d.main_bytes as f64 / 1_048_576.0,
                d.wal_bytes as f64 / 1_048_576.0
            )),
        );
        out.push_str(
            "| request | path | server mean ms | server p50 · p99 ≤ ms | server ≤ 50 ms | \
             client p50 · p99 · max ms | first ms | response | < 50 ms |\n\
             |---|---|---|---|---|---|---|---|---|\n",
        );
        for p in &b.pages {
            let (mean, bounds, within) = match &p.server {
                Some(s) => (
                    ms(s.mean_ms),
                    format!(
                        "{} · {}",
                        s.p50_le_ms.map_or("> 300 s".into(), ms),
                        s.p99_le_ms.map_or("> 300 s".into(), ms)
                    ),
                    format!("{} of {}", s.within_50ms, s.count),
                ),
                None => ("–".into(), "–".into(), "–".into()),
            };
            let verdict = if p.kind == "api" {
                "(API)".to_owned()
            } else if meets_goal(p) {
                "yes".to_owned()
            } else {
                "**no**".to_owned()
            };
            let path = if p.path.chars().count() > 60 {
                format!("{}…", p.path.chars().take(57).collect::<String>())
            } else {
                p.path.clone()
            };
            let _ = writeln!(
                out,
                "| {}{} | `{}` | {} | {} | {} | {} · {} · {} | {} | {} | {} |",
                p.name,
                if p.errors > 0 {
                    format!(" ({} errors)", p.errors)
                } else {
                    String::new()
                },
                path,
                mean,
                bounds,
                within,
                ms(p.p50_ms),
                ms(p.p99_ms),
                ms(p.max_ms),
                ms(p.first_ms),
                size(p.bytes),
                verdict,
            );
        }
        out.push('\n');
    }
    if results.len() > 1 {
        spread(&mut out, results);
    }
    out
}

/// Each page's server mean over several results, per backend: lowest, highest and each.
fn spread(out: &mut String, results: &[DashboardResult]) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "### Spread over runs\n\nServer mean per request (ms) of each page in every run \
         given (the same command, run again; runs from {} to {}): lowest – highest, and each \
         run's value in the order given. The goal is judged on the tables above; this shows \
         how much one run's figure moves on this machine.\n",
        crate::report::utc_date(results.iter().map(|r| r.started_unix).min().unwrap_or(0)),
        crate::report::utc_date(results.iter().map(|r| r.started_unix).max().unwrap_or(0)),
    );
    let mut backends: Vec<&str> = Vec::new();
    for r in results {
        for b in &r.backends {
            if !backends.contains(&b.backend.as_str()) {
                backends.push(&b.backend);
            }
        }
    }
    out.push_str(
        "| request | backend | runs | lowest – highest | every run |\n|---|---|---|---|---|\n",
    );
    for backend in backends {
        let runs: Vec<&DashboardBackend> = results
            .iter()
            .flat_map(|r| &r.backends)
            .filter(|b| b.backend == backend)
            .collect();
        let Some(first) = runs.first() else { continue };
        // Pages are measured in one order; a name may differ between runs (counts in it).
        for (i, page) in first.pages.iter().enumerate() {
            let values: Vec<f64> = runs
                .iter()
                .filter_map(|b| b.pages.get(i))
                .map(|p| p.server.as_ref().map_or(p.mean_ms, |s| s.mean_ms))
                .collect();
            let lowest = values.iter().copied().fold(f64::INFINITY, f64::min);
            let highest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let every: Vec<String> = values.iter().map(|v| ms(*v)).collect();
            let _ = writeln!(
                out,
                "| {} | {backend} | {} | {} – {} | {} |",
                page.name,
                values.len(),
                ms(lowest),
                ms(highest),
                every.join(", ")
            );
        }
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_read_and_differenced() {
        let before = Histograms::parse(concat!(
            "# HELP http_request_duration_seconds x\n",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"0.01\"} 1\n",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"0.05\"} 2\n",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"+Inf\"} 2\n",
            "http_request_duration_seconds_sum{method=\"GET\",route=\"/ui/rollouts\"} 0.03\n",
            "http_request_duration_seconds_count{method=\"GET\",route=\"/ui/rollouts\"} 2\n",
        ));
        let after = Histograms::parse(concat!(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"0.01\"} 50\n",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"0.05\"} 100\n",
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/ui/rollouts\",le=\"+Inf\"} 102\n",
            "http_request_duration_seconds_sum{method=\"GET\",route=\"/ui/rollouts\"} 2.03\n",
            "http_request_duration_seconds_count{method=\"GET\",route=\"/ui/rollouts\"} 102\n",
            "http_request_duration_seconds_count{method=\"GET\",route=\"/metrics\"} 500\n",
        ));
        let s = after.since(&before).unwrap();
        assert_eq!(s.route, "/ui/rollouts");
        assert_eq!(s.count, 100);
        assert!((s.mean_ms - 20.0).abs() < 1e-9);
        assert_eq!(s.p50_le_ms, Some(50.0));
        assert_eq!(s.p99_le_ms, None);
        assert_eq!(s.within_50ms, 98);
    }

    #[test]
    fn the_tree_nests_and_ends_with_a_reward() {
        let trace = payload::trace_id_bytes("ro-1");
        let total = 37;
        let spans: Vec<Span> = (0..total)
            .map(|i| tree_span("ro-1", &trace, 100, 1_000, i, total))
            .collect();
        assert!(spans[0].parent_span_id.is_empty());
        let ids: Vec<&Vec<u8>> = spans.iter().map(|s| &s.span_id).collect();
        let mut depth = vec![0usize; spans.len()];
        for (i, s) in spans.iter().enumerate().skip(1) {
            let p = ids.iter().position(|id| **id == s.parent_span_id).unwrap();
            assert!(p < i, "span {i}'s parent comes first");
            depth[i] = depth[p] + 1;
        }
        assert_eq!(depth.iter().max(), Some(&4));
        assert_eq!(spans.last().unwrap().name, "agentlightning.reward");
        let llm = spans
            .iter()
            .filter(|s| {
                s.attributes
                    .iter()
                    .any(|a| a.key == "gen_ai.prompt.1.content")
            })
            .count();
        assert_eq!(llm, 4);
    }

    #[test]
    fn times_are_written_as_the_list_reads_them() {
        assert_eq!(utc_iso(0.5), "1970-01-01T00:00:00.500000");
        assert_eq!(utc_iso(1_796_412_605.25), "2026-12-04T19:30:05.250000");
        assert_eq!(parse_iso("2026-12-04T19:30:05.250000"), 1_796_412_605.25);
    }

    #[test]
    fn enqueue_bodies_mix_modes() {
        let v: serde_json::Value = serde_json::from_str(&enqueue_body(0..10)).unwrap();
        let modes: Vec<&str> = v["rollouts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["mode"].as_str().unwrap())
            .collect();
        assert_eq!(modes.iter().filter(|m| **m == "val").count(), 2);
        serde_json::from_str::<serde_json::Value>(&resources_body(3)).unwrap();
    }

    fn result(page_ms: f64) -> DashboardResult {
        let page = |name: &str, kind: &str, mean_ms: f64| PageLatency {
            name: name.into(),
            kind: kind.into(),
            path: "/ui/rollouts".into(),
            requests: 50,
            errors: 0,
            first_ms: mean_ms,
            p50_ms: mean_ms,
            p99_ms: mean_ms,
            max_ms: mean_ms,
            mean_ms,
            bytes: 2048,
            server: Some(ServerLatency {
                route: "/ui/rollouts".into(),
                count: 50,
                mean_ms,
                p50_le_ms: Some(if mean_ms > 50.0 { 100.0 } else { 50.0 }),
                p99_le_ms: Some(if mean_ms > 50.0 { 100.0 } else { 50.0 }),
                within_50ms: if mean_ms > 50.0 { 0 } else { 50 },
            }),
            first_error: None,
        };
        DashboardResult {
            command: vec!["agl-bench".into(), "dashboard".into()],
            started_unix: 1_796_412_605,
            machine: Machine::default(),
            requests: 50,
            warmup: 5,
            fill_concurrency: 16,
            backends: vec![DashboardBackend {
                backend: "memory".into(),
                server_command: vec!["agl-store".into()],
                fill: DashboardFill::default(),
                rss_after_fill_kb: 1024,
                rss_peak_fill_kb: 1024,
                rss_after_pages_kb: 1024,
                loadavg_pages: (0.5, 0.5),
                disk: None,
                statistics: serde_json::Value::Null,
                pages: vec![
                    page("list", "page", page_ms),
                    page("rollouts, first 50", "api", 80.0),
                ],
            }],
        }
    }

    #[test]
    fn the_markdown_judges_pages_and_spreads_runs() {
        let md = markdown(&[result(80.0)]);
        assert!(md.contains("| list | `/ui/rollouts` | 80.0 |"), "{md}");
        assert!(md.contains("| **no** |"));
        assert!(md.contains("| (API) |"));
        assert!(!md.contains("Spread over runs"));
        let md = markdown(&[result(20.0), result(80.0)]);
        assert!(md.contains("| yes |"));
        assert!(
            md.contains("| list | memory | 2 | 20.0 – 80.0 | 20.0, 80.0 |"),
            "{md}"
        );
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<f64> = (1..=50).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 25.0);
        assert_eq!(percentile(&v, 0.99), 50.0);
    }
}
