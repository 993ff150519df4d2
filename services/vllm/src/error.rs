//! Every way the proxy itself can refuse or fail a request, mapped to HTTP in one place.
//!
//! Errors vLLM answers pass through untouched; these are the proxy's own. Bodies carry
//! the `{"detail": …}` every agl service answers with, plus the `{"error": {…}}` object
//! OpenAI clients look for, so an agent's SDK shows the message either way.

use agl_common::http::json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A request the proxy could not serve.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The body is not what a generation call needs (not JSON, not an object, …): 400.
    #[error("{0}")]
    BadRequest(String),
    /// A `/rollout/…` path that is not `/rollout/{rollout_id}/attempt/{attempt_id}/…`: 404.
    #[error(
        "unknown rollout path {0:?}: expected /rollout/{{rollout_id}}/attempt/{{attempt_id}}/v1/..."
    )]
    RolloutPath(String),
    /// The body exceeds `--max-body-bytes`: 413.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Shutting down: new generation calls are refused while in-flight ones finish: 503.
    #[error("the proxy is shutting down; retry on another replica")]
    Draining,
    /// vLLM is not serving yet (or restarting): 503.
    #[error("vllm at {0} is not ready yet")]
    NotReady(String),
    /// vLLM cannot be reached: 502.
    #[error("vllm at {url} is not reachable: {message}")]
    Unreachable {
        /// The upstream base URL.
        url: String,
        /// What the connection attempt said.
        message: String,
    },
    /// vLLM did not answer in time: 504.
    #[error("vllm at {0} did not answer in time")]
    Timeout(String),
    /// `--require-store` and the store gave no sequence id: 503.
    #[error("the store could not issue a sequence id: {0}")]
    StoreUnavailable(String),
    /// Paused (`POST /proxy/pause`, before a weight sync): 429 with `Retry-After` and
    /// `X-Agl-Paused: true`, upstream v1's answer.
    #[error("gateway paused")]
    Paused {
        /// Seconds to wait before trying again.
        retry_after_seconds: u64,
        /// Why, as the pauser said.
        reason: Option<String>,
    },
}

impl From<agl_llm_proxy::pause::Refusal> for ProxyError {
    fn from(refusal: agl_llm_proxy::pause::Refusal) -> Self {
        match refusal {
            agl_llm_proxy::pause::Refusal::Draining => Self::Draining,
            agl_llm_proxy::pause::Refusal::Paused {
                retry_after_seconds,
                reason,
            } => Self::Paused {
                retry_after_seconds,
                reason,
            },
        }
    }
}

impl ProxyError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::RolloutPath(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Draining | Self::NotReady(_) | Self::StoreUnavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Unreachable { .. } => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Paused { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The OpenAI error `type` of this error.
    fn kind(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "BadRequestError",
            Self::RolloutPath(_) => "NotFoundError",
            Self::PayloadTooLarge { .. } => "PayloadTooLargeError",
            Self::Paused { .. } => "RateLimitError",
            _ => "ServiceUnavailableError",
        }
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        if let Self::Paused {
            retry_after_seconds,
            reason,
        } = &self
        {
            // Upstream v1's body and headers, which its agents' retrying clients read.
            let mut response = json(
                StatusCode::TOO_MANY_REQUESTS,
                &agl_llm_proxy::pause::paused_body(reason.as_deref()),
            );
            response
                .headers_mut()
                .extend(agl_llm_proxy::pause::paused_headers(*retry_after_seconds));
            return response;
        }
        let status = self.status();
        let message = self.to_string();
        let mut response = json(
            status,
            &serde_json::json!({
                "detail": message,
                "error": {
                    "message": message,
                    "type": self.kind(),
                    "param": null,
                    "code": status.as_u16(),
                },
            }),
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            // Starting, restarting or draining: worth another try soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status_and_a_json_body() {
        assert_eq!(
            ProxyError::BadRequest("x".into()).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            ProxyError::RolloutPath("/rollout/x".into()).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            ProxyError::Unreachable {
                url: "u".into(),
                message: "m".into()
            }
            .status(),
            StatusCode::BAD_GATEWAY
        );
        let paused = ProxyError::Paused {
            retry_after_seconds: 3,
            reason: None,
        }
        .into_response();
        assert_eq!(paused.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(paused.headers()[header::RETRY_AFTER], "3");
        assert_eq!(paused.headers()["x-agl-paused"], "true");
        let response = ProxyError::Draining.into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "5");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn messages_are_lowercase() {
        for err in [
            ProxyError::Draining,
            ProxyError::NotReady("u".into()),
            ProxyError::Timeout("u".into()),
            ProxyError::PayloadTooLarge { limit: 1 },
            ProxyError::RolloutPath("/rollout/a".into()),
        ] {
            let text = err.to_string();
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        }
    }
}
