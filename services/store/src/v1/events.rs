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
    raw.into_iter().map(logprob).collect()
}

/// A logprob as upstream reads one: what Python's `float()` accepts of a JSON value, if
/// finite.
fn logprob(v: &Value) -> Option<f64> {
    let f = match v {
        Value::Number(n) => n.as_f64()?,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.trim().replace('_', "").parse().ok()?,
        _ => return None,
    };
    f.is_finite().then_some(f)
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

/// An object's members as their text, or `None` for text that is not an object.
fn members(text: &str) -> Option<Vec<(std::borrow::Cow<'_, str>, &RawValue)>> {
    if !text.starts_with('{') {
        return None;
    }
    serde_json::from_str::<crate::json::Entries<'_>>(text)
        .ok()
        .map(|e| e.0)
}

fn member<'a>(m: &[(std::borrow::Cow<'a, str>, &'a RawValue)], key: &str) -> Option<&'a str> {
    m.iter().find(|(k, _)| k == key).map(|(_, v)| v.get())
}

/// Python's truth value of a JSON text (as serde writes it: compact).
fn truthy_text(text: &str) -> bool {
    !matches!(text, "null" | "false" | "\"\"" | "[]" | "{}") && text.parse::<f64>() != Ok(0.0)
}

/// One `logprobs.content` item: it must be an object with a `logprob`.
#[derive(Deserialize)]
struct LogprobItem {
    logprob: Value,
}

/// The chosen tokens' logprobs of a choice's `logprobs` text (one pass over the list);
/// `None` when unusable, as [`choice_log_probs`] reads it.
fn log_probs_text(lp: Option<&str>) -> Option<String> {
    let lp = members(lp?)?;
    let raw: Vec<Value> =
        if let Some(content) = member(&lp, "content").filter(|c| c.starts_with('[')) {
            let items: Vec<LogprobItem> = serde_json::from_str(content).ok()?;
            items.into_iter().map(|i| i.logprob).collect()
        } else if let Some(list) = member(&lp, "token_logprobs").filter(|c| c.starts_with('[')) {
            serde_json::from_str(list).ok()?
        } else {
            return None;
        };
    let values: Vec<f64> = raw.iter().map(logprob).collect::<Option<_>>()?;
    Some(serde_json::to_string(&values).expect("floats serialize"))
}

/// [`trim_model_request`] reading only what it keeps, straight from the stored text, and the
/// event's dedupe key; `None` where the text needs the general path (streamed chunks, routed
/// experts, anything unusual).
fn trim_model_request_text(data: &str) -> Option<(String, Option<Vec<i64>>)> {
    let m = members(data)?;
    if member(&m, "routed_experts").is_some_and(|r| r != "null") {
        return None;
    }
    let (mut prompt, mut response, mut log_probs, mut error) = ("[]", "[]", None, None);
    match member(&m, "response") {
        Some(resp) if resp.starts_with('{') => {
            let rm = members(resp)?;
            prompt = member(&rm, "prompt_token_ids").unwrap_or("[]");
            let choices = member(&rm, "choices").filter(|c| c.starts_with('['));
            let first: Option<Vec<&RawValue>> = choices.and_then(|c| serde_json::from_str(c).ok());
            if let Some(choice) = first
                .as_ref()
                .and_then(|c| c.first())
                .and_then(|c| members(c.get()))
            {
                if !truthy_text(prompt) {
                    prompt = member(&choice, "prompt_token_ids").unwrap_or("[]");
                }
                response = member(&choice, "token_ids").unwrap_or("[]");
                log_probs = log_probs_text(member(&choice, "logprobs"));
            }
            error = member(&rm, "error").map(str::to_owned);
            let key = serde_json::from_str::<Vec<i64>>(prompt)
                .ok()
                .filter(|k| !k.is_empty());
            return Some((
                write_trimmed(&m, prompt, response, log_probs.as_deref(), error.as_deref()),
                key,
            ));
        }
        Some(resp) if resp.starts_with('[') => return None,
        _ => {}
    }
    Some((
        write_trimmed(&m, prompt, response, None, error.as_deref()),
        None,
    ))
}

/// The trimmed data as text, keys in upstream's order.
fn write_trimmed(
    m: &[(std::borrow::Cow<'_, str>, &RawValue)],
    prompt: &str,
    response: &str,
    log_probs: Option<&str>,
    error: Option<&str>,
) -> String {
    let server = member(m, "server").and_then(members);
    let pick = |key: &str| {
        server
            .as_ref()
            .and_then(|s| member(s, key))
            .unwrap_or("null")
            .to_owned()
    };
    let mut out = String::with_capacity(prompt.len() + response.len() + 200);
    out.push_str("{\"prompt_token_ids\":");
    out.push_str(prompt);
    out.push_str(",\"response_token_ids\":");
    out.push_str(response);
    out.push_str(",\"response_log_probs\":");
    out.push_str(log_probs.unwrap_or("null"));
    out.push_str(",\"server\":{\"model\":");
    out.push_str(&pick("model"));
    out.push_str(",\"version\":");
    out.push_str(&pick("version"));
    out.push('}');
    for key in ["http_status", "status"] {
        if let Some(v) = member(m, key) {
            out.push_str(",\"");
            out.push_str(key);
            out.push_str("\":");
            out.push_str(v);
        }
    }
    if let Some(e) = error {
        out.push_str(",\"error\":");
        out.push_str(e);
    }
    out.push('}');
    out
}

/// The events as `format=triplet` gives them: read straight from the stored texts where
/// they allow it (the common case), else through the general path below.
pub fn triplets(events: Vec<Event>) -> Vec<Event> {
    let mut out = Vec::with_capacity(events.len());
    let mut keys = Vec::with_capacity(events.len());
    for event in &events {
        let (data, key) = match event.event_type.as_str() {
            "model_request" => match trim_model_request_text(event.data.get()) {
                Some((text, key)) => (text, key),
                None => return triplets_general(events),
            },
            "reward" => {
                let Some(m) = members(event.data.get()) else {
                    return triplets_general(events);
                };
                let mut text = String::from("{\"value\":");
                text.push_str(member(&m, "value").unwrap_or("null"));
                for key in ["source", "reason"] {
                    if let Some(v) = member(&m, key) {
                        text.push_str(",\"");
                        text.push_str(key);
                        text.push_str("\":");
                        text.push_str(v);
                    }
                }
                text.push('}');
                (text, None)
            }
            _ => (event.data.get().to_owned(), None),
        };
        out.push(data);
        keys.push(key);
    }
    // Deduplicated by prompt token ids, the last kept.
    let mut last = std::collections::HashMap::new();
    let mut keep = vec![true; events.len()];
    for (i, key) in keys.into_iter().enumerate() {
        if let Some(key) = key
            && let Some(earlier) = last.insert(key, i)
        {
            keep[earlier] = false;
        }
    }
    events
        .into_iter()
        .zip(out)
        .zip(keep)
        .filter_map(|((event, data), k)| {
            k.then(|| Event {
                data: RawValue::from_string(data).expect("JSON written from JSON"),
                ..event
            })
        })
        .collect()
}

/// The events as `format=triplet` gives them, the general way: every event parsed.
fn triplets_general(events: Vec<Event>) -> Vec<Event> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event(event_type: &str, data: Value) -> Event {
        Event {
            event_type: event_type.into(),
            rollout_id: "r".into(),
            attempt_id: "0".into(),
            timestamp: 1.0,
            data: serde_json::value::to_raw_value(&data).unwrap(),
        }
    }

    fn datas(events: &[Event]) -> Vec<Value> {
        events
            .iter()
            .map(|e| serde_json::from_str(e.data.get()).unwrap())
            .collect()
    }

    /// The text path gives what the general one does, on shapes usual and not.
    #[test]
    fn reading_the_text_gives_what_parsing_gives() {
        let events = vec![
            event(
                "model_request",
                json!({"response": {"prompt_token_ids": [1, 2], "choices": [{"token_ids": [3],
                       "logprobs": {"content": [{"logprob": -0.5}]}}]},
                       "server": {"model": "m", "version": 2, "endpoint": "e"},
                       "http_status": 200, "status": "ok"}),
            ),
            // Prompt ids on the choice; logprobs as text, one not finite.
            event(
                "model_request",
                json!({"response": {"prompt_token_ids": [], "choices": [{"prompt_token_ids": [7],
                       "token_ids": [8], "logprobs": {"token_logprobs": ["-1.5", true]}}]},
                       "http_status": null}),
            ),
            event(
                "model_request",
                json!({"response": {"choices": [{"token_ids": [9],
                       "logprobs": {"token_logprobs": [-1.0, "nan"]}}], "error": {"message": "x"}},
                       "server": null, "status": "error"}),
            ),
            // No response at all; then the same prompt again (the last is kept).
            event("model_request", json!({"model": "m"})),
            event(
                "model_request",
                json!({"response": {"prompt_token_ids": [1, 2], "choices": [{"token_ids": [4]}]}}),
            ),
            event(
                "model_request",
                json!({"response": {"prompt_token_ids": [1.0, 2]}}),
            ),
            event("reward", json!({"value": 1, "source": null, "extra": 2})),
            event("reward", json!({})),
            event("note", json!({"a": [1, {"b": null}]})),
        ];
        let fast = triplets(events.clone());
        let general = triplets_general(events);
        assert_eq!(datas(&fast), datas(&general));
        assert_eq!(fast.len(), 8, "one of the two same prompts dropped");
    }
}
