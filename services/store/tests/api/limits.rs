//! The explicit limits of hostile or runaway input (docs/security.md): each refused with a
//! clear error, nothing already accepted lost. The queue and per-rollout span limits hold
//! where the store keeps that data in memory (memory, SQLite); with Postgres it lives in the
//! database and these two are not enforced.

use std::io::Write as _;

use agl_store::StoreArgs;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, span, spawn, spawn_with, str_of, test_args};
use crate::otlp::{kv, request};

#[tokio::test]
async fn a_full_queue_refuses_with_429_and_takes_again_once_drained() {
    let app = spawn_with(
        StoreArgs {
            max_queued_rollouts: 3,
            ..test_args()
        },
        None,
    )
    .await;
    if app.store.is_shared() {
        return;
    }
    app.enqueue(json!([{"input": 1}, {"input": 2}, {"input": 3}]))
        .await;
    let r = app
        .post(
            "/v1/agl/queues/rollouts/enqueue",
            json!({"rollouts": [{"input": 4}]}),
        )
        .await;
    assert_eq!(r.headers()["retry-after"], "1");
    let body = expect_json(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        body["detail"].as_str().unwrap().contains("3 rollouts"),
        "{body}"
    );
    // The same limit on upstream v1's create.
    let r = app.post("/api/rollouts", json!([{"input": 5}])).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    // A claimed rollout frees a place; the three queued ones are all there.
    assert_eq!(app.dequeue(1, None).await.len(), 1);
    app.enqueue(json!([{"input": 6}])).await;
    let page = app.v3_get("/rollouts").await;
    let inputs: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["input"].as_i64().unwrap())
        .collect();
    assert_eq!(inputs, vec![1, 2, 3, 6]);
}

fn otlp(rollout: &str, attempt: &str, first_id: u8, n: u8) -> Vec<u8> {
    let spans = (first_id..first_id + n)
        .map(|i| Span {
            trace_id: vec![0xab; 16],
            span_id: vec![i; 8],
            name: format!("otlp-{i}"),
            ..Span::default()
        })
        .collect();
    request(
        vec![
            kv("agentlightning.rollout_id", rollout),
            kv("agentlightning.attempt_id", attempt),
        ],
        spans,
    )
}

#[tokio::test]
async fn a_full_rollout_refuses_further_spans_and_keeps_its_own() {
    let app = spawn_with(
        StoreArgs {
            max_spans_per_rollout: 5,
            ..test_args()
        },
        None,
    )
    .await;
    if app.store.is_shared() {
        return;
    }
    app.enqueue(json!([{"input": 1}])).await;
    let d = app.dequeue(1, None).await;
    let rid = str_of(&d[0], "rollout_id").to_owned();
    let aid = str_of(&d[0]["attempt"], "attempt_id").to_owned();
    for i in 1..=3 {
        app.v3_post(
            "/spans",
            span(&rid, &aid, i, &format!("{i:016x}")),
            StatusCode::CREATED,
        )
        .await;
    }
    // OTLP: two of three fit; the third is a rejected span of a partial success.
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(otlp(&rid, &aid, 10, 3))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);
    let body = app
        .v3_post(
            "/spans",
            span(&rid, &aid, 9, "00000000000000ff"),
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    assert!(
        body["detail"].as_str().unwrap().contains("5 spans"),
        "{body}"
    );
    let page = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 5, "{page}");
    // Other rollouts are not affected.
    app.enqueue(json!([{"input": 2}])).await;
    let d = app.dequeue(1, None).await;
    let other = str_of(&d[0], "rollout_id").to_owned();
    let other_attempt = str_of(&d[0]["attempt"], "attempt_id").to_owned();
    app.v3_post(
        "/spans",
        span(&other, &other_attempt, 1, "0000000000000001"),
        StatusCode::CREATED,
    )
    .await;
}

/// JSON nested far past any real document is a 4xx with a JSON body, not a stack
/// overflow; a gzip bomb on OTLP is refused at the decompression limit; the store serves on.
#[tokio::test]
async fn deep_nesting_and_a_decompression_bomb_are_refused() {
    let app = spawn().await;
    let deep = format!(
        r#"{{"rollouts": [{{"input": {}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let r = app
        .client
        .post(app.url("/v1/agl/queues/rollouts/enqueue"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    let _: serde_json::Value = r.json().await.expect("a JSON error");

    // 256 MiB of zeros, about 256 KiB compressed: four times the 64 MiB limit.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..256 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}
