//! The routes the AgentOps SDK calls, answered the way both SDK families need.

use std::io::Write as _;

use prost::Message as _;
use serde_json::json;

use crate::helpers::{spawn, trace_hex, trace_request};

#[tokio::test]
async fn auth_gives_any_key_a_token_and_a_project() {
    let server = spawn().await;
    let (status, body) = server
        .post_json("/v3/auth/token", &json!({"api_key": "dummy"}))
        .await;
    assert_eq!(status, 200);
    assert!(body["token"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(body["project_id"].as_str().is_some_and(|p| !p.is_empty()));
    assert_eq!(body["project_prem_status"], "pro");
    // Never a 4xx here: 0.4.13 - 0.4.18 would raise out of init().
    let response = server
        .client
        .post(server.url("/v3/auth/token"))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let again: serde_json::Value = response.json().await.unwrap();
    assert_eq!(again["token"], body["token"]);
    assert_eq!(server.counters().await["auth_requests"], 2);
    server.stop().await;
}

#[tokio::test]
async fn protobuf_spans_are_kept_by_trace_with_their_attributes() {
    let server = spawn().await;
    let token = server.token().await;
    let request = trace_request(
        0xab,
        &[("run.task", 2, Some(1)), ("default.session", 1, None)],
    );
    let response = server
        .post_otlp(
            "/v1/traces",
            request.encode_to_vec(),
            &[("authorization", &format!("Bearer {token}"))],
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    assert!(response.bytes().await.unwrap().is_empty());

    let (_, traces) = server.get_json("/_agl/traces").await;
    let trace = &traces["traces"][0];
    assert_eq!(trace["trace_id"], trace_hex(0xab));
    assert_eq!(trace["span_count"], 2);
    assert_eq!(trace["root_span_name"], "default.session");
    assert_eq!(trace["first_time"], 1_700_000_000.0);

    let (status, one) = server
        .get_json(&format!("/_agl/traces/{}", trace_hex(0xab)))
        .await;
    assert_eq!(status, 200);
    let span = &one["spans"][0];
    assert_eq!(span["name"], "run.task");
    assert_eq!(span["span_id"], "0202020202020202");
    assert_eq!(span["parent_span_id"], "0101010101010101");
    assert_eq!(span["kind"], "INTERNAL");
    assert_eq!(span["attributes"]["agentops.span.kind"], "task");
    assert_eq!(span["resource"]["service.name"], "agentops");
    assert_eq!(one["spans"][1]["parent_span_id"], serde_json::Value::Null);

    let counters = server.counters().await;
    assert_eq!(counters["spans_received"], 2);
    assert_eq!(counters["trace_batches_auth_token"], 1);
    assert_eq!(counters["unmatched_requests"], 0);
    server.stop().await;
}

#[tokio::test]
async fn compressed_json_and_legacy_paths_are_accepted() {
    let server = spawn().await;
    let body = trace_request(1, &[("gz", 1, None)]).encode_to_vec();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).unwrap();
    let response = server
        .post_otlp(
            "/v1/traces",
            gz.finish().unwrap(),
            &[("content-encoding", "gzip")],
        )
        .await;
    assert_eq!(response.status(), 200);

    let body = trace_request(2, &[("deflated", 1, None)]).encode_to_vec();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    zlib.write_all(&body).unwrap();
    let response = server
        .post_otlp(
            "/traces",
            zlib.finish().unwrap(),
            &[("content-encoding", "deflate")],
        )
        .await;
    assert_eq!(response.status(), 200);

    // An exporter pointed at the bare base URL posts to `/`.
    let response = server
        .post_otlp(
            "/",
            trace_request(3, &[("root", 1, None)]).encode_to_vec(),
            &[],
        )
        .await;
    assert_eq!(response.status(), 200);

    let json_body = json!({"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace_hex(4), "spanId": "0404040404040404", "name": "from-json",
        "kind": 3, "startTimeUnixNano": "1700000000000000000",
        "attributes": [{"key": "n", "value": {"intValue": "7"}}]}]}]}]});
    let response = server
        .client
        .post(server.url("/v1/traces"))
        .json(&json_body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().await.unwrap(), "{}");

    let (_, traces) = server.get_json("/_agl/traces").await;
    assert_eq!(traces["traces"].as_array().unwrap().len(), 4);
    let (_, json_trace) = server
        .get_json(&format!("/_agl/traces/{}", trace_hex(4)))
        .await;
    assert_eq!(json_trace["spans"][0]["name"], "from-json");
    assert_eq!(json_trace["spans"][0]["kind"], "CLIENT");
    assert_eq!(json_trace["spans"][0]["attributes"]["n"], 7);
    let counters = server.counters().await;
    assert_eq!(counters["otlp_traces_requests_accepted"], 4);
    assert_eq!(counters["trace_batches_auth_none"], 4);
    server.stop().await;
}

#[tokio::test]
async fn otlp_metrics_and_logs_are_accepted() {
    let server = spawn().await;
    let response = server
        .client
        .post(server.url("/v1/metrics"))
        .json(&json!({"resourceMetrics": [{"scopeMetrics": [{"metrics": [{"name": "gen_ai.client.token.usage"}]}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let response = server.post_otlp("/v1/logs", Vec::new(), &[]).await;
    assert_eq!(response.status(), 200);
    let counters = server.counters().await;
    assert_eq!(counters["otlp_metrics_requests_accepted"], 1);
    assert_eq!(counters["metrics_received"], 1);
    assert_eq!(counters["otlp_logs_requests_accepted"], 1);
    server.stop().await;
}

#[tokio::test]
async fn log_uploads_take_both_body_forms_and_the_trace_id_header() {
    let server = spawn().await;
    // The header example of agentops-mock.md §6.1.
    let decimal = "253893983981091613277020357127345884047";
    let hex = format!("{:032x}", decimal.parse::<u128>().unwrap());
    let response = server
        .client
        .post(server.url("/v4/logs/upload/"))
        .header("Trace-Id", decimal)
        .json(&json!({"body": "hello from 0.4.21\n"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let first: serde_json::Value = response.json().await.unwrap();
    assert_eq!(first["size"], 18);
    let response = server
        .client
        .post(server.url("/v4/logs/upload/"))
        .header("Trace-Id", decimal)
        .json(&json!("hello from 0.4.13\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // The returned URL serves the text back.
    let text = server
        .client
        .get(first["url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(text, "hello from 0.4.21\n");

    let (_, logs) = server.get_json(&format!("/_agl/traces/{hex}/logs")).await;
    let logs = logs["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2);
    assert_eq!(logs[0]["body_form"], "object");
    assert_eq!(logs[1]["body_form"], "string");
    assert_eq!(logs[1]["text"], "hello from 0.4.13\n");
    assert_eq!(logs[0]["trace_id"], hex.as_str());
    assert_eq!(server.counters().await["log_uploads_accepted"], 2);
    server.stop().await;
}

#[tokio::test]
async fn object_uploads_answer_a_url_and_size() {
    let server = spawn().await;
    let (status, body) = server
        .post_json("/v4/objects/upload/", &json!({"body": "audio bytes"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["size"], 11);
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with(&server.base), "{url}");
    let fetched = server.client.get(url).send().await.unwrap();
    assert_eq!(fetched.text().await.unwrap(), "audio bytes");
    let (_, objects) = server.get_json("/_agl/objects").await;
    assert_eq!(objects["objects"].as_array().unwrap().len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_counted_and_remembered() {
    let server = spawn().await;
    let (status, body) = server.get_json("/v5/something/new").await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "no route for GET /v5/something/new");
    // The SDK's paths end in a slash; without it nothing matches and nothing redirects.
    let (status, _) = server
        .post_json("/v4/logs/upload", &json!({"body": "x"}))
        .await;
    assert_eq!(status, 404);
    let (status, body) = server.get_json("/v1/traces").await;
    assert_eq!(status, 405);
    assert_eq!(body["detail"], "method GET is not allowed on /v1/traces");

    let (_, view) = server.get_json("/_agl/counters").await;
    assert_eq!(view["counters"]["unmatched_requests"], 3);
    assert_eq!(view["recent_unmatched"][0]["path"], "/v5/something/new");
    let metrics = server.metrics().await;
    assert!(metrics.contains("agl_agentops_unmatched_requests_total 3"));
    server.stop().await;
}
