//! The write ceiling: a bare axum server that parses each POST body (JSON into
//! `serde_json::Value`, OTLP into its protobuf message) and appends it to a vector, nothing
//! else. Driven by the same scenarios, it shows what HTTP, parsing and one allocation per
//! body cost on this machine, so a store's write paths can be given as a share of it.
//!
//! It answers just enough for the write scenarios' set-up to work: a started rollout and a
//! dequeued rollout carry plausible ids.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message as _;

/// What the ceiling keeps.
pub enum Stored {
    /// A JSON body.
    Json(serde_json::Value),
    /// An OTLP trace export.
    Otlp(ExportTraceServiceRequest),
}

type Sink = Arc<Mutex<Vec<Stored>>>;

const ATTEMPTED: &str = r#"{"rollout_id":"ro-x","attempt":{"attempt_id":"at-x"}}"#;

/// The ceiling's routes over a fresh, empty vector.
pub fn router() -> Router {
    let sink: Sink = Arc::default();
    Router::new()
        .route("/v1/agl/health", get(health))
        .route("/v1/agl/rollouts", post(start_rollout))
        .route("/v1/agl/queues/rollouts/dequeue", post(dequeue))
        .route("/v1/traces", post(traces))
        .fallback(post(store_json))
        .with_state(sink)
}

/// Serves the ceiling on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    axum::serve(listener, router())
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

fn json(status: StatusCode, body: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn health() -> Response {
    json(StatusCode::OK, r#"{"status":"ok"}"#)
}

/// Parses and keeps a JSON body; `false` when it is not JSON.
fn push_json(sink: &Sink, body: &[u8]) -> bool {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(value) => {
            sink.lock().push(Stored::Json(value));
            true
        }
        Err(_) => false,
    }
}

fn stored_or_400(stored: bool, status: StatusCode, body: &'static str) -> Response {
    if stored {
        json(status, body)
    } else {
        json(StatusCode::BAD_REQUEST, r#"{"detail":"invalid JSON"}"#)
    }
}

async fn store_json(State(sink): State<Sink>, body: Bytes) -> Response {
    stored_or_400(push_json(&sink, &body), StatusCode::CREATED, "{}")
}

async fn start_rollout(State(sink): State<Sink>, body: Bytes) -> Response {
    stored_or_400(push_json(&sink, &body), StatusCode::CREATED, ATTEMPTED)
}

async fn dequeue(State(sink): State<Sink>, body: Bytes) -> Response {
    const ONE: &str = r#"[{"rollout_id":"ro-x","attempt":{"attempt_id":"at-x"}}]"#;
    stored_or_400(push_json(&sink, &body), StatusCode::OK, ONE)
}

async fn traces(State(sink): State<Sink>, body: Bytes) -> Response {
    match ExportTraceServiceRequest::decode(body) {
        Ok(req) => {
            sink.lock().push(Stored::Otlp(req));
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/x-protobuf")],
                Vec::<u8>::new(),
            )
                .into_response()
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}
