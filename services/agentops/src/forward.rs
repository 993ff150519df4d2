//! Forwarding: every accepted trace batch is re-posted to each `--forward-otlp` receiver
//! (an OpenTelemetry collector, a LightningStore's `/v1/traces`, …).
//!
//! The SDK never waits for it: a batch goes into a bounded queue per target and a worker
//! per target posts it, retrying connection errors, 408, 429 and 5xx with exponential
//! backoff. A full queue drops the batch; a batch that still fails is dropped too. Both are
//! counted (`agl_agentops_forward_batches_total{outcome}`), and neither reaches the SDK.
//!
//! Without extra resource attributes the raw bytes go out as they came in (same
//! `Content-Type` and `Content-Encoding`). With them, the decoded batch is tagged and
//! re-encoded as uncompressed protobuf.

use std::sync::Arc;
use std::time::Duration;

use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use agl_common::otlp::{PayloadFormat, set_resource_attributes};
use agl_common::telemetry::worth_logging;
use anyhow::Context as _;
use bytes::Bytes;
use http::HeaderValue;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use prost::Message as _;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// How forwarding behaves.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Receiver URLs (`http://` only).
    pub targets: Vec<String>,
    /// Resource attributes set on every forwarded batch.
    pub resource_attributes: Vec<(String, String)>,
    /// Batches queued per target.
    pub queue: usize,
    /// Tries per batch, at least 1.
    pub attempts: u32,
    /// Time limit of one request.
    pub timeout: Duration,
    /// Key sent to every target (`Authorization: Bearer`).
    pub key: Option<String>,
}

/// One batch on its way out.
#[derive(Debug)]
struct Payload {
    body: Bytes,
    content_type: HeaderValue,
    content_encoding: Option<HeaderValue>,
}

struct Target {
    url: String,
    queue: mpsc::Sender<Arc<Payload>>,
}

/// The sending side, shared by the request handlers.
pub struct Forwarder {
    targets: Vec<Target>,
    attributes: Vec<(String, String)>,
    metrics: Arc<Metrics>,
    closed: watch::Sender<bool>,
}

/// The workers, awaited at shutdown.
pub struct Workers(Vec<JoinHandle<()>>);

/// Checks a `--forward-otlp` URL: absolute, `http://` or `https://`, with a host.
pub fn validate_target(url: &str) -> anyhow::Result<()> {
    let parsed =
        reqwest::Url::parse(url).with_context(|| format!("invalid forward url {url:?}"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "forward url {url:?}: only http:// and https:// receivers are supported"
    );
    anyhow::ensure!(parsed.host().is_some(), "forward url {url:?} has no host");
    Ok(())
}

impl Forwarder {
    /// Starts one worker per target. `None` when there is no target.
    pub fn start(
        config: &ForwardConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Option<(Arc<Self>, Workers)>> {
        if config.targets.is_empty() {
            return Ok(None);
        }
        let client =
            agl_common::auth::sending_key(agl_common::tls::http_client(), config.key.as_deref())?
                // Receivers are loopback or in-cluster; a proxy from the environment would
                // only capture that traffic.
                .no_proxy()
                .timeout(config.timeout)
                .user_agent(concat!("agl-agentops/", env!("CARGO_PKG_VERSION")))
                .build()
                .context("failed to build the forwarding http client")?;
        let (closed, closed_rx) = watch::channel(false);
        let mut targets = Vec::new();
        let mut workers = Vec::new();
        for url in &config.targets {
            validate_target(url)?;
            metrics.add_forward_target(url);
            let (tx, rx) = mpsc::channel(config.queue.max(1));
            workers.push(tokio::spawn(worker(
                url.clone(),
                rx,
                closed_rx.clone(),
                client.clone(),
                config.attempts.max(1),
                Arc::clone(&metrics),
            )));
            targets.push(Target {
                url: url.clone(),
                queue: tx,
            });
        }
        let forwarder = Arc::new(Self {
            targets,
            attributes: config.resource_attributes.clone(),
            metrics,
            closed,
        });
        Ok(Some((forwarder, Workers(workers))))
    }

    /// Queues one accepted batch for every target; never waits.
    pub fn submit(
        &self,
        raw: &Bytes,
        format: PayloadFormat,
        content_encoding: Option<&HeaderValue>,
        decoded: &ExportTraceServiceRequest,
    ) {
        let payload = if self.attributes.is_empty() {
            Payload {
                body: raw.clone(),
                content_type: HeaderValue::from_static(format.content_type()),
                content_encoding: content_encoding.cloned(),
            }
        } else {
            let mut tagged = decoded.clone();
            set_resource_attributes(&mut tagged, &self.attributes);
            Payload {
                body: Bytes::from(tagged.encode_to_vec()),
                content_type: HeaderValue::from_static(PayloadFormat::Protobuf.content_type()),
                content_encoding: None,
            }
        };
        let payload = Arc::new(payload);
        let closed = *self.closed.borrow();
        for target in &self.targets {
            let queued = !closed && target.queue.try_send(Arc::clone(&payload)).is_ok();
            if queued {
                self.metrics
                    .forward_queue
                    .with_label_values(&[target.url.as_str()])
                    .inc();
            } else {
                let dropped = self
                    .metrics
                    .forwarded
                    .with_label_values(&[target.url.as_str(), "dropped"]);
                dropped.inc();
                if worth_logging(dropped.get()) {
                    tracing::warn!(
                        target = %target.url,
                        dropped = dropped.get(),
                        "forward queue full or closed, batch dropped"
                    );
                }
            }
        }
    }

    /// Stops taking batches; the workers send what is queued, then end.
    pub fn close(&self) {
        let _ = self.closed.send(true);
    }
}

impl Workers {
    /// Waits up to `grace` for the workers to empty their queues, then stops them.
    pub async fn finish(self, grace: Duration) {
        let handles = self.0;
        let aborts: Vec<_> = handles.iter().map(JoinHandle::abort_handle).collect();
        let all = async {
            for handle in handles {
                let _ = handle.await;
            }
        };
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                grace_seconds = grace.as_secs_f64(),
                "forwarding did not finish within the shutdown grace period; queued batches are lost"
            );
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

async fn worker(
    url: String,
    mut queue: mpsc::Receiver<Arc<Payload>>,
    mut closed: watch::Receiver<bool>,
    client: reqwest::Client,
    attempts: u32,
    metrics: Arc<Metrics>,
) {
    loop {
        let payload = tokio::select! {
            biased;
            payload = queue.recv() => match payload {
                Some(p) => p,
                None => return,
            },
            () = async { let _ = closed.wait_for(|c| *c).await; } => {
                // Send what is already queued, then stop.
                queue.close();
                match queue.recv().await {
                    Some(p) => p,
                    None => return,
                }
            }
        };
        metrics
            .forward_queue
            .with_label_values(&[url.as_str()])
            .dec();
        let outcome = send(&client, &url, &payload, attempts, &metrics).await;
        metrics
            .forwarded
            .with_label_values(&[url.as_str(), outcome.label()])
            .inc();
        if let Outcome::Failed(why) = outcome {
            let failed = metrics
                .forwarded
                .with_label_values(&[url.as_str(), "failed"])
                .get();
            if worth_logging(failed) {
                tracing::warn!(target = %url, failed, "forwarding failed, batch dropped: {why}");
            }
        }
    }
}

/// How one batch ended.
enum Outcome {
    Sent,
    Failed(String),
}

impl Outcome {
    fn label(&self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::Failed(_) => "failed",
        }
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

async fn send(
    client: &reqwest::Client,
    url: &str,
    payload: &Payload,
    attempts: u32,
    metrics: &Metrics,
) -> Outcome {
    let mut why = String::new();
    for n in 1..=attempts {
        if n > 1 {
            metrics.forward_retries.with_label_values(&[url]).inc();
            tokio::time::sleep(backoff(n)).await;
        }
        let mut request = client
            .post(url)
            .header(CONTENT_TYPE, payload.content_type.clone())
            .body(payload.body.clone());
        if let Some(encoding) = &payload.content_encoding {
            request = request.header(CONTENT_ENCODING, encoding.clone());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return Outcome::Sent,
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                why = format!(
                    "receiver answered {status}: {}",
                    body.chars().take(200).collect::<String>()
                );
                if !retryable(status) {
                    break;
                }
            }
            Err(err) => why = format!("{err} after {n} tries"),
        }
        tracing::debug!(target = %url, attempt = n, "forward failed: {why}");
    }
    Outcome::Failed(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn retry_rules_follow_otlp() {
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(retryable(reqwest::StatusCode::from_u16(code).unwrap()));
        }
        for code in [400, 401, 404, 413, 501] {
            assert!(!retryable(reqwest::StatusCode::from_u16(code).unwrap()));
        }
    }

    #[test]
    fn only_http_and_https_targets_are_accepted() {
        assert!(validate_target("http://127.0.0.1:4747/v1/traces").is_ok());
        assert!(validate_target("https://collector:4318/v1/traces").is_ok());
        assert!(validate_target("ftp://collector/v1/traces").is_err());
        assert!(validate_target("127.0.0.1:4318").is_err());
    }
}
