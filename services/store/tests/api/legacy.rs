//! The reference's `/agl/v1` routes and the flat 0.2.2 routes.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_json, span, spawn, str_of};

#[tokio::test]
async fn agl_v1_routes_keep_their_shapes() {
    let app = spawn().await;
    let h = app.get("/agl/v1/health").await;
    assert_eq!(
        expect_json(h, StatusCode::OK).await,
        json!({"status": "ok"})
    );

    let r = app
        .post(
            "/agl/v1/queues/rollouts/enqueue",
            json!({"input": {"q": 1}}),
        )
        .await;
    let queued = expect_json(r, StatusCode::CREATED).await;
    assert_eq!(queued["status"], "queuing");
    let rid = str_of(&queued, "rollout_id").to_owned();

    let d = app
        .client
        .post(app.url("/agl/v1/queues/rollouts/dequeue"))
        .send()
        .await
        .unwrap();
    let d = expect_json(d, StatusCode::OK).await;
    assert_eq!(d["rollout_id"], rid.as_str());
    let aid = str_of(&d["attempt"], "attempt_id").to_owned();
    let empty = app
        .client
        .post(app.url("/agl/v1/queues/rollouts/dequeue"))
        .send()
        .await
        .unwrap();
    assert_eq!(expect_json(empty, StatusCode::OK).await, Value::Null);

    let list = expect_json(app.get("/agl/v1/rollouts").await, StatusCode::OK).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("attempt").is_none());
    let one = expect_json(
        app.get(&format!("/agl/v1/rollouts/{rid}")).await,
        StatusCode::OK,
    )
    .await;
    assert!(one.get("attempt").is_none());
    let found = expect_json(
        app.post("/agl/v1/rollouts/search", json!({"status": ["preparing"]}))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1);

    let res = expect_json(
        app.post(
            "/agl/v1/resources",
            json!({"m": {"resource_type": "llm", "endpoint": "e", "model": "m"}}),
        )
        .await,
        StatusCode::CREATED,
    )
    .await;
    assert!(res.get("version").is_none() && res.get("create_time").is_none());
    assert_eq!(res["resources"]["m"]["model"], "m");
    let latest = expect_json(app.get("/agl/v1/resources/latest").await, StatusCode::OK).await;
    assert_eq!(latest["resources_id"], res["resources_id"]);

    let s = span(&rid, &aid, 1, "01");
    let stored = expect_json(
        app.post("/agl/v1/spans", s.clone()).await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(stored["span_id"], "01");
    let again = expect_json(app.post("/agl/v1/spans", s).await, StatusCode::CREATED).await;
    assert_eq!(
        again["span_id"], "01",
        "older protocols never answer null for a span"
    );
    let spans = expect_json(
        app.get(&format!("/agl/v1/spans?rollout_id={rid}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(spans.as_array().unwrap().len(), 1);
    let next = expect_json(
        app.post(
            "/agl/v1/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(next, json!({"sequence_id": 2}));

    let upd = expect_json(
        app.post(
            &format!("/agl/v1/rollouts/{rid}/attempts/{aid}"),
            json!({"status": "succeeded"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upd["status"], "succeeded");
    let done = expect_json(
        app.post(
            "/agl/v1/waits/rollouts",
            json!({"rollout_ids": [rid], "timeout": 0}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(done[0]["status"], "succeeded");
    let attempts = expect_json(
        app.get(&format!("/agl/v1/rollouts/{rid}/attempts")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(attempts.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn flat_routes_answer_200_and_400() {
    let app = spawn().await;
    assert_eq!(
        expect_json(app.get("/health").await, StatusCode::OK).await,
        json!({"status": "ok"})
    );
    let res = expect_json(
        app.post("/add_resources", json!({"resources": {"p": {"resource_type": "prompt_template", "template": "t", "engine": "jinja"}}})).await,
        StatusCode::OK,
    )
    .await;
    let res_id = str_of(&res, "resources_id").to_owned();
    let upd = expect_json(
        app.post(
            "/update_resources",
            json!({"resources_id": res_id, "resources": {}}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upd, json!({"resources_id": res_id, "resources": {}}));
    assert_eq!(
        expect_json(
            app.get(&format!("/get_resources_by_id/{res_id}")).await,
            StatusCode::OK
        )
        .await["resources_id"],
        res_id.as_str()
    );
    assert_eq!(
        expect_json(app.get("/get_latest_resources").await, StatusCode::OK).await["resources_id"],
        res_id.as_str()
    );

    let q = expect_json(
        app.post("/enqueue_rollout", json!({"input": "task"})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(q["resources_id"], res_id.as_str());
    let rid = str_of(&q, "rollout_id").to_owned();
    let d = expect_json(app.get("/dequeue_rollout").await, StatusCode::OK).await;
    assert_eq!(d["rollout_id"], rid.as_str());
    assert_eq!(
        expect_json(app.get("/dequeue_rollout").await, StatusCode::OK).await,
        Value::Null
    );
    let aid = str_of(&d["attempt"], "attempt_id").to_owned();

    let seq = expect_json(
        app.get(&format!("/get_next_span_sequence_id/{rid}/{aid}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(seq, json!(1));
    expect_json(
        app.post("/add_span", span(&rid, &aid, 1, "01")).await,
        StatusCode::OK,
    )
    .await;
    let spans = expect_json(
        app.get(&format!("/query_spans/{rid}?attempt_id={aid}"))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(spans.as_array().unwrap().len(), 1);

    let started = expect_json(
        app.post("/start_attempt", json!({"rollout_id": rid})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(started["attempt"]["sequence_id"], 2);
    let upd = expect_json(
        app.post(
            "/update_attempt",
            json!({"rollout_id": rid, "attempt_id": "latest", "status": "succeeded"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upd["sequence_id"], 2);
    let waited = expect_json(
        app.post(
            "/wait_for_rollouts",
            json!({"rollout_ids": [rid], "timeout": 0}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(waited[0]["status"], "succeeded");
    let found = expect_json(
        app.post(
            "/query_rollouts",
            json!({"status": ["succeeded"], "rollout_ids": null}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(found.as_array().unwrap().len(), 1);
    let attempts = expect_json(
        app.get(&format!("/query_attempts/{rid}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(attempts.as_array().unwrap().len(), 2);
    assert_eq!(
        expect_json(
            app.get(&format!("/get_latest_attempt/{rid}")).await,
            StatusCode::OK
        )
        .await["sequence_id"],
        2
    );
    assert_eq!(
        expect_json(app.get("/get_rollout_by_id/ro-nope").await, StatusCode::OK).await,
        Value::Null
    );
    let st = expect_json(
        app.post("/start_rollout", json!({"input": 1})).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(st["attempt"]["sequence_id"], 1);
    let upd = expect_json(
        app.post(
            "/update_rollout",
            json!({"rollout_id": rid, "mode": "test"}),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(upd["mode"], "test");

    // Application errors are 400s in this protocol; nulls fail validation.
    let err = expect_json(
        app.post(
            "/update_rollout",
            json!({"rollout_id": "ro-nope", "status": "failed"}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(err["detail"], "Rollout ro-nope not found");
    let err = expect_json(
        app.post("/start_attempt", json!({"rollout_id": "ro-nope"}))
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(err["error_type"], "ValueError");
    expect_json(
        app.post(
            "/update_attempt",
            json!({"rollout_id": rid, "attempt_id": "latest", "status": null}),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
}
