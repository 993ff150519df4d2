//! OTLP/HTTP trace ingestion (`POST /v1/traces`), and the 501s of the other OTLP signals.

use axum::Router;
use axum::body::Body as HttpBody;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use std::sync::atomic::Ordering;

use prost::Message as _;

use agl_common::telemetry::worth_logging;

use super::{ApiError, AppState, Body};
use crate::core::UnsequencedSpan;
use crate::otlp;
use crate::span::SpanInput;

/// `/v1/traces` and the unimplemented OTLP signals.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(not_implemented))
        .route("/v1/logs", post(not_implemented))
        .route("/v1/development/profiles", post(not_implemented))
}

async fn not_implemented() -> StatusCode {
    StatusCode::NOT_IMPLEMENTED
}

fn protobuf(status: StatusCode, body: Vec<u8>, encoding: Option<&'static str>) -> Response {
    let mut response = (status, HttpBody::from(body)).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-protobuf"),
    );
    if let Some(encoding) = encoding {
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
    }
    response
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[utoipa::path(post, path = "/v1/traces", tag = "otlp", request_body(content = Vec<u8>, content_type = "application/x-protobuf", description = "OTLP ExportTraceServiceRequest, optionally gzip-encoded"), responses((status = 200, description = "ExportTraceServiceResponse (with partial_success when spans were refused)"), (status = 400, description = "google.rpc.Status: unsupported content type or unparseable payload")))]
pub(super) async fn traces(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Body, ApiError>,
) -> Response {
    let Body(bytes) = match body {
        Ok(b) => b,
        Err(err) => {
            let status = match err {
                ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            return protobuf(status, otlp::status_body(&err.to_string()), None);
        }
    };
    let decoded = match otlp::decode_traces(
        header_str(&headers, header::CONTENT_TYPE),
        header_str(&headers, header::CONTENT_ENCODING),
        &bytes,
    ) {
        Ok(d) => d,
        Err(err) => {
            tracing::debug!(error = %err, "rejected otlp payload");
            s.store
                .counters()
                .otlp_payloads_rejected
                .fetch_add(1, Ordering::Relaxed);
            return protobuf(
                StatusCode::BAD_REQUEST,
                otlp::status_body(&err.to_string()),
                None,
            );
        }
    };
    if decoded.dropped > 0 {
        // Counted, and warned about on the first such payload and every 100th after it: a
        // forwarder that sends every batch (an AgentOps endpoint with agents outside any
        // rollout) would otherwise write a warning per batch.
        let payloads = s
            .store
            .counters()
            .otlp_unattributed_payloads
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if worth_logging(payloads) {
            tracing::warn!(
                dropped = decoded.dropped,
                payloads,
                "otlp spans without agentlightning.rollout_id or attempt_id were dropped \
                 (counted in agl_store_otlp_spans_total{{outcome=\"unattributed\"}}; \
                 logged for the 1st payload and every 100th)"
            );
        }
    }
    let spans: Vec<UnsequencedSpan> = decoded
        .spans
        .into_iter()
        .map(|d| UnsequencedSpan {
            sequence_id: d.sequence_id,
            span: SpanInput {
                rollout_id: d.rollout_id,
                span: d.span,
            },
        })
        .collect();
    let outcome = match s.store.add_spans_bulk(spans).await {
        Ok(outcome) => outcome,
        Err(err) => {
            // A storage failure is the server's problem: the exporter should retry later.
            return protobuf(
                StatusCode::SERVICE_UNAVAILABLE,
                otlp::status_body(&err.to_string()),
                None,
            );
        }
    };
    let counters = s.store.counters();
    counters
        .otlp_payloads_accepted
        .fetch_add(1, Ordering::Relaxed);
    counters
        .otlp_spans_stored
        .fetch_add(outcome.stored as u64, Ordering::Relaxed);
    counters
        .otlp_spans_rejected
        .fetch_add(outcome.rejected as u64, Ordering::Relaxed);
    counters
        .otlp_spans_unattributed
        .fetch_add(decoded.dropped as u64, Ordering::Relaxed);
    let accept = header_str(&headers, header::ACCEPT_ENCODING);
    if outcome.rejected == 0 && decoded.dropped == 0 {
        let (body, encoding) = otlp::success_body(accept);
        return protobuf(StatusCode::OK, body, encoding);
    }
    // Upstream fails the whole request with a 500 when one span names an unknown rollout;
    // OTLP's partial success keeps the good spans and tells the exporter what was refused.
    let rejected = outcome.rejected + decoded.dropped;
    let message = format!(
        "{} span(s) rejected: {} without agentlightning rollout/attempt ids, {} for unknown rollouts or attempts",
        rejected, decoded.dropped, outcome.rejected
    );
    let response = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: i64::try_from(rejected).unwrap_or(i64::MAX),
            error_message: message,
        }),
    };
    protobuf(StatusCode::OK, response.encode_to_vec(), None)
}
