//! The SQLite file as the authority for history: finished rollouts leave memory once they
//! are durable, and everything about them reads back from the file exactly as it read while
//! it was held; changing one brings it back; a restart reads only the live part.

use std::sync::Arc;

use agl_store::StoreArgs;
use agl_store::clock::ManualClock;
use agl_store::server::Storage;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    TempFile, TestApp, expect_json, fresh_database, item_ids, span, spawn_with, str_of, test_args,
};

/// A store on `path` that keeps no finished rollout in memory once it is on disk.
async fn open(path: &std::path::Path, clock: Arc<ManualClock>) -> TestApp {
    let args = StoreArgs {
        storage: Storage::Sqlite(path.to_owned()),
        cache_mib: 0,
        ..test_args()
    };
    spawn_with(args, Some(clock)).await
}

/// A store file named for one test, removed when it ends.
fn store_file(name: &str) -> TempFile {
    TempFile(std::env::temp_dir().join(format!("agl-history-{name}-{}.db", std::process::id())))
}

/// Enqueues `n` rollouts with inputs `0..n`; returns their ids in order.
async fn enqueued(app: &TestApp, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n).map(|i| json!({"input": i})).collect();
    app.enqueue(Value::Array(items))
        .await
        .iter()
        .map(|r| str_of(r, "rollout_id").to_owned())
        .collect()
}

async fn stop(mut app: TestApp) {
    app.shutdown();
    app.server.take().unwrap().await.unwrap().unwrap();
}

async fn in_memory(app: &TestApp) -> usize {
    // The finishing write is durable once answered; the next pass of the cache drops it.
    app.store.watchdog_tick().await;
    app.store.gauges().rollouts_in_memory
}

/// The span reads a trainer and a dashboard make of one rollout.
async fn reads(app: &TestApp, rid: &str) -> Vec<Value> {
    let mut out = Vec::new();
    for path in [
        format!("/spans?rollout_id={rid}"),
        format!("/spans?rollout_id={rid}&attempt_id=latest"),
        format!("/spans?rollout_id={rid}&sort_by=sequence_id&sort_order=desc&limit=2&offset=1"),
        format!("/spans?rollout_id={rid}&name_contains=02"),
        format!("/spans?rollout_id={rid}&sort_by=name&sort_order=desc"),
    ] {
        out.push(app.v3_get(&path).await);
    }
    out
}

#[tokio::test]
async fn finished_rollouts_leave_memory_and_read_back_as_they_were() {
    let file = store_file("main");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&file.0, Arc::clone(&clock)).await;
    let retry = json!({"max_attempts": 2, "retry_condition": ["failed"]});
    let items: Vec<Value> = (0..6)
        .map(|i| json!({"input": {"task": i}, "config": retry}))
        .collect();
    let queued = app.enqueue(Value::Array(items)).await;
    let ids: Vec<String> = queued
        .iter()
        .map(|r| str_of(r, "rollout_id").to_owned())
        .collect();
    let claimed = app.dequeue(6, Some("w1")).await;
    assert_eq!(claimed.len(), 6);
    // The first rollout fails once and is retried: two attempts.
    let first_attempt = str_of(&claimed[0]["attempt"], "attempt_id").to_owned();
    app.update_attempt(&ids[0], &first_attempt, json!({"status": "failed"}))
        .await;
    let retried = app.dequeue(1, Some("w2")).await;
    assert_eq!(str_of(&retried[0], "rollout_id"), ids[0]);

    let mut held = Vec::new();
    for (i, rid) in ids.iter().enumerate() {
        let aid = str_of(&app.rollout(rid).await["attempt"], "attempt_id").to_owned();
        for seq in 1..=3 {
            let s = span(rid, &aid, seq, &format!("{i:014}{seq:02}"));
            app.v3_post("/spans", s, StatusCode::CREATED).await;
        }
        // Read while memory holds the rollout (it is live).
        held.push(reads(&app, rid).await);
        app.update_attempt(rid, &aid, json!({"status": "succeeded"}))
            .await;
    }
    assert_eq!(
        in_memory(&app).await,
        0,
        "finished and durable rollouts are dropped"
    );

    for (rid, before) in ids.iter().zip(&held) {
        assert_eq!(&reads(&app, rid).await, before, "{rid} read from the file");
        let r = app.rollout(rid).await;
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["attempt"]["status"], "succeeded");
        let attempts = app.v3_get(&format!("/rollouts/{rid}/attempts")).await;
        let latest = app
            .v3_get(&format!("/rollouts/{rid}/attempts/latest"))
            .await;
        assert_eq!(attempts["items"].as_array().unwrap().last(), Some(&latest));
        assert_eq!(latest, r["attempt"]);
    }
    let first = app.v3_get(&format!("/rollouts/{}/attempts", ids[0])).await;
    let statuses: Vec<&Value> = first["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["status"])
        .collect();
    assert_eq!(statuses, [&json!("failed"), &json!("succeeded")]);
    // Queries over history: creation order, filters, sorting and pages.
    let all = app.v3_get("/rollouts").await;
    assert_eq!(all["total"], 6);
    assert_eq!(item_ids(&all, "rollout_id"), ids);
    // A page in creation order is cut by the file; its total counts every match.
    let window = app
        .v3_get("/rollouts?status_in=succeeded&status_in=running&limit=2&offset=3")
        .await;
    assert_eq!(window["total"], 6);
    assert_eq!(window["limit"], 2);
    assert_eq!(window["offset"], 3);
    let cut: Vec<&str> = window["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "rollout_id"))
        .collect();
    assert_eq!(cut, ids[3..5]);
    assert_eq!(window["items"][0]["attempt"]["status"], "succeeded");
    let past = app.v3_get("/rollouts?limit=5&offset=10").await;
    assert_eq!(past["total"], 6);
    assert_eq!(past["items"], json!([]));
    let page = app
        .v3_get("/rollouts?status_in=succeeded&sort_by=rollout_id&sort_order=desc&limit=2&offset=1")
        .await;
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.reverse();
    assert_eq!(page["total"], 6);
    assert_eq!(str_of(&page["items"][0], "rollout_id"), sorted[1]);
    assert_eq!(str_of(&page["items"][1], "rollout_id"), sorted[2]);
    assert_eq!(page["items"][0]["attempt"]["status"], "succeeded");
    let none = app.v3_get("/rollouts?status_in=running").await;
    assert_eq!(none["total"], 0);
    let waited = app
        .v3_post(
            "/waits/rollouts",
            json!({"rollout_ids": ids, "timeout": 0.0}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(waited.as_array().unwrap().len(), 6);
    let stats = app.v3_get("/statistics").await;
    assert_eq!(stats["total_rollouts"], 6);
    assert_eq!(stats["total_attempts"], 7);
    assert_eq!(stats["total_spans"], 18);

    // A late span for a rollout only the file holds: its counter goes on from the file, a
    // duplicate is still a duplicate, and the rollout leaves memory again afterwards.
    let rid = &ids[3];
    let aid = str_of(&app.rollout(rid).await["attempt"], "attempt_id").to_owned();
    let next = app
        .v3_post(
            "/spans/next",
            json!({"rollout_id": rid, "attempt_id": aid}),
            StatusCode::OK,
        )
        .await;
    assert_eq!(next["sequence_id"], 4, "no sequence id is issued twice");
    assert_eq!(in_memory(&app).await, 0);
    let dup = app
        .post(
            "/v1/agl/spans",
            span(rid, &aid, 9, &format!("{:014}{:02}", 3, 1)),
        )
        .await;
    assert_eq!(expect_json(dup, StatusCode::CREATED).await, Value::Null);
    app.v3_post(
        "/spans",
        span(rid, &aid, 5, "00000000000099"),
        StatusCode::CREATED,
    )
    .await;
    let spans = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    let seqs: Vec<i64> = spans["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["sequence_id"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2, 3, 5]);
    assert_eq!(app.v3_get("/statistics").await["total_spans"], 19);
    // A finished rollout sent back to the queue is live again, and dequeued.
    app.v3_post(
        &format!("/rollouts/{}", ids[5]),
        json!({"status": "queuing"}),
        StatusCode::OK,
    )
    .await;
    let again = app.dequeue(1, Some("w3")).await;
    assert_eq!(str_of(&again[0], "rollout_id"), ids[5]);
    assert_eq!(again[0]["attempt"]["sequence_id"], 2);
    assert_eq!(in_memory(&app).await, 1);
    stop(app).await;
}

#[tokio::test]
async fn a_restart_reads_only_the_live_part_and_keeps_the_totals() {
    let file = store_file("restart");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&file.0, Arc::clone(&clock)).await;
    let ids = enqueued(&app, 8).await;
    // Five finish, one runs with a span, two stay queued.
    for claimed in app.dequeue(6, Some("w")).await {
        let rid = str_of(&claimed, "rollout_id");
        let aid = str_of(&claimed["attempt"], "attempt_id");
        app.v3_post(
            "/spans",
            span(rid, aid, 1, "00000000000001"),
            StatusCode::CREATED,
        )
        .await;
        if rid != ids[5] {
            app.update_attempt(rid, aid, json!({"status": "succeeded"}))
                .await;
        }
    }
    assert_eq!(in_memory(&app).await, 3);
    let stats = app.v3_get("/statistics").await;
    stop(app).await;

    let app = open(&file.0, clock).await;
    assert_eq!(
        app.store.gauges().rollouts_in_memory,
        3,
        "only live rollouts are read"
    );
    assert_eq!(
        app.v3_get("/statistics").await["total_spans"],
        stats["total_spans"]
    );
    let mut now = app.v3_get("/statistics").await;
    let mut then = stats.clone();
    for s in [&mut now, &mut then] {
        s.as_object_mut().unwrap().remove("uptime");
    }
    assert_eq!(now, then);
    assert_eq!(app.rollout(&ids[0]).await["status"], "succeeded");
    assert_eq!(app.rollout(&ids[5]).await["status"], "running");
    let spans = app.v3_get(&format!("/spans?rollout_id={}", ids[2])).await;
    assert_eq!(spans["total"], 1);
    let rest = app.dequeue(5, None).await;
    let rest: Vec<&str> = rest.iter().map(|r| str_of(r, "rollout_id")).collect();
    assert_eq!(rest, [ids[6].as_str(), ids[7].as_str()]);
    stop(app).await;
}

/// Turns a current file back into schema v1, as earlier agl-store versions wrote it: no
/// status column, no totals.
fn downgrade_to_v1(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "DROP INDEX rollouts_by_mode;
         DROP INDEX rollouts_by_start;
         DROP INDEX rollouts_by_end;
         ALTER TABLE rollouts DROP COLUMN mode;
         ALTER TABLE rollouts DROP COLUMN start_time;
         ALTER TABLE rollouts DROP COLUMN end_time;
         DROP TABLE span_packs;
         DROP INDEX rollouts_by_status;
         ALTER TABLE rollouts DROP COLUMN status;
         DELETE FROM kv WHERE key = 'counts';
         PRAGMA user_version = 1;",
    )
    .unwrap();
}

/// A Postgres database of schema version 1 (before rollouts had their mode and times as
/// columns) is migrated at start: the columns are filled from the documents, so sorting
/// and filtering by them sees every rollout written before.
#[tokio::test]
async fn a_v1_postgres_database_gains_its_order_columns() {
    if !std::env::var("AGL_TEST_STORAGE").is_ok_and(|v| v == "postgres") {
        eprintln!("skipped: the Postgres migration (AGL_TEST_STORAGE=postgres runs it)");
        return;
    }
    let url = fresh_database().await;
    let args = StoreArgs {
        storage: Storage::Postgres(url.clone()),
        ..test_args()
    };
    let app = spawn_with(args.clone(), None).await;
    let ids = enqueued(&app, 3).await;
    for claimed in app.dequeue(2, Some("w")).await {
        let rid = str_of(&claimed, "rollout_id");
        let aid = str_of(&claimed["attempt"], "attempt_id");
        app.update_attempt(rid, aid, json!({"status": "succeeded"}))
            .await;
    }
    stop(app).await;
    let (client, connection) = tokio_postgres::connect(&url.0, tokio_postgres::NoTls)
        .await
        .unwrap();
    let driver = tokio::spawn(connection);
    client
        .batch_execute(
            "ALTER TABLE agl_rollouts DROP COLUMN mode, DROP COLUMN start_time, \
             DROP COLUMN end_time; \
             UPDATE agl_meta SET value = '1' WHERE key = 'schema_version'",
        )
        .await
        .unwrap();
    drop(client);
    let _ = driver.await;

    let app = spawn_with(args, None).await;
    let by_end = app
        .v3_get("/rollouts?sort_by=end_time&sort_order=desc&limit=3")
        .await;
    assert_eq!(
        item_ids(&by_end, "rollout_id"),
        [ids[2].as_str(), &ids[1], &ids[0]]
    );
    let started = app
        .v3_get("/rollouts?sort_by=start_time&sort_order=desc&limit=1")
        .await;
    assert_eq!(started["total"], 3);
    stop(app).await;
}

#[tokio::test]
async fn a_v1_file_is_migrated_at_start_with_its_totals() {
    let file = store_file("v1");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    // Written as a v1-era server wrote it: every span a row (nothing leaves memory).
    let args = StoreArgs {
        storage: Storage::Sqlite(file.0.clone()),
        ..test_args()
    };
    let app = spawn_with(args, Some(Arc::clone(&clock))).await;
    let ids = enqueued(&app, 3).await;
    for claimed in app.dequeue(2, Some("w")).await {
        let rid = str_of(&claimed, "rollout_id");
        let aid = str_of(&claimed["attempt"], "attempt_id");
        for seq in 1..=2 {
            let s = span(rid, aid, seq, &format!("{seq:016}"));
            app.v3_post("/spans", s, StatusCode::CREATED).await;
        }
        app.update_attempt(rid, aid, json!({"status": "succeeded"}))
            .await;
    }
    for _ in 0..2 {
        app.v3_post("/resources", json!({}), StatusCode::CREATED)
            .await;
    }
    let mut stats = app.v3_get("/statistics").await;
    assert_eq!(stats["total_resources"], 2);
    let spans = app.v3_get(&format!("/spans?rollout_id={}", ids[0])).await;
    stop(app).await;
    downgrade_to_v1(&file.0);

    let app = open(&file.0, clock).await;
    let mut now = app.v3_get("/statistics").await;
    for s in [&mut now, &mut stats] {
        s.as_object_mut().unwrap().remove("uptime");
    }
    assert_eq!(now, stats, "the totals are counted once, at migration");
    assert_eq!(
        app.store.gauges().rollouts_in_memory,
        1,
        "only the queued rollout"
    );
    assert_eq!(
        app.v3_get(&format!("/spans?rollout_id={}", ids[0])).await,
        spans
    );
    let succeeded = app.v3_get("/rollouts?status_in=succeeded").await;
    assert_eq!(succeeded["total"], 2);
    // The end times were read into their column: the queued rollout (no end) sorts first
    // descending, the two that ended at one instant keep creation order.
    let by_end = app
        .v3_get("/rollouts?sort_by=end_time&sort_order=desc&limit=3")
        .await;
    assert_eq!(
        item_ids(&by_end, "rollout_id"),
        [ids[2].as_str(), &ids[0], &ids[1]]
    );
    let rest = app.dequeue(5, None).await;
    assert_eq!(rest.len(), 1);
    assert_eq!(str_of(&rest[0], "rollout_id"), ids[2]);
    stop(app).await;

    // A file of a newer agl-store is refused, not touched.
    let conn = rusqlite::Connection::open(&file.0).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let args = StoreArgs {
        storage: Storage::Sqlite(file.0.clone()),
        ..test_args()
    };
    let err = match agl_store::App::build(&args).await {
        Ok(_) => panic!("a newer schema was opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("newer than this agl-store understands"),
        "{err}"
    );
}

#[tokio::test]
async fn old_resources_versions_are_read_from_the_file() {
    let file = store_file("res");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&file.0, Arc::clone(&clock)).await;
    let mut ids = Vec::new();
    for i in 0..80 {
        let body = json!({"prompt": {"resource_type": "prompt_template", "template": format!("v{i}"), "engine": "f-string"}});
        let created = app.v3_post("/resources", body, StatusCode::CREATED).await;
        ids.push(str_of(&created, "resources_id").to_owned());
    }
    let oldest = app.v3_get(&format!("/resources/{}", ids[0])).await;
    assert_eq!(oldest["resources"]["prompt"]["template"], "v0");
    stop(app).await;

    let app = open(&file.0, clock).await;
    // Read from the file (memory holds the recent versions only).
    assert_eq!(app.v3_get(&format!("/resources/{}", ids[0])).await, oldest);
    let all = app.v3_get("/resources").await;
    assert_eq!(all["total"], 80);
    assert_eq!(app.v3_get("/statistics").await["total_resources"], 80);
    let listed: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| str_of(r, "resources_id"))
        .collect();
    assert_eq!(listed, ids);
    // Updating an old version bumps the version it has in the file, and makes it latest.
    let updated = app
        .v3_post(&format!("/resources/{}", ids[1]), json!({}), StatusCode::OK)
        .await;
    assert_eq!(updated["version"], 2);
    assert_eq!(
        app.v3_get("/resources/latest").await["resources_id"],
        ids[1].as_str()
    );
    let legacy = app.get(&format!("/get_resources_by_id/{}", ids[2])).await;
    let legacy = expect_json(legacy, StatusCode::OK).await;
    assert_eq!(legacy["resources_id"], ids[2].as_str());
    stop(app).await;
}

/// Late spans race the cache: every rollout is finished and leaves memory as soon as it
/// is durable, while concurrent clients keep writing to random ones (each write brings one
/// back, and the next finish drops it again). Nothing acknowledged may be lost, doubled or
/// numbered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_writes_racing_evictions_lose_nothing() {
    let file = store_file("race");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = Arc::new(open(&file.0, clock).await);
    let items: Vec<Value> = (0..12).map(|i| json!({"input": i})).collect();
    app.enqueue(Value::Array(items)).await;
    let mut targets = Vec::new();
    for claimed in app.dequeue(12, Some("w")).await {
        let rid = str_of(&claimed, "rollout_id").to_owned();
        let aid = str_of(&claimed["attempt"], "attempt_id").to_owned();
        app.update_attempt(&rid, &aid, json!({"status": "succeeded"}))
            .await;
        targets.push((rid, aid));
    }
    let targets = Arc::new(targets);
    let mut tasks = Vec::new();
    for worker in 0..6_u64 {
        let (app, targets) = (Arc::clone(&app), Arc::clone(&targets));
        tasks.push(tokio::spawn(async move {
            let mut issued: Vec<(usize, i64)> = Vec::new();
            let mut stored: Vec<(usize, String)> = Vec::new();
            let mut x = worker * 7919 + 13;
            for n in 0..40 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let t = (x >> 33) as usize % targets.len();
                let (rid, aid) = &targets[t];
                let next = app
                    .v3_post(
                        "/spans/next",
                        json!({"rollout_id": rid, "attempt_id": aid}),
                        StatusCode::OK,
                    )
                    .await;
                let seq = next["sequence_id"].as_i64().unwrap();
                issued.push((t, seq));
                let span_id = format!("{worker:04}{n:012}");
                app.v3_post("/spans", span(rid, aid, seq, &span_id), StatusCode::CREATED)
                    .await;
                stored.push((t, span_id));
                if n % 5 == 0 {
                    // A finished rollout's attempt is finished again: it stays finished and
                    // leaves memory again once durable.
                    app.update_attempt(rid, aid, json!({"status": "succeeded"}))
                        .await;
                }
            }
            (issued, stored)
        }));
    }
    let mut issued = vec![Vec::new(); targets.len()];
    let mut stored = vec![Vec::new(); targets.len()];
    for task in tasks {
        let (i, s) = task.await.unwrap();
        for (t, seq) in i {
            issued[t].push(seq);
        }
        for (t, span_id) in s {
            stored[t].push(span_id);
        }
    }
    assert!(app.store.gauges().rollouts_in_memory <= targets.len());
    for (t, (rid, _)) in targets.iter().enumerate() {
        let mut seqs = issued[t].clone();
        seqs.sort_unstable();
        seqs.dedup();
        assert_eq!(
            seqs.len(),
            issued[t].len(),
            "{rid}: a sequence id issued twice"
        );
        let spans = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
        let mut got: Vec<String> = spans["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| str_of(s, "span_id").to_owned())
            .collect();
        got.sort();
        let mut want = stored[t].clone();
        want.sort();
        assert_eq!(got, want, "{rid}: every acknowledged span, once");
    }
    let total: usize = stored.iter().map(Vec::len).sum();
    assert_eq!(app.v3_get("/statistics").await["total_spans"], total);
    drop(targets);
    let app = Arc::into_inner(app).expect("the tasks are done");
    stop(app).await;
}

/// The span packs and the span rows of a rollout in the file.
fn on_disk(path: &std::path::Path, rollout_id: &str) -> (i64, i64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let count = |table: &str| -> i64 {
        conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE rollout_id = ?1"),
            [rollout_id],
            |r| r.get(0),
        )
        .unwrap()
    };
    (count("span_packs"), count("spans"))
}

#[tokio::test]
async fn a_finished_rollouts_spans_are_one_row_on_disk_and_read_back_the_same() {
    let file = store_file("packs");
    let clock = Arc::new(ManualClock::new(1_700_000_000.0));
    let app = open(&file.0, Arc::clone(&clock)).await;
    let rid = enqueued(&app, 1).await.remove(0);
    let claimed = app.dequeue(1, Some("w")).await;
    let aid = str_of(&claimed[0]["attempt"], "attempt_id").to_owned();
    // Sequence ids out of arrival order, one repeated: the order a read must keep.
    for (seq, id) in [(2, "01"), (1, "02"), (2, "03")] {
        app.v3_post("/spans", span(&rid, &aid, seq, id), StatusCode::CREATED)
            .await;
    }
    app.update_attempt(&rid, &aid, json!({"status": "succeeded"}))
        .await;
    let queries = [
        format!("/spans?rollout_id={rid}"),
        format!("/spans?rollout_id={rid}&attempt_id=latest"),
        format!("/spans?rollout_id={rid}&sort_by=sequence_id&sort_order=desc"),
        format!("/spans?rollout_id={rid}&name_contains=03"),
    ];
    let mut held = Vec::new();
    for q in &queries {
        held.push(app.v3_get(q).await);
    }
    assert_eq!(in_memory(&app).await, 0);
    // Any later write is durable only after the pack written when the rollout left.
    let written = || app.v3_post("/workers/w", json!({}), StatusCode::OK);
    written().await;
    assert_eq!(on_disk(&file.0, &rid), (1, 0), "the pack replaced the rows");
    for (q, before) in queries.iter().zip(&held) {
        assert_eq!(&app.v3_get(q).await, before, "{q}");
    }

    // A late span brings the rollout back; leaving again, it is packed with all its spans.
    app.v3_post("/spans", span(&rid, &aid, 0, "04"), StatusCode::CREATED)
        .await;
    let ids = |page: &Value| item_ids(page, "span_id");
    let after = app.v3_get(&format!("/spans?rollout_id={rid}")).await;
    assert_eq!(ids(&after), ["04", "02", "01", "03"]);
    let desc = format!("/spans?rollout_id={rid}&sort_by=sequence_id&sort_order=desc");
    let after_desc = app.v3_get(&desc).await;
    assert_eq!(ids(&after_desc), ["01", "03", "02", "04"]);
    // A span sent again is still a duplicate once its rollout has left memory.
    assert_eq!(in_memory(&app).await, 0);
    written().await;
    assert_eq!(
        on_disk(&file.0, &rid),
        (1, 0),
        "left again: one pack of all four"
    );
    let again = app
        .v3_post("/spans", span(&rid, &aid, 7, "02"), StatusCode::CREATED)
        .await;
    assert_eq!(
        again,
        Value::Null,
        "a duplicate is not stored (as upstream answers)"
    );
    assert_eq!(app.v3_get(&format!("/spans?rollout_id={rid}")).await, after);

    // Reopened and restarted: a live rollout's spans come back from its pack at start-up.
    app.v3_post(
        &format!("/rollouts/{rid}"),
        json!({"status": "queuing"}),
        StatusCode::OK,
    )
    .await;
    stop(app).await;
    let app = open(&file.0, clock).await;
    assert_eq!(app.v3_get(&format!("/spans?rollout_id={rid}")).await, after);
    assert_eq!(app.v3_get(&desc).await, after_desc);
    stop(app).await;
}
