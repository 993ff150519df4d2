//! Validation and normalization of posted spans.
//!
//! A `Span` keeps unknown keys (upstream's model allows extras and echoes them back), fills
//! defaults of nested models, turns integers in float fields into floats, and admits only
//! the attribute values OpenTelemetry allows (scalars and homogeneous scalar arrays).

use serde_json::{Map, Value};

use crate::model::StoredSpan;
use crate::stored_span::{SpanDocError, SpanWriter};
use crate::validate::{
    self, DICT_NULL, Errors, INT_NULL, LIST_NULL, Loc, STRING_NULL, object, required,
    required_non_null,
};

/// A validated span, ready for the store.
#[derive(Debug)]
pub struct SpanInput {
    pub rollout_id: String,
    /// The normalized document; its sequence id is the client's, or a placeholder the
    /// store replaces when it issues one.
    pub span: StoredSpan,
}

/// Freezes a normalized document into the stored form, with `sequence_id` as its id.
fn freeze(doc: &Map<String, Value>, sequence_id: i64) -> Result<StoredSpan, SpanDocError> {
    let mut writer = SpanWriter::with_capacity(1024);
    for (key, value) in doc {
        if key == "sequence_id" {
            writer.sequence_id();
        } else {
            writer.field(key, value);
        }
    }
    let time = |k: &str| doc.get(k).and_then(Value::as_f64);
    writer.finish(sequence_id, time("start_time"), time("end_time"))
}

/// Validates a posted `Span` body.
pub fn parse_span(value: &Value, errs: &mut Errors) -> Option<SpanInput> {
    let (rollout_id, sequence_id, doc) = normalize(value, errs)?;
    match freeze(&doc, sequence_id) {
        Ok(span) => Some(SpanInput { rollout_id, span }),
        Err(err) => {
            errs.push(&[], "value_error", err.to_string(), value);
            None
        }
    }
}

/// The validated span as a map in the key order it is stored in, with its rollout and
/// sequence ids.
fn normalize(value: &Value, errs: &mut Errors) -> Option<(String, i64, Map<String, Value>)> {
    let map = object(value, errs)?;
    let before = errs.list.len();
    let mut doc = Map::new();

    let rollout_id = required_non_null(map, "rollout_id", errs, validate::string, STRING_NULL);
    let attempt_id = required_non_null(map, "attempt_id", errs, validate::string, STRING_NULL);
    let sequence_id = required_non_null(map, "sequence_id", errs, validate::integer, INT_NULL);
    for key in ["rollout_id", "attempt_id"] {
        doc.insert(key.into(), map.get(key).cloned().unwrap_or(Value::Null));
    }
    doc.insert("sequence_id".into(), Value::from(sequence_id.unwrap_or(0)));
    for key in ["trace_id", "span_id"] {
        let v = required_non_null(map, key, errs, validate::string, STRING_NULL);
        doc.insert(key.into(), v.map_or(Value::Null, Value::String));
    }
    let parent_id = required(map, "parent_id", errs, validate::string);
    doc.insert(
        "parent_id".into(),
        parent_id.flatten().map_or(Value::Null, Value::String),
    );
    let name = required_non_null(map, "name", errs, validate::string, STRING_NULL);
    doc.insert("name".into(), name.map_or(Value::Null, Value::String));
    let status = required_non_null(map, "status", errs, trace_status, DICT_NULL);
    doc.insert("status".into(), status.unwrap_or(Value::Null));
    let attributes = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    doc.insert("attributes".into(), attributes.unwrap_or(Value::Null));
    let events = required_non_null(
        map,
        "events",
        errs,
        |v, e| validate::list(v, e, event),
        LIST_NULL,
    );
    doc.insert("events".into(), events.map_or(Value::Null, Value::Array));
    let links = required_non_null(
        map,
        "links",
        errs,
        |v, e| validate::list(v, e, link),
        LIST_NULL,
    );
    doc.insert("links".into(), links.map_or(Value::Null, Value::Array));
    for key in ["start_time", "end_time"] {
        let v = required(map, key, errs, validate::number);
        doc.insert(key.into(), v.flatten().map_or(Value::Null, Value::from));
    }
    for key in ["context", "parent"] {
        let v = required(map, key, errs, span_context);
        doc.insert(key.into(), v.flatten().unwrap_or(Value::Null));
    }
    let resource = required_non_null(map, "resource", errs, otel_resource, DICT_NULL);
    doc.insert("resource".into(), resource.unwrap_or(Value::Null));
    for (k, v) in map {
        if !doc.contains_key(k) {
            doc.insert(k.clone(), v.clone());
        }
    }
    if errs.list.len() != before {
        return None;
    }
    // The stored span reads its attempt id back from the document.
    attempt_id?;
    Some((rollout_id?, sequence_id?, doc))
}

/// Copies the keys of `map` that are not in `doc` yet (the models that allow extras).
fn keep_extras(map: &Map<String, Value>, doc: &mut Map<String, Value>) {
    for (k, v) in map {
        if !doc.contains_key(k) {
            doc.insert(k.clone(), v.clone());
        }
    }
}

fn trace_status(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let code = required_non_null(
        map,
        "status_code",
        errs,
        |v, e| match v.as_str() {
            Some(s @ ("UNSET" | "OK" | "ERROR")) => Some(s.to_owned()),
            _ => {
                e.push(
                    &[],
                    "literal_error",
                    "Input should be 'UNSET', 'OK' or 'ERROR'",
                    v,
                );
                None
            }
        },
        ("literal_error", "Input should be 'UNSET', 'OK' or 'ERROR'"),
    );
    let description = validate::optional(map, "description", errs, validate::string);
    let mut doc = Map::new();
    doc.insert(
        "status_code".into(),
        code.map_or(Value::Null, Value::String),
    );
    doc.insert(
        "description".into(),
        description.map_or(Value::Null, Value::String),
    );
    keep_extras(map, &mut doc);
    (errs.list.len() == before).then_some(Value::Object(doc))
}

fn span_context(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let mut doc = Map::new();
    for key in ["trace_id", "span_id"] {
        let s = required_non_null(map, key, errs, validate::string, STRING_NULL);
        doc.insert(key.into(), s.map_or(Value::Null, Value::String));
    }
    let remote = required_non_null(
        map,
        "is_remote",
        errs,
        validate::boolean,
        ("bool_type", "Input should be a valid boolean"),
    );
    doc.insert("is_remote".into(), remote.map_or(Value::Null, Value::Bool));
    let state = required_non_null(
        map,
        "trace_state",
        errs,
        |v, e| {
            let m = validate::dict(v, e)?;
            let mut ok = true;
            for (k, val) in &m {
                if !val.is_string() {
                    e.push(&[Loc::from(k.as_str())], STRING_NULL.0, STRING_NULL.1, val);
                    ok = false;
                }
            }
            ok.then_some(m)
        },
        DICT_NULL,
    );
    doc.insert(
        "trace_state".into(),
        state.map_or(Value::Null, Value::Object),
    );
    keep_extras(map, &mut doc);
    (errs.list.len() == before).then_some(Value::Object(doc))
}

fn event(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let mut doc = Map::new();
    let name = required_non_null(map, "name", errs, validate::string, STRING_NULL);
    doc.insert("name".into(), name.map_or(Value::Null, Value::String));
    let attrs = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    doc.insert("attributes".into(), attrs.unwrap_or(Value::Null));
    let ts = validate::optional(map, "timestamp", errs, validate::number);
    doc.insert("timestamp".into(), ts.map_or(Value::Null, Value::from));
    keep_extras(map, &mut doc);
    (errs.list.len() == before).then_some(Value::Object(doc))
}

fn link(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let mut doc = Map::new();
    let ctx = required_non_null(map, "context", errs, span_context, DICT_NULL);
    doc.insert("context".into(), ctx.unwrap_or(Value::Null));
    let attrs = validate::optional(map, "attributes", errs, attributes);
    doc.insert("attributes".into(), attrs.unwrap_or(Value::Null));
    keep_extras(map, &mut doc);
    (errs.list.len() == before).then_some(Value::Object(doc))
}

fn otel_resource(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let attrs = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    let schema = required_non_null(map, "schema_url", errs, validate::string, STRING_NULL);
    // OtelResource does not allow extras upstream: unknown keys are dropped.
    let mut doc = Map::new();
    doc.insert("attributes".into(), attrs.unwrap_or(Value::Null));
    doc.insert(
        "schema_url".into(),
        schema.map_or(Value::Null, Value::String),
    );
    (errs.list.len() == before).then_some(Value::Object(doc))
}

/// The kind of a scalar attribute value, for the homogeneity rule of arrays.
#[derive(PartialEq, Clone, Copy)]
enum Scalar {
    Str,
    Bool,
    Int,
    Float,
}

fn scalar_kind(v: &Value) -> Option<Scalar> {
    match v {
        Value::String(_) => Some(Scalar::Str),
        Value::Bool(_) => Some(Scalar::Bool),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(Scalar::Int),
        Value::Number(_) => Some(Scalar::Float),
        _ => None,
    }
}

/// Validates an `Attributes` mapping; an int/float mix in an array becomes all floats.
pub fn attributes(v: &Value, errs: &mut Errors) -> Option<Value> {
    let map = validate::dict(v, errs)?;
    let before = errs.list.len();
    let mut out = Map::with_capacity(map.len());
    for (key, value) in map {
        let ok = match &value {
            v if scalar_kind(v).is_some() => Some(value.clone()),
            Value::Array(items) => {
                let kinds: Option<Vec<Scalar>> = items.iter().map(scalar_kind).collect();
                match kinds {
                    Some(kinds) if kinds.windows(2).all(|w| w[0] == w[1]) => Some(value.clone()),
                    Some(kinds)
                        if kinds
                            .iter()
                            .all(|k| matches!(k, Scalar::Int | Scalar::Float)) =>
                    {
                        Some(Value::Array(
                            items
                                .iter()
                                .map(|i| Value::from(i.as_f64().unwrap_or_default()))
                                .collect(),
                        ))
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        match ok {
            Some(v) => {
                out.insert(key, v);
            }
            None => errs.push(
                &[Loc::Key(key)],
                "attribute_type",
                "Input should be a string, bool, int, float or a homogeneous list of those",
                &value,
            ),
        }
    }
    (errs.list.len() == before).then_some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span() -> Value {
        json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "sequence_id": 3,
            "trace_id": "ab", "span_id": "cd", "parent_id": null, "name": "n",
            "status": {"status_code": "OK"},
            "attributes": {"a": 1, "b": [1.5, 2], "c": ["x", "y"]},
            "events": [{"name": "e", "attributes": {}}],
            "links": [], "start_time": 1, "end_time": null,
            "context": {"trace_id": "ab", "span_id": "cd", "is_remote": false, "trace_state": {}},
            "parent": null,
            "resource": {"attributes": {}, "schema_url": "", "dropped": 1},
            "custom_extra_field": {"kept": true}
        })
    }

    #[test]
    fn normalizes_and_keeps_extras() {
        let mut errs = Errors::new("body");
        let input = parse_span(&span(), &mut errs).expect("valid span");
        let stored = input.span;
        let back: Value = serde_json::from_str(&stored.to_json()).unwrap();
        assert_eq!(back["attributes"]["b"], json!([1.5, 2.0]));
        assert_eq!(
            back["status"],
            json!({"status_code": "OK", "description": null})
        );
        assert_eq!(back["events"][0]["timestamp"], Value::Null);
        assert_eq!(back["start_time"], json!(1.0));
        assert_eq!(back["custom_extra_field"], json!({"kept": true}));
        assert_eq!(
            back["resource"],
            json!({"attributes": {}, "schema_url": ""})
        );
        assert_eq!(stored.sequence_id(), 3);
        assert_eq!(stored.attempt_id(), "at-1");
        assert_eq!(stored.trace_id(), "ab");
        assert_eq!(stored.span_id(), "cd");
        assert_eq!(stored.parent_id(), None);
        assert_eq!(stored.name(), "n");
        assert_eq!(stored.start_time(), Some(1.0));
        assert_eq!(stored.end_time(), None);
    }

    /// The stored text is what serializing the normalized map wrote before spans were
    /// kept as text: byte for byte, escapes, number formats and extras included.
    #[test]
    fn stored_text_is_the_serialized_document() {
        let mut odd = span();
        odd["name"] = json!("q\"uote\\ \u{1} é");
        odd["trace_id"] = json!("t\n");
        odd["parent_id"] = json!("p");
        odd["end_time"] = json!(1e16);
        odd["start_time"] = json!(0.1);
        odd["attributes"] =
            json!({"f": 1.0000000000000002, "big": 18_446_744_073_709_551_615_u64, "neg": -5});
        odd["z_extra"] = json!([null, {"k": "v"}]);
        for body in [span(), odd] {
            let mut errs = Errors::new("body");
            let (_, sequence_id, mut doc) = normalize(&body, &mut errs).expect("valid span");
            for id in [sequence_id, 0, 1234, -7] {
                let stored = freeze(&doc, id).unwrap();
                doc.insert("sequence_id".into(), Value::from(id));
                let old = serde_json::value::to_raw_value(&doc).unwrap();
                assert_eq!(stored.to_json(), old.get());
                assert_eq!(stored.json_len(), old.get().len());
            }
            let input = parse_span(&body, &mut errs).expect("valid span");
            assert_eq!(input.span.name(), body["name"].as_str().unwrap());
            assert_eq!(input.span.trace_id(), body["trace_id"].as_str().unwrap());
        }
    }

    #[test]
    fn rejects_nested_attributes_and_missing_fields() {
        let mut bad = span();
        bad["attributes"] = json!({"nested": {"x": 1}, "mixed": [1, "a"]});
        bad.as_object_mut().unwrap().remove("parent_id");
        let mut errs = Errors::new("body");
        assert!(parse_span(&bad, &mut errs).is_none());
        let kinds: Vec<_> = errs.list.iter().map(|e| e.kind).collect();
        assert!(kinds.contains(&"missing"));
        assert_eq!(kinds.iter().filter(|k| **k == "attribute_type").count(), 2);
    }

    #[test]
    fn status_code_must_be_known() {
        let mut bad = span();
        bad["status"] = json!({"status_code": "WEIRD"});
        let mut errs = Errors::new("body");
        assert!(parse_span(&bad, &mut errs).is_none());
        assert_eq!(errs.list[0].kind, "literal_error");
    }
}
