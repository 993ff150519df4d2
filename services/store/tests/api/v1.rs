//! Upstream v1's `agl-server` API (`/healthz`, `/api/rollouts…`, events): shapes, the v1
//! state machine, idempotent creation, the events of the controller's attempt, the triplet
//! projection, and how v1 rollouts look to the 0.3 API on the same store.

use std::sync::Arc;

use agl_store::StoreArgs;
use agl_store::clock::ManualClock;
use agl_store::server::Storage;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TempFile, TestApp, expect_json, spawn, spawn_with, str_of, test_args};

async fn create(app: &TestApp, items: Value) -> Vec<Value> {
    let r = app.post("/api/rollouts", items).await;
    expect_json(r, StatusCode::CREATED)
        .await
        .as_array()
        .expect("a list")
        .clone()
}

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.client
        .patch(app.url(&format!("/api/rollouts/{id}")))
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

async fn patched(app: &TestApp, id: &str, body: Value) -> Value {
    expect_json(patch(app, id, body).await, StatusCode::OK).await
}

async fn event(app: &TestApp, id: &str, attempt: &str, body: Value) -> Value {
    let r = app
        .post(
            &format!("/api/rollouts/{id}/attempt/{attempt}/events"),
            body,
        )
        .await;
    expect_json(r, StatusCode::OK).await
}

async fn events(app: &TestApp, id: &str, query: &str) -> Vec<Value> {
    let r = app.get(&format!("/api/rollouts/{id}/events{query}")).await;
    expect_json(r, StatusCode::OK)
        .await
        .as_array()
        .expect("a list")
        .clone()
}

fn ids(rollouts: &[Value]) -> Vec<&str> {
    rollouts.iter().map(|r| str_of(r, "rollout_id")).collect()
}

#[tokio::test]
async fn rollouts_are_created_listed_and_read_in_upstreams_shape() {
    let app = spawn().await;
    let health = expect_json(app.get("/healthz").await, StatusCode::OK).await;
    assert_eq!(health, json!({"status": "ok"}));

    let created = create(
        &app,
        json!([
            {"input": {"data_id": "d1"}},
            {"input": 2, "is_train": false, "rollout_id": "mine-1",
             "metadata": {"extra": "x", "batch_idx": 3},
             "config": {"timeout_seconds": 60, "unknown": 1,
                        "local": {"agent_class": "pkg.Agent", "env_map": {"K": "v"}}}}
        ]),
    )
    .await;
    let first = &created[0];
    assert!(!str_of(first, "rollout_id").is_empty());
    assert_eq!(first["input"], json!({"data_id": "d1"}));
    assert_eq!(first["is_train"], true);
    assert_eq!(
        first["config"],
        json!({"timeout_seconds": 3600, "local": null, "k8s": null})
    );
    assert_eq!(
        first["metadata"],
        json!({"batch_idx": null, "sample_idx_in_batch": null})
    );
    let status = &first["status"];
    assert_eq!(status["state"], "queuing");
    assert_eq!(status["version"], 1);
    for key in ["k8s_job_name", "last_attempt_id", "error_message"] {
        assert_eq!(status[key], Value::Null, "{key}");
    }
    assert_eq!(status["created_at"], status["updated_at"]);

    let mine = &created[1];
    assert_eq!(mine["rollout_id"], "mine-1");
    assert_eq!(mine["is_train"], false);
    assert_eq!(
        mine["config"],
        json!({"timeout_seconds": 60, "local": {"agent_class": "pkg.Agent", "env_map": {"K": "v"}}, "k8s": null})
    );
    assert_eq!(
        mine["metadata"],
        json!({"batch_idx": 3, "sample_idx_in_batch": null, "extra": "x"})
    );
    // The declared keys come first, as pydantic dumps them.
    let text = app.get("/api/rollouts/mine-1").await.text().await.unwrap();
    assert!(
        text.contains(r#""metadata":{"batch_idx":3,"sample_idx_in_batch":null,"extra":"x"}"#),
        "{text}"
    );

    // A known id answers the stored rollout unchanged: creation can be retried.
    let again = create(
        &app,
        json!([{"input": "changed", "rollout_id": "mine-1"}, {"input": 3}]),
    )
    .await;
    assert_eq!(again[0], *mine);
    assert_ne!(again[1]["rollout_id"], mine["rollout_id"]);

    let all = expect_json(
        app.get("/api/rollouts?state_in=queuing&state_in=running")
            .await,
        StatusCode::OK,
    )
    .await;
    let all = all.as_array().unwrap();
    assert_eq!(
        ids(all),
        [
            str_of(first, "rollout_id"),
            "mine-1",
            str_of(&again[1], "rollout_id")
        ],
        "creation order"
    );
    let one = expect_json(
        app.get("/api/rollouts?state_in=queuing&limit=1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(ids(one.as_array().unwrap()), [str_of(first, "rollout_id")]);
    let but_last = expect_json(
        app.get("/api/rollouts?state_in=queuing&limit=-1").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(but_last.as_array().unwrap().len(), 2, "a Python slice");
    let none = expect_json(
        app.get("/api/rollouts?state_in=succeeded").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(none, json!([]));

    let detail = expect_json(app.get("/api/rollouts/mine-1").await, StatusCode::OK).await;
    assert_eq!(detail, json!({"rollout": mine, "attempts": []}));
    let missing = expect_json(app.get("/api/rollouts/nope").await, StatusCode::NOT_FOUND).await;
    assert_eq!(missing, json!({"detail": "Rollout not found: nope"}));
}

#[tokio::test]
async fn bad_requests_get_fastapis_answers() {
    let app = spawn().await;
    let r = app.get("/api/rollouts").await;
    let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(body["detail"][0]["loc"], json!(["query", "state_in"]));
    let r = app.get("/api/rollouts?state_in=cancelled").await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = app.get("/api/rollouts?state_in=queuing&limit=x").await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;

    for bad in [
        json!({"input": 1}),
        json!([{"is_train": true}]),
        json!([{"input": 1, "is_train": "maybe"}]),
        json!([{"input": 1, "config": {"timeout_seconds": "long"}}]),
        json!([{"input": 1, "metadata": {"batch_idx": "first"}}]),
        json!([{"input": 1, "rollout_id": "a/b"}]),
    ] {
        let r = app.post("/api/rollouts", bad.clone()).await;
        let body = expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
        assert!(body["detail"].is_array(), "{bad}: {body}");
    }
    let r = app.post_raw("/api/rollouts", "[{").await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;

    let id = str_of(&create(&app, json!([{"input": 1}])).await[0], "rollout_id").to_owned();
    for bad in [
        json!({"status": {"state": "cancelled"}}),
        json!({"status": {"cancel_requested": true}}),
        json!({"status": {"k8s_job_name": 5}}),
    ] {
        let r = patch(&app, &id, bad.clone()).await;
        expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    }
    let r = patch(&app, "nope", json!({"status": {"state": "running"}})).await;
    let body = expect_json(r, StatusCode::NOT_FOUND).await;
    assert_eq!(body, json!({"detail": "Rollout not found: nope"}));
    let r = app
        .post(
            "/api/rollouts/nope/attempt/0/events",
            json!({"event_type": "x"}),
        )
        .await;
    expect_json(r, StatusCode::NOT_FOUND).await;
    let r = app
        .post(
            &format!("/api/rollouts/{id}/attempt/0/events"),
            json!({"data": {}}),
        )
        .await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = app
        .post(
            &format!("/api/rollouts/{id}/attempt/0/events"),
            json!({"event_type": "x", "data": [1]}),
        )
        .await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    let r = app.get("/api/rollouts/nope/events").await;
    expect_json(r, StatusCode::NOT_FOUND).await;
}

#[tokio::test]
async fn the_state_machine_is_upstreams_and_every_patch_bumps_the_version() {
    let app = spawn().await;
    let id = str_of(&create(&app, json!([{"input": 1}])).await[0], "rollout_id").to_owned();

    // Nothing set: the rollout as it is, no bump.
    let same = patched(&app, &id, json!({})).await;
    assert_eq!(same["status"]["version"], 1);
    let same = patched(&app, &id, json!({"status": {}})).await;
    assert_eq!(same["status"]["version"], 1);

    let r = patch(&app, &id, json!({"status": {"state": "succeeded"}})).await;
    let body = expect_json(r, StatusCode::CONFLICT).await;
    assert_eq!(
        body,
        json!({"detail": format!("Rollout {id}: cannot transition queuing -> succeeded")})
    );
    let r = patch(&app, &id, json!({"status": {"state": "queuing"}})).await;
    expect_json(r, StatusCode::CONFLICT).await;

    let running = patched(
        &app,
        &id,
        json!({"status": {"state": "running", "k8s_job_name": "agl-rollout-x", "last_attempt_id": "0"}}),
    )
    .await;
    let status = &running["status"];
    assert_eq!(status["state"], "running");
    assert_eq!(status["k8s_job_name"], "agl-rollout-x");
    assert_eq!(status["last_attempt_id"], "0");
    assert_eq!(status["version"], 2);
    assert!(status["updated_at"].as_f64() >= status["created_at"].as_f64());

    // A field set to null is set; the others stay.
    let cleared = patched(&app, &id, json!({"status": {"k8s_job_name": null}})).await;
    assert_eq!(cleared["status"]["k8s_job_name"], Value::Null);
    assert_eq!(cleared["status"]["last_attempt_id"], "0");
    assert_eq!(cleared["status"]["version"], 3);

    let done = patched(
        &app,
        &id,
        json!({"status": {"state": "failed", "error_message": "Job disappeared"}}),
    )
    .await;
    assert_eq!(done["status"]["state"], "failed");
    assert_eq!(done["status"]["error_message"], "Job disappeared");
    for to in ["succeeded", "failed", "running", "queuing"] {
        let r = patch(&app, &id, json!({"status": {"state": to}})).await;
        expect_json(r, StatusCode::CONFLICT).await;
    }
    // Terminal is final for the state only.
    let noted = patched(&app, &id, json!({"status": {"error_message": "later"}})).await;
    assert_eq!(noted["status"]["error_message"], "later");
    assert_eq!(noted["status"]["version"], 5);

    // The same rollout through the 0.3 API: failed, with its end time and v1's fields.
    let view = app.rollout(&id).await;
    assert_eq!(view["status"], "failed");
    assert!(view["end_time"].is_f64());
    assert_eq!(view["mode"], "train");
    assert_eq!(view["v1"]["error_message"], "later");
}

#[tokio::test]
async fn events_belong_to_the_controllers_attempt_and_project_to_triplets() {
    let app = spawn().await;
    let id = str_of(&create(&app, json!([{"input": 1}])).await[0], "rollout_id").to_owned();
    let model_request = |prompt: Value, response: Value, extra: Value| {
        let mut data = json!({
            "model": "m", "model_version": 3,
            "request": {"messages": [{"role": "user", "content": "hi"}]},
            "response": {
                "prompt_token_ids": prompt,
                "choices": [{"token_ids": response, "logprobs": {"content": [{"logprob": -0.5}]},
                             "message": {"role": "assistant", "content": "yo"}}],
            },
            "server": {"model": "m", "endpoint": "http://127.0.0.1:9/v1", "version": 3},
            "latency_ms": 12.5, "http_status": 200, "status": "ok", "retry_count": 0,
        });
        for (k, v) in extra.as_object().unwrap() {
            data[k] = v.clone();
        }
        json!({"event_type": "model_request", "data": data})
    };
    let first = event(
        &app,
        &id,
        "0",
        model_request(json!([1, 2]), json!([3]), json!({"routed_experts": [[7]]})),
    )
    .await;
    assert_eq!(first["event_type"], "model_request");
    assert_eq!(first["rollout_id"], id.as_str());
    assert_eq!(first["attempt_id"], "0");
    assert!(first["timestamp"].is_f64());
    assert_eq!(first["data"]["routed_experts"], json!([[7]]));
    // The next request extends the first one's context: the first one's experts go.
    event(
        &app,
        &id,
        "0",
        model_request(
            json!([1, 2, 3, 4]),
            json!([5]),
            json!({"routed_experts": [[8]]}),
        ),
    )
    .await;
    // The same prompt again: the triplets keep only the last of the two.
    event(
        &app,
        &id,
        "0",
        model_request(json!([1, 2, 3, 4]), json!([6]), json!({})),
    )
    .await;
    event(
        &app,
        &id,
        "0",
        json!({"event_type": "reward", "data": {"value": 1.0, "message": "ok", "source": "agent"}}),
    )
    .await;
    event(&app, &id, "0", json!({"event_type": "note"})).await;
    // Another attempt's event is not shown until the controller names that attempt.
    event(
        &app,
        &id,
        "1",
        json!({"event_type": "reward", "data": {"value": 0.0}}),
    )
    .await;

    let raw = events(&app, &id, "").await;
    let types: Vec<&str> = raw.iter().map(|e| str_of(e, "event_type")).collect();
    assert_eq!(
        types,
        [
            "model_request",
            "model_request",
            "model_request",
            "reward",
            "note"
        ]
    );
    assert!(raw[0]["data"].get("routed_experts").is_none(), "superseded");
    assert_eq!(raw[1]["data"]["routed_experts"], json!([[8]]));
    assert_eq!(raw[4]["data"], json!({}));
    let rewards = events(&app, &id, "?event_type=reward").await;
    assert_eq!(rewards.len(), 1);
    assert_eq!(rewards[0]["data"]["message"], "ok");
    let no_routes = events(&app, &id, "?include_routed_experts=false").await;
    assert!(no_routes[1]["data"].get("routed_experts").is_none());

    let triplets = events(&app, &id, "?format=triplet").await;
    let types: Vec<&str> = triplets.iter().map(|e| str_of(e, "event_type")).collect();
    assert_eq!(types, ["model_request", "model_request", "reward", "note"]);
    assert_eq!(
        triplets[0]["data"],
        json!({"prompt_token_ids": [1, 2], "response_token_ids": [3],
               "response_log_probs": [-0.5], "server": {"model": "m", "version": 3},
               "http_status": 200, "status": "ok"})
    );
    assert_eq!(
        triplets[1]["data"]["response_token_ids"],
        json!([6]),
        "the last one kept"
    );
    assert_eq!(
        triplets[2]["data"],
        json!({"value": 1.0, "source": "agent"})
    );

    let detail = expect_json(
        app.get(&format!("/api/rollouts/{id}")).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(detail["attempts"], json!(["0", "1"]));
    patched(&app, &id, json!({"status": {"last_attempt_id": "1"}})).await;
    let other = events(&app, &id, "").await;
    assert_eq!(other.len(), 1);
    assert_eq!(other[0]["data"], json!({"value": 0.0}));

    // To the 0.3 API the events are spans of the rollout, in order.
    let spans = app.v3_get(&format!("/spans?rollout_id={id}")).await;
    let names: Vec<&str> = spans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| str_of(s, "name"))
        .collect();
    assert_eq!(
        names,
        [
            "model_request",
            "model_request",
            "model_request",
            "reward",
            "note",
            "reward"
        ]
    );
}

#[tokio::test]
async fn a_0_3_waiter_wakes_when_a_v1_controller_finishes_the_rollout() {
    let app = Arc::new(spawn().await);
    let id = str_of(&create(&app, json!([{"input": 1}])).await[0], "rollout_id").to_owned();
    patched(&app, &id, json!({"status": {"state": "running"}})).await;
    let waiter = {
        let app = Arc::clone(&app);
        let id = id.clone();
        tokio::spawn(async move {
            app.v3_post(
                "/waits/rollouts",
                json!({"rollout_ids": [id], "timeout": 30}),
                StatusCode::OK,
            )
            .await
        })
    };
    // The waiter is registered once the store counts it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app.store.gauges().waiting_calls == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "wait call never registered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    patched(&app, &id, json!({"status": {"state": "succeeded"}})).await;
    let done = waiter.await.unwrap();
    assert_eq!(done[0]["status"], "succeeded");
}

#[tokio::test]
async fn v1_rollouts_and_events_survive_a_restart_on_sqlite() {
    let file = TempFile(std::env::temp_dir().join(format!("agl-v1-{}.db", std::process::id())));
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let args = || StoreArgs {
        storage: Storage::Sqlite(file.0.clone()),
        cache_mib: 0,
        ..test_args()
    };
    let mut app = spawn_with(args(), Some(Arc::clone(&clock))).await;
    let created = create(
        &app,
        json!([{"input": 1, "rollout_id": "keep"}, {"input": 2}]),
    )
    .await;
    patched(
        &app,
        "keep",
        json!({"status": {"state": "running", "last_attempt_id": "0"}}),
    )
    .await;
    event(
        &app,
        "keep",
        "0",
        json!({"event_type": "reward", "data": {"value": 0.5}}),
    )
    .await;
    let finished = patched(&app, "keep", json!({"status": {"state": "succeeded"}})).await;
    let before = events(&app, "keep", "").await;
    // A finished rollout read back from the file (it left memory) is deleted from the file.
    create(&app, json!([{"input": 3, "rollout_id": "drop"}])).await;
    event(&app, "drop", "0", json!({"event_type": "note"})).await;
    patched(&app, "drop", json!({"status": {"state": "failed"}})).await;
    app.store.watchdog_tick().await;
    let r = app
        .client
        .delete(app.url("/api/rollouts/drop"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    app.shutdown();
    app.server.take().unwrap().await.unwrap().unwrap();
    // The file's lock goes with the store.
    drop(app);

    let app = spawn_with(args(), Some(clock)).await;
    let detail = expect_json(app.get("/api/rollouts/keep").await, StatusCode::OK).await;
    assert_eq!(detail["rollout"], finished);
    assert_eq!(detail["attempts"], json!(["0"]));
    assert_eq!(events(&app, "keep", "").await, before);
    let queued = expect_json(
        app.get("/api/rollouts?state_in=queuing").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(
        ids(queued.as_array().unwrap()),
        [str_of(&created[1], "rollout_id")]
    );
    let r = patch(&app, "keep", json!({"status": {"state": "failed"}})).await;
    expect_json(r, StatusCode::CONFLICT).await;
    let r = app.get("/api/rollouts/drop").await;
    expect_json(r, StatusCode::NOT_FOUND).await;
    let conn = rusqlite::Connection::open(&file.0).unwrap();
    for table in ["rollouts", "spans", "span_packs", "sequences"] {
        let n: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {table} WHERE rollout_id = 'drop'"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 0, "{table}");
    }
}

#[tokio::test]
async fn delete_removes_a_rollout_with_its_events_and_is_idempotent() {
    let app = spawn().await;
    let before = app.v3_get("/statistics").await;
    create(
        &app,
        json!([{"input": 1, "rollout_id": "gone"}, {"input": 2, "rollout_id": "kept"}]),
    )
    .await;
    patched(&app, "gone", json!({"status": {"state": "running"}})).await;
    for value in [0.25, 0.5] {
        event(
            &app,
            "gone",
            "0",
            json!({"event_type": "reward", "data": {"value": value}}),
        )
        .await;
    }
    event(
        &app,
        "kept",
        "0",
        json!({"event_type": "reward", "data": {"value": 1}}),
    )
    .await;
    patched(&app, "gone", json!({"status": {"state": "succeeded"}})).await;

    let r = app
        .client
        .delete(app.url("/api/rollouts/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = app.get("/api/rollouts/gone").await;
    expect_json(r, StatusCode::NOT_FOUND).await;
    let r = app.get("/api/rollouts/gone/events").await;
    expect_json(r, StatusCode::NOT_FOUND).await;
    let r = app
        .client
        .delete(app.url("/api/rollouts/gone"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::NO_CONTENT,
        "a missing id is a no-op"
    );
    let r = app
        .client
        .delete(app.url("/api/rollouts/never"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // The totals drop by what went; the other rollout is untouched.
    let after = app.v3_get("/statistics").await;
    let total = |s: &Value, key: &str| s[key].as_i64().unwrap();
    assert_eq!(
        total(&after, "total_rollouts"),
        total(&before, "total_rollouts") + 1
    );
    assert_eq!(
        total(&after, "total_spans"),
        total(&before, "total_spans") + 1
    );
    assert_eq!(events(&app, "kept", "").await.len(), 1);
    let spans = app.v3_get("/spans?rollout_id=gone").await;
    assert_eq!(spans["items"], json!([]));

    // The id can be used again, from nothing.
    let again = create(&app, json!([{"input": 3, "rollout_id": "gone"}])).await;
    assert_eq!(again[0]["input"], 3);
    assert_eq!(again[0]["status"]["version"], 1);
    assert_eq!(events(&app, "gone", "").await, Vec::<Value>::new());
}

async fn terminal_page(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/api/rollouts/terminal{query}")).await;
    expect_json(r, StatusCode::OK).await
}

#[tokio::test]
async fn the_completion_log_is_a_cursor_in_completion_order() {
    let app = spawn().await;
    let created = create(
        &app,
        json!([
            {"input": {"data_id": "d1"}},
            {"input": {"instance_id": 7}, "is_train": false},
            {"input": "plain"}
        ]),
    )
    .await;
    let id = |i: usize| str_of(&created[i], "rollout_id").to_owned();
    assert_eq!(
        terminal_page(&app, "").await,
        json!({"items": [], "next_after": 0, "total_terminal": 0})
    );
    patched(&app, &id(1), json!({"status": {"state": "running"}})).await;
    patched(&app, &id(1), json!({"status": {"state": "succeeded"}})).await;
    patched(&app, &id(0), json!({"status": {"state": "failed"}})).await;
    // A patch that is not a state change adds nothing.
    patched(&app, &id(0), json!({"status": {"error_message": "x"}})).await;

    let all = terminal_page(&app, "?after=0").await;
    assert_eq!(
        all,
        json!({"items": [
            {"rollout_id": id(1), "state": "succeeded", "data_id": "7", "is_train": false},
            {"rollout_id": id(0), "state": "failed", "data_id": "d1", "is_train": true}
        ], "next_after": 2, "total_terminal": 2})
    );
    let first = terminal_page(&app, "?limit=1").await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    assert_eq!(first["next_after"], 1);
    let rest = terminal_page(&app, "?after=1&limit=0").await;
    assert_eq!(
        rest["items"][0]["rollout_id"],
        id(0).as_str(),
        "limit 0 reads as 1"
    );
    assert_eq!(rest["next_after"], 2);
    let beyond = terminal_page(&app, "?after=9").await;
    assert_eq!(
        beyond,
        json!({"items": [], "next_after": 9, "total_terminal": 2})
    );

    // A deleted rollout keeps its place in the count, not in the items.
    let r = app
        .client
        .delete(app.url(&format!("/api/rollouts/{}", id(1))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let after_delete = terminal_page(&app, "?after=-5").await;
    assert_eq!(after_delete["total_terminal"], 2);
    assert_eq!(after_delete["next_after"], 2);
    assert_eq!(after_delete["items"].as_array().unwrap().len(), 1);
    let r = app.get("/api/rollouts/terminal?after=x").await;
    expect_json(r, StatusCode::UNPROCESSABLE_ENTITY).await;
}
