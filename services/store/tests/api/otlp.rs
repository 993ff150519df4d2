//! OTLP/HTTP ingestion at `/v1/traces`.

use std::io::{Read as _, Write as _};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{expect_json, spawn, str_of};

pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn otlp_span(name: &str, span_id: u8, attrs: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![0xab; 16],
        span_id: vec![span_id; 8],
        name: name.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_001_000_000_000,
        attributes: attrs,
        status: Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        }),
        ..Span::default()
    }
}

pub(crate) fn request(resource_attrs: Vec<KeyValue>, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource_attrs,
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn spans_are_mapped_sequenced_and_heartbeat() {
    let app = spawn().await;
    app.enqueue(json!([{"input": 1}])).await;
    let d = app.dequeue(1, None).await;
    let rid = str_of(&d[0], "rollout_id").to_owned();
    let aid = str_of(&d[0]["attempt"], "attempt_id").to_owned();
    for _ in 0..6 {
        app.v3_post(
            "/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
            StatusCode::OK,
        )
        .await;
    }
    let body = request(
        vec![
            kv("agentlightning.rollout_id", &rid),
            kv("agentlightning.attempt_id", &aid),
            kv("service.name", "otlp-test"),
        ],
        vec![
            otlp_span("otlp-1", 0xcd, vec![kv("k", "v")]),
            otlp_span(
                "otlp-2",
                0xce,
                vec![kv("agentlightning.span_sequence_id", "42")],
            ),
            otlp_span("no-ids-here", 0xcf, vec![]),
        ],
    );
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .header("accept-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");

    let spans = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    assert_eq!(spans["total"], 3, "all three carry the resource ids");
    let first = &spans["items"][0];
    assert_eq!(first["sequence_id"], 7);
    assert_eq!(first["trace_id"], "abababababababababababababababab");
    assert_eq!(first["span_id"], "cdcdcdcdcdcdcdcd");
    assert_eq!(first["parent_id"], serde_json::Value::Null);
    assert_eq!(
        first["status"],
        json!({"status_code": "ERROR", "description": "boom"})
    );
    assert_eq!(first["start_time"], json!(1_700_000_000.0));
    assert_eq!(first["resource"]["attributes"]["service.name"], "otlp-test");
    assert_eq!(first["context"]["span_id"], "cdcdcdcdcdcdcdcd");
    let seqs: Vec<i64> = spans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence_id"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [7, 8, 42]);
    let next = app
        .v3_post(
            "/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(next["sequence_id"], 43);
    assert_eq!(app.rollout(&rid).await["status"], "running");
}

#[tokio::test]
async fn bad_payloads_get_protobuf_status_errors() {
    let app = spawn().await;
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let bytes = r.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        text.contains(
            "Unsupported Content-Type 'application/json', expected 'application/x-protobuf'"
        ),
        "{text}"
    );
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(
        String::from_utf8_lossy(&r.bytes().await.unwrap())
            .contains("Unable to parse OTLP traces payload")
    );

    let empty = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .send()
        .await
        .unwrap();
    assert_eq!(empty.status(), StatusCode::OK);
    let r = app
        .client
        .post(app.url("/v1/metrics"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_IMPLEMENTED);
}

#[tokio::test]
async fn unknown_rollouts_are_a_partial_success_not_a_lost_batch() {
    let app = spawn().await;
    app.enqueue(json!([{"input": 1}])).await;
    let d = app.dequeue(1, None).await;
    let rid = str_of(&d[0], "rollout_id").to_owned();
    let aid = str_of(&d[0]["attempt"], "attempt_id").to_owned();
    let good = otlp_span(
        "good",
        1,
        vec![
            kv("agentlightning.rollout_id", &rid),
            kv("agentlightning.attempt_id", &aid),
        ],
    );
    let bad = otlp_span(
        "bad",
        2,
        vec![
            kv("agentlightning.rollout_id", "ro-ghost"),
            kv("agentlightning.attempt_id", "at-ghost"),
        ],
    );
    let r = app
        .client
        .post(app.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request(vec![], vec![good, bad]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let mut raw = r.bytes().await.unwrap().to_vec();
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .unwrap();
        raw = out;
    }
    let resp = ExportTraceServiceResponse::decode(&raw[..]).unwrap();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    let spans = expect_json(
        app.get(&format!("/v1/agl/spans?rollout_id={rid}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(spans["total"], 1);
    assert_eq!(spans["items"][0]["name"], "good");
}

/// Spans that name no rollout (an AgentOps endpoint forwarding agents outside any rollout)
/// are counted as unattributed, apart from the spans the store refused; the payload is
/// still a success for its other spans.
#[tokio::test]
async fn spans_without_ids_are_counted_as_unattributed() {
    let app = spawn().await;
    for id in [1, 2] {
        let r = app
            .client
            .post(app.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(request(vec![], vec![otlp_span("loose", id, vec![])]))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let value = |outcome: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "agl_store_otlp_spans_total{{outcome=\"{outcome}\"}}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .map(str::to_owned)
    };
    assert_eq!(value("unattributed").as_deref(), Some("2"), "{metrics}");
    assert_eq!(value("rejected").as_deref(), Some("0"), "{metrics}");
}
