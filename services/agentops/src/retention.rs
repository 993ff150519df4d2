//! What arrived, kept in memory within fixed caps: decoded spans indexed by trace, uploaded
//! logs (by the trace they belong to) and uploaded objects. Past a cap the oldest entries
//! are dropped and counted (`agl_agentops_evicted_total`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::proto::trace::v1::{span::SpanKind, status::StatusCode};
use agl_common::otlp::{attributes_to_json, hex_id};
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value as Json, json};

use crate::metrics::Metrics;

/// The caps.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Spans kept, over all traces.
    pub max_spans: usize,
    /// Logs kept, and objects kept (each).
    pub max_uploads: usize,
    /// Bytes of logs and objects kept, together.
    pub max_upload_bytes: usize,
}

/// Seconds since the Unix epoch, now.
pub fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn nanos_to_seconds(nanos: u64) -> Option<f64> {
    (nanos != 0).then(|| nanos as f64 / 1e9)
}

/// A span as the inspection API shows it.
#[derive(Debug, Serialize)]
pub struct StoredSpan {
    /// 32 lowercase hex characters.
    pub trace_id: String,
    /// 16 lowercase hex characters.
    pub span_id: String,
    /// `None` for a root span.
    pub parent_span_id: Option<String>,
    pub name: String,
    /// `INTERNAL`, `SERVER`, `CLIENT`, `PRODUCER`, `CONSUMER` or `UNSPECIFIED`.
    pub kind: &'static str,
    /// Unix seconds (`None` when the exporter sent 0).
    pub start_time: Option<f64>,
    pub end_time: Option<f64>,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    /// `{"code": "UNSET" | "OK" | "ERROR", "message": …}`.
    pub status: Json,
    pub attributes: Map<String, Json>,
    /// `[{name, time, attributes}]`.
    pub events: Vec<Json>,
    /// `[{trace_id, span_id, attributes}]`.
    pub links: Vec<Json>,
    /// Resource attributes, shared by the spans of one resource.
    pub resource: Arc<Map<String, Json>>,
    /// `{name, version}` of the instrumentation scope.
    pub scope: Arc<Json>,
    /// When the batch arrived (Unix seconds), and its number since the server started.
    pub received_at: f64,
    pub batch: u64,
}

impl StoredSpan {
    /// A model call: AgentOps' `agentops.span.kind = llm`, or the request attributes its
    /// instrumentations (and OpenLLMetry's) put on one.
    pub fn is_llm(&self) -> bool {
        self.attributes
            .get("agentops.span.kind")
            .and_then(Json::as_str)
            == Some("llm")
            || [
                "gen_ai.request.model",
                "gen_ai.usage.prompt_tokens",
                "llm.request.type",
            ]
            .iter()
            .any(|key| self.attributes.contains_key(*key))
    }

    /// Whether the span ended with an error status.
    pub fn is_error(&self) -> bool {
        self.status.get("code").and_then(Json::as_str) == Some("ERROR")
    }
}

/// The spans of one export request, flattened.
pub fn spans_from_request(
    request: &ExportTraceServiceRequest,
    received_at: f64,
    batch: u64,
) -> Vec<StoredSpan> {
    let mut out = Vec::new();
    for resource_spans in &request.resource_spans {
        let resource = Arc::new(
            resource_spans
                .resource
                .as_ref()
                .map(|r| attributes_to_json(&r.attributes))
                .unwrap_or_default(),
        );
        for scope_spans in &resource_spans.scope_spans {
            let scope = Arc::new(scope_spans.scope.as_ref().map_or(
                Json::Null,
                |s| json!({ "name": s.name, "version": s.version }),
            ));
            for span in &scope_spans.spans {
                let kind = SpanKind::try_from(span.kind).map_or("UNSPECIFIED", |k| {
                    k.as_str_name().trim_start_matches("SPAN_KIND_")
                });
                let status = span.status.as_ref().map_or_else(
                    || json!({ "code": "UNSET", "message": "" }),
                    |s| {
                        let code = StatusCode::try_from(s.code).map_or("UNSET", |c| {
                            c.as_str_name().trim_start_matches("STATUS_CODE_")
                        });
                        json!({ "code": code, "message": s.message })
                    },
                );
                out.push(StoredSpan {
                    trace_id: hex_id(&span.trace_id).unwrap_or_default(),
                    span_id: hex_id(&span.span_id).unwrap_or_default(),
                    parent_span_id: hex_id(&span.parent_span_id),
                    name: span.name.clone(),
                    kind,
                    start_time: nanos_to_seconds(span.start_time_unix_nano),
                    end_time: nanos_to_seconds(span.end_time_unix_nano),
                    start_time_unix_nano: span.start_time_unix_nano,
                    end_time_unix_nano: span.end_time_unix_nano,
                    status,
                    attributes: attributes_to_json(&span.attributes),
                    events: span
                        .events
                        .iter()
                        .map(|e| {
                            json!({
                                "name": e.name,
                                "time": nanos_to_seconds(e.time_unix_nano),
                                "attributes": attributes_to_json(&e.attributes),
                            })
                        })
                        .collect(),
                    links: span
                        .links
                        .iter()
                        .map(|l| {
                            json!({
                                "trace_id": hex_id(&l.trace_id),
                                "span_id": hex_id(&l.span_id),
                                "attributes": attributes_to_json(&l.attributes),
                            })
                        })
                        .collect(),
                    resource: Arc::clone(&resource),
                    scope: Arc::clone(&scope),
                    received_at,
                    batch,
                });
            }
        }
    }
    out
}

/// Which upload route a body came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    /// `/v4/logs/upload/`: the console output of a run.
    Logs,
    /// `/v4/objects/upload/`: transcription input and speech output.
    Objects,
}

impl UploadKind {
    /// `logs` or `objects`, as in the routes and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logs => "logs",
            Self::Objects => "objects",
        }
    }
}

/// One uploaded log or object.
#[derive(Debug, Serialize)]
pub struct Upload {
    pub id: String,
    pub kind: UploadKind,
    /// The `Trace-Id` header as 32 hex characters (logs only).
    pub trace_id: Option<String>,
    /// Bytes of `text`.
    pub size: usize,
    /// `object` (`{"body": …}`, SDK 0.4.19+) or `string` (a bare JSON string, up to 0.4.18).
    pub body_form: &'static str,
    pub received_at: f64,
    #[serde(skip)]
    pub text: String,
}

/// A trace in the listing.
#[derive(Debug, Serialize)]
pub struct TraceSummary {
    pub trace_id: String,
    /// The first span without a parent, if it arrived.
    pub root_span_name: Option<String>,
    pub span_count: usize,
    /// Earliest span start and latest span end, Unix seconds.
    pub first_time: Option<f64>,
    pub last_time: Option<f64>,
    /// When its first and last batch arrived.
    pub first_received_at: f64,
    pub last_received_at: f64,
    /// Logs uploaded under this trace id.
    pub log_uploads: usize,
    /// Spans that are model calls ([`StoredSpan::is_llm`]) and spans with an error status.
    pub llm_calls: usize,
    pub errors: usize,
    /// The root span's `agentops.tags` (what `start_trace(tags=[…])` was given).
    pub tags: Vec<String>,
}

/// How much is held, counted without walking anything.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Held {
    pub traces: usize,
    pub spans: usize,
    pub logs: usize,
    pub objects: usize,
}

/// The spans of one trace and what the listing shows of them, kept up to date as spans
/// arrive and go, so that listing traces never walks their spans.
struct TraceEntry {
    /// The number of the trace's first arrival (the listing's order).
    order: u64,
    /// Arrival order.
    spans: VecDeque<Arc<StoredSpan>>,
    llm_calls: usize,
    errors: usize,
    /// Root span and time range; `None` after an eviction, recomputed when next listed.
    derived: Option<Derived>,
}

#[derive(Default)]
struct Derived {
    root: Option<Arc<StoredSpan>>,
    first_time: Option<f64>,
    last_time: Option<f64>,
}

impl Derived {
    fn add(&mut self, span: &Arc<StoredSpan>) {
        if self.root.is_none() && span.parent_span_id.is_none() {
            self.root = Some(Arc::clone(span));
        }
        self.first_time = min_time(self.first_time, span.start_time);
        self.last_time = max_time(self.last_time, span.end_time);
    }
}

fn min_time(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn max_time(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl TraceEntry {
    fn new(order: u64) -> Self {
        Self {
            order,
            spans: VecDeque::new(),
            llm_calls: 0,
            errors: 0,
            derived: Some(Derived::default()),
        }
    }

    fn push(&mut self, span: Arc<StoredSpan>) {
        self.llm_calls += usize::from(span.is_llm());
        self.errors += usize::from(span.is_error());
        if let Some(derived) = &mut self.derived {
            derived.add(&span);
        }
        self.spans.push_back(span);
    }

    fn pop_oldest(&mut self) {
        if let Some(span) = self.spans.pop_front() {
            self.llm_calls -= usize::from(span.is_llm());
            self.errors -= usize::from(span.is_error());
            self.derived = None;
        }
    }

    fn summary(&mut self, trace_id: String, log_uploads: usize) -> TraceSummary {
        let first_received_at = self.spans.front().map_or(0.0, |s| s.received_at);
        let last_received_at = self.spans.back().map_or(0.0, |s| s.received_at);
        let (span_count, llm_calls, errors) = (self.spans.len(), self.llm_calls, self.errors);
        let derived = self.derived();
        TraceSummary {
            trace_id,
            root_span_name: derived.root.as_ref().map(|s| s.name.clone()),
            span_count,
            first_time: derived.first_time,
            last_time: derived.last_time,
            first_received_at,
            last_received_at,
            log_uploads,
            llm_calls,
            errors,
            tags: derived.root.as_deref().map(tags_of).unwrap_or_default(),
        }
    }

    fn derived(&mut self) -> &Derived {
        let spans = &self.spans;
        self.derived.get_or_insert_with(|| {
            let mut derived = Derived::default();
            for span in spans {
                derived.add(span);
            }
            derived
        })
    }
}

/// The tags of a root span: `agentops.tags` is a list (a string holding a JSON list, or a
/// single tag, from exporters that flatten lists).
fn tags_of(span: &StoredSpan) -> Vec<String> {
    let text = |v: &Json| match v {
        Json::String(s) => s.clone(),
        other => other.to_string(),
    };
    match span.attributes.get("agentops.tags") {
        Some(Json::Array(items)) => items.iter().map(text).collect(),
        Some(Json::String(s)) => match serde_json::from_str::<Json>(s) {
            Ok(Json::Array(items)) => items.iter().map(text).collect(),
            _ if s.is_empty() => Vec::new(),
            _ => vec![s.clone()],
        },
        Some(Json::Null) | None => Vec::new(),
        Some(other) => vec![other.to_string()],
    }
}

#[derive(Default)]
struct Inner {
    /// Arrival order over all traces, for dropping the oldest.
    spans: VecDeque<Arc<StoredSpan>>,
    /// Each trace's spans, in arrival order, with what the listing shows of them.
    traces: HashMap<String, TraceEntry>,
    logs: VecDeque<Arc<Upload>>,
    objects: VecDeque<Arc<Upload>>,
    upload_bytes: usize,
    next_trace: u64,
}

/// The bounded in-memory record. A std-style (`parking_lot`) mutex: nothing awaits while
/// holding it, and every operation is short.
pub struct Retention {
    limits: Limits,
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
    next_upload: std::sync::atomic::AtomicU64,
}

impl Retention {
    /// An empty record with `limits`, reporting to `metrics`.
    pub fn new(limits: Limits, metrics: Arc<Metrics>) -> Self {
        Self {
            limits,
            metrics,
            inner: Mutex::new(Inner::default()),
            next_upload: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Keeps `spans`, dropping the oldest beyond the cap.
    pub fn add_spans(&self, spans: Vec<StoredSpan>) {
        let mut evicted = 0u64;
        let held = {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            for span in spans {
                let span = Arc::new(span);
                let next = inner.next_trace;
                let entry = inner
                    .traces
                    .entry(span.trace_id.clone())
                    .or_insert_with(|| TraceEntry::new(next));
                entry.push(Arc::clone(&span));
                if entry.spans.len() == 1 {
                    inner.next_trace += 1;
                }
                inner.spans.push_back(span);
            }
            while inner.spans.len() > self.limits.max_spans {
                let Some(oldest) = inner.spans.pop_front() else {
                    break;
                };
                evicted += 1;
                // The globally oldest span of a trace is the front of that trace's queue.
                if let Some(entry) = inner.traces.get_mut(&oldest.trace_id) {
                    entry.pop_oldest();
                    if entry.spans.is_empty() {
                        inner.traces.remove(&oldest.trace_id);
                    }
                }
            }
            inner.spans.len()
        };
        self.metrics
            .evicted
            .with_label_values(&["spans"])
            .inc_by(evicted);
        self.metrics
            .held
            .with_label_values(&["spans"])
            .set(i64::try_from(held).unwrap_or(i64::MAX));
    }

    /// Keeps an upload and returns it; the oldest uploads go beyond the caps.
    pub fn add_upload(
        &self,
        kind: UploadKind,
        trace_id: Option<String>,
        body_form: &'static str,
        text: String,
    ) -> Arc<Upload> {
        let n = self
            .next_upload
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let upload = Arc::new(Upload {
            id: format!("{}-{n}", &kind.as_str()[..3]),
            kind,
            trace_id,
            size: text.len(),
            body_form,
            received_at: now_seconds(),
            text,
        });
        let (mut evicted_logs, mut evicted_objects) = (0u64, 0u64);
        let (logs, objects) = {
            let mut guard = self.inner.lock();
            let inner = &mut *guard;
            inner.upload_bytes += upload.size;
            match kind {
                UploadKind::Logs => inner.logs.push_back(Arc::clone(&upload)),
                UploadKind::Objects => inner.objects.push_back(Arc::clone(&upload)),
            }
            loop {
                let over_bytes = inner.upload_bytes > self.limits.max_upload_bytes;
                let take_log = inner.logs.len() > self.limits.max_uploads
                    || (over_bytes && oldest_is_log(inner));
                let take_object =
                    !take_log && (inner.objects.len() > self.limits.max_uploads || over_bytes);
                let dropped = if take_log {
                    evicted_logs += 1;
                    inner.logs.pop_front()
                } else if take_object {
                    evicted_objects += 1;
                    inner.objects.pop_front()
                } else {
                    break;
                };
                match dropped {
                    Some(d) => inner.upload_bytes -= d.size,
                    None => break,
                }
            }
            (inner.logs.len(), inner.objects.len())
        };
        let m = &self.metrics;
        m.evicted.with_label_values(&["logs"]).inc_by(evicted_logs);
        m.evicted
            .with_label_values(&["objects"])
            .inc_by(evicted_objects);
        m.held
            .with_label_values(&["logs"])
            .set(i64::try_from(logs).unwrap_or(i64::MAX));
        m.held
            .with_label_values(&["objects"])
            .set(i64::try_from(objects).unwrap_or(i64::MAX));
        upload
    }

    /// Every trace held, in order of first arrival.
    pub fn traces(&self) -> Vec<TraceSummary> {
        self.traces_window(false, 0, usize::MAX).1
    }

    /// How many traces are held, and at most `limit` of them from `offset` on: newest first
    /// when `newest_first`, else in order of first arrival. Only those are summarised, and
    /// no span is walked: the counts are kept as spans arrive, the root and time range too
    /// (recomputed once after an eviction).
    pub fn traces_window(
        &self,
        newest_first: bool,
        offset: usize,
        limit: usize,
    ) -> (usize, Vec<TraceSummary>) {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let mut order: Vec<(u64, &str)> = inner
            .traces
            .iter()
            .map(|(id, entry)| (entry.order, id.as_str()))
            .collect();
        order.sort_unstable_by_key(|(n, _)| *n);
        if newest_first {
            order.reverse();
        }
        let total = order.len();
        let window: Vec<String> = order
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|(_, id)| id.to_owned())
            .collect();
        let mut log_counts: HashMap<&str, usize> = HashMap::new();
        for log in &inner.logs {
            if let Some(id) = &log.trace_id {
                *log_counts.entry(id.as_str()).or_default() += 1;
            }
        }
        let summaries = window
            .into_iter()
            .filter_map(|trace_id| {
                let entry = inner.traces.get_mut(&trace_id)?;
                let log_uploads = log_counts.get(trace_id.as_str()).copied().unwrap_or(0);
                Some(entry.summary(trace_id, log_uploads))
            })
            .collect();
        (total, summaries)
    }

    /// How many traces, spans, logs and objects are held.
    pub fn held(&self) -> Held {
        let inner = self.inner.lock();
        Held {
            traces: inner.traces.len(),
            spans: inner.spans.len(),
            logs: inner.logs.len(),
            objects: inner.objects.len(),
        }
    }

    /// The spans of one trace in arrival order, `None` if none is held.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<Arc<StoredSpan>>> {
        let inner = self.inner.lock();
        inner
            .traces
            .get(&trace_id.to_ascii_lowercase())
            .map(|entry| entry.spans.iter().cloned().collect())
    }

    /// One span of a trace (ids compared case-insensitively).
    pub fn span(&self, trace_id: &str, span_id: &str) -> Option<Arc<StoredSpan>> {
        let inner = self.inner.lock();
        let span_id = span_id.to_ascii_lowercase();
        inner
            .traces
            .get(&trace_id.to_ascii_lowercase())?
            .spans
            .iter()
            .find(|s| s.span_id == span_id)
            .cloned()
    }

    /// Spans in arrival order, filtered by trace id and name, at most `limit` (the newest).
    pub fn spans(
        &self,
        trace_id: Option<&str>,
        name: Option<&str>,
        limit: usize,
    ) -> Vec<Arc<StoredSpan>> {
        let inner = self.inner.lock();
        let trace_id = trace_id.map(str::to_ascii_lowercase);
        let mut out: Vec<Arc<StoredSpan>> = inner
            .spans
            .iter()
            .rev()
            .filter(|s| trace_id.as_deref().is_none_or(|t| s.trace_id == t))
            .filter(|s| name.is_none_or(|n| s.name == n))
            .take(limit)
            .cloned()
            .collect();
        out.reverse();
        out
    }

    /// Uploads of `kind` in arrival order, only those of `trace_id` when given.
    pub fn uploads(&self, kind: UploadKind, trace_id: Option<&str>) -> Vec<Arc<Upload>> {
        let inner = self.inner.lock();
        let queue = match kind {
            UploadKind::Logs => &inner.logs,
            UploadKind::Objects => &inner.objects,
        };
        let trace_id = trace_id.map(str::to_ascii_lowercase);
        queue
            .iter()
            .filter(|u| {
                trace_id
                    .as_deref()
                    .is_none_or(|t| u.trace_id.as_deref() == Some(t))
            })
            .cloned()
            .collect()
    }

    /// One upload by id.
    pub fn upload(&self, kind: UploadKind, id: &str) -> Option<Arc<Upload>> {
        self.uploads(kind, None).into_iter().find(|u| u.id == id)
    }

    /// Drops everything held (the eviction counters are not touched: nothing was evicted).
    pub fn clear(&self) {
        *self.inner.lock() = Inner::default();
        for kind in ["spans", "logs", "objects"] {
            self.metrics.held.with_label_values(&[kind]).set(0);
        }
    }
}

fn oldest_is_log(inner: &Inner) -> bool {
    match (inner.logs.front(), inner.objects.front()) {
        (Some(log), Some(object)) => log.received_at <= object.received_at,
        (Some(_), None) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retention(max_spans: usize, max_uploads: usize, max_upload_bytes: usize) -> Retention {
        let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).unwrap());
        Retention::new(
            Limits {
                max_spans,
                max_uploads,
                max_upload_bytes,
            },
            metrics,
        )
    }

    fn span(trace: &str, name: &str, parent: Option<&str>) -> StoredSpan {
        StoredSpan {
            trace_id: trace.into(),
            span_id: format!("{name:0>16}"),
            parent_span_id: parent.map(Into::into),
            name: name.into(),
            kind: "INTERNAL",
            start_time: Some(1.0),
            end_time: Some(2.0),
            start_time_unix_nano: 1_000_000_000,
            end_time_unix_nano: 2_000_000_000,
            status: json!({"code": "UNSET", "message": ""}),
            attributes: Map::new(),
            events: vec![],
            links: vec![],
            resource: Arc::default(),
            scope: Arc::new(Json::Null),
            received_at: 0.0,
            batch: 1,
        }
    }

    #[test]
    fn oldest_spans_go_first_and_empty_traces_disappear() {
        let r = retention(3, 10, 1000);
        r.add_spans(vec![span("a", "a1", None), span("b", "b1", None)]);
        r.add_spans(vec![span("a", "a2", Some("x")), span("c", "c1", None)]);
        let traces = r.traces();
        let ids: Vec<&str> = traces.iter().map(|t| t.trace_id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(traces[0].span_count, 1);
        assert_eq!(traces[0].root_span_name, None);
        assert!(r.trace("a").is_some());
        r.add_spans(vec![span("c", "c2", Some("c1"))]);
        // a1 and b1 went; trace b is gone, trace a keeps a2.
        assert!(r.trace("b").is_none());
        assert_eq!(r.trace("a").unwrap()[0].name, "a2");
        assert_eq!(r.metrics.evicted.with_label_values(&["spans"]).get(), 2);
        assert_eq!(r.metrics.held.with_label_values(&["spans"]).get(), 3);
        assert_eq!(r.spans(Some("c"), None, 10).len(), 2);
        assert_eq!(r.spans(None, Some("a2"), 10).len(), 1);
        assert!(r.spans(None, Some("b1"), 10).is_empty());
        assert_eq!(r.spans(None, None, 1)[0].name, "c2");
    }

    #[test]
    fn uploads_are_capped_by_count_and_bytes() {
        let r = retention(10, 2, 10);
        let first = r.add_upload(UploadKind::Logs, Some("t".into()), "string", "aaaa".into());
        r.add_upload(UploadKind::Logs, Some("t".into()), "object", "bbbb".into());
        assert_eq!(r.uploads(UploadKind::Logs, Some("t")).len(), 2);
        // 4 + 4 + 4 bytes exceed 10: the oldest upload, the first log, goes.
        r.add_upload(UploadKind::Objects, None, "object", "cccc".into());
        assert!(r.upload(UploadKind::Logs, &first.id).is_none());
        assert_eq!(r.uploads(UploadKind::Objects, None).len(), 1);
        assert_eq!(r.metrics.evicted.with_label_values(&["logs"]).get(), 1);
        // Count cap of 2 per kind.
        r.add_upload(UploadKind::Logs, None, "object", "".into());
        r.add_upload(UploadKind::Logs, None, "object", "".into());
        assert_eq!(r.uploads(UploadKind::Logs, None).len(), 2);
        r.clear();
        assert!(r.uploads(UploadKind::Logs, None).is_empty());
        assert!(r.traces().is_empty());
    }

    #[test]
    fn the_listing_keeps_counts_and_recomputes_after_evictions() {
        let r = retention(3, 10, 1000);
        let mut llm = span("t", "llm", Some("root"));
        llm.attributes
            .insert("gen_ai.request.model".into(), json!("gpt-4o"));
        let mut failed = span("t", "failed", Some("root"));
        failed.status = json!({"code": "ERROR", "message": "boom"});
        failed.start_time = Some(0.5);
        let mut root = span("t", "root", None);
        root.attributes
            .insert("agentops.tags".into(), json!(["a", "b"]));
        r.add_spans(vec![failed, root, llm]);
        let t = &r.traces()[0];
        assert_eq!((t.span_count, t.llm_calls, t.errors), (3, 1, 1));
        assert_eq!(t.root_span_name.as_deref(), Some("root"));
        assert_eq!(t.tags, ["a", "b"]);
        assert_eq!((t.first_time, t.last_time), (Some(0.5), Some(2.0)));
        assert_eq!(r.held().spans, 3);
        // The failed span goes: the error count and the earliest start follow.
        r.add_spans(vec![span("u", "other", None)]);
        let t = &r.traces()[0];
        assert_eq!((t.span_count, t.llm_calls, t.errors), (2, 1, 0));
        assert_eq!(t.first_time, Some(1.0));
        // Then the root: no name, no tags.
        r.add_spans(vec![span("u", "other2", Some("other"))]);
        let t = &r.traces()[0];
        assert_eq!((t.root_span_name.as_deref(), t.tags.len()), (None, 0));
        assert_eq!(r.span("T", &format!("{:0>16}", "llm")).unwrap().name, "llm");
        let (total, newest) = r.traces_window(true, 0, 1);
        assert_eq!(
            (total, newest.len(), newest[0].trace_id.as_str()),
            (2, 1, "u")
        );
        let (_, past_end) = r.traces_window(true, 5, 10);
        assert!(past_end.is_empty());
        assert!(r.span("t", "nope").is_none());
        assert_eq!(r.held().traces, 2);
    }

    #[test]
    fn tags_come_as_lists_or_strings() {
        let mut s = span("t", "root", None);
        for (value, tags) in [
            (json!(["x", 1]), vec!["x", "1"]),
            (json!("[\"y\"]"), vec!["y"]),
            (json!("solo"), vec!["solo"]),
            (json!(""), vec![]),
        ] {
            s.attributes.insert("agentops.tags".into(), value);
            assert_eq!(tags_of(&s), tags);
        }
    }

    #[test]
    fn traces_count_their_logs() {
        let r = retention(10, 10, 1000);
        r.add_spans(vec![span("t", "root", None)]);
        r.add_upload(UploadKind::Logs, Some("t".into()), "object", "hello".into());
        let traces = r.traces();
        assert_eq!(traces[0].log_uploads, 1);
        assert_eq!(traces[0].root_span_name.as_deref(), Some("root"));
        assert_eq!(traces[0].first_time, Some(1.0));
    }
}
