//! A span's details, as the fragment the waterfall loads into its side panel: a model
//! call's prompt and completion first (AgentOps 0.4's and OpenLLMetry's flattened
//! `gen_ai.prompt.{i}.*` / `gen_ai.completion.{i}.*` attributes), then every attribute,
//! the events and the links.

use std::collections::BTreeMap;

use agl_common::ui::maud::{Markup, html};
use agl_common::ui::{self, format};
use serde_json::{Map, Value as Json};

use super::span_of_time;
use super::trace::value_inline;
use crate::retention::StoredSpan;

/// One message of a prompt or completion.
#[derive(Default)]
struct Message<'a> {
    role: Option<&'a str>,
    content: Option<&'a Json>,
    /// `finish_reason`, tool calls and whatever else the message carried.
    extra: Vec<(&'a str, &'a Json)>,
}

/// The messages under `prefix` (`gen_ai.prompt` or `gen_ai.completion`), by index.
fn messages<'a>(attributes: &'a Map<String, Json>, prefix: &str) -> Vec<Message<'a>> {
    let mut by_index: BTreeMap<u64, Message<'a>> = BTreeMap::new();
    for (key, value) in attributes {
        let Some(rest) = key.strip_prefix(prefix).and_then(|r| r.strip_prefix('.')) else {
            continue;
        };
        let Some((index, field)) = rest.split_once('.') else {
            continue;
        };
        let Ok(index) = index.parse::<u64>() else {
            continue;
        };
        let message = by_index.entry(index).or_default();
        match field {
            "role" => message.role = value.as_str(),
            "content" => message.content = Some(value),
            _ => message.extra.push((field, value)),
        }
    }
    by_index.into_values().collect()
}

fn message(m: &Message<'_>) -> Markup {
    html! {
        div.llm-msg {
            span.role { (m.role.unwrap_or("—")) }
            @match m.content {
                Some(Json::String(text)) => { (text) }
                Some(other) => { code { (other.to_string()) } }
                None => {}
            }
            @for (field, value) in &m.extra {
                div.muted { (field) ": " (value_inline(value)) }
            }
        }
    }
}

/// Model, tokens, prompt and completion of a model call; nothing for other spans.
fn llm_call(s: &StoredSpan) -> Option<Markup> {
    let attr = |k: &str| s.attributes.get(k);
    let prompt = messages(&s.attributes, "gen_ai.prompt");
    let completion = messages(&s.attributes, "gen_ai.completion");
    if !s.is_llm() && prompt.is_empty() && completion.is_empty() {
        return None;
    }
    let model = attr("gen_ai.response.model").or_else(|| attr("gen_ai.request.model"));
    let usage = [
        ("prompt", "gen_ai.usage.prompt_tokens"),
        ("completion", "gen_ai.usage.completion_tokens"),
        ("total", "gen_ai.usage.total_tokens"),
    ];
    Some(html! {
        div.llm-call {
            div.llm-head {
                @if let Some(system) = attr("gen_ai.system") {
                    span { (value_inline(system)) }
                }
                @if let Some(model) = model {
                    span.model { "model " strong { (value_inline(model)) } }
                }
                @for (label, key) in usage {
                    @if let Some(n) = attr(key) {
                        span.tokens { (label) " tokens " strong { (value_inline(n)) } }
                    }
                }
            }
            div.llm-prompt {
                @if prompt.is_empty() { p.muted { "No prompt recorded." } }
                @for m in &prompt { (message(m)) }
            }
            div.llm-completion {
                @if completion.is_empty() { p.muted { "No completion recorded." } }
                @for m in &completion { (message(m)) }
            }
        }
    })
}

/// An attribute's value in the table: strings as they are (pretty-printed when they hold
/// a JSON object or list, as AgentOps' `agentops.*.input/output` do), the rest as JSON.
fn value_cell(v: &Json) -> Markup {
    match v {
        Json::String(s) if s.starts_with(['{', '[']) && s.len() > 2 => {
            match serde_json::from_str::<Json>(s) {
                Ok(parsed @ (Json::Object(_) | Json::Array(_))) => ui::json_value(None, &parsed),
                _ => html! { (s) },
            }
        }
        Json::String(s) => html! { (s) },
        Json::Object(_) | Json::Array(_) => ui::json_value(None, v),
        other => html! { code { (other.to_string()) } },
    }
}

fn attributes_table(attributes: &Map<String, Json>) -> Markup {
    let mut keys: Vec<&String> = attributes.keys().collect();
    keys.sort();
    html! {
        @if attributes.is_empty() {
            p.muted { "No attributes." }
        } @else {
            table.attrs {
                @for key in keys {
                    tr data-key=(key) { td { (key) } td { (value_cell(&attributes[key.as_str()])) } }
                }
            }
        }
    }
}

/// The fragment: its root is `div.span-attrs`, which the script places in `#span-detail`.
pub(super) fn details(s: &StoredSpan) -> Markup {
    let status = s
        .status
        .get("code")
        .and_then(Json::as_str)
        .unwrap_or("UNSET");
    let message = s
        .status
        .get("message")
        .and_then(Json::as_str)
        .filter(|m| !m.is_empty());
    let scope = s
        .scope
        .get("name")
        .and_then(Json::as_str)
        .filter(|n| !n.is_empty());
    html! {
        div.span-attrs data-span-id=(s.span_id) {
            h3 { (s.name) }
            dl.kv {
                dt { "Span id" } dd { code { (s.span_id) } }
                dt { "Parent" } dd {
                    @match &s.parent_span_id {
                        Some(p) => code { (p) },
                        None => span.muted { "none (a root)" },
                    }
                }
                dt { "Kind" } dd {
                    (s.kind)
                    @if let Some(k) = s.attributes.get("agentops.span.kind").and_then(Json::as_str) {
                        " · " (k)
                    }
                }
                dt { "Status" } dd {
                    (ui::badge(&status.to_ascii_lowercase()))
                    @if let Some(m) = message { " " (m) }
                }
                dt { "Start" } dd { (ui::time(s.start_time)) }
                dt { "End" } dd { (ui::time(s.end_time)) }
                dt { "Duration" } dd {
                    @match span_of_time(s.start_time, s.end_time) {
                        Some(d) => (format::duration(d)),
                        None => span.muted { "—" },
                    }
                }
                @if let Some(scope) = scope {
                    dt { "Scope" } dd { (scope) }
                }
            }
            @if let Some(call) = llm_call(s) {
                h4 { "Model call" }
                (call)
            }
            h4 { "Attributes" }
            (attributes_table(&s.attributes))
            @if !s.events.is_empty() {
                h4 { "Events" }
                ul.events {
                    @for e in &s.events {
                        li {
                            strong { (e.get("name").and_then(Json::as_str).unwrap_or("")) }
                            " " (ui::time(e.get("time").and_then(Json::as_f64)))
                            @if let Some(Json::Object(a)) = e.get("attributes") {
                                @if !a.is_empty() { (attributes_table(a)) }
                            }
                        }
                    }
                }
            }
            @if !s.links.is_empty() {
                h4 { "Links" }
                (ui::json_value(None, &Json::Array(s.links.clone())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prompt_messages_come_in_index_order() {
        let attrs = json!({
            "gen_ai.prompt.10.role": "user",
            "gen_ai.prompt.10.content": "last",
            "gen_ai.prompt.0.role": "system",
            "gen_ai.prompt.0.content": "first",
            "gen_ai.prompt.2.role": "assistant",
            "gen_ai.prompt.2.tool_calls.0.name": "add",
            "gen_ai.promptx.0.role": "ignored",
            "gen_ai.completion.0.content": "answer",
        });
        let Json::Object(attrs) = attrs else {
            unreachable!()
        };
        let prompt = messages(&attrs, "gen_ai.prompt");
        let roles: Vec<_> = prompt.iter().map(|m| m.role.unwrap()).collect();
        assert_eq!(roles, ["system", "assistant", "user"]);
        assert_eq!(prompt[1].extra[0].0, "tool_calls.0.name");
        assert_eq!(messages(&attrs, "gen_ai.completion").len(), 1);
    }
}
