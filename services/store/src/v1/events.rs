//! v1 events as spans, and what `GET …/events?format=triplet` makes of them.
//!
//! An event is stored as a span of its rollout under its attempt's name: the span's `name`
//! is the event type, its start and end time the event's timestamp, its sequence id the
//! event's place, and the event's `data` is the JSON text of one string attribute,
//! [`DATA_ATTRIBUTE`] (a string, so that the 0.3 clients, which allow only scalar
//! attribute values, read these spans too). Spans without that attribute are not events.
//!
//! The triplet projection follows 1.0.2: `model_request` data is cut to its token ids,
//! logprobs and server, `reward` to its value, and `model_request` events are deduplicated
//! by prompt token ids, keeping the last. 1.0.2 also drops an earlier request's
//! `routed_experts` when a later request with experts extends its context; it does so by
//! rewriting the stored event, this store does it when events are read
//! ([`drop_superseded_routes`]): the answers are the same, the stored events stay as sent.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use crate::model::StoredSpan;
use crate::stored_span::{SpanDocError, SpanWriter};
use crate::validate::{self, Errors, FieldError};

/// The span attribute holding an event's `data`, as JSON text.
pub const DATA_ATTRIBUTE: &str = "agl.v1.event.data";

/// `EventCreate`: `{event_type: str, data: dict = {}}`; returns the type and the data's
/// JSON text.
pub fn parse_event(bytes: &[u8]) -> Result<(String, String), Vec<FieldError>> {
    let body = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    let parsed = validate::object(&body, &mut errs).and_then(|map| {
        let event_type = validate::required_non_null(
            map,
            "event_type",
            &mut errs,
            validate::str_ref,
            validate::STRING_NULL,
        );
        let data = match validate::field(map, "data", &mut errs, validate::dict_ref) {
            validate::Field::Absent => Some("{}".to_owned()),
            validate::Field::Value(m) => {
                Some(serde_json::to_string(m).expect("a JSON object serializes"))
            }
            validate::Field::Null => {
                errs.push(
                    &[validate::Loc::from("data")],
                    validate::DICT_NULL.0,
                    validate::DICT_NULL.1,
                    &Value::Null,
                );
                None
            }
            validate::Field::Invalid => None,
        };
        Some((event_type?.to_owned(), data?))
    });
    errs.finish(parsed.unwrap_or_default())
}

#[derive(Serialize)]
struct Attributes<'a> {
    #[serde(rename = "agl.v1.event.data")]
    data: &'a str,
}

/// The span an event is stored as; its sequence id is given when it is stored.
pub fn event_span(
    rollout_id: &str,
    attempt_id: &str,
    event_type: &str,
    data: &str,
    timestamp: f64,
) -> Result<StoredSpan, SpanDocError> {
    let trace_id = format!("{:032x}", fastrand::u128(..));
    let span_id = format!("{:016x}", fastrand::u64(..));
    let mut doc = SpanWriter::with_capacity(400 + data.len() * 11 / 10 + event_type.len());
    doc.field("rollout_id", rollout_id);
    doc.field("attempt_id", attempt_id);
    doc.sequence_id();
    doc.field("trace_id", &trace_id);
    doc.field("span_id", &span_id);
    doc.field("parent_id", &());
    doc.field("name", event_type);
    doc.raw_field("status", r#"{"status_code":"OK","description":null}"#);
    doc.field("attributes", &Attributes { data });
    doc.raw_field("events", "[]");
    doc.raw_field("links", "[]");
    doc.field("start_time", &timestamp);
    doc.field("end_time", &timestamp);
    doc.raw_field("context", "null");
    doc.raw_field("parent", "null");
    doc.raw_field("resource", r#"{"attributes":{},"schema_url":""}"#);
    doc.finish(0, Some(timestamp), Some(timestamp))
}

/// An event as v1's `Event` model dumps it; `data` as its JSON text until a projection
/// needs it parsed.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub event_type: String,
    pub rollout_id: String,
    pub attempt_id: String,
    pub timestamp: f64,
    pub data: Box<RawValue>,
}

#[derive(Deserialize)]
struct SpanFields {
    rollout_id: String,
    attempt_id: String,
    name: String,
    start_time: Option<f64>,
    attributes: EventAttributes,
}

#[derive(Deserialize)]
struct EventAttributes {
    #[serde(rename = "agl.v1.event.data")]
    data: Option<String>,
}

/// The event a stored span is, or `None` for a span that is not an event.
pub fn event_of(doc: &[u8]) -> Option<Event> {
    let span: SpanFields = serde_json::from_slice(doc).ok()?;
    let data = RawValue::from_string(span.attributes.data?).ok()?;
    Some(Event {
        event_type: span.name,
        rollout_id: span.rollout_id,
        attempt_id: span.attempt_id,
        timestamp: span.start_time.unwrap_or(0.0),
        data,
    })
}

/// An event with its `data` parsed, for the projections.
struct Parsed {
    event: Event,
    data: Map<String, Value>,
}

fn parse(events: Vec<Event>) -> Vec<Parsed> {
    events
        .into_iter()
        .map(|event| Parsed {
            data: serde_json::from_str(event.data.get()).unwrap_or_default(),
            event,
        })
        .collect()
}

fn unparse(events: Vec<Parsed>) -> Vec<Event> {
    events
        .into_iter()
        .map(|p| Event {
            data: serde_json::value::to_raw_value(&p.data).expect("a JSON object serializes"),
            ..p.event
        })
        .collect()
}

/// Python's truth value of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The logprobs of the chosen tokens of one choice; `None` when missing or unusable.
fn choice_log_probs(choice: &Map<String, Value>) -> Option<Vec<f64>> {
    let lp = choice.get("logprobs")?.as_object()?;
    let raw: Vec<&Value> = if let Some(content) = lp.get("content").and_then(Value::as_array) {
        content
            .iter()
            .map(|item| item.as_object().and_then(|o| o.get("logprob")))
            .collect::<Option<_>>()?
    } else if let Some(list) = lp.get("token_logprobs").and_then(Value::as_array) {
        list.iter().collect()
    } else {
        return None;
    };
    raw.into_iter()
        .map(|v| {
            // What Python's float() accepts of JSON values.
            let f = match v {
                Value::Number(n) => n.as_f64()?,
                Value::Bool(b) => f64::from(u8::from(*b)),
                Value::String(s) => s.trim().replace('_', "").parse().ok()?,
                _ => return None,
            };
            f.is_finite().then_some(f)
        })
        .collect()
}

/// A `model_request` event's data cut to what training reads.
fn trim_model_request(data: &Map<String, Value>) -> Map<String, Value> {
    let empty = || Value::Array(Vec::new());
    let mut prompt = empty();
    let mut response = empty();
    let mut log_probs = Value::Null;
    match data.get("response") {
        Some(Value::Object(resp)) => {
            prompt = resp.get("prompt_token_ids").cloned().unwrap_or_else(empty);
            let first = resp
                .get("choices")
                .and_then(Value::as_array)
                .and_then(|c| c.first())
                .and_then(Value::as_object);
            if let Some(choice) = first {
                if !truthy(&prompt) {
                    prompt = choice
                        .get("prompt_token_ids")
                        .cloned()
                        .unwrap_or_else(empty);
                }
                response = choice.get("token_ids").cloned().unwrap_or_else(empty);
                log_probs = choice_log_probs(choice).map_or(Value::Null, |v| json!(v));
            }
        }
        // Streamed responses as their chunks (what earlier gateways stored).
        Some(Value::Array(chunks)) => {
            let mut ids = Vec::new();
            for chunk in chunks.iter().filter_map(Value::as_object) {
                if !truthy(&prompt)
                    && let Some(p) = chunk.get("prompt_token_ids").filter(|p| truthy(p))
                {
                    prompt = p.clone();
                }
                let first = chunk
                    .get("choices")
                    .and_then(Value::as_array)
                    .and_then(|c| c.first())
                    .and_then(Value::as_object);
                if let Some(tids) = first
                    .and_then(|c| c.get("token_ids"))
                    .and_then(Value::as_array)
                {
                    ids.extend(tids.iter().cloned());
                }
            }
            response = Value::Array(ids);
        }
        _ => {}
    }
    let server = data.get("server").and_then(Value::as_object);
    let pick = |key: &str| {
        server
            .and_then(|s| s.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let mut out = Map::new();
    out.insert("prompt_token_ids".into(), prompt);
    out.insert("response_token_ids".into(), response);
    out.insert("response_log_probs".into(), log_probs);
    out.insert(
        "server".into(),
        json!({"model": pick("model"), "version": pick("version")}),
    );
    if let Some(routes) = data.get("routed_experts").filter(|r| !r.is_null()) {
        out.insert("routed_experts".into(), routes.clone());
    }
    for key in ["http_status", "status"] {
        if let Some(v) = data.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    if let Some(Value::Object(resp)) = data.get("response")
        && let Some(error) = resp.get("error")
    {
        out.insert("error".into(), error.clone());
    }
    out
}

/// A `reward` event's data cut to its value (and where it came from).
fn trim_reward(data: &Map<String, Value>) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert(
        "value".into(),
        data.get("value").cloned().unwrap_or(Value::Null),
    );
    for key in ["source", "reason"] {
        if let Some(v) = data.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    out
}

/// A key for deduplication: a non-empty list of integers (booleans and floats are not).
fn prompt_key(data: &Map<String, Value>) -> Option<Vec<i64>> {
    let list = data.get("prompt_token_ids")?.as_array()?;
    if list.is_empty() {
        return None;
    }
    list.iter()
        .map(|v| match v {
            Value::Number(n) if n.is_i64() => n.as_i64(),
            _ => None,
        })
        .collect()
}

/// An earlier request's `routed_experts` are dropped when the next request with experts
/// repeats its prompt or extends its context (prompt and response), as 1.0.2 drops them
/// when that request is recorded (only the next request looks back, and at one request).
fn drop_superseded_routes(events: &mut [Parsed]) {
    let mut previous: Option<usize> = None;
    for i in 0..events.len() {
        if events[i].event.event_type != "model_request" {
            continue;
        }
        let has_routes = events[i]
            .data
            .get("routed_experts")
            .is_some_and(|r| !r.is_null());
        if has_routes && let Some(j) = previous {
            let current = trim_model_request(&events[i].data);
            let before = trim_model_request(&events[j].data);
            let ids = |v: &Value| v.as_array().cloned().unwrap_or_default();
            let prompt = ids(&current["prompt_token_ids"]);
            let mut context = ids(&before["prompt_token_ids"]);
            let same_prompt = prompt == context;
            context.extend(ids(&before["response_token_ids"]));
            // Python's `prompt[:len(context)] == context`.
            if same_prompt || prompt.starts_with(&context) {
                events[j].data.remove("routed_experts");
            }
        }
        previous = Some(i);
    }
}

/// The events as `format=triplet` gives them.
pub fn triplets(events: Vec<Event>) -> Vec<Event> {
    let mut parsed = parse(events);
    drop_superseded_routes(&mut parsed);
    for p in &mut parsed {
        p.data = match p.event.event_type.as_str() {
            "model_request" => trim_model_request(&p.data),
            "reward" => trim_reward(&p.data),
            _ => std::mem::take(&mut p.data),
        };
    }
    let mut last = std::collections::HashMap::new();
    let mut keep = vec![true; parsed.len()];
    for (i, p) in parsed.iter().enumerate() {
        if p.event.event_type == "model_request"
            && let Some(key) = prompt_key(&p.data)
            && let Some(earlier) = last.insert(key, i)
        {
            keep[earlier] = false;
        }
    }
    let kept = parsed
        .into_iter()
        .zip(keep)
        .filter_map(|(p, k)| k.then_some(p))
        .collect();
    unparse(kept)
}

/// The events as sent, but for the `routed_experts` a later request superseded.
pub fn raw(events: Vec<Event>) -> Vec<Event> {
    let routes = events
        .iter()
        .any(|e| e.event_type == "model_request" && e.data.get().contains("\"routed_experts\""));
    if !routes {
        return events;
    }
    let mut parsed = parse(events);
    drop_superseded_routes(&mut parsed);
    unparse(parsed)
}

/// The events without any `routed_experts` (`include_routed_experts=false`).
pub fn without_routes(events: Vec<Event>) -> Vec<Event> {
    let mut parsed = parse(events);
    for p in &mut parsed {
        if p.event.event_type == "model_request" {
            p.data.remove("routed_experts");
        }
    }
    unparse(parsed)
}
