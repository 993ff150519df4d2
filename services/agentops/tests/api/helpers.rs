//! A server on port 0, a client, and OTLP payload builders.

use std::future::Future;
use std::time::{Duration, Instant};

use agl_agentops::{AgentopsArgs, App};
use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::proto::resource::v1::Resource;
use agl_common::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use agl_common::otlp::string_attribute;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running server.
pub struct TestServer {
    pub base: String,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// Args for a test server: port 0 on loopback, no drain.
pub fn test_args() -> AgentopsArgs {
    AgentopsArgs {
        port: 0,
        host: "127.0.0.1".into(),
        drain_seconds: 0.0,
        shutdown_grace_seconds: 2.0,
        ..AgentopsArgs::default()
    }
}

pub fn client() -> reqwest::Client {
    agl_common::tls::http_client()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn spawn_with(args: AgentopsArgs) -> TestServer {
    let app = App::build(&args).await.expect("server builds");
    let base = app.base_url().to_owned();
    let (tx, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(
        async {
            let _ = rx.await;
        },
        std::future::pending(),
    ));
    TestServer {
        base,
        client: client(),
        stop: Some(tx),
        handle,
    }
}

pub async fn spawn() -> TestServer {
    spawn_with(test_args()).await
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        response.text().await.unwrap()
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Posts an OTLP protobuf body with optional extra headers.
    pub async fn post_otlp(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.unwrap()
    }

    pub async fn counters(&self) -> Value {
        self.get_json("/_agl/counters").await.1["counters"].clone()
    }

    pub async fn token(&self) -> String {
        let (_, body) = self
            .post_json("/v3/auth/token", &serde_json::json!({"api_key": "k"}))
            .await;
        body["token"].as_str().unwrap().to_owned()
    }

    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.handle)
            .await
            .expect("server stops")
            .unwrap()
            .unwrap();
    }
}

/// One resource (the SDK's `service.name`) with one scope holding `spans`.
pub fn spans_request(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![string_attribute("service.name", "agentops")],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// [`spans_request`] of `spans` (`(name, span id byte, parent id byte)`) of the trace whose
/// 16 id bytes are all `trace`.
pub fn trace_request(trace: u8, spans: &[(&str, u8, Option<u8>)]) -> ExportTraceServiceRequest {
    spans_request(
        spans
            .iter()
            .map(|(name, id, parent)| Span {
                trace_id: vec![trace; 16],
                span_id: vec![*id; 8],
                parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
                name: (*name).to_owned(),
                kind: 1,
                start_time_unix_nano: 1_700_000_000_000_000_000,
                end_time_unix_nano: 1_700_000_001_000_000_000,
                attributes: vec![string_attribute("agentops.span.kind", "task")],
                ..Span::default()
            })
            .collect(),
    )
}

/// 32 hex characters of a trace id made of `byte`.
pub fn trace_hex(byte: u8) -> String {
    format!("{byte:02x}").repeat(16)
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
