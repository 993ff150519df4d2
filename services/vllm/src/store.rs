//! The LightningStore as the proxy sees it: where it is, and its sequence-id counter.

use std::time::Duration;

use anyhow::Context as _;

/// The store the proxy records into.
#[derive(Debug, Clone)]
pub struct StoreClient {
    base: String,
    client: reqwest::Client,
}

/// The store's base URL: `--store-url` (or `AGL_STORE_URL`), else the variables the
/// official client reads (`AGL_SERVER_HOST`, default `localhost`; `AGL_SERVER_PORT`,
/// default 4747) when either is set, else none.
pub fn resolve_url(store_url: Option<&str>) -> Option<String> {
    let nonempty = |v: String| (!v.trim().is_empty()).then(|| v.trim().to_owned());
    if let Some(url) = store_url.map(str::to_owned).and_then(nonempty) {
        return Some(url.trim_end_matches('/').to_owned());
    }
    let host = std::env::var("AGL_SERVER_HOST").ok().and_then(nonempty);
    let port = std::env::var("AGL_SERVER_PORT").ok().and_then(nonempty);
    if host.is_none() && port.is_none() {
        return None;
    }
    let host = host.unwrap_or_else(|| "localhost".to_owned());
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    Some(format!(
        "http://{host}:{}",
        port.unwrap_or_else(|| "4747".to_owned())
    ))
}

/// Checks a base URL: absolute, `http://` or `https://`, with a host.
pub fn validate_http_url(what: &str, url: &str) -> anyhow::Result<()> {
    let parsed = reqwest::Url::parse(url).with_context(|| format!("invalid {what} {url:?}"))?;
    anyhow::ensure!(
        matches!(parsed.scheme(), "http" | "https"),
        "{what} {url:?}: only http:// and https:// are supported"
    );
    anyhow::ensure!(parsed.host().is_some(), "{what} {url:?} has no host");
    Ok(())
}

impl StoreClient {
    /// A client of the store at `base` (checked to be an `http(s)://` URL), sending `key`.
    pub fn new(base: &str, timeout: Duration, key: Option<&str>) -> anyhow::Result<Self> {
        validate_http_url("store url", base)?;
        let client = agl_common::auth::sending_key(agl_common::tls::http_client(), key)?
            // The store is local or in-cluster; a proxy from the environment would only
            // capture that traffic.
            .no_proxy()
            .timeout(timeout)
            .tcp_nodelay(true)
            .user_agent(concat!("agl-vllm/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("failed to build the store http client")?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client,
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The store's OTLP/HTTP traces endpoint.
    pub fn traces_url(&self) -> String {
        format!("{}/v1/traces", self.base)
    }

    /// The next sequence id of the rollout (`POST /v1/agl/spans/next`), taken when a call
    /// arrives so that calls and rewards are ordered by the store's one counter.
    pub async fn next_sequence_id(
        &self,
        rollout_id: &str,
        attempt_id: &str,
    ) -> Result<i64, String> {
        let url = format!("{}/v1/agl/spans/next", self.base);
        // The store's span for this request is a child of the proxy's call.
        let mut trace = http::HeaderMap::new();
        agl_common::ops::inject_trace_context(&mut trace);
        let response = self
            .client
            .post(&url)
            .headers(trace)
            .json(&serde_json::json!({"rollout_id": rollout_id, "attempt_id": attempt_id}))
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        if !status.is_success() {
            return Err(format!(
                "{url} answered {status}: {}",
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ));
        }
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("sequence_id").and_then(serde_json::Value::as_i64))
            .ok_or_else(|| format!("{url} answered without a sequence_id"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_url_wins_and_loses_its_trailing_slash() {
        assert_eq!(
            resolve_url(Some("http://store:4747/")).as_deref(),
            Some("http://store:4747")
        );
    }

    #[test]
    fn only_http_and_https_urls_are_accepted() {
        assert!(validate_http_url("store url", "http://127.0.0.1:4747").is_ok());
        assert!(validate_http_url("store url", "https://store").is_ok());
        assert!(validate_http_url("store url", "unix:///store").is_err());
        assert!(validate_http_url("store url", "store:4747").is_err());
    }
}
