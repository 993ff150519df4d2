//! The read-only inspection API, retention caps, reset, and the operations routes.

use prost::Message as _;
use serde_json::json;

use crate::helpers::{spawn, spawn_with, test_args, trace_hex, trace_request};

#[tokio::test]
async fn spans_can_be_filtered_by_trace_and_name() {
    let server = spawn().await;
    for trace in [1u8, 2] {
        let body =
            trace_request(trace, &[("a.tool", 2, Some(1)), ("b.agent", 1, None)]).encode_to_vec();
        assert_eq!(
            server.post_otlp("/v1/traces", body, &[]).await.status(),
            200
        );
    }
    let (_, all) = server.get_json("/_agl/spans").await;
    assert_eq!(all["spans"].as_array().unwrap().len(), 4);
    let (_, named) = server.get_json("/_agl/spans?name=a.tool").await;
    assert_eq!(named["spans"].as_array().unwrap().len(), 2);
    let (_, one) = server
        .get_json(&format!(
            "/_agl/spans?trace_id={}&name=b.agent",
            trace_hex(2)
        ))
        .await;
    assert_eq!(one["spans"].as_array().unwrap().len(), 1);
    assert_eq!(one["spans"][0]["batch"], 2);
    let (_, limited) = server.get_json("/_agl/spans?limit=1").await;
    assert_eq!(limited["spans"][0]["trace_id"], trace_hex(2));
    server.stop().await;
}

#[tokio::test]
async fn the_oldest_spans_are_dropped_past_the_cap_and_counted() {
    let server = spawn_with(agl_agentops::AgentopsArgs {
        max_spans: 3,
        ..test_args()
    })
    .await;
    for trace in 1u8..=4 {
        let body = trace_request(trace, &[("s", 1, None)]).encode_to_vec();
        server.post_otlp("/v1/traces", body, &[]).await;
    }
    let (_, traces) = server.get_json("/_agl/traces").await;
    let ids: Vec<&str> = traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [trace_hex(2), trace_hex(3), trace_hex(4)]);
    let counters = server.counters().await;
    assert_eq!(counters["spans_evicted"], 1);
    assert_eq!(counters["spans_received"], 4);
    let metrics = server.metrics().await;
    assert!(metrics.contains("agl_agentops_evicted_total{kind=\"spans\"} 1"));
    assert!(metrics.contains("agl_agentops_held{kind=\"spans\"} 3"));
    server.stop().await;
}

#[tokio::test]
async fn reset_empties_the_view_but_not_prometheus() {
    let server = spawn().await;
    server.token().await;
    let body = trace_request(9, &[("s", 1, None)]).encode_to_vec();
    server.post_otlp("/v1/traces", body, &[]).await;
    server
        .post_json("/v4/logs/upload/", &json!({"body": "x"}))
        .await;
    let (status, _) = server.post_json("/_agl/reset", &json!({})).await;
    assert_eq!(status, 200);
    let (_, traces) = server.get_json("/_agl/traces").await;
    assert!(traces["traces"].as_array().unwrap().is_empty());
    let (_, view) = server.get_json("/_agl/counters").await;
    assert_eq!(view["counters"]["auth_requests"], 0);
    assert_eq!(view["counters"]["spans_received"], 0);
    assert_eq!(
        view["held"],
        json!({"traces": 0, "spans": 0, "logs": 0, "objects": 0})
    );
    let metrics = server.metrics().await;
    assert!(metrics.contains("agl_agentops_auth_requests_total 1"));
    server.stop().await;
}

#[tokio::test]
async fn health_readiness_metrics_and_the_session_link() {
    let server = spawn().await;
    let (status, health) = server.get_json("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert!(health["counters"]["unmatched_requests"].is_number());
    let (status, _) = server.get_json("/healthz").await;
    assert_eq!(status, 200);
    let (status, ready) = server.get_json("/readyz").await;
    assert_eq!((status, ready["status"].as_str()), (200, Some("ready")));
    let (status, _) = server.get_json("/livez").await;
    assert_eq!(status, 200);

    let hex = trace_hex(5);
    let response = server
        .client
        .get(server.url(&format!("/sessions?trace_id={hex}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 307);
    assert_eq!(response.headers()["location"], format!("/ui/traces/{hex}"));

    let metrics = server.metrics().await;
    assert!(
        metrics.contains("http_requests_total{method=\"GET\",route=\"/health\",status=\"200\"} 1")
    );
    assert!(metrics.contains("agl_build_info{"));
    server.stop().await;
}
