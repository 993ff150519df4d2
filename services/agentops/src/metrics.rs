//! The service's own counters: Prometheus collectors at `/metrics`, and the same numbers
//! (counted since the last reset) in the inspection API.
//!
//! The Prometheus counters are the only tally. Prometheus counters must never go down, so
//! the reset route does not touch them: it records a baseline that the JSON view subtracts.

use std::collections::BTreeMap;

use parking_lot::Mutex;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

/// OTLP signals the server accepts.
pub const SIGNALS: [&str; 3] = ["traces", "metrics", "logs"];
/// Upload kinds of the `/v4/*/upload/` routes.
pub const UPLOADS: [&str; 2] = ["logs", "objects"];
/// How a trace batch was authorized: with the token we issued, another token, or none.
pub const AUTH: [&str; 3] = ["token", "other", "none"];
/// Outcomes of a forwarded batch.
pub const FORWARD_OUTCOMES: [&str; 3] = ["sent", "failed", "dropped"];

/// Every counter and gauge of the service.
pub struct Metrics {
    /// `POST /v3/auth/token` calls answered.
    pub auth_requests: IntCounter,
    /// `POST /v3/auth/token` calls refused for a missing or wrong key.
    pub auth_refused: IntCounter,
    /// OTLP requests by `signal` and `outcome` (`accepted`, `rejected`).
    pub otlp_requests: IntCounterVec,
    /// Items received over OTLP by `signal`: spans, metrics, log records.
    pub otlp_items: IntCounterVec,
    /// Accepted trace batches by `auth`.
    pub trace_batches_by_auth: IntCounterVec,
    /// Uploads by `kind` and `outcome` (`accepted`, `rejected`).
    pub uploads: IntCounterVec,
    /// Requests that matched no route (or no method of a route).
    pub unmatched: IntCounter,
    /// Spans, logs and objects dropped to stay within the retention caps, by `kind`.
    pub evicted: IntCounterVec,
    /// Spans, logs and objects held now, by `kind`.
    pub held: IntGaugeVec,
    /// Forwarded batches by `target` and `outcome`.
    pub forwarded: IntCounterVec,
    /// Retries of forwarded batches by `target`.
    pub forward_retries: IntCounterVec,
    /// Batches waiting to be forwarded, by `target`.
    pub forward_queue: IntGaugeVec,
    baseline: Mutex<BTreeMap<String, u64>>,
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
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| -> anyhow::Result<_> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let metrics = Self {
            auth_requests: counter(
                "agl_agentops_auth_requests_total",
                "POST /v3/auth/token calls answered with a token",
            )?,
            auth_refused: counter(
                "agl_agentops_auth_refused_total",
                "POST /v3/auth/token calls refused: no valid API key (keys configured)",
            )?,
            otlp_requests: counter_vec(
                "agl_agentops_otlp_requests_total",
                "OTLP/HTTP export requests by signal and outcome",
                &["signal", "outcome"],
            )?,
            otlp_items: counter_vec(
                "agl_agentops_otlp_items_total",
                "Spans, metrics and log records received over OTLP, by signal",
                &["signal"],
            )?,
            trace_batches_by_auth: counter_vec(
                "agl_agentops_trace_batches_total",
                "Accepted OTLP trace batches by Authorization (token: the one issued here)",
                &["auth"],
            )?,
            uploads: counter_vec(
                "agl_agentops_uploads_total",
                "POST /v4/{logs,objects}/upload/ calls by kind and outcome",
                &["kind", "outcome"],
            )?,
            unmatched: counter(
                "agl_agentops_unmatched_requests_total",
                "Requests that matched no route: an SDK call this server does not know",
            )?,
            evicted: counter_vec(
                "agl_agentops_evicted_total",
                "Spans, logs and objects dropped to stay within the retention caps",
                &["kind"],
            )?,
            held: gauge_vec(
                "agl_agentops_held",
                "Spans, logs and objects held in memory",
                &["kind"],
            )?,
            forwarded: counter_vec(
                "agl_agentops_forward_batches_total",
                "Trace batches forwarded by target and outcome (sent, failed after retries, dropped on a full queue)",
                &["target", "outcome"],
            )?,
            forward_retries: counter_vec(
                "agl_agentops_forward_retries_total",
                "Retried forwarding requests by target",
                &["target"],
            )?,
            forward_queue: gauge_vec(
                "agl_agentops_forward_queue_depth",
                "Trace batches waiting to be forwarded, by target",
                &["target"],
            )?,
            baseline: Mutex::new(BTreeMap::new()),
        };
        // Known label values start at 0, so they show up before their first increment.
        for signal in SIGNALS {
            metrics.otlp_items.with_label_values(&[signal]);
            for outcome in ["accepted", "rejected"] {
                metrics.otlp_requests.with_label_values(&[signal, outcome]);
            }
        }
        for auth in AUTH {
            metrics.trace_batches_by_auth.with_label_values(&[auth]);
        }
        for kind in UPLOADS {
            for outcome in ["accepted", "rejected"] {
                metrics.uploads.with_label_values(&[kind, outcome]);
            }
        }
        for kind in ["spans", "logs", "objects"] {
            metrics.evicted.with_label_values(&[kind]);
            metrics.held.with_label_values(&[kind]);
        }
        Ok(metrics)
    }

    /// Prepares the forwarding series of `target`.
    pub fn add_forward_target(&self, target: &str) {
        for outcome in FORWARD_OUTCOMES {
            self.forwarded.with_label_values(&[target, outcome]);
        }
        self.forward_retries.with_label_values(&[target]);
        self.forward_queue.with_label_values(&[target]);
    }

    /// Every counter as a flat `name → value` map (label values joined with `.`).
    fn totals(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        out.insert("auth_requests".to_owned(), self.auth_requests.get());
        out.insert("unmatched_requests".to_owned(), self.unmatched.get());
        for signal in SIGNALS {
            for outcome in ["accepted", "rejected"] {
                out.insert(
                    format!("otlp_{signal}_requests_{outcome}"),
                    self.otlp_requests
                        .with_label_values(&[signal, outcome])
                        .get(),
                );
            }
        }
        out.insert(
            "spans_received".to_owned(),
            self.otlp_items.with_label_values(&["traces"]).get(),
        );
        out.insert(
            "metrics_received".to_owned(),
            self.otlp_items.with_label_values(&["metrics"]).get(),
        );
        out.insert(
            "log_records_received".to_owned(),
            self.otlp_items.with_label_values(&["logs"]).get(),
        );
        for auth in AUTH {
            out.insert(
                format!("trace_batches_auth_{auth}"),
                self.trace_batches_by_auth.with_label_values(&[auth]).get(),
            );
        }
        for kind in UPLOADS {
            for outcome in ["accepted", "rejected"] {
                out.insert(
                    format!("{}_uploads_{outcome}", kind.trim_end_matches('s')),
                    self.uploads.with_label_values(&[kind, outcome]).get(),
                );
            }
        }
        for kind in ["spans", "logs", "objects"] {
            out.insert(
                format!("{kind}_evicted"),
                self.evicted.with_label_values(&[kind]).get(),
            );
        }
        let mut forward = BTreeMap::<&str, u64>::new();
        for family in prometheus::core::Collector::collect(&self.forwarded) {
            for metric in family.get_metric() {
                let outcome = metric
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "outcome")
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default();
                let value = metric.get_counter().get_value() as u64;
                if let Some(known) = FORWARD_OUTCOMES.iter().find(|o| **o == outcome) {
                    *forward.entry(known).or_default() += value;
                }
            }
        }
        for outcome in FORWARD_OUTCOMES {
            out.insert(
                format!("forward_{outcome}"),
                forward.get(outcome).copied().unwrap_or(0),
            );
        }
        out
    }

    /// The counters since the last [`Metrics::reset`].
    pub fn since_reset(&self) -> BTreeMap<String, u64> {
        let baseline = self.baseline.lock();
        self.totals()
            .into_iter()
            .map(|(name, value)| {
                let base = baseline.get(&name).copied().unwrap_or(0);
                (name, value.saturating_sub(base))
            })
            .collect()
    }

    /// Starts the JSON view's counters from zero again (the Prometheus ones go on).
    pub fn reset(&self) {
        *self.baseline.lock() = self.totals();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_zeroes_the_view_but_not_prometheus() {
        let registry = Registry::new();
        let metrics = Metrics::new(&registry).unwrap();
        metrics.add_forward_target("http://a");
        metrics.auth_requests.inc();
        metrics
            .forwarded
            .with_label_values(&["http://a", "failed"])
            .inc_by(2);
        let view = metrics.since_reset();
        assert_eq!(view["auth_requests"], 1);
        assert_eq!(view["forward_failed"], 2);
        assert_eq!(view["unmatched_requests"], 0);
        metrics.reset();
        metrics.unmatched.inc();
        let view = metrics.since_reset();
        assert_eq!(view["auth_requests"], 0);
        assert_eq!(view["forward_failed"], 0);
        assert_eq!(view["unmatched_requests"], 1);
        assert_eq!(metrics.auth_requests.get(), 1);
    }
}
