//! Randomized tests of the SSE reading: an event stream cut into pieces at arbitrary
//! points (a CRLF split between two reads included) yields the same events as read whole,
//! whatever mix of line ends, comments and other fields it holds; arbitrary bytes and
//! arbitrary event data are answered without panicking.
//!
//! Case counts scale with `AGL_FUZZ_SCALE` (see `agl_common::fuzzing`).

use agl_llm_proxy::sse::{Accumulator, EventParser};
use proptest::prelude::*;

fn config(default: u32) -> ProptestConfig {
    ProptestConfig {
        cases: agl_common::fuzzing::cases(default),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// One line of an event block.
#[derive(Debug, Clone)]
enum Line {
    Data(String),
    Comment(String),
    Other(String),
}

fn line() -> impl Strategy<Value = Line> {
    let text = "[^\r\n]{0,24}";
    prop_oneof![
        4 => text.prop_map(Line::Data),
        1 => text.prop_map(Line::Comment),
        1 => text.prop_map(Line::Other),
    ]
}

fn ending() -> impl Strategy<Value = &'static str> {
    prop_oneof![Just("\n"), Just("\r\n"), Just("\r")]
}

/// Blocks of lines, each line with its own line end; a block ends with an empty line.
fn stream() -> impl Strategy<Value = Vec<Vec<(Line, &'static str)>>> {
    proptest::collection::vec(proptest::collection::vec((line(), ending()), 1..5), 0..8)
}

/// The stream's bytes and the events in it. A block ends with a blank line, spelled with
/// its last line's end (a CR line end followed by an LF would be one CRLF, not a blank line).
fn render(blocks: &[Vec<(Line, &'static str)>]) -> (Vec<u8>, Vec<String>) {
    let mut bytes = Vec::new();
    let mut events = Vec::new();
    for block in blocks {
        let mut data: Option<String> = None;
        for (line, end) in block {
            match line {
                // One space after the colon is the separator; the value is kept as is.
                Line::Data(value) => {
                    bytes.extend_from_slice(format!("data: {value}").as_bytes());
                    data = Some(match data {
                        Some(d) => format!("{d}\n{value}"),
                        None => value.clone(),
                    });
                }
                Line::Comment(text) => bytes.extend_from_slice(format!(":{text}").as_bytes()),
                Line::Other(text) => bytes.extend_from_slice(format!("event: {text}").as_bytes()),
            }
            bytes.extend_from_slice(end.as_bytes());
        }
        let last_end = block.last().map_or("\n", |(_, end)| *end);
        bytes.extend_from_slice(last_end.as_bytes());
        events.extend(data);
    }
    (bytes, events)
}

fn read_in_pieces(bytes: &[u8], cuts: &[usize]) -> Vec<String> {
    let mut parser = EventParser::default();
    let mut events = Vec::new();
    let mut at = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    cuts.sort_unstable();
    for cut in cuts.into_iter().chain([bytes.len()]) {
        parser.feed(&bytes[at..cut], |e| events.push(e.to_owned()));
        at = cut;
    }
    parser.finish(|e| events.push(e.to_owned()));
    events
}

proptest! {
    #![proptest_config(config(3000))]

    #[test]
    fn a_stream_cut_anywhere_reads_as_a_whole(
        blocks in stream(),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
    ) {
        let (bytes, expected) = render(&blocks);
        prop_assert_eq!(&read_in_pieces(&bytes, &[]), &expected);
        prop_assert_eq!(read_in_pieces(&bytes, &cuts), expected);
    }

    #[test]
    fn arbitrary_bytes_are_read_without_panicking(
        bytes in proptest::collection::vec(any::<u8>(), 0..1024),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = read_in_pieces(&bytes, &[]);
        prop_assert_eq!(&read_in_pieces(&bytes, &cuts), &whole);
        let mut acc = Accumulator::default();
        for data in &whole {
            acc.push(data);
        }
        let _ = acc.finish();
    }

    /// Chunks as vLLM shapes them, with fields of the wrong types and values out of
    /// range: the accumulator answers with some response, never a panic.
    #[test]
    fn odd_chunks_are_folded_without_panicking(
        chunks in proptest::collection::vec(
            (
                prop_oneof![Just("0"), Just("1"), Just("-1"), Just("18446744073709551616"), Just("\"x\""), Just("null")],
                prop_oneof![Just("\"hi\""), Just("null"), Just("3"), Just("[1]"), Just("{}")],
                prop_oneof![Just("[1,2]"), Just("null"), Just("\"x\""), Just("[[1]]"), Just("{}")],
                prop_oneof![Just("\"stop\""), Just("null"), Just("7")],
            ),
            0..6,
        ),
        done in any::<bool>(),
    ) {
        let mut acc = Accumulator::default();
        for (index, content, ids, finish) in &chunks {
            acc.push(&format!(
                r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{{"index":{index},"delta":{{"content":{content},"tool_calls":[{{"index":{index},"function":{{"arguments":{content}}}}}]}},"token_ids":{ids},"finish_reason":{finish}}}],"prompt_token_ids":{ids},"usage":{content}}}"#
            ));
            acc.push(&format!(
                r#"{{"object":"text_completion","choices":[{{"index":{index},"text":{content},"token_ids":{ids}}}]}}"#
            ));
        }
        if done {
            acc.push("[DONE]");
        }
        let _ = acc.done();
        let _ = acc.finish();
    }
}
