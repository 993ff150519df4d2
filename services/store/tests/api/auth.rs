//! The shared key: with one set, no route of any protocol answers without it (every path
//! of `/openapi.json` and every route of the older protocols, v1 and OTLP is tried), health
//! and operations routes stay open, and each accepted form of the key gets through.

use agl_common::auth::KeyArgs;
use agl_store::StoreArgs;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{TestApp, expect_json, spawn_with, test_args};

const KEY: &str = "k3y-for-tests";

/// Health, liveness, readiness, metrics (ours and upstream's) and the dashboard's assets
/// answer without a key.
const OPEN: [&str; 11] = [
    "/ui/assets/agl.css",
    "/ui/assets/agl.js",
    "/ui/assets/icon.svg",
    "/healthz",
    "/v1/agl/health",
    "/agl/v1/health",
    "/health",
    "/livez",
    "/readyz",
    "/metrics",
    "/v1/prometheus",
];

async fn keyed() -> TestApp {
    let args = StoreArgs {
        key: KeyArgs {
            keys: vec![KEY.into(), "rotated-in".into()],
            ..KeyArgs::default()
        },
        ..test_args()
    };
    spawn_with(args, None).await
}

/// Every route the store serves, with its path parameters filled in.
async fn every_route(app: &TestApp) -> Vec<(Method, String)> {
    let r = app
        .client
        .get(app.url("/openapi.json"))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let doc = expect_json(r, StatusCode::OK).await;
    let mut routes = Vec::new();
    for (path, methods) in doc["paths"].as_object().unwrap() {
        let path = path
            .split('/')
            .map(|seg| if seg.starts_with('{') { "x" } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods.as_object().unwrap().keys() {
            routes.push((
                Method::from_bytes(method.to_uppercase().as_bytes()).unwrap(),
                path.clone(),
            ));
        }
    }
    assert!(routes.len() > 25, "the document lists the current protocol");
    let others = [
        // The reference's /agl/v1 and the flat 0.2.2 routes.
        ("POST", "/agl/v1/rollouts"),
        ("GET", "/agl/v1/rollouts"),
        ("POST", "/agl/v1/queues/rollouts/dequeue"),
        ("POST", "/agl/v1/spans"),
        ("POST", "/enqueue_rollout"),
        ("GET", "/dequeue_rollout"),
        ("POST", "/query_rollouts"),
        ("GET", "/get_rollout_by_id/x"),
        ("POST", "/add_span"),
        ("POST", "/wait_for_rollouts"),
        // Upstream v1.
        ("POST", "/api/rollouts"),
        ("GET", "/api/rollouts?state_in=queuing"),
        ("GET", "/api/rollouts/terminal"),
        ("GET", "/api/rollouts/x"),
        ("PATCH", "/api/rollouts/x"),
        ("DELETE", "/api/rollouts/x"),
        ("POST", "/api/rollouts/x/attempt/0/events"),
        ("GET", "/api/rollouts/x/events"),
        // OTLP, the 0.3 server's metrics, backups, the API document, and no route at all.
        ("POST", "/v1/traces"),
        ("POST", "/v1/metrics"),
        ("GET", "/v1/prometheus"),
        ("POST", "/admin/backup"),
        ("GET", "/openapi.json"),
        ("GET", "/no/such/route"),
        // The dashboard and its assets.
        ("GET", "/"),
        ("GET", "/ui/rollouts"),
        ("GET", "/ui/rollouts/x"),
        ("GET", "/ui/rollouts/x/spans/y"),
        ("GET", "/ui/resources"),
        ("GET", "/ui/workers"),
        ("GET", "/ui/api"),
    ];
    routes.extend(
        others
            .iter()
            .map(|(m, p)| (Method::from_bytes(m.as_bytes()).unwrap(), (*p).to_owned())),
    );
    routes
}

#[tokio::test]
async fn no_route_answers_without_the_key() {
    let app = keyed().await;
    for (method, path) in every_route(&app).await {
        if OPEN.contains(&path.as_str()) {
            continue;
        }
        let r = app
            .client
            .request(method.clone(), app.url(&path))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let challenges: Vec<_> = r.headers().get_all("www-authenticate").iter().collect();
        assert_eq!(
            challenges,
            [
                r#"Bearer realm="agl""#,
                r#"Basic realm="agl", charset="UTF-8""#
            ],
            "{method} {path}"
        );
        let body = expect_json(r, StatusCode::UNAUTHORIZED).await;
        assert_eq!(
            body,
            json!({"detail": "Invalid or missing API key"}),
            "{method} {path}"
        );
        // A wrong key is no key.
        let r = app
            .client
            .request(method.clone(), app.url(&path))
            .bearer_auth("k3y-for-test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    for open in OPEN {
        let r = app.get(open).await;
        assert_eq!(r.status(), StatusCode::OK, "{open}");
    }
    let metrics = app.get("/metrics").await.text().await.unwrap();
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"agl_auth_failures_total{kind="api"} "#))
        .expect("the refusals are counted")
        .parse()
        .unwrap();
    assert!(refused >= 100.0, "{refused}");
}

#[tokio::test]
async fn every_form_of_the_key_gets_through() {
    let app = keyed().await;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("agl:{KEY}"));
    let forms: [(&str, String); 4] = [
        ("authorization", format!("Bearer {KEY}")),
        ("authorization", "Bearer rotated-in".to_owned()),
        ("x-api-key", KEY.to_owned()),
        ("authorization", format!("Basic {basic}")),
    ];
    for (name, value) in forms {
        let r = app
            .client
            .post(app.url("/api/rollouts"))
            .header(name, &value)
            .json(&json!([{"input": 1}]))
            .send()
            .await
            .unwrap();
        let created: Value = expect_json(r, StatusCode::CREATED).await;
        assert_eq!(created[0]["status"]["state"], "queuing", "{name}");
    }
    // A browser's CORS preflight carries no credentials.
    let r = app
        .client
        .request(Method::OPTIONS, app.url("/v1/agl/rollouts"))
        .header("origin", "http://example.test")
        .header("access-control-request-method", "GET")
        .send()
        .await
        .unwrap();
    assert_ne!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_admin_key_alone_opens_backups_and_metrics_can_require_a_key() {
    let args = StoreArgs {
        key: KeyArgs {
            keys: vec![KEY.into()],
            admin_keys: vec!["adm1n-key".into()],
            metrics_require_key: true,
            ..KeyArgs::default()
        },
        ..test_args()
    };
    let app = spawn_with(args, None).await;
    let backup = |key: &'static str| {
        app.client
            .post(app.url("/admin/backup"))
            .bearer_auth(key)
            .json(&json!({}))
            .send()
    };
    let r = backup(KEY).await.unwrap();
    let body = expect_json(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(body["detail"], "Invalid or missing admin key");
    let r = backup("adm1n-key").await.unwrap();
    assert_ne!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "the admin key opens it"
    );
    // The admin key opens the ordinary routes too.
    let r = app
        .client
        .get(app.url("/v1/agl/rollouts"))
        .bearer_auth("adm1n-key")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for path in ["/metrics", "/v1/prometheus"] {
        assert_eq!(
            app.get(path).await.status(),
            StatusCode::UNAUTHORIZED,
            "{path}"
        );
        let r = app
            .client
            .get(app.url(path))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
    }
    for path in ["/livez", "/readyz", "/healthz"] {
        assert_eq!(app.get(path).await.status(), StatusCode::OK, "{path}");
    }
}
