//! Bad input and failing neighbours: clear JSON errors, never a hang.

use std::time::{Duration, Instant};

use agl_vllm::double::{Double, DoubleConfig};
use axum::routing::post as route_post;
use serde_json::{Value, json};

use crate::helpers::{Proxy, Stack, Store, by_name, chat, client, eventually, post, proxy_args};

/// A port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn detail(body: &[u8]) -> String {
    let value: Value = serde_json::from_slice(body).unwrap_or_else(|_| {
        panic!("not json: {}", String::from_utf8_lossy(body));
    });
    assert_eq!(value["error"]["message"], value["detail"]);
    value["detail"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn malformed_requests_get_400_with_a_reason() {
    let stack = Stack::start().await;
    let url = format!("{}/v1/chat/completions", stack.proxy.url);
    let http = client();
    for (body, expected) in [
        ("{not json", "request body is not valid json"),
        ("[1, 2]", "request body must be a json object"),
        (
            r#"{"model": "agl-model", "stream": "yes", "messages": []}"#,
            "`stream` must be a boolean",
        ),
        ("", "request body is not valid json"),
    ] {
        let response = http
            .post(&url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let text = detail(&response.bytes().await.unwrap());
        assert!(text.contains(expected), "{text}");
    }
    assert!(
        stack.double.state().exchanges().is_empty(),
        "nothing reached vllm"
    );
    stack.stop().await;
}

#[tokio::test]
async fn unknown_rollout_path_forms_get_404() {
    let stack = Stack::start().await;
    for path in [
        "/rollout/ro-1/v1/chat/completions",
        "/rollout/ro-1/attempt/at-1",
        "/rollout/ro-1/attempt/at-1/",
        "/rollout//attempt/at-1/v1/chat/completions",
        "/rollout",
        "/rollout/ro-1/attempts/at-1/v1/chat/completions",
    ] {
        let (status, _, body) = post(&format!("{}{path}", stack.proxy.url), &chat("x")).await;
        assert_eq!(status, 404, "{path}");
        let text = detail(&body);
        assert!(
            text.contains("/rollout/{rollout_id}/attempt/{attempt_id}/v1/"),
            "{text}"
        );
    }
    // Percent-encoded ids are decoded before they go to the store and to vLLM.
    let (rollout, attempt) = stack.store.rollout().await;
    let (status, _, _) = post(
        &format!(
            "{}/rollout/{}/attempt/{}/v1/chat/completions",
            stack.proxy.url,
            rollout.replace('-', "%2D"),
            attempt
        ),
        &chat("encoded"),
    )
    .await;
    assert_eq!(status, 200);
    let exchange = stack.double.state().exchanges().pop().unwrap();
    assert_eq!(exchange.headers["x-rollout-id"], rollout);
    stack.store.wait_spans(&rollout, 3).await;
    stack.stop().await;
}

#[tokio::test]
async fn oversize_bodies_get_413() {
    let stack = Stack::start_with(|args| args.max_body_bytes = 1024).await;
    let big = chat(&"word ".repeat(400));
    let (status, _, body) = post(&format!("{}/v1/chat/completions", stack.proxy.url), &big).await;
    assert_eq!(status, 413);
    assert!(detail(&body).contains("exceeds 1024 bytes"));
    // Without a length up front (chunked), the limit still holds.
    let chunks = futures::stream::iter(
        (0..50).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from_static(&[b' '; 100]))),
    );
    let response = client()
        .post(format!("{}/v1/chat/completions", stack.proxy.url))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert!(stack.double.state().exchanges().is_empty());
    stack.stop().await;
}

#[tokio::test]
async fn a_missing_vllm_gets_a_quick_json_error_and_readiness_says_so() {
    let port = closed_port();
    let proxy = Proxy::start(&proxy_args(None), &format!("http://127.0.0.1:{port}")).await;
    let http = client();
    let readyz = http
        .get(format!("{}/readyz", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    let livez = http
        .get(format!("{}/livez", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(livez.status(), 200);
    let started = Instant::now();
    let (status, _, body) = post(&format!("{}/v1/chat/completions", proxy.url), &chat("hi")).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(status, 503);
    assert!(detail(&body).contains("is not ready yet"));
    let health = http
        .get(format!("{}/health", proxy.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 503);

    // vLLM comes up on that port: readiness follows.
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    let double = Double::start_on(listener, DoubleConfig::default()).unwrap();
    proxy.ready().await;
    let (status, _, _) = post(&format!("{}/v1/chat/completions", proxy.url), &chat("hi")).await;
    assert_eq!(status, 200);

    // And goes away again.
    double.stop().await;
    eventually(Duration::from_secs(10), "readiness to drop", || async {
        let r = client()
            .get(format!("{}/readyz", proxy.url))
            .send()
            .await
            .ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    proxy.stop().await;
}

#[tokio::test]
async fn vllm_errors_pass_through_and_are_recorded_as_errors() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    let url = format!("{}/chat/completions", stack.base(&rollout));
    let (status, _, body) = post(&url, &chat("[[error]]")).await;
    assert_eq!(status, 400);
    let exchange = stack.double.state().exchanges().pop().unwrap();
    assert_eq!(String::from_utf8(body).unwrap(), exchange.response);
    let mut unknown = chat("x");
    unknown["model"] = json!("no-such-model");
    let (status, _, _) = post(&url, &unknown).await;
    assert_eq!(status, 404);
    // An error in the middle of a stream still reaches the agent as sent.
    let mut broken = chat("[[stream-error]] a b c d");
    broken["stream"] = json!(true);
    let (status, _, body) = post(&url, &broken).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        stack.double.state().exchanges().pop().unwrap().response
    );

    let spans = stack.store.wait_spans(&rollout.0, 9).await;
    let requests = by_name(&spans, "litellm_request");
    let mut descriptions: Vec<String> = requests
        .iter()
        .map(|s| {
            assert_eq!(s["status"]["status_code"], "ERROR");
            s["status"]["description"].as_str().unwrap().to_owned()
        })
        .collect();
    descriptions.sort();
    assert_eq!(
        descriptions,
        [
            "The model `no-such-model` does not exist.",
            "double: generation failed",
            "double: the request asked for an error",
        ]
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_store_that_is_down_leaves_calls_served_but_unrecorded_unless_required() {
    let double = Double::start(DoubleConfig::default()).await.unwrap();
    let mut args = proxy_args(None);
    args.store_url = Some(format!("http://127.0.0.1:{}", closed_port()));
    args.store_timeout_seconds = 2.0;
    let proxy = Proxy::start(&args, &double.url()).await;
    proxy.ready().await;
    let url = format!(
        "{}/rollout/ro-1/attempt/at-1/v1/chat/completions",
        proxy.url
    );
    let (status, _, _) = post(&url, &chat("served anyway")).await;
    assert_eq!(status, 200);
    assert_eq!(
        proxy
            .metric("agl_vllm_untracked_requests_total{reason=\"store_error\"}")
            .await,
        1.0
    );
    let exchange = double.state().exchanges().pop().unwrap();
    assert_eq!(exchange.headers["x-rollout-id"], "ro-1");
    assert!(!exchange.headers.contains_key("x-sequence-id"));
    proxy.stop().await;

    args.require_store = true;
    let strict = Proxy::start(&args, &double.url()).await;
    strict.ready().await;
    let url = format!(
        "{}/rollout/ro-1/attempt/at-1/v1/chat/completions",
        strict.url
    );
    let (status, _, body) = post(&url, &chat("refused")).await;
    assert_eq!(status, 503);
    assert!(detail(&body).contains("could not issue a sequence id"));
    strict.stop().await;
    double.stop().await;
}

#[tokio::test]
async fn exports_are_retried_and_a_refused_call_does_not_sink_its_batch() {
    // A store stand-in: sequence ids, and a /v1/traces that fails twice with 503, then
    // refuses any batch holding rollout "ro-bad" with a 500 (as upstream's store does for
    // unknown rollouts) and accepts the rest.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
    let seq = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/v1/agl/spans/next",
            route_post({
                let seq = Arc::clone(&seq);
                move || {
                    let n = seq.fetch_add(1, Ordering::SeqCst) + 1;
                    async move { axum::Json(json!({"sequence_id": n})) }
                }
            }),
        )
        .route(
            "/v1/traces",
            route_post({
                let hits = Arc::clone(&hits);
                let accepted = Arc::clone(&accepted);
                move |body: bytes::Bytes| {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    let accepted = Arc::clone(&accepted);
                    async move {
                        use prost::Message as _;
                        let request = agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest::decode(body).unwrap();
                        let rollouts: Vec<String> = request
                            .resource_spans
                            .iter()
                            .map(|rs| {
                                agl_common::otlp::attributes_to_json(&rs.resource.as_ref().unwrap().attributes)
                                    ["agentlightning.rollout_id"]
                                    .as_str()
                                    .unwrap()
                                    .to_owned()
                            })
                            .collect();
                        if n < 2 {
                            return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                        }
                        if rollouts.iter().any(|r| r == "ro-bad") {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                        accepted.lock().extend(rollouts);
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let double = Double::start(DoubleConfig::default()).await.unwrap();
    let mut args = proxy_args(None);
    args.store_url = Some(store_url);
    args.export_interval_seconds = 1.0;
    args.export_attempts = 3;
    let proxy = Proxy::start(&args, &double.url()).await;
    proxy.ready().await;
    for rollout in ["ro-good", "ro-bad", "ro-fine"] {
        let url = format!(
            "{}/rollout/{rollout}/attempt/at-1/v1/chat/completions",
            proxy.url
        );
        assert_eq!(post(&url, &chat(rollout)).await.0, 200);
    }
    eventually(Duration::from_secs(15), "the export to settle", || async {
        (proxy.metric("agl_vllm_export_queue_depth").await == 0.0
            && proxy
                .metric("agl_vllm_export_spans_total{outcome=\"failed\"}")
                .await
                == 3.0)
            .then_some(())
    })
    .await;
    let mut good = accepted.lock().clone();
    good.sort();
    assert_eq!(good, ["ro-fine", "ro-good"]);
    assert_eq!(
        proxy
            .metric("agl_vllm_export_spans_total{outcome=\"exported\"}")
            .await,
        6.0
    );
    assert!(proxy.metric("agl_vllm_export_retries_total").await >= 2.0);
    proxy.stop().await;
    double.stop().await;
}

#[tokio::test]
async fn the_proxy_refuses_to_record_into_itself() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let mut args = proxy_args(None);
    args.port = port;
    args.store_url = Some(format!("http://127.0.0.1:{port}"));
    let err = match agl_vllm::App::build(&args, "http://127.0.0.1:1", None).await {
        Ok(_) => panic!("a store url on the proxy's own port was accepted"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("is this proxy itself"), "{err}");
    let store = Store::start().await;
    args.store_url = Some(store.url.clone());
    args.upstream_timeout_seconds = -1.0;
    assert!(
        agl_vllm::App::build(&args, "http://127.0.0.1:1", None)
            .await
            .is_err()
    );
    store.stop().await;
}
