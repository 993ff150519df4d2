//! Upstream v1's capturing proxy on the store: calls forwarded to a registered model server
//! (the vLLM test double) with the mode's rewrite, recorded as `model_request` events with
//! token ids (streams too), upstream's checks and codes in upstream's order, retries, and
//! the pause that drains calls before a weight sync.

use std::time::{Duration, Instant};

use agl_llm_proxy::double::{Double, DoubleConfig};
use agl_store::StoreArgs;
use agl_store::v1::proxy::V1ProxyArgs;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, spawn_with, str_of, test_args};

const MODEL: &str = "test-model";

async fn double() -> Double {
    Double::start(DoubleConfig {
        models: vec![MODEL.into()],
        ..DoubleConfig::default()
    })
    .await
    .expect("the double starts")
}

/// A store whose proxy serves MODEL, retrying quickly.
async fn store() -> TestApp {
    let args = StoreArgs {
        proxy: V1ProxyArgs {
            model_name: MODEL.into(),
            retry_backoff_seconds: 0.005,
            ..V1ProxyArgs::default()
        },
        ..test_args()
    };
    spawn_with(args, None).await
}

async fn register(app: &TestApp, endpoints: &[String], version: i64) {
    let models: Vec<Value> = endpoints
        .iter()
        .map(|e| json!({"model": MODEL, "endpoint": e, "version": version}))
        .collect();
    let r = app.post("/api/models", Value::Array(models.clone())).await;
    assert_eq!(
        expect_json(r, StatusCode::CREATED).await,
        Value::Array(models)
    );
}

async fn rollout(app: &TestApp) -> String {
    let r = app.post("/api/rollouts", json!([{"input": 1}])).await;
    let created = expect_json(r, StatusCode::CREATED).await;
    str_of(&created[0], "rollout_id").to_owned()
}

fn call_path(rid: &str, mode: &str, path: &str) -> String {
    format!("/proxy/rollout/{rid}/attempt/0/mode/{mode}/openai/v1/{path}")
}

fn chat(text: &str) -> Value {
    json!({"model": "anything", "temperature": 0.1,
           "messages": [{"role": "user", "content": text}]})
}

async fn events(app: &TestApp, rid: &str, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/rollouts/{rid}/events{query}")).await;
    expect_json(r, StatusCode::OK)
        .await
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until the rollout has `n` events (streams are recorded once they end).
async fn events_eventually(app: &TestApp, rid: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = events(app, rid, "").await;
        if found.len() >= n {
            return found;
        }
        assert!(Instant::now() < deadline, "{} of {n} events", found.len());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn calls_are_rewritten_forwarded_and_recorded_with_token_ids() {
    let model = double().await;
    let app = store().await;
    register(&app, &[format!("{}/v1", model.url())], 3).await;
    let rid = rollout(&app).await;

    let r = app
        .post(
            &call_path(&rid, "train", "chat/completions"),
            chat("two words"),
        )
        .await;
    let answer = expect_json(r, StatusCode::OK).await;
    let sent = model.state().exchanges().pop().unwrap();
    assert_eq!(sent.path, "/v1/chat/completions");
    assert_eq!(
        sent.body["model"], MODEL,
        "the configured model, whatever the agent asked"
    );
    assert_eq!(sent.body["temperature"], 1.0, "train temperature");
    assert_eq!(sent.body["return_token_ids"], true);
    assert_eq!(sent.body["logprobs"], true);
    assert_eq!(
        answer,
        serde_json::from_str::<Value>(&sent.response).unwrap()
    );

    let r = app
        .post(
            &call_path(&rid, "val", "completions"),
            json!({"prompt": "a b c"}),
        )
        .await;
    expect_json(r, StatusCode::OK).await;
    let sent = model.state().exchanges().pop().unwrap();
    assert_eq!(sent.path, "/v1/completions");
    assert_eq!(sent.body["temperature"], 0.7, "val temperature");
    assert!(
        sent.body.get("logprobs").is_none(),
        "no logprobs on val calls"
    );

    let recorded = events(&app, &rid, "").await;
    assert_eq!(recorded.len(), 2);
    let first = &recorded[0];
    assert_eq!(first["event_type"], "model_request");
    assert_eq!(first["attempt_id"], "0");
    let data = &first["data"];
    assert_eq!(data["model"], MODEL);
    assert_eq!(data["model_version"], 3);
    assert_eq!(
        data["server"],
        json!({"model": MODEL, "endpoint": format!("{}/v1", model.url()), "version": 3})
    );
    assert_eq!(data["http_status"], 200);
    assert_eq!(data["status"], "ok");
    assert_eq!(data["retry_count"], 0);
    assert_eq!(data["request"]["temperature"], 1.0, "the request as sent");
    assert_eq!(data["response"], answer);
    assert_eq!(data["finish_reason"], answer["choices"][0]["finish_reason"]);
    assert!(data["latency_ms"].as_f64().unwrap() > 0.0);

    let exchanges = model.state().exchanges();
    let triplets = events(&app, &rid, "?format=triplet").await;
    assert_eq!(triplets.len(), 2);
    assert_eq!(
        triplets[0]["data"]["prompt_token_ids"],
        json!(exchanges[0].prompt_token_ids)
    );
    assert_eq!(
        triplets[0]["data"]["response_token_ids"],
        json!(exchanges[0].token_ids[0])
    );
    assert!(triplets[0]["data"]["response_log_probs"].is_array());
    model.stop().await;
}

#[tokio::test]
async fn streams_pass_through_and_are_recorded_as_the_response_they_add_up_to() {
    let model = double().await;
    let app = store().await;
    register(&app, &[format!("{}/v1", model.url())], 0).await;
    let rid = rollout(&app).await;
    let mut body = chat("one two three four");
    body["stream"] = json!(true);
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), body)
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = r.text().await.unwrap();
    let sent = model.state().exchanges().pop().unwrap();
    assert_eq!(text, sent.response, "byte for byte");
    assert_eq!(sent.body["stream_options"]["include_usage"], true);

    let recorded = events_eventually(&app, &rid, 1).await;
    let response = &recorded[0]["data"]["response"];
    assert_eq!(
        response["choices"][0]["token_ids"],
        json!(sent.token_ids[0])
    );
    assert_eq!(response["prompt_token_ids"], json!(sent.prompt_token_ids));
    assert!(response["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    let triplets = events(&app, &rid, "?format=triplet").await;
    assert_eq!(
        triplets[0]["data"]["response_token_ids"],
        json!(sent.token_ids[0])
    );
    model.stop().await;
}

#[tokio::test]
async fn upstreams_checks_in_upstreams_order() {
    let model = double().await;
    let app = store().await;
    let rid = rollout(&app).await;
    let detail = |v: Value| v["detail"].as_str().unwrap_or_default().to_owned();

    let r = app
        .post(&call_path(&rid, "test", "chat/completions"), chat("x"))
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::NOT_FOUND).await),
        "Unsupported proxy mode: test"
    );
    let r = app
        .post(&call_path(&rid, "train", "embeddings"), chat("x"))
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::NOT_FOUND).await),
        "Unsupported upstream path: embeddings"
    );
    let r = app
        .post(&call_path("nope", "train", "chat/completions"), chat("x"))
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::NOT_FOUND).await),
        "Rollout not found: nope"
    );
    let r = app
        .post_raw(&call_path(&rid, "train", "chat/completions"), "{")
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::BAD_REQUEST).await),
        "Invalid JSON in request body"
    );
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), json!([1]))
        .await;
    expect_json(r, StatusCode::BAD_REQUEST).await;
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), chat("x"))
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::SERVICE_UNAVAILABLE).await),
        format!("No servers available for model '{MODEL}'")
    );

    // The model server's own errors pass through with its status, and are recorded.
    register(&app, &[format!("{}/v1", model.url())], 1).await;
    let r = app
        .post(
            &call_path(&rid, "train", "chat/completions"),
            chat("[[error]]"),
        )
        .await;
    let error = expect_json(r, StatusCode::BAD_REQUEST).await;
    assert!(
        error["error"].is_object() || error["message"].is_string(),
        "{error}"
    );
    let recorded = events(&app, &rid, "").await;
    assert_eq!(recorded[0]["data"]["status"], "error");
    assert_eq!(recorded[0]["data"]["http_status"], 400);
    // 5xx is retried, six tries in all, then answered as it came.
    let r = app
        .post(
            &call_path(&rid, "train", "chat/completions"),
            chat("[[error500]]"),
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let recorded = events(&app, &rid, "").await;
    assert_eq!(recorded[1]["data"]["retry_count"], 5);
    assert_eq!(model.state().exchanges().len(), 7);

    // A server nobody listens on: retried, then 502 and nothing recorded.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let r = app
        .client
        .delete(app.url("/api/models"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(r, StatusCode::OK).await,
        json!({"status": "ok"})
    );
    register(&app, &[format!("http://127.0.0.1:{port}/v1")], 1).await;
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), chat("x"))
        .await;
    assert_eq!(
        detail(expect_json(r, StatusCode::BAD_GATEWAY).await),
        "Upstream model server request failed"
    );
    assert_eq!(events(&app, &rid, "").await.len(), 2);
    model.stop().await;
}

#[tokio::test]
async fn a_pause_answers_429_until_resumed_and_counts_calls_in_flight() {
    let model = double().await;
    let app = store().await;
    register(&app, &[format!("{}/v1", model.url())], 0).await;
    let rid = rollout(&app).await;
    let state = expect_json(app.get("/proxy/state").await, StatusCode::OK).await;
    assert_eq!(
        state,
        json!({"paused": false, "retry_after_seconds": 5, "reason": null, "inflight": 0})
    );
    // A slow stream is in flight when the pause comes.
    let mut slow = chat("[[slow:100]] one two three");
    slow["stream"] = json!(true);
    let streaming = app
        .post(&call_path(&rid, "train", "chat/completions"), slow)
        .await;
    assert_eq!(streaming.status(), StatusCode::OK);
    let r = app
        .post(
            "/proxy/pause",
            json!({"retry_after_seconds": 3, "reason": "sync"}),
        )
        .await;
    assert_eq!(
        expect_json(r, StatusCode::OK).await,
        json!({"paused": true, "retry_after_seconds": 3, "reason": "sync", "inflight": 1})
    );
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), chat("x"))
        .await;
    assert_eq!(r.headers()["retry-after"], "3");
    assert_eq!(r.headers()["x-agl-paused"], "true");
    assert_eq!(
        expect_json(r, StatusCode::TOO_MANY_REQUESTS).await,
        json!({"error": "gateway paused", "reason": "sync"})
    );
    streaming.text().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = expect_json(app.get("/proxy/state").await, StatusCode::OK).await;
        if s["inflight"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "still in flight: {s}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let r = app.post("/proxy/resume", json!({})).await;
    assert_eq!(expect_json(r, StatusCode::OK).await["paused"], false);
    let r = app
        .post(&call_path(&rid, "train", "chat/completions"), chat("x"))
        .await;
    expect_json(r, StatusCode::OK).await;
    let r = app
        .post("/proxy/pause", json!({"retry_after_seconds": -1}))
        .await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    model.stop().await;
}

#[tokio::test]
async fn each_rollout_keeps_to_one_of_the_registered_servers() {
    let (a, b) = (double().await, double().await);
    let app = store().await;
    let endpoints = [format!("{}/v1", a.url()), format!("{}/v1", b.url())];
    register(&app, &endpoints, 0).await;
    for _ in 0..12 {
        let rid = rollout(&app).await;
        let before = (a.state().exchanges().len(), b.state().exchanges().len());
        for _ in 0..3 {
            let r = app
                .post(&call_path(&rid, "train", "chat/completions"), chat("x"))
                .await;
            expect_json(r, StatusCode::OK).await;
        }
        let after = (a.state().exchanges().len(), b.state().exchanges().len());
        let moved = (after.0 - before.0, after.1 - before.1);
        assert!(
            moved == (3, 0) || moved == (0, 3),
            "{rid} went to both: {moved:?}"
        );
    }
    assert!(!a.state().exchanges().is_empty() && !b.state().exchanges().is_empty());
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn an_agent_that_goes_away_cancels_its_call_and_leaves_no_event() {
    let model = double().await;
    let app = store().await;
    register(&app, &[format!("{}/v1", model.url())], 0).await;
    let rid = rollout(&app).await;
    // Eight tokens 200 ms apart: the agent gives up long before the answer.
    let impatient = agl_common::tls::http_client()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let r = impatient
        .post(app.url(&call_path(&rid, "train", "chat/completions")))
        .json(&chat(
            "[[slow:200]] one two three four five six seven eight",
        ))
        .send()
        .await;
    assert!(r.is_err(), "the agent timed out");
    // The call ends with the agent, long before the model server would have answered
    // (1.6 s): nothing in flight, and no event.
    let gave_up = Instant::now();
    loop {
        let state = expect_json(app.get("/proxy/state").await, StatusCode::OK).await;
        if state["inflight"] == 0 {
            break;
        }
        assert!(
            gave_up.elapsed() < Duration::from_millis(800),
            "the call outlived its agent"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the time the model server would have answered, still no event: an absence, so a
    // wait and not a readiness check.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(events(&app, &rid, "").await.is_empty());
    model.stop().await;
}
