//! OTLP/HTTP helpers any receiver needs, independent of what it does with the data.
//!
//! An OTLP/HTTP request is handled in three steps, each a function here:
//!
//! 1. [`payload_format`]: protobuf (`application/x-protobuf`) or OTLP/JSON
//!    (`application/json`) from the `Content-Type` header;
//! 2. [`decompress`]: undo `Content-Encoding: gzip` or `deflate`, refusing bodies that
//!    inflate beyond a limit (a gzip bomb would otherwise exhaust memory);
//! 3. [`decode`]: parse the export request of any signal (traces, metrics, logs) in either
//!    format. OTLP/JSON follows the spec's conventions (hex trace and span ids, 64-bit
//!    integers as strings or numbers, enums as integers), handled by `opentelemetry-proto`'s
//!    serde support.
//!
//! Answers: [`success_body`] (an empty export response in the request's format) and
//! [`status_body`] (a `google.rpc.Status` for 400s, which is what OTLP clients expect).
//!
//! Converting what arrived: [`any_value_to_json`], [`attributes_to_json`], [`hex_id`], and
//! [`set_resource_attributes`] to tag every resource of a trace export (for example with
//! the rollout and attempt ids a LightningStore files spans under).

use std::borrow::Cow;
use std::io::Read as _;

use base64::Engine as _;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use serde_json::{Map, Value as Json};

/// Re-exported so users of these helpers need no direct dependency on the generated types.
pub use opentelemetry_proto::tonic as proto;

/// Largest body [`decompress`] inflates to unless a caller chooses otherwise: 64 MiB.
pub const DEFAULT_DECOMPRESSED_LIMIT: usize = 64 * 1024 * 1024;

/// `google.rpc.Code.INVALID_ARGUMENT`, the code of every [`OtlpError`] in a `Status`.
pub const INVALID_ARGUMENT: i32 = 3;

/// The two OTLP/HTTP payload encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadFormat {
    /// Binary protobuf, `application/x-protobuf`: what every OTel SDK exporter sends.
    Protobuf,
    /// OTLP/JSON, `application/json`.
    Json,
}

impl PayloadFormat {
    /// The `Content-Type` to send (and answer) this format with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why an OTLP request cannot be read. Every variant is the client's mistake (a 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum OtlpError {
    /// A `Content-Type` that is neither protobuf nor JSON.
    #[error("unsupported content type {0:?}, expected application/x-protobuf or application/json")]
    UnsupportedContentType(String),
    /// A `Content-Encoding` other than identity, gzip or deflate.
    #[error("unsupported content encoding {0:?}, expected gzip, deflate or none")]
    UnsupportedEncoding(String),
    /// The body inflates beyond the limit.
    #[error("decompressed body exceeds {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body is not valid gzip or deflate data.
    #[error("invalid {encoding} body: {message}")]
    Decompress {
        /// `gzip` or `deflate`.
        encoding: &'static str,
        /// What the decoder said.
        message: String,
    },
    /// The body is not the expected protobuf message.
    #[error("invalid otlp protobuf payload: {0}")]
    Protobuf(String),
    /// The body is not the expected OTLP/JSON document.
    #[error("invalid otlp json payload: {0}")]
    Json(String),
}

/// The payload format named by a `Content-Type` header (parameters such as `; charset`
/// ignored, case-insensitive). A missing header is taken as protobuf, the only thing OTel
/// SDK exporters send; `application/protobuf` is accepted as its alias.
pub fn payload_format(content_type: Option<&str>) -> Result<PayloadFormat, OtlpError> {
    let Some(raw) = content_type else {
        return Ok(PayloadFormat::Protobuf);
    };
    let essence = raw.split(';').next().unwrap_or_default().trim();
    if essence.eq_ignore_ascii_case("application/x-protobuf")
        || essence.eq_ignore_ascii_case("application/protobuf")
    {
        Ok(PayloadFormat::Protobuf)
    } else if essence.eq_ignore_ascii_case("application/json") {
        Ok(PayloadFormat::Json)
    } else {
        Err(OtlpError::UnsupportedContentType(raw.to_owned()))
    }
}

/// The body with its `Content-Encoding` undone: borrowed as-is without encoding (or
/// `identity`), inflated for `gzip` (also `x-gzip`) and `deflate` (zlib-wrapped as HTTP
/// specifies; raw deflate streams are accepted too). Inflating stops with
/// [`OtlpError::TooLarge`] past `limit` bytes, so a small bomb cannot take the memory.
pub fn decompress<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, OtlpError> {
    let encoding = encoding.map(str::trim).unwrap_or_default();
    if encoding.is_empty() || encoding.eq_ignore_ascii_case("identity") {
        return Ok(Cow::Borrowed(body));
    }
    if encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip") {
        return inflate(flate2::read::MultiGzDecoder::new(body), "gzip", limit).map(Cow::Owned);
    }
    if encoding.eq_ignore_ascii_case("deflate") {
        return match inflate(flate2::read::ZlibDecoder::new(body), "deflate", limit) {
            Err(OtlpError::Decompress { .. }) => {
                inflate(flate2::read::DeflateDecoder::new(body), "deflate", limit)
            }
            other => other,
        }
        .map(Cow::Owned);
    }
    Err(OtlpError::UnsupportedEncoding(encoding.to_owned()))
}

fn inflate(
    decoder: impl std::io::Read,
    encoding: &'static str,
    limit: usize,
) -> Result<Vec<u8>, OtlpError> {
    let mut out = Vec::new();
    // One byte past the limit tells "exactly the limit" from "more".
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    decoder
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|err| OtlpError::Decompress {
            encoding,
            message: err.to_string(),
        })?;
    if out.len() > limit {
        return Err(OtlpError::TooLarge { limit });
    }
    Ok(out)
}

/// Parses an export request (`ExportTraceServiceRequest`, `ExportMetricsServiceRequest`,
/// `ExportLogsServiceRequest`) from an already decompressed body. An empty body is the
/// empty request in both formats.
pub fn decode<M>(format: PayloadFormat, body: &[u8]) -> Result<M, OtlpError>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    match format {
        PayloadFormat::Protobuf => M::decode(body).map_err(|e| OtlpError::Protobuf(e.to_string())),
        PayloadFormat::Json if body.iter().all(u8::is_ascii_whitespace) => Ok(M::default()),
        PayloadFormat::Json => {
            serde_json::from_slice(body).map_err(|e| OtlpError::Json(e.to_string()))
        }
    }
}

/// The body of a successful export answer: an empty `Export*ServiceResponse`, which is
/// zero bytes in protobuf and `{}` in JSON.
pub fn success_body(format: PayloadFormat) -> &'static [u8] {
    match format {
        PayloadFormat::Protobuf => b"",
        PayloadFormat::Json => b"{}",
    }
}

/// `google.rpc.Status` without details; what OTLP/HTTP servers answer a failed export with.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

/// A `google.rpc.Status` body (`code`, `message`) in `format`: serialized protobuf, or the
/// JSON `{"code": …, "message": …}`. Send it with [`PayloadFormat::content_type`].
pub fn status_body(format: PayloadFormat, code: i32, message: &str) -> Vec<u8> {
    match format {
        PayloadFormat::Protobuf => prost::Message::encode_to_vec(&RpcStatus {
            code,
            message: message.to_owned(),
        }),
        PayloadFormat::Json => {
            serde_json::to_vec(&serde_json::json!({ "code": code, "message": message }))
                .unwrap_or_default()
        }
    }
}

/// Lowercase hex of an id (`trace_id` 32 characters, `span_id` 16), `None` for the empty id
/// OTLP uses for "no parent".
pub fn hex_id(bytes: &[u8]) -> Option<String> {
    (!bytes.is_empty()).then(|| hex::encode(bytes))
}

/// An attribute value as JSON: strings, booleans, integers and doubles as themselves
/// (non-finite doubles as their names, which JSON cannot hold as numbers), arrays as arrays,
/// key-value lists as objects, bytes as base64 (the protobuf JSON mapping), unset as `null`.
pub fn any_value_to_json(value: &AnyValue) -> Json {
    match &value.value {
        None => Json::Null,
        Some(Value::StringValue(s)) => Json::String(s.clone()),
        Some(Value::BoolValue(b)) => Json::Bool(*b),
        Some(Value::IntValue(i)) => Json::from(*i),
        Some(Value::DoubleValue(d)) => serde_json::Number::from_f64(*d)
            .map_or_else(|| Json::String(d.to_string()), Json::Number),
        Some(Value::ArrayValue(array)) => {
            Json::Array(array.values.iter().map(any_value_to_json).collect())
        }
        Some(Value::KvlistValue(list)) => Json::Object(attributes_to_json(&list.values)),
        Some(Value::BytesValue(bytes)) => {
            Json::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        // Only meaningful with a profiles dictionary, which plain exports never carry.
        Some(Value::StringValueStrindex(index)) => Json::from(*index),
    }
}

/// Attributes as a JSON object, in their order; a repeated key keeps its last value.
pub fn attributes_to_json(attributes: &[KeyValue]) -> Map<String, Json> {
    attributes
        .iter()
        .map(|kv| {
            let value = kv.value.as_ref().map_or(Json::Null, any_value_to_json);
            (kv.key.clone(), value)
        })
        .collect()
}

/// A string attribute, as OTLP spells it.
pub fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// Sets string attributes on the resource of every `ResourceSpans` (creating the resource
/// when absent), replacing attributes of the same key.
pub fn set_resource_attributes(
    request: &mut ExportTraceServiceRequest,
    attrs: &[(String, String)],
) {
    for resource_spans in &mut request.resource_spans {
        let resource = resource_spans
            .resource
            .get_or_insert_with(Resource::default);
        for (key, value) in attrs {
            resource.attributes.retain(|kv| &kv.key != key);
            resource.attributes.push(string_attribute(key, value));
        }
    }
}

/// Whether an OTLP `endpoint` URL is the server bound at `bound` itself: the same port on a
/// loopback, unspecified or the bound address (or `localhost`). Receivers that export or
/// forward over OTLP use it to refuse a loop in which every request causes another one. A
/// different host name that happens to resolve to this machine is not caught.
pub fn points_at(endpoint: &str, bound: std::net::SocketAddr) -> bool {
    let (rest, default_port) = if let Some(rest) = endpoint.strip_prefix("http://") {
        (rest, 80)
    } else if let Some(rest) = endpoint.strip_prefix("https://") {
        (rest, 443)
    } else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => (h, p.parse::<u16>().ok()),
        _ => (authority, Some(default_port)),
    };
    if port != Some(bound.port()) {
        return false;
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified() || ip == bound.ip())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message as _;

    fn sample() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", "agentops")],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![0xab; 16],
                        span_id: vec![0xcd; 8],
                        name: "run.task".into(),
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn content_types_map_to_formats() {
        assert_eq!(payload_format(None), Ok(PayloadFormat::Protobuf));
        assert_eq!(
            payload_format(Some("application/x-protobuf")),
            Ok(PayloadFormat::Protobuf)
        );
        assert_eq!(
            payload_format(Some("Application/JSON; charset=utf-8")),
            Ok(PayloadFormat::Json)
        );
        assert!(matches!(
            payload_format(Some("text/plain")),
            Err(OtlpError::UnsupportedContentType(_))
        ));
    }

    #[test]
    fn gzip_and_deflate_are_undone() {
        let data = sample().encode_to_vec();
        assert_eq!(decompress(None, &data, 1 << 20).unwrap(), data.as_slice());
        assert_eq!(
            decompress(Some("gzip"), &gzip(&data), 1 << 20).unwrap(),
            data.as_slice()
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(&data).unwrap();
        let zlib = zlib.finish().unwrap();
        assert_eq!(
            decompress(Some("deflate"), &zlib, 1 << 20).unwrap(),
            data.as_slice()
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        raw.write_all(&data).unwrap();
        let raw = raw.finish().unwrap();
        assert_eq!(
            decompress(Some("deflate"), &raw, 1 << 20).unwrap(),
            data.as_slice()
        );
    }

    #[test]
    fn bad_encodings_are_refused() {
        assert!(matches!(
            decompress(Some("br"), b"x", 10),
            Err(OtlpError::UnsupportedEncoding(_))
        ));
        assert!(matches!(
            decompress(Some("gzip"), b"not gzip at all", 10),
            Err(OtlpError::Decompress { .. })
        ));
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        assert_eq!(
            decompress(Some("gzip"), &bomb, 1024 * 1024),
            Err(OtlpError::TooLarge { limit: 1024 * 1024 })
        );
        // Exactly the limit is fine.
        assert_eq!(
            decompress(Some("gzip"), &gzip(&[7u8; 100]), 100)
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn protobuf_round_trips_and_garbage_is_refused() {
        let request = sample();
        let decoded: ExportTraceServiceRequest =
            decode(PayloadFormat::Protobuf, &request.encode_to_vec()).unwrap();
        assert_eq!(decoded, request);
        let empty: ExportTraceServiceRequest = decode(PayloadFormat::Protobuf, b"").unwrap();
        assert!(empty.resource_spans.is_empty());
        assert!(matches!(
            decode::<ExportTraceServiceRequest>(PayloadFormat::Protobuf, b"\xff\xff\xff"),
            Err(OtlpError::Protobuf(_))
        ));
    }

    /// The trace example of the OTLP specification (opentelemetry-proto `examples/trace.json`):
    /// hex ids, nanosecond times as strings, the span kind as an integer.
    #[test]
    fn otlp_json_follows_the_spec_conventions() {
        let body = br#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"my.service"}}]},
          "scopeSpans":[{"scope":{"name":"my.library","version":"1.0.0"},
            "spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",
              "parentSpanId":"eee19b7ec3c1b173","name":"I'm a server span",
              "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000,
              "kind":2,"status":{"code":2,"message":"boom"},
              "attributes":[{"key":"my.span.attr","value":{"stringValue":"some value"}},
                            {"key":"n","value":{"intValue":"42"}}]}]}]}]}"#;
        let request: ExportTraceServiceRequest = decode(PayloadFormat::Json, body).unwrap();
        let span = &request.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex_id(&span.trace_id).as_deref(),
            Some("5b8efff798038103d269b633813fc60c")
        );
        assert_eq!(
            hex_id(&span.parent_span_id).as_deref(),
            Some("eee19b7ec3c1b173")
        );
        assert_eq!(span.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(span.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(span.kind, 2);
        assert_eq!(span.status.as_ref().map(|s| s.code), Some(2));
        assert_eq!(
            Json::Object(attributes_to_json(&span.attributes)),
            serde_json::json!({"my.span.attr": "some value", "n": 42})
        );
        assert!(decode::<ExportTraceServiceRequest>(PayloadFormat::Json, b" ").is_ok());
        assert!(matches!(
            decode::<ExportTraceServiceRequest>(PayloadFormat::Json, b"{\"resourceSpans\": 3}"),
            Err(OtlpError::Json(_))
        ));
    }

    #[test]
    fn metrics_and_logs_decode_too() {
        let metrics: ExportMetricsServiceRequest =
            decode(PayloadFormat::Json, br#"{"resourceMetrics":[{}]}"#).unwrap();
        assert_eq!(metrics.resource_metrics.len(), 1);
        let logs: ExportLogsServiceRequest = decode(PayloadFormat::Protobuf, b"").unwrap();
        assert!(logs.resource_logs.is_empty());
    }

    #[test]
    fn any_values_become_plain_json() {
        let v = |value| AnyValue { value: Some(value) };
        assert_eq!(
            any_value_to_json(&v(Value::IntValue(-3))),
            serde_json::json!(-3)
        );
        assert_eq!(
            any_value_to_json(&v(Value::DoubleValue(0.5))),
            serde_json::json!(0.5)
        );
        assert_eq!(
            any_value_to_json(&v(Value::DoubleValue(f64::NAN))),
            serde_json::json!("NaN")
        );
        assert_eq!(
            any_value_to_json(&v(Value::BytesValue(vec![1, 255]))),
            serde_json::json!("Af8=")
        );
        let array = v(Value::ArrayValue(ArrayValue {
            values: vec![v(Value::BoolValue(true)), v(Value::StringValue("x".into()))],
        }));
        assert_eq!(any_value_to_json(&array), serde_json::json!([true, "x"]));
        let kvlist = v(Value::KvlistValue(KeyValueList {
            values: vec![string_attribute("a", "b")],
        }));
        assert_eq!(any_value_to_json(&kvlist), serde_json::json!({"a": "b"}));
        assert_eq!(any_value_to_json(&AnyValue { value: None }), Json::Null);
    }

    #[test]
    fn status_bodies_decode_as_google_rpc_status() {
        let body = status_body(PayloadFormat::Protobuf, INVALID_ARGUMENT, "bad payload");
        let status = RpcStatus::decode(body.as_slice()).unwrap();
        assert_eq!(status.code, 3);
        assert_eq!(status.message, "bad payload");
        let json: Json =
            serde_json::from_slice(&status_body(PayloadFormat::Json, 3, "bad")).unwrap();
        assert_eq!(json, serde_json::json!({"code": 3, "message": "bad"}));
        assert!(success_body(PayloadFormat::Protobuf).is_empty());
    }

    #[test]
    fn resource_attributes_are_set_and_replaced() {
        let mut request = sample();
        request.resource_spans.push(ResourceSpans::default());
        let attrs = vec![
            ("service.name".to_owned(), "agent".to_owned()),
            ("agentlightning.rollout_id".to_owned(), "ro-1".to_owned()),
        ];
        set_resource_attributes(&mut request, &attrs);
        for rs in &request.resource_spans {
            let resource = attributes_to_json(&rs.resource.as_ref().unwrap().attributes);
            assert_eq!(resource["service.name"], "agent");
            assert_eq!(resource["agentlightning.rollout_id"], "ro-1");
            assert_eq!(resource.len(), 2);
        }
        assert_eq!(hex_id(&[]), None);
        assert_eq!(hex_id(&[0, 0x1f]).as_deref(), Some("001f"));
    }

    #[test]
    fn an_endpoint_on_our_own_port_is_detected() {
        let bound = "0.0.0.0:8002".parse().unwrap();
        assert!(points_at("http://localhost:8002/v1/traces", bound));
        assert!(points_at("http://127.0.0.1:8002/v1/traces", bound));
        assert!(points_at("http://[::1]:8002/v1/traces", bound));
        assert!(!points_at("http://127.0.0.1:4318/v1/traces", bound));
        assert!(!points_at("http://collector:8002/v1/traces", bound));
        assert!(!points_at("http://127.0.0.1/v1/traces", bound));
        assert!(points_at("http://[::1]/x", "[::]:80".parse().unwrap()));
        assert!(!points_at("ftp://127.0.0.1:8002/", bound));
    }
}
