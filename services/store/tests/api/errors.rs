//! Bad input: every refusal is a 4xx with a JSON body and changes nothing.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_json, spawn, spawn_with, str_of, test_args};

#[tokio::test]
async fn malformed_and_ill_typed_bodies_are_422() {
    let app = spawn().await;
    let r = app
        .post_raw("/v1/agl/queues/rollouts/enqueue", "{not json")
        .await;
    assert_eq!(
        expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await["detail"][0]["type"],
        "json_invalid"
    );
    let r = app.post("/v1/agl/queues/rollouts/enqueue", json!({})).await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"][0]["type"], "missing");
    assert_eq!(body["detail"][0]["loc"], json!(["body", "rollouts"]));
    let r = app
        .post("/v1/agl/queues/rollouts/enqueue", json!({"rollouts": [{"input": 1}, {"input": 2, "config": {"max_attempts": 0}}, {"mode": "play", "input": 3}]}))
        .await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let locs: Vec<Value> = body["detail"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["loc"].clone())
        .collect();
    assert_eq!(
        locs,
        [
            json!(["body", "rollouts", 1, "config", "max_attempts"]),
            json!(["body", "rollouts", 2, "mode"])
        ]
    );
    assert_eq!(
        app.v3_get("/statistics").await["total_rollouts"],
        0,
        "nothing half-applied"
    );
    let r = app
        .post("/v1/agl/rollouts/search", json!({"sort_order": "up"}))
        .await;
    assert_eq!(
        expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await["detail"][0]["type"],
        "literal_error"
    );
    let r = app.get("/v1/agl/rollouts?limit=abc").await;
    assert_eq!(
        expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await["detail"][0]["loc"],
        json!(["query", "limit"])
    );
    let r = app
        .post("/v1/agl/waits/rollouts", json!({"rollout_ids": "ro-1"}))
        .await;
    assert_eq!(
        expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await["detail"][0]["type"],
        "list_type"
    );
}

#[tokio::test]
async fn nulls_where_only_omission_is_allowed_are_400() {
    let app = spawn().await;
    let q = app.enqueue(json!([{"input": 1}])).await;
    let rid = str_of(&q[0], "rollout_id").to_owned();
    for field in ["status", "config"] {
        let r = app
            .post(&format!("/v1/agl/rollouts/{rid}"), json!({ field: null }))
            .await;
        let body = expect_json(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            body["detail"],
            format!("{field} is invalid; it cannot be a null value.")
        );
    }
    app.dequeue(1, None).await;
    for field in ["status", "worker_id", "last_heartbeat_time", "metadata"] {
        let r = app
            .post(
                &format!("/v1/agl/rollouts/{rid}/attempts/latest"),
                json!({ field: null }),
            )
            .await;
        let body = expect_json(r, StatusCode::BAD_REQUEST).await;
        assert_eq!(
            body["detail"],
            format!("{field} is invalid; it cannot be a null value.")
        );
    }
    let r = app
        .post("/v1/agl/workers/w", json!({"heartbeat_stats": null}))
        .await;
    expect_json(r, StatusCode::BAD_REQUEST).await;
    // An attempt update needs a body.
    let r = app
        .client
        .post(app.url(&format!("/v1/agl/rollouts/{rid}/attempts/latest")))
        .send()
        .await
        .unwrap();
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(app.rollout(&rid).await["status"], "preparing");
}

#[tokio::test]
async fn pagination_is_checked() {
    let app = spawn().await;
    let cases = [
        (
            "/v1/agl/rollouts?sort_by=attempt",
            "Invalid sort_by: attempt, allowed fields are: rollout_id, input, start_time, end_time, mode, resources_id, status, config, metadata",
        ),
        (
            "/v1/agl/rollouts?limit=0",
            "Limit must be greater than 0 or -1 for no limit",
        ),
        (
            "/v1/agl/workers?limit=-2",
            "Limit must be greater than 0 or -1 for no limit",
        ),
        (
            "/v1/agl/resources?offset=-1",
            "Offset must be greater than or equal to 0",
        ),
        (
            "/v1/agl/spans?rollout_id=x&sort_by=nope",
            "Invalid sort_by: nope, allowed fields are: rollout_id, attempt_id, sequence_id, trace_id, span_id, parent_id, name, status, attributes, events, links, start_time, end_time, context, parent, resource",
        ),
    ];
    for (path, detail) in cases {
        let r = app.get(path).await;
        assert_eq!(
            expect_json(r, StatusCode::BAD_REQUEST).await["detail"],
            detail,
            "{path}"
        );
    }
    app.enqueue(json!([{"input": 1}, {"input": 2}])).await;
    let r = app.get("/v1/agl/rollouts?sort_by=config").await;
    assert_eq!(
        expect_json(r, StatusCode::BAD_REQUEST).await["error_type"],
        "TypeError"
    );
}

#[tokio::test]
async fn unknown_ids_routes_and_methods() {
    let app = spawn().await;
    assert_eq!(app.v3_get("/rollouts/ro-missing").await, Value::Null);
    assert_eq!(
        app.v3_get("/rollouts/ro-missing/attempts/latest").await,
        Value::Null
    );
    assert_eq!(
        app.v3_get("/rollouts/ro-missing/attempts").await["total"],
        0
    );
    let r = app
        .post("/v1/agl/rollouts/ro-missing/attempts", json!({}))
        .await;
    assert_eq!(
        expect_json(r, StatusCode::NOT_FOUND).await["detail"],
        "Rollout ro-missing not found"
    );
    let q = app.enqueue(json!([{"input": 1}])).await;
    let rid = str_of(&q[0], "rollout_id");
    let r = app
        .post(
            &format!("/v1/agl/rollouts/{rid}/attempts/latest"),
            json!({}),
        )
        .await;
    assert_eq!(
        expect_json(r, StatusCode::NOT_FOUND).await["detail"],
        format!("No attempts found for rollout {rid}")
    );

    let r = app.get("/v1/agl/nothing-here").await;
    assert_eq!(
        expect_json(r, StatusCode::NOT_FOUND).await,
        json!({"detail": "Not Found"})
    );
    let r = app.get("/v1/agl/rollouts/").await;
    expect_json(r, StatusCode::NOT_FOUND).await;
    let r = app
        .client
        .delete(app.url("/v1/agl/rollouts"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(r, StatusCode::METHOD_NOT_ALLOWED).await,
        json!({"detail": "Method Not Allowed"})
    );
}

#[tokio::test]
async fn oversize_bodies_get_413_json() {
    let args = agl_store::StoreArgs {
        max_body_bytes: 1024,
        ..test_args()
    };
    let app = spawn_with(args, None).await;
    let big = "x".repeat(4096);
    let r = app
        .post(
            "/v1/agl/queues/rollouts/enqueue",
            json!({"rollouts": [{"input": big}]}),
        )
        .await;
    let body = expect_json(r, StatusCode::PAYLOAD_TOO_LARGE).await;
    assert_eq!(body["detail"], "request body exceeds 1024 bytes");
    assert_eq!(app.v3_get("/statistics").await["total_rollouts"], 0);
}

#[tokio::test]
async fn cors_only_for_configured_origins() {
    let args = agl_store::StoreArgs {
        cors_origins: vec!["http://dash.example".into()],
        ..test_args()
    };
    let app = spawn_with(args, None).await;
    let r = app
        .client
        .get(app.url("/v1/agl/health"))
        .header("origin", "http://dash.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "http://dash.example"
    );
    assert_eq!(r.headers()["access-control-allow-credentials"], "true");
    let pre = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/v1/agl/rollouts"))
        .header("origin", "http://dash.example")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), StatusCode::OK);
    let methods = pre.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(methods.contains("GET"), "{methods}");
    let other = app
        .client
        .get(app.url("/v1/agl/health"))
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let plain = spawn().await;
    let r = plain
        .client
        .get(plain.url("/v1/agl/health"))
        .header("origin", "http://dash.example")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn openapi_document_describes_every_current_route() {
    let app = spawn().await;
    let doc = expect_json(app.get("/openapi.json").await, StatusCode::OK).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let expected = [
        ("/v1/agl/health", "get"),
        ("/v1/agl/queues/rollouts/enqueue", "post"),
        ("/v1/agl/queues/rollouts/dequeue", "post"),
        ("/v1/agl/rollouts", "post"),
        ("/v1/agl/rollouts", "get"),
        ("/v1/agl/rollouts/search", "post"),
        ("/v1/agl/rollouts/{rollout_id}", "get"),
        ("/v1/agl/rollouts/{rollout_id}", "post"),
        ("/v1/agl/rollouts/{rollout_id}/attempts", "post"),
        ("/v1/agl/rollouts/{rollout_id}/attempts", "get"),
        ("/v1/agl/rollouts/{rollout_id}/attempts/search", "post"),
        ("/v1/agl/rollouts/{rollout_id}/attempts/latest", "get"),
        (
            "/v1/agl/rollouts/{rollout_id}/attempts/{attempt_id}",
            "post",
        ),
        ("/v1/agl/workers", "get"),
        ("/v1/agl/workers/search", "post"),
        ("/v1/agl/workers/{worker_id}", "get"),
        ("/v1/agl/workers/{worker_id}", "post"),
        ("/v1/agl/statistics", "get"),
        ("/v1/agl/resources", "get"),
        ("/v1/agl/resources", "post"),
        ("/v1/agl/resources/latest", "get"),
        ("/v1/agl/resources/{resources_id}", "get"),
        ("/v1/agl/resources/{resources_id}", "post"),
        ("/v1/agl/spans", "post"),
        ("/v1/agl/spans", "get"),
        ("/v1/agl/spans/search", "post"),
        ("/v1/agl/spans/next", "post"),
        ("/v1/agl/waits/rollouts", "post"),
        ("/v1/traces", "post"),
        ("/healthz", "get"),
        ("/api/rollouts", "post"),
        ("/api/rollouts", "get"),
        ("/api/rollouts/terminal", "get"),
        ("/api/rollouts/{rollout_id}", "get"),
        ("/api/rollouts/{rollout_id}", "patch"),
        ("/api/rollouts/{rollout_id}", "delete"),
        (
            "/api/rollouts/{rollout_id}/attempt/{attempt_id}/events",
            "post",
        ),
        ("/api/rollouts/{rollout_id}/events", "get"),
        ("/api/models", "post"),
        ("/api/models", "delete"),
        (
            "/proxy/rollout/{rollout_id}/attempt/{attempt_id}/mode/{mode}/openai/v1/{path}",
            "post",
        ),
        ("/proxy/pause", "post"),
        ("/proxy/resume", "post"),
        ("/proxy/state", "get"),
    ];
    for (path, method) in expected {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    assert_eq!(
        paths
            .values()
            .map(|p| p.as_object().unwrap().len())
            .sum::<usize>(),
        expected.len()
    );
    let create = &paths["/v1/agl/rollouts"]["post"]["responses"];
    assert!(create.get("201").is_some());
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let app = spawn().await;
    let live = expect_json(app.get("/livez").await, StatusCode::OK).await;
    assert_eq!(live["status"], "alive");
    let ready = expect_json(app.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(ready["status"], "ready");
    app.enqueue(json!([{"input": 1}, {"input": 2}])).await;
    app.dequeue(1, Some("w")).await;
    let text = app.get("/metrics").await.text().await.unwrap();
    for line in [
        "agl_store_rollouts{status=\"queuing\"} 1",
        "agl_store_rollouts{status=\"preparing\"} 1",
        "agl_store_attempts{status=\"preparing\"} 1",
        "agl_store_workers{status=\"busy\"} 1",
        "agl_store_queue_depth 1",
        // Both are live: held in memory on every backend that keeps state in the process.
        if std::env::var("AGL_TEST_STORAGE").is_ok_and(|v| v == "postgres") {
            "agl_store_rollouts_in_memory 0"
        } else {
            "agl_store_rollouts_in_memory 2"
        },
        "http_requests_total{method=\"POST\",route=\"/v1/agl/queues/rollouts/enqueue\",status=\"201\"} 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("process_resident_memory_bytes"));
    assert!(text.contains("agl_build_info{"));
    let rid = app.dequeue(1, None).await[0]["rollout_id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.v3_post(
        &format!("/rollouts/{rid}"),
        json!({"status": "succeeded"}),
        StatusCode::OK,
    )
    .await;
    let upstream = app.get("/v1/prometheus/").await.text().await.unwrap();
    for line in [
        "agl_http_total{method=\"POST\",path=\"/v1/agl/queues/rollouts/dequeue\",status=\"200\"} 2",
        "agl_store_total{method=\"dequeue_many_rollouts\",status=\"OK\",store_pubmeth=\"dequeue_many_rollouts\"} 2",
        "agl_rollouts_total{mode=\"unknown\",status=\"succeeded\"} 1",
    ] {
        assert!(upstream.contains(line), "missing {line:?} in\n{upstream}");
    }
}
