//! The store's metrics: its domain at `/metrics` (beside the HTTP and process metrics every
//! service has), and upstream's metric names at `/v1/prometheus/` so dashboards built on
//! the official server keep working.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use agl_common::ops::{LATENCY_BUCKETS, RequestObserver};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::core::Store;

/// Reads the store's gauges and counters at scrape time.
pub struct StoreCollector {
    store: Arc<Store>,
    rollouts: IntGaugeVec,
    attempts: IntGaugeVec,
    workers: IntGaugeVec,
    queue: IntGauge,
    spans: IntGauge,
    waiting: IntGauge,
    in_memory: IntGauge,
    spans_stored: IntCounter,
    otlp_spans: IntCounterVec,
    otlp_payloads: IntCounterVec,
    watchdog: IntCounterVec,
    /// Serializes scrapes, so two at once cannot both catch a counter up.
    scrape: parking_lot::Mutex<()>,
}

/// Brings a Prometheus counter up to a monotonic value kept elsewhere.
fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

impl StoreCollector {
    /// A collector over `store`.
    pub fn new(store: Arc<Store>) -> anyhow::Result<Self> {
        let g = |name: &str, help: &str| IntGauge::new(name, help);
        let gv = |name: &str, help: &str, labels: &[&str]| {
            IntGaugeVec::new(Opts::new(name, help), labels)
        };
        let cv = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        Ok(Self {
            store,
            rollouts: gv("agl_store_rollouts", "Rollouts by status", &["status"])?,
            attempts: gv("agl_store_attempts", "Attempts by status", &["status"])?,
            workers: gv("agl_store_workers", "Workers by status", &["status"])?,
            queue: g("agl_store_queue_depth", "Rollout ids waiting in the queue")?,
            spans: g("agl_store_spans", "Spans held by the store")?,
            waiting: g(
                "agl_store_waiting_calls",
                "wait_for_rollouts calls currently waiting",
            )?,
            in_memory: g(
                "agl_store_rollouts_in_memory",
                "Rollouts held in memory (all of them on the memory backend; unfinished and \
                 recently finished ones on SQLite)",
            )?,
            // The counts live in the store's atomics; these counters catch up at scrape time.
            spans_stored: IntCounter::new(
                "agl_store_spans_stored_total",
                "Spans stored through any route",
            )?,
            otlp_spans: cv(
                "agl_store_otlp_spans_total",
                "Spans received over OTLP by outcome",
                &["outcome"],
            )?,
            otlp_payloads: cv(
                "agl_store_otlp_payloads_total",
                "OTLP trace payloads by outcome",
                &["outcome"],
            )?,
            watchdog: cv(
                "agl_store_watchdog_actions_total",
                "Attempts flagged by the watchdog",
                &["action"],
            )?,
            scrape: parking_lot::Mutex::new(()),
        })
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut d = Vec::new();
        d.extend(self.rollouts.desc());
        d.extend(self.attempts.desc());
        d.extend(self.workers.desc());
        d.extend(self.queue.desc());
        d.extend(self.spans.desc());
        d.extend(self.waiting.desc());
        d.extend(self.in_memory.desc());
        d.extend(self.spans_stored.desc());
        d.extend(self.otlp_spans.desc());
        d.extend(self.otlp_payloads.desc());
        d.extend(self.watchdog.desc());
        d
    }

    #[allow(clippy::cast_possible_wrap)]
    fn collect(&self) -> Vec<MetricFamily> {
        let _scrape = self.scrape.lock();
        let g = self.store.gauges();
        for (status, n) in &g.rollouts_by_status {
            self.rollouts
                .with_label_values(&[status.as_str()])
                .set(*n as i64);
        }
        for (status, n) in &g.attempts_by_status {
            self.attempts
                .with_label_values(&[status.as_str()])
                .set(*n as i64);
        }
        for (status, n) in &g.workers_by_status {
            self.workers
                .with_label_values(&[status.as_str()])
                .set(*n as i64);
        }
        self.queue.set(g.queue_depth as i64);
        self.spans.set(g.spans as i64);
        self.waiting.set(g.waiting_calls as i64);
        self.in_memory.set(g.rollouts_in_memory as i64);
        let c = self.store.counters();
        let read = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        catch_up(&self.spans_stored, read(&c.spans_stored));
        let pairs = [
            (&self.otlp_spans, "stored", &c.otlp_spans_stored),
            (&self.otlp_spans, "rejected", &c.otlp_spans_rejected),
            (&self.otlp_spans, "unattributed", &c.otlp_spans_unattributed),
            (&self.otlp_payloads, "accepted", &c.otlp_payloads_accepted),
            (&self.otlp_payloads, "rejected", &c.otlp_payloads_rejected),
            (&self.watchdog, "timeout", &c.watchdog_timeouts),
            (&self.watchdog, "unresponsive", &c.watchdog_unresponsive),
        ];
        for (family, label, value) in pairs {
            catch_up(&family.with_label_values(&[label]), read(value));
        }
        let mut families = Vec::new();
        families.extend(self.rollouts.collect());
        families.extend(self.attempts.collect());
        families.extend(self.workers.collect());
        families.extend(self.queue.collect());
        families.extend(self.spans.collect());
        families.extend(self.waiting.collect());
        families.extend(self.in_memory.collect());
        families.extend(self.spans_stored.collect());
        families.extend(self.otlp_spans.collect());
        families.extend(self.otlp_payloads.collect());
        families.extend(self.watchdog.collect());
        families
    }
}

/// Upstream's metric names (`agl_http_*`, `agl_store_*`, `agl_rollouts_*`), served at
/// `/v1/prometheus/`.
pub struct UpstreamMetrics {
    registry: Registry,
    http_total: IntCounterVec,
    http_latency: HistogramVec,
    store_total: IntCounterVec,
    store_latency: HistogramVec,
}

impl UpstreamMetrics {
    /// Registers the upstream families and hooks rollout completions of `store`.
    pub fn new(store: &Store) -> anyhow::Result<Arc<Self>> {
        let registry = Registry::new();
        let http_total = IntCounterVec::new(
            Opts::new("agl_http_total", "HTTP requests (upstream name)"),
            &["path", "method", "status"],
        )?;
        let http_latency = HistogramVec::new(
            HistogramOpts::new(
                "agl_http_latency",
                "HTTP latency in seconds (upstream name)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["path", "method", "status"],
        )?;
        let store_total = IntCounterVec::new(
            Opts::new("agl_store_total", "Store method calls (upstream name)"),
            &["method", "store_pubmeth", "status"],
        )?;
        let store_latency = HistogramVec::new(
            HistogramOpts::new(
                "agl_store_latency",
                "Store method latency in seconds (upstream name)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["method", "store_pubmeth", "status"],
        )?;
        let rollouts_total = IntCounterVec::new(
            Opts::new(
                "agl_rollouts_total",
                "Finished rollouts by status and mode (upstream name)",
            ),
            &["status", "mode"],
        )?;
        let rollouts_duration = HistogramVec::new(
            HistogramOpts::new(
                "agl_rollouts_duration",
                "Seconds from rollout start to finish (upstream name)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["status", "mode"],
        )?;
        registry.register(Box::new(http_total.clone()))?;
        registry.register(Box::new(http_latency.clone()))?;
        registry.register(Box::new(store_total.clone()))?;
        registry.register(Box::new(store_latency.clone()))?;
        registry.register(Box::new(rollouts_total.clone()))?;
        registry.register(Box::new(rollouts_duration.clone()))?;
        store.set_finish_hook(Box::new(move |status, mode, seconds| {
            let mode = mode.map_or("unknown", |m| m.as_str());
            rollouts_total
                .with_label_values(&[status.as_str(), mode])
                .inc();
            rollouts_duration
                .with_label_values(&[status.as_str(), mode])
                .observe(seconds.max(0.0));
        }));
        Ok(Arc::new(Self {
            registry,
            http_total,
            http_latency,
            store_total,
            store_latency,
        }))
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "failed to encode upstream metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

impl RequestObserver for UpstreamMetrics {
    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let code = status.to_string();
        self.http_total
            .with_label_values(&[route, method, &code])
            .inc();
        self.http_latency
            .with_label_values(&[route, method, &code])
            .observe(seconds);
        if let Some(store_method) = store_method(route, method) {
            // Upstream labels a call by the exception class it raised, or "OK".
            let outcome = match status {
                200..=299 => "OK",
                400..=499 => "ValueError",
                _ => "Exception",
            };
            self.store_total
                .with_label_values(&[store_method, store_method, outcome])
                .inc();
            self.store_latency
                .with_label_values(&[store_method, store_method, outcome])
                .observe(seconds);
        }
    }
}

/// The `LightningStore` method a current-protocol route calls.
fn store_method(route: &str, method: &str) -> Option<&'static str> {
    let path = route.strip_prefix("/v1/agl")?;
    Some(match (method, path) {
        ("POST", "/queues/rollouts/enqueue") => "enqueue_many_rollouts",
        ("POST", "/queues/rollouts/dequeue") => "dequeue_many_rollouts",
        ("POST", "/rollouts") => "start_rollout",
        ("GET", "/rollouts") | ("POST", "/rollouts/search") => "query_rollouts",
        ("GET", "/rollouts/{rollout_id}") => "get_rollout_by_id",
        ("POST", "/rollouts/{rollout_id}") => "update_rollout",
        ("POST", "/rollouts/{rollout_id}/attempts") => "start_attempt",
        ("GET", "/rollouts/{rollout_id}/attempts")
        | ("POST", "/rollouts/{rollout_id}/attempts/search") => "query_attempts",
        ("GET", "/rollouts/{rollout_id}/attempts/latest") => "get_latest_attempt",
        ("POST", "/rollouts/{rollout_id}/attempts/latest")
        | ("POST", "/rollouts/{rollout_id}/attempts/{attempt_id}") => "update_attempt",
        ("GET", "/workers") | ("POST", "/workers/search") => "query_workers",
        ("GET", "/workers/{worker_id}") => "get_worker_by_id",
        ("POST", "/workers/{worker_id}") => "update_worker",
        ("GET", "/statistics") => "statistics",
        ("GET", "/resources") => "query_resources",
        ("POST", "/resources") => "add_resources",
        ("GET", "/resources/latest") => "get_latest_resources",
        ("GET", "/resources/{resources_id}") => "get_resources_by_id",
        ("POST", "/resources/{resources_id}" | "/resources/latest") => "update_resources",
        ("POST", "/spans") => "add_span",
        ("GET", "/spans") | ("POST", "/spans/search") => "query_spans",
        ("POST", "/spans/next") => "get_next_span_sequence_id",
        ("POST", "/waits/rollouts") => "wait_for_rollouts",
        _ => return None,
    })
}
