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
}

#[derive(Default)]
struct Inner {
    /// Arrival order over all traces, for dropping the oldest.
    spans: VecDeque<Arc<StoredSpan>>,
    /// Arrival order within each trace, with the number of the trace's first arrival.
    traces: HashMap<String, (u64, VecDeque<Arc<StoredSpan>>)>,
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
                    .or_insert_with(|| (next, VecDeque::new()));
                entry.1.push_back(Arc::clone(&span));
                if entry.1.len() == 1 {
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
                if let Some((_, queue)) = inner.traces.get_mut(&oldest.trace_id) {
                    queue.pop_front();
                    if queue.is_empty() {
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
        let inner = self.inner.lock();
        let mut log_counts: HashMap<&str, usize> = HashMap::new();
        for log in &inner.logs {
            if let Some(id) = &log.trace_id {
                *log_counts.entry(id.as_str()).or_default() += 1;
            }
        }
        let mut traces: Vec<(u64, TraceSummary)> = inner
            .traces
            .iter()
            .map(|(trace_id, (order, spans))| {
                let min = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let max = |a: Option<f64>, b: Option<f64>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                let summary = TraceSummary {
                    trace_id: trace_id.clone(),
                    root_span_name: spans
                        .iter()
                        .find(|s| s.parent_span_id.is_none())
                        .map(|s| s.name.clone()),
                    span_count: spans.len(),
                    first_time: spans.iter().fold(None, |acc, s| min(acc, s.start_time)),
                    last_time: spans.iter().fold(None, |acc, s| max(acc, s.end_time)),
                    first_received_at: spans.front().map_or(0.0, |s| s.received_at),
                    last_received_at: spans.back().map_or(0.0, |s| s.received_at),
                    log_uploads: log_counts.get(trace_id.as_str()).copied().unwrap_or(0),
                };
                (*order, summary)
            })
            .collect();
        traces.sort_by_key(|(order, _)| *order);
        traces.into_iter().map(|(_, t)| t).collect()
    }

    /// The spans of one trace in arrival order, `None` if none is held.
    pub fn trace(&self, trace_id: &str) -> Option<Vec<Arc<StoredSpan>>> {
        let inner = self.inner.lock();
        inner
            .traces
            .get(&trace_id.to_ascii_lowercase())
            .map(|(_, spans)| spans.iter().cloned().collect())
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
