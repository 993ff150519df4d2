//! Randomized tests of the OTLP/HTTP reading every receiver shares: whatever bytes arrive,
//! decoding and decompression answer (a value or an error) without panicking, within
//! their limits; what an exporter sends is read back exactly, in protobuf and in OTLP/JSON.
//!
//! Case counts scale with `AGL_FUZZ_SCALE` (see `agl_common::fuzzing`).

use std::io::Write as _;

use agl_common::fuzzing::cases;
use agl_common::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use agl_common::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::proto::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use agl_common::otlp::proto::resource::v1::Resource;
use agl_common::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use agl_common::otlp::{PayloadFormat, any_value_to_json, decode, decompress, payload_format};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: cases(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// An attribute value, nested arrays and maps included (up to 4 levels).
fn any_value() -> impl Strategy<Value = AnyValue> {
    let leaf = prop_oneof![
        ".{0,12}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        (-1e12f64..1e12).prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(any_value::Value::BytesValue),
    ]
    .prop_map(|v| AnyValue { value: Some(v) });
    leaf.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values })),
            }),
            proptest::collection::vec(("[a-z.]{1,8}", inner), 0..4).prop_map(|kvs| AnyValue {
                value: Some(any_value::Value::KvlistValue(KeyValueList {
                    values: kvs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value: Some(value),
                            ..Default::default()
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    proptest::collection::vec(("[a-z_.]{1,12}", any_value()), 0..5).prop_map(|kvs| {
        kvs.into_iter()
            .map(|(key, value)| KeyValue {
                key,
                value: Some(value),
                ..Default::default()
            })
            .collect()
    })
}

fn a_span() -> impl Strategy<Value = Span> {
    (
        proptest::collection::vec(any::<u8>(), 16),
        proptest::collection::vec(any::<u8>(), 8),
        prop_oneof![Just(Vec::new()), proptest::collection::vec(any::<u8>(), 8)],
        ".{0,16}",
        0i32..6,
        any::<u64>(),
        any::<u64>(),
        attributes(),
        (0i32..3, ".{0,8}"),
    )
        .prop_map(
            |(trace_id, span_id, parent_span_id, name, kind, start, end, attributes, status)| {
                Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    name,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    status: Some(Status {
                        code: status.0,
                        message: status.1,
                    }),
                    events: vec![span::Event {
                        name: "event".into(),
                        time_unix_nano: start,
                        ..Default::default()
                    }],
                    ..Default::default()
                }
            },
        )
}

fn a_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    proptest::collection::vec(
        (attributes(), proptest::collection::vec(a_span(), 0..4)),
        0..3,
    )
    .prop_map(|groups| ExportTraceServiceRequest {
        resource_spans: groups
            .into_iter()
            .map(|(attributes, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes,
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "fuzz".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    })
}

proptest! {
    #![proptest_config(config(2000))]

    /// Arbitrary bytes as protobuf of every signal: a value or an error, never a panic.
    #[test]
    fn arbitrary_protobuf_is_answered(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ExportTraceServiceRequest>(PayloadFormat::Protobuf, &body);
        let _ = decode::<ExportMetricsServiceRequest>(PayloadFormat::Protobuf, &body);
        let _ = decode::<ExportLogsServiceRequest>(PayloadFormat::Protobuf, &body);
    }

    /// Arbitrary text, and JSON-looking text, as OTLP/JSON: never a panic.
    #[test]
    fn arbitrary_json_is_answered(
        body in prop_oneof![
            ".{0,256}",
            r#"\{"resourceSpans":\[\{"resource":\{"attributes":\[.{0,64}\]\}.{0,64}\]\}"#,
        ],
    ) {
        let _ = decode::<ExportTraceServiceRequest>(PayloadFormat::Json, body.as_bytes());
        let _ = decode::<ExportLogsServiceRequest>(PayloadFormat::Json, body.as_bytes());
    }

    /// What an exporter sends comes back exactly, in both encodings.
    #[test]
    fn requests_round_trip_in_both_encodings(request in a_request()) {
        let protobuf = prost::Message::encode_to_vec(&request);
        let back: ExportTraceServiceRequest = decode(PayloadFormat::Protobuf, &protobuf).unwrap();
        prop_assert_eq!(&back, &request);
        let json = serde_json::to_vec(&request).unwrap();
        let back: ExportTraceServiceRequest = decode(PayloadFormat::Json, &json).unwrap();
        prop_assert_eq!(&back, &request);
        for rs in &request.resource_spans {
            for kv in &rs.resource.as_ref().unwrap().attributes {
                let _ = any_value_to_json(kv.value.as_ref().unwrap());
            }
        }
    }

    /// Arbitrary bytes claimed to be gzip or deflate: an error or at most `limit` bytes.
    #[test]
    fn arbitrary_compressed_bodies_are_answered(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        encoding in prop_oneof![Just("gzip"), Just("deflate"), Just("br"), Just("identity")],
    ) {
        if let Ok(plain) = decompress(Some(encoding), &body, 4096) {
            prop_assert!(plain.len() <= 4096 || encoding == "identity");
        }
    }

    /// A compressed body inflates to what was compressed when it fits the limit, and is
    /// refused when it does not (the bomb guard), whatever its content.
    #[test]
    fn compressed_bodies_inflate_exactly_up_to_the_limit(
        plain in proptest::collection::vec(any::<u8>(), 0..4096),
        repeat in 1usize..64,
        limit in 1usize..65536,
    ) {
        let plain = plain.repeat(repeat);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let body = gz.finish().unwrap();
        match decompress(Some("gzip"), &body, limit) {
            Ok(out) => {
                prop_assert!(plain.len() <= limit);
                prop_assert_eq!(out.as_ref(), plain.as_slice());
            }
            Err(_) => prop_assert!(plain.len() > limit),
        }
    }

    /// Any Content-Type header value is classified or refused.
    #[test]
    fn any_content_type_is_classified(value in ".{0,64}") {
        let _ = payload_format(Some(&value));
    }
}

/// Nesting far deeper than any exporter sends is answered too (an error), not a stack
/// overflow: 10 000 levels of arrays in protobuf and in JSON.
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let mut value = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    };
    for _ in 0..200 {
        value = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![value],
            })),
        };
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "deep".into(),
                    value: Some(value),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    // prost refuses beyond its recursion limit (100).
    let body = prost::Message::encode_to_vec(&request);
    assert!(decode::<ExportTraceServiceRequest>(PayloadFormat::Protobuf, &body).is_err());
    // serde_json refuses beyond its recursion limit (128).
    let json = format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"k","value":{}1{}}}]}}}}]}}"#,
        r#"{"arrayValue":{"values":["#.repeat(10_000),
        "]}}".repeat(10_000)
    );
    assert!(decode::<ExportTraceServiceRequest>(PayloadFormat::Json, json.as_bytes()).is_err());
}
