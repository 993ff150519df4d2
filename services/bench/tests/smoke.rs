//! Smoke run of the load generator, so the benchmark cannot rot: every scenario against an
//! in-process agl-store, the write scenarios against the ceiling, the issue-5 paths and a
//! tiny growth run (with bytes on disk) against agl-store on SQLite, and the report
//! rendered from all of it. Sizes and windows are tiny; only "every path works,
//! without errors" is asserted, never a speed.

use std::time::Duration;

use agl_bench::grow::{GrowConfig, grow};
use agl_bench::report::{ReportOptions, render};
use agl_bench::results::{PathKind, ResultFile, RunResult};
use agl_bench::scenario::{RunConfig, Scenario, Sizes, run};
use agl_store::server::Storage;
use agl_store::{App, StoreArgs};
use tokio::sync::oneshot;

/// A running server and the sender that stops it.
struct Server {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn store() -> Server {
    store_on(Storage::Memory).await
}

async fn store_on(storage: Storage) -> Server {
    let args = StoreArgs {
        host: "127.0.0.1".into(),
        port: 0,
        storage,
        proxy: agl_store::v1::proxy::V1ProxyArgs {
            model_name: "test-model".into(),
            ..Default::default()
        },
        ..StoreArgs::default()
    };
    let app = App::build(&args).await.expect("agl-store builds");
    let addr = app.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        _stop: stop,
    }
}

async fn ceiling() -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(agl_bench::ceiling::serve(listener, async move {
        let _ = stopped.await;
    }));
    Server {
        base: format!("http://{addr}"),
        _stop: stop,
    }
}

fn config(target: &str, label: &str, scenarios: &[Scenario]) -> RunConfig {
    RunConfig {
        target: target.into(),
        label: label.into(),
        concurrency: 4,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        scenarios: scenarios.to_vec(),
        // This process hosts the server, so its own /proc entry is the server's.
        server_pid: Some(std::process::id()),
        sizes: Sizes::tiny(),
        model_url: None,
    }
}

fn assert_clean(result: &RunResult, expected: &[Scenario]) {
    let names: Vec<&str> = result.scenarios.iter().map(|s| s.name.as_str()).collect();
    let want: Vec<&str> = expected.iter().map(|s| s.name()).collect();
    assert_eq!(names, want, "{}: scenarios run", result.label);
    for s in &result.scenarios {
        assert!(
            s.server.is_some(),
            "{}/{}: server stats",
            result.label,
            s.name
        );
        for p in &s.paths {
            let what = format!("{}/{}/{}", result.label, s.name, p.path);
            assert_eq!(p.errors, 0, "{what}: errors, first: {:?}", p.first_error);
            // Refills only happen when the queue runs low, which a short run may not reach.
            if p.kind != PathKind::Aux {
                assert!(p.requests > 0, "{what}: made no requests: {:#?}", s.paths);
                assert!(p.p99_ms > 0.0 && p.max_ms >= p.p99_ms, "{what}: latencies");
            }
        }
    }
}

/// A folder of its own under the system's temporary directory, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("agl-bench-smoke-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_and_renders() {
    let (ours, ceil) = (store().await, ceiling().await);
    let grown = store().await;
    let tmp = TempDir::new();
    let sqlite = store_on(Storage::Sqlite(tmp.0.join("run.db"))).await;
    let sqlite_grown_file = tmp.0.join("grow.db");
    let sqlite_grown = store_on(Storage::Sqlite(sqlite_grown_file.clone())).await;
    let sqlite_scenarios = [Scenario::SpanAdd, Scenario::DequeueUpdate];

    let ours_cfg = config(&ours.base, "agl-store", &Scenario::ALL);
    let ceil_cfg = config(&ceil.base, "ceiling", &Scenario::WRITES);
    let grow_cfg = GrowConfig {
        target: grown.base.clone(),
        label: "agl-store".into(),
        server_pid: std::process::id(),
        sizes: vec![100, 300],
        rollouts: 200,
        concurrency: 4,
        step_duration: Duration::from_millis(200),
        step_warmup: Duration::from_millis(50),
        disk_file: None,
        finish: false,
    };
    let sqlite_cfg = config(&sqlite.base, "agl-store-sqlite", &sqlite_scenarios);
    let sqlite_grow_cfg = GrowConfig {
        target: sqlite_grown.base.clone(),
        label: "agl-store-sqlite".into(),
        disk_file: Some(sqlite_grown_file),
        ..grow_cfg.clone()
    };
    let history_file = tmp.0.join("history.db");
    let history = store_on(Storage::Sqlite(history_file.clone())).await;
    // Finished rollouts leave memory: the span queries read them from the file.
    let history_cfg = GrowConfig {
        target: history.base.clone(),
        label: "agl-store-sqlite-history".into(),
        disk_file: Some(history_file),
        rollouts: 0,
        finish: true,
        ..grow_cfg.clone()
    };
    // They are independent; running them side by side keeps the test short.
    let (ours_result, ceil_result, grow_result, sqlite_result, sqlite_grow_result, history_result) = tokio::join!(
        run(&ours_cfg),
        run(&ceil_cfg),
        grow(&grow_cfg),
        run(&sqlite_cfg),
        grow(&sqlite_grow_cfg),
        grow(&history_cfg)
    );
    let ours_result = ours_result.expect("agl-store run");
    let ceil_result = ceil_result.expect("ceiling run");
    let grow_result = grow_result.expect("grow run");
    let sqlite_result = sqlite_result.expect("agl-store-sqlite run");
    let sqlite_grow_result = sqlite_grow_result.expect("agl-store-sqlite grow run");
    let history_result = history_result.expect("agl-store-sqlite-history grow run");
    for step in &history_result.steps {
        for p in [&step.span_add, &step.span_query] {
            assert!(p.requests > 0 && p.errors == 0, "history: {p:?}");
        }
    }

    assert_clean(&ours_result, &Scenario::ALL);
    assert_clean(&ceil_result, &Scenario::WRITES);
    assert_clean(&sqlite_result, &sqlite_scenarios);

    // The SQLite growth run records the file's size, and it grows with the spans.
    assert!(grow_result.disk_base.is_none() && grow_result.steps[0].disk.is_none());
    let base = sqlite_grow_result.disk_base.expect("disk size before");
    let after_rollouts = sqlite_grow_result
        .disk_after_rollouts
        .expect("disk size after the rollouts");
    assert!(base.main_bytes > 0, "{base:?}");
    assert!(after_rollouts.total() > base.total(), "{after_rollouts:?}");
    let disks: Vec<u64> = sqlite_grow_result
        .steps
        .iter()
        .map(|s| s.disk.expect("disk size at every step").total())
        .collect();
    assert!(
        disks[0] > after_rollouts.total() && disks[1] > disks[0],
        "{disks:?}"
    );

    assert_eq!(grow_result.steps.len(), 2);
    assert!(grow_result.steps[1].spans >= 300);
    assert!(grow_result.json_bytes_per_span > 500.0);
    for step in &grow_result.steps {
        for p in [&step.span_add, &step.span_query] {
            assert!(
                p.requests > 0,
                "grow at {}: {} made no requests",
                step.spans,
                p.path
            );
            assert_eq!(
                p.errors, 0,
                "grow at {}: {}: {:?}",
                step.spans, p.path, p.first_error
            );
        }
    }

    // The report renders from the JSON as written to disk.
    let without_sqlite = [
        ResultFile::Run(ours_result.clone()),
        ResultFile::Run(ceil_result.clone()),
        ResultFile::Grow(grow_result.clone()),
    ];
    let files: Vec<ResultFile> = [
        ResultFile::Run(ours_result),
        ResultFile::Run(ceil_result),
        ResultFile::Grow(grow_result),
        ResultFile::Run(sqlite_result),
        ResultFile::Grow(sqlite_grow_result),
        ResultFile::Grow(history_result),
    ]
    .iter()
    .map(|f| serde_json::from_str(&serde_json::to_string(f).unwrap()).unwrap())
    .collect();
    let md = render(files, &ReportOptions::default());
    for section in [
        "## Targets",
        "### span_add",
        "### mixed",
        "## Memory and start-up",
        "## As the store grows",
        "## SQLite storage: bytes on disk",
        "Bytes on disk per million spans:",
        "agl-store (SQLite) /s",
        "SQLite ÷ Python",
        "issue 5: agl-store (SQLite) span add ≥ 20×",
        "issue 5: agl-store (SQLite) dequeue + attempt update ≥ 20×",
        "--sqlite-durability full",
        "## SQLite storage with history",
        "issue 14: span query of an old rollout within 2×",
        "issue 14: agl-store (SQLite) span add no lower than before",
    ] {
        assert!(md.contains(section), "report lacks {section}:\n{md}");
    }
    // Without SQLite results, none of its columns or sections appear.
    let md = render(without_sqlite.to_vec(), &ReportOptions::default());
    assert!(!md.contains("SQLite"), "{md}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v1_scenarios_run_clean() {
    use agl_llm_proxy::double::{Double, DoubleConfig};
    let model = Double::start(DoubleConfig {
        models: vec!["test-model".into()],
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    let ours = store().await;
    let mut cfg = config(&ours.base, "agl-store-v1", &Scenario::V1);
    cfg.model_url = Some(format!("{}/v1", model.url()));
    // A triplet request of a debug build can outlast the 300 ms window on a loaded machine
    // (seen in CI beside other work): a window it fits in many times over.
    cfg.duration = Duration::from_secs(3);
    let result = run(&cfg).await.expect("the v1 scenarios run");
    assert_clean(&result, &Scenario::V1);
    model.stop().await;
}

/// `agl-bench dashboard`'s fill and page requests against an in-process store, tiny: every
/// page and API request it times answers 2xx, and the server's histogram is read for each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_pages_are_filled_and_timed_clean() {
    use agl_bench::dashboard::{Backend, DashboardConfig, fill_and_measure};
    let ours = store().await;
    let cfg = DashboardConfig {
        store_bin: "agl-store".into(),
        store_args: Vec::new(),
        backends: vec![Backend::Memory],
        rollouts: 40,
        spans: 400,
        big_rollout_spans: 57,
        resource_versions: 3,
        requests: 2,
        warmup: 1,
        page_budget: Duration::from_secs(30),
        concurrency: 4,
        dir: None,
        json: None,
        hold: Duration::ZERO,
        keep_db: false,
        command: Vec::new(),
    };
    let http = agl_bench::driver::Http::new(&ours.base).unwrap();
    let (fill, pages) = fill_and_measure(&http, &cfg, Backend::Memory)
        .await
        .expect("the dashboard measurement runs");
    assert_eq!((fill.dequeued, fill.succeeded + fill.failed), (36, 32));
    assert!(pages.len() > 15, "{pages:?}");
    for p in &pages {
        assert_eq!(p.errors, 0, "{}: {:?}", p.name, p.first_error);
        assert!(p.bytes > 0, "{} answered nothing", p.name);
        let server = p.server.as_ref().expect("the store exports its histogram");
        assert_eq!(server.count, 2, "{}", p.name);
    }
    let range = pages.iter().find(|p| p.path.contains("from=")).unwrap();
    assert!(!range.name.contains("(0 rollouts)"), "{}", range.name);
}
