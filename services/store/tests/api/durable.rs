//! The SQLite backend across restarts: everything resumes where it was.

use std::sync::Arc;

use agl_store::StoreArgs;
use agl_store::clock::ManualClock;
use agl_store::server::Storage;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TempFile, TestApp, span, spawn_with, str_of, test_args};

async fn open(path: &std::path::Path, clock: Arc<ManualClock>) -> TestApp {
    let args = StoreArgs {
        storage: Storage::Sqlite(path.to_owned()),
        ..test_args()
    };
    spawn_with(args, Some(clock)).await
}

async fn stop(mut app: TestApp) {
    app.shutdown();
    app.server.take().unwrap().await.unwrap().unwrap();
}

#[tokio::test]
async fn a_restart_resumes_queue_attempts_counters_resources_workers_and_timeouts() {
    let file =
        TempFile(std::env::temp_dir().join(format!("agl-durable-{}.db", std::process::id())));
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));

    let app = open(&file.0, Arc::clone(&clock)).await;
    let res = app
        .v3_post(
            "/resources",
            json!({"m": {"resource_type": "llm", "endpoint": "e", "model": "m"}}),
            StatusCode::CREATED,
        )
        .await;
    app.v3_post(
        &format!("/resources/{}", str_of(&res, "resources_id")),
        json!({}),
        StatusCode::OK,
    )
    .await;
    let items: Vec<Value> = (0..5)
        .map(|i| json!({"input": i, "config": {"timeout_seconds": 100, "max_attempts": 2, "retry_condition": ["timeout"]}}))
        .collect();
    let queued = app.enqueue(Value::Array(items)).await;
    let claimed = app.dequeue(2, Some("w1")).await;
    let rid = str_of(&claimed[0], "rollout_id").to_owned();
    let aid = str_of(&claimed[0]["attempt"], "attempt_id").to_owned();
    for i in 1..=3 {
        app.v3_post(
            "/spans",
            span(&rid, &aid, i, &format!("{i:016x}")),
            StatusCode::CREATED,
        )
        .await;
    }
    let next = app
        .v3_post(
            "/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(next["sequence_id"], 4);
    let second = str_of(&claimed[1], "rollout_id").to_owned();
    app.update_attempt(&second, "latest", json!({"status": "succeeded"}))
        .await;
    app.v3_post(
        "/workers/w2",
        json!({"heartbeat_stats": {"load": 1}}),
        StatusCode::OK,
    )
    .await;
    let before_rollouts = app.v3_get("/rollouts").await;
    let before_workers = app.v3_get("/workers").await;
    let before_spans = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    stop(app).await;

    clock.advance(50.0);
    let app = open(&file.0, Arc::clone(&clock)).await;
    assert_eq!(
        app.v3_get("/rollouts").await,
        before_rollouts,
        "rollouts and attempts as they were"
    );
    assert_eq!(app.v3_get("/workers").await, before_workers);
    assert_eq!(
        app.v3_get(&format!("/spans?rollout_id={rid}")).await,
        before_spans
    );
    let latest = app.v3_get("/resources/latest").await;
    assert_eq!(latest["version"], 2);
    // The sequence counter continues: no id is issued twice.
    let next = app
        .v3_post(
            "/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(next["sequence_id"], 5);
    // Duplicate detection survives too.
    let dup = app
        .post("/v1/agl/spans", span(&rid, &aid, 1, &format!("{:016x}", 1)))
        .await;
    assert_eq!(
        crate::helpers::expect_json(dup, StatusCode::CREATED).await,
        Value::Null
    );
    // The queue continues in order, after the two claimed rollouts.
    let rest = app.dequeue(10, None).await;
    let ids: Vec<&str> = rest.iter().map(|r| str_of(r, "rollout_id")).collect();
    let expected: Vec<&str> = queued[2..]
        .iter()
        .map(|r| str_of(r, "rollout_id"))
        .collect();
    assert_eq!(ids, expected);
    stop(app).await;

    // The watchdog measures from the stored start times: 100 s after the claim, it fires.
    clock.advance(51.0);
    let app = open(&file.0, Arc::clone(&clock)).await;
    let r = app.rollout(&rid).await;
    assert_eq!(r["attempt"]["status"], "timeout");
    assert_eq!(r["status"], "requeuing");
    assert_eq!(app.rollout(&second).await["status"], "succeeded");
    stop(app).await;
}

#[tokio::test]
async fn a_second_server_on_the_same_file_fails_clearly_at_start() {
    let file = TempFile(std::env::temp_dir().join(format!("agl-locked-{}.db", std::process::id())));
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&file.0, Arc::clone(&clock)).await;
    let args = StoreArgs {
        storage: Storage::Sqlite(file.0.clone()),
        host: "127.0.0.1".into(),
        port: 0,
        ..test_args()
    };
    let err = match agl_store::App::build(&args).await {
        Ok(_) => panic!("a second server opened a locked file"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("locked by another process"), "{err}");
    stop(app).await;
}

#[tokio::test]
async fn online_backup_is_a_consistent_copy_that_opens_as_a_store() {
    let dir = std::env::temp_dir().join(format!("agl-backup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&dir.join("store.db"), Arc::clone(&clock)).await;
    let q = app.enqueue(json!([{"input": "kept"}])).await;

    let r = app.post("/admin/backup", json!({"name": "copy.db"})).await;
    let answer = crate::helpers::expect_json(r, StatusCode::OK).await;
    assert_eq!(answer["path"], dir.join("copy.db").display().to_string());
    assert!(answer["bytes"].as_u64().unwrap() > 0);
    let again = app.post("/admin/backup", json!({"name": "copy.db"})).await;
    crate::helpers::expect_json(again, StatusCode::CONFLICT).await;
    let bad = app
        .post("/admin/backup", json!({"name": "../escape.db"}))
        .await;
    crate::helpers::expect_json(bad, StatusCode::BAD_REQUEST).await;

    let restored = open(&dir.join("copy.db"), clock).await;
    let r = restored.rollout(str_of(&q[0], "rollout_id")).await;
    assert_eq!(r["input"], "kept");
    stop(restored).await;
    stop(app).await;
    let _ = std::fs::remove_dir_all(&dir);
}
