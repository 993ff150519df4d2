//! Binding, wiring and the serve loop of `agl-agentops` / `agl agentops`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agl_common::auth::{Access, Policy};
use agl_common::ops::{Health, Ops, Phase};
use agl_common::serve::{Listening, serve};
use anyhow::Context as _;
use axum::Router;
use tokio::net::TcpListener;

use crate::api::{self, AppState, Shared};
use crate::args::AgentopsArgs;
use crate::env;
use crate::forward::{ForwardConfig, Forwarder, Workers, validate_target};
use crate::metrics::Metrics;
use crate::retention::{Limits, Retention};

/// Health is open; `/v3/auth/token` checks the SDK's key itself; the inspection routes
/// (which show every agent's prompts and can reset the lot) are admin routes. The
/// dashboard's pages need the SDK's key, as the SDK's routes do (agl-common opens the
/// dashboards' assets in every service).
const POLICY: Policy = Policy {
    open: &["/health", "/healthz", "/v3/auth/token"],
    admin: &["/_agl/", "/ui/traces"],
    metrics: &[],
};

/// A bound, ready-to-run server.
pub struct App {
    listener: TcpListener,
    listening: Listening,
    keyed: bool,
    router: Router,
    health: Arc<Health>,
    shared: AppState,
    forwarding: Option<(Arc<Forwarder>, Workers)>,
    base_url: String,
    drain: Duration,
    grace: Duration,
}

impl App {
    /// Checks the flags, binds the listener and starts the forwarding workers.
    pub async fn build(args: &AgentopsArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(args.max_body_bytes > 0, "--max-body-bytes must be positive");
        anyhow::ensure!(args.max_spans > 0, "--max-spans must be positive");
        anyhow::ensure!(args.max_uploads > 0, "--max-uploads must be positive");
        anyhow::ensure!(
            args.drain_seconds.is_finite() && args.drain_seconds >= 0.0,
            "--drain-seconds must be a non-negative number"
        );
        for url in &args.forward_targets() {
            validate_target(url)?;
        }
        let addr = format!("{}:{}", args.host, args.port);
        let listener = TcpListener::bind(&addr).await.map_err(|err| {
            if err.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on {addr}: the address is already in use")
            } else {
                anyhow::Error::new(err).context(format!("cannot listen on {addr}"))
            }
        })?;
        let bound = listener.local_addr()?;
        if let Some(url) = args
            .forward_otlp
            .iter()
            .find(|url| agl_common::otlp::points_at(url, bound))
        {
            anyhow::bail!(
                "--forward-otlp {url} points at this server itself: every batch would be \
                 forwarded again, forever"
            );
        }

        let access = Access::load(&args.key)?;
        let listening = Listening::from_args(&args.listen)?;
        let forward_key = agl_common::auth::client_key(
            args.forward_key.as_deref(),
            args.forward_key_file.as_deref(),
        )?;
        let ops = Ops::new("agl-agentops")?;
        let metrics = Arc::new(Metrics::new(ops.registry())?);
        let forwarding = Forwarder::start(
            &ForwardConfig {
                targets: args.forward_targets(),
                resource_attributes: args.forward_attributes(),
                queue: args.forward_queue,
                attempts: args.forward_attempts,
                timeout: crate::args::seconds(args.forward_timeout_seconds)
                    .max(Duration::from_millis(100)),
                key: forward_key,
            },
            Arc::clone(&metrics),
        )?;
        let base_url = env::base_url(args.public_url.as_deref(), &args.host, bound.port());
        let retention = Retention::new(
            Limits {
                max_spans: args.max_spans,
                max_uploads: args.max_uploads,
                max_upload_bytes: args.max_upload_bytes,
            },
            Arc::clone(&metrics),
        );
        let shared = Arc::new(Shared::new(
            retention,
            metrics,
            forwarding.as_ref().map(|(f, _)| Arc::clone(f)),
            base_url.clone(),
            args.max_body_bytes,
            access.clone(),
        ));
        let health = ops.health();
        let registry = ops.registry().clone();
        // The SDK's token opens the SDK's routes as a key does.
        let router = agl_common::auth::protect(
            ops.wrap(api::router(Arc::clone(&shared))),
            &access.clone().also_accepting(&shared.token),
            POLICY,
            &registry,
        )?;
        Ok(Self {
            listener,
            listening,
            keyed: access.keys.is_some(),
            router,
            health,
            shared,
            forwarding,
            base_url,
            drain: args.drain(),
            grace: args.grace(),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("failed to read the bound address")
    }

    /// The base URL agents use (what the environment block exports).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Whether the SDK must present a key (the environment block then leaves it out).
    pub fn keyed(&self) -> bool {
        self.keyed
    }

    /// What the handlers share: the retained data and the counters.
    pub fn shared(&self) -> AppState {
        Arc::clone(&self.shared)
    }

    /// Serves until `shutdown` resolves; then keeps serving for the drain period (readiness
    /// already 503) so exiting agents can still flush, unless `stop_now` resolves first;
    /// then stops accepting, gives in-flight requests and queued forwards the grace period,
    /// and returns.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
        stop_now: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, base_url = %self.base_url, "agentops endpoint listening");
        let health = Arc::clone(&self.health);
        let drain = self.drain;
        let drained = async move {
            shutdown.await;
            if !drain.is_zero() {
                health.set(Phase::Draining);
                tracing::info!(
                    drain_seconds = drain.as_secs_f64(),
                    "draining: still serving so exiting agents can flush"
                );
                tokio::select! {
                    () = tokio::time::sleep(drain) => {}
                    () = stop_now => tracing::info!("second signal, ending the drain"),
                }
            }
        };
        let result = serve(
            self.listener,
            self.router,
            self.health,
            drained,
            self.grace,
            || {},
            &self.listening,
        )
        .await;
        if let Some((forwarder, workers)) = self.forwarding {
            forwarder.close();
            workers.finish(self.grace).await;
        }
        tracing::info!("agentops endpoint stopped");
        result
    }
}
