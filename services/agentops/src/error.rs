//! Every way a request can fail, mapped to HTTP in one place.

use agl_common::http::error_json;
use agl_common::otlp::{INVALID_ARGUMENT, OtlpError, PayloadFormat, status_body};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A refused request. JSON `{"detail": …}` bodies, except OTLP payload errors, which get the
/// `google.rpc.Status` OTLP clients expect, in the request's format.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body exceeds `--max-body-bytes`: 413.
    #[error("request body exceeds {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A malformed body or header: 400.
    #[error("{0}")]
    BadRequest(String),
    /// An OTLP payload that cannot be read: 400 with a `Status` body.
    #[error("{source}")]
    Otlp {
        /// The format to answer in.
        format: PayloadFormat,
        /// What is wrong with it.
        source: OtlpError,
    },
    /// A trace, log or object that is not held: 404.
    #[error("{0}")]
    NotFound(String),
    /// A path no route serves: 404.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
    /// A known path asked with a method it does not serve: 405.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request method.
        method: String,
        /// The request path.
        path: String,
    },
}

impl ApiError {
    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BadRequest(_) | Self::Otlp { .. } => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::NoRoute { .. } => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            Self::Otlp { format, source } => {
                let body = status_body(*format, INVALID_ARGUMENT, &source.to_string());
                let mut response = (status, body).into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(format.content_type()),
                );
                response
            }
            _ => error_json(status, &self.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_one_status() {
        assert_eq!(
            ApiError::PayloadTooLarge { limit: 1 }.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        let otlp = ApiError::Otlp {
            format: PayloadFormat::Protobuf,
            source: OtlpError::Protobuf("x".into()),
        };
        assert_eq!(otlp.status(), StatusCode::BAD_REQUEST);
        let response = otlp.into_response();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/x-protobuf"
        );
        let response = ApiError::NoRoute {
            method: "GET".into(),
            path: "/x".into(),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }
}
