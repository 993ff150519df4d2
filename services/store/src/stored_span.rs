//! The in-memory form of a stored span: its JSON document as one string, with the fields
//! queries filter, sort and deduplicate on kept as offsets into that string instead of as
//! copies. A span costs one allocation for its text and one for this header.
//!
//! The text leaves out the digits of `sequence_id`: OTLP spans get their id under the
//! store's lock, after their document was written outside it, and putting the digits back
//! while a document is copied out costs less than rewriting it under the lock.

use std::borrow::Cow;
use std::io::Write as _;
use std::sync::Arc;

use serde::Serialize;

use crate::json::Entries;
use crate::model::Page;

/// The indexed string fields, by position in the header's slots.
const FIELDS: [&str; 5] = ["attempt_id", "trace_id", "span_id", "parent_id", "name"];
const ATTEMPT_ID: usize = 0;
const TRACE_ID: usize = 1;
const SPAN_ID: usize = 2;
const PARENT_ID: usize = 3;
const NAME: usize = 4;

/// Where a string field's contents (between its quotes) lie in the text. Offsets are `u32`
/// to keep the header small; [`SpanWriter::finish`] refuses documents beyond 4 GiB.
#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    start: u32,
    len: u32,
}

/// A stored span: the fields queries filter and sort on, and the whole document.
#[derive(Debug)]
pub struct StoredSpan {
    /// The document without the digits of its sequence id, which belong at `seq_at`.
    text: Box<str>,
    sequence_id: i64,
    /// `NaN` when absent: a JSON number is never `NaN`.
    start_time: f64,
    end_time: f64,
    seq_at: u32,
    slots: [Slot; 5],
    /// Bit `i`: field `i` is a string in the document.
    present: u8,
    /// Bit `i`: field `i`'s string has escapes, so it is decoded when read.
    escaped: u8,
}

/// Why a document cannot become a [`StoredSpan`].
#[derive(Debug, thiserror::Error)]
pub enum SpanDocError {
    /// Not an object with an integer `sequence_id`.
    #[error("a span document must be a JSON object with an integer sequence_id")]
    Shape,
    /// Offsets into the text are 32-bit.
    #[error("a span document may not exceed 4 GiB")]
    TooLarge,
    /// Not JSON at all.
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

fn time_or_nan(t: Option<f64>) -> f64 {
    t.unwrap_or(f64::NAN)
}

fn nan_is_none(t: f64) -> Option<f64> {
    (!t.is_nan()).then_some(t)
}

/// Decimal digits (and sign) of `n`, as serde_json writes it.
fn decimal_len(n: i64) -> usize {
    let digits = n
        .unsigned_abs()
        .checked_ilog10()
        .map_or(1, |l| l as usize + 1);
    digits + usize::from(n < 0)
}

/// Serializes into memory; the types written here have no way to fail.
fn put<T: Serialize + ?Sized>(buf: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *buf, value)
        .expect("serializing strings, numbers and JSON values into memory cannot fail");
}

impl StoredSpan {
    /// The span's sequence id in its rollout.
    pub fn sequence_id(&self) -> i64 {
        self.sequence_id
    }

    /// Sets the sequence id (the document follows: its digits are not in the text).
    pub(crate) fn set_sequence_id(&mut self, sequence_id: i64) {
        self.sequence_id = sequence_id;
    }

    fn field(&self, i: usize) -> Option<Cow<'_, str>> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let Slot { start, len } = self.slots[i];
        let (start, len) = (start as usize, len as usize);
        let raw = &self.text[start..start + len];
        if self.escaped & (1 << i) == 0 {
            return Some(Cow::Borrowed(raw));
        }
        // Rare (ids and names seldom hold quotes, backslashes or control characters), so
        // decoding on each read beats keeping a second copy for every span.
        let token = &self.text[start - 1..start + len + 1];
        Some(Cow::Owned(
            serde_json::from_str(token).unwrap_or_else(|_| raw.to_owned()),
        ))
    }

    /// `attempt_id` (empty when the document has none).
    pub fn attempt_id(&self) -> Cow<'_, str> {
        self.field(ATTEMPT_ID).unwrap_or_default()
    }

    /// `trace_id` (empty when the document has none).
    pub fn trace_id(&self) -> Cow<'_, str> {
        self.field(TRACE_ID).unwrap_or_default()
    }

    /// `span_id` (empty when the document has none).
    pub fn span_id(&self) -> Cow<'_, str> {
        self.field(SPAN_ID).unwrap_or_default()
    }

    /// `parent_id`, `None` when null.
    pub fn parent_id(&self) -> Option<Cow<'_, str>> {
        self.field(PARENT_ID)
    }

    /// `name` (empty when the document has none).
    pub fn name(&self) -> Cow<'_, str> {
        self.field(NAME).unwrap_or_default()
    }

    /// `start_time` in seconds.
    pub fn start_time(&self) -> Option<f64> {
        nan_is_none(self.start_time)
    }

    /// `end_time` in seconds.
    pub fn end_time(&self) -> Option<f64> {
        nan_is_none(self.end_time)
    }

    /// Bytes of the JSON document.
    pub fn json_len(&self) -> usize {
        self.text.len() + decimal_len(self.sequence_id)
    }

    /// Appends the JSON document to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        let (head, tail) = self.text.split_at(self.seq_at as usize);
        out.extend_from_slice(head.as_bytes());
        put(out, &self.sequence_id);
        out.extend_from_slice(tail.as_bytes());
    }

    /// The JSON document.
    pub fn to_json(&self) -> String {
        let mut out = Vec::with_capacity(self.json_len());
        self.write_json(&mut out);
        String::from_utf8(out).expect("the text and the digits are UTF-8")
    }

    /// Reads a document back (the SQLite backend's copy), keeping its text as it is.
    pub fn from_json(json: &str) -> Result<Self, SpanDocError> {
        let Entries(entries) = serde_json::from_str(json)?;
        let mut writer = SpanWriter::with_capacity(json.len());
        let (mut sequence_id, mut start_time, mut end_time) = (None, None, None);
        for (key, raw) in entries {
            let raw = raw.get();
            match key.as_ref() {
                "sequence_id" => {
                    sequence_id = Some(raw.parse::<i64>().map_err(|_| SpanDocError::Shape)?);
                    writer.sequence_id();
                    continue;
                }
                // Rust parses the shortest round-trip digits back into the very same f64.
                "start_time" => start_time = raw.parse::<f64>().ok(),
                "end_time" => end_time = raw.parse::<f64>().ok(),
                _ => {}
            }
            writer.raw_field(&key, raw);
        }
        writer.finish(
            sequence_id.ok_or(SpanDocError::Shape)?,
            start_time,
            end_time,
        )
    }
}

/// Writes a span document one top-level field at a time, in compact JSON exactly as
/// serde_json writes a map, and notes where the indexed fields lie.
#[derive(Debug)]
pub struct SpanWriter {
    buf: Vec<u8>,
    seq_at: Option<usize>,
    slots: [(usize, usize); 5],
    present: u8,
    escaped: u8,
}

impl SpanWriter {
    /// An empty document with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity.max(2));
        buf.push(b'{');
        Self {
            buf,
            seq_at: None,
            slots: [(0, 0); 5],
            present: 0,
            escaped: 0,
        }
    }

    fn key(&mut self, key: &str) {
        if self.buf.len() > 1 {
            self.buf.push(b',');
        }
        put(&mut self.buf, key);
        self.buf.push(b':');
    }

    /// Writes `"key":value`.
    pub fn field<T: Serialize + ?Sized>(&mut self, key: &str, value: &T) {
        self.key(key);
        let start = self.buf.len();
        put(&mut self.buf, value);
        self.note(key, start);
    }

    /// Writes `"key":` followed by `json`, which must be one valid JSON value.
    pub fn raw_field(&mut self, key: &str, json: &str) {
        self.key(key);
        let start = self.buf.len();
        self.buf.extend_from_slice(json.as_bytes());
        self.note(key, start);
    }

    /// Writes the `sequence_id` key; its value is the id given to [`Self::finish`].
    pub fn sequence_id(&mut self) {
        self.key("sequence_id");
        self.seq_at = Some(self.buf.len());
    }

    fn note(&mut self, key: &str, start: usize) {
        let Some(i) = FIELDS.iter().position(|f| *f == key) else {
            return;
        };
        let token = &self.buf[start..];
        if token.len() >= 2 && token[0] == b'"' {
            let contents = &token[1..token.len() - 1];
            self.slots[i] = (start + 1, contents.len());
            self.present |= 1 << i;
            if contents.contains(&b'\\') {
                self.escaped |= 1 << i;
            } else {
                self.escaped &= !(1 << i);
            }
        } else {
            self.present &= !(1 << i);
        }
    }

    /// The finished span.
    pub fn finish(
        mut self,
        sequence_id: i64,
        start_time: Option<f64>,
        end_time: Option<f64>,
    ) -> Result<StoredSpan, SpanDocError> {
        self.buf.push(b'}');
        let seq_at = self.seq_at.ok_or(SpanDocError::Shape)?;
        let narrow = |n: usize| u32::try_from(n).map_err(|_| SpanDocError::TooLarge);
        narrow(self.buf.len())?;
        let mut slots = [Slot::default(); 5];
        for (slot, &(start, len)) in slots.iter_mut().zip(&self.slots) {
            *slot = Slot {
                start: narrow(start)?,
                len: narrow(len)?,
            };
        }
        let text = String::from_utf8(self.buf).expect("serde_json and &str write UTF-8");
        Ok(StoredSpan {
            text: text.into_boxed_str(),
            sequence_id,
            start_time: time_or_nan(start_time),
            end_time: time_or_nan(end_time),
            seq_at: narrow(seq_at)?,
            slots,
            present: self.present,
            escaped: self.escaped,
        })
    }
}

/// A span as a query returns it: a document held in memory, or the text of one read back
/// from storage as it was stored (written out as it is, without being parsed).
#[derive(Debug, Clone)]
pub enum SpanDoc {
    Held(Arc<StoredSpan>),
    Text(String),
}

impl SpanDoc {
    /// Bytes of the JSON document.
    pub fn json_len(&self) -> usize {
        match self {
            Self::Held(span) => span.json_len(),
            Self::Text(text) => text.len(),
        }
    }

    /// Appends the JSON document to `out`.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Self::Held(span) => span.write_json(out),
            Self::Text(text) => out.extend_from_slice(text.as_bytes()),
        }
    }
}

/// Writes `[doc,doc,...]`.
fn write_list(spans: &[SpanDoc], out: &mut Vec<u8>) {
    out.push(b'[');
    for (i, span) in spans.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        span.write_json(out);
    }
    out.push(b']');
}

/// Room for a list of spans and their commas.
fn list_capacity(spans: &[SpanDoc]) -> usize {
    spans.iter().map(|s| s.json_len() + 1).sum::<usize>() + 2
}

/// A list of spans as a JSON array.
pub fn spans_json(spans: &[SpanDoc]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list_capacity(spans));
    write_list(spans, &mut out);
    out
}

impl Page<SpanDoc> {
    /// The page as JSON, byte for byte what `Page`'s `Serialize` writes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(list_capacity(&self.items) + 80);
        out.extend_from_slice(b"{\"items\":");
        write_list(&self.items, &mut out);
        write!(
            out,
            ",\"limit\":{},\"offset\":{},\"total\":{}}}",
            self.limit, self.offset, self.total
        )
        .expect("writing into memory cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use serde_json::{Value, json};

    fn span_from(doc: &Value) -> StoredSpan {
        StoredSpan::from_json(&doc.to_string()).expect("a span document")
    }

    #[test]
    fn fields_are_read_from_the_text() {
        let doc = json!({
            "rollout_id": "ro-1", "attempt_id": "at-1", "sequence_id": 42,
            "trace_id": "ab", "span_id": "cd", "parent_id": null,
            "name": "say \"hi\"\n", "start_time": 1.5, "end_time": null, "extra": [1, 2]
        });
        let span = span_from(&doc);
        assert_eq!(span.sequence_id(), 42);
        assert_eq!(span.attempt_id(), "at-1");
        assert_eq!(span.trace_id(), "ab");
        assert_eq!(span.span_id(), "cd");
        assert_eq!(span.parent_id(), None);
        assert_eq!(span.name(), "say \"hi\"\n");
        assert_eq!(span.start_time(), Some(1.5));
        assert_eq!(span.end_time(), None);
        assert_eq!(span.to_json(), doc.to_string());
        assert_eq!(span.json_len(), doc.to_string().len());
    }

    #[test]
    fn sequence_id_is_spliced_into_the_text() {
        let mut span = span_from(&json!({"attempt_id": "a", "sequence_id": 0, "span_id": "s"}));
        for id in [0, 7, -3, 12_345, i64::MAX, i64::MIN] {
            span.set_sequence_id(id);
            let text = span.to_json();
            assert_eq!(
                text,
                json!({"attempt_id": "a", "sequence_id": id, "span_id": "s"}).to_string()
            );
            assert_eq!(span.json_len(), text.len());
            assert_eq!(span.span_id(), "s");
        }
    }

    #[test]
    fn read_back_keeps_the_text_verbatim() {
        // Escaped keys, unicode, duplicate keys and numbers serde_json would rewrite.
        let text = r#"{"rollout_id":"r","attempt_id":"a\u0041","sequence_id":3,"trace_id":"t","span_id":"s","parent_id":"p\"","name":"é","k\"ey":1.0000000000000002,"x":1,"x":2e5}"#;
        let span = StoredSpan::from_json(text).unwrap();
        assert_eq!(span.to_json(), text);
        assert_eq!(span.attempt_id(), "aA");
        assert_eq!(span.parent_id().as_deref(), Some("p\""));
        assert_eq!(span.name(), "é");
    }

    #[test]
    fn rejects_documents_without_integer_sequence_id() {
        for bad in [r#"{"a":1}"#, r#"{"sequence_id":1.5}"#, "[1]", "nope"] {
            assert!(StoredSpan::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn page_and_list_match_serde() {
        let docs = [
            json!({"sequence_id": 1, "name": "a"}),
            json!({"sequence_id": 2, "name": "b", "attributes": {"x": [1, 2]}}),
        ];
        // Held documents and texts read back write the same bytes.
        let spans: Vec<SpanDoc> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let span = span_from(d);
                if i % 2 == 0 {
                    SpanDoc::Held(Arc::new(span))
                } else {
                    SpanDoc::Text(span.to_json())
                }
            })
            .collect();
        let raws: Vec<Box<RawValue>> = docs
            .iter()
            .map(|d| RawValue::from_string(d.to_string()).unwrap())
            .collect();
        for (limit, offset) in [(-1, 0), (10, 5)] {
            let page = Page {
                items: spans.clone(),
                limit,
                offset,
                total: 2,
            };
            let expected = Page {
                items: raws.clone(),
                limit,
                offset,
                total: 2,
            };
            assert_eq!(
                page.to_json(),
                serde_json::to_vec(&expected).unwrap(),
                "limit {limit}"
            );
        }
        assert_eq!(spans_json(&spans), serde_json::to_vec(&raws).unwrap());
        assert_eq!(spans_json(&[]), b"[]");
    }
}
