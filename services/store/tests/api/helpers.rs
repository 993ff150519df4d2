//! A port-0 server per test, with typed helpers for the calls tests repeat.

use std::sync::Arc;

use agl_store::clock::{Clock, ManualClock, SystemClock};
use agl_store::core::Store;
use agl_store::server::{PgUrl, Storage};
use agl_store::{App, StoreArgs};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::oneshot;

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub store: Arc<Store>,
    pub clock: Option<Arc<ManualClock>>,
    stop: Option<oneshot::Sender<()>>,
    _file: Option<TempFile>,
    pub server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A server that scans for timeouts on every call, as upstream's own test fixture does.
pub async fn spawn() -> TestApp {
    spawn_with(test_args(), None).await
}

/// Default test arguments: the watchdog scans on every call.
pub fn test_args() -> StoreArgs {
    StoreArgs {
        scan_debounce_seconds: 0.0,
        ..StoreArgs::default()
    }
}

/// A server whose clock only moves through `app.clock`.
pub async fn spawn_manual_clock(debounce: f64) -> TestApp {
    let args = StoreArgs {
        scan_debounce_seconds: debounce,
        ..StoreArgs::default()
    };
    spawn_with(args, Some(Arc::new(ManualClock::new(1_700_000_000.0)))).await
}

/// The backend under test: `AGL_TEST_STORAGE=sqlite` runs the whole suite on a fresh SQLite
/// file per server, `AGL_TEST_STORAGE=postgres` on a fresh database per server of the
/// Postgres server `AGL_TEST_PG` names (a libpq connection string; `scripts/pg.sh` starts
/// one); anything else (or unset) on memory. `AGL_TEST_CACHE_MIB` sets how much of the
/// finished rollouts memory keeps (`0`: each is dropped once durable, so every later read
/// and change of it goes through the file).
async fn storage_under_test() -> (Storage, Option<TempFile>) {
    if std::env::var("AGL_TEST_STORAGE").is_ok_and(|v| v == "postgres") {
        return (Storage::Postgres(fresh_database().await), None);
    }
    if std::env::var("AGL_TEST_STORAGE").is_ok_and(|v| v == "sqlite") {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "agl-test-{}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        (Storage::Sqlite(path.clone()), Some(TempFile(path)))
    } else {
        (Storage::Memory, None)
    }
}

/// A new, empty database on the server `AGL_TEST_PG` names (the server is thrown away
/// with all of them when the test run ends).
pub async fn fresh_database() -> PgUrl {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = std::env::var("AGL_TEST_PG")
        .expect("AGL_TEST_PG names the Postgres server (scripts/pg.sh start DIR prints it)");
    let (client, connection) = tokio_postgres::connect(&base, tokio_postgres::NoTls)
        .await
        .expect("the test Postgres server answers");
    let driver = tokio::spawn(connection);
    let name = format!(
        "agl_t_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    );
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("a test database is created");
    drop(client);
    let _ = driver.await;
    PgUrl(format!("{base} dbname={name}"))
}

/// Removes a test database and its WAL when the test ends.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal", "-lock"] {
            let mut p = self.0.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }
}

pub async fn spawn_with(mut args: StoreArgs, clock: Option<Arc<ManualClock>>) -> TestApp {
    args.host = "127.0.0.1".into();
    args.port = 0;
    // An explicit backend wins, with its cache; the environment only replaces the default
    // memory store.
    let file = if args.storage == Storage::Memory {
        let (storage, file) = storage_under_test().await;
        args.storage = storage;
        if let Some(mib) = std::env::var("AGL_TEST_CACHE_MIB")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            args.cache_mib = mib;
        }
        file
    } else {
        None
    };
    let dyn_clock: Arc<dyn Clock> = match &clock {
        Some(c) => Arc::clone(c) as Arc<dyn Clock>,
        None => Arc::new(SystemClock),
    };
    let app = App::build_with_clock(&args, dyn_clock)
        .await
        .expect("server builds");
    let addr = app.local_addr().unwrap();
    let store = app.store();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        base: format!("http://{addr}"),
        client: agl_common::tls::http_client().build().unwrap(),
        store,
        clock,
        stop: Some(stop),
        server: Some(server),
        _file: file,
    }
}

impl TestApp {
    /// Triggers the graceful shutdown.
    pub fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post(&self, path: &str, body: Value) -> Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, body: &'static str) -> Response {
        self.client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// POST under `/v1/agl`, asserting the status, returning the JSON body.
    pub async fn v3_post(&self, path: &str, body: Value, status: StatusCode) -> Value {
        let r = self.post(&format!("/v1/agl{path}"), body).await;
        expect_json(r, status).await
    }

    /// GET under `/v1/agl`, asserting 200, returning the JSON body.
    pub async fn v3_get(&self, path: &str) -> Value {
        let r = self.get(&format!("/v1/agl{path}")).await;
        expect_json(r, StatusCode::OK).await
    }

    pub async fn enqueue(&self, items: Value) -> Vec<Value> {
        let v = self
            .v3_post(
                "/queues/rollouts/enqueue",
                json!({ "rollouts": items }),
                StatusCode::CREATED,
            )
            .await;
        v.as_array().expect("list").clone()
    }

    pub async fn dequeue(&self, limit: i64, worker: Option<&str>) -> Vec<Value> {
        let v = self
            .v3_post(
                "/queues/rollouts/dequeue",
                json!({"limit": limit, "worker_id": worker}),
                StatusCode::OK,
            )
            .await;
        v.as_array().expect("list").clone()
    }

    pub async fn update_attempt(&self, rollout: &str, attempt: &str, body: Value) -> Value {
        self.v3_post(
            &format!("/rollouts/{rollout}/attempts/{attempt}"),
            body,
            StatusCode::OK,
        )
        .await
    }

    pub async fn rollout(&self, id: &str) -> Value {
        self.v3_get(&format!("/rollouts/{id}")).await
    }
}

/// Asserts the status and the JSON content type, returning the body.
pub async fn expect_json(r: Response, status: StatusCode) -> Value {
    let got = r.status();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let text = r.text().await.expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert!(
        ct.starts_with("application/json"),
        "content type {ct:?} for {text}"
    );
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("invalid json {text:?}: {e}"))
}

/// A minimal valid span for `POST /spans`.
pub fn span(rollout: &str, attempt: &str, seq: i64, span_id: &str) -> Value {
    json!({
        "rollout_id": rollout, "attempt_id": attempt, "sequence_id": seq,
        "trace_id": "0af7651916cd43dd8448eb211c80319c", "span_id": span_id, "parent_id": null,
        "name": format!("span-{span_id}"),
        "status": {"status_code": "OK", "description": null},
        "attributes": {"k": "v"}, "events": [], "links": [],
        "start_time": 1.0, "end_time": 2.0,
        "context": null, "parent": null,
        "resource": {"attributes": {}, "schema_url": ""}
    })
}

/// The `key` of every item of an API page, in page order (`rollout_id`, `span_id`, …).
pub fn item_ids(page: &Value, key: &str) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items in {page}"))
        .iter()
        .map(|item| str_of(item, key).to_owned())
        .collect()
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}
