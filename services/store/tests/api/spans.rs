//! Spans: validation, duplicates, sequence ids, heartbeats and queries.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_json, span, spawn, str_of};

async fn running_rollout(app: &crate::helpers::TestApp) -> (String, String) {
    let q = app.enqueue(json!([{"input": 1}])).await;
    let d = app.dequeue(1, Some("w")).await;
    assert_eq!(d[0]["rollout_id"], q[0]["rollout_id"]);
    (
        str_of(&d[0], "rollout_id").to_owned(),
        str_of(&d[0]["attempt"], "attempt_id").to_owned(),
    )
}

#[tokio::test]
async fn add_span_heartbeats_and_rejects_duplicates() {
    let app = spawn().await;
    let (rid, aid) = running_rollout(&app).await;
    let mut s = span(&rid, &aid, 1, "0000000000000001");
    s["custom_extra_field"] = json!({"kept": true});
    s["attributes"] = json!({"mixed": [1.5, 2], "flag": true});
    let stored = app.v3_post("/spans", s.clone(), StatusCode::CREATED).await;
    assert_eq!(stored["custom_extra_field"], json!({"kept": true}));
    assert_eq!(stored["attributes"]["mixed"], json!([1.5, 2.0]));
    assert_eq!(stored["start_time"], json!(1.0));

    let r = app.rollout(&rid).await;
    assert_eq!(r["status"], "running");
    assert_eq!(r["attempt"]["status"], "running");
    assert!(r["attempt"]["last_heartbeat_time"].is_f64());

    let dup = app.post("/v1/agl/spans", s).await;
    assert_eq!(expect_json(dup, StatusCode::CREATED).await, Value::Null);
    assert_eq!(app.v3_get("/statistics").await["total_spans"], 1);
}

async fn next(app: &crate::helpers::TestApp, rollout: String) -> Value {
    let body = json!({"rollout_id": rollout, "attempt_id": "any"});
    app.v3_post("/spans/next", body, StatusCode::OK).await["sequence_id"].clone()
}

#[tokio::test]
async fn sequence_ids_are_per_rollout_and_follow_explicit_ids() {
    let app = spawn().await;
    let (rid, aid) = running_rollout(&app).await;
    assert_eq!(next(&app, rid.clone()).await, 1);
    assert_eq!(next(&app, rid.clone()).await, 2);
    assert_eq!(next(&app, "ro-unknown".into()).await, 1);
    app.v3_post(
        "/spans",
        span(&rid, &aid, 5, "00000000000000aa"),
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(next(&app, rid.clone()).await, 6);
    // A span for an unknown rollout still raises the counter before it is refused.
    let r = app
        .post("/v1/agl/spans", span("ro-ghost", "at-x", 9, "01"))
        .await;
    assert_eq!(
        expect_json(r, StatusCode::NOT_FOUND).await["detail"],
        "Rollout ro-ghost not found"
    );
    assert_eq!(next(&app, "ro-ghost".into()).await, 10);
    let r = app
        .post("/v1/agl/spans", span(&rid, "at-nope", 1, "02"))
        .await;
    assert_eq!(
        expect_json(r, StatusCode::NOT_FOUND).await["detail"],
        format!("Attempt at-nope not found for rollout {rid}")
    );
}

#[tokio::test]
async fn span_queries_filter_by_attempt_and_fields() {
    let app = spawn().await;
    let q = app
        .enqueue(
            json!([{"input": 1, "config": {"max_attempts": 2, "retry_condition": ["failed"]}}]),
        )
        .await;
    let rid = str_of(&q[0], "rollout_id").to_owned();
    let first = app.dequeue(1, None).await;
    let a1 = str_of(&first[0]["attempt"], "attempt_id").to_owned();
    for (i, id) in ["0000000000000003", "0000000000000001", "0000000000000002"]
        .iter()
        .enumerate()
    {
        let seq = [3, 1, 2][i];
        let mut s = span(&rid, &a1, seq, id);
        s["name"] = json!(if seq == 2 { "llm.call" } else { "tool" });
        app.v3_post("/spans", s, StatusCode::CREATED).await;
    }
    app.update_attempt(&rid, &a1, json!({"status": "failed"}))
        .await;
    let second = app.dequeue(1, None).await;
    let a2 = str_of(&second[0]["attempt"], "attempt_id").to_owned();
    app.v3_post(
        "/spans",
        span(&rid, &a2, 4, "0000000000000009"),
        StatusCode::CREATED,
    )
    .await;

    let all = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    assert_eq!(all["total"], 4);
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence_id"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4], "default order is sequence_id ascending");

    let latest = app
        .v3_get(&format!("/spans?rollout_id={rid}&attempt_id=latest"))
        .await;
    assert_eq!(latest["total"], 1);
    assert_eq!(latest["items"][0]["attempt_id"], a2.as_str());

    let named = app
        .v3_post(
            "/spans/search",
            json!({"rollout_id": rid, "attempt_id": a1, "name_contains": "llm"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(named["total"], 1);
    assert_eq!(named["items"][0]["sequence_id"], 2);
    let either = app
        .v3_post("/spans/search", json!({"rollout_id": rid, "name": "llm.call", "span_id": "0000000000000009", "filter_logic": "or", "sort_order": "desc", "limit": 1}), StatusCode::OK)
        .await;
    assert_eq!(either["total"], 2);
    assert_eq!(either["items"][0]["sequence_id"], 4);

    let none = app
        .v3_get("/spans?rollout_id=ro-unknown&attempt_id=latest&limit=3")
        .await;
    assert_eq!(
        none,
        json!({"items": [], "limit": 3, "offset": 0, "total": 0})
    );
    let r = app.get("/v1/agl/spans").await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"][0]["loc"], json!(["query", "rollout_id"]));
    assert_eq!(body["detail"][0]["type"], "missing");
}

#[tokio::test]
async fn invalid_spans_get_422_and_change_nothing() {
    let app = spawn().await;
    let (rid, aid) = running_rollout(&app).await;
    let mut bad = span(&rid, &aid, 1, "01");
    bad["attributes"] = json!({"nested": {"a": 1}});
    let r = app.post("/v1/agl/spans", bad).await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "attributes", "nested"])
    );
    let mut bad = span(&rid, &aid, 1, "01");
    bad["status"] = json!({"status_code": "FINE"});
    bad.as_object_mut().unwrap().remove("resource");
    let r = app.post("/v1/agl/spans", bad).await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"].as_array().unwrap().len(), 2);
    assert_eq!(
        app.rollout(&rid).await["status"],
        "preparing",
        "a refused span is no heartbeat"
    );
    assert_eq!(app.v3_get("/statistics").await["total_spans"], 0);
}
