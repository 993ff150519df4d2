//! A finished rollout's spans as one row (`span_packs`), written when the rollout leaves
//! memory: reading them back is then one row, not one scattered page per span. The spans'
//! own rows stay the authority; a pack is dropped as soon as a span is added to its
//! rollout, and a rollout without a pack is read span by span.
//!
//! Layout: the spans in sequence order (arrival order among equal sequence ids), each as
//! its sequence id (i64, little-endian), its attempt id and its document (each a u32
//! little-endian length and UTF-8 bytes).

use std::sync::Arc;

use crate::model::StoredSpan;

/// The pack of a rollout's spans (given in arrival order).
pub(super) fn encode(spans: &[Arc<StoredSpan>]) -> Vec<u8> {
    let mut order: Vec<&Arc<StoredSpan>> = spans.iter().collect();
    // Stable: equal sequence ids keep their arrival order.
    order.sort_by_key(|s| s.sequence_id());
    let mut out = Vec::with_capacity(spans.iter().map(|s| s.json_len() + 32).sum());
    for span in order {
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

/// The documents of a pack's spans, of one attempt if given, in sequence order (descending
/// keeps arrival order among equal sequence ids, as the query of the rows does).
pub(super) fn texts(
    spans: &[Packed<'_>],
    attempt_id: Option<&str>,
    descending: bool,
) -> Vec<String> {
    let mut chosen: Vec<&Packed<'_>> = spans
        .iter()
        .filter(|s| attempt_id.is_none_or(|a| s.attempt_id == a))
        .collect();
    if descending {
        chosen.sort_by_key(|s| std::cmp::Reverse(s.sequence_id));
    }
    chosen.into_iter().map(|s| s.doc.to_owned()).collect()
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
    fn a_pack_reads_back_in_the_order_the_rows_query_gives() {
        // Arrival order: seq 2 (a), 1 (b), 2 (c), 1 (d, other attempt).
        let spans = [
            span("at-1", "a", 2),
            span("at-1", "b", 1),
            span("at-1", "c", 2),
            span("at-2", "d", 1),
        ];
        let bytes = encode(&spans);
        let packed = decode(&bytes).unwrap();
        let ids = |texts: Vec<String>| -> Vec<String> {
            texts
                .iter()
                .map(|t| {
                    let v: serde_json::Value = serde_json::from_str(t).unwrap();
                    v["span_id"].as_str().unwrap().to_owned()
                })
                .collect()
        };
        // ORDER BY sequence_id, arrival.
        assert_eq!(ids(texts(&packed, None, false)), ["b", "d", "a", "c"]);
        // ORDER BY sequence_id DESC, arrival.
        assert_eq!(ids(texts(&packed, None, true)), ["a", "c", "b", "d"]);
        assert_eq!(ids(texts(&packed, Some("at-2"), false)), ["d"]);
        // The documents are the rows' documents, byte for byte.
        assert_eq!(texts(&packed, Some("at-2"), false)[0], spans[3].to_json());
        assert!(
            decode(&bytes[..bytes.len() - 1]).is_none(),
            "a cut pack is refused"
        );
    }
}
