//! The HTTP routes: what the AgentOps SDK calls, and the read-only inspection API.
//!
//! SDK routes (spec: `agentops-mock.md` §3, §9.1):
//!
//! | route | answer |
//! |---|---|
//! | `POST /v3/auth/token` | 200 `{"token", "project_id", "project_prem_status": "pro"}`, whatever the body |
//! | `POST /v1/traces`, `/traces`, `/` | OTLP/HTTP traces, protobuf or JSON, gzip/deflate: 200 empty `ExportTraceServiceResponse` |
//! | `POST /v1/metrics`, `/v1/logs` | OTLP metrics and logs: validated, counted, 200 |
//! | `POST /v4/logs/upload/` | `{"body": text}` or a bare JSON string, `Trace-Id` header (decimal): 200 `{"url", "size"}` |
//! | `POST /v4/objects/upload/` | the same body forms: 200 `{"url", "size"}` |
//! | `GET /health`, `/healthz` | `{"status": "ok", uptime, counters}` |
//! | `GET /sessions?trace_id=` | redirect to the trace's page (the SDK prints this link) |
//!
//! The dashboard ([`crate::dashboard`]): `GET /` (the traces), `/ui/traces/{id}`,
//! `/ui/traces/{id}/spans/{span_id}` and the shared assets under `/ui/assets/`.
//!
//! Inspection under `/_agl/`: `traces`, `traces/{id}`, `traces/{id}/logs`, `spans`, `logs`,
//! `logs/{id}`, `objects`, `objects/{id}`, `counters`, and `POST /_agl/reset`.
//!
//! Anything else is a 404 (405 for a known path with another method), counted in
//! `agl_agentops_unmatched_requests_total` and logged as a warning naming the path: a new
//! SDK call shows up at once instead of being swallowed.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use agl_common::auth::Access;
use agl_common::http::json;
use agl_common::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use agl_common::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::{
    DEFAULT_DECOMPRESSED_LIMIT, PayloadFormat, decode, decompress, payload_format, success_body,
};
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};

use crate::dashboard;
use crate::error::ApiError;
use crate::forward::Forwarder;
use crate::metrics::Metrics;
use crate::retention::{Retention, Upload, UploadKind, now_seconds, spans_from_request};

/// Unmatched requests remembered for `/_agl/counters`.
const RECENT_UNMATCHED: usize = 50;
/// Spans `/_agl/spans` returns unless asked for fewer.
const DEFAULT_SPAN_LIMIT: usize = 1000;

/// What the handlers share.
pub struct Shared {
    /// What arrived.
    pub retention: Retention,
    /// The service's counters.
    pub metrics: Arc<Metrics>,
    /// Where trace batches are re-posted, if anywhere.
    pub forwarder: Option<Arc<Forwarder>>,
    /// The bearer token handed to every SDK.
    pub token: String,
    /// The keys `/v3/auth/token` requires (none: any key gets the token).
    pub access: Access,
    /// The project id handed to every SDK.
    pub project_id: String,
    /// Base URL for upload URLs when a request has no `Host` header.
    pub public_url: String,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    started: Instant,
    batches: AtomicU64,
    recent_unmatched: Mutex<VecDeque<Json>>,
}

impl Shared {
    /// State for the routes; `token` and `project_id` are fixed for the server's life.
    pub fn new(
        retention: Retention,
        metrics: Arc<Metrics>,
        forwarder: Option<Arc<Forwarder>>,
        public_url: String,
        max_body_bytes: usize,
        access: Access,
    ) -> Self {
        Self {
            access,
            retention,
            metrics,
            forwarder,
            token: format!("agl-agentops-{}", uuid::Uuid::new_v4().simple()),
            project_id: uuid::Uuid::new_v4().to_string(),
            public_url,
            max_body_bytes,
            started: Instant::now(),
            batches: AtomicU64::new(0),
            recent_unmatched: Mutex::new(VecDeque::new()),
        }
    }
}

/// The handlers' state.
pub type AppState = Arc<Shared>;

/// Every route, with the body limit and the 404/405 fallbacks.
pub fn router(state: AppState) -> Router {
    let max_body = state.max_body_bytes;
    Router::new()
        .route("/v3/auth/token", post(auth_token))
        .route("/v1/traces", post(otlp_traces))
        .route("/traces", post(otlp_traces))
        .route("/", get(dashboard::home).post(otlp_traces))
        .route("/ui/traces", get(dashboard::traces_page))
        .route("/v1/metrics", post(otlp_metrics))
        .route("/v1/logs", post(otlp_logs))
        .route("/v4/logs/upload/", post(upload_log))
        .route("/v4/objects/upload/", post(upload_object))
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/sessions", get(dashboard::session_link))
        .route("/ui/traces/{trace_id}", get(dashboard::trace_page))
        .route(
            "/ui/traces/{trace_id}/spans/{span_id}",
            get(dashboard::span_fragment),
        )
        .merge(agl_common::ui::assets())
        .route("/_agl/traces", get(list_traces))
        .route("/_agl/traces/{trace_id}", get(one_trace))
        .route("/_agl/traces/{trace_id}/logs", get(trace_logs))
        .route("/_agl/spans", get(list_spans))
        .route("/_agl/logs", get(list_logs))
        .route("/_agl/logs/{id}", get(one_log))
        .route("/_agl/objects", get(list_objects))
        .route("/_agl/objects/{id}", get(one_object))
        .route("/_agl/counters", get(counters))
        .route("/_agl/reset", post(reset))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The raw request body, with the size limit reported as a JSON 413.
pub struct Body(pub Bytes);

impl FromRequest<AppState> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        match Bytes::from_request(req, state).await {
            Ok(bytes) => Ok(Self(bytes)),
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge {
                    limit: state.max_body_bytes,
                })
            }
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text().to_lowercase())),
        }
    }
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

// ---- the SDK's routes -------------------------------------------------------------------

/// Without keys configured any API key gets the token: 0.4.13 – 0.4.18 raise out of
/// `init()` on anything but a 200 with `token` and `project_id`, 0.4.19+ silently export
/// without auth. With keys, the body's `api_key` (what the SDK sends) or a key in the
/// headers must be one of them.
async fn auth_token(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    if s.access.keys.is_some() {
        let offered = serde_json::from_slice::<Json>(&body.0)
            .ok()
            .and_then(|v| v.get("api_key").and_then(Json::as_str).map(str::to_owned));
        let mut with_body_key = headers;
        if let Some(key) = offered
            && let Ok(value) = HeaderValue::from_str(&key)
        {
            with_body_key.append("x-api-key", value);
        }
        if !s.access.admits(&with_body_key, false) {
            s.metrics.auth_refused.inc();
            tracing::debug!("refused an agentops token: no valid api_key");
            return agl_common::auth::refusal("Invalid or missing API key");
        }
    }
    s.metrics.auth_requests.inc();
    tracing::debug!("issued the agentops token");
    json(
        StatusCode::OK,
        &json!({
            "token": s.token,
            "project_id": s.project_id,
            "project_prem_status": "pro",
        }),
    )
}

/// Decodes one OTLP export request of `signal`, counting it as accepted or rejected.
fn read_otlp<M>(
    s: &Shared,
    signal: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(PayloadFormat, M), ApiError>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    let limit = DEFAULT_DECOMPRESSED_LIMIT.max(s.max_body_bytes);
    let result = decode_otlp(headers, body, limit);
    let outcome = if result.is_ok() {
        "accepted"
    } else {
        "rejected"
    };
    s.metrics
        .otlp_requests
        .with_label_values(&[signal, outcome])
        .inc();
    if let Err(err) = &result {
        tracing::warn!(signal, error = %err, "rejected otlp payload");
    }
    result
}

/// Content type, then content encoding (inflating at most `limit` bytes), then the message.
/// An unsupported content type is answered in protobuf, as OTLP/HTTP servers do.
fn decode_otlp<M>(
    headers: &HeaderMap,
    body: &[u8],
    limit: usize,
) -> Result<(PayloadFormat, M), ApiError>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    let format = payload_format(header_str(headers, header::CONTENT_TYPE)).map_err(|source| {
        ApiError::Otlp {
            format: PayloadFormat::Protobuf,
            source,
        }
    })?;
    let otlp = |source| ApiError::Otlp { format, source };
    let plain =
        decompress(header_str(headers, header::CONTENT_ENCODING), body, limit).map_err(otlp)?;
    let message = decode::<M>(format, &plain).map_err(otlp)?;
    Ok((format, message))
}

fn otlp_ok(format: PayloadFormat) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, format.content_type())],
        success_body(format),
    )
        .into_response()
}

async fn otlp_traces(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (format, request) =
        read_otlp::<ExportTraceServiceRequest>(&s, "traces", &headers, &body.0)?;
    let batch = s.batches.fetch_add(1, Ordering::Relaxed) + 1;
    let spans = spans_from_request(&request, now_seconds(), batch);
    let auth = match header_str(&headers, header::AUTHORIZATION) {
        None => "none",
        Some(value) if value.strip_prefix("Bearer ") == Some(s.token.as_str()) => "token",
        Some(_) => "other",
    };
    tracing::debug!(batch, spans = spans.len(), auth, "trace batch");
    s.metrics
        .otlp_items
        .with_label_values(&["traces"])
        .inc_by(spans.len() as u64);
    s.metrics
        .trace_batches_by_auth
        .with_label_values(&[auth])
        .inc();
    s.retention.add_spans(spans);
    if let Some(forwarder) = &s.forwarder {
        forwarder.submit(
            &body.0,
            format,
            headers.get(header::CONTENT_ENCODING),
            &request,
        );
    }
    Ok(otlp_ok(format))
}

async fn otlp_metrics(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (format, request) =
        read_otlp::<ExportMetricsServiceRequest>(&s, "metrics", &headers, &body.0)?;
    let count: usize = request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .map(|s| s.metrics.len())
        .sum();
    s.metrics
        .otlp_items
        .with_label_values(&["metrics"])
        .inc_by(count as u64);
    Ok(otlp_ok(format))
}

async fn otlp_logs(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let (format, request) = read_otlp::<ExportLogsServiceRequest>(&s, "logs", &headers, &body.0)?;
    let count: usize = request
        .resource_logs
        .iter()
        .flat_map(|r| &r.scope_logs)
        .map(|s| s.log_records.len())
        .sum();
    s.metrics
        .otlp_items
        .with_label_values(&["logs"])
        .inc_by(count as u64);
    Ok(otlp_ok(format))
}

/// The text of an upload body: `{"body": "…"}` (0.4.19+) or a bare JSON string (≤ 0.4.18).
fn upload_text(body: &[u8]) -> Result<(&'static str, String), ApiError> {
    let value: Json = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("invalid json body: {e}")))?;
    match value {
        Json::String(text) => Ok(("string", text)),
        Json::Object(mut map) => match map.remove("body") {
            Some(Json::String(text)) => Ok(("object", text)),
            _ => Err(ApiError::BadRequest(
                "upload body must be a json string or an object with a string \"body\"".into(),
            )),
        },
        _ => Err(ApiError::BadRequest(
            "upload body must be a json string or an object with a string \"body\"".into(),
        )),
    }
}

/// The `Trace-Id` header as 32 lowercase hex characters. The SDK sends the 128-bit id as a
/// decimal integer; a 32-character hex id is accepted too.
pub fn parse_trace_id(raw: &str) -> Option<String> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return raw.parse::<u128>().ok().map(|n| format!("{n:032x}"));
    }
    (raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| raw.to_ascii_lowercase())
}

/// Where a stored upload can be fetched, seen from the client that uploaded it.
fn upload_url(s: &Shared, headers: &HeaderMap, upload: &Upload) -> String {
    let base = header_str(headers, header::HOST)
        .map_or_else(|| s.public_url.clone(), |host| format!("http://{host}"));
    format!("{base}/_agl/{}/{}", upload.kind.as_str(), upload.id)
}

fn upload(
    s: &Shared,
    kind: UploadKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let parsed = parse_upload(kind, headers, body);
    let outcome = if parsed.is_ok() {
        "accepted"
    } else {
        "rejected"
    };
    s.metrics
        .uploads
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
    let (form, text, trace_id) = parsed?;
    let upload = s.retention.add_upload(kind, trace_id, form, text);
    tracing::debug!(kind = kind.as_str(), id = %upload.id, size = upload.size, trace_id = ?upload.trace_id, "upload");
    Ok(json(
        StatusCode::OK,
        &json!({ "url": upload_url(s, headers, &upload), "size": upload.size }),
    ))
}

/// The body form, the text and (for logs) the trace id of an upload.
fn parse_upload(
    kind: UploadKind,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(&'static str, String, Option<String>), ApiError> {
    let (form, text) = upload_text(body)?;
    let trace_id = match (kind, header_str(headers, "trace-id")) {
        (UploadKind::Logs, Some(raw)) => Some(parse_trace_id(raw).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "invalid trace-id header {raw:?}: expected a decimal or 32-hex trace id"
            ))
        })?),
        _ => None,
    };
    Ok((form, text, trace_id))
}

async fn upload_log(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload(&s, UploadKind::Logs, &headers, &body.0)
}

async fn upload_object(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    upload(&s, UploadKind::Objects, &headers, &body.0)
}

async fn health(State(s): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "service": "agl-agentops",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": s.started.elapsed().as_secs_f64(),
            "counters": s.metrics.since_reset(),
        }),
    )
}

// ---- inspection -------------------------------------------------------------------------

async fn list_traces(State(s): State<AppState>) -> Response {
    json(StatusCode::OK, &json!({ "traces": s.retention.traces() }))
}

/// An upload with its text, for the per-trace views.
#[derive(Serialize)]
struct WithText<'a> {
    #[serde(flatten)]
    upload: &'a Upload,
    text: &'a str,
}

fn with_text(uploads: &[Arc<Upload>]) -> Vec<WithText<'_>> {
    uploads
        .iter()
        .map(|u| WithText {
            upload: u,
            text: &u.text,
        })
        .collect()
}

async fn one_trace(
    State(s): State<AppState>,
    Path(trace_id): Path<String>,
) -> Result<Response, ApiError> {
    let spans = s
        .retention
        .trace(&trace_id)
        .ok_or_else(|| ApiError::NotFound(format!("no spans of trace {trace_id} are held")))?;
    let logs = s.retention.uploads(UploadKind::Logs, Some(&trace_id));
    Ok(json(
        StatusCode::OK,
        &json!({
            "trace_id": trace_id.to_ascii_lowercase(),
            "span_count": spans.len(),
            "spans": spans,
            "logs": with_text(&logs),
        }),
    ))
}

async fn trace_logs(State(s): State<AppState>, Path(trace_id): Path<String>) -> Response {
    let logs = s.retention.uploads(UploadKind::Logs, Some(&trace_id));
    json(StatusCode::OK, &json!({ "logs": with_text(&logs) }))
}

#[derive(Deserialize)]
struct SpanQuery {
    trace_id: Option<String>,
    name: Option<String>,
    limit: Option<usize>,
}

async fn list_spans(State(s): State<AppState>, Query(q): Query<SpanQuery>) -> Response {
    let spans = s.retention.spans(
        q.trace_id.as_deref(),
        q.name.as_deref(),
        q.limit.unwrap_or(DEFAULT_SPAN_LIMIT),
    );
    json(StatusCode::OK, &json!({ "spans": spans }))
}

async fn list_logs(State(s): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({ "logs": s.retention.uploads(UploadKind::Logs, None) }),
    )
}

async fn list_objects(State(s): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({ "objects": s.retention.uploads(UploadKind::Objects, None) }),
    )
}

fn upload_text_response(s: &Shared, kind: UploadKind, id: &str) -> Result<Response, ApiError> {
    let upload = s
        .retention
        .upload(kind, id)
        .ok_or_else(|| ApiError::NotFound(format!("no {} upload {id} is held", kind.as_str())))?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        upload.text.clone(),
    )
        .into_response())
}

async fn one_log(State(s): State<AppState>, Path(id): Path<String>) -> Result<Response, ApiError> {
    upload_text_response(&s, UploadKind::Logs, &id)
}

async fn one_object(
    State(s): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    upload_text_response(&s, UploadKind::Objects, &id)
}

async fn counters(State(s): State<AppState>) -> Response {
    json(
        StatusCode::OK,
        &json!({
            "counters": s.metrics.since_reset(),
            "held": s.retention.held(),
            "recent_unmatched": s.recent_unmatched.lock().iter().cloned().collect::<Vec<_>>(),
        }),
    )
}

async fn reset(State(s): State<AppState>) -> Response {
    s.retention.clear();
    s.metrics.reset();
    s.recent_unmatched.lock().clear();
    tracing::info!("inspection data reset");
    json(StatusCode::OK, &json!({ "status": "reset" }))
}

// ---- unmatched --------------------------------------------------------------------------

fn unmatched(s: &Shared, method: &Method, uri: &Uri) {
    s.metrics.unmatched.inc();
    tracing::warn!(
        %method,
        path = uri.path(),
        "unmatched request: nothing serves {method} {}; a new sdk call?",
        uri.path()
    );
    let mut recent = s.recent_unmatched.lock();
    if recent.len() == RECENT_UNMATCHED {
        recent.pop_front();
    }
    recent.push_back(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "at": now_seconds(),
    }));
}

async fn no_route(State(s): State<AppState>, method: Method, uri: Uri) -> ApiError {
    unmatched(&s, &method, &uri);
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed(State(s): State<AppState>, method: Method, uri: Uri) -> ApiError {
    unmatched(&s, &method, &uri);
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_as_decimal_or_hex() {
        // The example of agentops-mock.md §6.1.
        assert_eq!(
            parse_trace_id("253893983981091613277020357127345884047").as_deref(),
            Some(
                format!(
                    "{:032x}",
                    253_893_983_981_091_613_277_020_357_127_345_884_047u128
                )
                .as_str()
            )
        );
        assert_eq!(
            parse_trace_id("1").as_deref(),
            Some("00000000000000000000000000000001")
        );
        assert_eq!(
            parse_trace_id("ABABABABABABABABABABABABABABABAB").as_deref(),
            Some("abababababababababababababababab")
        );
        assert_eq!(parse_trace_id("xyz"), None);
        assert_eq!(parse_trace_id(""), None);
        assert_eq!(
            parse_trace_id("999999999999999999999999999999999999999999"),
            None
        );
    }

    #[test]
    fn upload_bodies_come_in_two_forms() {
        assert_eq!(
            upload_text(br#""hello""#).unwrap(),
            ("string", "hello".to_owned())
        );
        assert_eq!(
            upload_text(br#"{"body": "hi"}"#).unwrap(),
            ("object", "hi".to_owned())
        );
        assert!(upload_text(br#"{"body": 3}"#).is_err());
        assert!(upload_text(b"[1]").is_err());
        assert!(upload_text(b"{not json").is_err());
    }
}
