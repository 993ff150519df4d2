//! A stack on loopback ports (the vLLM double, a real agl-store, the proxy), clients, and
//! polling helpers. Everything binds port 0; every wait is a bounded poll.

use std::future::Future;
use std::time::{Duration, Instant};

use agl_vllm::ProxyArgs;
use agl_vllm::double::{Double, DoubleConfig};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A real LightningStore in this process.
pub struct Store {
    pub url: String,
    key: Option<String>,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

impl Store {
    pub async fn start() -> Self {
        Self::start_keyed(None).await
    }

    /// A store that requires `key` on every route, when there is one.
    pub async fn start_keyed(key: Option<&str>) -> Self {
        let app = agl_store::App::build(&agl_store::StoreArgs {
            host: "127.0.0.1".into(),
            port: 0,
            key: agl_common::auth::KeyArgs {
                keys: key.map(str::to_owned).into_iter().collect(),
                ..Default::default()
            },
            ..agl_store::StoreArgs::default()
        })
        .await
        .expect("store builds");
        let url = format!("http://{}", app.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            key: key.map(str::to_owned),
            stop: Some(stop),
            handle,
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.handle).await;
    }

    fn client(&self) -> reqwest::Client {
        agl_common::auth::sending_key(
            agl_common::tls::http_client().no_proxy(),
            self.key.as_deref(),
        )
        .unwrap()
        .build()
        .unwrap()
    }

    /// A new rollout with its first attempt: `(rollout_id, attempt_id)`.
    pub async fn rollout(&self) -> (String, String) {
        let body: Value = self
            .client()
            .post(format!("{}/v1/agl/rollouts", self.url))
            .json(&json!({"input": {"task": "agl-vllm test"}}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            body["rollout_id"].as_str().unwrap().to_owned(),
            body["attempt"]["attempt_id"].as_str().unwrap().to_owned(),
        )
    }

    /// The spans stored for `rollout_id`.
    pub async fn spans(&self, rollout_id: &str) -> Vec<Value> {
        let body: Value = self
            .client()
            // Store ids are url-safe (`ro-…`), no encoding needed.
            .get(format!("{}/v1/agl/spans?rollout_id={rollout_id}", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["items"].as_array().cloned().unwrap_or_default()
    }

    /// Waits until `n` spans of `rollout_id` are stored; returns them.
    pub async fn wait_spans(&self, rollout_id: &str, n: usize) -> Vec<Value> {
        eventually(
            Duration::from_secs(15),
            &format!("{n} spans of {rollout_id}"),
            || async {
                let spans = self.spans(rollout_id).await;
                (spans.len() >= n).then_some(spans)
            },
        )
        .await
    }
}

/// The proxy in this process.
pub struct Proxy {
    pub url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Proxy flags for tests: loopback, port 0, short intervals.
pub fn proxy_args(store: Option<&Store>) -> ProxyArgs {
    ProxyArgs {
        host: "127.0.0.1".into(),
        port: 0,
        store_url: store.map(|s| s.url.clone()),
        export_interval_seconds: 0.05,
        health_interval_seconds: 0.2,
        shutdown_timeout_seconds: 5.0,
        ..ProxyArgs::default()
    }
}

impl Proxy {
    pub async fn start(args: &ProxyArgs, upstream: &str) -> Self {
        let app = agl_vllm::App::build(args, upstream, None)
            .await
            .expect("proxy builds");
        let url = format!("http://{}", app.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            stop: Some(stop),
            handle,
        }
    }

    /// Waits for `/readyz` to say ready (vLLM answered).
    pub async fn ready(&self) {
        let url = format!("{}/readyz", self.url);
        eventually(Duration::from_secs(10), "the proxy to be ready", || async {
            let r = client().get(&url).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("proxy stops")
            .unwrap()
            .unwrap();
    }

    /// One line of `/metrics` as a number, `0` when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .unwrap_or(0.0)
    }
}

/// The double, the store and the proxy between them.
pub struct Stack {
    pub double: Double,
    pub store: Store,
    pub proxy: Proxy,
}

impl Stack {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ProxyArgs)) -> Self {
        let double = Double::start(DoubleConfig::default()).await.unwrap();
        let store = Store::start().await;
        let mut args = proxy_args(Some(&store));
        configure(&mut args);
        let proxy = Proxy::start(&args, &double.url()).await;
        proxy.ready().await;
        Self {
            double,
            store,
            proxy,
        }
    }

    /// The OpenAI base URL of an attempt, as upstream's `LLMProxy.as_resource` gives it.
    pub fn base(&self, rollout: &(String, String)) -> String {
        format!(
            "{}/rollout/{}/attempt/{}/v1",
            self.proxy.url, rollout.0, rollout.1
        )
    }

    pub async fn stop(self) {
        self.proxy.stop().await;
        self.double.stop().await;
        self.store.stop().await;
    }
}

pub fn client() -> reqwest::Client {
    agl_common::tls::http_client()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Posts JSON; returns status, content type and the exact body bytes.
pub async fn post(url: &str, body: &Value) -> (u16, String, Vec<u8>) {
    let response = client().post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    (
        status,
        content_type,
        response.bytes().await.unwrap().to_vec(),
    )
}

/// A chat request for the double's model.
pub fn chat(text: &str) -> Value {
    json!({"model": "agl-model", "messages": [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": text},
    ]})
}

/// Polls `check` every 20 ms until it returns `Some`, failing after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Spans by name.
pub fn by_name<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

/// A list of ids as Python prints it.
pub fn py_list(ids: &[u64]) -> String {
    format!(
        "[{}]",
        ids.iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// SSE `data:` payloads of a body.
pub fn sse_data(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: ").map(str::to_owned))
        .collect()
}
