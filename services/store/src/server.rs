//! Configuration, binding and the serve loop of `agl-store` / `agl store`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use clap::Args;
use tokio::net::TcpListener;

use agl_common::cli::LogArgs;
use agl_common::ops::{Health, Ops, RequestObserver, serve};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{self, HttpConfig};
use crate::clock::{Clock, SystemClock};
use crate::core::{Store, StoreConfig};
use crate::metrics::{StoreCollector, UpstreamMetrics};
use crate::persist::{Backend, Memory};
use crate::sqlite::{Durability, Sqlite};

/// Flags and environment of `agl store` (and the `agl-store` binary).
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Port to run the server on (default: 4747)
    #[arg(
        long,
        value_name = "PORT",
        env = "AGL_SERVER_PORT",
        default_value_t = 4747,
        hide_default_value = true
    )]
    pub port: u16,

    /// Address to bind (default: 0.0.0.0, all interfaces, as upstream binds)
    #[arg(
        long,
        value_name = "HOST",
        env = "AGL_SERVER_HOST",
        default_value = "0.0.0.0",
        hide_default_value = true
    )]
    pub host: String,

    /// Allow browser requests from this origin (repeatable; `*` allows any). CORS is off
    /// unless at least one origin is given.
    #[arg(
        long = "cors-origin",
        value_name = "ORIGIN",
        env = "AGL_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Minimum seconds between two watchdog scans (timeouts, unresponsive attempts); 0
    /// scans on every call
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_SCAN_DEBOUNCE_SECONDS",
        default_value_t = 10.0
    )]
    pub scan_debounce_seconds: f64,

    /// Largest accepted request body in bytes; larger bodies get a 413 JSON error
    #[arg(
        long,
        value_name = "BYTES",
        env = "AGL_MAX_BODY_BYTES",
        default_value_t = agl_common::http::DEFAULT_BODY_LIMIT
    )]
    pub max_body_bytes: usize,

    /// Seconds in-flight requests get to finish after SIGTERM/SIGINT before the server
    /// exits anyway
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_SHUTDOWN_GRACE_SECONDS",
        default_value_t = 10.0
    )]
    pub shutdown_grace_seconds: f64,

    /// Where the store keeps its data: `memory` (lost at exit, the reference's behaviour) or
    /// `sqlite:PATH` (a durable file; created if missing)
    #[arg(
        long,
        value_name = "BACKEND",
        env = "AGL_STORAGE",
        default_value = "memory"
    )]
    pub storage: Storage,

    /// With SQLite: `full` fsyncs every commit (acknowledged writes survive power loss);
    /// `normal` survives process crashes only, and is faster on slow disks
    #[arg(
        long,
        value_name = "LEVEL",
        env = "AGL_SQLITE_DURABILITY",
        default_value = "full"
    )]
    pub sqlite_durability: DurabilityArg,

    /// With SQLite: MiB of finished rollouts (their spans) kept in memory once they are on
    /// disk; older ones are read from the file when asked for. Unfinished rollouts are
    /// always in memory
    #[arg(
        long,
        value_name = "MIB",
        env = "AGL_CACHE_MIB",
        default_value_t = crate::core::DEFAULT_CACHE_BYTES >> 20
    )]
    pub cache_mib: usize,

    /// Directory for online backups (`POST /admin/backup`, `agl store backup --url`);
    /// default: the directory of the SQLite file
    #[arg(long, value_name = "DIR", env = "AGL_BACKUP_DIR")]
    pub backup_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Option<StoreCommand>,
}

/// Maintenance commands beside serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Copy an SQLite store: online from a running server (`--url`), or offline from a file
    /// no server holds (`--from FILE --to FILE`)
    Backup(BackupArgs),
    /// Exit 0 when the server on `--port` (or `AGL_SERVER_PORT`) is ready: the image's
    /// health check, since it has no shell or curl
    Healthcheck,
}

/// `backup` flags.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    /// A running store, e.g. http://localhost:4747: the copy is taken by the server, between
    /// two commits, into its backup directory
    #[arg(long, value_name = "URL", conflicts_with_all = ["from", "to"])]
    pub url: Option<String>,
    /// File name of the online copy inside the server's backup directory
    #[arg(long, value_name = "NAME", requires = "url")]
    pub name: Option<String>,
    /// Store file of a stopped server
    #[arg(long, value_name = "FILE", requires = "to")]
    pub from: Option<std::path::PathBuf>,
    /// Where the offline copy goes (must not exist)
    #[arg(long, value_name = "FILE", requires = "from")]
    pub to: Option<std::path::PathBuf>,
}

/// Runs what the command line asks: serve until a shutdown signal, or a maintenance command.
pub async fn run(args: &StoreArgs) -> anyhow::Result<()> {
    match &args.command {
        None => {
            let app = App::build(args).await?;
            app.run_until(agl_common::shutdown::signal()).await
        }
        Some(StoreCommand::Backup(b)) => backup(b).await,
        Some(StoreCommand::Healthcheck) => {
            agl_common::probe::probe(args.port, "/readyz", Duration::from_secs(3)).await
        }
    }
}

async fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    match (&args.url, &args.from, &args.to) {
        (Some(url), _, _) => {
            let endpoint = format!("{}/admin/backup", url.trim_end_matches('/'));
            let body = serde_json::json!({ "name": args.name });
            let response = reqwest::Client::new()
                .post(&endpoint)
                .json(&body)
                .send()
                .await
                .with_context(|| format!("cannot reach {endpoint}"))?;
            let status = response.status();
            let answer: serde_json::Value = response
                .json()
                .await
                .context("the server's answer is not JSON")?;
            anyhow::ensure!(
                status.is_success(),
                "backup failed ({status}): {}",
                answer["detail"]
            );
            println!("{}", answer["path"].as_str().unwrap_or_default());
            Ok(())
        }
        (None, Some(from), Some(to)) => {
            anyhow::ensure!(!to.exists(), "{} already exists", to.display());
            crate::sqlite::backup_offline(from, to)?;
            println!("{}", to.display());
            Ok(())
        }
        _ => anyhow::bail!("backup needs --url URL, or --from FILE --to FILE"),
    }
}

/// The storage backend choice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// In memory only.
    Memory,
    /// An SQLite file.
    Sqlite(std::path::PathBuf),
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        match s.split_once(':') {
            Some((scheme, path)) if scheme.eq_ignore_ascii_case("sqlite") => {
                let path = path.strip_prefix("//").unwrap_or(path);
                if path.is_empty() {
                    Err("sqlite needs a path: sqlite:/data/agl.db".into())
                } else {
                    Ok(Self::Sqlite(path.into()))
                }
            }
            _ => Err(format!(
                "unknown storage {s:?}: use `memory` or `sqlite:PATH`"
            )),
        }
    }
}

/// `--sqlite-durability` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DurabilityArg {
    /// fsync every commit.
    Full,
    /// fsync at checkpoints only.
    Normal,
}

impl Default for StoreArgs {
    fn default() -> Self {
        Self {
            port: 4747,
            host: "0.0.0.0".into(),
            cors_origins: Vec::new(),
            scan_debounce_seconds: 10.0,
            max_body_bytes: agl_common::http::DEFAULT_BODY_LIMIT,
            shutdown_grace_seconds: 10.0,
            storage: Storage::Memory,
            sqlite_durability: DurabilityArg::Full,
            cache_mib: crate::core::DEFAULT_CACHE_BYTES >> 20,
            backup_dir: None,
            log: LogArgs::default(),
            command: None,
        }
    }
}

/// A bound, ready-to-run store server.
pub struct App {
    listener: TcpListener,
    router: Router,
    store: Arc<Store>,
    health: Arc<Health>,
    grace: Duration,
}

impl App {
    /// Binds the listener and builds the store with the system clock.
    pub async fn build(args: &StoreArgs) -> anyhow::Result<Self> {
        Self::build_with_clock(args, Arc::new(SystemClock)).await
    }

    /// Binds the listener and builds the store on `clock` (tests move time by hand).
    pub async fn build_with_clock(args: &StoreArgs, clock: Arc<dyn Clock>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.scan_debounce_seconds.is_finite() && args.scan_debounce_seconds >= 0.0,
            "--scan-debounce-seconds must be a non-negative number"
        );
        anyhow::ensure!(args.max_body_bytes > 0, "--max-body-bytes must be positive");
        let addr = format!("{}:{}", args.host, args.port);
        let listener = TcpListener::bind(&addr).await.map_err(|err| {
            if err.kind() == std::io::ErrorKind::AddrInUse {
                anyhow::anyhow!("cannot listen on {addr}: the address is already in use")
            } else {
                anyhow::Error::new(err).context(format!("cannot listen on {addr}"))
            }
        })?;
        let bound = listener.local_addr()?;
        if let Some(endpoint) = agl_common::telemetry::otlp_traces_endpoint()
            && agl_common::otlp::points_at(&endpoint, bound)
        {
            anyhow::bail!(
                "the OTLP exporter points at this store's own /v1/traces ({endpoint}): every \
                 exported request span would cause another request; send the store's own spans \
                 to an OpenTelemetry collector instead"
            );
        }
        let backend: Arc<dyn Backend> = match &args.storage {
            Storage::Memory => Arc::new(Memory),
            Storage::Sqlite(path) => {
                let durability = match args.sqlite_durability {
                    DurabilityArg::Full => Durability::Full,
                    DurabilityArg::Normal => Durability::Normal,
                };
                Arc::new(Sqlite::open(path, durability)?)
            }
        };
        let store = Arc::new(Store::open(
            StoreConfig {
                scan_debounce_seconds: args.scan_debounce_seconds,
                cache_bytes: args.cache_mib.saturating_mul(1 << 20),
            },
            clock,
            backend,
        )?);
        tracing::info!(
            backend = store.backend_name(),
            rollouts = store.statistics().total_rollouts,
            spans = store.statistics().total_spans,
            "store opened"
        );

        let mut ops = Ops::new("agl-store")?;
        ops.registry()
            .register(Box::new(StoreCollector::new(Arc::clone(&store))?))?;
        let upstream = UpstreamMetrics::new(&store)?;
        ops.observe_with(Arc::clone(&upstream) as Arc<dyn RequestObserver>);
        let health = ops.health();

        let backup_dir = args.backup_dir.clone().or_else(|| match &args.storage {
            Storage::Sqlite(path) => Some(
                path.parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .map_or_else(
                        || std::path::PathBuf::from("."),
                        std::path::Path::to_path_buf,
                    ),
            ),
            Storage::Memory => None,
        });
        let admin_routes = Router::new()
            .route("/admin/backup", axum::routing::post(admin_backup))
            .with_state(AdminState {
                store: Arc::clone(&store),
                backup_dir,
            });
        let upstream_routes = Router::new()
            .route("/v1/prometheus", get(upstream_metrics))
            .route("/v1/prometheus/", get(upstream_metrics))
            .with_state(upstream);
        let app = api::router(
            Arc::clone(&store),
            &HttpConfig {
                cors_origins: args.cors_origins.clone(),
                max_body_bytes: args.max_body_bytes,
            },
        )
        .merge(upstream_routes)
        .merge(admin_routes);
        Ok(Self {
            listener,
            router: ops.wrap(app),
            store,
            health,
            grace: Duration::try_from_secs_f64(args.shutdown_grace_seconds.max(0.0))
                .unwrap_or(Duration::from_secs(10)),
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> anyhow::Result<SocketAddr> {
        self.listener
            .local_addr()
            .context("failed to read the bound address")
    }

    /// The store behind the server.
    pub fn store(&self) -> Arc<Store> {
        Arc::clone(&self.store)
    }

    /// Serves until `shutdown` resolves, then drains: readiness turns 503, pending
    /// `wait_for_rollouts` calls are answered with what they have, in-flight requests get
    /// the grace period to finish.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let addr = self.local_addr()?;
        tracing::info!(%addr, "lightning store listening");
        let ticker = tokio::spawn(watchdog(Arc::clone(&self.store)));
        let store = Arc::clone(&self.store);
        let drain_store = Arc::clone(&self.store);
        let result = serve(
            self.listener,
            self.router,
            self.health,
            shutdown,
            self.grace,
            move || drain_store.drain_waiters(),
        )
        .await;
        ticker.abort();
        if let Err(err) = store.close().await {
            tracing::warn!(error = %err, "store closed with an error");
        }
        tracing::info!("lightning store stopped");
        result
    }
}

#[derive(Clone)]
struct AdminState {
    store: Arc<Store>,
    backup_dir: Option<std::path::PathBuf>,
}

/// `POST /admin/backup {"name": optional}`: a consistent copy (`VACUUM INTO`) of the SQLite
/// file into the backup directory. Names are plain file names, never paths.
async fn admin_backup(State(admin): State<AdminState>, body: axum::body::Bytes) -> Response {
    use agl_common::http::{error_json, json};
    use axum::http::StatusCode;
    let Some(dir) = admin.backup_dir else {
        return error_json(
            StatusCode::BAD_REQUEST,
            "the memory backend has nothing on disk to back up",
        );
    };
    let requested = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("name").and_then(|n| n.as_str().map(str::to_owned)));
    let name = requested.unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("agl-store-{secs}.db")
    });
    if name.is_empty() || name.starts_with('.') || name.contains(['/', '\\', '\0']) {
        return error_json(
            StatusCode::BAD_REQUEST,
            "backup name must be a plain file name",
        );
    }
    let path = dir.join(&name);
    match admin.store.backup(path.clone()).await {
        Ok(()) => {
            let bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
            json(
                StatusCode::OK,
                &serde_json::json!({"path": path.display().to_string(), "bytes": bytes}),
            )
        }
        Err(err) => error_json(StatusCode::CONFLICT, &err.to_string()),
    }
}

async fn upstream_metrics(State(m): State<Arc<UpstreamMetrics>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

/// Upstream only scans when a call arrives; a ticker also catches timeouts while every
/// client is idle or blocked in a long poll.
async fn watchdog(store: Arc<Store>) {
    let period = Duration::from_secs_f64(store.scan_debounce_seconds().clamp(1.0, 60.0));
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        store.watchdog_tick();
    }
}

#[cfg(test)]
mod tests {
    use agl_common::otlp::points_at as exports_to_self;

    #[test]
    fn self_export_is_detected() {
        let bound = "0.0.0.0:4747".parse().unwrap();
        assert!(exports_to_self("http://localhost:4747/v1/traces", bound));
        assert!(exports_to_self("http://127.0.0.1:4747/v1/traces", bound));
        assert!(exports_to_self("http://[::1]:4747/v1/traces", bound));
        assert!(!exports_to_self("http://localhost:4318/v1/traces", bound));
        assert!(!exports_to_self(
            "http://otel-collector:4747/v1/traces",
            bound
        ));
        assert!(!exports_to_self("http://127.0.0.1/v1/traces", bound));
    }
}
