//! Recording: from finished calls to spans in the store, off the request path.
//!
//! ```text
//! request path ──try_send──▶ [record queue] ──▶ recorder task ──▶ [span queue] ──▶ exporter task ──▶ POST {store}/v1/traces
//!                 (never waits)                 parse, metrics,                   batches, retries
//!                                               build spans
//! ```
//!
//! Both queues are bounded. A call that finds the record queue full is dropped from the
//! record (counted in `agl_vllm_export_spans_total{outcome="dropped"}`); the agent never
//! notices. The exporter sends up to `--export-batch` calls per OTLP/HTTP protobuf request,
//! waiting at most `--export-interval-seconds` for a batch to fill, and retries connection
//! errors, 408, 429 and 5xx with exponential backoff. When a batch of several calls still
//! fails with an HTTP error, each call is sent on its own once, so that one call the store
//! refuses (upstream's store fails a whole request over an unknown rollout) does not take
//! the others with it. At shutdown both queues are drained within `--flush-timeout-seconds`.

use std::sync::Arc;
use std::time::Duration;

use agl_common::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use agl_common::otlp::proto::trace::v1::ResourceSpans;
use agl_common::telemetry::worth_logging;
use anyhow::Context as _;
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::call::CallRecord;
use crate::metrics::Metrics;
use crate::spans::{self, SPANS_PER_CALL};

/// How recording and export behave.
#[derive(Debug, Clone)]
pub struct RecorderConfig {
    /// The store's `/v1/traces`, or `None` when no store is configured.
    pub traces_url: Option<String>,
    /// Calls the record queue holds.
    pub queue: usize,
    /// Calls per export request.
    pub batch: usize,
    /// How long a call may wait for a batch to fill.
    pub interval: Duration,
    /// Tries per export request.
    pub attempts: u32,
    /// Time limit of one export request.
    pub timeout: Duration,
    /// The store's key, sent with every export.
    pub key: Option<String>,
}

/// The sending side, shared by the request handlers.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<CallRecord>,
    metrics: Arc<Metrics>,
}

/// The recorder and exporter tasks, awaited at shutdown.
pub struct RecorderTasks {
    close: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

/// One call's spans on their way out.
struct Outgoing {
    resource: ResourceSpans,
}

/// Starts the recorder (and the exporter, when there is a store).
pub fn start(
    config: &RecorderConfig,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Recorder, RecorderTasks)> {
    let (tx, rx) = mpsc::channel(config.queue.max(1));
    let (close, close_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let outgoing = match &config.traces_url {
        Some(url) => {
            let client = agl_common::auth::sending_key(
                agl_common::tls::http_client(),
                config.key.as_deref(),
            )?
            .no_proxy()
            .timeout(config.timeout)
            .user_agent(concat!("agl-vllm/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to build the export http client")?;
            let (span_tx, span_rx) = mpsc::channel(config.queue.max(1));
            handles.push(tokio::spawn(export_loop(
                span_rx,
                Exporter {
                    client,
                    url: url.clone(),
                    attempts: config.attempts.max(1),
                    metrics: Arc::clone(&metrics),
                },
                config.batch.max(1),
                config.interval,
            )));
            Some(span_tx)
        }
        None => None,
    };
    handles.insert(
        0,
        tokio::spawn(record_loop(rx, close_rx, outgoing, Arc::clone(&metrics))),
    );
    Ok((Recorder { tx, metrics }, RecorderTasks { close, handles }))
}

impl Recorder {
    /// Hands a finished call over; never waits.
    pub fn submit(&self, record: CallRecord) {
        let tracked = record.tracking.is_some();
        if tracked {
            self.metrics.export_queue.inc();
        }
        if self.tx.try_send(record).is_err() && tracked {
            self.metrics.export_queue.dec();
            let dropped = self.metrics.spans.with_label_values(&["dropped"]);
            dropped.inc_by(SPANS_PER_CALL);
            if worth_logging(dropped.get() / SPANS_PER_CALL) {
                tracing::warn!(
                    dropped_calls = dropped.get() / SPANS_PER_CALL,
                    "record queue full or closed: a call was not recorded"
                );
            }
        }
    }
}

impl RecorderTasks {
    /// Stops taking calls, records and exports what is queued within `timeout`, then stops.
    pub async fn finish(self, timeout: Duration) {
        let _ = self.close.send(true);
        let aborts: Vec<_> = self.handles.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for handle in self.handles {
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!(
                timeout_seconds = timeout.as_secs_f64(),
                "recorded calls were still waiting for export at shutdown; they are lost"
            );
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

async fn record_loop(
    mut rx: mpsc::Receiver<CallRecord>,
    mut close: watch::Receiver<bool>,
    outgoing: Option<mpsc::Sender<Outgoing>>,
    metrics: Arc<Metrics>,
) {
    let mut closing = false;
    loop {
        let next = if closing {
            rx.recv().await
        } else {
            tokio::select! {
                next = rx.recv() => next,
                _ = close.wait_for(|c| *c) => {
                    // Take no more; what is queued is still recorded.
                    closing = true;
                    rx.close();
                    continue;
                }
            }
        };
        let Some(record) = next else { break };
        let parsed = record.parse();
        observe(&metrics, &record, &parsed);
        let Some(tracking) = &record.tracking else {
            continue;
        };
        let resource = spans::build(&record, &parsed, tracking);
        match &outgoing {
            // Waiting here is fine: it only delays recording, never an agent.
            Some(tx) if tx.send(Outgoing { resource }).await.is_ok() => {}
            _ => {
                metrics.export_queue.dec();
                metrics
                    .spans
                    .with_label_values(&["dropped"])
                    .inc_by(SPANS_PER_CALL);
            }
        }
    }
}

fn observe(metrics: &Metrics, record: &CallRecord, parsed: &crate::call::Parsed) {
    let endpoint = record.endpoint.label();
    let stream = if record.stream { "true" } else { "false" };
    metrics
        .generations
        .with_label_values(&[endpoint, stream, parsed.outcome])
        .inc();
    metrics
        .duration
        .with_label_values(&[endpoint, stream])
        .observe(
            record
                .ended
                .saturating_duration_since(record.started)
                .as_secs_f64(),
        );
    if let Some(ttft) = parsed.ttft {
        metrics
            .ttft
            .with_label_values(&[endpoint])
            .observe(ttft.as_secs_f64());
    }
    if let Some(n) = parsed.prompt_tokens {
        metrics
            .prompt_tokens
            .with_label_values(&[endpoint])
            .inc_by(n);
    }
    if let Some(n) = parsed.completion_tokens {
        metrics
            .completion_tokens
            .with_label_values(&[endpoint])
            .inc_by(n);
    }
    if let (Some(error), Some(tracking)) = (&parsed.error, &record.tracking) {
        tracing::debug!(
            rollout_id = %tracking.rollout_id,
            sequence_id = tracking.sequence_id,
            "recorded a failed call: {error}"
        );
    }
}

struct Exporter {
    client: reqwest::Client,
    url: String,
    attempts: u32,
    metrics: Arc<Metrics>,
}

/// Why an export request failed.
struct Failure {
    /// The store answered with this status (as opposed to not answering).
    status: Option<u16>,
    message: String,
}

async fn export_loop(
    mut rx: mpsc::Receiver<Outgoing>,
    exporter: Exporter,
    batch: usize,
    interval: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut calls = vec![first.resource];
        let deadline = tokio::time::Instant::now() + interval;
        while calls.len() < batch {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(next)) => calls.push(next.resource),
                _ => break,
            }
        }
        exporter.send_calls(calls).await;
    }
}

impl Exporter {
    async fn send_calls(&self, calls: Vec<ResourceSpans>) {
        let n = calls.len();
        let total = n as u64 * SPANS_PER_CALL;
        let request = ExportTraceServiceRequest {
            resource_spans: calls,
        };
        let result = self.post(request.encode_to_vec(), self.attempts).await;
        match result {
            Ok(rejected) => self.settle(n, total, rejected),
            Err(Failure {
                status: Some(status),
                message,
            }) if n > 1 => {
                tracing::warn!(
                    status,
                    calls = n,
                    "export of a batch failed ({message}); sending its calls one by one"
                );
                for call in request.resource_spans {
                    let single = ExportTraceServiceRequest {
                        resource_spans: vec![call],
                    };
                    match self.post(single.encode_to_vec(), 1).await {
                        Ok(rejected) => self.settle(1, SPANS_PER_CALL, rejected),
                        Err(failure) => self.fail(1, &failure.message),
                    }
                }
            }
            Err(failure) => self.fail(n, &failure.message),
        }
    }

    fn settle(&self, calls: usize, spans: u64, rejected: u64) {
        self.metrics.export_queue.sub(calls as i64);
        let rejected = rejected.min(spans);
        self.metrics
            .spans
            .with_label_values(&["exported"])
            .inc_by(spans - rejected);
        if rejected > 0 {
            let counter = self.metrics.spans.with_label_values(&["rejected"]);
            counter.inc_by(rejected);
            if worth_logging(counter.get()) {
                tracing::warn!(
                    rejected,
                    "the store rejected recorded spans (unknown rollout or attempt?)"
                );
            }
        }
    }

    fn fail(&self, calls: usize, message: &str) {
        self.metrics.export_queue.sub(calls as i64);
        let failed = self.metrics.spans.with_label_values(&["failed"]);
        failed.inc_by(calls as u64 * SPANS_PER_CALL);
        if worth_logging(failed.get() / SPANS_PER_CALL) {
            tracing::warn!(
                target_url = %self.url,
                calls,
                "export to the store failed, calls not recorded: {message}"
            );
        }
    }

    /// Posts one export request; the number of spans the store rejected on success.
    async fn post(&self, body: Vec<u8>, attempts: u32) -> Result<u64, Failure> {
        let body = bytes::Bytes::from(body);
        let mut failure = Failure {
            status: None,
            message: String::new(),
        };
        for n in 1..=attempts {
            if n > 1 {
                self.metrics.export_retries.inc();
                tokio::time::sleep(backoff(n)).await;
            }
            let response = self
                .client
                .post(&self.url)
                .header(http::header::CONTENT_TYPE, "application/x-protobuf")
                .body(body.clone())
                .send()
                .await;
            match response {
                Ok(response) if response.status().is_success() => {
                    let answer = response.bytes().await.unwrap_or_default();
                    let rejected = ExportTraceServiceResponse::decode(answer.as_ref())
                        .ok()
                        .and_then(|r| r.partial_success)
                        .map_or(0, |p| u64::try_from(p.rejected_spans).unwrap_or(0));
                    return Ok(rejected);
                }
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    failure = Failure {
                        status: Some(status.as_u16()),
                        message: format!(
                            "the store answered {status}: {}",
                            text.chars().take(200).collect::<String>()
                        ),
                    };
                    if !retryable(status) {
                        break;
                    }
                }
                Err(err) => {
                    failure = Failure {
                        status: None,
                        message: format!("{err} (after {n} tries)"),
                    };
                }
            }
            tracing::debug!(attempt = n, "export failed: {}", failure.message);
        }
        Err(failure)
    }
}

/// Whether a status is worth another try (the OTLP/HTTP retry rules).
fn retryable(status: reqwest::StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// The pause before try `n` (`n` ≥ 2): 200 ms doubling, at most 5 s.
fn backoff(n: u32) -> Duration {
    let exp = n.saturating_sub(2).min(5);
    Duration::from_millis(200 * (1u64 << exp)).min(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(4), Duration::from_millis(800));
        assert_eq!(backoff(40), Duration::from_secs(5));
    }

    #[test]
    fn retry_rules_follow_otlp() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(reqwest::StatusCode::from_u16(code).unwrap()));
        }
        for code in [400, 404, 413, 501] {
            assert!(!retryable(reqwest::StatusCode::from_u16(code).unwrap()));
        }
    }
}
