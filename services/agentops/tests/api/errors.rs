//! Bad input gets a clear 4xx: JSON errors, and `google.rpc.Status` for OTLP payloads.

use std::io::Write as _;

use prost::Message as _;
use serde_json::json;

use crate::helpers::{spawn, spawn_with, test_args};

/// `google.rpc.Status` as a client decodes it.
#[derive(Clone, PartialEq, prost::Message)]
struct Status {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[tokio::test]
async fn malformed_otlp_gets_a_protobuf_status() {
    let server = spawn().await;
    let response = server
        .post_otlp("/v1/traces", b"\xff\xff\xff\xff".to_vec(), &[])
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let status = Status::decode(response.bytes().await.unwrap()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.starts_with("invalid otlp protobuf payload"),
        "{}",
        status.message
    );

    let response = server
        .client
        .post(server.url("/v1/traces"))
        .header("content-type", "application/json")
        .body("{\"resourceSpans\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid otlp json payload")
    );

    let response = server
        .client
        .post(server.url("/v1/traces"))
        .header("content-type", "text/plain")
        .body("spans")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    let response = server
        .post_otlp(
            "/v1/traces",
            b"plain".to_vec(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(response.status(), 400);
    assert_eq!(server.counters().await["otlp_traces_requests_rejected"], 4);
    server.stop().await;
}

#[tokio::test]
async fn a_gzip_bomb_is_refused() {
    let server = spawn().await;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..80 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 1 << 20);
    let response = server
        .post_otlp("/v1/traces", bomb, &[("content-encoding", "gzip")])
        .await;
    assert_eq!(response.status(), 400);
    let status = Status::decode(response.bytes().await.unwrap()).unwrap();
    assert!(status.message.contains("exceeds"), "{}", status.message);
    server.stop().await;
}

#[tokio::test]
async fn oversize_bodies_get_a_json_413() {
    let server = spawn_with(agl_agentops::AgentopsArgs {
        max_body_bytes: 1024,
        ..test_args()
    })
    .await;
    for path in ["/v1/traces", "/v4/logs/upload/"] {
        let response = server
            .client
            .post(server.url(path))
            .header("content-type", "application/x-protobuf")
            .body(vec![b'x'; 4096])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["detail"], "request body exceeds 1024 bytes");
    }
    server.stop().await;
}

#[tokio::test]
async fn malformed_uploads_are_400() {
    let server = spawn().await;
    let response = server
        .client
        .post(server.url("/v4/logs/upload/"))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("invalid json body")
    );

    let (status, body) = server
        .post_json("/v4/logs/upload/", &json!({"body": 42}))
        .await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("\"body\""));

    let response = server
        .client
        .post(server.url("/v4/logs/upload/"))
        .header("Trace-Id", "not-a-trace")
        .json(&json!("text"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let counters = server.counters().await;
    assert_eq!(counters["log_uploads_rejected"], 3);
    assert_eq!(counters["log_uploads_accepted"], 0);
    server.stop().await;
}

#[tokio::test]
async fn unknown_inspection_ids_are_404() {
    let server = spawn().await;
    let (status, body) = server
        .get_json(&format!("/_agl/traces/{}", "0".repeat(32)))
        .await;
    assert_eq!(status, 404);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .starts_with("no spans of trace")
    );
    let (status, _) = server.get_json("/_agl/logs/log-99").await;
    assert_eq!(status, 404);
    let (status, _) = server.get_json("/_agl/objects/obj-99").await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test]
async fn a_forward_loop_is_refused() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let args = agl_agentops::AgentopsArgs {
        port,
        forward_otlp: vec![format!("http://localhost:{port}/v1/traces")],
        ..test_args()
    };
    let err = agl_agentops::App::build(&args).await.err().unwrap();
    assert!(
        err.to_string().contains("points at this server itself"),
        "{err}"
    );
    let args = agl_agentops::AgentopsArgs {
        forward_otlp: vec!["ftp://collector:4318/v1/traces".into()],
        ..test_args()
    };
    assert!(agl_agentops::App::build(&args).await.is_err());
}
