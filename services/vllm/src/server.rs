//! Binding, wiring and the serve loop of the proxy (`agl-vllm proxy`, and the launcher's
//! proxy in front of its vLLM).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agl_common::auth::{Access, Policy};
use agl_common::ops::{Health, Ops};
use agl_common::serve::{Listening, serve};
use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::args::{ProxyArgs, seconds};
use crate::metrics::Metrics;
use crate::proxy::{Proxy, ProxyConfig, ProxyParts};
use crate::recorder::{self, RecorderConfig, RecorderTasks};
use crate::store::{StoreClient, resolve_url, validate_http_url};
use crate::upstream::{self, Upstream};

/// vLLM's health and ping stay open (probes); pausing and resuming the proxy stop or start
/// every agent's generations: admin routes. vLLM's metrics and the proxy's own are metrics.
const POLICY: Policy = Policy {
    open: &["/health", "/ping"],
    admin: &["/proxy/pause", "/proxy/resume"],
    metrics: &["/vllm/metrics", "/agl/metrics"],
};

/// A bound, ready-to-run proxy.
pub struct App {
    listener: TcpListener,
    listening: Listening,
    router: Router,
    proxy: Arc<Proxy>,
    readiness: Arc<Health>,
    recorder: RecorderTasks,
    probe_client: reqwest::Client,
    health_interval: Duration,
    grace: Duration,
    flush: Duration,
}

pub use agl_llm_proxy::net::bind;

/// The HTTP client for vLLM: no proxy from the environment (vLLM is local or in the pod),
/// pooled connections, and a total limit suited to long generations.
pub fn upstream_client(args: &ProxyArgs) -> anyhow::Result<reqwest::Client> {
    let mut builder = agl_common::tls::http_client()
        .no_proxy()
        .tcp_nodelay(true)
        .connect_timeout(seconds(args.connect_timeout_seconds).max(Duration::from_millis(100)))
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("agl-vllm/", env!("CARGO_PKG_VERSION")));
    if args.upstream_timeout_seconds > 0.0 {
        builder = builder.timeout(seconds(args.upstream_timeout_seconds));
    }
    builder
        .build()
        .context("failed to build the upstream http client")
}

impl App {
    /// Checks the flags, binds the listener, and starts the recorder. `upstream` is vLLM's
    /// base URL; `api_key` (vLLM's `--api-key`) is used for the readiness probe.
    pub async fn build(
        args: &ProxyArgs,
        upstream: &str,
        api_key: Option<String>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(args.max_body_bytes > 0, "--max-body-bytes must be positive");
        anyhow::ensure!(args.export_queue > 0, "--export-queue must be positive");
        for (flag, value) in [
            ("--upstream-timeout-seconds", args.upstream_timeout_seconds),
            ("--shutdown-timeout-seconds", args.shutdown_timeout_seconds),
            ("--health-interval-seconds", args.health_interval_seconds),
            ("--export-interval-seconds", args.export_interval_seconds),
        ] {
            anyhow::ensure!(
                value.is_finite() && value >= 0.0,
                "{flag} must be a non-negative number"
            );
        }
        validate_http_url("upstream url", upstream)?;
        let upstream = upstream.trim_end_matches('/');

        let listener = bind(&format!("{}:{}", args.host, args.port)).await?;
        let bound = listener.local_addr()?;
        if agl_common::otlp::points_at(upstream, bound) {
            anyhow::bail!(
                "the upstream {upstream} is this proxy itself: point --upstream at vllm's port"
            );
        }
        let access = Access::load(&args.key)?;
        let listening = Listening::from_args(&args.listen)?;
        let store_key = agl_common::auth::client_key(
            args.store_key.as_deref(),
            args.store_key_file.as_deref(),
        )?;
        let store = match resolve_url(args.store_url.as_deref()) {
            Some(url) => {
                let store = StoreClient::new(
                    &url,
                    seconds(args.store_timeout_seconds),
                    store_key.as_deref(),
                )?;
                if agl_common::otlp::points_at(&store.traces_url(), bound) {
                    anyhow::bail!(
                        "the store url {url} is this proxy itself: point --store-url at the lightning store"
                    );
                }
                Some(store)
            }
            None => {
                tracing::warn!(
                    "no store configured (--store-url, AGL_STORE_URL or AGL_SERVER_HOST/AGL_SERVER_PORT): \
                     calls are served but not recorded"
                );
                None
            }
        };

        let ops = Ops::new("agl-vllm")?;
        let metrics = Arc::new(Metrics::new(ops.registry())?);
        let registry = ops.registry().clone();
        let registry_for_auth = ops.registry().clone();
        let (recorder, recorder_tasks) = recorder::start(
            &RecorderConfig {
                traces_url: store.as_ref().map(StoreClient::traces_url),
                queue: args.export_queue,
                batch: args.export_batch,
                interval: seconds(args.export_interval_seconds),
                attempts: args.export_attempts,
                timeout: seconds(args.export_timeout_seconds).max(Duration::from_millis(100)),
                key: store_key,
            },
            Arc::clone(&metrics),
        )?;
        let readiness = ops.health();
        let proxy = Arc::new(Proxy::new(ProxyParts {
            upstream: Arc::new(Upstream::new(upstream, api_key)),
            client: upstream_client(args)?,
            store,
            recorder,
            metrics,
            registry,
            readiness: Arc::clone(&readiness),
            config: ProxyConfig {
                logprobs: args.logprobs,
                served_model: args.served_model.clone().filter(|m| !m.is_empty()),
                stream_usage: args.stream_usage,
                max_body_bytes: args.max_body_bytes,
                max_record_bytes: args.max_record_bytes,
                require_store: args.require_store,
            },
        }));
        let router = agl_common::auth::protect(
            ops.wrap(crate::proxy::router(Arc::clone(&proxy))),
            &access,
            POLICY,
            &registry_for_auth,
        )?;
        let probe_client = agl_common::tls::http_client()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()
            .context("failed to build the probe http client")?;
        Ok(Self {
            listener,
            listening,
            router,
            proxy,
            readiness,
            recorder: recorder_tasks,
            probe_client,
            health_interval: seconds(args.health_interval_seconds).max(Duration::from_millis(50)),
            grace: seconds(args.shutdown_timeout_seconds),
            flush: seconds(args.flush_timeout_seconds),
        })
    }

    /// The address the proxy listens on (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("failed to read the bound address")
    }

    /// The proxy's shared state (the launcher drains it before stopping vLLM).
    pub fn proxy(&self) -> Arc<Proxy> {
        Arc::clone(&self.proxy)
    }

    /// Serves until `shutdown` resolves; then `/readyz` turns 503, new generation calls
    /// get 503, in-flight calls get `--shutdown-timeout-seconds` to finish, and the calls
    /// waiting for export get `--flush-timeout-seconds` to reach the store.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, upstream = self.proxy.upstream().base(), "vllm proxy listening");
        let (stop_monitor, stop_rx) = watch::channel(false);
        let monitor = tokio::spawn(upstream::monitor(
            Arc::clone(self.proxy.upstream()),
            self.probe_client,
            self.health_interval,
            Arc::clone(&self.readiness),
            Arc::clone(self.proxy.metrics()),
            stop_rx,
        ));
        let proxy = Arc::clone(&self.proxy);
        let signal = async move {
            shutdown.await;
            proxy.start_draining();
        };
        // `/readyz` follows vLLM (the monitor) and the drain (above), so the serve loop
        // gets a phase of its own that nothing reads.
        let result = serve(
            self.listener,
            self.router,
            Arc::new(Health::default()),
            signal,
            self.grace,
            || {},
            &self.listening,
        )
        .await;
        let _ = stop_monitor.send(true);
        let _ = monitor.await;
        self.recorder.finish(self.flush).await;
        tracing::info!("vllm proxy stopped");
        result
    }
}
