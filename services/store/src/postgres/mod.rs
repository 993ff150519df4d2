//! A Postgres database shared by any number of store processes ([`Shared`]): none of them
//! holds state, each change is one transaction (`tx.rs`), reads go to the database
//! (`read.rs`), and finishes reach every process's waiters through `LISTEN`/`NOTIFY`.
//!
//! * `schema.rs`: tables and versioned migrations, applied under an advisory lock;
//! * `tx.rs`: a change's transaction: lock and read the rows it names, write its rows;
//! * `read.rs`: queries, the totals, and the [`History`] the core reads through.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures::future::BoxFuture;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_postgres::NoTls;

use crate::model::{ResourcesUpdate, Worker};
use crate::persist::{Decide, History, Need, Shared, StorageError, Totals, Wake};

mod read;
mod schema;
mod tx;

pub use schema::SCHEMA_VERSION;

/// The channel finishes are announced on (the payload is the rollout id).
const FINISHED_CHANNEL: &str = "agl_rollout_done";

/// How to reach the database and how much of it to use.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// A libpq connection string: `postgres://USER@HOST:PORT/DB?…` or `host=… user=…`.
    pub url: String,
    /// A file holding the password (a mounted Secret), read at start; wins over the URL's.
    pub password_file: Option<PathBuf>,
    /// Connections each process keeps at most (plus one that listens).
    pub pool_size: usize,
    pub connect_timeout: Duration,
    /// The longest any statement may run; also the longest a transaction may sit idle.
    pub statement_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_file: None,
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            statement_timeout: Duration::from_secs(30),
        }
    }
}

/// A failed database call, as the core reports it.
fn pg_err(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StorageError {
    move |e| StorageError(format!("{what}: {}", describe(&e)))
}

/// An error's text with the server's message, when there is one.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// The database's place without its password, for logs.
fn shown(cfg: &tokio_postgres::Config) -> String {
    let host = cfg
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            #[cfg(unix)]
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or(""),
        cfg.get_dbname().unwrap_or("")
    )
}

pub struct Postgres {
    pool: Pool,
    config: tokio_postgres::Config,
    shown: String,
    history: Arc<read::PgHistory>,
    listener: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(task) = self.listener.lock().take() {
            task.abort();
        }
    }
}

impl Postgres {
    /// Connects, applies missing migrations, and opens the pool.
    pub async fn open(opts: &PgOptions) -> Result<Self, StorageError> {
        let mut config: tokio_postgres::Config = opts.url.parse().map_err(|e| {
            StorageError(format!(
                "cannot read the Postgres URL (postgres://USER@HOST:PORT/DB): {e}"
            ))
        })?;
        if let Some(file) = &opts.password_file {
            let password = std::fs::read_to_string(file).map_err(|e| {
                StorageError(format!(
                    "cannot read the password file {}: {e}",
                    file.display()
                ))
            })?;
            config.password(password.trim_end_matches(['\r', '\n']));
        }
        config.connect_timeout(opts.connect_timeout);
        config.application_name("agl-store");
        let ms = opts.statement_timeout.as_millis();
        let mut options = config.get_options().unwrap_or("").to_owned();
        options.push_str(&format!(
            " -c statement_timeout={ms} -c idle_in_transaction_session_timeout={ms}"
        ));
        config.options(options.trim());
        let shown = shown(&config);

        let (mut client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| StorageError(format!("cannot connect to {shown}: {}", describe(&e))))?;
        let driver = tokio::spawn(connection);
        schema::migrate(&mut client, &shown).await?;
        drop(client);
        let _ = driver.await;

        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(opts.connect_timeout))
            .create_timeout(Some(opts.connect_timeout))
            .build()
            .map_err(|e| StorageError(format!("cannot create the connection pool: {e}")))?;
        Ok(Self {
            history: Arc::new(read::PgHistory::new(pool.clone())),
            pool,
            config,
            shown,
            listener: Mutex::new(None),
        })
    }

    /// Where the database is, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

/// Listens for finishes until the process ends, reconnecting when the connection drops;
/// after every (re)connection all waiters look again, since notices sent while nobody
/// listened are gone.
async fn listen(config: tokio_postgres::Config, shown: String, wake: Wake) {
    let mut warned = false;
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
                let driver = tokio::spawn(async move {
                    let mut messages = futures::stream::poll_fn(|cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = futures::StreamExt::next(&mut messages).await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = message
                            && tx.send(n.payload().to_owned()).is_err()
                        {
                            break;
                        }
                    }
                });
                match client
                    .batch_execute(&format!("LISTEN {FINISHED_CHANNEL}"))
                    .await
                {
                    Ok(()) => {
                        if warned {
                            tracing::info!(database = %shown, "listening for finished rollouts again");
                            warned = false;
                        }
                        wake(None);
                        while let Some(id) = rx.recv().await {
                            wake(Some(&id));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %describe(&e), "cannot listen for finished rollouts")
                    }
                }
                driver.abort();
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(database = %shown, error = %describe(&e), "lost the connection that listens for finished rollouts; reconnecting");
                    warned = true;
                }
            }
        }
        wake(None);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

impl Shared for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn transact<'a>(
        &'a self,
        need: &'a Need,
        decide: &'a mut Decide<'a>,
    ) -> BoxFuture<'a, Result<bool, StorageError>> {
        Box::pin(tx::transact(&self.pool, need, decide))
    }

    fn watchdog_due(&self, now: f64, debounce: f64) -> BoxFuture<'_, Result<bool, StorageError>> {
        Box::pin(async move {
            let client = read::client(&self.pool).await?;
            let won = client
                .query_opt(
                    "UPDATE agl_watchdog SET last_scan = $1 \
                     WHERE id = 1 AND (last_scan <= $1::float8 - $2::float8 OR last_scan > $1::float8) \
                     RETURNING 1",
                    &[&now, &debounce],
                )
                .await
                .map_err(pg_err("cannot check the watchdog's turn"))?;
            Ok(won.is_some())
        })
    }

    fn history(&self) -> Arc<dyn History> {
        Arc::clone(&self.history) as Arc<dyn History>
    }

    fn listen(&self, wake: Wake) {
        let task = tokio::spawn(listen(self.config.clone(), self.shown.clone(), wake));
        if let Some(old) = self.listener.lock().replace(task) {
            old.abort();
        }
    }

    fn worker(&self, worker_id: &str) -> BoxFuture<'_, Result<Option<Worker>, StorageError>> {
        let id = worker_id.to_owned();
        Box::pin(async move { self.history.worker(&id).await })
    }

    fn meta<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<String>, StorageError>> {
        Box::pin(self.history.meta(key))
    }

    fn latest_resources(&self) -> BoxFuture<'_, Result<Option<ResourcesUpdate>, StorageError>> {
        Box::pin(self.history.latest_resources())
    }

    fn totals(&self) -> BoxFuture<'_, Result<Totals, StorageError>> {
        Box::pin(self.history.totals())
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), StorageError>> {
        Box::pin(async move {
            let client = read::client(&self.pool).await?;
            client
                .simple_query("SELECT 1")
                .await
                .map_err(pg_err("the database does not answer"))?;
            Ok(())
        })
    }
}
