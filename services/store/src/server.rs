//! Configuration, binding and the serve loop of `agl-store` / `agl store`.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use clap::Args;
use tokio::net::TcpListener;

use agl_common::auth::{Access, KeyArgs, Policy};
use agl_common::cli::LogArgs;
use agl_common::ops::{Health, Ops, RequestObserver};
use agl_common::serve::{ListenArgs, Listening, serve};
use agl_common::tls::ClientTlsArgs;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::api::{self, HttpConfig};
use crate::clock::{Clock, SystemClock};
use crate::core::{Store, StoreConfig};
use crate::metrics::{StoreCollector, UpstreamMetrics};
use crate::persist::Memory;
use crate::postgres::{PgOptions, Postgres};
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

    /// Where the store keeps its data: `memory` (lost at exit, the reference's behaviour),
    /// `sqlite:PATH` (a durable file; created if missing) or a Postgres URL
    /// (`postgres://USER@HOST:PORT/DB`, or libpq's `host=… dbname=…`) that any number of
    /// store processes share
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

    /// With Postgres: a file holding the database password (a mounted Secret); wins over a
    /// password in the URL
    #[arg(long, value_name = "FILE", env = "AGL_STORAGE_PASSWORD_FILE")]
    pub storage_password_file: Option<std::path::PathBuf>,

    /// With Postgres: connections this process keeps open at most (plus one that listens
    /// for finished rollouts)
    #[arg(long, value_name = "N", env = "AGL_PG_POOL_SIZE", default_value_t = 16)]
    pub pg_pool_size: usize,

    /// With Postgres: seconds to wait for a connection before a request fails with 503
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_PG_CONNECT_TIMEOUT_SECONDS",
        default_value_t = 5.0
    )]
    pub pg_connect_timeout_seconds: f64,

    /// With Postgres: the longest a statement may run (and a transaction sit idle)
    #[arg(
        long,
        value_name = "SECONDS",
        env = "AGL_PG_STATEMENT_TIMEOUT_SECONDS",
        default_value_t = 30.0
    )]
    pub pg_statement_timeout_seconds: f64,

    /// Most rollouts waiting in the queue; enqueueing beyond it gets 429 with Retry-After
    /// (memory and SQLite; with Postgres the queue lives in the database)
    #[arg(long, value_name = "N", env = "AGL_MAX_QUEUED_ROLLOUTS",
          default_value_t = crate::core::DEFAULT_MAX_QUEUED_ROLLOUTS)]
    pub max_queued_rollouts: usize,

    /// Most spans one rollout may hold (a live rollout's spans are in memory, about 1.2 KB
    /// each); further spans get 422 (OTLP: counted as rejected). Memory and SQLite
    #[arg(long, value_name = "N", env = "AGL_MAX_SPANS_PER_ROLLOUT",
          default_value_t = crate::core::DEFAULT_MAX_SPANS_PER_ROLLOUT)]
    pub max_spans_per_rollout: usize,

    /// Directory for online backups (`POST /admin/backup`, `agl store backup --url`);
    /// default: the directory of the SQLite file
    #[arg(long, value_name = "DIR", env = "AGL_BACKUP_DIR")]
    pub backup_dir: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub key: KeyArgs,

    #[command(flatten)]
    pub listen: ListenArgs,

    #[command(flatten)]
    pub tls_client: ClientTlsArgs,

    #[command(flatten)]
    pub proxy: crate::v1::proxy::V1ProxyArgs,

    #[command(flatten)]
    pub log: LogArgs,

    #[command(subcommand)]
    pub command: Option<StoreCommand>,
}

/// Paths answered without a key: the health routes of every protocol (and `/livez`,
/// `/readyz`, `/metrics` as the shared layer leaves them); the admin routes: online backups.
const POLICY: Policy = Policy {
    open: &["/healthz", "/v1/agl/health", "/agl/v1/health", "/health"],
    admin: &["/admin/"],
    metrics: &["/v1/prometheus", "/v1/prometheus/"],
};

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
        Some(StoreCommand::Backup(b)) => backup(b, &args.key).await,
        Some(StoreCommand::Healthcheck) => {
            agl_common::probe::probe(
                args.port,
                "/readyz",
                Duration::from_secs(3),
                args.listen.tls.tls_cert.as_deref(),
            )
            .await
        }
    }
}

async fn backup(args: &BackupArgs, key: &KeyArgs) -> anyhow::Result<()> {
    match (&args.url, &args.from, &args.to) {
        (Some(url), _, _) => {
            let endpoint = format!("{}/admin/backup", url.trim_end_matches('/'));
            let body = serde_json::json!({ "name": args.name });
            // The server's key, given as the server is given it (`--key-file`, `AGL_KEY`).
            let client = agl_common::tls::http_client()
                .build()
                .context("http client")?;
            let mut request = client.post(&endpoint).json(&body);
            if let Some(key) = agl_common::auth::first_key(key)? {
                request = request.bearer_auth(key);
            }
            let response = request
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
    /// A Postgres database several store processes share.
    Postgres(PgUrl),
}

/// A Postgres connection string; its `Debug` leaves out a password it may carry.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl(pub String);

impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.parse::<tokio_postgres::Config>() {
            Ok(cfg) => write!(
                f,
                "postgres://{}@…/{}",
                cfg.get_user().unwrap_or(""),
                cfg.get_dbname().unwrap_or("")
            ),
            Err(_) => f.write_str("postgres://…"),
        }
    }
}

impl std::str::FromStr for Storage {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("memory") {
            return Ok(Self::Memory);
        }
        match s.split_once(':') {
            Some((scheme, _))
                if scheme.eq_ignore_ascii_case("postgres")
                    || scheme.eq_ignore_ascii_case("postgresql") =>
            {
                Ok(Self::Postgres(PgUrl(s.to_owned())))
            }
            // libpq's keyword form: `host=/run/pg dbname=agl user=agl`.
            _ if s.split_whitespace().any(|kv| kv.contains('=')) && !s.contains("://") => {
                Ok(Self::Postgres(PgUrl(s.to_owned())))
            }
            Some((scheme, path)) if scheme.eq_ignore_ascii_case("sqlite") => {
                let path = path.strip_prefix("//").unwrap_or(path);
                if path.is_empty() {
                    Err("sqlite needs a path: sqlite:/data/agl.db".into())
                } else {
                    Ok(Self::Sqlite(path.into()))
                }
            }
            _ => Err(format!(
                "unknown storage {s:?}: use `memory`, `sqlite:PATH` or \
                 `postgres://USER@HOST:PORT/DB`"
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
            storage_password_file: None,
            pg_pool_size: 16,
            pg_connect_timeout_seconds: 5.0,
            pg_statement_timeout_seconds: 30.0,
            backup_dir: None,
            max_queued_rollouts: crate::core::DEFAULT_MAX_QUEUED_ROLLOUTS,
            max_spans_per_rollout: crate::core::DEFAULT_MAX_SPANS_PER_ROLLOUT,
            key: KeyArgs::default(),
            listen: ListenArgs::default(),
            tls_client: ClientTlsArgs::default(),
            proxy: crate::v1::proxy::V1ProxyArgs::default(),
            log: LogArgs::default(),
            command: None,
        }
    }
}

/// A bound, ready-to-run store server.
pub struct App {
    listener: TcpListener,
    listening: Listening,
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
        anyhow::ensure!(
            args.max_queued_rollouts > 0 && args.max_spans_per_rollout > 0,
            "--max-queued-rollouts and --max-spans-per-rollout must be positive"
        );
        let config = StoreConfig {
            scan_debounce_seconds: args.scan_debounce_seconds,
            cache_bytes: args.cache_mib.saturating_mul(1 << 20),
            max_queued_rollouts: args.max_queued_rollouts,
            max_spans_per_rollout: args.max_spans_per_rollout,
        };
        let mut storage_info = crate::dashboard::StorageInfo::default();
        let store = Arc::new(match &args.storage {
            Storage::Memory => Store::open(config, clock, Arc::new(Memory))?,
            Storage::Sqlite(path) => {
                storage_info.file = Some(path.clone());
                storage_info.location = Some(path.display().to_string());
                let durability = match args.sqlite_durability {
                    DurabilityArg::Full => Durability::Full,
                    DurabilityArg::Normal => Durability::Normal,
                };
                Store::open(config, clock, Arc::new(Sqlite::open(path, durability)?))?
            }
            Storage::Postgres(url) => {
                let seconds = |s: f64, flag: &str| {
                    Duration::try_from_secs_f64(s)
                        .ok()
                        .filter(|d| !d.is_zero())
                        .with_context(|| format!("{flag} must be a positive number"))
                };
                let db = Postgres::open(&PgOptions {
                    url: url.0.clone(),
                    password_file: args.storage_password_file.clone(),
                    pool_size: args.pg_pool_size,
                    connect_timeout: seconds(
                        args.pg_connect_timeout_seconds,
                        "--pg-connect-timeout-seconds",
                    )?,
                    statement_timeout: seconds(
                        args.pg_statement_timeout_seconds,
                        "--pg-statement-timeout-seconds",
                    )?,
                })
                .await?;
                tracing::info!(database = db.shown(), "using a shared Postgres database");
                storage_info.location = Some(db.shown().to_owned());
                Store::open_shared(config, clock, Arc::new(db))
            }
        });
        let stats = store.statistics().await?;
        tracing::info!(
            backend = store.backend_name(),
            rollouts = stats.total_rollouts,
            spans = stats.total_spans,
            "store opened"
        );

        let mut ops = Ops::new("agl-store")?;
        ops.registry()
            .register(Box::new(StoreCollector::new(Arc::clone(&store))?))?;
        let fresh = Arc::clone(&store);
        ops.refresh_before_scrape(Arc::new(move || {
            let store = Arc::clone(&fresh);
            Box::pin(async move { store.refresh_gauges().await })
        }));
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
            Storage::Memory | Storage::Postgres(_) => None,
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
                v1_proxy: args.proxy.clone(),
            },
        )?
        .merge(upstream_routes)
        .merge(admin_routes)
        .merge(crate::dashboard::routes(Arc::clone(&store), storage_info));
        let access = Access::load(&args.key)?;
        let registry = ops.registry().clone();
        let router = agl_common::auth::protect(ops.wrap(app), &access, POLICY, &registry)?;
        Ok(Self {
            listener,
            listening: Listening::from_args(&args.listen)?,
            router,
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
        let prober = self.store.is_shared().then(|| {
            tokio::spawn(probe_storage(
                Arc::clone(&self.store),
                Arc::clone(&self.health),
            ))
        });
        let store = Arc::clone(&self.store);
        let drain_store = Arc::clone(&self.store);
        let result = serve(
            self.listener,
            self.router,
            self.health,
            shutdown,
            self.grace,
            move || drain_store.drain_waiters(),
            &self.listening,
        )
        .await;
        ticker.abort();
        if let Some(prober) = prober {
            prober.abort();
        }
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
        store.watchdog_tick().await;
    }
}

/// With a shared database: readiness follows whether it answers (a replica that cannot
/// reach it should get no traffic), checked every second; liveness does not.
async fn probe_storage(store: Arc<Store>, health: Arc<Health>) {
    let mut interval = tokio::time::interval(Duration::from_secs(1));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let reachable = store.storage_reachable().await;
        if reachable != health.available() {
            if reachable {
                tracing::info!("the database answers again; ready");
            } else {
                tracing::warn!("the database does not answer; not ready until it does");
            }
        }
        health.set_available(reachable);
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
