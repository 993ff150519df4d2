//! Upstream v1's capturing proxy on the store's port:
//! `POST /proxy/rollout/{rid}/attempt/{aid}/mode/{train|val}/openai/v1/{chat/completions|completions}`
//! forwards an agent's call to a model server registered for the configured model, and
//! records it as a `model_request` event of the rollout; `POST /proxy/pause`,
//! `POST /proxy/resume` and `GET /proxy/state` let a trainer drain calls before a weight
//! sync.
//!
//! The forwarding, the response tee, stream assembly and the pause gate are the shared
//! engine's (`agl-llm-proxy`, as agl-vllm uses them); what is v1's is here: the checks in
//! upstream's order (404 mode or path, 404 rollout, 400 body, 503 no server, 429 paused),
//! the forced model and temperature per mode, the endpoint chosen per rollout by a hash of
//! its id among the registered ones sorted by URL (for prefix-cache reuse), upstream's retry
//! policy (6 attempts on timeouts, transport errors, 408, 409, 429 and 5xx, backoff
//! `min(0.5·2^i, 8)·U(0.75, 1.25)` (the base is a flag), then 504 or 502 and no event) and
//! the event's shape.
//! Beyond upstream: `stream: true` is served (the stream passes through as it comes, and
//! the event holds the response it adds up to, token ids included) instead of a 400.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agl_llm_proxy::call::{CallRecord, Endpoint, Outcome};
use agl_llm_proxy::pause::{Gate, Pass, Refusal};
use agl_llm_proxy::relay::{Tee, error_chain, response_headers};
use agl_llm_proxy::rewrite;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::core::Store;
use crate::model::V1Model;

/// Upstream's number of tries of one call.
const ATTEMPTS: usize = 6;

/// How v1's proxy rewrites calls (upstream's `default_proxy`).
#[derive(Debug, Clone, clap::Args)]
pub struct V1ProxyArgs {
    /// The model v1's proxy serves (upstream's default_proxy.model_name): every call goes,
    /// under this name, to a server registered for it with POST /api/models
    #[arg(
        long = "proxy-model-name",
        env = "AGL_PROXY_MODEL_NAME",
        value_name = "NAME",
        default_value = "Qwen/Qwen2.5-7B-Instruct"
    )]
    pub model_name: String,

    /// Ask for logprobs on train calls (default_proxy.include_log_probs)
    #[arg(
        long = "proxy-include-log-probs",
        env = "AGL_PROXY_INCLUDE_LOG_PROBS",
        value_name = "BOOL",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub include_log_probs: bool,

    /// Ask for the routed experts of MoE models on train calls
    /// (default_proxy.include_routed_experts)
    #[arg(
        long = "proxy-include-routed-experts",
        env = "AGL_PROXY_INCLUDE_ROUTED_EXPERTS",
        value_name = "BOOL",
        default_value_t = false,
        action = clap::ArgAction::Set
    )]
    pub include_routed_experts: bool,

    /// Temperature of train calls (default_proxy.train.temperature)
    #[arg(
        long = "proxy-train-temperature",
        env = "AGL_PROXY_TRAIN_TEMPERATURE",
        value_name = "T",
        default_value_t = 1.0
    )]
    pub train_temperature: f64,

    /// Temperature of val calls (default_proxy.val.temperature)
    #[arg(
        long = "proxy-val-temperature",
        env = "AGL_PROXY_VAL_TEMPERATURE",
        value_name = "T",
        default_value_t = 0.7
    )]
    pub val_temperature: f64,

    /// How long one try of a call may take before it is retried (upstream: 300)
    #[arg(
        long = "proxy-upstream-timeout-seconds",
        env = "AGL_PROXY_UPSTREAM_TIMEOUT_SECONDS",
        value_name = "S",
        default_value_t = 300.0
    )]
    pub upstream_timeout_seconds: f64,

    /// Largest response kept for the event (a larger one is relayed, and recorded
    /// without its body)
    #[arg(
        long = "proxy-max-record-bytes",
        env = "AGL_PROXY_MAX_RECORD_BYTES",
        value_name = "BYTES",
        default_value_t = 64 << 20
    )]
    pub max_record_bytes: usize,

    /// The first pause before a call is tried again (upstream: 0.5); each next one doubles,
    /// up to 16 times this, with ±25 % jitter
    #[arg(
        long = "proxy-retry-backoff-seconds",
        env = "AGL_PROXY_RETRY_BACKOFF_SECONDS",
        value_name = "S",
        default_value_t = 0.5
    )]
    pub retry_backoff_seconds: f64,
}

impl Default for V1ProxyArgs {
    fn default() -> Self {
        Self {
            model_name: "Qwen/Qwen2.5-7B-Instruct".into(),
            include_log_probs: true,
            include_routed_experts: false,
            train_temperature: 1.0,
            val_temperature: 0.7,
            upstream_timeout_seconds: 300.0,
            max_record_bytes: 64 << 20,
            retry_backoff_seconds: 0.5,
        }
    }
}

/// The proxy's state: its settings, its client and its gate.
pub struct V1Proxy {
    args: V1ProxyArgs,
    client: reqwest::Client,
    gate: Arc<Gate>,
}

/// An answer of the proxy other than the model server's.
fn detail(status: StatusCode, message: &str) -> Response {
    agl_common::http::error_json(status, message)
}

/// Train or val.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Train,
    Val,
}

impl V1Proxy {
    pub fn new(args: V1ProxyArgs) -> anyhow::Result<Self> {
        let timeout = Duration::try_from_secs_f64(args.upstream_timeout_seconds.max(0.001))
            .unwrap_or(Duration::from_secs(300));
        let client = agl_common::tls::http_client()
            .timeout(timeout)
            .no_proxy()
            .build()?;
        Ok(Self {
            args,
            client,
            gate: Arc::new(Gate::default()),
        })
    }

    /// The pause gate (`/proxy/pause`, `/proxy/resume`, `/proxy/state`).
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The server of `rollout_id` among those registered for the model: sorted by URL,
    /// chosen by the first 8 bytes of the id's SHA-256, as upstream does.
    fn select<'a>(&self, models: &'a [V1Model], rollout_id: &str) -> Option<&'a V1Model> {
        let mut pool: Vec<&V1Model> = models
            .iter()
            .filter(|m| m.model == self.args.model_name)
            .collect();
        if pool.is_empty() {
            return None;
        }
        pool.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        let digest = Sha256::digest(rollout_id.as_bytes());
        let first = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        let index = usize::try_from(first % pool.len() as u64).expect("below the pool's length");
        Some(pool[index])
    }

    /// The body the model server gets: the model and temperature of the mode, token ids,
    /// and on train calls logprobs (and routed experts) as configured.
    fn prepare(&self, body: &mut Map<String, Value>, endpoint: Endpoint, mode: Mode, stream: bool) {
        body.insert("model".into(), Value::String(self.args.model_name.clone()));
        let temperature = match mode {
            Mode::Train => self.args.train_temperature,
            Mode::Val => self.args.val_temperature,
        };
        body.insert("temperature".into(), json!(temperature));
        let train = mode == Mode::Train;
        rewrite::ask_for_tokens(body, endpoint, train && self.args.include_log_probs);
        if train && self.args.include_routed_experts {
            body.insert("return_routed_experts".into(), Value::Bool(true));
        }
        if stream {
            rewrite::ask_for_stream_usage(body);
        }
    }

    /// Sends the call with upstream's retries; the response to relay, and the retries it
    /// took, or the answer to give instead (502, 504).
    async fn send(&self, url: &str, body: &Bytes) -> Result<(reqwest::Response, usize), Response> {
        // The model server (vLLM with --otlp-traces-endpoint) continues this request's trace.
        let mut trace = header::HeaderMap::new();
        agl_common::ops::inject_trace_context(&mut trace);
        for attempt in 0..ATTEMPTS {
            let last = attempt + 1 == ATTEMPTS;
            let sent = self
                .client
                .post(url)
                .headers(trace.clone())
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.clone())
                .send()
                .await;
            let reason = match sent {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retryable = matches!(status, 408 | 409 | 429) || status >= 500;
                    if !retryable || last {
                        return Ok((response, attempt));
                    }
                    format!("status {status}")
                }
                Err(err) if last && err.is_timeout() => {
                    return Err(detail(
                        StatusCode::GATEWAY_TIMEOUT,
                        "Upstream model server timed out",
                    ));
                }
                Err(err) if last => {
                    tracing::warn!(url, error = error_chain(&err), "model server unreachable");
                    return Err(detail(
                        StatusCode::BAD_GATEWAY,
                        "Upstream model server request failed",
                    ));
                }
                Err(err) => error_chain(&err),
            };
            let base = self.args.retry_backoff_seconds.max(0.0);
            let delay = (base * 2f64.powi(i32::try_from(attempt).unwrap_or(i32::MAX)))
                .min(base * 16.0)
                * (0.75 + fastrand::f64() * 0.5);
            tracing::warn!(
                url,
                attempt = attempt + 1,
                delay,
                reason,
                "retrying the model server"
            );
            tokio::time::sleep(Duration::from_secs_f64(delay)).await;
        }
        unreachable!("the last attempt returns")
    }
}

/// What an event is recorded with besides the response.
struct Call {
    store: Arc<Store>,
    rollout_id: String,
    attempt_id: String,
    server: V1Model,
    request: Value,
    retries: usize,
    started: Instant,
}

impl Call {
    /// Records the call as a `model_request` event, the routed experts taken out of the
    /// response beside it (a failure to is logged: the agent has its answer either way).
    async fn record(self, status: u16, response: Value, routed_experts: Value, latency: Duration) {
        let choice = response
            .get("choices")
            .and_then(Value::as_array)
            .and_then(|c| c.first());
        let finish_reason = choice
            .and_then(|c| c.get("finish_reason"))
            .and_then(Value::as_str)
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        let usage = response.get("usage").filter(|u| u.is_object()).cloned();
        let data = json!({
            "model": self.server.model,
            "model_version": self.server.version,
            "request": self.request,
            "response": response,
            "server": {"model": self.server.model, "endpoint": self.server.endpoint,
                       "version": self.server.version},
            "latency_ms": latency.as_secs_f64() * 1000.0,
            "http_status": status,
            "status": if status < 400 { "ok" } else { "error" },
            "retry_count": self.retries,
            "routed_experts": routed_experts,
            "usage": usage,
            "finish_reason": finish_reason,
        });
        let data = serde_json::to_string(&data).expect("JSON serializes");
        let span = match super::events::event_span(
            &self.rollout_id,
            &self.attempt_id,
            "model_request",
            &data,
            self.store.now(),
        ) {
            Ok(span) => span,
            Err(err) => {
                tracing::warn!(error = %err, "a model call too large to record");
                return;
            }
        };
        if let Err(err) = self.store.v1_add_event(&self.rollout_id, span).await {
            tracing::warn!(rollout_id = self.rollout_id, error = %err, "model call not recorded");
        }
    }
}

/// The routed experts of the first choice that has them, taken out of the response (the
/// event keeps them beside it, as upstream does).
fn pop_routed_experts(response: &mut Value) -> Value {
    let Some(choices) = response.get_mut("choices").and_then(Value::as_array_mut) else {
        return Value::Null;
    };
    for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
        if let Some(routes) = choice.remove("routed_experts").filter(|r| !r.is_null()) {
            return routes;
        }
    }
    Value::Null
}

/// One proxied call, from the path's parts and the body.
pub async fn forward(
    proxy: Arc<V1Proxy>,
    store: Arc<Store>,
    (rollout_id, attempt_id, mode, path): (String, String, String, String),
    body: Bytes,
) -> Response {
    let mode = match mode.as_str() {
        "train" => Mode::Train,
        "val" => Mode::Val,
        other => {
            return detail(
                StatusCode::NOT_FOUND,
                &format!("Unsupported proxy mode: {other}"),
            );
        }
    };
    let endpoint = match path.as_str() {
        "chat/completions" => Endpoint::Chat,
        "completions" => Endpoint::Completions,
        other => {
            return detail(
                StatusCode::NOT_FOUND,
                &format!("Unsupported upstream path: {other}"),
            );
        }
    };
    match store.get_rollout(&rollout_id).await {
        Ok(Some(_)) => {}
        Ok(None) => {
            return detail(
                StatusCode::NOT_FOUND,
                &format!("Rollout not found: {rollout_id}"),
            );
        }
        Err(err) => return detail(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    }
    let mut request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => return detail(StatusCode::BAD_REQUEST, "Invalid JSON in request body"),
        }
    };
    let Some(object) = request.as_object_mut() else {
        return detail(
            StatusCode::BAD_REQUEST,
            "Request body must be a JSON object",
        );
    };
    let models = match store.v1_models().await {
        Ok(models) => models,
        Err(err) => return detail(StatusCode::SERVICE_UNAVAILABLE, &err.to_string()),
    };
    let Some(server) = proxy.select(&models, &rollout_id).cloned() else {
        return detail(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("No servers available for model '{}'", proxy.args.model_name),
        );
    };
    let pass = match proxy.gate.enter() {
        Ok(pass) => pass,
        Err(refusal) => return refused(refusal),
    };
    let stream = match rewrite::wants_stream(object) {
        Ok(stream) => stream,
        Err(message) => return detail(StatusCode::BAD_REQUEST, message),
    };
    proxy.prepare(object, endpoint, mode, stream);
    let sent_body = Bytes::from(serde_json::to_vec(&request).expect("JSON serializes"));
    let url = format!("{}/{path}", server.endpoint.trim_end_matches('/'));
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let (response, retries) = match proxy.send(&url, &sent_body).await {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    let call = Call {
        store,
        rollout_id,
        attempt_id,
        server,
        request,
        retries,
        started,
    };
    let status = response.status();
    if stream && status.is_success() {
        return relay_stream(response, call, endpoint, started_wall, &proxy, pass);
    }
    // Read whole: the answer is the model server's JSON (its status kept), routed experts
    // taken out of it; a body that is not JSON reads as `{}`, as upstream's does.
    let json_type = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let bytes = match response.bytes().await {
        Ok(bytes) => bytes,
        Err(err) => {
            tracing::warn!(
                url,
                error = error_chain(&err),
                "the model server's answer broke off"
            );
            return detail(
                StatusCode::BAD_GATEWAY,
                "Upstream model server request failed",
            );
        }
    };
    let latency = call.started.elapsed();
    let mut answer: Value = if json_type {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| json!({}))
    } else {
        json!({})
    };
    let routes = pop_routed_experts(&mut answer);
    // Recorded before the agent has its answer, as upstream records it: a trainer that
    // reads the events once the agent is done finds the call.
    call.record(status.as_u16(), answer.clone(), routes, latency)
        .await;
    drop(pass);
    agl_common::http::json(status, &answer)
}

/// Relays a stream as it comes; once it ends, the response it adds up to is the event's.
fn relay_stream(
    response: reqwest::Response,
    call: Call,
    endpoint: Endpoint,
    started_wall: SystemTime,
    proxy: &V1Proxy,
    pass: Pass,
) -> Response {
    let status = response.status();
    let mut builder = Response::builder().status(status);
    if let Some(out) = builder.headers_mut() {
        response_headers(response.headers(), out);
    }
    let record = CallRecord {
        endpoint,
        stream: true,
        tracking: None,
        path: String::new(),
        request: Value::Null,
        started_wall,
        started: call.started,
        sent: call.started,
        status: Some(status.as_u16()),
        chunks: Vec::new(),
        truncated: false,
        ended: call.started,
        outcome: Outcome::Completed,
    };
    let sink = Box::new(move |record: CallRecord| {
        // An agent that went away gets no event, as upstream's cancelled call has none.
        if record.outcome == Outcome::ClientDisconnected {
            return;
        }
        let parsed = record.parse();
        let latency = record.ended.saturating_duration_since(record.started);
        let mut response = parsed.response.unwrap_or_else(|| json!({}));
        let routes = pop_routed_experts(&mut response);
        // The stream's end runs on the connection's task: the write goes on its own, and
        // the call counts as in flight until it is written (a trainer that waits for none
        // in flight then finds it).
        tokio::spawn(async move {
            call.record(status.as_u16(), response, routes, latency)
                .await;
            drop(pass);
        });
    });
    let tee = Tee::new(
        response,
        record,
        proxy.args.max_record_bytes,
        sink,
        Box::new(()),
    );
    builder.body(Body::from_stream(tee)).unwrap_or_else(|_| {
        detail(
            StatusCode::BAD_GATEWAY,
            "Upstream model server request failed",
        )
    })
}

/// Paused: upstream's 429; draining (shutdown): 503.
fn refused(refusal: Refusal) -> Response {
    match refusal {
        Refusal::Paused {
            retry_after_seconds,
            reason,
        } => {
            let mut response = agl_common::http::json(
                StatusCode::TOO_MANY_REQUESTS,
                &agl_llm_proxy::pause::paused_body(reason.as_deref()),
            );
            response
                .headers_mut()
                .extend(agl_llm_proxy::pause::paused_headers(retry_after_seconds));
            response
        }
        Refusal::Draining => detail(
            StatusCode::SERVICE_UNAVAILABLE,
            "the store is shutting down",
        )
        .into_response(),
    }
}
