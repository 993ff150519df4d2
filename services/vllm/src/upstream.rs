//! vLLM's readiness, as the proxy and the launcher see it.
//!
//! vLLM binds its port only once the model is loaded, and `/v1/models` is the
//! model-aware answer that it serves (llm-d uses it for start-up and readiness). The
//! [`monitor`] polls it (every 0.5 s while vLLM is not ready, then every
//! `--health-interval-seconds`) and folds the answer into the proxy's `/readyz`. The
//! launcher marks vLLM down at once when the process exits.

use std::sync::Arc;
use std::time::Duration;

use agl_common::ops::{Health, Phase};
use parking_lot::RwLock;
use serde_json::Value;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// The first vLLM release that returns token ids (`return_token_ids`).
const TOKEN_IDS_SINCE: (u64, u64, u64) = (0, 10, 2);

/// What is known about vLLM right now.
pub struct Upstream {
    base: String,
    api_key: Option<String>,
    ready: watch::Sender<bool>,
    models: RwLock<Vec<String>>,
    version: RwLock<Option<String>>,
}

impl Upstream {
    /// vLLM at `base` (no trailing slash), probed with `api_key` as a bearer token if set.
    pub fn new(base: &str, api_key: Option<String>) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            api_key,
            ready: watch::Sender::new(false),
            models: RwLock::new(Vec::new()),
            version: RwLock::new(None),
        }
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Whether vLLM answered `/v1/models` last time.
    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    /// Changes of readiness.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.ready.subscribe()
    }

    /// Marks vLLM down (the launcher's child exited).
    pub fn set_down(&self) {
        self.ready.send_replace(false);
    }

    /// The served model names from the last `/v1/models`.
    pub fn models(&self) -> Vec<String> {
        self.models.read().clone()
    }

    /// vLLM's version, once read from `/version`.
    pub fn version(&self) -> Option<String> {
        self.version.read().clone()
    }

    /// The only served model, for `--served-model auto`.
    pub fn single_model(&self) -> Option<String> {
        let models = self.models.read();
        (models.len() == 1).then(|| models[0].clone())
    }

    /// One probe of `/v1/models`: ready when it answers 200 with a model list, or 401/403
    /// (vLLM runs with `--api-key` the proxy was not given: it serves, the agents bring
    /// the key).
    pub async fn probe(&self, client: &reqwest::Client) -> bool {
        let mut request = client.get(format!("{}/v1/models", self.base));
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let Ok(response) = request.send().await else {
            return false;
        };
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return true;
        }
        if !status.is_success() {
            return false;
        }
        let Ok(body) = response.json::<Value>().await else {
            return false;
        };
        let models: Vec<String> = body["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["id"].as_str().map(str::to_owned))
            .collect();
        *self.models.write() = models;
        true
    }

    async fn read_version(&self, client: &reqwest::Client) {
        let Ok(response) = client.get(format!("{}/version", self.base)).send().await else {
            return;
        };
        let Ok(body) = response.json::<Value>().await else {
            return;
        };
        if let Some(version) = body["version"].as_str() {
            if parse_version(version).is_some_and(|v| v < TOKEN_IDS_SINCE) {
                tracing::warn!(
                    version,
                    "vllm older than 0.10.2 returns no token ids: calls are recorded without them \
                     (upstream's patched `agl vllm` is needed for such versions)"
                );
            }
            *self.version.write() = Some(version.to_owned());
        }
    }
}

/// `major.minor.patch` of a version string such as `0.10.2` or `0.11.0rc1+cu128`.
fn parse_version(version: &str) -> Option<(u64, u64, u64)> {
    let mut parts = version.split(['.', '+', '-']).map(|p| {
        let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().ok()
    });
    Some((
        parts.next()??,
        parts.next()??,
        parts.next().flatten().unwrap_or(0),
    ))
}

/// Sets `/readyz` from vLLM's readiness, unless the service is draining.
pub fn fold_readiness(readiness: &Health, upstream_ready: bool) {
    if readiness.phase() != Phase::Draining {
        readiness.set(if upstream_ready {
            Phase::Ready
        } else {
            Phase::Starting
        });
    }
}

/// Polls vLLM until `stop` turns true, keeping [`Upstream`], `/readyz` and the
/// `agl_vllm_upstream_ready` gauge current.
pub async fn monitor(
    upstream: Arc<Upstream>,
    client: reqwest::Client,
    interval: Duration,
    readiness: Arc<Health>,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let mut logged_down = false;
    loop {
        let ready = upstream.probe(&client).await;
        let was = upstream.ready.send_replace(ready);
        if ready && !was {
            tracing::info!(upstream = upstream.base(), models = ?upstream.models(), "vllm is ready");
            logged_down = false;
            upstream.read_version(&client).await;
        } else if !ready && was {
            tracing::warn!(
                upstream = upstream.base(),
                "vllm stopped answering /v1/models"
            );
        } else if !ready && !logged_down {
            tracing::info!(
                upstream = upstream.base(),
                "waiting for vllm to answer /v1/models"
            );
            logged_down = true;
        }
        fold_readiness(&readiness, ready);
        metrics.upstream_ready.set(i64::from(ready));
        let pause = if ready {
            interval
        } else {
            interval.min(Duration::from_millis(500))
        };
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|s| *s) => return,
            // The launcher marked vLLM down: probe again at once.
            _ = async {
                let mut rx = upstream.subscribe();
                let _ = rx.wait_for(|r| !*r).await;
            }, if ready => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("0.10.2"), Some((0, 10, 2)));
        assert_eq!(parse_version("0.11.0rc1+cu128"), Some((0, 11, 0)));
        assert_eq!(parse_version("0.9"), Some((0, 9, 0)));
        assert_eq!(parse_version("dev"), None);
        assert!(parse_version("0.9.2").unwrap() < TOKEN_IDS_SINCE);
        assert!(parse_version("0.10.10").unwrap() > TOKEN_IDS_SINCE);
    }

    #[test]
    fn readiness_follows_vllm_but_not_out_of_draining() {
        let health = Health::default();
        fold_readiness(&health, true);
        assert_eq!(health.phase(), Phase::Ready);
        fold_readiness(&health, false);
        assert_eq!(health.phase(), Phase::Starting);
        health.set(Phase::Draining);
        fold_readiness(&health, true);
        assert_eq!(health.phase(), Phase::Draining);
    }
}
