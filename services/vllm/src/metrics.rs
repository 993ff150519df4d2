//! The proxy's own Prometheus metrics, beside the HTTP and process metrics every agl
//! service exports (`agl_common::ops`).

use agl_common::ops::LATENCY_BUCKETS;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// The generation endpoints, as metric labels.
pub const ENDPOINTS: [&str; 2] = ["chat", "completions"];
/// How a generation call ended, as metric labels.
pub const OUTCOMES: [&str; 5] = [
    "ok",
    "upstream_error",
    "client_disconnected",
    "upstream_failed",
    "unreachable",
];
/// What became of the spans of recorded calls.
pub const SPAN_OUTCOMES: [&str; 4] = ["exported", "rejected", "failed", "dropped"];
/// Why a call was served without being recorded.
pub const UNTRACKED: [&str; 3] = ["no_rollout", "no_store", "store_error"];

/// Time-to-first-token buckets in seconds: from a cached prefix to a long queue.
const TTFT_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Every collector of the proxy.
pub struct Metrics {
    /// Generation calls by `endpoint`, `stream` and `outcome`.
    pub generations: IntCounterVec,
    /// Generation call latency (request to last byte) by `endpoint` and `stream`.
    pub duration: HistogramVec,
    /// Time to the first generated token of streams, by `endpoint`.
    pub ttft: HistogramVec,
    /// Prompt tokens by `endpoint` (usage, or the token ids when vLLM sent no usage).
    pub prompt_tokens: IntCounterVec,
    /// Completion tokens by `endpoint`.
    pub completion_tokens: IntCounterVec,
    /// Generation calls in flight through the proxy.
    pub in_flight: IntGauge,
    /// Calls served without a record, by `reason`.
    pub untracked: IntCounterVec,
    /// Latency of `POST /v1/agl/spans/next`.
    pub sequence_latency: Histogram,
    /// Spans of recorded calls by `outcome`.
    pub spans: IntCounterVec,
    /// Export requests retried.
    pub export_retries: IntCounter,
    /// Recorded calls waiting to be exported.
    pub export_queue: IntGauge,
    /// Whether vLLM answers `/v1/models` (1) or not (0).
    pub upstream_ready: IntGauge,
    /// Times the launcher started vLLM again.
    pub restarts: IntCounter,
}

impl Metrics {
    /// Creates the collectors and registers them in `registry`.
    pub fn new(registry: &Registry) -> anyhow::Result<Self> {
        let counter_vec = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<_> {
            let c = IntCounterVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let counter = |name: &str, help: &str| -> anyhow::Result<_> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> anyhow::Result<_> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let histogram_vec =
            |name: &str, help: &str, labels: &[&str], buckets: &[f64]| -> anyhow::Result<_> {
                let h = HistogramVec::new(
                    HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                    labels,
                )?;
                registry.register(Box::new(h.clone()))?;
                Ok(h)
            };
        let sequence_latency = Histogram::with_opts(
            HistogramOpts::new(
                "agl_vllm_sequence_id_duration_seconds",
                "Latency of the store's POST /v1/agl/spans/next, taken when a rollout call arrives",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(sequence_latency.clone()))?;
        let metrics = Self {
            generations: counter_vec(
                "agl_vllm_requests_total",
                "Generation calls (chat and text completions) by endpoint, stream and outcome",
                &["endpoint", "stream", "outcome"],
            )?,
            duration: histogram_vec(
                "agl_vllm_request_duration_seconds",
                "Generation call latency, request to last byte, by endpoint and stream",
                &["endpoint", "stream"],
                LATENCY_BUCKETS,
            )?,
            ttft: histogram_vec(
                "agl_vllm_time_to_first_token_seconds",
                "Streams: time from the request to the first generated token, by endpoint",
                &["endpoint"],
                TTFT_BUCKETS,
            )?,
            prompt_tokens: counter_vec(
                "agl_vllm_prompt_tokens_total",
                "Prompt tokens of generation calls, by endpoint",
                &["endpoint"],
            )?,
            completion_tokens: counter_vec(
                "agl_vllm_completion_tokens_total",
                "Generated tokens of generation calls, by endpoint",
                &["endpoint"],
            )?,
            in_flight: gauge(
                "agl_vllm_requests_in_flight",
                "Generation calls in flight through the proxy",
            )?,
            untracked: counter_vec(
                "agl_vllm_untracked_requests_total",
                "Generation calls served without a record, by reason (no_rollout: plain /v1 path)",
                &["reason"],
            )?,
            sequence_latency,
            spans: counter_vec(
                "agl_vllm_export_spans_total",
                "Spans of recorded calls by outcome (exported, rejected by the store, failed after retries, dropped on a full queue)",
                &["outcome"],
            )?,
            export_retries: counter(
                "agl_vllm_export_retries_total",
                "OTLP export requests to the store that were tried again",
            )?,
            export_queue: gauge(
                "agl_vllm_export_queue_depth",
                "Recorded calls waiting to be exported to the store",
            )?,
            upstream_ready: gauge(
                "agl_vllm_upstream_ready",
                "Whether vLLM answers /v1/models (1) or not (0)",
            )?,
            restarts: counter(
                "agl_vllm_restarts_total",
                "Times the launcher started vLLM again after it exited",
            )?,
        };
        // Known label values start at 0, so dashboards see them before their first event.
        for endpoint in ENDPOINTS {
            metrics.ttft.with_label_values(&[endpoint]);
            metrics.prompt_tokens.with_label_values(&[endpoint]);
            metrics.completion_tokens.with_label_values(&[endpoint]);
            for stream in ["true", "false"] {
                metrics.duration.with_label_values(&[endpoint, stream]);
                for outcome in OUTCOMES {
                    metrics
                        .generations
                        .with_label_values(&[endpoint, stream, outcome]);
                }
            }
        }
        for outcome in SPAN_OUTCOMES {
            metrics.spans.with_label_values(&[outcome]);
        }
        for reason in UNTRACKED {
            metrics.untracked.with_label_values(&[reason]);
        }
        Ok(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collectors_register_once() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.spans.with_label_values(&["exported"]).inc_by(3);
        let names: Vec<String> = registry
            .gather()
            .iter()
            .map(|f| f.name().to_owned())
            .collect();
        for name in [
            "agl_vllm_requests_total",
            "agl_vllm_time_to_first_token_seconds",
            "agl_vllm_export_queue_depth",
            "agl_vllm_export_spans_total",
            "agl_vllm_upstream_ready",
        ] {
            assert!(names.iter().any(|n| n == name), "{name} missing: {names:?}");
        }
        assert!(Metrics::new(&registry).is_err(), "a second set must clash");
    }
}
