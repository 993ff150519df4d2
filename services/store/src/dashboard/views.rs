//! The markup of the store's pages, from what the handlers fetched. Nothing here calls the
//! store; everything shown is escaped by `maud` (inputs, span names and attributes are
//! whatever clients sent).

use std::collections::HashMap;

use agl_common::ui::format::{bytes, duration};
use agl_common::ui::maud::{Markup, html};
use agl_common::ui::waterfall::{WfSpan, detail_panel, waterfall};
use agl_common::ui::{badge, json_block, json_value, pager, path_segment as encode, time};
use serde_json::{Map, Value};

use super::calls::{self, LlmCall};
use super::{ListParams, SORTS, Sample, StorageInfo, by_status};
use crate::core::{Gauges, Statistics};
use crate::model::{Attempt, ResourcesUpdate, RolloutStatus, RolloutView, Worker, WorkerStatus};
use crate::stored_span::{SpanDoc, StoredSpan};

// ----- overview ------------------------------------------------------------------------

pub(super) struct Overview<'a> {
    pub stats: &'a Statistics,
    pub gauges: &'a Gauges,
    pub workers: &'a [Worker],
    pub workers_total: usize,
    pub latest: Option<&'a ResourcesUpdate>,
    pub samples: &'a [Sample],
    pub storage: &'a StorageInfo,
    pub storage_bytes: Option<u64>,
    pub now: f64,
}

fn card(label: &str, id: &str, value: impl std::fmt::Display) -> Markup {
    html! {
        div.card {
            div.label { (label) }
            div.value id=(id) { (value) }
        }
    }
}

/// Per-minute rate of `f` between the first and last sample.
#[allow(clippy::cast_precision_loss)]
fn rate(samples: &[Sample], f: impl Fn(&Sample) -> usize) -> Option<f64> {
    let (a, b) = (samples.first()?, samples.last()?);
    let dt = b.t - a.t;
    (dt >= 1.0).then(|| (f(b).saturating_sub(f(a))) as f64 / dt * 60.0)
}

pub(super) fn overview(o: &Overview<'_>) -> Markup {
    let statuses = by_status(&o.gauges.rollouts_by_status);
    let most = statuses.values().copied().max().unwrap_or(0).max(1);
    let workers = by_status(&o.gauges.workers_by_status);
    let finished_rate = rate(o.samples, |s| s.finished);
    let created_rate = rate(o.samples, |s| s.created);
    let span_rate = rate(o.samples, |s| s.spans).map(|r| r / 60.0);
    // Finished rollouts per sampling interval, for the sparkline.
    let deltas: Vec<usize> = o
        .samples
        .windows(2)
        .map(|w| w[1].finished.saturating_sub(w[0].finished))
        .collect();
    let peak = deltas.iter().copied().max().unwrap_or(0).max(1);
    html! {
        div #overview data-live="3" {
            h1 { "Overview" span.muted style="font-size:12px;font-weight:400;margin-left:10px" {
                span.live-dot {} "live · refreshed " span #refreshed { "now" } } }
            div.cards {
                (card("Queue depth", "queue-depth", o.stats.queue_length))
                (card("Rollouts", "total-rollouts", o.stats.total_rollouts))
                (card("Attempts", "total-attempts", o.stats.total_attempts))
                (card("Spans", "total-spans", o.stats.total_spans))
                (card("Workers", "total-workers", o.stats.total_workers))
                (card("Uptime", "uptime", duration(o.stats.uptime)))
            }
            div.grid2 {
                section.panel {
                    h2 { "Rollouts by status" }
                    table #status-counts {
                        @for s in RolloutStatus::ALL {
                            @let n = statuses.get(s).copied().unwrap_or(0);
                            tr data-status=(s.as_str()) {
                                td style="width:120px" { a href={ "/ui/rollouts?status=" (s.as_str()) } { (badge(s.as_str())) } }
                                td { div.bar style={ "width:" (if n == 0 { 0 } else { (n * 100 / most).max(1) }) "%" } {} }
                                td.num.count style="width:90px" { (n) }
                            }
                        }
                    }
                }
                section.panel #throughput {
                    h2 { "Throughput (last " (duration(o.samples.last().map_or(0.0, |l| l.t) - o.samples.first().map_or(0.0, |f| f.t))) ")" }
                    @if finished_rate.is_none() {
                        p.muted { "Measured from totals sampled every 10 s; the first figures appear 10 s after start." }
                    }
                    dl.kv {
                        dt { "rollouts finished" } dd #finished-rate { (per_min(finished_rate)) }
                        dt { "rollouts created" } dd { (per_min(created_rate)) }
                        dt { "spans stored" } dd { @match span_rate { Some(r) => (format!("{r:.1} / s")), None => "—" } }
                    }
                    div.spark title="rollouts finished per 10 s" {
                        @for d in &deltas {
                            div style={ "height:" (d * 100 / peak) "%" } title=(d) {}
                        }
                    }
                }
            }
            div.grid2 {
                section.panel #workers {
                    h2 { "Workers " span.muted { "(" (o.workers_total) ")" } " " a href="/ui/workers" style="font-size:12px" { "all →" } }
                    p.muted {
                        @for s in WorkerStatus::ALL {
                            (badge(s.as_str())) " " (workers.get(s).copied().unwrap_or(0)) "  "
                        }
                    }
                    (worker_table(o.workers, o.now, "workers-recent"))
                }
                div {
                    section.panel #latest-resources {
                        h2 { "Latest resources" }
                        @match o.latest {
                            Some(r) => {
                                dl.kv {
                                    dt { "id" } dd.mono { (r.resources_id) }
                                    dt { "version" } dd { (r.version) }
                                    dt { "updated" } dd { (time(Some(r.update_time))) }
                                    dt { "names" } dd { (r.resources.keys().cloned().collect::<Vec<_>>().join(", ")) }
                                }
                                p { a href="/ui/resources" { "All versions →" } }
                            }
                            None => p.muted { "No resources yet." }
                        }
                    }
                    section.panel #storage {
                        h2 { "Storage" }
                        dl.kv {
                            dt { "backend" } dd { (o.stats.backend) " " span.muted { "(" (o.stats.name) ")" } }
                            @if let Some(l) = &o.storage.location { dt { "location" } dd.mono { (l) } }
                            @if let Some(b) = o.storage_bytes { dt { "file size" } dd { (bytes(b)) } }
                            dt { "span documents" } dd { (bytes(o.stats.total_span_bytes as u64)) }
                            dt { "resources versions" } dd { (o.stats.total_resources) }
                            dt { "rollouts in memory" } dd { (o.gauges.rollouts_in_memory) }
                            dt { "waiting calls" } dd { (o.gauges.waiting_calls) }
                        }
                    }
                }
            }
        }
    }
}

fn per_min(r: Option<f64>) -> String {
    r.map_or_else(|| "—".to_owned(), |r| format!("{r:.1} / min"))
}

fn worker_table(workers: &[Worker], now: f64, id: &str) -> Markup {
    html! {
        table id=(id) {
            tr { th { "worker" } th { "status" } th { "last heartbeat" } th { "current rollout" } }
            @for w in workers {
                tr.worker data-worker-id=(w.worker_id) {
                    td.mono { (w.worker_id) }
                    td { (badge(w.status.as_str())) }
                    td { (ago(now, w.last_heartbeat_time)) }
                    td.mono { @if let Some(r) = &w.current_rollout_id { a href={ "/ui/rollouts/" (r) } { (r) } } }
                }
            }
            @if workers.is_empty() { tr { td colspan="4" .muted { "No worker has reported yet." } } }
        }
    }
}

fn ago(now: f64, t: Option<f64>) -> Markup {
    match t {
        Some(t) => {
            html! { span title=(agl_common::ui::format::utc(t)) { (duration((now - t).max(0.0))) " ago" } }
        }
        None => html! { span.muted { "never" } },
    }
}

// ----- rollouts list ---------------------------------------------------------------------

pub(super) fn rollouts(p: &ListParams, items: &[RolloutView], total: usize, now: f64) -> Markup {
    let sort_link = |col: &str| {
        let mut q = p.clone();
        q.desc = if q.sort == col { !p.desc } else { true };
        q.sort = SORTS
            .iter()
            .copied()
            .find(|s| *s == col)
            .unwrap_or("created");
        q.href(0)
    };
    let arrow = |col: &str| {
        if p.sort == col {
            if p.desc { " ↓" } else { " ↑" }
        } else {
            ""
        }
    };
    html! {
        h1 { "Rollouts" }
        form #filters .filters method="get" action="/ui/rollouts" {
            label { "status"
                select name="status" {
                    option value="" { "any" }
                    @for s in RolloutStatus::ALL {
                        option value=(s.as_str()) selected[p.status == Some(*s)] { (s.as_str()) }
                    }
                }
            }
            label { "mode"
                select name="mode" {
                    option value="" { "any" }
                    @for m in crate::model::RolloutMode::ALL {
                        option value=(m.as_str()) selected[p.mode == Some(*m)] { (m.as_str()) }
                    }
                }
            }
            label { "id contains" input type="text" name="q" value=(p.q) placeholder="ro-…"; }
            label { "started from (UTC)" input type="datetime-local" name="from" value=(p.from) step="1"; }
            label { "started before (UTC)" input type="datetime-local" name="to" value=(p.to) step="1"; }
            label { "sort"
                select name="sort" {
                    @for s in SORTS { option value=(s) selected[p.sort == *s] { (s.replace('_', " ")) } }
                }
            }
            label { "order"
                select name="order" {
                    option value="desc" selected[p.desc] { "descending" }
                    option value="asc" selected[!p.desc] { "ascending" }
                }
            }
            button #apply type="submit" { "Apply" }
            a href="/ui/rollouts" { "reset" }
        }
        (pager(total, p.offset, p.limit, |o| p.href(o)))
        section.panel {
            table #rollouts {
                tr {
                    th { a href=(sort_link("rollout_id")) { "rollout" (arrow("rollout_id")) } }
                    th { a href=(sort_link("status")) { "status" (arrow("status")) } }
                    th { "mode" }
                    th { a href=(sort_link("start_time")) { "started" (arrow("start_time")) } }
                    th { a href=(sort_link("end_time")) { "ended" (arrow("end_time")) } }
                    th.num { "duration" }
                    th.num { "attempt" }
                    th { "worker" }
                    th { "resources" }
                }
                @for v in items {
                    @let r = &v.rollout;
                    tr.rollout data-rollout-id=(r.rollout_id) {
                        td.mono { a.rollout-link href={ "/ui/rollouts/" (r.rollout_id) } { (r.rollout_id) } }
                        td.status data-value=(r.status.as_str()) { (badge(r.status.as_str())) }
                        td.mode { (r.mode.map_or("", |m| m.as_str())) }
                        td { (time(Some(r.start_time))) }
                        td { (time(r.end_time)) }
                        td.num { (duration(r.end_time.unwrap_or(now) - r.start_time)) }
                        td.num { @if let Some(a) = &v.attempt { (a.sequence_id) } }
                        td.mono { @if let Some(w) = v.attempt.as_ref().and_then(|a| a.worker_id.as_deref()) { (w) } }
                        td.mono { (r.resources_id.as_deref().unwrap_or("")) }
                    }
                }
                @if items.is_empty() {
                    tr { td colspan="9" .muted { "No rollout matches." } }
                }
            }
        }
    }
}

// ----- one rollout -----------------------------------------------------------------------

/// A rollout's spans, read for the page: the waterfall rows, its LLM calls and rewards.
#[derive(Default)]
pub(super) struct ReadSpans {
    pub rows: Vec<WfSpan>,
    pub calls: Vec<LlmCall>,
    /// `(span id, span name, value)`.
    pub rewards: Vec<(String, String, Option<f64>)>,
}

/// The span's indexed form (read back from storage, the text is indexed here).
fn held(doc: &SpanDoc) -> Option<std::sync::Arc<StoredSpan>> {
    match doc {
        SpanDoc::Held(s) => Some(std::sync::Arc::clone(s)),
        SpanDoc::Text(t) => StoredSpan::from_json(t).ok().map(std::sync::Arc::new),
    }
}

fn attributes(text: &str) -> Map<String, Value> {
    #[derive(serde::Deserialize)]
    struct Only {
        #[serde(default)]
        attributes: Option<Map<String, Value>>,
    }
    serde_json::from_str::<Only>(text)
        .ok()
        .and_then(|o| o.attributes)
        .unwrap_or_default()
}

pub(super) fn read_spans(docs: &[SpanDoc], rollout_id: &str, attempt: Option<&str>) -> ReadSpans {
    let mut out = ReadSpans::default();
    // Token ids recorded on a call's child span (the proxy's raw request span).
    let mut ids_by_parent: HashMap<String, Map<String, Value>> = HashMap::new();
    let query = attempt_query(attempt);
    for doc in docs.iter().take(super::MAX_SPANS) {
        let Some(span) = held(doc) else { continue };
        // The stored text as read (a span held in memory is written out for the tests).
        let text = match doc {
            SpanDoc::Text(t) => std::borrow::Cow::Borrowed(t.as_str()),
            SpanDoc::Held(_) => std::borrow::Cow::Owned(span.to_json()),
        };
        let name = span.name().into_owned();
        let span_id = span.span_id().into_owned();
        let parent_id = span.parent_id().map(std::borrow::Cow::into_owned);
        let (start, end) = (span.start_time(), span.end_time());
        let mut kind = None;
        let mut note = None;
        let llm = calls::may_be_llm(&text);
        let reward = calls::may_be_reward(&name, &text);
        if llm || reward || text.contains("ERROR") {
            let attrs = attributes(&text);
            if text.contains("\"ERROR\"") {
                kind = Some("error");
            }
            if let Some(value) = reward.then(|| calls::reward(&name, &attrs)).flatten() {
                kind = Some("reward");
                note = Some(value.map_or_else(|| "reward".to_owned(), |v| format!("reward {v}")));
                out.rewards.push((span_id.clone(), name.clone(), value));
            }
            if llm {
                if let Some(call) = calls::llm_call(&span_id, &name, &attrs, start, end) {
                    kind = Some("llm");
                    let tokens =
                        call.prompt_tokens.unwrap_or(0) + call.completion_tokens.unwrap_or(0);
                    if tokens > 0 {
                        note = Some(format!("{tokens} tokens"));
                    }
                    out.calls.push(call);
                } else if calls::has_token_ids(&attrs) {
                    kind = Some("llm");
                    if let Some(p) = &parent_id {
                        ids_by_parent.insert(p.clone(), attrs);
                    }
                }
            }
        }
        let mut detail = format!("/ui/rollouts/{}/spans/", encode(rollout_id));
        detail.push_str(&encode(&span_id));
        detail.push_str(&query);
        out.rows.push(WfSpan {
            span_id,
            parent_id,
            name,
            start,
            end,
            kind,
            note,
            detail,
        });
    }
    for call in &mut out.calls {
        if let Some(attrs) = ids_by_parent.get(&call.span_id) {
            calls::add_token_ids(call, attrs);
        }
    }
    let start = |c: &LlmCall| c.start.unwrap_or(f64::INFINITY);
    out.calls.sort_by(|a, b| start(a).total_cmp(&start(b)));
    out
}

pub(super) struct RolloutPage<'a> {
    pub view: &'a RolloutView,
    pub attempts: &'a [Attempt],
    pub selected: Option<&'a str>,
    pub spans: &'a ReadSpans,
    pub total_spans: usize,
    pub now: f64,
}

pub(super) fn rollout(p: &RolloutPage<'_>) -> Markup {
    let r = &p.view.rollout;
    let live = (!r.status.is_finished()).then_some("3");
    let rid = encode(&r.rollout_id);
    html! {
        div #rollout-head data-live=[live] {
            h1 { "Rollout " span.mono { (r.rollout_id) } " " (badge(r.status.as_str())) }
            div.cards {
                (card("Mode", "rollout-mode", r.mode.map_or("—", |m| m.as_str())))
                (card("Duration", "rollout-duration", duration(r.end_time.unwrap_or(p.now) - r.start_time)))
                (card("Attempts", "rollout-attempts", p.attempts.len()))
                (card("Spans (this attempt)", "rollout-spans", p.total_spans))
                (card("LLM calls", "rollout-calls", p.spans.calls.len()))
                div.card {
                    div.label { "Reward" }
                    div.value.reward-value #rollout-reward {
                        @match p.spans.rewards.iter().rev().find_map(|r| r.2) {
                            Some(v) => (v),
                            None => span.muted { "—" },
                        }
                    }
                }
            }
            dl.kv {
                dt { "started" } dd { (time(Some(r.start_time))) }
                dt { "ended" } dd { (time(r.end_time)) }
                dt { "resources" } dd.mono { (r.resources_id.as_deref().unwrap_or("—")) }
            }
        }
        div.grid2 style="margin-top:16px" {
            section.panel { h2 { "Input" } (json_block(Some("rollout-input"), r.input.get())) }
            div {
                section.panel {
                    h2 { "Config" }
                    (json_value(Some("rollout-config"), &serde_json::to_value(&r.config).unwrap_or_default()))
                }
                section.panel {
                    h2 { "Metadata" }
                    @match &r.metadata {
                        Some(m) => (json_block(Some("rollout-metadata"), m.get())),
                        None => pre.json #rollout-metadata { "null" },
                    }
                }
            }
        }
        section.panel #attempts-region data-live=[live] {
            h2 { "Attempts" }
            (attempt_timeline(p.attempts, r.start_time, r.end_time.unwrap_or(p.now)))
            table #attempts {
                tr { th.num { "#" } th { "attempt" } th { "status" } th { "worker" } th { "started" } th { "ended" } th.num { "duration" } th { "last heartbeat" } }
                @for a in p.attempts {
                    tr.attempt.selected[p.selected == Some(a.attempt_id.as_str())] data-attempt-id=(a.attempt_id) {
                        td.num { (a.sequence_id) }
                        td.mono { a href={ "/ui/rollouts/" (rid) "?attempt=" (encode(&a.attempt_id)) } { (a.attempt_id) } }
                        td { (badge(a.status.as_str())) }
                        td.mono { (a.worker_id.as_deref().unwrap_or("—")) }
                        td { (time(Some(a.start_time))) }
                        td { (time(a.end_time)) }
                        td.num { (duration(a.end_time.unwrap_or(p.now) - a.start_time)) }
                        td { (ago(p.now, a.last_heartbeat_time)) }
                    }
                }
                @if p.attempts.is_empty() { tr { td colspan="8" .muted { "Not started yet (queuing)." } } }
            }
        }
        section.panel #rewards-region data-live=[live] {
            h2 { "Rewards" }
            ul #rewards {
                @for (span_id, name, value) in &p.spans.rewards {
                    li.reward data-span-id=(span_id) {
                        span.reward-value { @match value { Some(v) => (v), None => "(no value)" } }
                        " " span.muted { "from " span.mono { (name) } }
                    }
                }
                @if p.spans.rewards.is_empty() { li.muted { "No reward recorded in this attempt." } }
            }
        }
        section.panel {
            h2 { "Spans" @if let Some(a) = p.selected { " " span.muted.mono { "of " (a) } } }
            @if p.total_spans > p.spans.rows.len() {
                p.muted { "Showing the first " (p.spans.rows.len()) " of " (p.total_spans) " spans; the API serves them all." }
            }
            div.waterfall-wrap {
                div #waterfall-region data-live=[live] {
                    (waterfall(&p.spans.rows, Some(&subtree_url(&r.rollout_id, p.selected))))
                }
                (detail_panel())
            }
        }
        section.panel #llm-calls-region data-live=[live] {
            h2 { "LLM calls" }
            div #llm-calls {
                (more_calls(&r.rollout_id, p.selected, &p.spans.calls, 0))
                @if p.spans.calls.is_empty() { p.muted { "No LLM call recorded in this attempt." } }
            }
        }
    }
}

/// LLM calls a rollout's page (or one "more" fragment) shows at once.
pub(super) const CALLS_SHOWN: usize = 50;

/// The `?attempt=` query of a rollout's fragments (empty without an attempt).
fn attempt_query(attempt: Option<&str>) -> String {
    attempt.map_or_else(String::new, |a| {
        let mut q = String::from("?attempt=");
        q.extend(form_urlencoded::byte_serialize(a.as_bytes()));
        q
    })
}

/// The URL of a span's folded waterfall rows.
pub(super) fn subtree_url(rollout_id: &str, attempt: Option<&str>) -> impl Fn(&WfSpan) -> String {
    let prefix = format!("/ui/rollouts/{}/subtree/", encode(rollout_id));
    let query = attempt_query(attempt);
    move |s| format!("{prefix}{}{query}", encode(&s.span_id))
}

/// [`CALLS_SHOWN`] calls from `offset` on, then a button that loads the next ones.
pub(super) fn more_calls(
    rollout_id: &str,
    attempt: Option<&str>,
    calls: &[LlmCall],
    offset: usize,
) -> Markup {
    let end = offset.saturating_add(CALLS_SHOWN).min(calls.len());
    let shown = calls.get(offset..end).unwrap_or_default();
    let next = {
        let q = attempt_query(attempt);
        let sep = if q.is_empty() { '?' } else { '&' };
        format!(
            "/ui/rollouts/{}/calls{q}{sep}offset={end}",
            encode(rollout_id)
        )
    };
    html! {
        div.more-items {
            @for c in shown { (llm_call(c)) }
            @if end < calls.len() {
                button.more type="button" data-more=(next) {
                    "Show " (CALLS_SHOWN.min(calls.len() - end)) " more of " (calls.len() - end) " further calls"
                }
            }
        }
    }
}

fn attempt_timeline(attempts: &[Attempt], t0: f64, t1: f64) -> Markup {
    let span = (t1 - t0).max(1e-9);
    html! {
        div.timeline #attempt-timeline {
            @for a in attempts {
                @let left = ((a.start_time - t0) / span * 100.0).clamp(0.0, 100.0);
                @let right = ((a.end_time.unwrap_or(t1) - t0) / span * 100.0).clamp(left, 100.0);
                div class={ "seg s-" (a.status.as_str()) }
                    style={ "left:" (format!("{left:.2}")) "%;width:" (format!("{:.2}", (right - left).max(0.5))) "%" }
                    title={ "#" (a.sequence_id) " " (a.status.as_str()) " on " (a.worker_id.as_deref().unwrap_or("no worker")) } {
                    "#" (a.sequence_id) " " (a.status.as_str())
                }
            }
        }
    }
}

fn llm_call(c: &LlmCall) -> Markup {
    html! {
        div.llm-call data-span-id=(c.span_id) {
            div.llm-head {
                span.mono { (c.name) }
                @if let Some(m) = &c.model { span { "model " b { (m) } } }
                span.llm-tokens {
                    (c.prompt_tokens.map_or_else(|| "?".to_owned(), |n| n.to_string())) " prompt → "
                    (c.completion_tokens.map_or_else(|| "?".to_owned(), |n| n.to_string())) " completion tokens"
                }
                @if let Some(l) = c.latency { span { "latency " (duration(l)) } }
                span { "time to first token " (c.time_to_first_token.map_or_else(|| "—".to_owned(), duration)) }
                @if c.streaming { span { "streamed" } }
            }
            div.llm-prompt {
                @for m in &c.prompt {
                    div.llm-msg { span.role { (m.role) } (m.content) }
                }
            }
            div.llm-completion {
                @for m in &c.completion {
                    div.llm-msg {
                        span.role { (if m.role.is_empty() { "assistant" } else { &m.role }) }
                        (m.content)
                        @if let Some(f) = &m.finish_reason { " " span.muted { "(" (f) ")" } }
                    }
                }
            }
            details.llm-token-ids {
                summary { "token ids" @if c.prompt_token_ids.is_none() && c.response_token_ids.is_none() { " (not recorded)" } }
                dl.kv {
                    dt { "prompt" } dd.mono { (c.prompt_token_ids.as_deref().unwrap_or("—")) }
                    dt { "response" } dd.mono { (c.response_token_ids.as_deref().unwrap_or("—")) }
                }
            }
        }
    }
}

/// One span's details (the fragment the waterfall loads into its side panel).
pub(super) fn span_detail(doc: &SpanDoc) -> Markup {
    let text = match doc {
        SpanDoc::Held(s) => s.to_json(),
        SpanDoc::Text(t) => t.clone(),
    };
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("");
    let f = |k: &str| v.get(k).and_then(Value::as_f64);
    let mut attrs: Vec<(&String, &Value)> = v
        .get("attributes")
        .and_then(Value::as_object)
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    attrs.sort_by(|a, b| a.0.cmp(b.0));
    let status = v
        .pointer("/status/status_code")
        .and_then(Value::as_str)
        .unwrap_or("UNSET");
    html! {
        div.span-attrs {
            h3 { (s("name")) }
            dl.kv {
                dt { "span" } dd.mono { (s("span_id")) }
                dt { "parent" } dd.mono { (v.get("parent_id").and_then(Value::as_str).unwrap_or("—")) }
                dt { "trace" } dd.mono { (s("trace_id")) }
                dt { "sequence" } dd { (v.get("sequence_id").map(ToString::to_string).unwrap_or_default()) }
                dt { "attempt" } dd.mono { (s("attempt_id")) }
                dt { "status" } dd { (status) @if let Some(d) = v.pointer("/status/description").and_then(Value::as_str) { " — " (d) } }
                dt { "start" } dd { (time(f("start_time"))) }
                dt { "duration" } dd { @match (f("start_time"), f("end_time")) { (Some(a), Some(b)) => (duration(b - a)), _ => "—" } }
            }
            h4 { "Attributes (" (attrs.len()) ")" }
            table.attributes {
                @for (k, val) in &attrs {
                    tr { td.mono { (k) } td.mono { (plain(val)) } }
                }
            }
            @if let Some(events) = v.get("events").and_then(Value::as_array).filter(|e| !e.is_empty()) {
                h4 { "Events (" (events.len()) ")" }
                (json_value(None, &Value::Array(events.clone())))
            }
            @if let Some(res) = v.pointer("/resource/attributes").and_then(Value::as_object).filter(|r| !r.is_empty()) {
                h4 { "Resource" }
                table {
                    @for (k, val) in res { tr { td.mono { (k) } td.mono { (plain(val)) } } }
                }
            }
        }
    }
}

fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

// ----- resources and workers ---------------------------------------------------------------

pub(super) fn resources(
    items: &[ResourcesUpdate],
    total: usize,
    offset: usize,
    latest: Option<String>,
) -> Markup {
    html! {
        h1 { "Resources" }
        (pager(total, offset, 20, |o| format!("/ui/resources?offset={o}")))
        div #resources {
            @for r in items {
                section.panel.resources data-resources-id=(r.resources_id) {
                    h2 {
                        span.mono { (r.resources_id) } " · version " (r.version)
                        @if latest.as_deref() == Some(r.resources_id.as_str()) { " " span.badge.s-succeeded { "latest" } }
                    }
                    p.muted { "created " (time(Some(r.create_time))) " · updated " (time(Some(r.update_time))) }
                    (json_value(None, &serde_json::to_value(&*r.resources).unwrap_or_default()))
                }
            }
            @if items.is_empty() { p.muted { "No resources have been added." } }
        }
    }
}

pub(super) fn workers(items: &[Worker], now: f64) -> Markup {
    html! {
        h1 { "Workers" }
        section.panel {
            table #workers-table {
                tr { th { "worker" } th { "status" } th { "last heartbeat" } th { "last dequeue" } th { "busy since" } th { "idle since" } th { "current rollout" } th { "heartbeat stats" } }
                @for w in items {
                    tr.worker data-worker-id=(w.worker_id) {
                        td.mono { (w.worker_id) }
                        td { (badge(w.status.as_str())) }
                        td { (ago(now, w.last_heartbeat_time)) }
                        td { (ago(now, w.last_dequeue_time)) }
                        td { (time(w.last_busy_time)) }
                        td { (time(w.last_idle_time)) }
                        td.mono {
                            @if let Some(r) = &w.current_rollout_id { a href={ "/ui/rollouts/" (encode(r)) } { (r) } }
                            @if let Some(a) = &w.current_attempt_id { br; span.muted { (a) } }
                        }
                        td { @if let Some(h) = &w.heartbeat_stats { code { (h.get()) } } }
                    }
                }
                @if items.is_empty() { tr { td colspan="8" .muted { "No worker has reported yet." } } }
            }
        }
    }
}
