//! A finished rollout's spans as one row (`span_packs`), written when the rollout leaves
//! memory in place of its span rows: reading them back is then one row, not one scattered
//! page per span, and history on disk does not hold them twice. A span added to the rollout
//! later is a row again; a rollout's spans are its pack's (arrived first) followed by its
//! rows in arrival order.
//!
//! Layout: the spans in arrival order, each as its sequence id (i64, little-endian), its
//! attempt id and its document (each a u32 little-endian length and UTF-8 bytes).

use std::sync::Arc;

use crate::model::StoredSpan;

/// The pack of a rollout's spans (given in arrival order).
pub(super) fn encode(spans: &[Arc<StoredSpan>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(spans.iter().map(|s| s.json_len() + 32).sum());
    for span in spans {
        out.extend_from_slice(&span.sequence_id().to_le_bytes());
        put(&mut out, span.attempt_id().as_bytes());
        put(&mut out, span.to_json().as_bytes());
    }
    out
}

fn put(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("a span is far smaller than 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// One span of a pack.
pub(super) struct Packed<'a> {
    pub(super) sequence_id: i64,
    pub(super) attempt_id: &'a str,
    pub(super) doc: &'a str,
}

/// The spans of a pack, in its order; `None` for bytes that are not a pack.
pub(super) fn decode(mut bytes: &[u8]) -> Option<Vec<Packed<'_>>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (seq, rest) = bytes.split_at_checked(8)?;
        let sequence_id = i64::from_le_bytes(seq.try_into().ok()?);
        let (attempt_id, rest) = take(rest)?;
        let (doc, rest) = take(rest)?;
        out.push(Packed {
            sequence_id,
            attempt_id,
            doc,
        });
        bytes = rest;
    }
    Some(out)
}

fn take(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_at_checked(4)?;
    let len = usize::try_from(u32::from_le_bytes(len.try_into().ok()?)).ok()?;
    let (text, rest) = rest.split_at_checked(len)?;
    Some((std::str::from_utf8(text).ok()?, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(attempt: &str, id: &str, seq: i64) -> Arc<StoredSpan> {
        let json = format!(
            r#"{{"rollout_id":"ro-1","attempt_id":"{attempt}","sequence_id":{seq},"trace_id":"t","span_id":"{id}","parent_id":null,"name":"n","status":{{"status_code":"OK"}},"attributes":{{}},"events":[],"links":[],"start_time":1.0,"end_time":2.0,"context":null,"parent":null,"resource":{{"attributes":{{}},"schema_url":""}}}}"#
        );
        Arc::new(StoredSpan::from_json(&json).unwrap())
    }

    #[test]
    fn a_pack_reads_back_the_spans_as_they_were_written() {
        let spans = [
            span("at-1", "a", 2),
            span("at-1", "b", 1),
            span("at-2", "d", 1),
        ];
        let bytes = encode(&spans);
        let packed = decode(&bytes).unwrap();
        assert_eq!(packed.len(), 3);
        for (p, s) in packed.iter().zip(&spans) {
            assert_eq!(p.sequence_id, s.sequence_id());
            assert_eq!(p.attempt_id, s.attempt_id());
            // The documents are the rows' documents, byte for byte.
            assert_eq!(p.doc, s.to_json());
        }
        assert!(
            decode(&bytes[..bytes.len() - 1]).is_none(),
            "a cut pack is refused"
        );
        assert_eq!(decode(&[]).unwrap().len(), 0);
    }
}
