//! JSON response helpers shared by the services' HTTP layers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Default limit on request bodies, in bytes, unless a service documents another.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// A response whose body is already-serialized JSON, sent as `application/json`.
///
/// Handlers that build JSON by hand (to avoid re-serializing stored documents) use this
/// so the content type is never forgotten: clients such as aiohttp refuse JSON bodies
/// that are not labelled `application/json`, `null` included.
pub fn raw_json(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut response = (status, body.into()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Serializes `value` as a JSON response with `status`.
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(bytes) => raw_json(status, bytes),
        Err(err) => error_json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("failed to serialize response: {err}"),
        ),
    }
}

/// A `{"detail": message}` error body, the shape FastAPI (and so every agl client) expects.
pub fn error_json(status: StatusCode, message: &str) -> Response {
    raw_json(
        status,
        serde_json::to_vec(&serde_json::json!({ "detail": message }))
            .unwrap_or_else(|_| b"{\"detail\":\"error\"}".to_vec()),
    )
}
