//! The measuring machinery every scenario shares: a timed window after a warm-up, one
//! latency histogram per path and worker (merged at the end, so recording never contends),
//! and an HTTP client whose calls record themselves.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use reqwest::Method;

use crate::procstat;
use crate::results::{PathKind, PathStats};

/// Latencies are recorded in microseconds, up to ten minutes, with 3 significant digits.
const MAX_LATENCY_US: u64 = 600_000_000;

/// What one path of a scenario is, declared before the run so every worker's recorder
/// lists the paths in the same order and a path that never completed still shows up.
#[derive(Debug, Clone, Copy)]
pub struct PathSpec {
    /// Label in the report: `METHOD /route/{template}` or an operation's description.
    pub label: &'static str,
    /// Request, compound operation, or auxiliary traffic.
    pub kind: PathKind,
    /// Items carried per request (rollouts per enqueue, spans per OTLP batch).
    pub items: u64,
    /// Latency the path cannot beat by design, milliseconds.
    pub floor_ms: Option<f64>,
}

impl PathSpec {
    /// A plain HTTP route carrying one item.
    pub const fn http(label: &'static str) -> Self {
        Self {
            label,
            kind: PathKind::Http,
            items: 1,
            floor_ms: None,
        }
    }

    /// A compound operation.
    pub const fn op(label: &'static str) -> Self {
        Self {
            label,
            kind: PathKind::Op,
            items: 1,
            floor_ms: None,
        }
    }

    /// Requests that only keep the scenario going.
    pub const fn aux(label: &'static str) -> Self {
        Self {
            label,
            kind: PathKind::Aux,
            items: 1,
            floor_ms: None,
        }
    }

    /// The same path carrying `items` items per request.
    pub const fn items(mut self, items: u64) -> Self {
        self.items = items;
        self
    }

    /// The same path with a latency floor.
    pub const fn floor_ms(mut self, floor_ms: f64) -> Self {
        self.floor_ms = Some(floor_ms);
        self
    }
}

/// The measured part of a scenario: what completes between `warm_end` and `deadline`
/// counts; what is still in flight at the deadline does not.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of the warm-up.
    pub warm_end: Instant,
    /// End of the measurement; workers start nothing after it.
    pub deadline: Instant,
}

impl Window {
    /// A window starting `warmup` from now and lasting `duration`.
    pub fn new(warmup: Duration, duration: Duration) -> Self {
        let warm_end = Instant::now() + warmup;
        Self {
            warm_end,
            deadline: warm_end + duration,
        }
    }

    /// Whether workers should start another operation.
    pub fn running(&self) -> bool {
        Instant::now() < self.deadline
    }

    /// Seconds measured.
    pub fn seconds(&self) -> f64 {
        (self.deadline - self.warm_end).as_secs_f64()
    }
}

struct PathAcc {
    spec: PathSpec,
    hist: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
}

/// One worker's measurements. Workers never share a recorder; [`merge`] adds them up.
pub struct Recorder {
    window: Window,
    paths: Vec<PathAcc>,
}

impl Recorder {
    /// An empty recorder for `paths` in `window`.
    pub fn new(window: Window, paths: &[PathSpec]) -> Self {
        Self {
            window,
            paths: paths
                .iter()
                .map(|spec| PathAcc {
                    spec: *spec,
                    hist: Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
                        .expect("static histogram bounds are valid"),
                    errors: 0,
                    first_error: None,
                })
                .collect(),
        }
    }

    /// Records one request or operation of `path` that started at `started` and ends now.
    /// What ends outside the window is dropped. Counting by completion keeps a server whose
    /// requests take longer than the warm-up measurable: it still completes requests inside
    /// the window, at the rate it sustains. An unknown label is a bug in the scenario.
    pub fn record(&mut self, path: &PathSpec, started: Instant, outcome: Result<(), String>) {
        let now = Instant::now();
        if now < self.window.warm_end || now > self.window.deadline {
            return;
        }
        let Some(acc) = self.paths.iter_mut().find(|p| p.spec.label == path.label) else {
            debug_assert!(false, "path {} was not declared", path.label);
            return;
        };
        let us = u64::try_from((now - started).as_micros())
            .unwrap_or(MAX_LATENCY_US)
            .clamp(1, MAX_LATENCY_US);
        acc.hist.saturating_record(us);
        if let Err(err) = outcome {
            acc.errors += 1;
            acc.first_error.get_or_insert(err);
        }
    }
}

/// Adds up the workers' recorders into one [`PathStats`] per declared path.
pub fn merge(window: Window, paths: &[PathSpec], recorders: Vec<Recorder>) -> Vec<PathStats> {
    let mut total = Recorder::new(window, paths);
    for rec in recorders {
        for (into, from) in total.paths.iter_mut().zip(rec.paths) {
            into.hist
                .add(&from.hist)
                .expect("histograms share their bounds");
            into.errors += from.errors;
            if into.first_error.is_none() {
                into.first_error = from.first_error;
            }
        }
    }
    let secs = window.seconds();
    total
        .paths
        .into_iter()
        .map(|acc| {
            let ms = |us: u64| us as f64 / 1000.0;
            let requests = acc.hist.len();
            PathStats {
                path: acc.spec.label.to_owned(),
                kind: acc.spec.kind,
                requests,
                errors: acc.errors,
                throughput_per_s: requests as f64 / secs,
                window_s: secs,
                items_per_request: acc.spec.items,
                p50_ms: if requests == 0 {
                    0.0
                } else {
                    ms(acc.hist.value_at_quantile(0.50))
                },
                p99_ms: if requests == 0 {
                    0.0
                } else {
                    ms(acc.hist.value_at_quantile(0.99))
                },
                max_ms: ms(acc.hist.max()),
                mean_ms: acc.hist.mean() / 1000.0,
                floor_ms: acc.spec.floor_ms,
                first_error: acc.first_error,
            }
        })
        .collect()
}

/// An HTTP client bound to one server whose calls record their latency and outcome.
///
/// With several replicas of one store, each clone (each worker) keeps to one of them, in
/// turn, as a Kubernetes Service balances connections: a client's keep-alive connection
/// stays on the replica it reached.
pub struct Http {
    client: reqwest::Client,
    bases: Arc<[Arc<str>]>,
    /// Clones made so far, to hand out the replicas in turn.
    clones: Arc<std::sync::atomic::AtomicUsize>,
    /// This clone's replica.
    base: usize,
}

impl Clone for Http {
    fn clone(&self) -> Self {
        let n = self
            .clones
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Self {
            client: self.client.clone(),
            bases: Arc::clone(&self.bases),
            clones: Arc::clone(&self.clones),
            base: (n + 1) % self.bases.len(),
        }
    }
}

impl Http {
    /// A client for `base` (`http://127.0.0.1:PORT`, or several such URLs separated by
    /// commas: replicas of one store) keeping one connection per worker; it sends the key in
    /// `AGL_KEY`, as the official clients do, when the target requires one.
    pub fn new(base: &str) -> anyhow::Result<Self> {
        let key = std::env::var("AGL_KEY")
            .ok()
            .filter(|k| !k.trim().is_empty());
        let client = agl_common::auth::sending_key(agl_common::tls::http_client(), key.as_deref())?
            .pool_max_idle_per_host(usize::MAX)
            .tcp_nodelay(true)
            .timeout(Duration::from_secs(120))
            .build()?;
        let bases: Vec<Arc<str>> = base
            .split(',')
            .map(|b| Arc::from(b.trim().trim_end_matches('/')))
            .collect();
        anyhow::ensure!(bases.iter().all(|b| !b.is_empty()), "an empty target URL");
        Ok(Self {
            client,
            bases: bases.into(),
            clones: Arc::default(),
            base: 0,
        })
    }

    /// This client's server's base URL.
    pub fn base(&self) -> &str {
        &self.bases[self.base]
    }

    /// Sends one request and returns the body of a 2xx answer; anything else is an error
    /// carrying the status and the start of the body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&'static str>,
        body: Option<Bytes>,
    ) -> Result<Bytes, String> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base()));
        if let Some(ct) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, ct);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await.map_err(|e| format!("transport: {e}"))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("reading the body: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            Err(format!("HTTP {status}: {text}"))
        }
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Result<Bytes, String> {
        self.send(Method::GET, path, None, None).await
    }

    /// `POST path` with a JSON body.
    pub async fn post_json(&self, path: &str, body: impl Into<Bytes>) -> Result<Bytes, String> {
        self.send(
            Method::POST,
            path,
            Some("application/json"),
            Some(body.into()),
        )
        .await
    }

    /// `POST path` with a protobuf body.
    pub async fn post_protobuf(&self, path: &str, body: impl Into<Bytes>) -> Result<Bytes, String> {
        self.send(
            Method::POST,
            path,
            Some("application/x-protobuf"),
            Some(body.into()),
        )
        .await
    }
}

/// Records `result` for `path` (started at `t0`), returning the body when it succeeded.
/// After a failure the worker pauses a millisecond, so a dead server is not hammered with
/// millions of refused connections that would drown the numbers.
pub async fn recorded(
    rec: &mut Recorder,
    path: &PathSpec,
    t0: Instant,
    result: Result<Bytes, String>,
) -> Option<Bytes> {
    match result {
        Ok(body) => {
            rec.record(path, t0, Ok(()));
            Some(body)
        }
        Err(err) => {
            rec.record(path, t0, Err(err));
            tokio::time::sleep(Duration::from_millis(1)).await;
            None
        }
    }
}

/// Runs `n` workers made by `make` and collects their recorders.
pub async fn run_workers<F, Fut>(n: usize, mut make: F) -> anyhow::Result<Vec<Recorder>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Recorder> + Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await?);
    }
    Ok(out)
}

/// CPU seconds of the server at the start and the end of the window, read by a
/// background task so the workers' timing is not disturbed.
#[derive(Clone, Default)]
pub struct CpuMarks(Arc<Mutex<(Option<f64>, Option<f64>)>>);

impl CpuMarks {
    /// Reads the server's CPU time at `window.warm_end` and `window.deadline`.
    pub fn watch(&self, pid: u32, window: Window) {
        let marks = Arc::clone(&self.0);
        tokio::spawn(async move {
            tokio::time::sleep_until(window.warm_end.into()).await;
            marks.lock().0 = procstat::cpu_seconds(pid);
            tokio::time::sleep_until(window.deadline.into()).await;
            marks.lock().1 = procstat::cpu_seconds(pid);
        });
    }

    /// CPU seconds spent inside the window, if both marks were read.
    pub fn spent(&self) -> Option<f64> {
        match *self.0.lock() {
            (Some(a), Some(b)) => Some(b - a),
            _ => None,
        }
    }
}
