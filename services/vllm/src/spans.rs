//! A recorded call as the spans upstream's trainer reads.
//!
//! Upstream's `LLMProxy` (LiteLLM with its OpenTelemetry callback) leaves three spans per
//! call, and its `LlmProxyTraceToTriplet` adapter reads them by name:
//!
//! ```text
//! Received Proxy Server Request      the call as the proxy received it
//! └── litellm_request                gen_ai.* attributes, flattened (LiteLLM as of agentlightning 0.3.0)
//!     └── raw_gen_ai_request         llm.hosted_vllm.<key> for every key sent to and received from vLLM
//! ```
//!
//! Attribute values follow LiteLLM's `safe_set_attribute`: strings, booleans, integers and
//! floats as they are, `null` as `""`, lists and objects as Python literals
//! ([`crate::pyrepr`]), since the adapter reads them with `ast.literal_eval`. The rollout,
//! attempt and sequence ids go into the OTLP resource, one resource per call, which the
//! store files the spans under.

use std::collections::HashMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use agl_common::otlp::proto::common::v1::any_value::Value as Any;
use agl_common::otlp::proto::common::v1::{AnyValue, InstrumentationScope, KeyValue};
use agl_common::otlp::proto::resource::v1::Resource;
use agl_common::otlp::proto::trace::v1::span::SpanKind;
use agl_common::otlp::proto::trace::v1::status::StatusCode;
use agl_common::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use serde_json::{Map, Value};

use crate::call::{CallRecord, Endpoint, Parsed, Tracking, prompt_token_ids, response_token_ids};
use crate::pyrepr;

/// The root span's name (LiteLLM's `LITELLM_PROXY_REQUEST_SPAN_NAME`).
pub const ROOT_SPAN: &str = "Received Proxy Server Request";
/// The span with the `gen_ai.*` attributes.
pub const REQUEST_SPAN: &str = "litellm_request";
/// The span with the raw `llm.hosted_vllm.*` attributes, where the token ids are.
pub const RAW_SPAN: &str = "raw_gen_ai_request";
/// The provider name LiteLLM uses for vLLM, in attribute names and `gen_ai.system`.
pub const PROVIDER: &str = "hosted_vllm";
/// Resource attribute names of agentlightning (`agentlightning/semconv.py`).
pub const ROLLOUT_ID: &str = "agentlightning.rollout_id";
/// See [`ROLLOUT_ID`].
pub const ATTEMPT_ID: &str = "agentlightning.attempt_id";
/// See [`ROLLOUT_ID`].
pub const SEQUENCE_ID: &str = "agentlightning.span_sequence_id";

/// Spans produced per recorded call.
pub const SPANS_PER_CALL: u64 = 3;

/// Attributes in insertion order; setting a key again replaces its value in place (as
/// setting an attribute twice does on an OpenTelemetry span).
#[derive(Default)]
struct Attrs {
    list: Vec<KeyValue>,
    index: HashMap<String, usize>,
}

impl Attrs {
    fn set(&mut self, key: impl Into<String>, value: Any) {
        let key = key.into();
        let value = Some(AnyValue { value: Some(value) });
        if let Some(&i) = self.index.get(&key) {
            self.list[i].value = value;
        } else {
            self.index.insert(key.clone(), self.list.len());
            self.list.push(KeyValue {
                key,
                value,
                ..KeyValue::default()
            });
        }
    }

    fn str(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.set(key, Any::StringValue(value.into()));
    }

    /// LiteLLM's `safe_set_attribute`: primitives kept, `None` as `""`, the rest `str()`-ed.
    fn json(&mut self, key: impl Into<String>, value: &Value) {
        self.set(key, primitive(value));
    }

    /// Sets `key` only when `value` is present and not null.
    fn json_opt(&mut self, key: impl Into<String>, value: Option<&Value>) {
        if let Some(v) = value.filter(|v| !v.is_null()) {
            self.json(key, v);
        }
    }
}

fn primitive(value: &Value) -> Any {
    match value {
        Value::Null => Any::StringValue(String::new()),
        Value::Bool(b) => Any::BoolValue(*b),
        Value::String(s) => Any::StringValue(s.clone()),
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Any::IntValue(i),
            // Beyond i64: Python would keep an int; a string keeps every digit.
            (None, _) if n.as_u64().is_some() => Any::StringValue(n.to_string()),
            (None, Some(f)) => Any::DoubleValue(f),
            (None, None) => Any::StringValue(n.to_string()),
        },
        Value::Array(_) | Value::Object(_) => Any::StringValue(pyrepr::repr(value)),
    }
}

/// Nanoseconds since the epoch of `at`, given that `origin` happened at `origin_wall`.
fn unix_nanos(origin_wall: SystemTime, origin: Instant, at: Instant) -> u64 {
    let base = origin_wall
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let offset = at.saturating_duration_since(origin).as_nanos();
    u64::try_from(base + offset).unwrap_or(u64::MAX)
}

fn span_id() -> Vec<u8> {
    // Zero is "no span" in OTLP.
    fastrand::u64(1..).to_be_bytes().to_vec()
}

fn trace_id() -> Vec<u8> {
    fastrand::u128(1..).to_be_bytes().to_vec()
}

/// The OTLP resource of one recorded call: its three spans under a resource carrying the
/// rollout, attempt and sequence ids.
pub fn build(record: &CallRecord, parsed: &Parsed, tracking: &Tracking) -> ResourceSpans {
    let start = unix_nanos(record.started_wall, record.started, record.started);
    let sent = unix_nanos(record.started_wall, record.started, record.sent);
    let end = unix_nanos(record.started_wall, record.started, record.ended);
    let status = match &parsed.error {
        Some(message) => Status {
            code: StatusCode::Error as i32,
            message: message.clone(),
        },
        None => Status {
            code: StatusCode::Ok as i32,
            message: String::new(),
        },
    };
    let trace = trace_id();
    let (root_id, request_id, raw_id) = (span_id(), span_id(), span_id());

    let mut root = Attrs::default();
    root.str("http.request.method", "POST");
    root.str("url.path", record.path.clone());
    if let Some(code) = record.status {
        root.set("http.response.status_code", Any::IntValue(i64::from(code)));
    }

    let span =
        |id: &Vec<u8>, parent: &[u8], name: &str, kind: SpanKind, from: u64, attrs: Attrs| Span {
            trace_id: trace.clone(),
            span_id: id.clone(),
            parent_span_id: parent.to_vec(),
            name: name.to_owned(),
            kind: kind as i32,
            start_time_unix_nano: from,
            end_time_unix_nano: end.max(from),
            attributes: attrs.list,
            status: Some(status.clone()),
            ..Span::default()
        };
    let spans = vec![
        span(&root_id, &[], ROOT_SPAN, SpanKind::Server, start, root),
        span(
            &request_id,
            &root_id,
            REQUEST_SPAN,
            SpanKind::Internal,
            start,
            request_attributes(record, parsed, tracking),
        ),
        span(
            &raw_id,
            &request_id,
            RAW_SPAN,
            SpanKind::Internal,
            sent,
            raw_attributes(record, parsed),
        ),
    ];

    let mut resource = Attrs::default();
    resource.str("service.name", "agl-vllm");
    resource.str(ROLLOUT_ID, tracking.rollout_id.clone());
    resource.str(ATTEMPT_ID, tracking.attempt_id.clone());
    resource.set(SEQUENCE_ID, Any::IntValue(tracking.sequence_id));
    ResourceSpans {
        resource: Some(Resource {
            attributes: resource.list,
            ..Resource::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "agl-vllm".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                ..InstrumentationScope::default()
            }),
            spans,
            ..ScopeSpans::default()
        }],
        ..ResourceSpans::default()
    }
}

/// `litellm_request`: the flattened `gen_ai.*` names agentlightning 0.3.0 reads.
fn request_attributes(record: &CallRecord, parsed: &Parsed, tracking: &Tracking) -> Attrs {
    let mut a = Attrs::default();
    let request = record.request.as_object().cloned().unwrap_or_default();
    let headers = serde_json::json!({
        "x-rollout-id": tracking.rollout_id,
        "x-attempt-id": tracking.attempt_id,
        "x-sequence-id": tracking.sequence_id.to_string(),
    });
    a.str("metadata.requester_custom_headers", pyrepr::repr(&headers));
    a.str("gen_ai.system", PROVIDER);
    a.str("llm.request.type", record.endpoint.call_type());
    a.json_opt("gen_ai.request.model", request.get("model"));
    a.json_opt(
        "gen_ai.request.max_tokens",
        request
            .get("max_tokens")
            .or_else(|| request.get("max_completion_tokens")),
    );
    a.json_opt("gen_ai.request.temperature", request.get("temperature"));
    a.json_opt("gen_ai.request.top_p", request.get("top_p"));
    a.str(
        "llm.is_streaming",
        if record.stream { "True" } else { "False" },
    );
    a.json_opt("llm.user", request.get("user"));
    if let Some(ttft) = parsed.ttft {
        // Not one of LiteLLM's names (it records none): the dashboards show it per call.
        a.set(
            "gen_ai.server.time_to_first_token",
            Any::DoubleValue(ttft.as_secs_f64()),
        );
    }

    for (i, tool) in request
        .get("tools")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let function = tool.get("function").unwrap_or(tool);
        let prefix = format!("llm.request.functions.{i}");
        a.json_opt(format!("{prefix}.name"), function.get("name"));
        a.json_opt(format!("{prefix}.description"), function.get("description"));
        if let Some(parameters) = function.get("parameters") {
            a.str(format!("{prefix}.parameters"), parameters.to_string());
        }
    }

    match record.endpoint {
        Endpoint::Chat => {
            for (i, message) in request
                .get("messages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                a.json(
                    format!("gen_ai.prompt.{i}.role"),
                    message.get("role").unwrap_or(&Value::Null),
                );
                a.json(
                    format!("gen_ai.prompt.{i}.content"),
                    message.get("content").unwrap_or(&Value::Null),
                );
            }
        }
        Endpoint::Completions => {
            if let Some(prompt) = request.get("prompt") {
                a.str("gen_ai.prompt.0.role", "user");
                a.json("gen_ai.prompt.0.content", prompt);
            }
        }
    }

    let Some(response) = parsed.response.as_ref().and_then(Value::as_object) else {
        return a;
    };
    a.json_opt("gen_ai.response.id", response.get("id"));
    a.json_opt("gen_ai.response.model", response.get("model"));
    if let Some(usage) = response.get("usage").and_then(Value::as_object) {
        a.json_opt("llm.usage.total_tokens", usage.get("total_tokens"));
        a.json_opt(
            "gen_ai.usage.completion_tokens",
            usage.get("completion_tokens"),
        );
        a.json_opt("gen_ai.usage.prompt_tokens", usage.get("prompt_tokens"));
    } else if let (Some(p), Some(c)) = (parsed.prompt_tokens, parsed.completion_tokens) {
        // No usage chunk on the stream: counted from the token ids.
        let as_int = |n: u64| Any::IntValue(i64::try_from(n).unwrap_or(i64::MAX));
        a.set("llm.usage.total_tokens", as_int(p + c));
        a.set("gen_ai.usage.completion_tokens", as_int(c));
        a.set("gen_ai.usage.prompt_tokens", as_int(p));
    }
    for choice in response
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let i = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
        let prefix = format!("gen_ai.completion.{i}");
        a.json(
            format!("{prefix}.finish_reason"),
            choice.get("finish_reason").unwrap_or(&Value::Null),
        );
        match choice.get("message") {
            Some(message) => {
                a.json(
                    format!("{prefix}.role"),
                    message.get("role").unwrap_or(&Value::Null),
                );
                a.json(
                    format!("{prefix}.content"),
                    message.get("content").unwrap_or(&Value::Null),
                );
                if let Some(call) = message.pointer("/tool_calls/0/function") {
                    a.json(
                        format!("{prefix}.function_call.name"),
                        call.get("name").unwrap_or(&Value::Null),
                    );
                    a.json(
                        format!("{prefix}.function_call.arguments"),
                        call.get("arguments").unwrap_or(&Value::Null),
                    );
                }
            }
            None => {
                a.str(format!("{prefix}.role"), "assistant");
                a.json(
                    format!("{prefix}.content"),
                    choice.get("text").unwrap_or(&Value::Null),
                );
            }
        }
    }
    a
}

/// `raw_gen_ai_request`: every top-level key sent to vLLM, then every key received
/// (replacing same-named request keys, as LiteLLM does), plus the token id lists in the
/// two forms the adapter reads.
fn raw_attributes(record: &CallRecord, parsed: &Parsed) -> Attrs {
    let mut a = Attrs::default();
    let key = |k: &str| format!("llm.{PROVIDER}.{k}");
    let empty = Map::new();
    for (k, v) in record.request.as_object().unwrap_or(&empty) {
        a.json(key(k), v);
    }
    let Some(response) = &parsed.response else {
        return a;
    };
    for (k, v) in response.as_object().unwrap_or(&empty) {
        a.json(key(k), v);
    }
    if let Some(ids) = prompt_token_ids(response) {
        a.str(
            key("prompt_token_ids"),
            pyrepr::repr(&Value::Array(ids.clone())),
        );
    }
    if let Some(per_choice) = response_token_ids(response) {
        let lists = Value::Array(per_choice.into_iter().map(Value::Array).collect());
        a.str(key("response_token_ids"), pyrepr::repr(&lists));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Outcome;
    use std::time::Duration;

    fn attrs(span: &Span) -> serde_json::Map<String, Value> {
        agl_common::otlp::attributes_to_json(&span.attributes)
    }

    #[test]
    fn a_chat_call_becomes_three_spans_under_the_rollout_resource() {
        let now = Instant::now();
        let record = CallRecord {
            endpoint: Endpoint::Chat,
            stream: true,
            tracking: None,
            path: "/v1/chat/completions".into(),
            request: serde_json::json!({
                "model": "m", "messages": [{"role": "user", "content": "hi"}],
                "temperature": 0.5, "max_tokens": 8, "return_token_ids": true,
                "tools": [{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}],
            }),
            started_wall: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            started: now,
            sent: now + Duration::from_millis(1),
            status: Some(200),
            chunks: Vec::new(),
            truncated: false,
            ended: now + Duration::from_millis(5),
            outcome: Outcome::Completed,
        };
        let parsed = Parsed {
            response: Some(serde_json::json!({
                "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
                    "tool_calls": [{"id": "t", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
                    "finish_reason": "tool_calls", "token_ids": [7, 8]}],
                "usage": null, "prompt_token_ids": [1, 2, 3],
            })),
            prompt_tokens: Some(3),
            completion_tokens: Some(2),
            outcome: "ok",
            ttft: Some(Duration::from_millis(3)),
            ..Parsed::default()
        };
        let tracking = Tracking {
            rollout_id: "ro-1".into(),
            attempt_id: "at-1".into(),
            sequence_id: 4,
        };
        let rs = build(&record, &parsed, &tracking);
        let resource =
            agl_common::otlp::attributes_to_json(&rs.resource.as_ref().unwrap().attributes);
        assert_eq!(resource[ROLLOUT_ID], "ro-1");
        assert_eq!(resource[ATTEMPT_ID], "at-1");
        assert_eq!(resource[SEQUENCE_ID], 4);
        let spans = &rs.scope_spans[0].spans;
        assert_eq!(
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            [ROOT_SPAN, REQUEST_SPAN, RAW_SPAN]
        );
        assert_eq!(spans[1].parent_span_id, spans[0].span_id);
        assert_eq!(spans[2].parent_span_id, spans[1].span_id);
        assert!(spans[0].parent_span_id.is_empty());
        assert_eq!(spans[0].start_time_unix_nano, 1_700_000_000_000_000_000);
        assert_eq!(spans[2].start_time_unix_nano, 1_700_000_000_001_000_000);
        assert_eq!(spans[0].end_time_unix_nano, 1_700_000_000_005_000_000);

        let request = attrs(&spans[1]);
        assert_eq!(
            request["metadata.requester_custom_headers"],
            "{'x-rollout-id': 'ro-1', 'x-attempt-id': 'at-1', 'x-sequence-id': '4'}"
        );
        assert_eq!(request["gen_ai.request.temperature"], 0.5);
        assert_eq!(request["gen_ai.request.max_tokens"], 8);
        assert_eq!(request["llm.is_streaming"], "True");
        assert_eq!(request["gen_ai.server.time_to_first_token"], 0.003);
        assert_eq!(request["gen_ai.prompt.0.content"], "hi");
        assert_eq!(request["gen_ai.completion.0.content"], "");
        assert_eq!(request["gen_ai.completion.0.function_call.name"], "search");
        assert_eq!(request["llm.usage.total_tokens"], 5);
        assert_eq!(request["gen_ai.response.id"], "chatcmpl-1");
        assert_eq!(
            request["llm.request.functions.0.parameters"],
            "{\"type\":\"object\"}"
        );

        let raw = attrs(&spans[2]);
        assert_eq!(raw["llm.hosted_vllm.prompt_token_ids"], "[1, 2, 3]");
        assert_eq!(raw["llm.hosted_vllm.response_token_ids"], "[[7, 8]]");
        assert_eq!(raw["llm.hosted_vllm.return_token_ids"], true);
        assert_eq!(raw["llm.hosted_vllm.usage"], "");
        assert_eq!(raw["llm.hosted_vllm.id"], "chatcmpl-1");
        assert!(
            raw["llm.hosted_vllm.choices"]
                .as_str()
                .unwrap()
                .starts_with("[{'index': 0, 'message': {'role': 'assistant', 'content': None,")
        );
    }
}
