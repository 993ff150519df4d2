//! What makes a service operable: request spans and metrics, `/metrics`, `/livez`,
//! `/readyz`, and a serve loop that drains gracefully.
//!
//! A service builds its router, hands it to [`Ops::wrap`], and runs it with
//! [`crate::serve::serve`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use opentelemetry::propagation::Extractor;
use prometheus::{
    Encoder as _, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tracing::{Instrument as _, field};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::http::json;

/// Latency buckets in seconds: from sub-millisecond store calls to minute-long generations.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0,
];

/// Something told about every finished request (route template, method, status, seconds).
pub trait RequestObserver: Send + Sync + 'static {
    /// Called once per request after the response is produced.
    fn observe(&self, route: &str, method: &str, status: u16, seconds: f64);
}

/// Where a service is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    /// Bound but not serving yet.
    Starting = 0,
    /// Serving.
    Ready = 1,
    /// Shutting down: finishing in-flight work, refusing to be picked for new work.
    Draining = 2,
}

/// Readiness shared between the serve loop and the health routes.
#[derive(Debug)]
pub struct Health {
    phase: AtomicU8,
    /// Set while something the service cannot work without (its database) is unreachable:
    /// readiness fails, liveness does not (restarting would not bring it back).
    unavailable: AtomicBool,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            phase: AtomicU8::new(Phase::Starting as u8),
            unavailable: AtomicBool::new(false),
        }
    }
}

impl Health {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::SeqCst) {
            1 => Phase::Ready,
            2 => Phase::Draining,
            _ => Phase::Starting,
        }
    }

    /// Moves to `phase`.
    pub fn set(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::SeqCst);
    }

    /// Records whether a dependency the service needs is reachable.
    pub fn set_available(&self, available: bool) {
        self.unavailable.store(!available, Ordering::SeqCst);
    }

    /// Whether every dependency was reachable at the last check.
    pub fn available(&self) -> bool {
        !self.unavailable.load(Ordering::SeqCst)
    }
}

/// Work to do before each scrape of `/metrics` (reading values that need I/O).
pub type Refresh = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// The HTTP metrics every service exports, plus process and build information.
pub struct Ops {
    service: &'static str,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    in_flight: IntGauge,
    health: Arc<Health>,
    observers: Vec<Arc<dyn RequestObserver>>,
    refreshers: Vec<Refresh>,
}

impl Ops {
    /// Creates the registry for `service` with HTTP, process and build-info metrics.
    pub fn new(service: &'static str) -> anyhow::Result<Self> {
        // Every TLS configuration in the process uses one provider; installing it here makes
        // it the default for clients built outside `tls` too.
        crate::tls::provider();
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "http_requests_total",
                "HTTP requests by route template, method and status",
            ),
            &["route", "method", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "HTTP request latency by route template and method",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )?;
        let in_flight = IntGauge::new("http_requests_in_flight", "HTTP requests being served")?;
        let build = IntGaugeVec::new(
            Opts::new(
                "agl_build_info",
                "Version and git commit of the running binary (always 1)",
            ),
            &["service", "version", "commit"],
        )?;
        build
            .with_label_values(&[service, env!("CARGO_PKG_VERSION"), env!("AGL_GIT_COMMIT")])
            .set(1);
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            service,
            registry,
            requests,
            latency,
            in_flight,
            health: Arc::new(Health::default()),
            observers: Vec::new(),
            refreshers: Vec::new(),
        })
    }

    /// The registry, for service-specific collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The readiness flag the serve loop moves.
    pub fn health(&self) -> Arc<Health> {
        Arc::clone(&self.health)
    }

    /// Runs `refresh` before every scrape of `/metrics`.
    pub fn refresh_before_scrape(&mut self, refresh: Refresh) {
        self.refreshers.push(refresh);
    }

    /// Also tells `observer` about every request.
    pub fn observe_with(&mut self, observer: Arc<dyn RequestObserver>) {
        self.observers.push(observer);
    }

    /// The Prometheus text exposition of everything registered.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "failed to encode metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }

    /// Adds `/metrics`, `/livez`, `/readyz` to `app` and wraps every route in a server span
    /// and the request metrics.
    pub fn wrap(self, app: Router) -> Router {
        let ops = Arc::new(self);
        let routes = Router::new()
            .route("/metrics", get(metrics))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .with_state(Arc::clone(&ops));
        app.merge(routes)
            .layer(middleware::from_fn_with_state(ops, observe))
    }
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    for refresh in &ops.refreshers {
        refresh().await;
    }
    (
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        ops.render(),
    )
        .into_response()
}

async fn livez(State(ops): State<Arc<Ops>>) -> Response {
    json(
        StatusCode::OK,
        &serde_json::json!({"status": "alive", "service": ops.service}),
    )
}

async fn readyz(State(ops): State<Arc<Ops>>) -> Response {
    let (status, word) = match ops.health.phase() {
        Phase::Ready if !ops.health.available() => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        Phase::Ready => (StatusCode::OK, "ready"),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting"),
        Phase::Draining => (StatusCode::SERVICE_UNAVAILABLE, "draining"),
    };
    json(
        status,
        &serde_json::json!({"status": word, "service": ops.service}),
    )
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl opentelemetry::propagation::Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Writes the current span's trace context into `headers` (W3C `traceparent`, and
/// `tracestate` when there is one), replacing any a caller sent, so that the service a
/// request is passed on to continues this trace: a trace backend then shows the proxy's
/// request with the store's and vLLM's spans below it. Without an exporter there is no
/// trace context and nothing is written.
pub fn inject_trace_context(headers: &mut HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The name of the server span each request runs in.
pub const REQUEST_SPAN: &str = "request";

/// One server span and one metrics sample per request, labelled by the route template so
/// that ids in paths never explode the label space.
async fn observe(State(ops): State<Arc<Ops>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = req.method().as_str().to_owned();
    let span = tracing::info_span!(
        REQUEST_SPAN,
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = field::Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %req.uri().path(),
        http.response.status_code = field::Empty,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    // Without an exporter there is no OpenTelemetry layer and this is a no-op.
    let _ = span.set_parent(parent);

    ops.in_flight.inc();
    let started = Instant::now();
    let response = next.run(req).instrument(span.clone()).await;
    let seconds = started.elapsed().as_secs_f64();
    ops.in_flight.dec();

    let status = response.status().as_u16();
    // Recorded as i64: tracing-opentelemetry exports u64 values as strings.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    ops.requests
        .with_label_values(&[route.as_str(), method.as_str(), &status.to_string()])
        .inc();
    ops.latency
        .with_label_values(&[route.as_str(), method.as_str()])
        .observe(seconds);
    for observer in &ops.observers {
        observer.observe(&route, &method, status, seconds);
    }
    response
}
