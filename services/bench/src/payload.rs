//! Request bodies: a realistic ~1 KB LLM-call span (as JSON and as OTLP protobuf), rollout
//! inputs, and the small JSON bodies of the queue and wait routes.
//!
//! Bodies are rendered with `format!` from constants rather than through `serde_json::Value`
//! because the generator shares the machine's cores with the server it measures: every
//! microsecond it spends is one the server does not get.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use prost::Message as _;

/// The model the LLM-call spans name.
pub const MODEL: &str = "Qwen2.5-1.5B-Instruct";
/// The prompt of the LLM-call spans.
pub const PROMPT: &str = "Which dept has the top average salary? Reply in SQL.";
/// The completion of the LLM-call spans.
pub const COMPLETION: &str = "SELECT dept FROM emp GROUP BY dept ORDER BY AVG(pay) DESC LIMIT 1";
/// The task of every rollout input.
pub const TASK: &str = "Which department has the highest average salary among people hired after \
    2019? Use the employees table.";

/// The OTLP resource attribute that names a span's rollout.
pub const ROLLOUT_ID_ATTR: &str = "agentlightning.rollout_id";
/// The OTLP resource attribute that names a span's attempt.
pub const ATTEMPT_ID_ATTR: &str = "agentlightning.attempt_id";

/// 16 hex digits, unique per `n`.
pub fn span_id(n: u64) -> String {
    format!("{n:016x}")
}

/// 32 hex digits derived from a rollout id, so every span of a rollout shares a trace.
pub fn trace_id(rollout_id: &str) -> String {
    let h = fnv1a(rollout_id.as_bytes());
    format!("{h:016x}{:016x}", h.rotate_left(29) ^ 0x9e37_79b9_7f4a_7c15)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// One span of an LLM call, as `POST /v1/agl/spans` takes it: every required field of the
/// official `Span` model, OpenTelemetry GenAI attributes with a prompt and a completion,
/// a parent id and a resource. About 1 KB, like the spans the official OTLP path stores
/// (which keep `parent` null, as here).
pub fn span_json(rollout_id: &str, attempt_id: &str, sequence_id: u64, n: u64) -> String {
    let trace = trace_id(rollout_id);
    let span = span_id(n);
    let parent = span_id(n ^ 0xffff_0000_0000);
    let start = 1_760_000_000.0 + (n % 100_000) as f64 * 0.001;
    format!(
        concat!(
            r#"{{"rollout_id":"{rid}","attempt_id":"{aid}","sequence_id":{seq},"#,
            r#""trace_id":"{trace}","span_id":"{span}","parent_id":"{parent}","#,
            r#""name":"openai.chat.completion","status":{{"status_code":"OK","description":null}},"#,
            r#""attributes":{{"gen_ai.system":"openai","gen_ai.request.model":"{model}","#,
            r#""gen_ai.prompt.0.role":"user","gen_ai.prompt.0.content":"{prompt}","#,
            r#""gen_ai.completion.0.role":"assistant","gen_ai.completion.0.content":"{completion}","#,
            r#""gen_ai.usage.prompt_tokens":182,"gen_ai.usage.completion_tokens":64}},"#,
            r#""events":[],"links":[],"start_time":{start},"end_time":{end},"#,
            r#""context":{{"trace_id":"{trace}","span_id":"{span}","is_remote":false,"trace_state":{{}}}},"#,
            r#""parent":null,"#,
            r#""resource":{{"attributes":{{"service.name":"agl-bench-agent","#,
            r#""agentlightning.rollout_id":"{rid}","agentlightning.attempt_id":"{aid}"}},"schema_url":""}}}}"#
        ),
        rid = rollout_id,
        aid = attempt_id,
        seq = sequence_id,
        trace = trace,
        span = span,
        parent = parent,
        model = MODEL,
        prompt = PROMPT,
        completion = COMPLETION,
        start = start,
        end = start + 0.85,
    )
}

/// One OTLP attribute.
pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// A string attribute value.
pub fn s(v: &str) -> any_value::Value {
    any_value::Value::StringValue(v.into())
}

/// One OTLP/HTTP protobuf `ExportTraceServiceRequest` of `count` spans with the same
/// attributes as [`span_json`], tagged with the rollout and attempt the way the official
/// SDK exporter tags them (resource attributes), span ids `first..first+count`.
pub fn otlp_batch(rollout_id: &str, attempt_id: &str, first: u64, count: u64) -> Vec<u8> {
    let trace_bytes = trace_id_bytes(rollout_id);
    let spans = (first..first + count)
        .map(|n| {
            let start = 1_760_000_000_000_000_000 + (n % 100_000) * 1_000_000;
            Span {
                trace_id: trace_bytes.clone(),
                span_id: n.to_be_bytes().to_vec(),
                parent_span_id: (n ^ 0xffff_0000_0000).to_be_bytes().to_vec(),
                name: "openai.chat.completion".into(),
                kind: 3,
                start_time_unix_nano: start,
                end_time_unix_nano: start + 850_000_000,
                attributes: vec![
                    kv("gen_ai.system", s("openai")),
                    kv("gen_ai.request.model", s(MODEL)),
                    kv("gen_ai.prompt.0.role", s("user")),
                    kv("gen_ai.prompt.0.content", s(PROMPT)),
                    kv("gen_ai.completion.0.role", s("assistant")),
                    kv("gen_ai.completion.0.content", s(COMPLETION)),
                    kv(
                        "gen_ai.usage.prompt_tokens",
                        any_value::Value::IntValue(182),
                    ),
                    kv(
                        "gen_ai.usage.completion_tokens",
                        any_value::Value::IntValue(64),
                    ),
                ],
                status: Some(Status {
                    message: String::new(),
                    code: status::StatusCode::Ok as i32,
                }),
                ..Span::default()
            }
        })
        .collect();
    otlp_request(rollout_id, attempt_id, spans)
}

/// The 16 bytes of [`trace_id`], as OTLP carries them.
pub fn trace_id_bytes(rollout_id: &str) -> Vec<u8> {
    let trace = trace_id(rollout_id);
    (0..16)
        .map(|i| u8::from_str_radix(&trace[i * 2..i * 2 + 2], 16).unwrap_or(0))
        .collect()
}

/// One encoded OTLP/HTTP `ExportTraceServiceRequest` carrying `spans`, tagged with the
/// rollout and attempt in the resource attributes as [`otlp_batch`] is.
pub fn otlp_request(rollout_id: &str, attempt_id: &str, spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", s("agl-bench-agent")),
                    kv(ROLLOUT_ID_ATTR, s(rollout_id)),
                    kv(ATTEMPT_ID_ATTR, s(attempt_id)),
                ],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// An encoded [`otlp_batch`] whose span ids can be renumbered without encoding again:
/// building and encoding 50 spans costs the generator more than copying 40 KB, and the
/// generator shares the CPUs with the server it measures.
pub struct OtlpTemplate {
    bytes: Vec<u8>,
    span_id_offsets: Vec<usize>,
}

impl OtlpTemplate {
    /// A template of `count` spans of one rollout and attempt.
    pub fn new(rollout_id: &str, attempt_id: &str, count: u64) -> Self {
        // Ids no other field can contain, so each one is found exactly where it was encoded.
        const MARK: u64 = 0xa5c3_5a3c_0000_0000;
        let bytes = otlp_batch(rollout_id, attempt_id, MARK, count);
        let span_id_offsets = (MARK..MARK + count)
            .map(|id| {
                let needle = id.to_be_bytes();
                bytes
                    .windows(8)
                    .position(|w| w == needle)
                    .expect("every span id is in the encoding")
            })
            .collect();
        Self {
            bytes,
            span_id_offsets,
        }
    }

    /// The batch with span ids `first..first+count`.
    pub fn render(&self, first: u64) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        for (i, &at) in self.span_id_offsets.iter().enumerate() {
            bytes[at..at + 8].copy_from_slice(&(first + i as u64).to_be_bytes());
        }
        bytes
    }
}

/// `POST /v1/agl/queues/rollouts/enqueue` body with `count` training tasks.
pub fn enqueue_body(count: usize) -> String {
    let one = format!(r#"{{"input":{{"question":"{TASK}","db":"hr.sqlite"}},"mode":"train"}}"#);
    let items = vec![one; count].join(",");
    format!(r#"{{"rollouts":[{items}]}}"#)
}

/// `POST /v1/agl/rollouts` body: a rollout started directly (it gets attempt 1).
pub fn start_rollout_body(worker_id: &str) -> String {
    format!(r#"{{"input":{{"question":"{TASK}","db":"hr.sqlite"}},"worker_id":"{worker_id}"}}"#)
}

/// `POST /v1/agl/queues/rollouts/dequeue` body.
pub fn dequeue_body(worker_id: &str) -> String {
    format!(r#"{{"limit":1,"worker_id":"{worker_id}"}}"#)
}

/// `POST /v1/agl/waits/rollouts` body.
pub fn wait_body(rollout_ids: &[String], timeout_s: f64) -> String {
    let ids = serde_json::to_string(rollout_ids).unwrap_or_else(|_| "[]".into());
    format!(r#"{{"rollout_ids":{ids},"timeout":{timeout_s}}}"#)
}

/// The attempt update that finishes an attempt.
pub const SUCCEEDED_BODY: &str = r#"{"status":"succeeded"}"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn span_json_is_about_one_kilobyte_and_valid() {
        let body = span_json("ro-0123456789ab", "at-01234567", 7, 42);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["span_id"], "000000000000002a");
        assert_eq!(v["sequence_id"], 7);
        assert!(
            (950..1100).contains(&body.len()),
            "{} bytes: {body}",
            body.len()
        );
    }

    #[test]
    fn otlp_batch_decodes() {
        let bytes = otlp_batch("ro-0123456789ab", "at-01234567", 10, 50);
        let req = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        assert_eq!(req.resource_spans[0].scope_spans[0].spans.len(), 50);
    }

    #[test]
    fn otlp_template_renumbers_span_ids() {
        let t = OtlpTemplate::new("ro-0123456789ab", "at-01234567", 3);
        let req = ExportTraceServiceRequest::decode(t.render(7).as_slice()).unwrap();
        let ids: Vec<Vec<u8>> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect();
        let want: Vec<Vec<u8>> = (7u64..10).map(|n| n.to_be_bytes().to_vec()).collect();
        assert_eq!(ids, want);
    }

    #[test]
    fn small_bodies_are_json() {
        for body in [
            enqueue_body(3),
            start_rollout_body("w"),
            dequeue_body("w"),
            wait_body(&["ro-1".into()], 0.05),
        ] {
            serde_json::from_str::<serde_json::Value>(&body).unwrap();
        }
    }
}
