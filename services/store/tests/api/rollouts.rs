//! Rollouts, attempts, the queue, retries, workers, resources and waiting.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{expect_json, spawn, str_of};

#[tokio::test]
async fn enqueue_then_dequeue_is_fifo_and_creates_attempts() {
    let app = spawn().await;
    let queued = app
        .enqueue(
            json!([{"input": {"n": 0}}, {"input": {"n": 1}, "mode": "train"}, {"input": null}]),
        )
        .await;
    assert_eq!(queued.len(), 3);
    for r in &queued {
        assert_eq!(r["status"], "queuing");
        assert!(
            r.get("attempt").is_none(),
            "queued rollouts carry no attempt key: {r}"
        );
        assert_eq!(r["metadata"], json!({}));
        assert_eq!(
            r["config"],
            json!({"timeout_seconds": null, "unresponsive_seconds": null, "max_attempts": 1, "retry_condition": []})
        );
        assert!(str_of(r, "rollout_id").starts_with("ro-") && str_of(r, "rollout_id").len() == 15);
    }
    assert_eq!(queued[1]["mode"], "train");
    assert_eq!(queued[2]["input"], Value::Null);

    let first = app.dequeue(2, Some("w1")).await;
    assert_eq!(first.len(), 2);
    assert_eq!(first[0]["rollout_id"], queued[0]["rollout_id"]);
    assert_eq!(first[1]["rollout_id"], queued[1]["rollout_id"]);
    for r in &first {
        assert_eq!(r["status"], "preparing");
        let a = &r["attempt"];
        assert_eq!(a["sequence_id"], 1);
        assert_eq!(a["status"], "preparing");
        assert_eq!(a["worker_id"], "w1");
        assert!(str_of(a, "attempt_id").starts_with("at-") && str_of(a, "attempt_id").len() == 11);
    }
    let rest = app.dequeue(5, None).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0]["rollout_id"], queued[2]["rollout_id"]);
    assert!(app.dequeue(1, None).await.is_empty());

    // A dequeue with no body claims one; non-positive limits claim nothing.
    app.enqueue(json!([{"input": 1}, {"input": 2}])).await;
    let r = app
        .client
        .post(app.url("/v1/agl/queues/rollouts/dequeue"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(r, StatusCode::OK)
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(app.dequeue(0, None).await.is_empty());
    assert_eq!(app.dequeue(-3, None).await.len(), 0);
    assert_eq!(app.dequeue(1, None).await.len(), 1);
}

#[tokio::test]
async fn concurrent_dequeuers_never_share_a_rollout() {
    let app = spawn().await;
    let items: Vec<Value> = (0..300).map(|i| json!({"input": i})).collect();
    let queued = app.enqueue(Value::Array(items)).await;
    let mut tasks = Vec::new();
    for w in 0..12 {
        let client = app.client.clone();
        let url = app.url("/v1/agl/queues/rollouts/dequeue");
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let r = client
                    .post(&url)
                    .json(&json!({"limit": 1 + w % 3, "worker_id": format!("w{w}")}))
                    .send()
                    .await
                    .unwrap();
                let list: Vec<Value> = r.json().await.unwrap();
                if list.is_empty() {
                    break got;
                }
                got.extend(
                    list.into_iter()
                        .map(|v| v["rollout_id"].as_str().unwrap().to_owned()),
                );
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 300, "every rollout handed out exactly once");
    assert_eq!(unique.len(), 300);
    let expected: HashSet<String> = queued
        .iter()
        .map(|r| str_of(r, "rollout_id").to_owned())
        .collect();
    assert_eq!(
        unique.into_iter().cloned().collect::<HashSet<_>>(),
        expected
    );
}

#[tokio::test]
async fn start_rollout_and_attempt_statuses_propagate_with_retries() {
    let app = spawn().await;
    let started = app
        .v3_post(
            "/rollouts",
            json!({"input": {"x": 1}, "worker_id": "w-start",
                   "config": {"timeout_seconds": 100, "max_attempts": 2, "retry_condition": ["failed"]}}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(started["status"], "preparing");
    assert_eq!(started["config"]["timeout_seconds"], json!(100.0));
    assert_eq!(started["attempt"]["start_time"], started["start_time"]);
    let id = str_of(&started, "rollout_id").to_owned();
    let worker = app.v3_get("/workers/w-start").await;
    assert_eq!(worker["status"], "busy");
    assert_eq!(worker["current_rollout_id"], id.as_str());

    // Nothing queued: start_rollout does not enqueue.
    assert!(app.dequeue(1, None).await.is_empty());

    let failed = app
        .update_attempt(&id, "latest", json!({"status": "failed"}))
        .await;
    assert_eq!(failed["status"], "failed");
    assert!(failed["end_time"].is_f64());
    let r = app.rollout(&id).await;
    assert_eq!(r["status"], "requeuing");
    assert_eq!(r["end_time"], Value::Null);
    let worker = app.v3_get("/workers/w-start").await;
    assert_eq!(worker["status"], "idle");
    assert_eq!(worker["current_rollout_id"], Value::Null);

    let again = app.dequeue(1, Some("w2")).await;
    assert_eq!(again[0]["rollout_id"], id.as_str());
    assert_eq!(again[0]["attempt"]["sequence_id"], 2);
    let aid = str_of(&again[0]["attempt"], "attempt_id").to_owned();
    app.update_attempt(
        &id,
        &aid,
        json!({"status": "succeeded", "metadata": {"score": 1}}),
    )
    .await;
    let r = app.rollout(&id).await;
    assert_eq!(r["status"], "succeeded");
    assert!(r["end_time"].is_f64());
    assert_eq!(r["attempt"]["attempt_id"], aid.as_str());
    assert_eq!(r["attempt"]["metadata"], json!({"score": 1}));

    // Updating a non-latest attempt never moves the rollout.
    let attempts = app.v3_get(&format!("/rollouts/{id}/attempts")).await;
    assert_eq!(attempts["total"], 2);
    let first_id = str_of(&attempts["items"][0], "attempt_id").to_owned();
    app.update_attempt(&id, &first_id, json!({"status": "running"}))
        .await;
    assert_eq!(app.rollout(&id).await["status"], "succeeded");

    // An explicit start_attempt makes attempt 3 regardless of max_attempts.
    let third = app
        .v3_post(
            &format!("/rollouts/{id}/attempts"),
            json!({"worker_id": "w3"}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(third["attempt"]["sequence_id"], 3);
    assert_eq!(third["status"], "preparing");
    let latest = app.v3_get(&format!("/rollouts/{id}/attempts/latest")).await;
    assert_eq!(latest["sequence_id"], 3);
}

#[tokio::test]
async fn failed_without_retry_and_cancel_then_requeue() {
    let app = spawn().await;
    let q = app.enqueue(json!([{"input": 1}])).await;
    let id = str_of(&q[0], "rollout_id").to_owned();
    app.dequeue(1, None).await;
    app.update_attempt(&id, "latest", json!({"status": "timeout"}))
        .await;
    assert_eq!(app.rollout(&id).await["status"], "failed");

    let cancelled = app
        .v3_post(
            &format!("/rollouts/{id}"),
            json!({"status": "cancelled"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled.get("attempt").is_none());
    let requeued = app
        .v3_post(
            &format!("/rollouts/{id}"),
            json!({"status": "queuing", "metadata": null, "mode": "val"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(requeued["metadata"], Value::Null);
    assert_eq!(requeued["mode"], "val");
    let d = app.dequeue(1, None).await;
    assert_eq!(d[0]["rollout_id"], id.as_str());
    assert_eq!(d[0]["attempt"]["sequence_id"], 2);
}

#[tokio::test]
async fn workers_follow_their_attempts_and_heartbeats() {
    let app = spawn().await;
    // A dequeue that claims nothing marks the worker idle.
    app.dequeue(1, Some("idle-one")).await;
    let w = app.v3_get("/workers/idle-one").await;
    assert_eq!(w["status"], "idle");
    assert!(w["last_dequeue_time"].is_f64());

    let hb = app
        .v3_post(
            "/workers/w9",
            json!({"heartbeat_stats": {"gpu": 0.5}}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(hb["status"], "unknown");
    assert_eq!(hb["heartbeat_stats"], json!({"gpu": 0.5}));
    assert!(hb["last_heartbeat_time"].is_f64());
    let bare = app
        .client
        .post(app.url("/v1/agl/workers/w9"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        expect_json(bare, StatusCode::OK).await["heartbeat_stats"],
        json!({"gpu": 0.5})
    );
    assert_eq!(app.v3_get("/workers/nobody").await, Value::Null);

    app.enqueue(json!([{"input": 1}])).await;
    app.dequeue(1, Some("w9")).await;
    let page = app
        .v3_post(
            "/workers/search",
            json!({"status_in": ["busy"]}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["total"], 1);
    assert_eq!(page["items"][0]["worker_id"], "w9");
    assert_eq!(page["items"][0]["heartbeat_stats"], json!({"gpu": 0.5}));
    let page = app
        .v3_get("/workers?worker_id_contains=idle&status_in=busy&filter_logic=or&sort_by=worker_id")
        .await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["worker_id"], "idle-one");
}

#[tokio::test]
async fn resources_are_versioned_and_default_into_rollouts() {
    let app = spawn().await;
    assert_eq!(app.v3_get("/resources/latest").await, Value::Null);
    let created = app
        .v3_post(
            "/resources",
            json!({"llm": {"resource_type": "llm", "endpoint": "http://x/v1", "model": "m"},
                   "prompt": {"resource_type": "prompt_template", "template": "hi {x}", "engine": "f-string"}}),
            StatusCode::CREATED,
        )
        .await;
    assert_eq!(created["version"], 1);
    assert_eq!(created["resources"]["llm"]["api_key"], Value::Null);
    assert_eq!(
        created["resources"]["llm"]["sampling_parameters"],
        json!({})
    );
    let id = str_of(&created, "resources_id").to_owned();
    assert!(id.starts_with("rs-"));

    let q = app
        .enqueue(json!([{"input": 1}, {"input": 2, "resources_id": "rs-unknown"}]))
        .await;
    assert_eq!(q[0]["resources_id"], id.as_str());
    assert_eq!(q[1]["resources_id"], "rs-unknown");

    let updated = app
        .v3_post(&format!("/resources/{id}"), json!({}), StatusCode::OK)
        .await;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["create_time"], created["create_time"]);
    let mine = app
        .v3_post("/resources/my-res", json!({}), StatusCode::OK)
        .await;
    assert_eq!(mine["version"], 1);
    assert_eq!(
        app.v3_get("/resources/latest").await["resources_id"],
        "my-res"
    );
    assert_eq!(app.v3_get(&format!("/resources/{id}")).await["version"], 2);
    assert_eq!(app.v3_get("/resources/nope").await, Value::Null);
    let list = app
        .v3_get("/resources?sort_by=version&sort_order=desc")
        .await;
    assert_eq!(list["total"], 2);
    assert_eq!(list["items"][0]["resources_id"], id.as_str());
    let list = app.v3_get("/resources?resources_id_contains=my").await;
    assert_eq!(list["total"], 1);

    let bad = app
        .post(
            "/v1/agl/resources",
            json!({"x": {"resource_type": "dataset"}}),
        )
        .await;
    let body = expect_json(bad, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"][0]["type"], "union_tag_invalid");
}

#[tokio::test]
async fn wait_for_rollouts_wakes_on_completion() {
    let app = spawn().await;
    let q = app.enqueue(json!([{"input": 1}, {"input": 2}])).await;
    let a = str_of(&q[0], "rollout_id").to_owned();
    let b = str_of(&q[1], "rollout_id").to_owned();

    let client = app.client.clone();
    let url = app.url("/v1/agl/waits/rollouts");
    let ids = json!({"rollout_ids": [b.clone(), "ro-unknown", a.clone()], "timeout": 30});
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let r = client.post(url).json(&ids).send().await.unwrap();
        expect_json(r, StatusCode::OK).await
    });
    // The waiter is registered once the store counts it.
    let deadline = Instant::now() + Duration::from_secs(5);
    while app.store.gauges().waiting_calls == 0 {
        assert!(Instant::now() < deadline, "wait call never registered");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.v3_post(
        &format!("/rollouts/{a}"),
        json!({"status": "succeeded"}),
        StatusCode::OK,
    )
    .await;
    app.v3_post(
        &format!("/rollouts/{b}"),
        json!({"status": "cancelled"}),
        StatusCode::OK,
    )
    .await;
    let done = waiter.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken, not timed out"
    );
    let ids: Vec<&str> = done
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "rollout_id"))
        .collect();
    assert_eq!(
        ids,
        [b.as_str(), a.as_str()],
        "finished rollouts in the order asked"
    );
    assert!(done[0].get("attempt").is_none());

    // timeout 0 returns the finished subset at once; a short timeout returns [] in time.
    let c = str_of(&app.enqueue(json!([{"input": 3}])).await[0], "rollout_id").to_owned();
    let now = app
        .v3_post(
            "/waits/rollouts",
            json!({"rollout_ids": [a.clone(), c.clone()], "timeout": 0}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(now.as_array().unwrap().len(), 1);
    let t = Instant::now();
    let none = app
        .v3_post(
            "/waits/rollouts",
            json!({"rollout_ids": [c], "timeout": 0.3}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(none, json!([]));
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn shutdown_answers_pending_waits() {
    let mut app = spawn().await;
    let id = str_of(&app.enqueue(json!([{"input": 1}])).await[0], "rollout_id").to_owned();
    let client = app.client.clone();
    let url = app.url("/v1/agl/waits/rollouts");
    let waiter = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"rollout_ids": [id], "timeout": null}))
            .send()
            .await
    });
    while app.store.gauges().waiting_calls == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.shutdown();
    let r = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("wait answered")
        .unwrap()
        .unwrap();
    assert_eq!(expect_json(r, StatusCode::OK).await, json!([]));
    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("server stopped")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn queries_filter_sort_and_paginate() {
    let app = spawn().await;
    let items: Vec<Value> = (0..7).map(|i| json!({"input": i})).collect();
    let q = app.enqueue(Value::Array(items)).await;
    app.dequeue(3, None).await;
    let page = app
        .v3_get("/rollouts?status_in=preparing&limit=2&offset=1")
        .await;
    assert_eq!(page["total"], 3);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["rollout_id"], q[1]["rollout_id"]);
    assert!(page["items"][0].get("attempt").is_some());

    let ids = [str_of(&q[0], "rollout_id"), str_of(&q[6], "rollout_id")];
    let page = app
        .v3_post(
            "/rollouts/search",
            json!({"rollout_id_in": ids, "sort_by": "input", "sort_order": "desc"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["total"], 2);
    assert_eq!(page["items"][0]["input"], 6);
    let page = app
        .v3_post(
            "/rollouts/search",
            json!({"rollout_id_in": []}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["total"], 0);
    let page = app
        .v3_post(
            "/rollouts/search",
            json!({"status_in": ["queuing"], "rollout_id_in": [ids[0]], "filter_logic": "or"}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(page["total"], 5);
    let page = app
        .v3_post("/rollouts/search", json!({"offset": 100}), StatusCode::OK)
        .await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(page["total"], 7);
    let stats = app.v3_get("/statistics").await;
    let backend = match std::env::var("AGL_TEST_STORAGE").as_deref() {
        Ok("sqlite") => "sqlite",
        Ok("postgres") => "postgres",
        _ => "memory",
    };
    assert_eq!(
        stats["backend"], backend,
        "the suite runs on the backend it was asked for"
    );
    assert_eq!(stats["total_rollouts"], 7);
    assert_eq!(stats["total_attempts"], 3);
    let u1 = stats["uptime"].as_f64().unwrap();
    let u2 = app.v3_get("/statistics").await["uptime"].as_f64().unwrap();
    assert!(u2 > u1);
}

/// Timestamps and other numbers a client sends come back bit for bit, from memory and from
/// the database alike: a trainer that compares a rollout's `start_time` or a resources'
/// `create_time` with an earlier answer must see the same float. These values are ones a
/// fast but inexact decimal parser reads one unit in the last place off.
#[tokio::test]
async fn numbers_round_trip_exactly() {
    let app = spawn().await;
    let r = app
        .post_raw(
            "/v1/agl/queues/rollouts/enqueue",
            r#"{"rollouts": [{"input": 1796385598.1537135,
                "metadata": {"t": [1796385598.1537135, 1796385598.1537719, 0.1, 1e-7]}}]}"#,
        )
        .await;
    let created = expect_json(r, StatusCode::CREATED).await;
    let rid = str_of(&created[0], "rollout_id").to_owned();
    let text = app
        .get(&format!("/v1/agl/rollouts/{rid}"))
        .await
        .text()
        .await
        .expect("body");
    for literal in [
        r#""input":1796385598.1537135"#,
        r#""t":[1796385598.1537135,1796385598.1537719,0.1,1e-7]"#,
    ] {
        assert!(text.contains(literal), "{literal} not in {text}");
    }
}
