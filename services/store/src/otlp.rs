//! OTLP/HTTP trace ingestion for `POST /v1/traces` (spec §4.11): content-type and
//! content-encoding checks, protobuf decoding of `ExportTraceServiceRequest` (into the
//! borrowed view of [`wire`], read straight from the body when it has the usual shape,
//! through prost otherwise), and the mapping of every protobuf span onto an Agent
//! Lightning `Span` JSON object (spec §2.9), written from that view.
//!
//! The mapping mirrors upstream's `spans_from_proto`, including its Python-isms
//! (`str()` of id attributes, `int(str(v))` for sequence ids, correctly rounded
//! `int / int` timestamps), so ids, sequence ids and times equal what upstream stores.
//! It deliberately departs where upstream fails a whole batch with a 500: attribute
//! values that `Span.attributes` cannot hold (kvlists, mixed or nested arrays, empty
//! values, non-finite floats) are reshaped into valid ones instead, because the Python
//! client re-validates queried spans and must never see an invalid shape.
//! Sequence-id issuing and storage stay with the caller.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::hash::Hash;
use std::io::{Read, Write as _};

use flate2::Compression;
use flate2::read::{DeflateDecoder, MultiGzDecoder, ZlibDecoder};
use flate2::write::GzEncoder;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message as _;
use serde::Serialize;
use serde::ser::{Error as _, SerializeMap as _, Serializer};

use crate::model::StoredSpan;
use crate::stored_span::{SpanDocError, SpanWriter};

pub mod wire;

use wire::{Any, AnyValue, Event, KeyValue, Link, Span as ProtoSpan, Status as ProtoStatus};

/// Largest request body accepted after decompression; bigger bodies are refused with
/// [`OtlpError::Decompress`] so a small gzip bomb cannot exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

const PROTOBUF_CT: &str = "application/x-protobuf";
const ROLLOUT_ID_KEY: &str = "agentlightning.rollout_id";
const ATTEMPT_ID_KEY: &str = "agentlightning.attempt_id";
const SEQUENCE_ID_KEY: &str = "agentlightning.span_sequence_id";

/// One span decoded from an OTLP request, not yet stored.
#[derive(Debug)]
pub struct DecodedSpan {
    /// Rollout the span belongs to: `str()` of the `agentlightning.rollout_id` span
    /// attribute, else of the resource attribute of the same name. The attempt, looked up
    /// the same way with `agentlightning.attempt_id`, is the document's `attempt_id`.
    pub rollout_id: String,
    /// explicit `agentlightning.span_sequence_id` (span attribute overrides resource
    /// attribute); None when absent, unparseable (`int(str(v))` semantics), negative or
    /// beyond `i64`, in which case the caller issues one.
    pub sequence_id: Option<i64>,
    /// The full Agent Lightning `Span` document (all fields of spec §2.9 in this key
    /// order: rollout_id, attempt_id, sequence_id, trace_id, span_id, parent_id, name,
    /// status, attributes, events, links, start_time, end_time, context, parent,
    /// resource), with sequence id 0 as a placeholder the caller overwrites.
    pub span: StoredSpan,
}

/// Result of decoding one OTLP export request.
#[derive(Debug, Default)]
pub struct DecodedTraces {
    /// Spans in request order (resource spans, then scope spans, then spans).
    pub spans: Vec<DecodedSpan>,
    /// spans dropped because they lack rollout or attempt id
    pub dropped: usize,
}

/// Why an OTLP request body was refused; every variant is a client error (HTTP 400) and
/// its `Display` text is meant for [`status_body`].
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// The request's media type (parameters stripped, `''` when missing) is not
    /// `application/x-protobuf`.
    #[error("Unsupported Content-Type '{0}', expected 'application/x-protobuf'")]
    UnsupportedContentType(String),
    /// The body could not be decompressed: unknown `Content-Encoding`, corrupt data, or
    /// more than [`MAX_DECOMPRESSED_BYTES`] once inflated.
    #[error("Unable to decompress OTLP traces payload: {0}")]
    Decompress(String),
    /// The (decompressed) body is not a valid `ExportTraceServiceRequest`.
    #[error("Unable to parse OTLP traces payload: {0}")]
    Parse(String),
}

/// `google.rpc.Status`, the body OTLP/HTTP prescribes for 4xx/5xx responses; defined
/// here because the generated OTLP crate does not ship it and `tonic` is not a dependency.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcStatus {
    /// `google.rpc.Code` value.
    #[prost(int32, tag = "1")]
    pub code: i32,
    /// Developer-facing error message.
    #[prost(string, tag = "2")]
    pub message: String,
    /// Error details; never filled by this server, declared so foreign statuses decode.
    #[prost(message, repeated, tag = "3")]
    pub details: Vec<RpcAny>,
}

/// `google.protobuf.Any`, the element type of [`RpcStatus::details`].
#[derive(Clone, PartialEq, prost::Message)]
pub struct RpcAny {
    /// Type URL of the packed message.
    #[prost(string, tag = "1")]
    pub type_url: String,
    /// Serialized packed message.
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// Checks the content type (only application/x-protobuf, parameters after ';' ignored,
/// case-insensitive; missing content type = unsupported with ''), un-gzips
/// (Content-Encoding gzip; also accept deflate; identity/absent = raw; unknown encoding
/// -> error), decodes ExportTraceServiceRequest (empty body = empty request) and maps
/// every span.
pub fn decode_traces(
    content_type: Option<&str>,
    content_encoding: Option<&str>,
    body: &[u8],
) -> Result<DecodedTraces, OtlpError> {
    check_content_type(content_type)?;
    let body = decompress(content_encoding, body, MAX_DECOMPRESSED_BYTES)?;
    // The borrowing reader takes what exporters send; prost judges everything else.
    if let Ok(request) = wire::decode(&body) {
        return Ok(map_request(&request));
    }
    let request = ExportTraceServiceRequest::decode(body.as_ref())
        .map_err(|err| OtlpError::Parse(err.to_string()))?;
    Ok(map_request(&wire::from_prost(&request)))
}

/// google.rpc.Status protobuf bytes carrying `message`. The code stays 0 (unset) like
/// upstream's `Status(message=...)`, so error bodies are byte-identical to the reference
/// server's; the HTTP status carries the error class.
pub fn status_body(message: &str) -> Vec<u8> {
    RpcStatus {
        code: 0,
        message: message.to_owned(),
        details: Vec::new(),
    }
    .encode_to_vec()
}

/// Success body: serialized empty ExportTraceServiceResponse (0 bytes), gzip-compressed
/// when `accept_encoding` lists gzip (token match, case-insensitive, `q=0` refuses).
/// Returns (bytes, Some("gzip") or None for Content-Encoding).
pub fn success_body(accept_encoding: Option<&str>) -> (Vec<u8>, Option<&'static str>) {
    let body = ExportTraceServiceResponse::default().encode_to_vec();
    if accepts_gzip(accept_encoding.unwrap_or(""))
        && let Some(compressed) = gzip(&body)
    {
        return (compressed, Some("gzip"));
    }
    (body, None)
}

fn check_content_type(content_type: Option<&str>) -> Result<(), OtlpError> {
    let media = content_type
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim();
    if media.eq_ignore_ascii_case(PROTOBUF_CT) {
        Ok(())
    } else {
        Err(OtlpError::UnsupportedContentType(media.to_owned()))
    }
}

/// Undoes `Content-Encoding` (a comma list, applied in order by the sender, so undone in
/// reverse), never producing more than `limit` bytes per stage.
fn decompress<'a>(
    content_encoding: Option<&str>,
    body: &'a [u8],
    limit: usize,
) -> Result<Cow<'a, [u8]>, OtlpError> {
    let codings: Vec<String> = content_encoding
        .unwrap_or("")
        .split(',')
        .map(|coding| coding.trim().to_ascii_lowercase())
        .filter(|coding| !coding.is_empty() && coding != "identity")
        .collect();
    // Refuse unknown codings before touching the body so the error does not depend on it.
    if let Some(unknown) = codings
        .iter()
        .find(|coding| !matches!(coding.as_str(), "gzip" | "x-gzip" | "deflate"))
    {
        return Err(OtlpError::Decompress(format!(
            "unsupported Content-Encoding '{unknown}'"
        )));
    }
    let mut data = Cow::Borrowed(body);
    for coding in codings.iter().rev() {
        // Python's gzip.decompress(b"") is b"": an empty compressed body is an empty request.
        if data.is_empty() {
            break;
        }
        let inflated = if coding == "deflate" {
            // HTTP "deflate" means zlib-wrapped, but enough clients send raw deflate that
            // sniffing the zlib header is friendlier than refusing them.
            if looks_like_zlib(&data) {
                read_limited(ZlibDecoder::new(data.as_ref()), coding, limit)?
            } else {
                read_limited(DeflateDecoder::new(data.as_ref()), coding, limit)?
            }
        } else {
            // Multi-member streams are valid gzip and Python's gzip.decompress accepts them.
            read_limited(MultiGzDecoder::new(data.as_ref()), coding, limit)?
        };
        data = Cow::Owned(inflated);
    }
    Ok(data)
}

fn looks_like_zlib(data: &[u8]) -> bool {
    match data {
        [cmf, flg, ..] => cmf & 0x0f == 8 && (u16::from(*cmf) << 8 | u16::from(*flg)) % 31 == 0,
        _ => false,
    }
}

fn read_limited(reader: impl Read, coding: &str, limit: usize) -> Result<Vec<u8>, OtlpError> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader
        .take(cap)
        .read_to_end(&mut out)
        .map_err(|err| OtlpError::Decompress(format!("invalid {coding} data: {err}")))?;
    if out.len() > limit {
        return Err(OtlpError::Decompress(format!(
            "decompressed body exceeds {limit} bytes"
        )));
    }
    Ok(out)
}

fn accepts_gzip(accept_encoding: &str) -> bool {
    accept_encoding.split(',').any(|item| {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        (coding.eq_ignore_ascii_case("gzip") || coding.eq_ignore_ascii_case("x-gzip"))
            && parts.all(|param| !is_zero_q(param))
    })
}

/// `q=0` means "not acceptable" (RFC 9110 §12.5.3); an unparseable q is read leniently
/// as acceptable, as upstream ignores q-values altogether.
fn is_zero_q(param: &str) -> bool {
    let Some((name, value)) = param.split_once('=') else {
        return false;
    };
    name.trim().eq_ignore_ascii_case("q") && value.trim().parse::<f64>().is_ok_and(|q| q <= 0.0)
}

fn gzip(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).ok()?;
    encoder.finish().ok()
}

fn map_request(request: &wire::Request<'_>) -> DecodedTraces {
    let mut decoded = DecodedTraces::default();
    for resource_spans in &request.resource_spans {
        let resource_attributes: &[KeyValue<'_>] = resource_spans
            .resource
            .as_ref()
            .map(|resource| resource.attributes.as_slice())
            .unwrap_or(&[]);
        // Every span of the resource carries the same copy: written once, copied as text.
        let resource = serde_json::to_string(&ResourceDoc {
            attributes: Attributes::new(resource_attributes),
            schema_url: resource_spans.schema_url,
        })
        .expect("OTLP values always serialize");
        for scope_spans in &resource_spans.scope_spans {
            for span in &scope_spans.spans {
                let lookup = |key: &str| {
                    find_attribute(&span.attributes, key)
                        .or_else(|| find_attribute(resource_attributes, key))
                };
                let (Some(rollout_id), Some(attempt_id)) = (
                    lookup(ROLLOUT_ID_KEY).map(python_str),
                    lookup(ATTEMPT_ID_KEY).map(python_str),
                ) else {
                    decoded.dropped += 1;
                    continue;
                };
                let sequence_id = lookup(SEQUENCE_ID_KEY)
                    .and_then(|value| parse_python_int(&python_str(value)))
                    .and_then(|id| i64::try_from(id).ok())
                    .filter(|id| *id >= 0);
                // Only a span beyond 4 GiB fails, which no body limit lets through.
                let Ok(doc) = span_doc(span, &rollout_id, &attempt_id, &resource) else {
                    decoded.dropped += 1;
                    continue;
                };
                decoded.spans.push(DecodedSpan {
                    rollout_id: rollout_id.into_owned(),
                    sequence_id,
                    span: doc,
                });
            }
        }
    }
    decoded
}

/// Upstream reads ids from `{kv.key: value}` dicts, so the last duplicate wins and an
/// empty value counts as absent (it becomes `None`, which falls back to the resource).
fn find_attribute<'a>(attributes: &'a [KeyValue<'a>], key: &str) -> Option<&'a Any<'a>> {
    attributes
        .iter()
        .rev()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|value| value.value.as_ref())
        .filter(|value| !matches!(value, Any::StringValueStrindex))
}

/// Writes the span's document straight from the protobuf message: the values serialize
/// from borrowed views of it, so no JSON tree is built on the way.
fn span_doc(
    span: &ProtoSpan<'_>,
    rollout_id: &str,
    attempt_id: &str,
    resource: &str,
) -> Result<StoredSpan, SpanDocError> {
    let trace_id = Hex::padded(span.trace_id, 32);
    let span_id = Hex::padded(span.span_id, 16);
    let parent_id = (!span.parent_span_id.is_empty()).then(|| Hex::padded(span.parent_span_id, 16));
    let start_time = timestamp(span.start_time_unix_nano);
    let end_time = timestamp(span.end_time_unix_nano);
    let estimate = 400
        + resource.len()
        + span.name.len()
        + attributes_size(&span.attributes)
        + span
            .events
            .iter()
            .map(|e| 80 + e.name.len() + attributes_size(&e.attributes))
            .sum::<usize>()
        + span
            .links
            .iter()
            .map(|l| 160 + attributes_size(&l.attributes))
            .sum::<usize>();
    let mut doc = SpanWriter::with_capacity(estimate);
    doc.field("rollout_id", rollout_id);
    doc.field("attempt_id", attempt_id);
    doc.sequence_id();
    doc.field("trace_id", &trace_id);
    doc.field("span_id", &span_id);
    doc.field("parent_id", &parent_id);
    doc.field("name", &span.name);
    doc.field("status", &status_doc(span.status.as_ref()));
    doc.field("attributes", &Attributes::new(&span.attributes));
    doc.field("events", &Events(&span.events));
    doc.field("links", &Links(&span.links));
    doc.field("start_time", &start_time);
    doc.field("end_time", &end_time);
    doc.field("context", &Context::new(trace_id, span_id));
    // OTLP only carries the parent's span id, not a full SpanContext.
    doc.field("parent", &());
    doc.raw_field("resource", resource);
    doc.finish(0, start_time, end_time)
}

/// A rough size of attributes as JSON, so a document is written without regrowing.
fn attributes_size(attributes: &[KeyValue<'_>]) -> usize {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Any::StringValue(s)) => s.len(),
                Some(Any::BytesValue(b)) => 2 * b.len(),
                _ => 24,
            };
            kv.key.len() + value + 6
        })
        .sum()
}

/// Bytes as lowercase hex, left-padded with zeros to `width` digits; longer ids are kept
/// whole, not truncated, as Python's `hex().rjust()` does.
#[derive(Clone, Copy)]
struct Hex<'a> {
    bytes: &'a [u8],
    width: usize,
}

impl<'a> Hex<'a> {
    fn padded(bytes: &'a [u8], width: usize) -> Self {
        Self { bytes, width }
    }

    fn plain(bytes: &'a [u8]) -> Self {
        Self { bytes, width: 0 }
    }
}

impl Hex<'_> {
    /// Writes the zero padding and the digits into `out`, which holds exactly that many.
    fn write_into(&self, out: &mut [u8]) {
        let pad = out.len() - 2 * self.bytes.len();
        out[..pad].fill(b'0');
        hex::encode_to_slice(self.bytes, &mut out[pad..]).expect("two digits per byte");
    }

    fn len(&self) -> usize {
        self.width.max(2 * self.bytes.len())
    }
}

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = vec![0; self.len()];
        self.write_into(&mut text);
        f.write_str(std::str::from_utf8(&text).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Hex<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Trace and span ids (16 and 8 bytes) are written from the stack: going through
        // `Display` and a heap buffer costs more than the digits themselves.
        let mut stack = [0_u8; 64];
        let len = self.len();
        if len > stack.len() {
            return serializer.collect_str(self);
        }
        self.write_into(&mut stack[..len]);
        let text = std::str::from_utf8(&stack[..len]).map_err(S::Error::custom)?;
        serializer.serialize_str(text)
    }
}

/// `{}`.
struct EmptyObject;

impl Serialize for EmptyObject {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_map(Some(0))?.end()
    }
}

#[derive(Serialize)]
struct Context<'a> {
    trace_id: Hex<'a>,
    span_id: Hex<'a>,
    is_remote: bool,
    trace_state: EmptyObject,
}

impl<'a> Context<'a> {
    fn new(trace_id: Hex<'a>, span_id: Hex<'a>) -> Self {
        Self {
            trace_id,
            span_id,
            is_remote: false,
            trace_state: EmptyObject,
        }
    }
}

#[derive(Serialize)]
struct StatusDoc<'a> {
    status_code: &'static str,
    description: Option<&'a str>,
}

fn status_doc<'a>(status: Option<&ProtoStatus<'a>>) -> StatusDoc<'a> {
    let (code, message) = status.map_or((0, ""), |s| (s.code, s.message));
    // Unknown codes read as UNSET, like upstream's `_STATUS_CODE_MAP.get(code, "UNSET")`.
    let status_code = match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "OK",
        Ok(StatusCode::Error) => "ERROR",
        _ => "UNSET",
    };
    StatusDoc {
        status_code,
        description: (!message.is_empty()).then_some(message),
    }
}

#[derive(Serialize)]
struct ResourceDoc<'a> {
    attributes: Attributes<'a>,
    schema_url: &'a str,
}

#[derive(Serialize)]
struct EventDoc<'a> {
    name: &'a str,
    attributes: Attributes<'a>,
    timestamp: Option<f64>,
}

struct Events<'a>(&'a [Event<'a>]);

impl Serialize for Events<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|event| EventDoc {
            name: event.name,
            attributes: Attributes::new(&event.attributes),
            timestamp: timestamp(event.time_unix_nano),
        }))
    }
}

#[derive(Serialize)]
struct LinkDoc<'a> {
    context: Context<'a>,
    attributes: Option<Attributes<'a>>,
}

struct Links<'a>(&'a [Link<'a>]);

impl Serialize for Links<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|link| {
            let attributes = Attributes::new(&link.attributes);
            LinkDoc {
                context: Context::new(
                    Hex::padded(link.trace_id, 32),
                    Hex::padded(link.span_id, 16),
                ),
                // Upstream writes `attributes or None`.
                attributes: (!attributes.0.is_empty()).then_some(attributes),
            }
        }))
    }
}

/// Upstream's `convert_timestamp`: 0 is null, values above 1e12 are nanoseconds turned
/// into seconds, smaller ones are taken as seconds already.
fn timestamp(nanos: u64) -> Option<f64> {
    match nanos {
        0 => None,
        n if n > 1_000_000_000_000 => Some(nanos_to_seconds(n)),
        // Below 2^53, so the conversion is exact.
        n => Some(n as f64),
    }
}

/// `nanos / 10**9` rounded once, to nearest-even, as Python's `int / int` does; the naive
/// `nanos as f64 / 1e9` rounds twice and is off by one ulp for about a quarter of current
/// timestamps, which would make stored times differ from upstream's.
fn nanos_to_seconds(nanos: u64) -> f64 {
    const DIVISOR: u128 = 1_000_000_000;
    const LOW: u128 = 1 << 53;
    const HIGH: u128 = 1 << 54;
    if nanos == 0 {
        return 0.0;
    }
    let n = u128::from(nanos);
    // Scale so the integer quotient has 54 significant bits: 53 for the mantissa plus
    // one rounding bit; the remainder is the sticky bit. n < 2^64 keeps n << shift < 2^86.
    let mut shift = 84 - (128 - n.leading_zeros());
    loop {
        let q = (n << shift) / DIVISOR;
        if q >= HIGH {
            shift -= 1;
        } else if q < LOW {
            shift += 1;
        } else {
            break;
        }
    }
    let scaled = n << shift;
    let quotient = scaled / DIVISOR;
    let sticky = scaled % DIVISOR != 0;
    let mut mantissa = quotient >> 1;
    if quotient & 1 == 1 && (sticky || mantissa & 1 == 1) {
        mantissa += 1;
    }
    // mantissa <= 2^53 is exact in f64, and multiplying by a power of two is exact too.
    let exponent = 1 - i64::from(shift);
    let power = f64::from_bits(((1023 + exponent) as u64) << 52);
    mantissa as f64 * power
}

/// Keeps each repeated key at its first position with its last value: what inserting
/// into an ordered map does, and what Python's dict comprehension does.
fn last_wins<K: AsRef<str> + Eq + Hash, V>(entries: &mut Vec<(K, V)>) {
    // Attribute lists are short: comparing beats building an index below this size.
    const LINEAR: usize = 16;
    if entries.len() <= LINEAR {
        let mut i = 1;
        while i < entries.len() {
            let key = entries[i].0.as_ref();
            match entries[..i].iter().position(|(k, _)| k.as_ref() == key) {
                Some(first) => {
                    let (_, value) = entries.remove(i);
                    entries[first].1 = value;
                }
                None => i += 1,
            }
        }
        return;
    }
    let mut merged: indexmap::IndexMap<K, V, foldhash::fast::RandomState> =
        indexmap::IndexMap::with_capacity_and_hasher(entries.len(), Default::default());
    for (key, value) in entries.drain(..) {
        merged.insert(key, value);
    }
    entries.extend(merged);
}

/// OTLP attributes as a valid Agent Lightning `Attributes` object: kvlists are flattened
/// into dotted keys, arrays are made homogeneous (see [`ArrayAttribute`]), and empty
/// values are skipped, because upstream's `None`/dict/mixed values fail validation.
struct Attributes<'a>(Vec<(Cow<'a, str>, &'a Any<'a>)>);

impl<'a> Attributes<'a> {
    fn new(attributes: &'a [KeyValue<'a>]) -> Self {
        let mut entries = Vec::with_capacity(attributes.len());
        for kv in attributes {
            if let Some(value) = &kv.value {
                flatten(&mut entries, Cow::Borrowed(kv.key), value);
            }
        }
        last_wins(&mut entries);
        Self(entries)
    }
}

/// Recursion is bounded by prost's decode depth.
fn flatten<'a>(
    out: &mut Vec<(Cow<'a, str>, &'a Any<'a>)>,
    key: Cow<'a, str>,
    value: &'a AnyValue<'a>,
) {
    match &value.value {
        None | Some(Any::StringValueStrindex) => {}
        Some(Any::KvlistValue(list)) => {
            for kv in &list.values {
                if let Some(inner) = &kv.value {
                    flatten(out, Cow::Owned(format!("{key}.{}", kv.key)), inner);
                }
            }
        }
        Some(value) => out.push((key, value)),
    }
}

impl Serialize for Attributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(key, value)| {
            let value = match value {
                Any::ArrayValue(array) => Attribute::Array(ArrayAttribute(&array.values)),
                scalar => Attribute::Scalar(Plain(Some(scalar))),
            };
            (key.as_ref(), value)
        }))
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Attribute<'a> {
    Scalar(Plain<'a>),
    Array(ArrayAttribute<'a>),
}

/// An array attribute: homogeneous scalar arrays pass through; an int/float mix becomes
/// all floats, as pydantic coerces it; anything else (mixed types, nested arrays or
/// kvlists, empty elements, non-finite floats) is kept as the JSON text of the array.
struct ArrayAttribute<'a>(&'a [AnyValue<'a>]);

impl Serialize for ArrayAttribute<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Clone, Copy, PartialEq)]
        enum Kind {
            Str,
            Bool,
            Int,
            Float,
        }
        // The kind of each element's plain JSON: bytes and non-finite floats are strings.
        let kind = |value: Option<&Any<'_>>| match value {
            Some(Any::StringValue(_) | Any::BytesValue(_)) => Some(Kind::Str),
            Some(Any::BoolValue(_)) => Some(Kind::Bool),
            Some(Any::IntValue(_)) => Some(Kind::Int),
            Some(Any::DoubleValue(d)) if d.is_finite() => Some(Kind::Float),
            Some(Any::DoubleValue(_)) => Some(Kind::Str),
            _ => None,
        };
        let mut first = None;
        let mut homogeneous = true;
        let mut numeric = true;
        for value in self.0 {
            let Some(kind) = kind(value.value.as_ref()) else {
                homogeneous = false;
                numeric = false;
                break;
            };
            numeric &= matches!(kind, Kind::Int | Kind::Float);
            match first {
                None => first = Some(kind),
                Some(prev) => homogeneous &= prev == kind,
            }
        }
        if homogeneous {
            PlainArray(self.0).serialize(serializer)
        } else if numeric {
            serializer.collect_seq(self.0.iter().filter_map(|value| match value.value {
                Some(Any::IntValue(i)) => Some(i as f64),
                Some(Any::DoubleValue(d)) => Some(d),
                _ => None,
            }))
        } else {
            let text = serde_json::to_string(&PlainArray(self.0)).map_err(S::Error::custom)?;
            serializer.serialize_str(&text)
        }
    }
}

/// Structural JSON of a value, used for scalars and for array elements: bytes become
/// lowercase hex, non-finite floats become Python's JSON tokens as strings, and an empty
/// value becomes null.
#[derive(Clone, Copy)]
struct Plain<'a>(Option<&'a Any<'a>>);

struct PlainArray<'a>(&'a [AnyValue<'a>]);

impl Serialize for PlainArray<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.0.iter().map(|value| Plain(value.value.as_ref())))
    }
}

impl Serialize for Plain<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            None | Some(Any::StringValueStrindex) => serializer.serialize_unit(),
            Some(Any::StringValue(s)) => serializer.serialize_str(s),
            Some(Any::BoolValue(b)) => serializer.serialize_bool(*b),
            Some(Any::IntValue(i)) => serializer.serialize_i64(*i),
            Some(Any::DoubleValue(d)) if d.is_nan() => serializer.serialize_str("NaN"),
            Some(Any::DoubleValue(d)) if d.is_infinite() => {
                serializer.serialize_str(if *d > 0.0 { "Infinity" } else { "-Infinity" })
            }
            Some(Any::DoubleValue(d)) => serializer.serialize_f64(*d),
            Some(Any::BytesValue(bytes)) => Hex::plain(bytes).serialize(serializer),
            Some(Any::ArrayValue(array)) => PlainArray(&array.values).serialize(serializer),
            Some(Any::KvlistValue(list)) => {
                let mut entries: Vec<(&str, Plain<'_>)> = list
                    .values
                    .iter()
                    .map(|kv| {
                        let inner = kv.value.as_ref().and_then(|v| v.value.as_ref());
                        (kv.key, Plain(inner))
                    })
                    .collect();
                last_wins(&mut entries);
                serializer.collect_map(entries)
            }
        }
    }
}

/// Python's `str()` of the value upstream derives from an attribute (bytes are already
/// hex strings there), so ids match what the reference server stores.
fn python_str<'a>(value: &Any<'a>) -> Cow<'a, str> {
    match value {
        Any::StringValue(s) => Cow::Borrowed(s),
        Any::BytesValue(bytes) => Cow::Owned(hex::encode(bytes)),
        other => Cow::Owned(python_repr(Some(other))),
    }
}

fn python_repr(value: Option<&Any<'_>>) -> String {
    match value {
        None | Some(Any::StringValueStrindex) => "None".to_owned(),
        Some(Any::StringValue(s)) => python_str_repr(s),
        Some(Any::BoolValue(true)) => "True".to_owned(),
        Some(Any::BoolValue(false)) => "False".to_owned(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::DoubleValue(d)) => python_float_repr(*d),
        Some(Any::BytesValue(bytes)) => python_str_repr(&hex::encode(bytes)),
        Some(Any::ArrayValue(array)) => {
            let items: Vec<String> = array
                .values
                .iter()
                .map(|v| python_repr(v.value.as_ref()))
                .collect();
            format!("[{}]", items.join(", "))
        }
        Some(Any::KvlistValue(list)) => {
            // A dict keeps the first position and the last value of a duplicated key.
            let mut entries: Vec<(&str, Option<&Any<'_>>)> = Vec::new();
            for kv in &list.values {
                let inner = kv.value.as_ref().and_then(|v| v.value.as_ref());
                match entries.iter_mut().find(|(key, _)| *key == kv.key) {
                    Some(entry) => entry.1 = inner,
                    None => entries.push((kv.key, inner)),
                }
            }
            let items: Vec<String> = entries
                .iter()
                .map(|(key, inner)| format!("{}: {}", python_str_repr(key), python_repr(*inner)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// Python's `repr(str)`. Printability is approximated (controls, non-space whitespace and
/// common format characters are escaped); it only matters for list- or dict-valued ids.
fn python_str_repr(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !python_printable(c) => {
                let code = u32::from(c);
                // Writing to a String cannot fail.
                let _ = if code < 0x100 {
                    write!(out, "\\x{code:02x}")
                } else if code < 0x10000 {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

fn python_printable(c: char) -> bool {
    c == ' '
        || !(c.is_control()
            || c.is_whitespace()
            || matches!(c,
                '\u{ad}'
                | '\u{200b}'..='\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{feff}'
                | '\u{e000}'..='\u{f8ff}'))
}

/// Python's `repr(float)`: shortest round-trip digits, scientific notation when the
/// decimal exponent is below -4 or at least 16, and always a `.0` on integral values.
fn python_float_repr(value: f64) -> String {
    if value.is_nan() {
        return "nan".to_owned();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    let sign = if value.is_sign_negative() { "-" } else { "" };
    // Rust's `{:e}` also yields the shortest round-trip digits, e.g. "1.2345e-5".
    let scientific = format!("{:e}", value.abs());
    let Some((mantissa, exponent)) = scientific.split_once('e') else {
        return scientific;
    };
    let Ok(exponent) = exponent.parse::<i32>() else {
        return scientific;
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let body = if !(-4..16).contains(&exponent) {
        let (lead, rest) = digits.split_at(1);
        let fraction = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exponent < 0 { '-' } else { '+' };
        format!("{lead}{fraction}e{exp_sign}{:02}", exponent.unsigned_abs())
    } else if exponent >= 0 {
        let int_len = exponent.unsigned_abs() as usize + 1;
        if digits.len() <= int_len {
            format!("{digits}{}.0", "0".repeat(int_len - digits.len()))
        } else {
            let (int_part, fraction) = digits.split_at(int_len);
            format!("{int_part}.{fraction}")
        }
    } else {
        let zeros = "0".repeat(exponent.unsigned_abs() as usize - 1);
        format!("0.{zeros}{digits}")
    };
    format!("{sign}{body}")
}

/// Python's `int(s)` for base 10: surrounding whitespace, an optional sign, and single
/// underscores between digits are allowed. Only ASCII digits are recognised (Python also
/// takes other Unicode decimal digits); values beyond `i128` are treated as unparseable.
fn parse_python_int(s: &str) -> Option<i128> {
    let trimmed = s.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c));
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
    {
        return None;
    }
    let mut magnitude: i128 = 0;
    for c in digits.chars().filter(|c| *c != '_') {
        let digit = i128::from(c.to_digit(10)?);
        magnitude = magnitude.checked_mul(10)?.checked_add(digit)?;
    }
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;
    // The tests build prost messages; the writer reads the borrowed view of them.
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
    use opentelemetry_proto::tonic::trace::v1::Status as ProtoStatus;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
    use serde_json::{Map, Value, json};

    const CT: Option<&str> = Some("application/x-protobuf");

    /// The conversion through `serde_json` maps that `span_doc` replaced, kept as the
    /// oracle the new writer is checked against byte for byte.
    mod reference {
        use super::super::*;
        use serde_json::{Map, Value};

        /// One span as the old conversion produced it.
        pub(super) struct Old {
            pub(super) rollout_id: String,
            pub(super) attempt_id: String,
            pub(super) sequence_id: Option<i64>,
            pub(super) span: Map<String, Value>,
        }

        pub(super) fn map_request(request: &wire::Request<'_>) -> Vec<Old> {
            let mut decoded = Vec::new();
            for resource_spans in &request.resource_spans {
                let resource_attributes: &[KeyValue<'_>] = resource_spans
                    .resource
                    .as_ref()
                    .map(|resource| resource.attributes.as_slice())
                    .unwrap_or(&[]);
                let mut resource = Map::new();
                resource.insert(
                    "attributes".to_owned(),
                    Value::Object(convert_attributes(resource_attributes)),
                );
                resource.insert(
                    "schema_url".to_owned(),
                    Value::String(resource_spans.schema_url.to_owned()),
                );
                for scope_spans in &resource_spans.scope_spans {
                    for span in &scope_spans.spans {
                        let lookup = |key: &str| {
                            find_attribute(&span.attributes, key)
                                .or_else(|| find_attribute(resource_attributes, key))
                        };
                        let (Some(rollout_id), Some(attempt_id)) = (
                            lookup(ROLLOUT_ID_KEY).map(python_str),
                            lookup(ATTEMPT_ID_KEY).map(python_str),
                        ) else {
                            continue;
                        };
                        let sequence_id = lookup(SEQUENCE_ID_KEY)
                            .and_then(|value| parse_python_int(&python_str(value)))
                            .and_then(|id| i64::try_from(id).ok())
                            .filter(|id| *id >= 0);
                        let span = span_json(span, &rollout_id, &attempt_id, &resource);
                        decoded.push(Old {
                            rollout_id: rollout_id.into_owned(),
                            attempt_id: attempt_id.into_owned(),
                            sequence_id,
                            span,
                        });
                    }
                }
            }
            decoded
        }

        fn span_json(
            span: &ProtoSpan<'_>,
            rollout_id: &str,
            attempt_id: &str,
            resource: &Map<String, Value>,
        ) -> Map<String, Value> {
            let trace_id = id_hex(span.trace_id, 32);
            let span_id = id_hex(span.span_id, 16);
            let parent_id = if span.parent_span_id.is_empty() {
                Value::Null
            } else {
                Value::String(id_hex(span.parent_span_id, 16))
            };
            let events = span
                .events
                .iter()
                .map(|event| {
                    let mut out = Map::new();
                    out.insert("name".to_owned(), Value::String(event.name.to_owned()));
                    out.insert(
                        "attributes".to_owned(),
                        Value::Object(convert_attributes(&event.attributes)),
                    );
                    out.insert("timestamp".to_owned(), timestamp(event.time_unix_nano));
                    Value::Object(out)
                })
                .collect();
            let links = span
                .links
                .iter()
                .map(|link| {
                    let attributes = convert_attributes(&link.attributes);
                    let mut out = Map::new();
                    out.insert(
                        "context".to_owned(),
                        context_json(id_hex(link.trace_id, 32), id_hex(link.span_id, 16)),
                    );
                    // Upstream writes `attributes or None`.
                    out.insert(
                        "attributes".to_owned(),
                        if attributes.is_empty() {
                            Value::Null
                        } else {
                            Value::Object(attributes)
                        },
                    );
                    Value::Object(out)
                })
                .collect();

            let mut out = Map::new();
            out.insert(
                "rollout_id".to_owned(),
                Value::String(rollout_id.to_owned()),
            );
            out.insert(
                "attempt_id".to_owned(),
                Value::String(attempt_id.to_owned()),
            );
            out.insert("sequence_id".to_owned(), Value::from(0));
            out.insert("trace_id".to_owned(), Value::String(trace_id.clone()));
            out.insert("span_id".to_owned(), Value::String(span_id.clone()));
            out.insert("parent_id".to_owned(), parent_id);
            out.insert("name".to_owned(), Value::String(span.name.to_owned()));
            out.insert("status".to_owned(), status_json(span.status.as_ref()));
            out.insert(
                "attributes".to_owned(),
                Value::Object(convert_attributes(&span.attributes)),
            );
            out.insert("events".to_owned(), Value::Array(events));
            out.insert("links".to_owned(), Value::Array(links));
            out.insert(
                "start_time".to_owned(),
                timestamp(span.start_time_unix_nano),
            );
            out.insert("end_time".to_owned(), timestamp(span.end_time_unix_nano));
            out.insert("context".to_owned(), context_json(trace_id, span_id));
            // OTLP only carries the parent's span id, not a full SpanContext.
            out.insert("parent".to_owned(), Value::Null);
            out.insert("resource".to_owned(), Value::Object(resource.clone()));
            out
        }

        /// Lowercase hex left-padded to `width`; longer ids are kept whole, not truncated, as
        /// Python's `hex().rjust()` does.
        fn id_hex(bytes: &[u8], width: usize) -> String {
            format!("{:0>width$}", hex::encode(bytes))
        }

        fn context_json(trace_id: String, span_id: String) -> Value {
            let mut out = Map::new();
            out.insert("trace_id".to_owned(), Value::String(trace_id));
            out.insert("span_id".to_owned(), Value::String(span_id));
            out.insert("is_remote".to_owned(), Value::Bool(false));
            out.insert("trace_state".to_owned(), Value::Object(Map::new()));
            Value::Object(out)
        }

        fn status_json(status: Option<&ProtoStatus<'_>>) -> Value {
            let (code, message) = status.map_or((0, ""), |s| (s.code, s.message));
            // Unknown codes read as UNSET, like upstream's `_STATUS_CODE_MAP.get(code, "UNSET")`.
            let code = match StatusCode::try_from(code) {
                Ok(StatusCode::Ok) => "OK",
                Ok(StatusCode::Error) => "ERROR",
                _ => "UNSET",
            };
            let mut out = Map::new();
            out.insert("status_code".to_owned(), Value::String(code.to_owned()));
            out.insert(
                "description".to_owned(),
                if message.is_empty() {
                    Value::Null
                } else {
                    Value::String(message.to_owned())
                },
            );
            Value::Object(out)
        }

        /// Upstream's `convert_timestamp`: 0 is null, values above 1e12 are nanoseconds turned
        /// into seconds, smaller ones are taken as seconds already.
        fn timestamp(nanos: u64) -> Value {
            match nanos {
                0 => Value::Null,
                n if n > 1_000_000_000_000 => Value::from(nanos_to_seconds(n)),
                // Below 2^53, so the conversion is exact.
                n => Value::from(n as f64),
            }
        }

        /// Converts OTLP attributes into a valid Agent Lightning `Attributes` object: kvlists are
        /// flattened into dotted keys, arrays are made homogeneous (see [`convert_array`]), and
        /// empty values are skipped, because upstream's `None`/dict/mixed values fail validation.
        fn convert_attributes(attributes: &[KeyValue<'_>]) -> Map<String, Value> {
            let mut out = Map::new();
            for kv in attributes {
                if let Some(value) = &kv.value {
                    insert_flattened(&mut out, kv.key, value);
                }
            }
            out
        }

        /// Later duplicates overwrite earlier ones in place (the map preserves order), which is
        /// what Python's dict comprehension does. Recursion is bounded by prost's decode depth.
        fn insert_flattened(out: &mut Map<String, Value>, key: &str, value: &AnyValue<'_>) {
            match &value.value {
                None | Some(Any::StringValueStrindex) => {}
                Some(Any::KvlistValue(list)) => {
                    for kv in &list.values {
                        if let Some(inner) = &kv.value {
                            insert_flattened(out, &format!("{key}.{}", kv.key), inner);
                        }
                    }
                }
                Some(Any::ArrayValue(array)) => {
                    out.insert(key.to_owned(), convert_array(&array.values));
                }
                Some(scalar) => {
                    out.insert(key.to_owned(), plain_json(Some(scalar)));
                }
            }
        }

        /// Homogeneous scalar arrays pass through; an int/float mix becomes all floats, as
        /// pydantic coerces it; anything else (mixed types, nested arrays or kvlists, empty
        /// elements, non-finite floats) is kept as the JSON text of the array.
        fn convert_array(values: &[AnyValue<'_>]) -> Value {
            #[derive(Clone, Copy, PartialEq)]
            enum Kind {
                Str,
                Bool,
                Int,
                Float,
            }
            let items: Vec<Value> = values
                .iter()
                .map(|v| plain_json(v.value.as_ref()))
                .collect();
            let mut first = None;
            let mut homogeneous = true;
            let mut numeric = true;
            for item in &items {
                let kind = match item {
                    Value::String(_) => Kind::Str,
                    Value::Bool(_) => Kind::Bool,
                    Value::Number(n) if n.is_f64() => Kind::Float,
                    Value::Number(_) => Kind::Int,
                    _ => {
                        homogeneous = false;
                        numeric = false;
                        break;
                    }
                };
                numeric &= matches!(kind, Kind::Int | Kind::Float);
                match first {
                    None => first = Some(kind),
                    Some(prev) => homogeneous &= prev == kind,
                }
            }
            if homogeneous {
                Value::Array(items)
            } else if numeric {
                Value::Array(
                    items
                        .iter()
                        .filter_map(Value::as_f64)
                        .map(Value::from)
                        .collect(),
                )
            } else {
                Value::String(Value::Array(items).to_string())
            }
        }

        /// Structural JSON of a value, used for scalars and for array elements: bytes become
        /// lowercase hex, non-finite floats become Python's JSON tokens as strings, and an empty
        /// value becomes null.
        fn plain_json(value: Option<&Any<'_>>) -> Value {
            match value {
                None | Some(Any::StringValueStrindex) => Value::Null,
                Some(Any::StringValue(s)) => Value::String((*s).to_owned()),
                Some(Any::BoolValue(b)) => Value::Bool(*b),
                Some(Any::IntValue(i)) => Value::from(*i),
                Some(Any::DoubleValue(d)) => float_json(*d),
                Some(Any::BytesValue(bytes)) => Value::String(hex::encode(bytes)),
                Some(Any::ArrayValue(array)) => Value::Array(
                    array
                        .values
                        .iter()
                        .map(|v| plain_json(v.value.as_ref()))
                        .collect(),
                ),
                Some(Any::KvlistValue(list)) => Value::Object(
                    list.values
                        .iter()
                        .map(|kv| {
                            let inner = kv.value.as_ref().and_then(|v| v.value.as_ref());
                            (kv.key.to_owned(), plain_json(inner))
                        })
                        .collect(),
                ),
            }
        }

        fn float_json(value: f64) -> Value {
            if value.is_nan() {
                Value::String("NaN".to_owned())
            } else if value.is_infinite() {
                let token = if value > 0.0 { "Infinity" } else { "-Infinity" };
                Value::String(token.to_owned())
            } else {
                Value::from(value)
            }
        }
    }

    fn any(value: Any) -> AnyValue {
        AnyValue { value: Some(value) }
    }

    fn s(v: &str) -> AnyValue {
        any(Any::StringValue(v.to_owned()))
    }

    fn int(v: i64) -> AnyValue {
        any(Any::IntValue(v))
    }

    fn dbl(v: f64) -> AnyValue {
        any(Any::DoubleValue(v))
    }

    fn boolean(v: bool) -> AnyValue {
        any(Any::BoolValue(v))
    }

    fn bytes(v: &[u8]) -> AnyValue {
        any(Any::BytesValue(v.to_vec()))
    }

    fn arr(values: Vec<AnyValue>) -> AnyValue {
        any(Any::ArrayValue(ArrayValue { values }))
    }

    fn kvlist(values: Vec<KeyValue>) -> AnyValue {
        any(Any::KvlistValue(KeyValueList { values }))
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(value),
            ..Default::default()
        }
    }

    fn ids(rollout: &str, attempt: &str) -> Vec<KeyValue> {
        vec![
            kv(ROLLOUT_ID_KEY, s(rollout)),
            kv(ATTEMPT_ID_KEY, s(attempt)),
        ]
    }

    fn span(name: &str, attributes: Vec<KeyValue>) -> ProtoSpan {
        ProtoSpan {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            name: name.to_owned(),
            attributes,
            ..Default::default()
        }
    }

    fn resource_spans(resource: Vec<KeyValue>, spans: Vec<ProtoSpan>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: resource,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn encode(resource_spans: Vec<ResourceSpans>) -> Vec<u8> {
        ExportTraceServiceRequest { resource_spans }.encode_to_vec()
    }

    /// A decoded span; `span` is its document as a map (the reference conversion's, whose
    /// text [`decode_ok`] found equal), for asserting on fields.
    struct TestSpan {
        rollout_id: String,
        attempt_id: String,
        sequence_id: Option<i64>,
        span: Map<String, Value>,
        stored: StoredSpan,
    }

    struct TestTraces {
        spans: Vec<TestSpan>,
        dropped: usize,
    }

    /// Decodes, checks every document against the old map-based conversion byte for byte
    /// (with placeholder and real sequence ids), and parses it for the field assertions.
    fn decode_ok(resource_spans: Vec<ResourceSpans>) -> TestTraces {
        let body = encode(resource_spans);
        let decoded = decode_traces(CT, None, &body).expect("decodes");
        // Exporters' requests are read without prost; the reference reads prost's decoding.
        assert!(wire::decode(&body).is_ok(), "the borrowing reader gave up");
        let request = ExportTraceServiceRequest::decode(body.as_slice()).expect("decodes");
        let old = reference::map_request(&wire::from_prost(&request));
        assert_eq!(old.len(), decoded.spans.len());
        let mut spans = Vec::new();
        for (mut new, mut old) in decoded.spans.into_iter().zip(old) {
            assert_eq!(new.rollout_id, old.rollout_id);
            assert_eq!(new.span.attempt_id(), old.attempt_id);
            assert_eq!(new.sequence_id, old.sequence_id);
            for id in [0, 17, i64::MAX] {
                new.span.set_sequence_id(id);
                old.span.insert("sequence_id".into(), Value::from(id));
                let expected = serde_json::value::to_raw_value(&old.span).expect("json");
                assert_eq!(new.span.to_json(), expected.get());
            }
            new.span.set_sequence_id(0);
            old.span.insert("sequence_id".into(), Value::from(0));
            assert_eq!(new.span.trace_id(), old.span["trace_id"].as_str().unwrap());
            assert_eq!(new.span.span_id(), old.span["span_id"].as_str().unwrap());
            assert_eq!(
                new.span.parent_id().as_deref(),
                old.span["parent_id"].as_str()
            );
            assert_eq!(new.span.name(), old.span["name"].as_str().unwrap());
            assert_eq!(new.span.start_time(), old.span["start_time"].as_f64());
            assert_eq!(new.span.end_time(), old.span["end_time"].as_f64());
            assert_valid_span(&old.span);
            spans.push(TestSpan {
                rollout_id: new.rollout_id,
                attempt_id: old.attempt_id,
                sequence_id: new.sequence_id,
                span: old.span,
                stored: new.span,
            });
        }
        TestTraces {
            spans,
            dropped: decoded.dropped,
        }
    }

    /// Decodes one span carrying `attributes` plus valid ids and returns its attributes.
    fn span_attributes(attributes: Vec<KeyValue>) -> Map<String, Value> {
        let decoded = decode_ok(vec![resource_spans(
            ids("ro", "at"),
            vec![span("s", attributes)],
        )]);
        match &decoded.spans[0].span["attributes"] {
            Value::Object(map) => map.clone(),
            other => panic!("attributes not an object: {other}"),
        }
    }

    /// The shapes Agent Lightning's `Attributes` admits: scalars and homogeneous arrays.
    fn assert_valid_attributes(attributes: &Value) {
        let Value::Object(map) = attributes else {
            panic!("attributes must be an object: {attributes}");
        };
        for (key, value) in map {
            match value {
                Value::String(_) | Value::Bool(_) | Value::Number(_) => {}
                Value::Array(items) => {
                    let kinds: Vec<u8> = items
                        .iter()
                        .map(|item| match item {
                            Value::String(_) => 0,
                            Value::Bool(_) => 1,
                            Value::Number(n) if n.is_f64() => 2,
                            Value::Number(_) => 3,
                            other => panic!("{key}: non-scalar array element {other}"),
                        })
                        .collect();
                    assert!(
                        kinds.windows(2).all(|w| w[0] == w[1]),
                        "{key}: mixed {value}"
                    );
                }
                other => panic!("{key}: invalid attribute value {other}"),
            }
        }
    }

    fn assert_valid_span(span: &Map<String, Value>) {
        assert_valid_attributes(&span["attributes"]);
        assert_valid_attributes(&span["resource"]["attributes"]);
        for event in span["events"].as_array().expect("events array") {
            assert_valid_attributes(&event["attributes"]);
        }
        for link in span["links"].as_array().expect("links array") {
            if !link["attributes"].is_null() {
                assert_valid_attributes(&link["attributes"]);
            }
        }
    }

    fn sequence_of(span_value: AnyValue) -> Option<i64> {
        let mut attributes = ids("ro", "at");
        attributes.push(kv(SEQUENCE_ID_KEY, span_value));
        decode_ok(vec![resource_spans(vec![], vec![span("s", attributes)])]).spans[0].sequence_id
    }

    fn gzip_bytes(data: &[u8]) -> Vec<u8> {
        gzip(data).expect("gzip")
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        MultiGzDecoder::new(data)
            .read_to_end(&mut out)
            .expect("gunzip");
        out
    }

    /// Random spans over every value kind and shape; [`decode_ok`] checks each document
    /// byte for byte against the reference conversion.
    #[test]
    fn writer_matches_the_map_conversion_on_varied_spans() {
        fn text(rng: &mut fastrand::Rng) -> String {
            const PIECES: &[&str] = &[
                "a", "b", "x.y", "\"", "\\", "\n", "\t", "\u{1}", "\u{7f}", "é", "日本", "😀",
                "\u{2028}", " ", "{", "[1]", "",
            ];
            (0..rng.usize(0..5))
                .map(|_| PIECES[rng.usize(..PIECES.len())])
                .collect()
        }
        fn float(rng: &mut fastrand::Rng) -> f64 {
            const SPECIAL: &[f64] = &[
                0.0,
                -0.0,
                1.0,
                0.1,
                1e16,
                1e-7,
                1.5e300,
                5e-324,
                f64::MAX,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                1_700_000_000.123_456_7,
                -2.5,
            ];
            if rng.bool() {
                SPECIAL[rng.usize(..SPECIAL.len())]
            } else {
                f64::from_bits(rng.u64(..))
            }
        }
        fn int(rng: &mut fastrand::Rng) -> i64 {
            [
                0,
                1,
                -1,
                i64::MAX,
                i64::MIN,
                rng.i64(..),
                rng.i64(-1000..1000),
            ][rng.usize(..7)]
        }
        fn scalar(rng: &mut fastrand::Rng) -> Option<Any> {
            Some(match rng.usize(..8) {
                0 => Any::StringValue(text(rng)),
                1 => Any::BoolValue(rng.bool()),
                2 => Any::IntValue(int(rng)),
                3 => Any::DoubleValue(float(rng)),
                4 => Any::BytesValue((0..rng.usize(0..6)).map(|_| rng.u8(..)).collect()),
                5 => Any::StringValueStrindex(rng.i32(..)),
                6 => return None,
                _ => Any::IntValue(rng.i64(0..10)),
            })
        }
        fn value(rng: &mut fastrand::Rng, depth: usize) -> AnyValue {
            let value = match rng.usize(..10) {
                0..=4 => scalar(rng),
                5..=7 if depth < 3 => {
                    // Often homogeneous or an int/float mix, sometimes anything.
                    let kind = rng.usize(..4);
                    let values = (0..rng.usize(0..5))
                        .map(|_| match kind {
                            0 => int_or_float(rng),
                            1 => AnyValue {
                                value: Some(Any::StringValue(text(rng))),
                            },
                            2 => AnyValue {
                                value: Some(Any::BoolValue(rng.bool())),
                            },
                            _ => value(rng, depth + 1),
                        })
                        .collect();
                    Some(Any::ArrayValue(ArrayValue { values }))
                }
                8..=9 if depth < 3 => Some(Any::KvlistValue(KeyValueList {
                    values: attributes(rng, depth + 1, 4),
                })),
                _ => scalar(rng),
            };
            AnyValue { value }
        }
        fn int_or_float(rng: &mut fastrand::Rng) -> AnyValue {
            let value = if rng.bool() {
                Any::IntValue(rng.i64(-5..5))
            } else {
                Any::DoubleValue(float(rng))
            };
            AnyValue { value: Some(value) }
        }
        fn attributes(rng: &mut fastrand::Rng, depth: usize, max: usize) -> Vec<KeyValue> {
            const KEYS: &[&str] = &["a", "b", "a.b", "b.a", "c", "gen_ai.prompt", "\"q\"", ""];
            (0..rng.usize(0..=max))
                .map(|_| KeyValue {
                    key: if rng.usize(..4) == 0 {
                        text(rng)
                    } else {
                        KEYS[rng.usize(..KEYS.len())].to_owned()
                    },
                    // The outer value may be missing as well as empty.
                    value: (rng.usize(..12) != 0).then(|| value(rng, depth)),
                    ..Default::default()
                })
                .collect()
        }
        fn id(rng: &mut fastrand::Rng, usual: usize) -> Vec<u8> {
            let len = [usual, usual, 0, 1, usual + 3][rng.usize(..5)];
            (0..len).map(|_| rng.u8(..)).collect()
        }
        fn nanos(rng: &mut fastrand::Rng) -> u64 {
            [
                0,
                5,
                1_000_000_000_000,
                1_000_000_000_001,
                u64::MAX,
                rng.u64(..),
            ][rng.usize(..6)]
        }

        let mut rng = fastrand::Rng::with_seed(agl_common::fuzzing::seed(0x5eed));
        let mut corrupted = Vec::new();
        for round in 0..agl_common::fuzzing::cases(300) {
            let spans = (0..rng.usize(1..4))
                .map(|_| {
                    // Past 16 attributes duplicates are merged through an index.
                    let max = if rng.bool() { 6 } else { 40 };
                    let mut own = attributes(&mut rng, 0, max);
                    if rng.bool() {
                        own.extend(ids("ro-1", "at-1"));
                    }
                    ProtoSpan {
                        trace_id: id(&mut rng, 16),
                        span_id: id(&mut rng, 8),
                        parent_span_id: id(&mut rng, 8),
                        name: text(&mut rng),
                        start_time_unix_nano: nanos(&mut rng),
                        end_time_unix_nano: nanos(&mut rng),
                        attributes: own,
                        events: (0..rng.usize(0..3))
                            .map(|_| Event {
                                time_unix_nano: nanos(&mut rng),
                                name: text(&mut rng),
                                attributes: attributes(&mut rng, 0, 4),
                                ..Default::default()
                            })
                            .collect(),
                        links: (0..rng.usize(0..3))
                            .map(|_| Link {
                                trace_id: id(&mut rng, 16),
                                span_id: id(&mut rng, 8),
                                attributes: attributes(&mut rng, 0, 3),
                                ..Default::default()
                            })
                            .collect(),
                        status: rng.bool().then(|| ProtoStatus {
                            message: text(&mut rng),
                            code: [0, 1, 2, 99, -1][rng.usize(..5)],
                        }),
                        // Read and checked, not stored.
                        trace_state: text(&mut rng),
                        kind: rng.i32(-1..6),
                        flags: rng.u32(..),
                        dropped_attributes_count: rng.u32(..3),
                        dropped_events_count: rng.u32(..3),
                        dropped_links_count: rng.u32(..3),
                    }
                })
                .collect();
            let mut resource = attributes(&mut rng, 0, 5);
            resource.extend(ids("ro-r", "at-r"));
            let mut rs = resource_spans(resource, spans);
            rs.schema_url = text(&mut rng);
            rs.scope_spans[0].scope = rng.bool().then(|| InstrumentationScope {
                name: text(&mut rng),
                version: text(&mut rng),
                attributes: attributes(&mut rng, 0, 3),
                dropped_attributes_count: rng.u32(..2),
            });
            rs.scope_spans[0].schema_url = text(&mut rng);
            corrupted.push(encode(vec![rs.clone()]));
            let decoded = decode_ok(vec![rs]);
            assert!(!decoded.spans.is_empty(), "round {round}");
        }
        // Damaged and unusual bodies: whatever the borrowing reader takes, prost takes too
        // and reads the same; the rest is prost's to accept or refuse.
        let (mut taken, mut left) = (0, 0);
        for body in corrupted {
            for _ in 0..20 {
                let mut bad = body.clone();
                match rng.u8(0..5) {
                    0 => bad.truncate(rng.usize(..bad.len())),
                    1 => {
                        let at = rng.usize(..bad.len());
                        bad[at] ^= 1 << rng.u8(0..8);
                    }
                    2 => {
                        let at = rng.usize(..bad.len());
                        bad[at] = rng.u8(..);
                    }
                    // An unknown field, or a second copy of the first resource spans.
                    3 => bad.extend_from_slice(&[0xf8, 0x06, 0x01]),
                    _ => {
                        let copy = bad.clone();
                        bad.extend_from_slice(&copy);
                    }
                }
                match wire::decode(&bad) {
                    Ok(view) => {
                        taken += 1;
                        let request = ExportTraceServiceRequest::decode(bad.as_slice())
                            .expect("prost reads what the borrowing reader read");
                        assert_eq!(
                            documents(&map_request(&view)),
                            documents(&map_request(&wire::from_prost(&request)))
                        );
                    }
                    Err(wire::Refused) => left += 1,
                }
            }
        }
        assert!(taken > 500 && left > 500, "taken {taken}, left {left}");
    }

    /// `bytes` as field `field` (length-delimited) of an enclosing message.
    fn wrap(field: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![(field << 3) | 2];
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
        out
    }

    /// Encodings protobuf merges (a singular message sent twice, two members of a oneof)
    /// are left to prost, and stored as prost reads them.
    #[test]
    fn merged_messages_are_read_as_prost_reads_them() {
        // A `ResourceSpans` in two parts: its `resource` twice, so the attributes add up.
        let first = resource_spans(ids("ro-1", "at-1"), vec![span("s", vec![])]);
        let second = ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("extra", s("x"))],
                ..Default::default()
            }),
            ..Default::default()
        };
        let merged = [first.encode_to_vec(), second.encode_to_vec()].concat();
        // An attribute whose value sets a string, then an int: the int wins.
        let value = [s("text").encode_to_vec(), int(7).encode_to_vec()].concat();
        let attribute = [
            KeyValue {
                key: "k".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            wrap(2, &value),
        ]
        .concat();
        // Field 9 of the span is an attribute: splice it into the span's encoding.
        let span_bytes = [span("t", vec![]).encode_to_vec(), wrap(9, &attribute)].concat();
        let scope = wrap(2, &span_bytes);
        let resource = Resource {
            attributes: ids("ro-2", "at-2"),
            ..Default::default()
        }
        .encode_to_vec();
        let second_rs = [wrap(1, &resource), wrap(2, &scope)].concat();
        for body in [wrap(1, &merged), wrap(1, &second_rs)] {
            assert!(
                wire::decode(&body).is_err(),
                "the borrowing reader gives up"
            );
            let request = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
            let decoded = decode_traces(CT, None, &body).expect("prost reads it");
            assert_eq!(
                documents(&decoded),
                documents(&map_request(&wire::from_prost(&request)))
            );
            assert_eq!(decoded.spans.len(), 1);
        }
        let stored = decode_traces(CT, None, &wrap(1, &merged)).unwrap().spans[0]
            .span
            .to_json();
        assert!(stored.contains(r#""extra":"x""#), "{stored}");
        let stored = decode_traces(CT, None, &wrap(1, &second_rs)).unwrap().spans[0]
            .span
            .to_json();
        assert!(stored.contains(r#""attributes":{"k":7}"#), "{stored}");
    }

    /// The decoded spans as comparable text.
    fn documents(decoded: &DecodedTraces) -> (Vec<(String, Option<i64>, String)>, usize) {
        let spans = decoded
            .spans
            .iter()
            .map(|s| (s.rollout_id.clone(), s.sequence_id, s.span.to_json()))
            .collect();
        (spans, decoded.dropped)
    }

    #[test]
    fn maps_a_full_span() {
        let proto = ProtoSpan {
            trace_id: (1..=16).collect(),
            span_id: (1..=8).collect(),
            parent_span_id: vec![0xff; 8],
            name: "llm call".to_owned(),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_500_000_000,
            end_time_unix_nano: 1_700_000_001_250_000_000,
            attributes: vec![
                kv(ROLLOUT_ID_KEY, s("ro-1")),
                kv(ATTEMPT_ID_KEY, s("at-1")),
                kv("gen_ai.prompt", s("hi")),
                kv("tokens", int(12)),
            ],
            events: vec![Event {
                time_unix_nano: 1_700_000_000_750_000_000,
                name: "exception".to_owned(),
                attributes: vec![kv("exception.type", s("ValueError"))],
                ..Default::default()
            }],
            links: vec![Link {
                trace_id: vec![0x11; 16],
                span_id: vec![0x22; 8],
                attributes: vec![kv("why", s("retry"))],
                ..Default::default()
            }],
            status: Some(ProtoStatus {
                message: "boom".to_owned(),
                code: StatusCode::Error as i32,
            }),
            ..Default::default()
        };
        let mut rs = resource_spans(vec![kv("service.name", s("agent"))], vec![proto]);
        rs.schema_url = "https://opentelemetry.io/schemas/1.21.0".to_owned();
        let decoded = decode_ok(vec![rs]);
        assert_eq!(decoded.dropped, 0);
        assert_eq!(decoded.spans.len(), 1);
        let span = &decoded.spans[0];
        assert_eq!(span.rollout_id, "ro-1");
        assert_eq!(span.attempt_id, "at-1");
        assert_eq!(span.sequence_id, None);
        let trace_id = "0102030405060708090a0b0c0d0e0f10";
        let expected = json!({
            "rollout_id": "ro-1",
            "attempt_id": "at-1",
            "sequence_id": 0,
            "trace_id": trace_id,
            "span_id": "0102030405060708",
            "parent_id": "ffffffffffffffff",
            "name": "llm call",
            "status": {"status_code": "ERROR", "description": "boom"},
            "attributes": {
                "agentlightning.rollout_id": "ro-1",
                "agentlightning.attempt_id": "at-1",
                "gen_ai.prompt": "hi",
                "tokens": 12
            },
            "events": [{
                "name": "exception",
                "attributes": {"exception.type": "ValueError"},
                "timestamp": 1_700_000_000.75
            }],
            "links": [{
                "context": {
                    "trace_id": "11111111111111111111111111111111",
                    "span_id": "2222222222222222",
                    "is_remote": false,
                    "trace_state": {}
                },
                "attributes": {"why": "retry"}
            }],
            "start_time": 1_700_000_000.5,
            "end_time": 1_700_000_001.25,
            "context": {
                "trace_id": trace_id,
                "span_id": "0102030405060708",
                "is_remote": false,
                "trace_state": {}
            },
            "parent": null,
            "resource": {
                "attributes": {"service.name": "agent"},
                "schema_url": "https://opentelemetry.io/schemas/1.21.0"
            }
        });
        assert_eq!(Value::Object(span.span.clone()), expected);
        // Key order is part of the contract (stored spans serialize in this order).
        let keys: Vec<&str> = span.span.keys().map(String::as_str).collect();
        assert_eq!(keys, crate::model::fields::SPAN);
        assert_eq!(
            serde_json::to_string(&span.span["status"]).expect("json"),
            r#"{"status_code":"ERROR","description":"boom"}"#
        );
        assert_eq!(
            serde_json::to_string(&span.span["links"][0]["context"]).expect("json"),
            format!(
                r#"{{"trace_id":"{}","span_id":"{}","is_remote":false,"trace_state":{{}}}}"#,
                "1".repeat(32),
                "2".repeat(16)
            )
        );
    }

    #[test]
    fn ids_fall_back_to_resource_and_span_overrides() {
        let decoded = decode_ok(vec![resource_spans(
            ids("res-ro", "res-at"),
            vec![
                span("inherits", vec![]),
                span("overrides", vec![kv(ROLLOUT_ID_KEY, s("span-ro"))]),
                span(
                    "overrides both",
                    vec![
                        kv(ATTEMPT_ID_KEY, s("span-at")),
                        kv(ROLLOUT_ID_KEY, s("r2")),
                    ],
                ),
            ],
        )]);
        let got: Vec<(&str, &str)> = decoded
            .spans
            .iter()
            .map(|d| (d.rollout_id.as_str(), d.attempt_id.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("res-ro", "res-at"),
                ("span-ro", "res-at"),
                ("r2", "span-at")
            ]
        );
        // The span JSON carries the same ids, and the resource keeps its id attributes.
        assert_eq!(decoded.spans[1].span["rollout_id"], "span-ro");
        assert_eq!(
            decoded.spans[0].span["resource"]["attributes"],
            json!({ROLLOUT_ID_KEY: "res-ro", ATTEMPT_ID_KEY: "res-at"})
        );
        // Span attributes hold only what the span itself sent.
        assert_eq!(decoded.spans[0].span["attributes"], json!({}));
    }

    #[test]
    fn empty_span_value_falls_back_to_resource() {
        let empty = KeyValue {
            key: ROLLOUT_ID_KEY.to_owned(),
            value: None,
            ..Default::default()
        };
        let unset = kv(ROLLOUT_ID_KEY, AnyValue { value: None });
        let decoded = decode_ok(vec![resource_spans(
            ids("res-ro", "res-at"),
            vec![span("a", vec![empty]), span("b", vec![unset])],
        )]);
        assert_eq!(decoded.spans[0].rollout_id, "res-ro");
        assert_eq!(decoded.spans[1].rollout_id, "res-ro");
        assert_eq!(decoded.spans[1].span["attributes"], json!({}));
    }

    #[test]
    fn ids_are_stringified_like_python_str() {
        let cases: Vec<(AnyValue, &str)> = vec![
            (s("plain"), "plain"),
            (s(""), ""),
            (int(7), "7"),
            (int(-3), "-3"),
            (boolean(true), "True"),
            (boolean(false), "False"),
            (dbl(1.5), "1.5"),
            (dbl(2.0), "2.0"),
            (dbl(1e16), "1e+16"),
            (dbl(f64::NAN), "nan"),
            (bytes(&[0x01, 0xff]), "01ff"),
            (arr(vec![s("a"), int(1), boolean(true)]), "['a', 1, True]"),
            (
                arr(vec![s("it's"), AnyValue { value: None }]),
                "[\"it's\", None]",
            ),
            (
                kvlist(vec![kv("k", s("v")), kv("n", dbl(0.5))]),
                "{'k': 'v', 'n': 0.5}",
            ),
        ];
        for (value, expected) in cases {
            let mut attributes = vec![kv(ROLLOUT_ID_KEY, value.clone())];
            attributes.push(kv(ATTEMPT_ID_KEY, value.clone()));
            let decoded = decode_ok(vec![resource_spans(vec![], vec![span("s", attributes)])]);
            assert_eq!(decoded.spans[0].rollout_id, expected, "{value:?}");
            assert_eq!(decoded.spans[0].attempt_id, expected, "{value:?}");
        }
    }

    #[test]
    fn duplicate_keys_last_one_wins_in_first_position() {
        let decoded = decode_ok(vec![resource_spans(
            vec![],
            vec![span(
                "s",
                vec![
                    kv(ROLLOUT_ID_KEY, s("first")),
                    kv(ATTEMPT_ID_KEY, s("at")),
                    kv(ROLLOUT_ID_KEY, s("second")),
                ],
            )],
        )]);
        let span = &decoded.spans[0];
        assert_eq!(span.rollout_id, "second");
        let keys: Vec<&String> = span.span["attributes"]
            .as_object()
            .expect("obj")
            .keys()
            .collect();
        assert_eq!(keys, [ROLLOUT_ID_KEY, ATTEMPT_ID_KEY]);
        assert_eq!(span.span["attributes"][ROLLOUT_ID_KEY], "second");
    }

    #[test]
    fn drops_spans_without_ids() {
        let decoded = decode_ok(vec![
            resource_spans(
                vec![],
                vec![
                    span("no ids", vec![]),
                    span("rollout only", vec![kv(ROLLOUT_ID_KEY, s("r"))]),
                    span("attempt only", vec![kv(ATTEMPT_ID_KEY, s("a"))]),
                    span("both", ids("r", "a")),
                ],
            ),
            resource_spans(vec![kv(ROLLOUT_ID_KEY, s("r"))], vec![span("half", vec![])]),
        ]);
        assert_eq!(decoded.dropped, 4);
        assert_eq!(decoded.spans.len(), 1);
        assert_eq!(decoded.spans[0].span["name"], "both");
    }

    #[test]
    fn keeps_request_order_across_resources_and_scopes() {
        let mut first = resource_spans(ids("r1", "a1"), vec![span("1", vec![])]);
        first.scope_spans.push(ScopeSpans {
            spans: vec![span("2", vec![]), span("3", vec![])],
            ..Default::default()
        });
        let second = resource_spans(ids("r2", "a2"), vec![span("4", vec![])]);
        let decoded = decode_ok(vec![first, second]);
        let names: Vec<&Value> = decoded.spans.iter().map(|d| &d.span["name"]).collect();
        assert_eq!(names, ["1", "2", "3", "4"]);
        assert_eq!(decoded.spans[3].rollout_id, "r2");
    }

    #[test]
    fn sequence_id_parsing() {
        assert_eq!(sequence_of(s("42")), Some(42));
        assert_eq!(sequence_of(int(42)), Some(42));
        assert_eq!(sequence_of(s(" 7\n")), Some(7));
        assert_eq!(sequence_of(s("+8")), Some(8));
        assert_eq!(sequence_of(s("007")), Some(7));
        assert_eq!(sequence_of(s("1_000")), Some(1000));
        assert_eq!(sequence_of(s("0")), Some(0));
        assert_eq!(sequence_of(s("-0")), Some(0));
        assert_eq!(sequence_of(bytes(&[0x12])), Some(12));
        assert_eq!(sequence_of(s("abc")), None);
        assert_eq!(sequence_of(s("")), None);
        assert_eq!(sequence_of(s("4.0")), None);
        assert_eq!(sequence_of(s("1__0")), None);
        assert_eq!(sequence_of(s("_1")), None);
        assert_eq!(sequence_of(s("- 1")), None);
        assert_eq!(sequence_of(dbl(42.0)), None);
        assert_eq!(sequence_of(boolean(true)), None);
        assert_eq!(sequence_of(s("-3")), None);
        assert_eq!(sequence_of(int(-3)), None);
        assert_eq!(sequence_of(int(i64::MAX)), Some(i64::MAX));
        assert_eq!(sequence_of(s("9223372036854775808")), None);
        assert_eq!(
            sequence_of(s("99999999999999999999999999999999999999999")),
            None
        );
        assert_eq!(sequence_of(arr(vec![int(1)])), None);
    }

    #[test]
    fn sequence_id_from_resource_and_span_override() {
        let mut resource = ids("r", "a");
        resource.push(kv(SEQUENCE_ID_KEY, s("5")));
        let decoded = decode_ok(vec![resource_spans(
            resource,
            vec![
                span("inherits", vec![]),
                span("overrides", vec![kv(SEQUENCE_ID_KEY, int(9))]),
                // An invalid span value still overrides (upstream checks `is not None`).
                span("invalid override", vec![kv(SEQUENCE_ID_KEY, s("x"))]),
            ],
        )]);
        let got: Vec<Option<i64>> = decoded.spans.iter().map(|d| d.sequence_id).collect();
        assert_eq!(got, [Some(5), Some(9), None]);
        // The placeholder stays 0 and the attribute itself is kept.
        assert_eq!(decoded.spans[1].span["sequence_id"], 0);
        assert_eq!(decoded.spans[1].span["attributes"][SEQUENCE_ID_KEY], 9);
    }

    /// Ids written from the stack read as `Display` writes them, at every length.
    #[test]
    fn hex_ids_serialize_as_they_display() {
        for len in 0..48 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 5) as u8).collect();
            for width in [0, 16, 32, 64, 70] {
                let hex = Hex::padded(&bytes, width);
                let expected = format!("\"{hex}\"");
                assert_eq!(
                    serde_json::to_string(&hex).unwrap(),
                    expected,
                    "{len} {width}"
                );
                assert_eq!(expected.len(), 2 + width.max(2 * len));
            }
        }
    }

    #[test]
    fn trace_and_span_ids_are_padded_hex() {
        let mut short = span("short", ids("r", "a"));
        short.trace_id = vec![0x01, 0x02];
        short.span_id = vec![0x0a];
        short.parent_span_id = vec![0xbc];
        let mut empty = span("empty", ids("r", "a"));
        empty.trace_id = vec![];
        empty.span_id = vec![];
        let mut long = span("long", ids("r", "a"));
        long.trace_id = vec![0xee; 17];
        let decoded = decode_ok(vec![resource_spans(vec![], vec![short, empty, long])]);
        let short = &decoded.spans[0].span;
        assert_eq!(short["trace_id"], format!("{}0102", "0".repeat(28)));
        assert_eq!(short["span_id"], "000000000000000a");
        assert_eq!(short["parent_id"], "00000000000000bc");
        assert_eq!(short["context"]["trace_id"], short["trace_id"]);
        assert_eq!(short["context"]["span_id"], short["span_id"]);
        let empty = &decoded.spans[1].span;
        assert_eq!(empty["trace_id"], "0".repeat(32));
        assert_eq!(empty["span_id"], "0".repeat(16));
        assert_eq!(empty["parent_id"], Value::Null);
        assert_eq!(decoded.spans[2].span["trace_id"], "ee".repeat(17));
    }

    #[test]
    fn status_mapping() {
        let with_status = |code: i32, message: &str| {
            let mut proto = span("s", ids("r", "a"));
            proto.status = Some(ProtoStatus {
                message: message.to_owned(),
                code,
            });
            proto
        };
        let decoded = decode_ok(vec![resource_spans(
            vec![],
            vec![
                span("none", ids("r", "a")),
                with_status(0, ""),
                with_status(1, "fine"),
                with_status(2, ""),
                with_status(7, "odd"),
            ],
        )]);
        let got: Vec<&Value> = decoded.spans.iter().map(|d| &d.span["status"]).collect();
        assert_eq!(
            got,
            [
                &json!({"status_code": "UNSET", "description": null}),
                &json!({"status_code": "UNSET", "description": null}),
                &json!({"status_code": "OK", "description": "fine"}),
                &json!({"status_code": "ERROR", "description": null}),
                &json!({"status_code": "UNSET", "description": "odd"}),
            ]
        );
    }

    #[test]
    fn timestamps_follow_convert_timestamp() {
        let times = |start: u64, end: u64| {
            let mut proto = span("s", ids("r", "a"));
            proto.start_time_unix_nano = start;
            proto.end_time_unix_nano = end;
            proto
        };
        let decoded = decode_ok(vec![resource_spans(
            vec![],
            vec![
                times(0, 0),
                times(1_700_000_000_123_456_789, 1_924_948_642_789_419_743),
                times(5, 1_000_000_000_000),
            ],
        )]);
        let at = |i: usize, key: &str| decoded.spans[i].span[key].clone();
        assert_eq!(at(0, "start_time"), Value::Null);
        assert_eq!(at(0, "end_time"), Value::Null);
        // Expected values are Python's `ns / 1_000_000_000`.
        assert_eq!(at(1, "start_time").as_f64(), Some(1_700_000_000.123_456_7));
        assert_eq!(at(1, "end_time").as_f64(), Some(1_924_948_642.789_419_7));
        assert_eq!(
            decoded.spans[1].stored.start_time(),
            Some(1_700_000_000.123_456_7)
        );
        assert_eq!(decoded.spans[0].stored.end_time(), None);
        // At or below 1e12 the value is taken as seconds already, as a float.
        assert_eq!(at(2, "start_time"), json!(5.0));
        assert_eq!(at(2, "end_time"), json!(1e12));
        assert!(at(2, "start_time").is_f64());
    }

    #[test]
    fn nanos_to_seconds_is_correctly_rounded() {
        // (nanos, Python's repr(nanos / 10**9)); naive f64 division gets these wrong.
        let cases = [
            (1_924_948_642_789_419_743_u64, "1924948642.7894197"),
            (1_072_757_217_426_062_276, "1072757217.4260622"),
            (1_135_951_006_097_486_908, "1135951006.097487"),
            (1_700_000_000_000_000_000, "1700000000.0"),
            (1_000_000_000_001, "1000.000000001"),
            (u64::MAX, "18446744073.709553"),
            (1, "1e-09"),
        ];
        for (nanos, python) in cases {
            assert_eq!(
                python_float_repr(nanos_to_seconds(nanos)),
                python,
                "{nanos}"
            );
        }
        // Pseudo-random cross-check, exact in integers: got = m * 2^-k must lie within
        // half an ulp (2^-k / 2) of nanos / 1e9.
        let mut nanos: u64 = 1_000_000_000_001;
        for _ in 0..20_000 {
            let bits = nanos_to_seconds(nanos).to_bits();
            let m = i128::from((bits & ((1 << 52) - 1)) | (1 << 52));
            let k = 1075 - i128::from((bits >> 52) & 0x7ff);
            assert!((1..=60).contains(&k), "{nanos}");
            let diff = (m * 1_000_000_000 - (i128::from(nanos) << k)).abs();
            assert!(2 * diff <= 1_000_000_000, "{nanos}");
            nanos = nanos
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407)
                % 2_000_000_000_000_000_000
                + 1_000_000_000_001;
        }
    }

    #[test]
    fn events_and_links() {
        let mut proto = span("s", ids("r", "a"));
        proto.events = vec![
            Event {
                name: "no time".to_owned(),
                ..Default::default()
            },
            Event {
                name: "nested".to_owned(),
                time_unix_nano: 2_000_000_000_000,
                attributes: vec![
                    kv("m", kvlist(vec![kv("x", int(1))])),
                    kv("mixed", arr(vec![int(1), s("a")])),
                ],
                ..Default::default()
            },
        ];
        proto.links = vec![
            Link {
                trace_id: vec![0x01],
                span_id: vec![],
                ..Default::default()
            },
            Link {
                trace_id: vec![0x02; 16],
                span_id: vec![0x03; 8],
                attributes: vec![
                    kv("b", bytes(&[0xca, 0xfe])),
                    kv("gone", AnyValue { value: None }),
                ],
                ..Default::default()
            },
            Link {
                attributes: vec![kv("only empty", AnyValue { value: None })],
                ..Default::default()
            },
        ];
        let decoded = decode_ok(vec![resource_spans(vec![], vec![proto])]);
        let span = &decoded.spans[0].span;
        assert_eq!(
            span["events"],
            json!([
                {"name": "no time", "attributes": {}, "timestamp": null},
                {"name": "nested", "attributes": {"m.x": 1, "mixed": "[1,\"a\"]"}, "timestamp": 2000.0}
            ])
        );
        assert_eq!(
            span["links"],
            json!([
                {
                    "context": {"trace_id": format!("{}01", "0".repeat(30)), "span_id": "0".repeat(16), "is_remote": false, "trace_state": {}},
                    "attributes": null
                },
                {
                    "context": {"trace_id": "02".repeat(16), "span_id": "03".repeat(8), "is_remote": false, "trace_state": {}},
                    "attributes": {"b": "cafe"}
                },
                {
                    "context": {"trace_id": "0".repeat(32), "span_id": "0".repeat(16), "is_remote": false, "trace_state": {}},
                    "attributes": null
                }
            ])
        );
    }

    #[test]
    fn scalar_attributes_and_bytes() {
        let attributes = span_attributes(vec![
            kv("str", s("v")),
            kv("yes", boolean(true)),
            kv("n", int(-5)),
            kv("big", int(i64::MAX)),
            kv("f", dbl(0.25)),
            kv("whole", dbl(3.0)),
            kv("raw", bytes(&[0x01, 0xff])),
            kv("nothing", bytes(&[])),
        ]);
        assert_eq!(
            Value::Object(attributes.clone()),
            json!({
                "str": "v",
                "yes": true,
                "n": -5,
                "big": i64::MAX,
                "f": 0.25,
                "whole": 3.0,
                "raw": "01ff",
                "nothing": ""
            })
        );
        // Doubles stay floats even when integral, ints stay ints.
        assert!(attributes["whole"].is_f64());
        assert!(attributes["n"].is_i64());
        assert_eq!(
            serde_json::to_string(&attributes["whole"]).expect("json"),
            "3.0"
        );
    }

    #[test]
    fn non_finite_floats_become_strings() {
        let attributes = span_attributes(vec![
            kv("nan", dbl(f64::NAN)),
            kv("inf", dbl(f64::INFINITY)),
            kv("ninf", dbl(f64::NEG_INFINITY)),
            kv("arr", arr(vec![dbl(1.5), dbl(f64::NAN)])),
        ]);
        assert_eq!(attributes["nan"], "NaN");
        assert_eq!(attributes["inf"], "Infinity");
        assert_eq!(attributes["ninf"], "-Infinity");
        assert_eq!(attributes["arr"], "[1.5,\"NaN\"]");
    }

    #[test]
    fn arrays_are_made_homogeneous() {
        let attributes = span_attributes(vec![
            kv("strs", arr(vec![s("a"), s("b")])),
            kv("bools", arr(vec![boolean(true), boolean(false)])),
            kv("ints", arr(vec![int(1), int(2)])),
            kv("floats", arr(vec![dbl(1.5), dbl(2.5)])),
            kv("empty", arr(vec![])),
            kv("hexes", arr(vec![bytes(&[0xab]), s("cd")])),
            kv("num mix", arr(vec![dbl(1.5), int(2)])),
            kv("int first mix", arr(vec![int(3), dbl(0.5), int(-1)])),
            kv("mixed", arr(vec![s("a"), int(1)])),
            kv("bool int", arr(vec![boolean(true), int(1)])),
            kv("nested", arr(vec![arr(vec![int(1)]), arr(vec![])])),
            kv("with map", arr(vec![kvlist(vec![kv("k", s("v"))])])),
            kv("with hole", arr(vec![int(1), AnyValue { value: None }])),
            kv("num and str", arr(vec![int(1), dbl(2.5), s("x")])),
        ]);
        assert_eq!(attributes["strs"], json!(["a", "b"]));
        assert_eq!(attributes["bools"], json!([true, false]));
        assert_eq!(attributes["ints"], json!([1, 2]));
        assert_eq!(attributes["floats"], json!([1.5, 2.5]));
        assert_eq!(attributes["empty"], json!([]));
        assert_eq!(attributes["hexes"], json!(["ab", "cd"]));
        assert_eq!(attributes["num mix"], json!([1.5, 2.0]));
        assert_eq!(attributes["int first mix"], json!([3.0, 0.5, -1.0]));
        assert!(
            attributes["num mix"]
                .as_array()
                .expect("array")
                .iter()
                .all(Value::is_f64)
        );
        assert_eq!(attributes["mixed"], "[\"a\",1]");
        assert_eq!(attributes["bool int"], "[true,1]");
        assert_eq!(attributes["nested"], "[[1],[]]");
        assert_eq!(attributes["with map"], "[{\"k\":\"v\"}]");
        assert_eq!(attributes["with hole"], "[1,null]");
        assert_eq!(attributes["num and str"], "[1,2.5,\"x\"]");
        // The JSON text round-trips to the original structure.
        let parsed: Value =
            serde_json::from_str(attributes["with map"].as_str().expect("str")).expect("json");
        assert_eq!(parsed, json!([{"k": "v"}]));
    }

    #[test]
    fn kvlists_are_flattened_recursively() {
        let attributes = span_attributes(vec![
            kv("before", int(0)),
            kv(
                "llm",
                kvlist(vec![
                    kv("model", s("gpt")),
                    kv(
                        "usage",
                        kvlist(vec![
                            kv("in", int(3)),
                            kv("out", int(4)),
                            kv("raw", bytes(&[0x0f])),
                        ]),
                    ),
                    kv("stops", arr(vec![s("a"), s("b")])),
                    kv("mixed", arr(vec![s("a"), boolean(false)])),
                    kv("skip", AnyValue { value: None }),
                    kv("empty map", kvlist(vec![])),
                ]),
            ),
            kv("after", int(1)),
        ]);
        assert_eq!(
            Value::Object(attributes.clone()),
            json!({
                "before": 0,
                "llm.model": "gpt",
                "llm.usage.in": 3,
                "llm.usage.out": 4,
                "llm.usage.raw": "0f",
                "llm.stops": ["a", "b"],
                "llm.mixed": "[\"a\",false]",
                "after": 1
            })
        );
        let keys: Vec<&str> = attributes.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "before",
                "llm.model",
                "llm.usage.in",
                "llm.usage.out",
                "llm.usage.raw",
                "llm.stops",
                "llm.mixed",
                "after"
            ]
        );
    }

    #[test]
    fn empty_values_are_skipped() {
        let attributes = span_attributes(vec![
            kv("unset", AnyValue { value: None }),
            KeyValue {
                key: "missing".to_owned(),
                value: None,
                ..Default::default()
            },
            kv("strindex", any(Any::StringValueStrindex(3))),
            kv("kept", s("x")),
        ]);
        assert!(!attributes.contains_key("unset"));
        assert!(!attributes.contains_key("missing"));
        assert!(!attributes.contains_key("strindex"));
        assert_eq!(attributes["kept"], "x");
    }

    #[test]
    fn resource_attributes_are_converted() {
        let mut resource = ids("r", "a");
        resource.push(kv(
            "host",
            kvlist(vec![kv("name", s("box")), kv("cpus", int(2))]),
        ));
        resource.push(kv("tags", arr(vec![s("x"), int(1)])));
        resource.push(kv("blob", bytes(&[0xde, 0xad])));
        let decoded = decode_ok(vec![resource_spans(resource, vec![span("s", vec![])])]);
        assert_eq!(
            decoded.spans[0].span["resource"],
            json!({
                "attributes": {
                    ROLLOUT_ID_KEY: "r",
                    ATTEMPT_ID_KEY: "a",
                    "host.name": "box",
                    "host.cpus": 2,
                    "tags": "[\"x\",1]",
                    "blob": "dead"
                },
                "schema_url": ""
            })
        );
    }

    #[test]
    fn missing_resource_is_empty() {
        let rs = ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                spans: vec![span("s", ids("r", "a"))],
                ..Default::default()
            }],
            schema_url: "schema".to_owned(),
        };
        let decoded = decode_ok(vec![rs]);
        assert_eq!(
            decoded.spans[0].span["resource"],
            json!({"attributes": {}, "schema_url": "schema"})
        );
    }

    #[test]
    fn content_type_checks() {
        let body = encode(vec![resource_spans(ids("r", "a"), vec![span("s", vec![])])]);
        for ok in [
            "application/x-protobuf",
            "Application/X-Protobuf",
            " application/x-protobuf ; charset=binary",
        ] {
            assert_eq!(
                decode_traces(Some(ok), None, &body).expect(ok).spans.len(),
                1
            );
        }
        let cases = [
            (None, ""),
            (Some(""), ""),
            (Some("application/json"), "application/json"),
            (Some("application/json; charset=utf-8"), "application/json"),
            (Some("application/x-protobufx"), "application/x-protobufx"),
        ];
        for (content_type, shown) in cases {
            let err = decode_traces(content_type, None, &body).expect_err("refused");
            assert!(
                matches!(err, OtlpError::UnsupportedContentType(_)),
                "{err:?}"
            );
            assert_eq!(
                err.to_string(),
                format!("Unsupported Content-Type '{shown}', expected 'application/x-protobuf'")
            );
        }
    }

    #[test]
    fn empty_body_is_an_empty_request() {
        for encoding in [None, Some("gzip"), Some("deflate"), Some("identity")] {
            let decoded = decode_traces(CT, encoding, b"").expect("empty ok");
            assert!(decoded.spans.is_empty());
            assert_eq!(decoded.dropped, 0);
        }
        let decoded = decode_traces(CT, None, &encode(vec![])).expect("no resources");
        assert!(decoded.spans.is_empty());
    }

    #[test]
    fn bad_protobuf_is_a_parse_error() {
        for body in [
            &b"\xff\xff\xff\xff"[..],
            b"not protobuf at all",
            b"\x0a\x05\x01",
        ] {
            let err = decode_traces(CT, None, body).expect_err("refused");
            assert!(matches!(err, OtlpError::Parse(_)), "{err:?}");
            assert!(
                err.to_string()
                    .starts_with("Unable to parse OTLP traces payload: "),
                "{err}"
            );
        }
    }

    #[test]
    fn decompresses_gzip_and_deflate() {
        let body = encode(vec![resource_spans(ids("r", "a"), vec![span("s", vec![])])]);
        let gz = gzip_bytes(&body);
        for encoding in ["gzip", "GZIP", " x-gzip ", "gzip, identity"] {
            let decoded = decode_traces(CT, Some(encoding), &gz).expect(encoding);
            assert_eq!(decoded.spans.len(), 1, "{encoding}");
        }
        // Multi-member gzip: the protobuf is split across two members.
        let (a, b) = body.split_at(body.len() / 2);
        let mut multi = gzip_bytes(a);
        multi.extend(gzip_bytes(b));
        assert_eq!(
            decode_traces(CT, Some("gzip"), &multi)
                .expect("multi")
                .spans
                .len(),
            1
        );

        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&body).expect("write");
        let zlib = zlib.finish().expect("finish");
        assert_eq!(
            decode_traces(CT, Some("deflate"), &zlib)
                .expect("zlib")
                .spans
                .len(),
            1
        );
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        raw.write_all(&body).expect("write");
        let raw = raw.finish().expect("finish");
        assert_eq!(
            decode_traces(CT, Some("deflate"), &raw)
                .expect("raw")
                .spans
                .len(),
            1
        );
        // Stacked codings are undone in reverse order.
        let stacked = gzip_bytes(&zlib);
        let decoded = decode_traces(CT, Some("deflate, gzip"), &stacked).expect("stacked");
        assert_eq!(decoded.spans.len(), 1);
        // Uncompressed bodies pass through untouched.
        for encoding in [None, Some(""), Some("identity")] {
            assert_eq!(
                decode_traces(CT, encoding, &body).expect("raw").spans.len(),
                1
            );
        }
    }

    #[test]
    fn decompression_errors() {
        let body = encode(vec![resource_spans(ids("r", "a"), vec![span("s", vec![])])]);
        let err = decode_traces(CT, Some("br"), &body).expect_err("refused");
        assert!(matches!(err, OtlpError::Decompress(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "Unable to decompress OTLP traces payload: unsupported Content-Encoding 'br'"
        );
        // Unknown codings are refused even for an empty body.
        assert!(matches!(
            decode_traces(CT, Some("gzip, zstd"), b""),
            Err(OtlpError::Decompress(_))
        ));
        // Not gzip at all, and a truncated gzip stream.
        let err = decode_traces(CT, Some("gzip"), &body).expect_err("refused");
        assert!(matches!(err, OtlpError::Decompress(_)), "{err:?}");
        let gz = gzip_bytes(&body);
        let err = decode_traces(CT, Some("gzip"), &gz[..gz.len() - 6]).expect_err("refused");
        assert!(matches!(err, OtlpError::Decompress(_)), "{err:?}");
        // Gzip of garbage decompresses but does not parse.
        let err =
            decode_traces(CT, Some("gzip"), &gzip_bytes(b"\xff\xff\xff")).expect_err("refused");
        assert!(matches!(err, OtlpError::Parse(_)), "{err:?}");
    }

    #[test]
    fn decompression_is_bounded() {
        let data = vec![0u8; 4096];
        let gz = gzip_bytes(&data);
        assert_eq!(
            decompress(Some("gzip"), &gz, 4096).expect("at limit").len(),
            4096
        );
        let err = decompress(Some("gzip"), &gz, 4095).expect_err("over limit");
        assert!(matches!(err, OtlpError::Decompress(_)));
        assert_eq!(
            err.to_string(),
            "Unable to decompress OTLP traces payload: decompressed body exceeds 4095 bytes"
        );
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        zlib.write_all(&data).expect("write");
        let zlib = zlib.finish().expect("finish");
        assert!(decompress(Some("deflate"), &zlib, 100).is_err());
        // The public limit is what decode_traces applies.
        let message = OtlpError::Decompress(format!(
            "decompressed body exceeds {MAX_DECOMPRESSED_BYTES} bytes"
        ))
        .to_string();
        assert!(message.ends_with("exceeds 67108864 bytes"));
    }

    #[test]
    fn status_body_is_a_google_rpc_status() {
        let message = "Unsupported Content-Type 'text/plain', expected 'application/x-protobuf'";
        let bytes = status_body(message);
        let status = RpcStatus::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(status.message, message);
        assert_eq!(status.code, 0);
        assert!(status.details.is_empty());
        // Field 2, length-delimited, then the UTF-8 text: what Python's Status(message=m) emits.
        assert_eq!(bytes[0], 0x12);
        assert_eq!(usize::from(bytes[1]), message.len());
        assert_eq!(&bytes[2..], message.as_bytes());
        assert!(status_body("").is_empty());
    }

    #[test]
    fn success_body_encodings() {
        let (plain, encoding) = success_body(None);
        assert!(plain.is_empty());
        assert_eq!(encoding, None);
        for header in [
            "gzip",
            "GZip",
            "deflate, gzip;q=0.5",
            "br;q=1.0, gzip ; q=1",
            "x-gzip",
        ] {
            let (body, encoding) = success_body(Some(header));
            assert_eq!(encoding, Some("gzip"), "{header}");
            assert!(!body.is_empty());
            let decoded =
                ExportTraceServiceResponse::decode(gunzip(&body).as_slice()).expect("response");
            assert_eq!(decoded, ExportTraceServiceResponse::default());
        }
        for header in [
            "",
            "identity",
            "br, deflate",
            "gzip;q=0",
            "gzip; q=0.000",
            "gzipx",
            "*",
        ] {
            let (body, encoding) = success_body(Some(header));
            assert_eq!(encoding, None, "{header}");
            assert!(body.is_empty(), "{header}");
        }
    }

    #[test]
    fn python_float_repr_matches_python() {
        let cases = [
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1234.5, "1234.5"),
            (1e-4, "0.0001"),
            (1.5e-5, "1.5e-05"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.2345678901234568e17, "1.2345678901234568e+17"),
            (1e22, "1e+22"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (123_456_789.123_456_78, "123456789.12345678"),
            (f64::INFINITY, "inf"),
            (f64::NEG_INFINITY, "-inf"),
        ];
        for (value, expected) in cases {
            assert_eq!(python_float_repr(value), expected, "{value:e}");
        }
    }

    #[test]
    fn python_repr_of_strings() {
        assert_eq!(python_str_repr("a"), "'a'");
        assert_eq!(python_str_repr("it's"), "\"it's\"");
        assert_eq!(python_str_repr("both ' \""), "'both \\' \"'");
        assert_eq!(python_str_repr("tab\tnl\n\\"), "'tab\\tnl\\n\\\\'");
        assert_eq!(
            python_str_repr("\x01\u{7f}\u{a0}\u{200b}é"),
            "'\\x01\\x7f\\xa0\\u200bé'"
        );
    }

    #[test]
    fn python_int_parsing() {
        assert_eq!(parse_python_int("12"), Some(12));
        assert_eq!(parse_python_int("\t-12 "), Some(-12));
        assert_eq!(parse_python_int("1_2_3"), Some(123));
        assert_eq!(parse_python_int("+0"), Some(0));
        assert_eq!(parse_python_int("0x10"), None);
        assert_eq!(parse_python_int("1e3"), None);
        assert_eq!(parse_python_int("--1"), None);
        assert_eq!(parse_python_int("+"), None);
        assert_eq!(parse_python_int("1_"), None);
        assert_eq!(parse_python_int("１"), None);
    }
}
