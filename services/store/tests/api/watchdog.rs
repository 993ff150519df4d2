//! The watchdog, driven by a hand-moved clock.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{span, spawn_manual_clock, str_of};

#[tokio::test]
async fn timeout_requeues_then_fails_and_frees_the_worker() {
    let app = spawn_manual_clock(0.0).await;
    let clock = app.clock.clone().unwrap();
    let q = app
        .enqueue(json!([{"input": 1, "config": {"timeout_seconds": 1, "max_attempts": 2, "retry_condition": ["timeout"]}}]))
        .await;
    let rid = str_of(&q[0], "rollout_id").to_owned();
    app.dequeue(1, Some("w1")).await;
    clock.advance(0.5);
    assert_eq!(app.rollout(&rid).await["status"], "preparing");
    clock.advance(0.6);
    let r = app.rollout(&rid).await;
    assert_eq!(r["status"], "requeuing");
    assert_eq!(r["attempt"]["status"], "timeout");
    assert_eq!(r["attempt"]["end_time"], Value::Null);
    let w = app.v3_get("/workers/w1").await;
    assert_eq!(w["status"], "unknown");
    assert!(w["last_idle_time"].is_f64());
    assert_eq!(w["current_rollout_id"], Value::Null);

    let d = app.dequeue(1, None).await;
    assert_eq!(d[0]["attempt"]["sequence_id"], 2);
    clock.advance(2.0);
    let r = app.rollout(&rid).await;
    assert_eq!(r["status"], "failed");
    assert!(r["end_time"].is_f64());
}

#[tokio::test]
async fn unresponsive_counts_from_the_last_heartbeat() {
    let app = spawn_manual_clock(0.0).await;
    let clock = app.clock.clone().unwrap();
    let q = app
        .enqueue(json!([{"input": 1, "config": {"unresponsive_seconds": 10, "max_attempts": 3, "retry_condition": ["unresponsive"]}}]))
        .await;
    let rid = str_of(&q[0], "rollout_id").to_owned();
    let d = app.dequeue(1, None).await;
    let aid = str_of(&d[0]["attempt"], "attempt_id").to_owned();
    clock.advance(8.0);
    app.v3_post("/spans", span(&rid, &aid, 1, "01"), StatusCode::CREATED)
        .await;
    clock.advance(8.0);
    // 16 s since start but 8 s since the heartbeat: still fine.
    assert_eq!(app.rollout(&rid).await["attempt"]["status"], "running");
    clock.advance(3.0);
    let r = app.rollout(&rid).await;
    assert_eq!(r["attempt"]["status"], "unresponsive");
    assert_eq!(r["status"], "requeuing");

    // Without any heartbeat, the attempt's start counts.
    let d = app.dequeue(1, None).await;
    assert_eq!(d[0]["attempt"]["sequence_id"], 2);
    clock.advance(10.5);
    assert_eq!(app.rollout(&rid).await["attempt"]["status"], "unresponsive");
}

#[tokio::test]
async fn debounce_delays_scans() {
    let app = spawn_manual_clock(10.0).await;
    let clock = app.clock.clone().unwrap();
    let q = app
        .enqueue(json!([{"input": 1, "config": {"timeout_seconds": 1}}]))
        .await;
    let rid = str_of(&q[0], "rollout_id").to_owned();
    app.dequeue(1, None).await;
    clock.advance(5.0);
    assert_eq!(
        app.rollout(&rid).await["status"],
        "preparing",
        "scanned too recently"
    );
    clock.advance(5.5);
    assert_eq!(app.rollout(&rid).await["status"], "failed");
}
