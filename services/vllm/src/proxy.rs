//! The HTTP side: routes, the request rewrite, and forwarding to vLLM through the shared
//! engine's tee (`agl-llm-proxy`), which lets the response through byte for byte while
//! keeping a copy for the record.
//!
//! | path | what happens |
//! |---|---|
//! | `/rollout/{rollout_id}/attempt/{attempt_id}/{rest}` | forwarded as `/{rest}` (`/v1/` added for OpenAI routes given without it), with `x-rollout-id`/`x-attempt-id`; generation calls also get a sequence id from the store (`x-sequence-id`) and are recorded |
//! | `/rollout/…` in any other form | `404` with the expected form |
//! | `/v1/…` | forwarded as is; generation calls are served untracked |
//! | `/health`, `/version`, `/tokenize`, `/detokenize`, `/ping`, `/load` and any other path | forwarded as is |
//! | `/vllm/metrics` | vLLM's `/metrics` |
//! | `/metrics`, `/agl/metrics` | the proxy's own metrics (added by `agl_common::ops`, and an alias) |
//! | `/agl/status` | the proxy's view of vLLM, the store and the export queue, as JSON |
//! | `POST /proxy/pause`, `POST /proxy/resume`, `GET /proxy/state` | pause new generation calls (`429` with `Retry-After` and `X-Agl-Paused: true`) while those in flight drain, as upstream v1's gateway does before a weight sync |
//!
//! Generation calls (`POST /v1/chat/completions`, `POST /v1/completions`) get
//! `return_token_ids: true` (and, as configured, logprobs, a served model name and a usage
//! chunk on streams). Everything else about requests and responses passes untouched.

use std::error::Error as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use agl_common::http::json;
use agl_common::ops::{Health, Phase};
use agl_llm_proxy::pause::{DEFAULT_RETRY_AFTER_SECONDS, Gate, Pass};
use agl_llm_proxy::relay::{Tee, error_chain, response_headers, upstream_headers};
use agl_llm_proxy::rewrite;
use axum::Router;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use bytes::Bytes;
use prometheus::{Encoder as _, Registry, TextEncoder};
use serde_json::{Map, Value};

use crate::call::{CallRecord, Endpoint, Outcome, Tracking};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::store::StoreClient;
use crate::upstream::Upstream;

/// OpenAI routes an agent may call on a rollout path without the `/v1` prefix (upstream's
/// LiteLLM proxy answered both forms).
const OPENAI_ROUTES: [&str; 9] = [
    "chat/completions",
    "completions",
    "models",
    "embeddings",
    "responses",
    "messages",
    "audio",
    "score",
    "rerank",
];

/// What the proxy adds to generation requests, and its limits.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Ask for logprobs unless the agent did.
    pub logprobs: bool,
    /// Replace `model` with this name (`auto`: the only served model).
    pub served_model: Option<String>,
    /// Ask for a usage chunk on streams.
    pub stream_usage: bool,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest response kept for the record.
    pub max_record_bytes: usize,
    /// Refuse rollout calls the store gives no sequence id.
    pub require_store: bool,
}

/// The proxy's shared state.
pub struct Proxy {
    upstream: Arc<Upstream>,
    client: reqwest::Client,
    store: Option<StoreClient>,
    recorder: Recorder,
    metrics: Arc<Metrics>,
    registry: Registry,
    readiness: Arc<Health>,
    config: ProxyConfig,
    /// Counts generation calls in flight; pauses and drains them.
    gate: Arc<Gate>,
}

/// The parts the proxy is built from.
pub struct ProxyParts {
    /// vLLM.
    pub upstream: Arc<Upstream>,
    /// The client for vLLM.
    pub client: reqwest::Client,
    /// The store, if any.
    pub store: Option<StoreClient>,
    /// Where finished calls go.
    pub recorder: Recorder,
    /// The proxy's metrics.
    pub metrics: Arc<Metrics>,
    /// The registry behind `/metrics`, for `/agl/metrics`.
    pub registry: Registry,
    /// The flag `/readyz` reads.
    pub readiness: Arc<Health>,
    /// Rewrite and limits.
    pub config: ProxyConfig,
}

impl Proxy {
    /// Assembles the proxy.
    pub fn new(parts: ProxyParts) -> Self {
        Self {
            upstream: parts.upstream,
            client: parts.client,
            store: parts.store,
            recorder: parts.recorder,
            metrics: parts.metrics,
            registry: parts.registry,
            readiness: parts.readiness,
            config: parts.config,
            gate: Arc::new(Gate::default()),
        }
    }

    /// vLLM as the proxy sees it.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Turns `/readyz` to draining and refuses new generation calls (503) from now on.
    pub fn start_draining(&self) {
        self.readiness.set(Phase::Draining);
        self.gate.start_draining();
    }

    /// Whether [`Proxy::start_draining`] was called.
    pub fn is_draining(&self) -> bool {
        self.gate.is_draining()
    }

    /// Generation calls in flight.
    pub fn in_flight(&self) -> usize {
        self.gate.in_flight()
    }

    /// Waits until no generation call is in flight, at most `timeout`; whether it got there.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        self.gate.wait_idle(timeout).await
    }

    /// Adds what generation requests get on their way to vLLM.
    fn rewrite(&self, body: &mut Map<String, Value>, endpoint: Endpoint, stream: bool) {
        rewrite::ask_for_tokens(body, endpoint, self.config.logprobs);
        if let Some(model) = &self.config.served_model {
            let name = if model == "auto" {
                self.upstream.single_model()
            } else {
                Some(model.clone())
            };
            if let Some(name) = name {
                body.insert("model".into(), Value::String(name));
            }
        }
        if stream && self.config.stream_usage {
            rewrite::ask_for_stream_usage(body);
        }
    }
}

/// One generation call in flight, in the gate's count and the gauge, while alive.
struct InFlight {
    _pass: Pass,
    proxy: Arc<Proxy>,
}

impl InFlight {
    fn new(proxy: &Arc<Proxy>, pass: Pass) -> Self {
        proxy.metrics.in_flight.inc();
        Self {
            _pass: pass,
            proxy: Arc::clone(proxy),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.proxy.metrics.in_flight.dec();
    }
}

/// The proxy's routes (the operational ones are added by `agl_common::ops`).
pub fn router(proxy: Arc<Proxy>) -> Router {
    Router::new()
        .route(
            "/rollout/{rollout_id}/attempt/{attempt_id}/{*rest}",
            any(tracked),
        )
        .route("/v1/{*rest}", any(passthrough))
        .route("/health", any(passthrough))
        .route("/version", any(passthrough))
        .route("/tokenize", any(passthrough))
        .route("/detokenize", any(passthrough))
        .route("/ping", any(passthrough))
        .route("/load", any(passthrough))
        .route("/vllm/metrics", get(vllm_metrics))
        .route("/agl/metrics", get(own_metrics))
        .route("/agl/status", get(status))
        .route("/proxy/pause", post(pause))
        .route("/proxy/resume", post(resume))
        .route("/proxy/state", get(pause_state))
        .fallback(fallback)
        .with_state(proxy)
}

async fn tracked(
    State(proxy): State<Arc<Proxy>>,
    ids: Result<Path<(String, String, String)>, PathRejection>,
    req: Request,
) -> Response {
    let Path((rollout_id, attempt_id, _)) = match ids {
        Ok(ids) => ids,
        Err(rejection) => {
            return ProxyError::BadRequest(format!(
                "invalid rollout path: {}",
                rejection.body_text().to_lowercase()
            ))
            .into_response();
        }
    };
    if rollout_id.is_empty() || attempt_id.is_empty() {
        return ProxyError::RolloutPath(req.uri().path().to_owned()).into_response();
    }
    // The rest comes from the raw path, so its percent-encoding stays as the agent sent it.
    let rest = req.uri().path().splitn(6, '/').nth(5).unwrap_or_default();
    let path = upstream_path(rest);
    forward(proxy, req, path, Some((rollout_id, attempt_id)))
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn passthrough(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    forward(proxy, req, path, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn fallback(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/rollout" || path.starts_with("/rollout/") {
        return ProxyError::RolloutPath(path).into_response();
    }
    forward(proxy, req, path, None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn vllm_metrics(State(proxy): State<Arc<Proxy>>, req: Request) -> Response {
    forward(proxy, req, "/metrics".to_owned(), None)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn own_metrics(State(proxy): State<Arc<Proxy>>) -> Response {
    let mut out = Vec::new();
    if let Err(err) = TextEncoder::new().encode(&proxy.registry.gather(), &mut out) {
        tracing::error!(error = %err, "failed to encode metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

async fn status(State(proxy): State<Arc<Proxy>>) -> Response {
    let m = &proxy.metrics;
    json(
        StatusCode::OK,
        &serde_json::json!({
            "service": "agl-vllm",
            "version": env!("CARGO_PKG_VERSION"),
            "upstream": proxy.upstream.base(),
            "upstream_ready": proxy.upstream.is_ready(),
            "models": proxy.upstream.models(),
            "vllm_version": proxy.upstream.version(),
            "store": proxy.store.as_ref().map(StoreClient::base),
            "draining": proxy.is_draining(),
            "in_flight": proxy.in_flight(),
            "export_queue": m.export_queue.get(),
            "restarts": m.restarts.get(),
        }),
    )
}

/// `POST /proxy/pause` `{retry_after_seconds = 5, reason}`: new generation calls get 429
/// until resumed; those in flight finish (`inflight` counts them), as upstream v1's gateway
/// does before a weight sync.
async fn pause(State(proxy): State<Arc<Proxy>>, body: Bytes) -> Response {
    let request: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => {
                return ProxyError::BadRequest(format!("request body is not valid json: {e}"))
                    .into_response();
            }
        }
    };
    let Some(object) = request.as_object() else {
        return ProxyError::BadRequest("request body must be a json object".into()).into_response();
    };
    let retry_after = match object.get("retry_after_seconds") {
        None => DEFAULT_RETRY_AFTER_SECONDS,
        Some(v) => match v.as_u64() {
            Some(n) => n,
            None => {
                return ProxyError::BadRequest(
                    "retry_after_seconds must be a whole number of seconds".into(),
                )
                .into_response();
            }
        },
    };
    let reason = match object.get("reason") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return ProxyError::BadRequest("reason must be a string".into()).into_response();
        }
    };
    tracing::info!(
        retry_after,
        reason = reason.as_deref(),
        "generation calls paused"
    );
    json(StatusCode::OK, &proxy.gate.pause(retry_after, reason))
}

/// `POST /proxy/resume`.
async fn resume(State(proxy): State<Arc<Proxy>>) -> Response {
    tracing::info!("generation calls resumed");
    json(StatusCode::OK, &proxy.gate.resume())
}

/// `GET /proxy/state`: what a trainer polls until `inflight` is 0.
async fn pause_state(State(proxy): State<Arc<Proxy>>) -> Response {
    json(StatusCode::OK, &proxy.gate.state())
}

/// The upstream path of the remainder of a rollout path.
fn upstream_path(rest: &str) -> String {
    let rest = rest.trim_start_matches('/');
    if rest == "v1" || rest.starts_with("v1/") || rest.starts_with("v1?") {
        return format!("/{rest}");
    }
    let openai = OPENAI_ROUTES.iter().any(|route| {
        rest.strip_prefix(route)
            .is_some_and(|after| after.is_empty() || after.starts_with('/'))
    });
    if openai {
        format!("/v1/{rest}")
    } else {
        format!("/{rest}")
    }
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, ProxyError> {
    HeaderValue::from_str(value)
        .map_err(|_| ProxyError::BadRequest(format!("the {what} cannot be sent in a header")))
}

fn body_error(err: &axum::Error, limit: usize) -> ProxyError {
    let too_large = err
        .source()
        .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
    if too_large {
        ProxyError::PayloadTooLarge { limit }
    } else {
        ProxyError::BadRequest(format!("failed to read the request body: {err}"))
    }
}

/// A generation call on its way: what the record needs besides the response.
struct Generation {
    endpoint: Endpoint,
    stream: bool,
    request: Value,
}

async fn forward(
    proxy: Arc<Proxy>,
    req: Request,
    path: String,
    rollout: Option<(String, String)>,
) -> Result<Response, ProxyError> {
    let started = Instant::now();
    let started_wall = SystemTime::now();
    let (parts, body) = req.into_parts();
    let endpoint = if parts.method == Method::POST {
        Endpoint::from_path(&path)
    } else {
        None
    };
    if endpoint.is_none()
        && proxy.is_draining()
        && parts.method != Method::GET
        && parts.method != Method::HEAD
    {
        return Err(ProxyError::Draining);
    }
    let limit = proxy.config.max_body_bytes;
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ProxyError::PayloadTooLarge { limit });
    }
    let mut body = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| body_error(&e, limit))?;

    let mut generation = None;
    // A generation call is counted from here; paused or draining, it goes no further.
    let pass = endpoint.map(|_| proxy.gate.enter()).transpose()?;
    if let Some(endpoint) = endpoint {
        let mut request: Value = serde_json::from_slice(&body)
            .map_err(|e| ProxyError::BadRequest(format!("request body is not valid json: {e}")))?;
        let Some(object) = request.as_object_mut() else {
            return Err(ProxyError::BadRequest(
                "request body must be a json object".into(),
            ));
        };
        let stream =
            rewrite::wants_stream(object).map_err(|e| ProxyError::BadRequest(e.to_owned()))?;
        proxy.rewrite(object, endpoint, stream);
        body = Bytes::from(serde_json::to_vec(&request).map_err(|e| {
            ProxyError::BadRequest(format!("request body cannot be re-encoded: {e}"))
        })?);
        generation = Some(Generation {
            endpoint,
            stream,
            request,
        });
    }

    let mut headers = upstream_headers(&parts.headers, generation.is_some());
    // vLLM started with --otlp-traces-endpoint continues the proxy's trace.
    agl_common::ops::inject_trace_context(&mut headers);
    let mut tracking = None;
    match (&rollout, &generation) {
        (Some((rollout_id, attempt_id)), _) => {
            headers.insert(
                HeaderName::from_static("x-rollout-id"),
                header_value("rollout id", rollout_id)?,
            );
            headers.insert(
                HeaderName::from_static("x-attempt-id"),
                header_value("attempt id", attempt_id)?,
            );
            if generation.is_some() {
                tracking = sequence(&proxy, rollout_id, attempt_id).await?;
                if let Some(t) = &tracking {
                    headers.insert(
                        HeaderName::from_static("x-sequence-id"),
                        HeaderValue::from(t.sequence_id),
                    );
                }
            }
        }
        (None, Some(_)) => {
            proxy
                .metrics
                .untracked
                .with_label_values(&["no_rollout"])
                .inc();
        }
        (None, None) => {}
    }

    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let url = format!("{}{path}{query}", proxy.upstream.base());
    let guard = pass.map(|pass| InFlight::new(&proxy, pass));
    let sent = Instant::now();
    let response = proxy
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let response = match response {
        Ok(response) => response,
        Err(err) => {
            let failure = if err.is_timeout() {
                ProxyError::Timeout(proxy.upstream.base().to_owned())
            } else if err.is_connect() && !proxy.upstream.is_ready() {
                ProxyError::NotReady(proxy.upstream.base().to_owned())
            } else {
                ProxyError::Unreachable {
                    url: proxy.upstream.base().to_owned(),
                    message: error_chain(&err),
                }
            };
            if let Some(g) = generation {
                proxy.recorder.submit(CallRecord {
                    endpoint: g.endpoint,
                    stream: g.stream,
                    tracking,
                    path,
                    request: g.request,
                    started_wall,
                    started,
                    sent,
                    status: None,
                    chunks: Vec::new(),
                    truncated: false,
                    ended: Instant::now(),
                    outcome: Outcome::Unreachable(failure.to_string()),
                });
            }
            return Err(failure);
        }
    };

    let status = response.status();
    let mut builder = Response::builder().status(status);
    if let Some(out) = builder.headers_mut() {
        response_headers(response.headers(), out);
    }
    let body = match (generation, guard) {
        (Some(g), Some(guard)) => {
            let recorder = proxy.recorder.clone();
            Body::from_stream(Tee::new(
                response,
                CallRecord {
                    endpoint: g.endpoint,
                    stream: g.stream,
                    tracking,
                    path,
                    request: g.request,
                    started_wall,
                    started,
                    sent,
                    status: Some(status.as_u16()),
                    chunks: Vec::new(),
                    truncated: false,
                    ended: started,
                    outcome: Outcome::Completed,
                },
                proxy.config.max_record_bytes,
                Box::new(move |record| recorder.submit(record)),
                Box::new(guard),
            ))
        }
        _ => Body::from_stream(response.bytes_stream()),
    };
    builder.body(body).map_err(|e| ProxyError::Unreachable {
        url: proxy.upstream.base().to_owned(),
        message: format!("vllm's response cannot be relayed: {e}"),
    })
}

/// Takes the call's sequence id from the store; `None` serves it untracked.
async fn sequence(
    proxy: &Proxy,
    rollout_id: &str,
    attempt_id: &str,
) -> Result<Option<Tracking>, ProxyError> {
    let Some(store) = &proxy.store else {
        proxy
            .metrics
            .untracked
            .with_label_values(&["no_store"])
            .inc();
        return Ok(None);
    };
    let asked = Instant::now();
    let result = store.next_sequence_id(rollout_id, attempt_id).await;
    proxy
        .metrics
        .sequence_latency
        .observe(asked.elapsed().as_secs_f64());
    match result {
        Ok(sequence_id) => Ok(Some(Tracking {
            rollout_id: rollout_id.to_owned(),
            attempt_id: attempt_id.to_owned(),
            sequence_id,
        })),
        Err(why) if proxy.config.require_store => Err(ProxyError::StoreUnavailable(why)),
        Err(why) => {
            let counter = proxy.metrics.untracked.with_label_values(&["store_error"]);
            counter.inc();
            if agl_common::telemetry::worth_logging(counter.get()) {
                tracing::warn!(
                    rollout_id,
                    attempt_id,
                    untracked = counter.get(),
                    "no sequence id from the store, serving the call unrecorded: {why}"
                );
            }
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_remainders_map_to_vllm_paths() {
        assert_eq!(upstream_path("v1/chat/completions"), "/v1/chat/completions");
        assert_eq!(upstream_path("chat/completions"), "/v1/chat/completions");
        assert_eq!(upstream_path("completions"), "/v1/completions");
        assert_eq!(upstream_path("models/m%2Fx"), "/v1/models/m%2Fx");
        assert_eq!(upstream_path("tokenize"), "/tokenize");
        assert_eq!(upstream_path("health"), "/health");
        assert_eq!(upstream_path("completionsx"), "/completionsx");
    }
}
