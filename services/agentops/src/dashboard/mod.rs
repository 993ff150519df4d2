//! The dashboard: HTML pages over what the endpoint holds, rendered on the server with the
//! shared toolkit (`agl_common::ui`). The traces list (`/ui/traces`, where `GET /` leads,
//! refreshed live), one trace
//! as a waterfall with its uploaded logs (`/ui/traces/{id}`), and a span's details as a
//! fragment the waterfall's script loads into its side panel
//! (`/ui/traces/{id}/spans/{span_id}`). The SDK's "Session Replay" link lands on the trace
//! page. The pages show every agent's prompts and console output, as the inspection routes
//! do, so they are admin routes as those are: with an admin key set only it opens them
//! (a browser is asked for it: the key as the password). They show only what the
//! retention holds: nothing is computed
//! per span on the list, which reads the counts the retention keeps.
//!
//! * this file: the routes' handlers, the shell and the traces list;
//! * [`trace`]: the trace page;
//! * [`span`]: the span fragment, with its prompt → completion view.

mod span;
mod trace;

use agl_common::ui::maud::{Markup, html};
use agl_common::ui::{self, Shell, format};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Redirect, Response};
use serde::Deserialize;

use crate::api::AppState;
use crate::retention::{TraceSummary, UploadKind};

/// Every page's chrome.
const SHELL: Shell = Shell {
    service: "agl-agentops",
    nav: &[(TRACES, "Traces")],
};

/// Traces a list page shows unless asked for another number.
const PAGE: usize = 100;
/// The most a list page shows.
const MAX_PAGE: usize = 1000;

/// The traces list; `/` leads there. Under the admin prefix, as `/_agl/` is: the pages show
/// every agent's prompts, completions and console output.
const TRACES: &str = "/ui/traces";

/// `GET /`: the traces list (`POST /` is OTLP, so `/` itself cannot be an admin path).
pub async fn home() -> Redirect {
    Redirect::temporary(TRACES)
}

/// Where a trace's page is.
fn trace_href(trace_id: &str) -> String {
    format!("/ui/traces/{trace_id}")
}

/// What a trace is called: its root span's name, else its id.
fn trace_name(t: &TraceSummary) -> &str {
    t.root_span_name.as_deref().unwrap_or(&t.trace_id)
}

/// `last - first`, when both are known.
fn span_of_time(first: Option<f64>, last: Option<f64>) -> Option<f64> {
    match (first, last) {
        (Some(a), Some(b)) if b >= a => Some(b - a),
        _ => None,
    }
}

fn duration_cell(seconds: Option<f64>) -> Markup {
    match seconds {
        Some(s) => html! { (format::duration(s)) },
        None => html! { span.muted { "—" } },
    }
}

#[derive(Deserialize)]
pub struct ListQuery {
    offset: Option<usize>,
    limit: Option<usize>,
}

/// `GET /`: the traces, newest first, with what is held above them.
pub async fn traces_page(State(s): State<AppState>, Query(q): Query<ListQuery>) -> Response {
    let held = s.retention.held();
    let limit = q.limit.unwrap_or(PAGE).clamp(1, MAX_PAGE);
    let offset = q.offset.unwrap_or(0);
    let (total, shown) = s.retention.traces_window(true, offset, limit);
    let keyed = s.access.keys.is_some();
    let body = html! {
        h1 { "Traces" }
        section #held .cards data-live="3" {
            (card("Traces held", held.traces))
            (card("Spans held", held.spans))
            (card("Logs held", held.logs))
            (card("Objects held", held.objects))
        }
        div #traces-region data-live="3" {
            @if total == 0 {
                section.panel.empty {
                    p {
                        "No trace has arrived yet. Point the AgentOps SDK here: export this \
                         block in the agent's environment (or run "
                        code { "eval \"$(agl agentops --print-env)\"" } "), then call "
                        code { "agentops.init()" } "."
                    }
                    pre.mono { (crate::env::block(&s.public_url, keyed)) }
                    @if keyed {
                        p.muted { "This server requires a key: set " code { "AGENTOPS_API_KEY" }
                            " to it." }
                    }
                }
            } @else {
                (traces_table(&shown))
                (ui::pager(total, offset, limit, |o| format!("{TRACES}?offset={o}&limit={limit}")))
            }
        }
    };
    SHELL.page("Traces", TRACES, &body)
}

fn card(label: &str, value: usize) -> Markup {
    html! {
        div.card {
            div.label { (label) }
            div.value { (value) }
        }
    }
}

fn traces_table(traces: &[TraceSummary]) -> Markup {
    html! {
        table #traces {
            thead {
                tr {
                    th { "Trace" } th { "Started" } th { "Duration" } th { "Spans" }
                    th { "LLM calls" } th { "Errors" } th { "Logs" } th { "Tags" }
                }
            }
            tbody {
                @for t in traces {
                    tr.trace data-trace-id=(t.trace_id) {
                        td {
                            a.trace-link href=(trace_href(&t.trace_id)) { (trace_name(t)) }
                            div.id.muted { (t.trace_id) }
                        }
                        td { (ui::time(t.first_time)) }
                        td { (duration_cell(span_of_time(t.first_time, t.last_time))) }
                        td.spans { (t.span_count) }
                        td.llm-calls { (t.llm_calls) }
                        td.errors {
                            @if t.errors > 0 { (ui::badge("error")) " " (t.errors) } @else { "0" }
                        }
                        td.logs { (t.log_uploads) }
                        td.tags { @for tag in &t.tags { span.badge.tag { (tag) } " " } }
                    }
                }
            }
        }
    }
}

/// `GET /ui/traces/{trace_id}`.
pub async fn trace_page(State(s): State<AppState>, Path(trace_id): Path<String>) -> Response {
    let trace_id = trace_id.to_ascii_lowercase();
    let Some(spans) = s.retention.trace(&trace_id) else {
        return SHELL.error(
            StatusCode::NOT_FOUND,
            &format!("No span of trace {trace_id} is held (never sent, or dropped past the cap)."),
        );
    };
    let logs = s.retention.uploads(UploadKind::Logs, Some(&trace_id));
    let body = trace::page(&trace_id, &spans, &logs);
    SHELL.page(&format!("Trace {}", trace::name(&spans)), TRACES, &body)
}

/// `GET /ui/traces/{trace_id}/spans/{span_id}`: the fragment the waterfall shows.
pub async fn span_fragment(
    State(s): State<AppState>,
    Path((trace_id, span_id)): Path<(String, String)>,
) -> Response {
    match s.retention.span(&trace_id, &span_id) {
        Some(stored) => ui::fragment(span::details(&stored)),
        None => {
            let mut response = ui::fragment(html! {
                div.span-attrs.missing {
                    p { "No span " code { (span_id) } " of trace " code { (trace_id) } " is held." }
                }
            });
            *response.status_mut() = StatusCode::NOT_FOUND;
            response
        }
    }
}

#[derive(Deserialize)]
pub struct SessionQuery {
    trace_id: Option<String>,
}

/// `{AGENTOPS_APP_URL}/sessions?trace_id=…` is the "Session Replay" link the SDK prints
/// (32 hex characters): it opens the trace's page; anything else opens the list.
pub async fn session_link(Query(q): Query<SessionQuery>) -> Redirect {
    match q.trace_id.as_deref().map(str::trim) {
        Some(id) if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Redirect::temporary(&trace_href(&id.to_ascii_lowercase()))
        }
        _ => Redirect::temporary(TRACES),
    }
}
