//! The scenarios of `agl-bench run`: each prepares what it needs (rollouts to write spans
//! into, a filled queue), opens the measured window, and drives one of the store's hot paths
//! with `concurrency` workers the way agents, runners and algorithms use it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message as _;
use serde::Deserialize;

use crate::driver::{self, CpuMarks, Http, PathSpec, Recorder, Window, recorded, run_workers};
use crate::payload;
use crate::procstat::{self, RssSampler};
use crate::results::{Machine, PathKind, RunResult, ScenarioResult, ServerStats, unix_now};

mod v1;

/// The scenarios, in the order `run` executes them by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// `GET /v1/agl/health`.
    Health,
    /// Batched `POST /v1/agl/queues/rollouts/enqueue`.
    Enqueue,
    /// Dequeue one rollout, then mark its attempt succeeded.
    DequeueUpdate,
    /// Single-span `POST /v1/agl/spans`.
    SpanAdd,
    /// OTLP/HTTP protobuf batches at `POST /v1/traces`.
    Otlp,
    /// `GET /v1/agl/spans?rollout_id=R` of one rollout.
    SpanQuery,
    /// `POST /v1/agl/waits/rollouts` on rollouts that do not finish.
    Wait,
    /// Runners and one algorithm, as in training.
    Mixed,
    /// Upstream v1: batched `POST /api/rollouts`.
    V1Create,
    /// Upstream v1: `PATCH /api/rollouts/{id}` (a lifecycle field, as a controller does).
    V1Patch,
    /// Upstream v1: `POST /api/rollouts/{id}/attempt/0/events` (a reward).
    V1Event,
    /// Upstream v1: `GET /api/rollouts/{id}/events` of a rollout of 20 LLM calls.
    V1Events,
    /// Upstream v1: the same with `format=triplet`.
    V1Triplets,
    /// Upstream v1's proxy: a chat call through it and the same call straight to the model
    /// server, alternately.
    V1Proxy,
    /// The same, streamed.
    V1ProxyStream,
}

impl Scenario {
    /// Every scenario, in run order.
    pub const ALL: [Scenario; 8] = [
        Scenario::Health,
        Scenario::Enqueue,
        Scenario::DequeueUpdate,
        Scenario::SpanAdd,
        Scenario::Otlp,
        Scenario::SpanQuery,
        Scenario::Wait,
        Scenario::Mixed,
    ];

    /// Upstream v1's store routes and proxy, in run order.
    pub const V1: [Scenario; 7] = [
        Scenario::V1Create,
        Scenario::V1Patch,
        Scenario::V1Event,
        Scenario::V1Events,
        Scenario::V1Triplets,
        Scenario::V1Proxy,
        Scenario::V1ProxyStream,
    ];

    /// The scenarios a write ceiling is measured for.
    pub const WRITES: [Scenario; 4] = [
        Scenario::Enqueue,
        Scenario::DequeueUpdate,
        Scenario::SpanAdd,
        Scenario::Otlp,
    ];

    /// Name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Enqueue => "enqueue",
            Scenario::DequeueUpdate => "dequeue_update",
            Scenario::SpanAdd => "span_add",
            Scenario::Otlp => "otlp",
            Scenario::SpanQuery => "span_query",
            Scenario::Wait => "wait",
            Scenario::Mixed => "mixed",
            Scenario::V1Create => "v1_create",
            Scenario::V1Patch => "v1_patch",
            Scenario::V1Event => "v1_event",
            Scenario::V1Events => "v1_events",
            Scenario::V1Triplets => "v1_triplets",
            Scenario::V1Proxy => "v1_proxy",
            Scenario::V1ProxyStream => "v1_proxy_stream",
        }
    }
}

/// Sizes of the bodies and fills. [`Sizes::default`] is the benchmark; [`Sizes::tiny`] is
/// for the smoke test, where only "does every path work" matters.
#[derive(Debug, Clone)]
pub struct Sizes {
    /// Rollouts per enqueue request.
    pub enqueue_batch: usize,
    /// Spans per OTLP request.
    pub otlp_batch: u64,
    /// Spans in the rollout that `span_query` reads.
    pub query_spans: u64,
    /// Spans each runner adds per rollout in `mixed`.
    pub mixed_spans: u64,
    /// Rollouts the algorithm enqueues per step in `mixed`.
    pub mixed_batch: usize,
    /// Rollouts queued before `dequeue_update` starts.
    pub queue_prefill: i64,
    /// Queue depth under which the refiller enqueues more.
    pub queue_low_water: i64,
    /// Rollouts per refill request.
    pub refill_batch: usize,
    /// `timeout` of the `wait` scenario's calls, seconds.
    pub wait_timeout_s: f64,
    /// `timeout` of the algorithm's waits in `mixed`, seconds.
    pub mixed_wait_timeout_s: f64,
    /// Pause of a runner that found the queue empty, as runners poll.
    pub runner_poll: Duration,
}

impl Default for Sizes {
    fn default() -> Self {
        Self {
            enqueue_batch: 10,
            otlp_batch: 50,
            query_spans: 100,
            mixed_spans: 5,
            mixed_batch: 32,
            queue_prefill: 5_000,
            queue_low_water: 2_000,
            refill_batch: 500,
            wait_timeout_s: 0.05,
            mixed_wait_timeout_s: 0.1,
            runner_poll: Duration::from_millis(10),
        }
    }
}

impl Sizes {
    /// Small enough for a test suite.
    pub fn tiny() -> Self {
        Self {
            enqueue_batch: 2,
            otlp_batch: 5,
            query_spans: 5,
            mixed_spans: 2,
            mixed_batch: 4,
            queue_prefill: 50,
            queue_low_water: 30,
            refill_batch: 30,
            ..Self::default()
        }
    }
}

/// Everything `run` needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// Base URL of the server (loopback only).
    pub target: String,
    /// Name of the server in the results.
    pub label: String,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Measured time per scenario.
    pub duration: Duration,
    /// Unmeasured time before it.
    pub warmup: Duration,
    /// What to run, in order.
    pub scenarios: Vec<Scenario>,
    /// Server process to sample for memory and CPU.
    pub server_pid: Option<u32>,
    /// Body and fill sizes.
    pub sizes: Sizes,
    /// The model server behind v1's proxy (its OpenAI base URL), for the proxy scenarios.
    pub model_url: Option<String>,
}

/// What a scenario hands back to [`run`].
struct Outcome {
    window: Window,
    paths: Vec<PathSpec>,
    recorders: Vec<Recorder>,
    notes: Vec<String>,
}

/// What a scenario works with.
struct Ctx {
    http: Http,
    cfg: RunConfig,
    cpu: CpuMarks,
}

impl Ctx {
    /// Opens the window (warm-up first) once the set-up is done.
    fn begin(&self) -> Window {
        let window = Window::new(self.cfg.warmup, self.cfg.duration);
        if let Some(pid) = self.cfg.server_pid {
            self.cpu.watch(pid, window);
        }
        window
    }
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

#[derive(Deserialize)]
struct RolloutRef {
    rollout_id: String,
}

const HEALTH: PathSpec = PathSpec::http("GET /v1/agl/health");
const ENQUEUE: &str = "POST /v1/agl/queues/rollouts/enqueue";
const DEQUEUE: PathSpec = PathSpec::http("POST /v1/agl/queues/rollouts/dequeue");
const UPDATE_ATTEMPT: PathSpec =
    PathSpec::http("POST /v1/agl/rollouts/{rollout_id}/attempts/{attempt_id}");
const DEQUEUE_UPDATE: PathSpec = PathSpec::op("dequeue + attempt update (op pair)");
const REFILL: PathSpec = PathSpec::aux("POST /v1/agl/queues/rollouts/enqueue (refill)");
const SPANS: PathSpec = PathSpec::http("POST /v1/agl/spans");
const TRACES: &str = "POST /v1/traces";
const SPAN_QUERY: PathSpec = PathSpec::http("GET /v1/agl/spans?rollout_id={rollout_id}");
const WAIT: &str = "POST /v1/agl/waits/rollouts";
const RUNNER: &str = "runner: dequeue + spans + finish";
const ALGORITHM: &str = "algorithm: enqueue batch, wait until all finished";

/// Waits until the server answers its health route (at most `limit`): the 0.3 protocol's,
/// or upstream v1's `agl-server`'s.
pub async fn wait_healthy(http: &Http, limit: Duration) -> anyhow::Result<()> {
    let until = Instant::now() + limit;
    loop {
        if http.get("/v1/agl/health").await.is_ok() || http.get("/healthz").await.is_ok() {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < until,
            "{} did not become healthy within {limit:?}",
            http.base()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Starts a rollout with its first attempt; returns `(rollout_id, attempt_id)`.
pub async fn start_rollout(http: &Http, worker: &str) -> anyhow::Result<(String, String)> {
    let body = http
        .post_json("/v1/agl/rollouts", payload::start_rollout_body(worker))
        .await
        .map_err(anyhow::Error::msg)
        .context("starting a rollout")?;
    let a: Attempted = serde_json::from_slice(&body).context("reading the started rollout")?;
    Ok((a.rollout_id, a.attempt.attempt_id))
}

/// Runs the configured scenarios one after the other.
pub async fn run(cfg: &RunConfig) -> anyhow::Result<RunResult> {
    let http = Http::new(&cfg.target)?;
    wait_healthy(&http, Duration::from_secs(60)).await?;
    let started_unix = unix_now();
    let mut scenarios = Vec::new();
    for &scenario in &cfg.scenarios {
        let result = run_one(&http, cfg, scenario)
            .await
            .with_context(|| format!("scenario {}", scenario.name()))?;
        scenarios.push(result);
    }
    Ok(RunResult {
        label: cfg.label.clone(),
        target: cfg.target.clone(),
        concurrency: cfg.concurrency,
        duration_s: cfg.duration.as_secs_f64(),
        warmup_s: cfg.warmup.as_secs_f64(),
        started_unix,
        machine: Machine::current(),
        server_command: cfg.server_pid.map(procstat::cmdline).unwrap_or_default(),
        scenarios,
    })
}

async fn run_one(
    http: &Http,
    cfg: &RunConfig,
    scenario: Scenario,
) -> anyhow::Result<ScenarioResult> {
    let rss_start = cfg.server_pid.and_then(procstat::rss_kb).unwrap_or(0);
    let sampler = cfg.server_pid.map(RssSampler::start);
    let ctx = Ctx {
        http: http.clone(),
        cfg: cfg.clone(),
        cpu: CpuMarks::default(),
    };
    let outcome = match scenario {
        Scenario::Health => health(&ctx).await?,
        Scenario::Enqueue => enqueue(&ctx).await?,
        Scenario::DequeueUpdate => dequeue_update(&ctx).await?,
        Scenario::SpanAdd => span_add(&ctx).await?,
        Scenario::Otlp => otlp(&ctx).await?,
        Scenario::SpanQuery => span_query(&ctx).await?,
        Scenario::Wait => wait(&ctx).await?,
        Scenario::Mixed => mixed(&ctx).await?,
        Scenario::V1Create
        | Scenario::V1Patch
        | Scenario::V1Event
        | Scenario::V1Events
        | Scenario::V1Triplets
        | Scenario::V1Proxy
        | Scenario::V1ProxyStream => v1::run(&ctx, scenario).await?,
    };
    let paths = driver::merge(outcome.window, &outcome.paths, outcome.recorders);
    let server = match (cfg.server_pid, sampler) {
        (Some(pid), Some(sampler)) => {
            let rss_peak_kb = sampler.finish(pid);
            // The CPU reader wakes at the deadline; give it a moment on a busy machine.
            let mut cpu = ctx.cpu.spent();
            for _ in 0..50 {
                if cpu.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                cpu = ctx.cpu.spent();
            }
            let cpu_s = cpu.unwrap_or(f64::NAN);
            let ops: u64 = paths
                .iter()
                .filter(|p| p.kind != PathKind::Op)
                .map(|p| p.requests)
                .sum();
            Some(ServerStats {
                rss_start_kb: rss_start,
                rss_peak_kb,
                vm_hwm_kb: procstat::status_kb(pid, "VmHWM").unwrap_or(0),
                cpu_s,
                cpu_s_per_1000_ops: if ops == 0 {
                    f64::NAN
                } else {
                    cpu_s * 1000.0 / ops as f64
                },
            })
        }
        _ => None,
    };
    Ok(ScenarioResult {
        name: scenario.name().into(),
        window_s: outcome.window.seconds(),
        paths,
        server,
        notes: outcome.notes,
    })
}

/// The one request a worker of [`repeat`] sends again and again.
#[derive(Debug, Clone)]
enum Request {
    Get(String),
    PostJson(String, bytes::Bytes),
}

/// Opens the window and has every worker send its request (`request(i)` for worker `i`)
/// again and again until the window closes, each timed as `path`.
async fn repeat(
    ctx: &Ctx,
    path: PathSpec,
    request: impl Fn(usize) -> Request,
    notes: Vec<String>,
) -> anyhow::Result<Outcome> {
    let paths = vec![path];
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths, request) = (ctx.http.clone(), paths.clone(), request(i));
        async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                let t0 = Instant::now();
                let r = match &request {
                    Request::Get(url) => http.get(url).await,
                    Request::PostJson(url, body) => http.post_json(url, body.clone()).await,
                };
                recorded(&mut rec, &path, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes,
    })
}

async fn health(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let request = Request::Get("/v1/agl/health".into());
    repeat(ctx, HEALTH, |_| request.clone(), vec![]).await
}

async fn enqueue(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let batch = ctx.cfg.sizes.enqueue_batch;
    let path = PathSpec::http(ENQUEUE).items(batch as u64);
    let request = Request::PostJson(
        "/v1/agl/queues/rollouts/enqueue".into(),
        bytes::Bytes::from(payload::enqueue_body(batch)),
    );
    let notes = vec![format!("{batch} rollouts per request")];
    repeat(ctx, path, |_| request.clone(), notes).await
}

/// Enqueues `count` rollouts in batches of `batch`, four requests at a time.
async fn fill_queue(http: &Http, count: i64, batch: usize) -> anyhow::Result<()> {
    let requests = (count as usize).div_ceil(batch.max(1));
    let next = Arc::new(AtomicU64::new(0));
    let body = bytes::Bytes::from(payload::enqueue_body(batch));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (http, next, body) = (http.clone(), Arc::clone(&next), body.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < requests as u64 {
                http.post_json("/v1/agl/queues/rollouts/enqueue", body.clone())
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("filling the queue")?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

async fn dequeue_update(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let sizes = ctx.cfg.sizes.clone();
    let refill_path = REFILL.items(sizes.refill_batch as u64);
    let paths = vec![DEQUEUE_UPDATE, DEQUEUE, UPDATE_ATTEMPT, refill_path];
    fill_queue(&ctx.http, sizes.queue_prefill, sizes.refill_batch).await?;
    let available = Arc::new(AtomicI64::new(sizes.queue_prefill));
    let empty = Arc::new(AtomicU64::new(0));
    let window = ctx.begin();

    // The refiller keeps the queue from running dry, so the workers measure dequeues that
    // find work; its requests are reported apart (aux), they are not the measured path.
    let refiller = {
        let (http, paths, available) = (ctx.http.clone(), paths.clone(), Arc::clone(&available));
        let body = bytes::Bytes::from(payload::enqueue_body(sizes.refill_batch));
        tokio::spawn(async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                if available.load(Ordering::Relaxed) >= sizes.queue_low_water {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
                let t0 = Instant::now();
                let r = http
                    .post_json("/v1/agl/queues/rollouts/enqueue", body.clone())
                    .await;
                if recorded(&mut rec, &refill_path, t0, r).await.is_some() {
                    available.fetch_add(sizes.refill_batch as i64, Ordering::Relaxed);
                }
            }
            rec
        })
    };
    let mut recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let (available, empty) = (Arc::clone(&available), Arc::clone(&empty));
        let dequeue_body = bytes::Bytes::from(payload::dequeue_body(&format!("bench-w{i}")));
        async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                let t0 = Instant::now();
                let r = http
                    .post_json("/v1/agl/queues/rollouts/dequeue", dequeue_body.clone())
                    .await;
                let Some(body) = recorded(&mut rec, &DEQUEUE, t0, r).await else {
                    rec.record(&DEQUEUE_UPDATE, t0, Err("dequeue failed".into()));
                    continue;
                };
                let items: Vec<Attempted> = match serde_json::from_slice(&body) {
                    Ok(items) => items,
                    Err(e) => {
                        rec.record(&DEQUEUE_UPDATE, t0, Err(format!("dequeue answer: {e}")));
                        continue;
                    }
                };
                let Some(item) = items.into_iter().next() else {
                    // The refiller fell behind: not an error of the server.
                    empty.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                available.fetch_sub(1, Ordering::Relaxed);
                let t1 = Instant::now();
                let path = format!(
                    "/v1/agl/rollouts/{}/attempts/{}",
                    item.rollout_id, item.attempt.attempt_id
                );
                let r = http.post_json(&path, payload::SUCCEEDED_BODY).await;
                let ok = recorded(&mut rec, &UPDATE_ATTEMPT, t1, r).await.is_some();
                rec.record(
                    &DEQUEUE_UPDATE,
                    t0,
                    if ok {
                        Ok(())
                    } else {
                        Err("attempt update failed".into())
                    },
                );
            }
            rec
        }
    })
    .await?;
    recorders.push(refiller.await?);
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![
            format!(
                "queue pre-filled with {} rollouts; a refiller enqueues {} more whenever fewer \
                 than {} are left (its requests are listed as refill)",
                sizes.queue_prefill, sizes.refill_batch, sizes.queue_low_water
            ),
            format!(
                "dequeues that found the queue empty (refiller behind): {}",
                empty.load(Ordering::Relaxed)
            ),
        ],
    })
}

/// One started rollout per worker, for the span scenarios.
async fn rollout_per_worker(http: &Http, n: usize) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(start_rollout(http, &format!("bench-w{i}")).await?);
    }
    Ok(out)
}

fn span_stored(body: &[u8]) -> Result<(), String> {
    if body == b"null" {
        Err("span not stored (answered null: duplicate)".into())
    } else {
        Ok(())
    }
}

async fn span_add(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let paths = vec![SPANS];
    let rollouts = rollout_per_worker(&ctx.http, ctx.cfg.concurrency).await?;
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let (rid, aid) = rollouts[i].clone();
        async move {
            let mut rec = Recorder::new(window, &paths);
            let mut k: u64 = 0;
            while window.running() {
                k += 1;
                let body = payload::span_json(&rid, &aid, k, ((i as u64) << 32) | k);
                let t0 = Instant::now();
                let r = http
                    .post_json("/v1/agl/spans", body)
                    .await
                    .and_then(|b| span_stored(&b).map(|()| b));
                recorded(&mut rec, &SPANS, t0, r).await;
            }
            rec
        }
    })
    .await?;
    let size = payload::span_json("ro-0123456789ab", "at-01234567", 1, 1).len();
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![format!(
            "one {size}-byte LLM-call span per request, each worker into its own rollout"
        )],
    })
}

/// Checks an OTLP answer: a `partial_success` with rejected spans is a refused write.
fn otlp_accepted(body: &[u8]) -> Result<(), String> {
    let resp = ExportTraceServiceResponse::decode(body)
        .map_err(|e| format!("undecodable ExportTraceServiceResponse: {e}"))?;
    match resp.partial_success {
        Some(p) if p.rejected_spans > 0 => Err(format!(
            "{} spans rejected: {}",
            p.rejected_spans, p.error_message
        )),
        _ => Ok(()),
    }
}

async fn otlp(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let batch = ctx.cfg.sizes.otlp_batch;
    let path = PathSpec::http(TRACES).items(batch);
    let paths = vec![path];
    let rollouts = rollout_per_worker(&ctx.http, ctx.cfg.concurrency).await?;
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let template = payload::OtlpTemplate::new(&rollouts[i].0, &rollouts[i].1, batch);
        async move {
            let mut rec = Recorder::new(window, &paths);
            let mut first: u64 = ((i as u64) << 32) | 1;
            while window.running() {
                let body = template.render(first);
                first += batch;
                let t0 = Instant::now();
                let r = http
                    .post_protobuf("/v1/traces", body)
                    .await
                    .and_then(|b| otlp_accepted(&b).map(|()| b));
                recorded(&mut rec, &path, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![format!(
            "{batch} spans per ExportTraceServiceRequest, ids in the resource attributes, \
             sequence ids issued by the server"
        )],
    })
}

/// Adds `count` spans to a rollout, one request each.
pub async fn add_spans(
    http: &Http,
    rid: &str,
    aid: &str,
    first: u64,
    count: u64,
) -> anyhow::Result<()> {
    for k in 0..count {
        let body = payload::span_json(rid, aid, k + 1, first + k);
        http.post_json("/v1/agl/spans", body)
            .await
            .map_err(anyhow::Error::msg)
            .context("adding a span")?;
    }
    Ok(())
}

async fn span_query(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let n = ctx.cfg.sizes.query_spans;
    let (rid, aid) = start_rollout(&ctx.http, "bench-query").await?;
    add_spans(&ctx.http, &rid, &aid, 1 << 40, n).await?;
    let query = format!("/v1/agl/spans?rollout_id={rid}");
    let body = ctx
        .http
        .get(&query)
        .await
        .map_err(anyhow::Error::msg)
        .context("querying the spans")?;
    let page: serde_json::Value = serde_json::from_slice(&body)?;
    let found = page["items"].as_array().map_or(0, Vec::len);
    anyhow::ensure!(
        found as u64 == n,
        "the query found {found} spans, {n} were added"
    );
    let notes = vec![format!(
        "one rollout holding {n} spans; each answer is about {} KB",
        body.len() / 1024
    )];
    let request = Request::Get(query);
    repeat(ctx, SPAN_QUERY, |_| request.clone(), notes).await
}

async fn wait(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let timeout = ctx.cfg.sizes.wait_timeout_s;
    let path = PathSpec::http(WAIT).floor_ms(timeout * 1000.0);
    let paths = vec![path];
    let rollouts = rollout_per_worker(&ctx.http, ctx.cfg.concurrency).await?;
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let body = bytes::Bytes::from(payload::wait_body(&[rollouts[i].0.clone()], timeout));
        async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                let t0 = Instant::now();
                let r = http.post_json("/v1/agl/waits/rollouts", body.clone()).await;
                recorded(&mut rec, &path, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![format!(
            "each call waits up to {timeout} s for a rollout that never finishes: latency-bound, \
             at most {:.0} calls/s with {} clients; what matters is how far p50/p99 exceed \
             the timeout",
            ctx.cfg.concurrency as f64 / timeout,
            ctx.cfg.concurrency
        )],
    })
}

/// Takes every queued rollout off the queue, so a scenario whose algorithm waits for its
/// own batch is not stuck behind rollouts earlier scenarios left (the queue is FIFO).
async fn drain_queue(http: &Http) -> anyhow::Result<usize> {
    let mut drained = 0;
    for _ in 0..10_000 {
        let body = http
            .post_json(
                "/v1/agl/queues/rollouts/dequeue",
                r#"{"limit":1000,"worker_id":"bench-drain"}"#,
            )
            .await
            .map_err(anyhow::Error::msg)
            .context("draining the queue")?;
        let items: Vec<RolloutRef> = serde_json::from_slice(&body)?;
        if items.is_empty() {
            return Ok(drained);
        }
        drained += items.len();
    }
    anyhow::bail!("the queue never ran empty after {drained} dequeued rollouts")
}

async fn mixed(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let sizes = ctx.cfg.sizes.clone();
    let enqueue_path = PathSpec::http(ENQUEUE).items(sizes.mixed_batch as u64);
    let wait_path = PathSpec::http(WAIT);
    let runner_path = PathSpec::op(RUNNER);
    let algo_path = PathSpec::op(ALGORITHM).items(sizes.mixed_batch as u64);
    let paths = vec![
        algo_path,
        runner_path,
        enqueue_path,
        wait_path,
        DEQUEUE,
        SPANS,
        UPDATE_ATTEMPT,
    ];
    let runners = ctx.cfg.concurrency.saturating_sub(1).max(1);
    let drained = drain_queue(&ctx.http).await?;
    let window = ctx.begin();

    let algorithm = {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let body = bytes::Bytes::from(payload::enqueue_body(sizes.mixed_batch));
        tokio::spawn(async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                let t0 = Instant::now();
                let r = http
                    .post_json("/v1/agl/queues/rollouts/enqueue", body.clone())
                    .await;
                let Some(answer) = recorded(&mut rec, &enqueue_path, t0, r).await else {
                    rec.record(&algo_path, t0, Err("enqueue failed".into()));
                    continue;
                };
                let mut pending: Vec<String> =
                    match serde_json::from_slice::<Vec<RolloutRef>>(&answer) {
                        Ok(v) => v.into_iter().map(|r| r.rollout_id).collect(),
                        Err(e) => {
                            rec.record(&algo_path, t0, Err(format!("enqueue answer: {e}")));
                            continue;
                        }
                    };
                let mut failed = false;
                while !pending.is_empty() && window.running() {
                    let t1 = Instant::now();
                    let r = http
                        .post_json(
                            "/v1/agl/waits/rollouts",
                            payload::wait_body(&pending, sizes.mixed_wait_timeout_s),
                        )
                        .await;
                    let Some(done) = recorded(&mut rec, &wait_path, t1, r).await else {
                        failed = true;
                        break;
                    };
                    match serde_json::from_slice::<Vec<RolloutRef>>(&done) {
                        Ok(done) => pending.retain(|id| !done.iter().any(|d| &d.rollout_id == id)),
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if pending.is_empty() {
                    rec.record(&algo_path, t0, Ok(()));
                } else if failed {
                    rec.record(&algo_path, t0, Err("wait failed".into()));
                }
            }
            rec
        })
    };

    let mut recorders = run_workers(runners, |i| {
        let (http, paths) = (ctx.http.clone(), paths.clone());
        let dequeue_body = bytes::Bytes::from(payload::dequeue_body(&format!("runner-{i}")));
        let sizes = sizes.clone();
        async move {
            let mut rec = Recorder::new(window, &paths);
            let mut n: u64 = (i as u64) << 32;
            while window.running() {
                let t0 = Instant::now();
                let r = http
                    .post_json("/v1/agl/queues/rollouts/dequeue", dequeue_body.clone())
                    .await;
                let Some(body) = recorded(&mut rec, &DEQUEUE, t0, r).await else {
                    continue;
                };
                let item = match serde_json::from_slice::<Vec<Attempted>>(&body) {
                    Ok(items) => items.into_iter().next(),
                    Err(e) => {
                        rec.record(&runner_path, t0, Err(format!("dequeue answer: {e}")));
                        continue;
                    }
                };
                let Some(item) = item else {
                    tokio::time::sleep(sizes.runner_poll).await;
                    continue;
                };
                let mut ok = true;
                for k in 1..=sizes.mixed_spans {
                    n += 1;
                    let span = payload::span_json(&item.rollout_id, &item.attempt.attempt_id, k, n);
                    let t1 = Instant::now();
                    let r = http
                        .post_json("/v1/agl/spans", span)
                        .await
                        .and_then(|b| span_stored(&b).map(|()| b));
                    ok &= recorded(&mut rec, &SPANS, t1, r).await.is_some();
                }
                let t1 = Instant::now();
                let path = format!(
                    "/v1/agl/rollouts/{}/attempts/{}",
                    item.rollout_id, item.attempt.attempt_id
                );
                let r = http.post_json(&path, payload::SUCCEEDED_BODY).await;
                ok &= recorded(&mut rec, &UPDATE_ATTEMPT, t1, r).await.is_some();
                rec.record(
                    &runner_path,
                    t0,
                    if ok {
                        Ok(())
                    } else {
                        Err("a request of the cycle failed".into())
                    },
                );
            }
            rec
        }
    })
    .await?;
    recorders.push(algorithm.await?);
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: {
            let mut notes = vec![format!(
                "{runners} runners each dequeue a rollout, add {} spans and mark the attempt \
                 succeeded, pausing {} ms when the queue is empty; one algorithm enqueues {} \
                 rollouts and calls wait_for_rollouts (timeout {} s) until all have finished, \
                 then starts the next batch",
                sizes.mixed_spans,
                sizes.runner_poll.as_millis(),
                sizes.mixed_batch,
                sizes.mixed_wait_timeout_s
            )];
            if drained > 0 {
                notes.push(format!(
                    "{drained} rollouts left queued by earlier scenarios were dequeued first"
                ));
            }
            notes
        },
    })
}
