//! Keys on the AgentOps endpoint: with one set, the SDK's token is handed out only for a
//! valid `api_key`, every SDK route needs that token (or a key), the inspection routes and
//! the dashboard's pages need the admin key, and health and the dashboard's assets stay open.

use agl_agentops::AgentopsArgs;
use agl_common::auth::KeyArgs;
use reqwest::Method;
use serde_json::json;

use crate::helpers::{TestServer, spawn_with, test_args};

/// UUID-shaped: the 0.4.13 – 0.4.18 SDKs refuse any other API key before sending it.
const KEY: &str = "6a1f3c2e-9b7d-4e8a-a0c4-1f2e3d4c5b6a";
const ADMIN: &str = "admin-0f9e8d7c";

/// Every route the endpoint serves (the module table of `api.rs`), ids filled in; `GET /`
/// only leads to the dashboard.
const SDK_ROUTES: &[(&str, &str)] = &[
    ("POST", "/v1/traces"),
    ("POST", "/traces"),
    ("POST", "/"),
    ("POST", "/v1/metrics"),
    ("POST", "/v1/logs"),
    ("POST", "/v4/logs/upload/"),
    ("POST", "/v4/objects/upload/"),
    ("GET", "/sessions?trace_id=1"),
    ("GET", "/"),
    ("GET", "/no/such/route"),
];
const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/_agl/traces"),
    ("GET", "/_agl/traces/x"),
    ("GET", "/_agl/traces/x/logs"),
    ("GET", "/_agl/spans"),
    ("GET", "/_agl/logs"),
    ("GET", "/_agl/logs/x"),
    ("GET", "/_agl/objects"),
    ("GET", "/_agl/objects/x"),
    ("GET", "/_agl/counters"),
    ("POST", "/_agl/reset"),
    // The dashboard's pages show what the inspection routes show.
    ("GET", "/ui/traces"),
    ("GET", "/ui/traces?offset=0&limit=10"),
    ("GET", "/ui/traces/x"),
    ("GET", "/ui/traces/x/spans/y"),
];

async fn keyed() -> TestServer {
    spawn_with(AgentopsArgs {
        key: KeyArgs {
            keys: vec![KEY.into()],
            admin_keys: vec![ADMIN.into()],
            ..KeyArgs::default()
        },
        ..test_args()
    })
    .await
}

async fn status(s: &TestServer, method: &str, path: &str, bearer: Option<&str>) -> u16 {
    let mut request = s
        .client
        .request(Method::from_bytes(method.as_bytes()).unwrap(), s.url(path))
        .header("content-type", "application/json")
        .body("{}");
    if let Some(key) = bearer {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_token_needs_a_key_and_opens_the_sdk_routes_only() {
    let s = keyed().await;
    for body in [
        json!({}),
        json!({"api_key": "wrong"}),
        json!({"api_key": ""}),
    ] {
        let (code, answer) = s.post_json("/v3/auth/token", &body).await;
        assert_eq!(code, 401, "{body}");
        assert_eq!(answer["detail"], "Invalid or missing API key");
    }
    let (code, answer) = s
        .post_json("/v3/auth/token", &json!({"api_key": KEY}))
        .await;
    assert_eq!(code, 200, "{answer}");
    let token = answer["token"].as_str().unwrap().to_owned();

    for (method, path) in SDK_ROUTES {
        assert_eq!(status(&s, method, path, None).await, 401, "{method} {path}");
        assert_eq!(
            status(&s, method, path, Some("wrong")).await,
            401,
            "{method} {path}"
        );
        for key in [token.as_str(), KEY, ADMIN] {
            assert_ne!(
                status(&s, method, path, Some(key)).await,
                401,
                "{method} {path}"
            );
        }
    }
    for (method, path) in ADMIN_ROUTES {
        for key in [None, Some(token.as_str()), Some(KEY)] {
            assert_eq!(status(&s, method, path, key).await, 401, "{method} {path}");
        }
        assert_ne!(
            status(&s, method, path, Some(ADMIN)).await,
            401,
            "{method} {path}"
        );
    }
    for path in [
        "/health",
        "/healthz",
        "/livez",
        "/readyz",
        "/metrics",
        "/ui/assets/agl.css",
        "/ui/assets/agl.js",
        "/ui/assets/icon.svg",
    ] {
        assert_eq!(status(&s, "GET", path, None).await, 200, "{path}");
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("agl_agentops_auth_refused_total 3"),
        "{metrics}"
    );
    assert!(metrics.contains(r#"agl_auth_failures_total{kind="admin"}"#));
}

#[tokio::test]
async fn without_keys_any_api_key_gets_the_token() {
    let s = spawn_with(test_args()).await;
    let (code, _) = s
        .post_json("/v3/auth/token", &json!({"api_key": "anything"}))
        .await;
    assert_eq!(code, 200);
    assert_eq!(status(&s, "GET", "/_agl/counters", None).await, 200);
}
