//! The dashboard over real HTTP, on whichever backend the suite runs on (memory, SQLite,
//! Postgres): every page answers HTML with its security headers; the rollouts list filters,
//! sorts and pages as the API counts; a rollout's waterfall nests its spans; LLM calls and
//! rewards are read out of span attributes; bad filters and unknown ids are 4xx pages.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, item_ids, span, spawn, str_of};

/// The page's text, asserting the status and that it is HTML.
async fn page(app: &TestApp, path: &str, status: StatusCode) -> String {
    let r = app.get(path).await;
    assert_eq!(r.status(), status, "{path}");
    let headers = r.headers().clone();
    assert_eq!(
        headers["content-type"], "text/html; charset=utf-8",
        "{path}"
    );
    assert_eq!(headers["cache-control"], "no-store", "{path}");
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    r.text().await.unwrap()
}

/// The `data-rollout-id`s of a list page, in page order.
fn listed(html: &str) -> Vec<String> {
    html.split("data-rollout-id=\"")
        .skip(1)
        .map(|rest| rest.split('"').next().unwrap().to_owned())
        .collect()
}

fn total(html: &str) -> usize {
    let at = html.find("id=\"total\">").expect("a #total") + "id=\"total\">".len();
    html[at..].split('<').next().unwrap().parse().unwrap()
}

async fn enqueue(app: &TestApp, n: usize, mode: &str) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"input": {"i": i}, "mode": mode}))
        .collect();
    app.enqueue(Value::Array(items))
        .await
        .iter()
        .map(|r| str_of(r, "rollout_id").to_owned())
        .collect()
}

#[tokio::test]
async fn every_page_is_html_and_the_assets_are_served() {
    let app = spawn().await;
    for path in [
        "/",
        "/ui/rollouts",
        "/ui/resources",
        "/ui/workers",
        "/ui/api",
    ] {
        let html = page(&app, path, StatusCode::OK).await;
        assert!(html.starts_with("<!DOCTYPE html>"), "{path}");
        assert!(html.contains("/ui/assets/agl.css?v="), "{path}");
    }
    for (path, kind) in [
        ("/ui/assets/agl.css", "text/css; charset=utf-8"),
        ("/ui/assets/agl.js", "text/javascript; charset=utf-8"),
        ("/ui/assets/icon.svg", "image/svg+xml"),
    ] {
        let r = app.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], kind, "{path}");
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("immutable")
        );
    }
    // The API reference lists the document's operations.
    let api = page(&app, "/ui/api", StatusCode::OK).await;
    assert!(api.contains("data-path=\"/v1/agl/rollouts\""));
}

#[tokio::test]
async fn the_overview_counts_what_the_api_counts() {
    let app = spawn().await;
    enqueue(&app, 5, "train").await;
    let taken = app.dequeue(2, Some("worker-a")).await;
    let rid = str_of(&taken[0], "rollout_id");
    let aid = str_of(&taken[0]["attempt"], "attempt_id");
    app.update_attempt(rid, aid, json!({"status": "succeeded"}))
        .await;
    let html = page(&app, "/", StatusCode::OK).await;
    for (status, n) in [
        ("queuing", 3),
        ("preparing", 1),
        ("succeeded", 1),
        ("failed", 0),
    ] {
        let row = html
            .split(&format!("data-status=\"{status}\""))
            .nth(1)
            .unwrap_or_else(|| panic!("no {status} row"));
        let count = row.split("count\"").nth(1).unwrap();
        assert!(
            count.starts_with(&format!(" style=\"width:90px\">{n}<")),
            "{status}: {count:.60}"
        );
    }
    assert!(html.contains("id=\"queue-depth\">3<"), "queue depth");
    assert!(
        html.contains("data-worker-id=\"worker-a\""),
        "the worker is listed"
    );
    assert!(html.contains("data-live="), "the overview refreshes itself");
}

#[tokio::test]
async fn the_list_pages_newest_first_and_filters_like_the_api() {
    let app = spawn().await;
    let train = enqueue(&app, 60, "train").await;
    let val = enqueue(&app, 7, "val").await;
    let all: Vec<String> = train.iter().chain(&val).cloned().collect();

    // Newest first, 50 a page, every rollout once.
    let first = page(&app, "/ui/rollouts", StatusCode::OK).await;
    assert_eq!(total(&first), 67);
    let mut seen = listed(&first);
    assert_eq!(seen.len(), 50);
    assert_eq!(seen[0], *all.last().unwrap());
    let second = page(&app, "/ui/rollouts?offset=50", StatusCode::OK).await;
    seen.extend(listed(&second));
    let mut expected = all.clone();
    expected.reverse();
    assert_eq!(seen, expected);

    // Oldest first.
    let asc = page(&app, "/ui/rollouts?order=asc&limit=10", StatusCode::OK).await;
    assert_eq!(listed(&asc), all[..10]);

    // Mode, status, id search, sorting by id, a time range.
    let v = page(&app, "/ui/rollouts?mode=val", StatusCode::OK).await;
    assert_eq!(total(&v), 7);
    assert!(listed(&v).iter().all(|id| val.contains(id)));
    app.dequeue(3, None).await;
    let running = page(&app, "/ui/rollouts?status=preparing", StatusCode::OK).await;
    assert_eq!(listed(&running), {
        let mut ids = all[..3].to_vec();
        ids.reverse();
        ids
    });
    let needle = &all[42][3..9];
    let found = page(&app, &format!("/ui/rollouts?q={needle}"), StatusCode::OK).await;
    assert!(listed(&found).contains(&all[42]));
    assert!(listed(&found).iter().all(|id| id.contains(needle)));
    let sorted = page(
        &app,
        "/ui/rollouts?sort=rollout_id&order=asc&limit=100",
        StatusCode::OK,
    )
    .await;
    let mut by_id = all.clone();
    by_id.sort();
    assert_eq!(listed(&sorted), by_id);
    let future = page(&app, "/ui/rollouts?from=2999-01-01T00:00", StatusCode::OK).await;
    assert_eq!(total(&future), 0);
    let past = page(
        &app,
        "/ui/rollouts?to=2999-01-01T00:00&mode=train",
        StatusCode::OK,
    )
    .await;
    assert_eq!(total(&past), 60);
}

/// The rollout ids of an API page.
fn ids_of(page: &Value) -> Vec<String> {
    item_ids(page, "rollout_id")
}

/// A page a backend cuts (by an indexed column) holds what the same page of the whole
/// sorted list holds: ties keep creation order either way, a rollout without an end sorts
/// after every end, and filters count the same.
#[tokio::test]
async fn a_window_is_cut_as_the_whole_list_is_sorted() {
    let app = spawn().await;
    // Three batches (a batch shares one start time), some claimed, some finished one by one.
    let mut all = enqueue(&app, 4, "train").await;
    all.extend(enqueue(&app, 3, "val").await);
    all.extend(enqueue(&app, 4, "train").await);
    let claimed = app.dequeue(6, Some("w-sort")).await;
    for (i, r) in claimed.iter().enumerate().skip(1).step_by(2) {
        let status = if i == 3 { "failed" } else { "succeeded" };
        let attempt = str_of(&r["attempt"], "attempt_id");
        app.update_attempt(str_of(r, "rollout_id"), attempt, json!({"status": status}))
            .await;
    }
    for field in ["start_time", "end_time", "status", "rollout_id"] {
        for order in ["asc", "desc"] {
            for filter in ["", "&status_in=succeeded&status_in=queuing"] {
                let whole = app
                    .v3_get(&format!(
                        "/rollouts?sort_by={field}&sort_order={order}{filter}"
                    ))
                    .await;
                let expected = ids_of(&whole);
                let mut cut = Vec::new();
                for offset in (0..expected.len() + 3).step_by(3) {
                    let page = app
                        .v3_get(&format!(
                            "/rollouts?sort_by={field}&sort_order={order}{filter}\
                             &limit=3&offset={offset}"
                        ))
                        .await;
                    assert_eq!(page["total"], expected.len(), "{field} {order} {filter}");
                    cut.extend(ids_of(&page));
                }
                assert_eq!(cut, expected, "{field} {order} {filter}");
            }
        }
    }
    // The whole list in the API's terms: unfinished rollouts last by end time, ties in
    // creation order.
    let by_end = ids_of(&app.v3_get("/rollouts?sort_by=end_time").await);
    let ended: Vec<String> = claimed
        .iter()
        .skip(1)
        .step_by(2)
        .map(|r| str_of(r, "rollout_id").to_owned())
        .collect();
    assert_eq!(by_end[..3], ended);
    let unfinished: Vec<String> = all
        .iter()
        .filter(|id| !ended.contains(id))
        .cloned()
        .collect();
    assert_eq!(by_end[3..], unfinished);
    // The dashboard's newest-first pages, filtered by mode.
    let val = page(&app, "/ui/rollouts?mode=val&limit=2", StatusCode::OK).await;
    assert_eq!(total(&val), 3);
    assert_eq!(listed(&val), [all[6].clone(), all[5].clone()]);
    let val = page(
        &app,
        "/ui/rollouts?mode=val&limit=2&offset=2",
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed(&val), [all[4].clone()]);
    let started = page(
        &app,
        "/ui/rollouts?status=succeeded&sort=end_time&order=desc",
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed(&started), [ended[2].clone(), ended[0].clone()]);
}

#[tokio::test]
async fn bad_filters_and_unknown_ids_are_client_errors() {
    let app = spawn().await;
    for path in [
        "/ui/rollouts?status=done",
        "/ui/rollouts?from=yesterday",
        "/ui/rollouts?sort=input",
        "/ui/rollouts?offset=-1",
    ] {
        let html = page(&app, path, StatusCode::BAD_REQUEST).await;
        assert!(html.contains("400"), "{path}");
    }
    page(&app, "/ui/rollouts/ro-missing", StatusCode::NOT_FOUND).await;
    page(
        &app,
        "/ui/rollouts/ro-missing/spans/x",
        StatusCode::NOT_FOUND,
    )
    .await;
    let id = &enqueue(&app, 1, "train").await[0];
    page(
        &app,
        &format!("/ui/rollouts/{id}?attempt=at-nope"),
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[tokio::test]
async fn a_rollout_shows_its_waterfall_llm_calls_and_rewards() {
    let app = spawn().await;
    let started = app
        .v3_post(
            "/rollouts",
            json!({"input": {"task": "<script>alert(1)</script>"}}),
            StatusCode::CREATED,
        )
        .await;
    let rid = str_of(&started, "rollout_id");
    let aid = str_of(&started["attempt"], "attempt_id");
    let mut spans = Vec::new();
    let mut add =
        |seq: i64, id: &str, parent: Option<&str>, name: &str, t: (f64, f64), attrs: Value| {
            let mut s = span(rid, aid, seq, id);
            s["parent_id"] = json!(parent);
            s["name"] = json!(name);
            s["start_time"] = json!(t.0);
            s["end_time"] = json!(t.1);
            s["attributes"] = attrs;
            spans.push(s);
        };
    add(1, "root", None, "agent.run", (10.0, 20.0), json!({}));
    add(
        2,
        "tool",
        Some("root"),
        "tool.search",
        (11.0, 12.0),
        json!({"query": "paris"}),
    );
    add(3, "http", Some("tool"), "http.get", (11.2, 11.8), json!({}));
    add(
        4,
        "call",
        Some("root"),
        "litellm_request",
        (13.0, 15.0),
        json!({
            "gen_ai.request.model": "agl-model",
            "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": "Weather in Paris?",
            "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": "Sunny & 21 C",
            "gen_ai.usage.prompt_tokens": 6, "gen_ai.usage.completion_tokens": 4,
        }),
    );
    add(
        5,
        "raw",
        Some("call"),
        "raw_gen_ai_request",
        (13.1, 14.9),
        json!({
            "llm.hosted_vllm.prompt_token_ids": "[101, 102]",
            "llm.hosted_vllm.response_token_ids": "[[201, 202]]",
        }),
    );
    add(
        6,
        "reward",
        Some("root"),
        "agentlightning.reward",
        (19.0, 19.0),
        json!({
            "agentlightning.reward.0.name": "primary", "agentlightning.reward.0.value": 0.75,
        }),
    );
    for s in spans {
        let r = app.post("/v1/agl/spans", s).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }

    let html = page(&app, &format!("/ui/rollouts/{rid}"), StatusCode::OK).await;
    // Nesting: depth-first, each child after its parent with depth + 1.
    let rows: Vec<(String, String, usize)> = html
        .split("class=\"wf-row")
        .skip(1)
        .map(|row| {
            let attr = |name: &str| {
                let at = row.find(&format!("{name}=\"")).unwrap() + name.len() + 2;
                row[at..].split('"').next().unwrap().to_owned()
            };
            (
                attr("data-span-id"),
                attr("data-parent-id"),
                attr("data-depth").parse().unwrap(),
            )
        })
        .collect();
    let order: Vec<(&str, &str, usize)> = rows
        .iter()
        .map(|(s, p, d)| (s.as_str(), p.as_str(), *d))
        .collect();
    assert_eq!(
        order,
        [
            ("root", "", 0),
            ("tool", "root", 1),
            ("http", "tool", 2),
            ("call", "root", 1),
            ("raw", "call", 2),
            ("reward", "root", 1)
        ]
    );
    // The call as prompt → completion with its counts and the raw span's token ids.
    let call = html
        .split("class=\"llm-call\"")
        .nth(1)
        .expect("an LLM call");
    assert!(call.contains("Weather in Paris?"));
    assert!(call.contains("Sunny &amp; 21 C"));
    assert!(call.contains("6 prompt → 4 completion tokens"));
    assert!(call.contains("[101, 102]") && call.contains("[[201, 202]]"));
    assert_eq!(html.matches("class=\"llm-call\"").count(), 1);
    // The reward, highlighted in the waterfall and listed.
    assert!(html.contains("class=\"wf-row reward\""));
    assert!(html.contains("id=\"rollout-reward\">0.75<"));
    // Inputs are shown as text, never as markup.
    assert!(!html.contains("<script>alert"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    // A running rollout refreshes itself.
    assert!(html.contains("id=\"waterfall-region\" data-live="));

    // A span's details, as the waterfall loads them.
    let detail = page(
        &app,
        &format!("/ui/rollouts/{rid}/spans/tool?attempt={aid}"),
        StatusCode::OK,
    )
    .await;
    assert!(detail.contains("class=\"span-attrs\""));
    assert!(detail.contains("tool.search") && detail.contains("paris"));

    // Finished: no longer live.
    app.update_attempt(rid, aid, json!({"status": "succeeded"}))
        .await;
    let html = page(&app, &format!("/ui/rollouts/{rid}"), StatusCode::OK).await;
    assert!(!html.contains("data-live="));
}

/// A rollout of more spans than a page shows: the first levels, each folded turn with a
/// button that loads its rows; the first 50 LLM calls and a button that loads the rest;
/// a span's details found among them once the rollout is finished (and, on SQLite, read back
/// from the file).
#[tokio::test]
async fn a_long_rollout_folds_its_waterfall_and_pages_its_calls() {
    let app = spawn().await;
    let started = app
        .v3_post("/rollouts", json!({"input": 1}), StatusCode::CREATED)
        .await;
    let rid = str_of(&started, "rollout_id").to_owned();
    let aid = str_of(&started["attempt"], "attempt_id").to_owned();
    let mut seq = 0;
    let mut post = |id: String, parent: Option<String>, name: &str, t: f64, attrs: Value| {
        seq += 1;
        let mut s = span(&rid, &aid, seq, &id);
        s["parent_id"] = json!(parent);
        s["name"] = json!(name);
        s["start_time"] = json!(t);
        s["end_time"] = json!(t + 0.5);
        s["attributes"] = attrs;
        s
    };
    let mut spans = vec![post("root".into(), None, "agent.run", 0.0, json!({}))];
    for turn in 0..70 {
        let t = f64::from(turn);
        let id = format!("turn{turn:02}");
        spans.push(post(id.clone(), Some("root".into()), "turn", t, json!({})));
        spans.push(post(
            format!("{id}-call"),
            Some(id.clone()),
            "litellm_request",
            t + 0.1,
            json!({
                "gen_ai.prompt.0.role": "user", "gen_ai.prompt.0.content": format!("question {turn}"),
                "gen_ai.completion.0.role": "assistant", "gen_ai.completion.0.content": format!("answer {turn}"),
            }),
        ));
        for tool in 0..8 {
            spans.push(post(
                format!("{id}-tool{tool}"),
                Some(id.clone()),
                "tool",
                t + 0.2,
                json!({}),
            ));
        }
    }
    for s in spans {
        let r = app.post("/v1/agl/spans", s).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    app.update_attempt(&rid, &aid, json!({"status": "succeeded"}))
        .await;

    let html = page(&app, &format!("/ui/rollouts/{rid}"), StatusCode::OK).await;
    assert_eq!(
        html.matches("class=\"wf-row").count(),
        71,
        "the root and its turns"
    );
    assert_eq!(html.matches("class=\"wf-more\"").count(), 70);
    let subtree = format!("/ui/rollouts/{rid}/subtree/turn07?attempt={aid}");
    assert!(
        html.contains(&format!("data-subtree=\"{subtree}\"")),
        "{html}"
    );
    assert!(
        html.contains("id=\"rollout-calls\">70<"),
        "every call is counted"
    );
    assert_eq!(html.matches("class=\"llm-call\"").count(), 50);
    assert!(html.contains("answer 49") && !html.contains("answer 50"));
    let more = html
        .split("data-more=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("a button for the further calls")
        .replace("&amp;", "&");
    let rest = page(&app, &more, StatusCode::OK).await;
    assert_eq!(rest.matches("class=\"llm-call\"").count(), 20);
    assert!(rest.contains("answer 50") && rest.contains("answer 69"));
    assert!(!rest.contains("data-more"));

    let rows = page(&app, &subtree, StatusCode::OK).await;
    assert_eq!(rows.matches("data-span-id=").count(), 9);
    assert_eq!(rows.matches("data-parent-id=\"turn07\"").count(), 9);
    assert_eq!(rows.matches("data-depth=\"2\"").count(), 9);
    assert!(rows.contains("data-span-id=\"turn07-call\""));
    page(
        &app,
        &format!("/ui/rollouts/{rid}/subtree/nope?attempt={aid}"),
        StatusCode::NOT_FOUND,
    )
    .await;
    let detail = page(
        &app,
        &format!("/ui/rollouts/{rid}/spans/turn42-tool3"),
        StatusCode::OK,
    )
    .await;
    assert!(detail.contains("turn42-tool3") && detail.contains("turn42"));
    page(
        &app,
        &format!("/ui/rollouts/{rid}/calls?offset=lots"),
        StatusCode::BAD_REQUEST,
    )
    .await;
}

#[tokio::test]
async fn resources_and_workers_are_listed() {
    let app = spawn().await;
    let added = app
        .v3_post(
            "/resources",
            json!({"main_prompt": {"resource_type": "prompt_template", "template": "Hi {name}", "engine": "f-string"}}),
            StatusCode::CREATED,
        )
        .await;
    let id = str_of(&added, "resources_id");
    let html = page(&app, "/ui/resources", StatusCode::OK).await;
    assert!(html.contains(&format!("data-resources-id=\"{id}\"")));
    assert!(html.contains("Hi {name}"));
    let overview = page(&app, "/", StatusCode::OK).await;
    assert!(
        overview.contains(id),
        "the latest version is on the overview"
    );

    enqueue(&app, 1, "train").await;
    app.dequeue(1, Some("runner-7")).await;
    let html = page(&app, "/ui/workers", StatusCode::OK).await;
    assert!(html.contains("data-worker-id=\"runner-7\""));
}
