//! One trace's page: what it is, its spans as a waterfall, the console output the SDK
//! uploaded under it, and the resources that exported it.

use std::sync::Arc;

use agl_common::ui::maud::{Markup, html};
use agl_common::ui::waterfall::{WfSpan, detail_panel, waterfall};
use agl_common::ui::{self, format};
use serde_json::Value as Json;

use super::{duration_cell, span_of_time};
use crate::retention::{StoredSpan, Upload};

/// The most of one log's text a page shows; the rest is a link away.
const LOG_PREVIEW_BYTES: usize = 64 * 1024;

/// The first root span's name, else the first span's.
pub(super) fn name(spans: &[Arc<StoredSpan>]) -> &str {
    spans
        .iter()
        .find(|s| s.parent_span_id.is_none())
        .or_else(|| spans.first())
        .map_or("", |s| s.name.as_str())
}

/// A span as the waterfall draws it; `llm` and `error` as [`StoredSpan::is_llm`] and
/// [`StoredSpan::is_error`] say (worked out once per span by the caller).
fn wf_span(trace_id: &str, s: &StoredSpan, llm: bool, error: bool) -> WfSpan {
    let kind = if error {
        Some("error")
    } else if llm {
        Some("llm")
    } else {
        None
    };
    let mut detail = String::with_capacity(30 + trace_id.len() + s.span_id.len());
    detail.push_str("/ui/traces/");
    detail.push_str(trace_id);
    detail.push_str("/spans/");
    detail.push_str(&s.span_id);
    WfSpan {
        span_id: s.span_id.clone(),
        parent_id: s.parent_span_id.clone(),
        name: s.name.clone(),
        start: s.start_time,
        end: s.end_time,
        kind,
        note: note(s, llm),
        detail,
    }
}

/// A model call's model and tokens, else the AgentOps kind (`agent`, `tool`, …).
fn note(s: &StoredSpan, llm: bool) -> Option<String> {
    let attr = |k: &str| s.attributes.get(k);
    if llm {
        let model = attr("gen_ai.response.model")
            .or_else(|| attr("gen_ai.request.model"))
            .and_then(Json::as_str);
        let tokens = attr("gen_ai.usage.total_tokens")
            .and_then(Json::as_i64)
            .or_else(|| {
                let p = attr("gen_ai.usage.prompt_tokens").and_then(Json::as_i64);
                let c = attr("gen_ai.usage.completion_tokens").and_then(Json::as_i64);
                (p.is_some() || c.is_some()).then(|| p.unwrap_or(0) + c.unwrap_or(0))
            });
        return match (model, tokens) {
            (Some(m), Some(t)) => Some(format!("{m} · {t} tok")),
            (Some(m), None) => Some(m.to_owned()),
            (None, Some(t)) => Some(format!("{t} tok")),
            (None, None) => None,
        };
    }
    attr("agentops.span.kind")
        .and_then(Json::as_str)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
}

pub(super) fn page(trace_id: &str, spans: &[Arc<StoredSpan>], logs: &[Arc<Upload>]) -> Markup {
    let first = spans.iter().filter_map(|s| s.start_time).reduce(f64::min);
    let last = spans.iter().filter_map(|s| s.end_time).reduce(f64::max);
    let (mut llm_calls, mut errors) = (0, 0);
    let wf: Vec<WfSpan> = spans
        .iter()
        .map(|s| {
            let (llm, error) = (s.is_llm(), s.is_error());
            llm_calls += usize::from(llm);
            errors += usize::from(error);
            wf_span(trace_id, s, llm, error)
        })
        .collect();
    let root = spans.iter().find(|s| s.parent_span_id.is_none());
    let tags = root.and_then(|r| r.attributes.get("agentops.tags"));
    let end_state = root
        .and_then(|r| r.attributes.get("agentops.session.end_state"))
        .and_then(Json::as_str);
    html! {
        section #trace-head .panel {
            h1 { (name(spans)) }
            dl.kv {
                dt { "Trace id" } dd { code #trace-id { (trace_id) } }
                dt { "Started" } dd { (ui::time(first)) }
                dt { "Duration" } dd { (duration_cell(span_of_time(first, last))) }
                dt { "Spans" } dd #span-count { (spans.len()) }
                dt { "LLM calls" } dd { (llm_calls) }
                dt { "Errors" } dd { (errors) }
                @if let Some(state) = end_state {
                    dt { "End state" } dd { (ui::badge(&state.to_ascii_lowercase())) }
                }
                @if let Some(tags) = tags {
                    dt { "Tags" } dd.tags { (value_inline(tags)) }
                }
                dt { "JSON" } dd {
                    a href={ "/_agl/traces/" (trace_id) } { "/_agl/traces/" (trace_id) }
                    span.muted { " (admin key)" }
                }
            }
        }
        section.panel {
            h2 { "Spans" }
            div.waterfall-wrap {
                (waterfall(&wf, None))
                (detail_panel())
            }
        }
        section #logs .panel {
            h2 { "Logs" }
            @if logs.is_empty() {
                p.muted { "No console output was uploaded under this trace (the SDK uploads it \
                           when the trace's first root span ends)." }
            }
            @for log in logs {
                (log_entry(log))
            }
        }
        (resources(spans))
    }
}

fn log_entry(log: &Upload) -> Markup {
    let (text, cut) = preview(&log.text, LOG_PREVIEW_BYTES);
    html! {
        div.log data-log-id=(log.id) {
            div.muted {
                code { (log.id) } " · " (format::bytes(log.size as u64)) " · "
                (ui::time(Some(log.received_at)))
            }
            pre.mono { (text) }
            @if cut {
                p.muted.truncated {
                    "Showing the first " (format::bytes(text.len() as u64)) " of "
                    (format::bytes(log.size as u64)) "; the whole text is at "
                    a href={ "/_agl/logs/" (log.id) } { "/_agl/logs/" (log.id) }
                    " (admin key)."
                }
            }
        }
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary, and whether it was cut.
fn preview(text: &str, limit: usize) -> (&str, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (&text[..end], true)
}

/// Each distinct resource of the trace's spans (usually one) with its scope names.
fn resources(spans: &[Arc<StoredSpan>]) -> Markup {
    let mut seen: Vec<&Arc<serde_json::Map<String, Json>>> = Vec::new();
    for s in spans {
        if !seen
            .iter()
            .any(|r| Arc::ptr_eq(r, &s.resource) || ***r == *s.resource)
        {
            seen.push(&s.resource);
        }
    }
    html! {
        section #resource .panel {
            h2 { "Resource" }
            @for resource in seen {
                @if resource.is_empty() {
                    p.muted { "No resource attributes." }
                } @else {
                    table.attrs {
                        @for (k, v) in resource.iter() {
                            tr { td { (k) } td { (value_inline(v)) } }
                        }
                    }
                }
            }
        }
    }
}

/// A value on one line: strings as they are, anything else as JSON.
pub(super) fn value_inline(v: &Json) -> Markup {
    match v {
        Json::String(s) => html! { (s) },
        other => html! { code { (other.to_string()) } },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn previews_cut_at_a_character_boundary() {
        assert_eq!(preview("abc", 3), ("abc", false));
        assert_eq!(preview("aé", 2), ("a", true));
        assert_eq!(preview("ééé", 4), ("éé", true));
    }
}
