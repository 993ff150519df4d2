//! `agl-bench grow`: how memory and the span paths behave as the store fills. Enqueues
//! rollouts to price a rollout, then fills the store with 100-span rollouts (OTLP batches,
//! as agents send them) up to each size and runs short span add and span query
//! measurements there.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use parking_lot::Mutex;

use crate::driver::{self, Http, PathSpec, Recorder, Window, recorded, run_workers};
use crate::payload;
use crate::procstat;
use crate::results::{DiskUsage, GrowResult, GrowStep, Machine, unix_now};
use crate::scenario::{self, start_rollout};

/// Spans per filled rollout, sent as two OTLP batches of 50.
const SPANS_PER_ROLLOUT: u64 = 100;
const OTLP_BATCH: u64 = 50;

/// Everything `grow` needs.
#[derive(Debug, Clone)]
pub struct GrowConfig {
    /// Base URL of the server (loopback only).
    pub target: String,
    /// Name of the server in the results.
    pub label: String,
    /// Server process to read memory from.
    pub server_pid: u32,
    /// Store sizes (spans) to measure at, ascending.
    pub sizes: Vec<u64>,
    /// Rollouts to enqueue for the per-rollout memory figure (0 skips it).
    pub rollouts: u64,
    /// Concurrent clients.
    pub concurrency: usize,
    /// Measured time of each span add and span query run.
    pub step_duration: Duration,
    /// Unmeasured time before each.
    pub step_warmup: Duration,
    /// The server's database file (SQLite), whose size with its write-ahead log is
    /// recorded next to the memory at every size; `None` for a store without one.
    pub disk_file: Option<PathBuf>,
    /// Mark each filled rollout succeeded once its spans are in.
    pub finish: bool,
}

const ADD: PathSpec = PathSpec::http("POST /v1/agl/spans");
const QUERY: PathSpec = PathSpec::http("GET /v1/agl/spans?rollout_id={rollout_id}");

/// Lets freed request buffers settle before reading RSS.
async fn settled_rss(pid: u32) -> anyhow::Result<u64> {
    tokio::time::sleep(Duration::from_millis(300)).await;
    procstat::rss_kb(pid).with_context(|| format!("reading /proc/{pid}/status"))
}

/// The size of the store's file now, when it has one.
fn disk_usage(file: Option<&Path>) -> anyhow::Result<Option<DiskUsage>> {
    file.map(|f| DiskUsage::of(f).with_context(|| format!("reading the size of {}", f.display())))
        .transpose()
}

/// Enqueues `count` rollouts in batches of 100 with `concurrency` requests in flight.
async fn enqueue_rollouts(http: &Http, count: u64, concurrency: usize) -> anyhow::Result<()> {
    const BATCH: u64 = 100;
    let requests = count.div_ceil(BATCH);
    let next = Arc::new(AtomicU64::new(0));
    let full = bytes::Bytes::from(payload::enqueue_body(BATCH as usize));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (http, next, full) = (http.clone(), Arc::clone(&next), full.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= requests {
                    return anyhow::Ok(());
                }
                let n = (count - i * BATCH).min(BATCH);
                let body = if n == BATCH {
                    full.clone()
                } else {
                    payload::enqueue_body(n as usize).into()
                };
                http.post_json("/v1/agl/queues/rollouts/enqueue", body)
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("enqueueing rollouts")?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

/// Adds `rollouts` rollouts of 100 spans each; returns their ids.
async fn fill(
    http: &Http,
    rollouts: u64,
    concurrency: usize,
    span_counter: &Arc<AtomicU64>,
    finish: bool,
) -> anyhow::Result<Vec<String>> {
    let next = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(rollouts as usize)));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let (http, next, ids) = (http.clone(), Arc::clone(&next), Arc::clone(&ids));
        let counter = Arc::clone(span_counter);
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < rollouts {
                let (rid, aid) = start_rollout(&http, &format!("grow-{w}")).await?;
                for _ in 0..SPANS_PER_ROLLOUT / OTLP_BATCH {
                    let first = counter.fetch_add(OTLP_BATCH, Ordering::Relaxed);
                    http.post_protobuf(
                        "/v1/traces",
                        payload::otlp_batch(&rid, &aid, first, OTLP_BATCH),
                    )
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("filling spans over OTLP")?;
                }
                if finish {
                    http.post_json(
                        &format!("/v1/agl/rollouts/{rid}/attempts/{aid}"),
                        payload::SUCCEEDED_BODY,
                    )
                    .await
                    .map_err(anyhow::Error::msg)
                    .context("finishing a filled rollout")?;
                }
                ids.lock().push(rid);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let ids = std::mem::take(&mut *ids.lock());
    Ok(ids)
}

/// Single-span adds into one filled rollout per worker (their attempts are the latest).
async fn measure_add(
    http: &Http,
    cfg: &GrowConfig,
    targets: &[(String, String)],
    span_counter: &Arc<AtomicU64>,
    stored: &Arc<AtomicU64>,
    duration: Duration,
) -> anyhow::Result<crate::results::PathStats> {
    let paths = vec![ADD];
    let window = Window::new(cfg.step_warmup, duration);
    let recorders = run_workers(cfg.concurrency, |i| {
        let (http, paths) = (http.clone(), paths.clone());
        let (rid, aid) = targets[i % targets.len()].clone();
        let (counter, stored) = (Arc::clone(span_counter), Arc::clone(stored));
        async move {
            let mut rec = Recorder::new(window, &paths);
            let mut seq = 1_000_000;
            while window.running() {
                seq += 1;
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = payload::span_json(&rid, &aid, seq, n);
                let t0 = Instant::now();
                let r = http.post_json("/v1/agl/spans", body).await;
                if recorded(&mut rec, &ADD, t0, r).await.is_some() {
                    stored.fetch_add(1, Ordering::Relaxed);
                }
            }
            rec
        }
    })
    .await?;
    Ok(driver::merge(window, &paths, recorders).remove(0))
}

/// Queries of random filled rollouts (100 spans each).
async fn measure_query(
    http: &Http,
    cfg: &GrowConfig,
    rollouts: &Arc<Vec<String>>,
    duration: Duration,
) -> anyhow::Result<crate::results::PathStats> {
    let paths = vec![QUERY];
    let window = Window::new(cfg.step_warmup, duration);
    let recorders = run_workers(cfg.concurrency, |i| {
        let (http, paths, rollouts) = (http.clone(), paths.clone(), Arc::clone(rollouts));
        async move {
            let mut rec = Recorder::new(window, &paths);
            // xorshift: cheap, and every worker walks its own sequence of rollouts.
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ ((i as u64 + 1) << 17);
            while window.running() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let rid = &rollouts[(x % rollouts.len() as u64) as usize];
                let t0 = Instant::now();
                let r = http.get(&format!("/v1/agl/spans?rollout_id={rid}")).await;
                recorded(&mut rec, &QUERY, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(driver::merge(window, &paths, recorders).remove(0))
}

/// Runs the growth measurement.
pub async fn grow(cfg: &GrowConfig) -> anyhow::Result<GrowResult> {
    let http = Http::new(&cfg.target)?;
    scenario::wait_healthy(&http, Duration::from_secs(60)).await?;
    let started_unix = unix_now();
    let pid = cfg.server_pid;
    let mut notes = Vec::new();

    let rss_base_kb = settled_rss(pid).await?;
    let disk_file = cfg.disk_file.as_deref();
    let disk_base = disk_usage(disk_file)?;
    let t = Instant::now();
    enqueue_rollouts(&http, cfg.rollouts, cfg.concurrency).await?;
    let rss_after_rollouts_kb = settled_rss(pid).await?;
    let disk_after_rollouts = disk_usage(disk_file)?;
    let kb_per_100k_rollouts = if cfg.rollouts == 0 {
        f64::NAN
    } else {
        (rss_after_rollouts_kb as f64 - rss_base_kb as f64) * 100_000.0 / cfg.rollouts as f64
    };
    notes.push(format!(
        "{} rollouts enqueued (batches of 100) in {:.1} s",
        cfg.rollouts,
        t.elapsed().as_secs_f64()
    ));

    let span_counter = Arc::new(AtomicU64::new(1 << 48));
    let stored = Arc::new(AtomicU64::new(0));
    let mut filled: Vec<String> = Vec::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut steps = Vec::new();
    let mut json_bytes_per_span = f64::NAN;
    let rss_before_spans = rss_after_rollouts_kb;
    for &size in &cfg.sizes {
        let have = stored.load(Ordering::Relaxed);
        if size > have {
            let t = Instant::now();
            let new = (size - have).div_ceil(SPANS_PER_ROLLOUT);
            let ids = fill(&http, new, cfg.concurrency, &span_counter, cfg.finish).await?;
            stored.fetch_add(ids.len() as u64 * SPANS_PER_ROLLOUT, Ordering::Relaxed);
            notes.push(format!(
                "filled {} spans ({} rollouts{}) over OTLP in {:.1} s",
                ids.len() as u64 * SPANS_PER_ROLLOUT,
                ids.len(),
                if cfg.finish {
                    ", each then succeeded"
                } else {
                    ""
                },
                t.elapsed().as_secs_f64()
            ));
            filled.extend(ids);
        }
        if json_bytes_per_span.is_nan()
            && let Some(rid) = filled.first()
        {
            let body = http
                .get(&format!("/v1/agl/spans?rollout_id={rid}"))
                .await
                .map_err(anyhow::Error::msg)?;
            let page: serde_json::Value = serde_json::from_slice(&body)?;
            let items = page["items"].as_array().context("a page of spans")?;
            anyhow::ensure!(!items.is_empty(), "filled rollout {rid} has no spans");
            json_bytes_per_span = body.len() as f64 / items.len() as f64;
        }
        if targets.len() < cfg.concurrency {
            // Fresh rollouts for the adds, so each worker writes into a latest attempt.
            for w in targets.len()..cfg.concurrency {
                targets.push(start_rollout(&http, &format!("grow-add-{w}")).await?);
            }
        }
        let spans = stored.load(Ordering::Relaxed);
        let rss_kb = settled_rss(pid).await?;
        let disk = disk_usage(disk_file)?;
        let bytes_per_span =
            (rss_kb as f64 - rss_before_spans as f64) * 1024.0 / spans.max(1) as f64;
        let ids = Arc::new(filled.clone());
        // Queries first: they leave the store as it is, while the adds grow it. A server
        // too slow to complete a few requests per client in the step gets longer steps.
        let mut span_query = measure_query(&http, cfg, &ids, cfg.step_duration).await?;
        for longer in [4, 16] {
            if span_query.requests >= 2 * cfg.concurrency as u64 {
                break;
            }
            span_query = measure_query(&http, cfg, &ids, cfg.step_duration * longer).await?;
        }
        let mut span_add = measure_add(
            &http,
            cfg,
            &targets,
            &span_counter,
            &stored,
            cfg.step_duration,
        )
        .await?;
        for longer in [4, 16] {
            if span_add.requests >= 2 * cfg.concurrency as u64 {
                break;
            }
            span_add = measure_add(
                &http,
                cfg,
                &targets,
                &span_counter,
                &stored,
                cfg.step_duration * longer,
            )
            .await?;
        }
        let spans_after_add = stored.load(Ordering::Relaxed);
        eprintln!(
            "grow {}: {spans} spans, RSS {} MiB ({bytes_per_span:.0} B/span){}, add {:.0}/s, \
             query {:.0}/s",
            cfg.label,
            rss_kb / 1024,
            disk.map_or(String::new(), |d| format!(
                ", on disk {} MiB + {} MiB WAL",
                d.main_bytes >> 20,
                d.wal_bytes >> 20
            )),
            span_add.throughput_per_s,
            span_query.throughput_per_s
        );
        steps.push(GrowStep {
            spans,
            spans_after_add,
            rss_kb,
            bytes_per_span,
            disk,
            span_add,
            span_query,
        });
    }
    notes.push(
        "memory per span is the RSS growth since the spans began divided by the spans \
         stored; it includes each 100-span rollout's own record"
            .into(),
    );
    Ok(GrowResult {
        label: cfg.label.clone(),
        target: cfg.target.clone(),
        concurrency: cfg.concurrency,
        step_duration_s: cfg.step_duration.as_secs_f64(),
        started_unix,
        machine: Machine::current(),
        rss_base_kb,
        rollouts: cfg.rollouts,
        rss_after_rollouts_kb,
        kb_per_100k_rollouts,
        json_bytes_per_span,
        server_command: procstat::cmdline(pid),
        disk_base,
        disk_after_rollouts,
        steps,
        notes,
    })
}
