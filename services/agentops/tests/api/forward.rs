//! Forwarding trace batches to another OTLP receiver: here a second agl-agentops.

use std::io::Write as _;
use std::time::Duration;

use prost::Message as _;

use crate::helpers::{eventually, spawn, spawn_with, test_args, trace_hex, trace_request};

#[tokio::test]
async fn batches_reach_the_receiver_tagged_with_resource_attributes() {
    let receiver = spawn().await;
    let forwarder = spawn_with(agl_agentops::AgentopsArgs {
        forward_otlp: vec![receiver.url("/v1/traces")],
        forward_resource_attributes: vec![
            ("agentlightning.rollout_id".into(), "ro-1".into()),
            ("agentlightning.attempt_id".into(), "at-1".into()),
            ("service.name".into(), "tagged".into()),
        ],
        ..test_args()
    })
    .await;
    // Compressed on the way in; re-encoded on the way out.
    let body = trace_request(7, &[("run.task", 1, None)]).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let response = forwarder
        .post_otlp(
            "/v1/traces",
            gz.finish().unwrap(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(response.status(), 200);

    let path = format!("/_agl/traces/{}", trace_hex(7));
    let trace = eventually(Duration::from_secs(10), "the forwarded trace", || async {
        let (status, body) = receiver.get_json(&path).await;
        (status == 200).then_some(body)
    })
    .await;
    let resource = &trace["spans"][0]["resource"];
    assert_eq!(resource["agentlightning.rollout_id"], "ro-1");
    assert_eq!(resource["agentlightning.attempt_id"], "at-1");
    assert_eq!(resource["service.name"], "tagged");
    // What the forwarder keeps itself is untouched.
    let (_, own) = forwarder.get_json(&path).await;
    assert_eq!(own["spans"][0]["resource"]["service.name"], "agentops");
    eventually(Duration::from_secs(5), "forward_sent = 1", || async {
        (forwarder.counters().await["forward_sent"] == 1).then_some(())
    })
    .await;
    forwarder.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn raw_bytes_are_forwarded_as_they_came_without_attributes() {
    let receiver = spawn().await;
    let forwarder = spawn_with(agl_agentops::AgentopsArgs {
        forward_otlp: vec![receiver.url("/v1/traces")],
        ..test_args()
    })
    .await;
    let body = trace_request(8, &[("raw", 1, None)]).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    forwarder
        .post_otlp(
            "/v1/traces",
            gz.finish().unwrap(),
            &[("content-encoding", "gzip")],
        )
        .await;
    let path = format!("/_agl/traces/{}", trace_hex(8));
    eventually(Duration::from_secs(10), "the forwarded trace", || async {
        (receiver.get_json(&path).await.0 == 200).then_some(())
    })
    .await;
    forwarder.stop().await;
    receiver.stop().await;
}

#[tokio::test]
async fn failures_are_counted_and_never_reach_the_sdk() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let forwarder = spawn_with(agl_agentops::AgentopsArgs {
        forward_otlp: vec![format!("http://127.0.0.1:{port}/v1/traces")],
        forward_attempts: 2,
        forward_timeout_seconds: 1.0,
        ..test_args()
    })
    .await;
    let body = trace_request(9, &[("lost", 1, None)]).encode_to_vec();
    let response = forwarder.post_otlp("/v1/traces", body, &[]).await;
    assert_eq!(response.status(), 200);
    eventually(Duration::from_secs(10), "forward_failed = 1", || async {
        (forwarder.counters().await["forward_failed"] == 1).then_some(())
    })
    .await;
    let metrics = forwarder.metrics().await;
    assert!(metrics.contains("agl_agentops_forward_retries_total{target="));
    assert!(metrics.contains("outcome=\"failed\""));
    // The batch is still kept locally.
    assert_eq!(forwarder.counters().await["spans_received"], 1);
    forwarder.stop().await;
}
