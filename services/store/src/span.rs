//! Validation and normalization of posted spans.
//!
//! A `Span` keeps unknown keys (upstream's model allows extras and echoes them back), fills
//! defaults of nested models, turns integers in float fields into floats, and admits only
//! the attribute values OpenTelemetry allows (scalars and homogeneous scalar arrays).
//!
//! Both ways in end in `Parts`, the normalized span borrowed from the body, which one
//! writer turns into the stored text:
//! - the common shape (every model field, no extras, no duplicate keys) is deserialized
//!   straight from the body bytes, without building a `serde_json::Value`;
//! - anything else (extras, coercions, and every invalid body) is parsed into a `Value`
//!   and checked field by field, reporting every problem as pydantic would.
//!
//! The first way refuses whatever it does not handle, so the second decides those bodies;
//! a randomized test holds both to the span normalizer they replaced, byte for byte.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, Serializer};
use serde_json::{Map, Value};

use crate::json;
use crate::json::{Text, uncommon};
use crate::model::{StoredSpan, fields};
use crate::stored_span::{SpanDocError, SpanWriter};
use crate::validate::{
    self, DICT_NULL, Errors, FieldError, INT_NULL, LIST_NULL, Loc, STRING_NULL, object, required,
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

/// Reads a posted `Span` body: the span, or every problem with it.
pub fn parse_span_body(bytes: &[u8]) -> Result<SpanInput, Vec<FieldError>> {
    if let Some(input) = parse_common(bytes) {
        return Ok(input);
    }
    let value = validate::parse_body(bytes)?;
    let mut errs = Errors::new("body");
    match parse_span(&value, &mut errs) {
        Some(input) if errs.is_empty() => Ok(input),
        _ => Err(errs.list),
    }
}

/// The span when `bytes` hold the common shape; `None` leaves the body to [`parse_span`].
fn parse_common(bytes: &[u8]) -> Option<SpanInput> {
    let Common(parts) = serde_json::from_slice(bytes).ok()?;
    parts.into_input().ok()
}

/// Validates a parsed `Span` body.
pub fn parse_span(value: &Value, errs: &mut Errors) -> Option<SpanInput> {
    let parts = check(value, errs)?;
    match parts.into_input() {
        Ok(input) => Some(input),
        Err(err) => {
            errs.push(&[], "value_error", err.to_string(), value);
            None
        }
    }
}

// ----- the normalized span ----------------------------------------------------------------

/// Keys a model allows beyond its fields, as the client sent them.
#[derive(Default)]
struct Extras<'a>(Vec<(&'a str, &'a Value)>);

impl Serialize for Extras<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().copied())
    }
}

/// A normalized span, borrowed from the body.
struct Parts<'a> {
    rollout_id: Text<'a>,
    attempt_id: Text<'a>,
    sequence_id: i64,
    trace_id: Text<'a>,
    span_id: Text<'a>,
    parent_id: Option<Text<'a>>,
    name: Text<'a>,
    status: Status<'a>,
    attributes: Attrs<'a>,
    events: Vec<Event<'a>>,
    links: Vec<Link<'a>>,
    start_time: Option<f64>,
    end_time: Option<f64>,
    context: Option<Context<'a>>,
    parent: Option<Context<'a>>,
    resource: Resource<'a>,
    extras: Extras<'a>,
}

// The nested models. Serializing one writes its fields in order, then the extras the
// checked way kept; the common-shape reader deserializes them and refuses unknown keys.

/// `TraceStatus`.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Status<'a> {
    #[serde(borrow)]
    status_code: Text<'a>,
    #[serde(borrow, default)]
    description: Option<Text<'a>>,
    #[serde(skip_deserializing, flatten)]
    extras: Extras<'a>,
}

/// `SpanContext`.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Context<'a> {
    #[serde(borrow)]
    trace_id: Text<'a>,
    #[serde(borrow)]
    span_id: Text<'a>,
    is_remote: bool,
    #[serde(borrow)]
    trace_state: Pairs<'a, Text<'a>>,
    #[serde(skip_deserializing, flatten)]
    extras: Extras<'a>,
}

/// `Event`.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Event<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(borrow)]
    attributes: Attrs<'a>,
    #[serde(default)]
    timestamp: Option<f64>,
    #[serde(skip_deserializing, flatten)]
    extras: Extras<'a>,
}

/// `Link`.
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Link<'a> {
    #[serde(borrow)]
    context: Context<'a>,
    #[serde(borrow, default)]
    attributes: Option<Attrs<'a>>,
    #[serde(skip_deserializing, flatten)]
    extras: Extras<'a>,
}

/// `OtelResource` (upstream allows no extras: the checked way drops unknown keys).
#[derive(serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
struct Resource<'a> {
    #[serde(borrow)]
    attributes: Attrs<'a>,
    #[serde(borrow)]
    schema_url: Text<'a>,
}

/// An object's entries in document order, keys distinct.
struct Pairs<'a, V>(Vec<(Text<'a>, V)>);

/// An `Attributes` mapping.
type Attrs<'a> = Pairs<'a, Attr<'a>>;

/// An attribute value OpenTelemetry allows.
enum Attr<'a> {
    Str(Text<'a>),
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    /// Scalars of one kind, or integers and floats mixed (stored as all floats).
    List(Vec<Attr<'a>>),
}

/// The kind of a scalar attribute value, for the homogeneity rule of arrays.
#[derive(PartialEq, Clone, Copy)]
enum Scalar {
    Str,
    Bool,
    Int,
    Float,
}

impl Attr<'_> {
    fn kind(&self) -> Option<Scalar> {
        match self {
            Self::Str(_) => Some(Scalar::Str),
            Self::Bool(_) => Some(Scalar::Bool),
            Self::Int(_) | Self::UInt(_) => Some(Scalar::Int),
            Self::Float(_) => Some(Scalar::Float),
            Self::List(_) => None,
        }
    }

    /// A scalar of the body, `None` for anything else.
    fn scalar(v: &Value) -> Option<Attr<'_>> {
        Some(match v {
            Value::String(s) => Attr::Str(Text(Cow::Borrowed(s))),
            Value::Bool(b) => Attr::Bool(*b),
            Value::Number(n) => match (n.as_u64(), n.as_i64()) {
                (Some(u), _) => Attr::UInt(u),
                (None, Some(i)) => Attr::Int(i),
                (None, None) => Attr::Float(n.as_f64()?),
            },
            _ => return None,
        })
    }

    /// An attribute value of the body, `None` when OpenTelemetry does not allow it.
    fn from_value(v: &Value) -> Option<Attr<'_>> {
        match v {
            Value::Array(items) => {
                let items = items.iter().map(Attr::scalar).collect::<Option<Vec<_>>>()?;
                list_allowed(&items).then_some(Attr::List(items))
            }
            other => Attr::scalar(other),
        }
    }
}

/// One kind throughout, or integers and floats mixed.
fn list_allowed(items: &[Attr<'_>]) -> bool {
    let mut kinds = items.iter().filter_map(Attr::kind);
    let Some(first) = kinds.next() else {
        return true;
    };
    let number = |k: Scalar| matches!(k, Scalar::Int | Scalar::Float);
    kinds.all(|k| k == first || (number(k) && number(first)))
}

/// Whether a list mixes integers and floats, so that it is stored as all floats.
fn mixes_numbers(items: &[Attr<'_>]) -> bool {
    let has = |kind| items.iter().any(|i| i.kind() == Some(kind));
    has(Scalar::Int) && has(Scalar::Float)
}

impl Parts<'_> {
    /// Writes the normalized document as the stored span.
    fn into_input(self) -> Result<SpanInput, SpanDocError> {
        let mut w = SpanWriter::with_capacity(1024);
        w.field("rollout_id", &self.rollout_id);
        w.field("attempt_id", &self.attempt_id);
        w.sequence_id();
        w.field("trace_id", &self.trace_id);
        w.field("span_id", &self.span_id);
        w.field("parent_id", &self.parent_id);
        w.field("name", &self.name);
        w.field("status", &self.status);
        w.field("attributes", &self.attributes);
        w.field("events", &self.events);
        w.field("links", &self.links);
        w.field("start_time", &self.start_time);
        w.field("end_time", &self.end_time);
        w.field("context", &self.context);
        w.field("parent", &self.parent);
        w.field("resource", &self.resource);
        for (key, value) in &self.extras.0 {
            w.field(key, value);
        }
        let span = w.finish(self.sequence_id, self.start_time, self.end_time)?;
        Ok(SpanInput {
            rollout_id: self.rollout_id.0.into_owned(),
            span,
        })
    }
}

// ----- writing the attribute values ----------------------------------------------------------

impl<V: Serialize> Serialize for Pairs<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

impl Serialize for Attr<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Str(t) => t.serialize(s),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => s.serialize_i64(*i),
            Self::UInt(u) => s.serialize_u64(*u),
            Self::Float(f) => s.serialize_f64(*f),
            Self::List(items) if mixes_numbers(items) => s.collect_seq(items.iter().map(|i| {
                #[allow(clippy::cast_precision_loss)]
                match i {
                    Self::Int(n) => *n as f64,
                    Self::UInt(n) => *n as f64,
                    Self::Float(f) => *f,
                    _ => 0.0,
                }
            })),
            Self::List(items) => s.collect_seq(items),
        }
    }
}

// ----- the common shape, straight from the bytes -------------------------------------------

/// A span in the common shape; deserializing fails on anything else.
struct Common<'a>(Parts<'a>);

impl<'de> Deserialize<'de> for Common<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Common<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a span")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let (mut rollout_id, mut attempt_id, mut sequence_id) = (None, None, None);
                let (mut trace_id, mut span_id, mut parent_id, mut name) = (None, None, None, None);
                let (mut status, mut attributes, mut events, mut links) = (None, None, None, None);
                let (mut start_time, mut end_time) = (None, None);
                let (mut context, mut parent, mut resource) = (None, None, None);
                while let Some(Text(key)) = map.next_key()? {
                    match key.as_ref() {
                        "rollout_id" => json::set_once(&mut rollout_id, map.next_value()?)?,
                        "attempt_id" => json::set_once(&mut attempt_id, map.next_value()?)?,
                        "sequence_id" => {
                            json::set_once(&mut sequence_id, map.next_value::<i64>()?)?
                        }
                        "trace_id" => json::set_once(&mut trace_id, map.next_value()?)?,
                        "span_id" => json::set_once(&mut span_id, map.next_value()?)?,
                        "parent_id" => json::set_once(&mut parent_id, map.next_value()?)?,
                        "name" => json::set_once(&mut name, map.next_value()?)?,
                        "status" => json::set_once(&mut status, map.next_value::<Status<'de>>()?)?,
                        "attributes" => json::set_once(&mut attributes, map.next_value()?)?,
                        "events" => json::set_once(&mut events, map.next_value()?)?,
                        "links" => json::set_once(&mut links, map.next_value()?)?,
                        "start_time" => json::set_once(&mut start_time, map.next_value()?)?,
                        "end_time" => json::set_once(&mut end_time, map.next_value()?)?,
                        "context" => json::set_once(&mut context, map.next_value()?)?,
                        "parent" => json::set_once(&mut parent, map.next_value()?)?,
                        "resource" => json::set_once(&mut resource, map.next_value()?)?,
                        _ => return Err(uncommon("extra key")),
                    }
                }
                let status = status.ok_or_else(|| uncommon("status"))?;
                if !matches!(status.status_code.0.as_ref(), "UNSET" | "OK" | "ERROR") {
                    return Err(uncommon("status code"));
                }
                let need = || uncommon::<A::Error>("missing key");
                Ok(Common(Parts {
                    rollout_id: rollout_id.ok_or_else(need)?,
                    attempt_id: attempt_id.ok_or_else(need)?,
                    sequence_id: sequence_id.ok_or_else(need)?,
                    trace_id: trace_id.ok_or_else(need)?,
                    span_id: span_id.ok_or_else(need)?,
                    parent_id: parent_id.ok_or_else(need)?,
                    name: name.ok_or_else(need)?,
                    status,
                    attributes: attributes.ok_or_else(need)?,
                    events: events.ok_or_else(need)?,
                    links: links.ok_or_else(need)?,
                    start_time: start_time.ok_or_else(need)?,
                    end_time: end_time.ok_or_else(need)?,
                    context: context.ok_or_else(need)?,
                    parent: parent.ok_or_else(need)?,
                    resource: resource.ok_or_else(need)?,
                    extras: Extras::default(),
                }))
            }
        }
        d.deserialize_map(V)
    }
}

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Pairs<'a, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct PairsVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<V> {
            type Value = Pairs<'de, V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    out.push((key, map.next_value()?));
                }
                // A repeated key means "the last one wins, at the first one's place" in
                // the checked way; rare enough to leave to it.
                if json::has_duplicates(out.iter().map(|(k, _)| k.0.as_ref())) {
                    return Err(uncommon("duplicate key"));
                }
                Ok(Pairs(out))
            }
        }
        d.deserialize_map(PairsVisitor(std::marker::PhantomData))
    }
}

/// Reads attribute values; lists only at the top, of scalars.
struct AttrVisitor {
    list: bool,
}

/// A scalar inside an attribute list.
struct ListItem<'a>(Attr<'a>);

impl<'de: 'a, 'a> Deserialize<'de> for Attr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AttrVisitor { list: true })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ListItem<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(AttrVisitor { list: false }).map(ListItem)
    }
}

impl<'de> Visitor<'de> for AttrVisitor {
    type Value = Attr<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an attribute value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Attr::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Attr::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Attr::UInt(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Attr::Float(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Attr::Str(Text(Cow::Borrowed(v))))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Attr::Str(Text(Cow::Owned(v.to_owned()))))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Attr::Str(Text(Cow::Owned(v))))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        if !self.list {
            return Err(uncommon("nested list"));
        }
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(ListItem(item)) = seq.next_element()? {
            items.push(item);
        }
        if !list_allowed(&items) {
            return Err(uncommon("mixed list"));
        }
        Ok(Attr::List(items))
    }
}

// ----- the checked way: every problem reported ----------------------------------------------

fn text<'a>(v: &'a Value, errs: &mut Errors) -> Option<Text<'a>> {
    validate::str_ref(v, errs).map(|s| Text(Cow::Borrowed(s)))
}

/// Keys of `map` that are not `known`, with their values.
fn extras<'a>(map: &'a Map<String, Value>, known: &[&str]) -> Extras<'a> {
    Extras(
        map.iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v))
            .collect(),
    )
}

/// Checks a body against upstream's `Span` model, recording every problem.
fn check<'a>(value: &'a Value, errs: &mut Errors) -> Option<Parts<'a>> {
    let map = object(value, errs)?;
    let before = errs.list.len();
    let string = |key, errs: &mut Errors| required_non_null(map, key, errs, text, STRING_NULL);
    let number = |key, errs: &mut Errors| required(map, key, errs, validate::number);
    let rollout_id = string("rollout_id", errs);
    let attempt_id = string("attempt_id", errs);
    let sequence_id = required_non_null(map, "sequence_id", errs, validate::integer, INT_NULL);
    let trace_id = string("trace_id", errs);
    let span_id = string("span_id", errs);
    let parent_id = required(map, "parent_id", errs, text);
    let name = string("name", errs);
    let status = required_non_null(map, "status", errs, trace_status, DICT_NULL);
    let attributes = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    let events = required_non_null(
        map,
        "events",
        errs,
        |v, e| validate::list(v, e, event),
        LIST_NULL,
    );
    let links = required_non_null(
        map,
        "links",
        errs,
        |v, e| validate::list(v, e, link),
        LIST_NULL,
    );
    let start_time = number("start_time", errs);
    let end_time = number("end_time", errs);
    let context = required(map, "context", errs, span_context);
    let parent = required(map, "parent", errs, span_context);
    let resource = required_non_null(map, "resource", errs, otel_resource, DICT_NULL);
    if errs.list.len() != before {
        return None;
    }
    Some(Parts {
        rollout_id: rollout_id?,
        attempt_id: attempt_id?,
        sequence_id: sequence_id?,
        trace_id: trace_id?,
        span_id: span_id?,
        parent_id: parent_id?,
        name: name?,
        status: status?,
        attributes: attributes?,
        events: events?,
        links: links?,
        start_time: start_time?,
        end_time: end_time?,
        context: context?,
        parent: parent?,
        resource: resource?,
        extras: extras(map, fields::SPAN),
    })
}

fn trace_status<'a>(v: &'a Value, errs: &mut Errors) -> Option<Status<'a>> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let code = required_non_null(
        map,
        "status_code",
        errs,
        |v, e| match v.as_str() {
            Some(s @ ("UNSET" | "OK" | "ERROR")) => Some(Text(Cow::Borrowed(s))),
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
    let description = validate::optional(map, "description", errs, text);
    if errs.list.len() != before {
        return None;
    }
    Some(Status {
        status_code: code?,
        description,
        extras: extras(map, &["status_code", "description"]),
    })
}

fn span_context<'a>(v: &'a Value, errs: &mut Errors) -> Option<Context<'a>> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let trace_id = required_non_null(map, "trace_id", errs, text, STRING_NULL);
    let span_id = required_non_null(map, "span_id", errs, text, STRING_NULL);
    let is_remote = required_non_null(
        map,
        "is_remote",
        errs,
        validate::boolean,
        ("bool_type", "Input should be a valid boolean"),
    );
    let trace_state = required_non_null(
        map,
        "trace_state",
        errs,
        |v, e| {
            let m = validate::dict_ref(v, e)?;
            let mut out = Vec::with_capacity(m.len());
            for (k, val) in m {
                match val {
                    Value::String(s) => out.push((Text(Cow::Borrowed(k)), Text(Cow::Borrowed(s)))),
                    _ => e.push(&[Loc::key(k)], STRING_NULL.0, STRING_NULL.1, val),
                }
            }
            (out.len() == m.len()).then_some(Pairs(out))
        },
        DICT_NULL,
    );
    if errs.list.len() != before {
        return None;
    }
    Some(Context {
        trace_id: trace_id?,
        span_id: span_id?,
        is_remote: is_remote?,
        trace_state: trace_state?,
        extras: extras(map, &["trace_id", "span_id", "is_remote", "trace_state"]),
    })
}

fn event<'a>(v: &'a Value, errs: &mut Errors) -> Option<Event<'a>> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let name = required_non_null(map, "name", errs, text, STRING_NULL);
    let attributes = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    let timestamp = validate::optional(map, "timestamp", errs, validate::number);
    if errs.list.len() != before {
        return None;
    }
    Some(Event {
        name: name?,
        attributes: attributes?,
        timestamp,
        extras: extras(map, &["name", "attributes", "timestamp"]),
    })
}

fn link<'a>(v: &'a Value, errs: &mut Errors) -> Option<Link<'a>> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let context = required_non_null(map, "context", errs, span_context, DICT_NULL);
    let attributes = validate::optional(map, "attributes", errs, attributes);
    if errs.list.len() != before {
        return None;
    }
    Some(Link {
        context: context?,
        attributes,
        extras: extras(map, &["context", "attributes"]),
    })
}

fn otel_resource<'a>(v: &'a Value, errs: &mut Errors) -> Option<Resource<'a>> {
    let map = object(v, errs)?;
    let before = errs.list.len();
    let attributes = required_non_null(map, "attributes", errs, attributes, DICT_NULL);
    let schema_url = required_non_null(map, "schema_url", errs, text, STRING_NULL);
    if errs.list.len() != before {
        return None;
    }
    Some(Resource {
        attributes: attributes?,
        schema_url: schema_url?,
    })
}

/// Validates an `Attributes` mapping.
fn attributes<'a>(v: &'a Value, errs: &mut Errors) -> Option<Attrs<'a>> {
    let map = validate::dict_ref(v, errs)?;
    let mut out = Vec::with_capacity(map.len());
    for (key, value) in map {
        match Attr::from_value(value) {
            Some(attr) => out.push((Text(Cow::Borrowed(key.as_str())), attr)),
            None => errs.push(
                &[Loc::key(key)],
                "attribute_type",
                "Input should be a string, bool, int, float or a homogeneous list of those",
                value,
            ),
        }
    }
    (out.len() == map.len()).then_some(Pairs(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The normalizer spans went through before they were written straight into their
    /// stored text: each nested model copied into a map with its defaults filled. Kept as
    /// the reference the one-pass writer is compared against, byte for byte.
    mod reference {
        use serde_json::{Map, Value};

        use super::super::Scalar;
        use crate::model::StoredSpan;
        use crate::stored_span::{SpanDocError, SpanWriter};
        use crate::validate::{
            self, DICT_NULL, Errors, INT_NULL, LIST_NULL, Loc, STRING_NULL, object, required,
            required_non_null,
        };

        /// Freezes a normalized document into the stored form, with `sequence_id` as its id.
        pub(super) fn freeze(
            doc: &Map<String, Value>,
            sequence_id: i64,
        ) -> Result<StoredSpan, SpanDocError> {
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

        /// The validated span as a map in the key order it is stored in, with its rollout and
        /// sequence ids.
        pub(super) fn normalize(
            value: &Value,
            errs: &mut Errors,
        ) -> Option<(String, i64, Map<String, Value>)> {
            let map = object(value, errs)?;
            let before = errs.list.len();
            let mut doc = Map::new();

            let rollout_id =
                required_non_null(map, "rollout_id", errs, validate::string, STRING_NULL);
            let attempt_id =
                required_non_null(map, "attempt_id", errs, validate::string, STRING_NULL);
            let sequence_id =
                required_non_null(map, "sequence_id", errs, validate::integer, INT_NULL);
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
                            e.push(&[Loc::key(k)], STRING_NULL.0, STRING_NULL.1, val);
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
        fn attributes(v: &Value, errs: &mut Errors) -> Option<Value> {
            let map = validate::dict(v, errs)?;
            let before = errs.list.len();
            let mut out = Map::with_capacity(map.len());
            for (key, value) in map {
                let ok = match &value {
                    v if scalar_kind(v).is_some() => Some(value.clone()),
                    Value::Array(items) => {
                        let kinds: Option<Vec<Scalar>> = items.iter().map(scalar_kind).collect();
                        match kinds {
                            Some(kinds) if kinds.windows(2).all(|w| w[0] == w[1]) => {
                                Some(value.clone())
                            }
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
                        &[Loc::key(&key)],
                        "attribute_type",
                        "Input should be a string, bool, int, float or a homogeneous list of those",
                        &value,
                    ),
                }
            }
            (errs.list.len() == before).then_some(Value::Object(out))
        }
    }

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

    /// What the reference normalizer stores for `body` with its own sequence id, or the
    /// problems it reports.
    fn reference_outcome(body: &Value) -> Result<(String, String), Vec<validate::FieldError>> {
        let mut errs = Errors::new("body");
        match reference::normalize(body, &mut errs) {
            Some((rollout_id, sequence_id, mut doc)) => {
                doc.insert("sequence_id".into(), Value::from(sequence_id));
                Ok((rollout_id, serde_json::to_string(&doc).unwrap()))
            }
            None => Err(errs.list),
        }
    }

    fn outcome(body: &Value) -> Result<(String, String), Vec<validate::FieldError>> {
        let mut errs = Errors::new("body");
        match parse_span(body, &mut errs) {
            Some(input) => {
                assert!(errs.is_empty());
                Ok((input.rollout_id, input.span.to_json()))
            }
            None => Err(errs.list),
        }
    }

    /// What the body bytes come to, through whichever way reads them.
    fn outcome_of_bytes(bytes: &[u8]) -> Result<(String, String), Vec<validate::FieldError>> {
        parse_span_body(bytes).map(|input| (input.rollout_id, input.span.to_json()))
    }

    /// The same body as other JSON text: pretty, with `\u` escapes, or with a key repeated
    /// (which JSON readers resolve as "the last wins").
    fn respell(body: &Value, rng: &mut fastrand::Rng) -> Vec<u8> {
        let text = match rng.u8(0..6) {
            0 => serde_json::to_string_pretty(body).unwrap(),
            1 => serde_json::to_string(body).unwrap().replace('é', "\\u00e9"),
            _ => serde_json::to_string(body).unwrap(),
        };
        if rng.u8(0..8) != 0 {
            return text.into_bytes();
        }
        // Open one of the objects with a key it may already have.
        let opens: Vec<usize> = text.match_indices("{\"").map(|(i, _)| i).collect();
        let Some(&open) = rng.choice(&opens) else {
            return text.into_bytes();
        };
        let insert = if rng.bool() {
            "\"rollout_id\":\"dup\","
        } else {
            "\"a0\":true,"
        };
        format!("{}{insert}{}", &text[..=open], &text[open + 1..]).into_bytes()
    }

    /// The stored text is what serializing the normalized map wrote before spans were
    /// written in one pass: byte for byte, escapes, number formats and extras included.
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
            let (_, expected) = reference_outcome(&body).expect("valid span");
            assert_eq!(outcome(&body).unwrap().1, expected);
            let mut errs = Errors::new("body");
            let (_, sequence_id, mut doc) =
                reference::normalize(&body, &mut errs).expect("valid span");
            for id in [sequence_id, 0, 1234, -7] {
                let stored = reference::freeze(&doc, id).unwrap();
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

    /// Random spans, valid and not: the one-pass check accepts exactly what the reference
    /// accepts, stores the same bytes, and reports the same problems in the same order.
    #[test]
    fn one_pass_matches_the_reference_on_random_spans() {
        thread_local! {
            /// How rarely a generated value is spoiled: one time in this many.
            static NOISE: std::cell::Cell<u32> = const { std::cell::Cell::new(4) };
            /// Whether models get keys beyond their fields.
            static EXTRAS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
        }
        fn odd(rng: &mut fastrand::Rng, rarer: u32) -> bool {
            rng.u32(0..NOISE.get() * rarer) == 0
        }
        fn text(rng: &mut fastrand::Rng) -> Value {
            let pool = ["a", "span", "é", "q\"", "\\", "\n", "\u{1}", "日本", " "];
            let n = rng.usize(0..4);
            Value::from(
                (0..n)
                    .map(|_| pool[rng.usize(..pool.len())])
                    .collect::<String>(),
            )
        }
        fn scalar(rng: &mut fastrand::Rng) -> Value {
            match rng.u8(0..6) {
                0 => text(rng),
                1 => Value::from(rng.bool()),
                2 => Value::from(rng.i64(-1000..1000)),
                3 => Value::from(rng.u64(..) | (1 << 63)),
                4 => Value::from(f64::from(rng.i32(..)) / 7.0),
                _ => Value::from(rng.f64() * 1e20),
            }
        }
        fn any(rng: &mut fastrand::Rng, depth: u32) -> Value {
            match rng.u8(0..8) {
                0 => Value::Null,
                1 if depth > 0 => {
                    Value::Array((0..rng.usize(0..3)).map(|_| any(rng, depth - 1)).collect())
                }
                2 if depth > 0 => Value::Object(
                    (0..rng.usize(0..3))
                        .map(|i| (format!("k{i}"), any(rng, depth - 1)))
                        .collect(),
                ),
                _ => scalar(rng),
            }
        }
        fn attr_value(rng: &mut fastrand::Rng) -> Value {
            if odd(rng, 1) {
                return any(rng, 2);
            }
            match rng.u8(0..10) {
                0..=3 => {
                    let kind = rng.u8(0..6);
                    let n = rng.usize(0..4);
                    Value::Array(
                        (0..n)
                            .map(|_| {
                                // One kind, ints and floats mixed freely, now and then worse.
                                let k = if odd(rng, 1) {
                                    rng.u8(0..6)
                                } else if kind >= 2 && rng.bool() {
                                    rng.u8(2..6)
                                } else {
                                    kind
                                };
                                match k {
                                    0 => text(rng),
                                    1 => Value::from(rng.bool()),
                                    2 | 3 => Value::from(rng.i64(-50..50)),
                                    _ => Value::from(rng.f64()),
                                }
                            })
                            .collect(),
                    )
                }
                _ => scalar(rng),
            }
        }
        fn attrs(rng: &mut fastrand::Rng) -> Value {
            if odd(rng, 1) {
                return any(rng, 1);
            }
            Value::Object(
                (0..rng.usize(0..5))
                    .map(|i| (format!("a{i}"), attr_value(rng)))
                    .collect(),
            )
        }
        /// An object with the model's keys, each now and then dropped, nulled, given an
        /// odd value, plus extras.
        fn model(fields: Vec<(&str, Value)>, rng: &mut fastrand::Rng) -> Value {
            let mut map = Map::new();
            for (key, value) in fields {
                let value = if odd(rng, 1) {
                    match rng.u8(0..3) {
                        0 => continue,
                        1 => Value::Null,
                        _ => any(rng, 1),
                    }
                } else {
                    value
                };
                map.insert(key.into(), value);
            }
            let most = if EXTRAS.get() { 3 } else { 0 };
            for i in 0..rng.usize(0..=most).saturating_sub(1) {
                map.insert(format!("x{i}"), any(rng, 2));
            }
            if odd(rng, 2) {
                return any(rng, 1);
            }
            Value::Object(map)
        }
        fn context(rng: &mut fastrand::Rng) -> Value {
            let state = Value::Object(
                (0..rng.usize(0..3))
                    .map(|i| {
                        (
                            format!("s{i}"),
                            if odd(rng, 1) { any(rng, 1) } else { text(rng) },
                        )
                    })
                    .collect(),
            );
            model(
                vec![
                    ("trace_id", text(rng)),
                    ("span_id", text(rng)),
                    ("is_remote", Value::from(rng.bool())),
                    ("trace_state", state),
                ],
                rng,
            )
        }
        fn time(rng: &mut fastrand::Rng) -> Value {
            match rng.u8(0..4) {
                0 => Value::from(rng.u32(..)),
                1 => Value::Null,
                _ => Value::from(1.7e9 + rng.f64()),
            }
        }
        fn list(rng: &mut fastrand::Rng, item: fn(&mut fastrand::Rng) -> Value) -> Value {
            Value::Array((0..rng.usize(0..3)).map(|_| item(rng)).collect())
        }
        fn event(rng: &mut fastrand::Rng) -> Value {
            let ts = time(rng);
            model(
                vec![
                    ("name", text(rng)),
                    ("attributes", attrs(rng)),
                    ("timestamp", ts),
                ],
                rng,
            )
        }
        fn link(rng: &mut fastrand::Rng) -> Value {
            model(
                vec![("context", context(rng)), ("attributes", attrs(rng))],
                rng,
            )
        }
        fn span(rng: &mut fastrand::Rng) -> Value {
            let status = if odd(rng, 1) {
                "ok"
            } else {
                ["UNSET", "OK", "ERROR"][rng.usize(0..3)]
            };
            let fields = vec![
                ("rollout_id", text(rng)),
                ("attempt_id", text(rng)),
                (
                    "sequence_id",
                    match rng.u8(0..8) {
                        0 => Value::from(3.0),
                        1 if odd(rng, 1) => Value::from(2.5),
                        _ => Value::from(rng.i64(-5..1_000_000)),
                    },
                ),
                ("trace_id", text(rng)),
                ("span_id", text(rng)),
                (
                    "parent_id",
                    if rng.bool() { Value::Null } else { text(rng) },
                ),
                ("name", text(rng)),
                (
                    "status",
                    model(
                        vec![
                            ("status_code", Value::from(status)),
                            ("description", text(rng)),
                        ],
                        rng,
                    ),
                ),
                ("attributes", attrs(rng)),
                ("events", list(rng, event)),
                ("links", list(rng, link)),
                ("start_time", time(rng)),
                ("end_time", time(rng)),
                (
                    "context",
                    if rng.bool() {
                        Value::Null
                    } else {
                        context(rng)
                    },
                ),
                (
                    "parent",
                    if rng.bool() {
                        Value::Null
                    } else {
                        context(rng)
                    },
                ),
                (
                    "resource",
                    model(
                        vec![("attributes", attrs(rng)), ("schema_url", text(rng))],
                        rng,
                    ),
                ),
            ];
            let mut fields = fields;
            rng.shuffle(&mut fields);
            model(fields, rng)
        }

        let mut rng = fastrand::Rng::with_seed(agl_common::fuzzing::seed(0x5ba2));
        let (mut valid, mut invalid, mut common) = (0, 0, 0);
        for i in 0..agl_common::fuzzing::cases(3000) {
            NOISE.set(if i % 2 == 0 { 4 } else { 400 });
            EXTRAS.set(i % 4 < 2);
            let body = span(&mut rng);
            let expected = reference_outcome(&body);
            assert_eq!(outcome(&body), expected, "body: {body}");
            // From the bytes: the common shape straight, the rest through the check.
            let bytes = respell(&body, &mut rng);
            let read: Value = serde_json::from_slice(&bytes).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert_eq!(
                outcome_of_bytes(&bytes),
                reference_outcome(&read),
                "body: {text}"
            );
            if let Some(input) = parse_common(&bytes) {
                common += 1;
                assert_eq!(
                    Ok(input.span.to_json()),
                    reference_outcome(&read).map(|r| r.1)
                );
            }
            if expected.is_ok() {
                valid += 1
            } else {
                invalid += 1
            }
        }
        // Both sides of the check are exercised, and both ways in.
        assert!(
            valid > 300 && invalid > 300 && common > 300 && valid - common > 300,
            "valid {valid} (common shape {common}), invalid {invalid}"
        );
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
