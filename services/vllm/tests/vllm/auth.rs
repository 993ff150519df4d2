//! Keys on the proxy: with one set, no route but vLLM's health answers without it, pause
//! and resume need the admin key, and the calls it records reach a keyed store (exports
//! and sequence ids carry the store's key).

use agl_vllm::double::{Double, DoubleConfig};
use reqwest::Method;
use serde_json::Value;

use crate::helpers::{Proxy, Store, by_name, chat, client, proxy_args};

const KEY: &str = "proxy-k3y";
const ADMIN: &str = "proxy-adm1n";
const STORE_KEY: &str = "store-k3y";

/// Every route of the proxy's router, ids filled in.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/rollout/ro-x/attempt/at-x/v1/chat/completions"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/models"),
    ("GET", "/version"),
    ("POST", "/tokenize"),
    ("POST", "/detokenize"),
    ("GET", "/load"),
    ("GET", "/agl/status"),
    ("GET", "/proxy/state"),
    ("GET", "/no/such/route"),
];
const ADMIN_ROUTES: &[(&str, &str)] = &[("POST", "/proxy/pause"), ("POST", "/proxy/resume")];

async fn status(url: &str, method: &str, path: &str, key: Option<&str>) -> u16 {
    let mut request = client()
        .request(
            Method::from_bytes(method.as_bytes()).unwrap(),
            format!("{url}{path}"),
        )
        .json(&chat("hi"));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn no_route_answers_without_the_key_and_records_reach_a_keyed_store() {
    let double = Double::start(DoubleConfig::default()).await.unwrap();
    let store = Store::start_keyed(Some(STORE_KEY)).await;
    let mut args = proxy_args(Some(&store));
    args.key.keys = vec![KEY.into()];
    args.key.admin_keys = vec![ADMIN.into()];
    args.store_key = Some(STORE_KEY.into());
    let proxy = Proxy::start(&args, &double.url()).await;
    proxy.ready().await;

    for (method, path) in ROUTES {
        assert_eq!(
            status(&proxy.url, method, path, None).await,
            401,
            "{method} {path}"
        );
        assert_eq!(
            status(&proxy.url, method, path, Some("wrong")).await,
            401,
            "{method} {path}"
        );
    }
    for (method, path) in ADMIN_ROUTES {
        for key in [None, Some(KEY)] {
            assert_eq!(
                status(&proxy.url, method, path, key).await,
                401,
                "{method} {path}"
            );
        }
        assert_eq!(
            status(&proxy.url, method, path, Some(ADMIN)).await,
            200,
            "{path}"
        );
    }
    for path in [
        "/health",
        "/ping",
        "/livez",
        "/readyz",
        "/metrics",
        "/agl/metrics",
    ] {
        assert_ne!(status(&proxy.url, "GET", path, None).await, 401, "{path}");
    }

    // An agent's call with the key is served and recorded in the keyed store.
    let rollout = store.rollout().await;
    let url = format!(
        "{}/rollout/{}/attempt/{}/v1/chat/completions",
        proxy.url, rollout.0, rollout.1
    );
    let r = client()
        .post(&url)
        .bearer_auth(KEY)
        .json(&chat("two plus two"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let _: Value = r.json().await.unwrap();
    let spans = store.wait_spans(&rollout.0, 1).await;
    let root = by_name(&spans, "Received Proxy Server Request");
    assert_eq!(root.len(), 1, "{spans:?}");
    assert_eq!(
        root[0]["sequence_id"], 1,
        "the sequence id came from the keyed store"
    );
    assert_eq!(
        proxy
            .metric(r#"agl_vllm_export_spans_total{outcome="failed"}"#)
            .await,
        0.0
    );

    proxy.stop().await;
    double.stop().await;
    store.stop().await;
}
