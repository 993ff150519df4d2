//! The HTTP face of the store: four protocols over one [`Store`].
//!
//! * [`v3`]: the current API under `/v1/agl`, spoken by `agentlightning==0.3.0`;
//! * [`legacy`]: the reference's `/agl/v1` API and the flat routes of `agentlightning==0.2.2`;
//! * [`v1`]: upstream v1's `agl-server` API under `/api` (`agentlightning` 1.0);
//! * [`otlp`]: OTLP/HTTP trace ingestion at `/v1/traces`.
//!
//! Errors of all of them map to HTTP once, in [`ApiError`].

pub mod legacy;
pub mod openapi;
pub mod otlp;
pub mod params;
pub mod v1;
pub mod v3;

use std::sync::Arc;

use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Router, extract::DefaultBodyLimit};
use bytes::Bytes;
use serde_json::json;
use tower_http::cors::{AllowHeaders, AllowOrigin, CorsLayer};

use agl_common::http::{error_json, json as json_response, raw_json};

use crate::core::{Store, StoreError};
use crate::validate::FieldError;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    /// The request body limit, for error messages.
    pub max_body_bytes: usize,
    /// Upstream v1's capturing proxy.
    pub proxy: Arc<crate::v1::proxy::V1Proxy>,
}

/// HTTP-level settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Origins allowed by CORS; empty disables CORS, `*` allows any.
    pub cors_origins: Vec<String>,
    /// Largest accepted request body, in bytes (after decompression for OTLP).
    pub max_body_bytes: usize,
    /// How v1's proxy routes rewrite and forward calls.
    pub v1_proxy: crate::v1::proxy::V1ProxyArgs,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            max_body_bytes: agl_common::http::DEFAULT_BODY_LIMIT,
            v1_proxy: crate::v1::proxy::V1ProxyArgs::default(),
        }
    }
}

/// Which protocol a handler speaks; decides how store errors look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `/v1/agl` and `/agl/v1`.
    Current,
    /// The flat 0.2.2 routes: every application error is a 400.
    Flat,
    /// Upstream v1's `/api`: FastAPI's `{"detail": …}` with its own codes and wording.
    V1,
}

/// Everything a handler can answer with instead of success.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or query failed validation: 422 in FastAPI's shape.
    #[error("request validation failed")]
    Validation(Vec<FieldError>),
    /// A well-formed request the store refuses before touching state: 400.
    #[error("{0}")]
    BadRequest(String),
    /// The body exceeds the configured limit: 413.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The store refused the operation.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The same error, answered in the flat protocol's shape.
    #[error(transparent)]
    Flat(Box<ApiError>),
    /// The same error, answered as upstream v1's server does.
    #[error(transparent)]
    V1(Box<ApiError>),
}

impl ApiError {
    /// This error as the 0.2.2 flat protocol reports it.
    pub fn flat(self) -> Self {
        Self::Flat(Box::new(self))
    }

    /// This error as upstream v1's server reports it.
    pub fn v1(self) -> Self {
        Self::V1(Box::new(self))
    }

    fn respond(self, protocol: Protocol) -> Response {
        match self {
            Self::Validation(errors) => json_response(
                StatusCode::UNPROCESSABLE_ENTITY,
                &json!({ "detail": errors }),
            ),
            Self::BadRequest(msg) => error_json(StatusCode::BAD_REQUEST, &msg),
            Self::PayloadTooLarge { .. } => {
                error_json(StatusCode::PAYLOAD_TOO_LARGE, &self.to_string())
            }
            Self::Store(StoreError::Storage(err)) => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({ "detail": err.to_string(), "error_type": "StorageError" }),
            ),
            Self::Store(StoreError::RolloutNotFound(id)) if protocol == Protocol::V1 => {
                error_json(StatusCode::NOT_FOUND, &format!("Rollout not found: {id}"))
            }
            Self::Store(err @ StoreError::InvalidTransition { .. }) => {
                error_json(StatusCode::CONFLICT, &err.to_string())
            }
            // Limits: the queue is full for now (retry), the rollout is full for good.
            Self::Store(err @ StoreError::QueueFull { .. }) => {
                let mut response = error_json(StatusCode::TOO_MANY_REQUESTS, &err.to_string());
                response.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    axum::http::HeaderValue::from_static("1"),
                );
                response
            }
            Self::Store(err @ StoreError::TooManySpans { .. }) => {
                error_json(StatusCode::UNPROCESSABLE_ENTITY, &err.to_string())
            }
            Self::Store(err) if protocol == Protocol::V1 => {
                error_json(StatusCode::BAD_REQUEST, &err.to_string())
            }
            Self::Store(err) => {
                let (status, error_type) = match (&err, protocol) {
                    (_, Protocol::Flat) => (StatusCode::BAD_REQUEST, "ValueError"),
                    (StoreError::Unsortable { .. }, _) => (StatusCode::BAD_REQUEST, "TypeError"),
                    // Upstream answers 500 here, which makes its client retry for ~8 s
                    // before failing the same way; a 404 fails at once.
                    _ => (StatusCode::NOT_FOUND, "ValueError"),
                };
                json_response(
                    status,
                    &json!({ "detail": err.to_string(), "error_type": error_type }),
                )
            }
            Self::Flat(inner) => inner.respond(Protocol::Flat),
            Self::V1(inner) => inner.respond(Protocol::V1),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.respond(Protocol::Current)
    }
}

/// A handler's result.
pub type ApiResult = Result<Response, ApiError>;

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
            Err(rejection) => Err(ApiError::BadRequest(rejection.body_text())),
        }
    }
}

/// A 2xx JSON response.
pub fn ok<T: serde::Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok(json_response(status, value))
}

/// A body that is JSON already (stored span documents are kept as text).
pub fn ok_raw(status: StatusCode, json: impl Into<axum::body::Body>) -> ApiResult {
    Ok(raw_json(status, json))
}

/// A JSON `null` (with the JSON content type the official client insists on).
pub fn null(status: StatusCode) -> ApiResult {
    Ok(raw_json(status, "null"))
}

/// Builds the whole router: the three protocols, OTLP, health, fallbacks and CORS.
pub fn router(store: Arc<Store>, config: &HttpConfig) -> anyhow::Result<Router> {
    let state = AppState {
        store,
        max_body_bytes: config.max_body_bytes,
        proxy: Arc::new(crate::v1::proxy::V1Proxy::new(config.v1_proxy.clone())?),
    };
    let router = Router::new()
        .nest("/v1/agl", v3::routes())
        .nest("/agl/v1", legacy::current_routes())
        .merge(legacy::flat_routes())
        .merge(otlp::routes())
        .merge(v1::routes())
        .route("/openapi.json", axum::routing::get(openapi_json))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(config.max_body_bytes))
        .with_state(state);
    Ok(match cors_layer(&config.cors_origins) {
        Some(cors) => router.layer(cors),
        None => router,
    })
}

async fn openapi_json() -> Response {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    raw_json(StatusCode::OK, DOC.get_or_init(openapi::document).clone())
}

async fn not_found() -> Response {
    error_json(StatusCode::NOT_FOUND, "Not Found")
}

async fn method_not_allowed() -> Response {
    error_json(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed")
}

/// CORS as upstream configures Starlette: any method and header, credentials allowed.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    // With credentials allowed, the CORS spec forbids a literal `*`; echoing the request's
    // origin is what Starlette does for the `*` configuration too.
    let allow_origin = if origins.contains(&"*") {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o).ok())
                .collect::<Vec<_>>(),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([
                Method::DELETE,
                Method::GET,
                Method::HEAD,
                Method::OPTIONS,
                Method::PATCH,
                Method::POST,
                Method::PUT,
            ])
            .allow_headers(AllowHeaders::mirror_request())
            .allow_credentials(true),
    )
}
