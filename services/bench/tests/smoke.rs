//! Smoke run of the load generator, so the benchmark cannot rot: every scenario against an
//! in-process agl-store, the write scenarios against the ceiling, a tiny growth run, and the
//! report rendered from all of it. Sizes and windows are tiny; only "every path works,
//! without errors" is asserted, never a speed.

use std::time::Duration;

use agl_bench::grow::{GrowConfig, grow};
use agl_bench::report::{ReportOptions, render};
use agl_bench::results::{PathKind, ResultFile, RunResult};
use agl_bench::scenario::{RunConfig, Scenario, Sizes, run};
use agl_store::{App, StoreArgs};
use tokio::sync::oneshot;

/// A running server and the sender that stops it.
struct Server {
    base: String,
    _stop: oneshot::Sender<()>,
}

async fn store() -> Server {
    let args = StoreArgs {
        host: "127.0.0.1".into(),
        port: 0,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_clean_and_renders() {
    let (ours, ceil) = (store().await, ceiling().await);
    let grown = store().await;

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
    };
    // The three are independent; running them side by side keeps the test short.
    let (ours_result, ceil_result, grow_result) =
        tokio::join!(run(&ours_cfg), run(&ceil_cfg), grow(&grow_cfg));
    let ours_result = ours_result.expect("agl-store run");
    let ceil_result = ceil_result.expect("ceiling run");
    let grow_result = grow_result.expect("grow run");

    assert_clean(&ours_result, &Scenario::ALL);
    assert_clean(&ceil_result, &Scenario::WRITES);

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
    let files: Vec<ResultFile> = [
        ResultFile::Run(ours_result),
        ResultFile::Run(ceil_result),
        ResultFile::Grow(grow_result),
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
    ] {
        assert!(md.contains(section), "report lacks {section}:\n{md}");
    }
}
