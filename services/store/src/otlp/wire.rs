//! A borrowed view of an OTLP `ExportTraceServiceRequest`, read straight from the request
//! bytes: names, attribute strings and ids point into the body instead of being copied
//! into prost's owned messages (about twenty allocations a span).
//!
//! The reader takes only the shape OTLP exporters send: the fields of the trace, resource
//! and common protos, each singular message at most once. Anything else (an unknown or
//! profiling-only field, a repeated singular message, which protobuf merges, a wire-type
//! mismatch, bad UTF-8, deep nesting, a truncated field) makes it give up, the request is
//! decoded by prost instead and [`from_prost`] gives the same view of that, so prost stays
//! the judge of every body this reader does not take. Varints and keys are read with
//! prost's own wire functions.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1 as pb_common;
use opentelemetry_proto::tonic::trace::v1 as pb_trace;
use prost::encoding::{WireType, decode_key, decode_varint};

/// `ExportTraceServiceRequest`.
pub struct Request<'a> {
    pub resource_spans: Vec<ResourceSpans<'a>>,
}

/// `ResourceSpans`.
pub struct ResourceSpans<'a> {
    pub resource: Option<Resource<'a>>,
    pub scope_spans: Vec<ScopeSpans<'a>>,
    pub schema_url: &'a str,
}

/// `Resource`.
pub struct Resource<'a> {
    pub attributes: Vec<KeyValue<'a>>,
}

/// `ScopeSpans` (the scope itself is checked, not kept: spans do not carry it).
pub struct ScopeSpans<'a> {
    pub spans: Vec<Span<'a>>,
}

/// `Span`, the fields the store maps.
pub struct Span<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub parent_span_id: &'a [u8],
    pub name: &'a str,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Vec<KeyValue<'a>>,
    pub events: Vec<Event<'a>>,
    pub links: Vec<Link<'a>>,
    pub status: Option<Status<'a>>,
}

/// `Span.Event`.
pub struct Event<'a> {
    pub time_unix_nano: u64,
    pub name: &'a str,
    pub attributes: Vec<KeyValue<'a>>,
}

/// `Span.Link`.
pub struct Link<'a> {
    pub trace_id: &'a [u8],
    pub span_id: &'a [u8],
    pub attributes: Vec<KeyValue<'a>>,
}

/// `Status`.
pub struct Status<'a> {
    pub message: &'a str,
    pub code: i32,
}

/// `KeyValue`.
pub struct KeyValue<'a> {
    pub key: &'a str,
    pub value: Option<AnyValue<'a>>,
}

/// `AnyValue`: `value` is `None` when no field of the oneof is set.
pub struct AnyValue<'a> {
    pub value: Option<Any<'a>>,
}

/// `AnyValue.value`.
pub enum Any<'a> {
    StringValue(&'a str),
    BoolValue(bool),
    IntValue(i64),
    DoubleValue(f64),
    ArrayValue(ArrayValue<'a>),
    KvlistValue(KeyValueList<'a>),
    BytesValue(&'a [u8]),
    /// Profiling's string-table index: read, and stored like an empty value.
    StringValueStrindex,
}

/// `ArrayValue`.
pub struct ArrayValue<'a> {
    pub values: Vec<AnyValue<'a>>,
}

/// `KeyValueList`.
pub struct KeyValueList<'a> {
    pub values: Vec<KeyValue<'a>>,
}

/// The reader gave up; prost decides this body.
#[derive(Debug)]
pub struct Refused;

type Result<T> = std::result::Result<T, Refused>;

/// Messages nested deeper than this are left to prost (whose limit is 100).
const MAX_DEPTH: u32 = 64;

/// One field's value as it is on the wire.
#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Bytes(&'a [u8]),
}

impl<'a> Wire<'a> {
    fn varint(self) -> Result<u64> {
        match self {
            Self::Varint(v) => Ok(v),
            _ => Err(Refused),
        }
    }

    fn fixed64(self) -> Result<u64> {
        match self {
            Self::Fixed64(v) => Ok(v),
            _ => Err(Refused),
        }
    }

    fn fixed32(self) -> Result<u32> {
        match self {
            Self::Fixed32(v) => Ok(v),
            _ => Err(Refused),
        }
    }

    fn bytes(self) -> Result<&'a [u8]> {
        match self {
            Self::Bytes(b) => Ok(b),
            _ => Err(Refused),
        }
    }

    fn string(self) -> Result<&'a str> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Refused)
    }

    /// A nested message's bytes, one level deeper.
    fn message(self, depth: u32) -> Result<(&'a [u8], u32)> {
        let depth = depth + 1;
        if depth > MAX_DEPTH {
            return Err(Refused);
        }
        Ok((self.bytes()?, depth))
    }
}

/// Splits off `n` bytes.
fn take<'a>(buf: &mut &'a [u8], n: usize) -> Result<&'a [u8]> {
    if n > buf.len() {
        return Err(Refused);
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

/// Calls `field` with every field of a message, in wire order.
fn fields<'a>(mut buf: &'a [u8], mut field: impl FnMut(u32, Wire<'a>) -> Result<()>) -> Result<()> {
    while !buf.is_empty() {
        let (tag, wire_type) = decode_key(&mut buf).map_err(|_| Refused)?;
        let value = match wire_type {
            WireType::Varint => Wire::Varint(decode_varint(&mut buf).map_err(|_| Refused)?),
            WireType::SixtyFourBit => {
                let bytes = take(&mut buf, 8)?;
                Wire::Fixed64(u64::from_le_bytes(bytes.try_into().map_err(|_| Refused)?))
            }
            WireType::ThirtyTwoBit => {
                let bytes = take(&mut buf, 4)?;
                Wire::Fixed32(u32::from_le_bytes(bytes.try_into().map_err(|_| Refused)?))
            }
            WireType::LengthDelimited => {
                let len = decode_varint(&mut buf).map_err(|_| Refused)?;
                Wire::Bytes(take(&mut buf, usize::try_from(len).map_err(|_| Refused)?)?)
            }
            WireType::StartGroup | WireType::EndGroup => return Err(Refused),
        };
        field(tag, value)?;
    }
    Ok(())
}

/// A singular message field: protobuf merges repeats, which is prost's to do.
fn once<T>(slot: &mut Option<T>, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        return Err(Refused);
    }
    Ok(())
}

/// Reads a request, or gives up.
pub fn decode(buf: &[u8]) -> Result<Request<'_>> {
    let mut resource_spans = Vec::new();
    fields(buf, |tag, value| match tag {
        1 => {
            let (bytes, depth) = value.message(1)?;
            resource_spans.push(read_resource_spans(bytes, depth)?);
            Ok(())
        }
        _ => Err(Refused),
    })?;
    Ok(Request { resource_spans })
}

fn read_resource_spans(buf: &[u8], depth: u32) -> Result<ResourceSpans<'_>> {
    let (mut resource, mut scope_spans, mut schema_url) = (None, Vec::new(), "");
    fields(buf, |tag, value| {
        match tag {
            1 => {
                let (bytes, depth) = value.message(depth)?;
                once(&mut resource, read_resource(bytes, depth)?)?;
            }
            2 => {
                let (bytes, depth) = value.message(depth)?;
                scope_spans.push(read_scope_spans(bytes, depth)?);
            }
            3 => schema_url = value.string()?,
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(ResourceSpans {
        resource,
        scope_spans,
        schema_url,
    })
}

fn read_resource(buf: &[u8], depth: u32) -> Result<Resource<'_>> {
    let mut attributes = Vec::new();
    fields(buf, |tag, value| {
        match tag {
            1 => {
                let (bytes, depth) = value.message(depth)?;
                attributes.push(read_key_value(bytes, depth)?);
            }
            2 => {
                value.varint()?;
            }
            // Entity references (field 3) are rare enough to leave to prost.
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(Resource { attributes })
}

fn read_scope_spans(buf: &[u8], depth: u32) -> Result<ScopeSpans<'_>> {
    let (mut scope, mut spans) = (None, Vec::new());
    fields(buf, |tag, value| {
        match tag {
            1 => {
                let (bytes, depth) = value.message(depth)?;
                once(&mut scope, check_scope(bytes, depth)?)?;
            }
            2 => {
                let (bytes, depth) = value.message(depth)?;
                spans.push(read_span(bytes, depth)?);
            }
            3 => {
                value.string()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(ScopeSpans { spans })
}

/// `InstrumentationScope`: read as prost would, then dropped.
fn check_scope(buf: &[u8], depth: u32) -> Result<()> {
    fields(buf, |tag, value| {
        match tag {
            1 | 2 => {
                value.string()?;
            }
            3 => {
                let (bytes, depth) = value.message(depth)?;
                read_key_value(bytes, depth)?;
            }
            4 => {
                value.varint()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })
}

fn read_span(buf: &[u8], depth: u32) -> Result<Span<'_>> {
    let mut span = Span {
        trace_id: &[],
        span_id: &[],
        parent_span_id: &[],
        name: "",
        start_time_unix_nano: 0,
        end_time_unix_nano: 0,
        attributes: Vec::new(),
        events: Vec::new(),
        links: Vec::new(),
        status: None,
    };
    fields(buf, |tag, value| {
        match tag {
            1 => span.trace_id = value.bytes()?,
            2 => span.span_id = value.bytes()?,
            3 => {
                value.string()?;
            }
            4 => span.parent_span_id = value.bytes()?,
            5 => span.name = value.string()?,
            6 | 10 | 12 | 14 => {
                value.varint()?;
            }
            7 => span.start_time_unix_nano = value.fixed64()?,
            8 => span.end_time_unix_nano = value.fixed64()?,
            9 => {
                let (bytes, depth) = value.message(depth)?;
                span.attributes.push(read_key_value(bytes, depth)?);
            }
            11 => {
                let (bytes, depth) = value.message(depth)?;
                span.events.push(read_event(bytes, depth)?);
            }
            13 => {
                let (bytes, depth) = value.message(depth)?;
                span.links.push(read_link(bytes, depth)?);
            }
            15 => {
                let (bytes, _) = value.message(depth)?;
                once(&mut span.status, read_status(bytes)?)?;
            }
            16 => {
                value.fixed32()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(span)
}

fn read_event(buf: &[u8], depth: u32) -> Result<Event<'_>> {
    let (mut time_unix_nano, mut name, mut attributes) = (0, "", Vec::new());
    fields(buf, |tag, value| {
        match tag {
            1 => time_unix_nano = value.fixed64()?,
            2 => name = value.string()?,
            3 => {
                let (bytes, depth) = value.message(depth)?;
                attributes.push(read_key_value(bytes, depth)?);
            }
            4 => {
                value.varint()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(Event {
        time_unix_nano,
        name,
        attributes,
    })
}

fn read_link(buf: &[u8], depth: u32) -> Result<Link<'_>> {
    let (mut trace_id, mut span_id, mut attributes): (&[u8], &[u8], _) = (&[], &[], Vec::new());
    fields(buf, |tag, value| {
        match tag {
            1 => trace_id = value.bytes()?,
            2 => span_id = value.bytes()?,
            3 => {
                value.string()?;
            }
            4 => {
                let (bytes, depth) = value.message(depth)?;
                attributes.push(read_key_value(bytes, depth)?);
            }
            5 => {
                value.varint()?;
            }
            6 => {
                value.fixed32()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(Link {
        trace_id,
        span_id,
        attributes,
    })
}

fn read_status(buf: &[u8]) -> Result<Status<'_>> {
    let (mut message, mut code) = ("", 0);
    fields(buf, |tag, value| {
        match tag {
            2 => message = value.string()?,
            // An enum is an int32 on the wire: prost keeps the low 32 bits.
            #[allow(clippy::cast_possible_truncation)]
            3 => code = value.varint()? as i32,
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(Status { message, code })
}

fn read_key_value(buf: &[u8], depth: u32) -> Result<KeyValue<'_>> {
    let (mut key, mut value_slot) = ("", None);
    fields(buf, |tag, value| {
        match tag {
            1 => key = value.string()?,
            2 => {
                let (bytes, depth) = value.message(depth)?;
                once(&mut value_slot, read_any_value(bytes, depth)?)?;
            }
            3 => {
                value.varint()?;
            }
            _ => return Err(Refused),
        }
        Ok(())
    })?;
    Ok(KeyValue {
        key,
        value: value_slot,
    })
}

fn read_any_value(buf: &[u8], depth: u32) -> Result<AnyValue<'_>> {
    let mut any = None;
    fields(buf, |tag, value| {
        #[allow(clippy::cast_possible_truncation, clippy::cast_possible_wrap)]
        let read = match tag {
            1 => Any::StringValue(value.string()?),
            2 => Any::BoolValue(value.varint()? != 0),
            3 => Any::IntValue(value.varint()? as i64),
            4 => Any::DoubleValue(f64::from_bits(value.fixed64()?)),
            5 => {
                let (bytes, depth) = value.message(depth)?;
                let mut items = Vec::new();
                fields(bytes, |tag, item| match tag {
                    1 => {
                        let (bytes, depth) = item.message(depth)?;
                        items.push(read_any_value(bytes, depth)?);
                        Ok(())
                    }
                    _ => Err(Refused),
                })?;
                Any::ArrayValue(ArrayValue { values: items })
            }
            6 => {
                let (bytes, depth) = value.message(depth)?;
                let mut entries = Vec::new();
                fields(bytes, |tag, entry| match tag {
                    1 => {
                        let (bytes, depth) = entry.message(depth)?;
                        entries.push(read_key_value(bytes, depth)?);
                        Ok(())
                    }
                    _ => Err(Refused),
                })?;
                Any::KvlistValue(KeyValueList { values: entries })
            }
            7 => Any::BytesValue(value.bytes()?),
            8 => {
                value.varint()?;
                Any::StringValueStrindex
            }
            _ => return Err(Refused),
        };
        // A second member of the oneof replaces or merges into the first: prost's call.
        once(&mut any, read)
    })?;
    Ok(AnyValue { value: any })
}

/// The same view of a request prost decoded.
pub fn from_prost(request: &ExportTraceServiceRequest) -> Request<'_> {
    Request {
        resource_spans: request
            .resource_spans
            .iter()
            .map(|rs| ResourceSpans {
                resource: rs.resource.as_ref().map(|r| Resource {
                    attributes: key_values(&r.attributes),
                }),
                scope_spans: rs
                    .scope_spans
                    .iter()
                    .map(|ss| ScopeSpans {
                        spans: ss.spans.iter().map(span_of).collect(),
                    })
                    .collect(),
                schema_url: &rs.schema_url,
            })
            .collect(),
    }
}

fn span_of(span: &pb_trace::Span) -> Span<'_> {
    Span {
        trace_id: &span.trace_id,
        span_id: &span.span_id,
        parent_span_id: &span.parent_span_id,
        name: &span.name,
        start_time_unix_nano: span.start_time_unix_nano,
        end_time_unix_nano: span.end_time_unix_nano,
        attributes: key_values(&span.attributes),
        events: span
            .events
            .iter()
            .map(|e| Event {
                time_unix_nano: e.time_unix_nano,
                name: &e.name,
                attributes: key_values(&e.attributes),
            })
            .collect(),
        links: span
            .links
            .iter()
            .map(|l| Link {
                trace_id: &l.trace_id,
                span_id: &l.span_id,
                attributes: key_values(&l.attributes),
            })
            .collect(),
        status: span.status.as_ref().map(|s| Status {
            message: &s.message,
            code: s.code,
        }),
    }
}

fn key_values(list: &[pb_common::KeyValue]) -> Vec<KeyValue<'_>> {
    list.iter()
        .map(|kv| KeyValue {
            key: &kv.key,
            value: kv.value.as_ref().map(any_value),
        })
        .collect()
}

fn any_value(value: &pb_common::AnyValue) -> AnyValue<'_> {
    use pb_common::any_value::Value as V;
    AnyValue {
        value: value.value.as_ref().map(|v| match v {
            V::StringValue(s) => Any::StringValue(s),
            V::BoolValue(b) => Any::BoolValue(*b),
            V::IntValue(i) => Any::IntValue(*i),
            V::DoubleValue(d) => Any::DoubleValue(*d),
            V::ArrayValue(a) => Any::ArrayValue(ArrayValue {
                values: a.values.iter().map(any_value).collect(),
            }),
            V::KvlistValue(l) => Any::KvlistValue(KeyValueList {
                values: key_values(&l.values),
            }),
            V::BytesValue(b) => Any::BytesValue(b),
            V::StringValueStrindex(_) => Any::StringValueStrindex,
        }),
    }
}
