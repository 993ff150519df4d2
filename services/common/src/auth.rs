//! Shared-key authentication, the one layer every service puts in front of its routes.
//!
//! Off unless keys are configured (`--key`/`AGL_KEY`, or better `--key-file`, which is how a
//! Kubernetes Secret arrives). A request carries a key as `Authorization: Bearer KEY` (what
//! upstream v1's clients and OpenTelemetry exporters with `OTEL_EXPORTER_OTLP_HEADERS` send),
//! `x-api-key: KEY`, or HTTP Basic with the key as the password (what aiohttp, the 0.3
//! client's transport, sends for `http://agl:KEY@store:4747`). Several keys may be valid at
//! once, so that one can be rotated without downtime. Comparisons take the same time
//! wherever a wrong key differs. A refusal is upstream v1's `401 {"detail": "Invalid or
//! missing API key"}` with `WWW-Authenticate`, counted in `agl_auth_failures_total` and
//! logged at most every 10 s, never with the key.
//!
//! The paths a service names as open (health) pass without a key; `/metrics`, `/livez` and
//! `/readyz` are added by [`crate::ops`] outside this layer and stay open too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use base64::Engine as _;
use prometheus::{IntCounter, Registry};

use crate::http::error_json;

/// Flags of the shared key, the same for every service.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeyArgs {
    /// A key clients must send (`Authorization: Bearer KEY`, `x-api-key: KEY`, or HTTP Basic
    /// with the key as password); repeat for several valid at once (rotation). Prefer
    /// `--key-file`: a flag's value shows in the process list. Empty: no authentication
    #[arg(
        long = "key",
        env = "AGL_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub keys: Vec<String>,

    /// A file holding keys, one per non-empty line (a mounted Kubernetes Secret); repeatable
    #[arg(long = "key-file", env = "AGL_KEY_FILE", value_name = "FILE")]
    pub key_files: Vec<PathBuf>,
}

/// The keys a service accepts.
pub struct Keys {
    keys: Vec<Box<[u8]>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} redacted)", self.keys.len())
    }
}

/// Longest accepted key, in bytes (a header line has room for far more; this is a key).
pub const MAX_KEY_BYTES: usize = 4096;

impl Keys {
    /// The keys the flags name; `None` when there are none (authentication off).
    pub fn load(args: &KeyArgs) -> anyhow::Result<Option<Arc<Self>>> {
        let mut keys: Vec<Box<[u8]>> = Vec::new();
        for key in &args.keys {
            let key = key.trim();
            if !key.is_empty() {
                keys.push(key.as_bytes().into());
            }
        }
        for file in &args.key_files {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read the key file {}", file.display()))?;
            let before = keys.len();
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(|l| l.as_bytes().into()),
            );
            anyhow::ensure!(
                keys.len() > before,
                "the key file {} holds no key",
                file.display()
            );
        }
        if let Some(long) = keys.iter().find(|k| k.len() > MAX_KEY_BYTES) {
            anyhow::bail!(
                "a key of {} bytes is longer than the {MAX_KEY_BYTES} accepted",
                long.len()
            );
        }
        Ok((!keys.is_empty()).then(|| Arc::new(Self { keys })))
    }

    /// Keys given directly (tests, tools).
    pub fn new(keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| k.into().into_bytes().into_boxed_slice())
                .collect(),
        }
    }

    /// Whether `offered` is one of the keys; every key is compared in full either way.
    pub fn accepts(&self, offered: &[u8]) -> bool {
        self.keys
            .iter()
            .fold(false, |found, key| same(offered, key) | found)
    }

    /// Whether the request's headers carry one of the keys.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        offered_keys(headers).any(|k| self.accepts(&k))
    }
}

/// The first key the flags name, for a client of the service to send (`None`: no key).
pub fn first_key(args: &KeyArgs) -> anyhow::Result<Option<String>> {
    Ok(Keys::load(args)?.map(|keys| String::from_utf8_lossy(&keys.keys[0]).into_owned()))
}

/// Equality whose time depends on `key`'s length only, not on where `offered` differs.
fn same(offered: &[u8], key: &[u8]) -> bool {
    let mut diff = u8::from(offered.len() != key.len());
    for (i, k) in key.iter().enumerate() {
        diff |= offered.get(i).copied().unwrap_or(0) ^ k;
    }
    std::hint::black_box(diff) == 0
}

/// The keys a request offers, in each of the accepted forms.
fn offered_keys(headers: &HeaderMap) -> impl Iterator<Item = Vec<u8>> + '_ {
    let authorization = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| {
            let v = v.as_bytes();
            let (scheme, rest) = v.split_at(v.iter().position(|&b| b == b' ')?);
            let rest = rest.trim_ascii();
            if scheme.eq_ignore_ascii_case(b"bearer") {
                Some(rest.to_vec())
            } else if scheme.eq_ignore_ascii_case(b"basic") {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(rest)
                    .ok()?;
                let colon = decoded.iter().position(|&b| b == b':')?;
                Some(decoded[colon + 1..].to_vec())
            } else {
                None
            }
        });
    let api_key = headers
        .get_all("x-api-key")
        .iter()
        .map(|v| v.as_bytes().trim_ascii().to_vec());
    authorization.chain(api_key)
}

struct Guard {
    keys: Arc<Keys>,
    open: &'static [&'static str],
    failures: IntCounter,
    /// When refusals were last logged, and how many since.
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

/// Puts the key check in front of every route of `app` except the `open` paths; `app` as
/// it is when `keys` is `None`.
pub fn protect(
    app: Router,
    keys: Option<Arc<Keys>>,
    open: &'static [&'static str],
    registry: &Registry,
) -> anyhow::Result<Router> {
    let failures = IntCounter::new(
        "agl_auth_failures_total",
        "Requests refused for a missing or wrong key",
    )?;
    registry.register(Box::new(failures.clone()))?;
    let Some(keys) = keys else {
        return Ok(app);
    };
    let guard = Arc::new(Guard {
        keys,
        open,
        failures,
        last_log: Mutex::new(None),
        unlogged: AtomicU64::new(0),
    });
    Ok(app.layer(middleware::from_fn_with_state(guard, check)))
}

async fn check(State(guard): State<Arc<Guard>>, req: Request, next: Next) -> Response {
    // A browser's CORS preflight never carries credentials; the request it precedes does.
    let preflight = req.method() == axum::http::Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight || guard.open.contains(&req.uri().path()) || guard.keys.admits(req.headers()) {
        return next.run(req).await;
    }
    guard.failures.inc();
    let refused = guard.unlogged.fetch_add(1, Ordering::Relaxed) + 1;
    {
        let mut last = guard
            .last_log
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            *last = Some(Instant::now());
            guard.unlogged.store(0, Ordering::Relaxed);
            tracing::warn!(
                path = req.uri().path(),
                refused_since_last_log = refused,
                "request without a valid key refused"
            );
        }
    }
    let mut response = error_json(StatusCode::UNAUTHORIZED, "Invalid or missing API key");
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="agl""#),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn every_accepted_form_and_nothing_else() {
        let keys = Keys::new(["s3cret", "next-key"]);
        let basic = base64::engine::general_purpose::STANDARD.encode("agl:s3cret");
        for ok in [
            headers(&[("authorization", "Bearer s3cret")]),
            headers(&[("authorization", "bearer next-key")]),
            headers(&[("x-api-key", "s3cret")]),
            headers(&[("authorization", &format!("Basic {basic}"))]),
            headers(&[("authorization", "Bearer wrong"), ("x-api-key", "next-key")]),
        ] {
            assert!(keys.admits(&ok), "{ok:?}");
        }
        let wrong_basic = base64::engine::general_purpose::STANDARD.encode("s3cret:x");
        for refused in [
            headers(&[]),
            headers(&[("authorization", "Bearer s3cre")]),
            headers(&[("authorization", "Bearer s3cret2")]),
            headers(&[("authorization", "s3cret")]),
            headers(&[("authorization", "Token s3cret")]),
            headers(&[("authorization", &format!("Basic {wrong_basic}"))]),
            headers(&[("authorization", "Basic not-base64!")]),
            headers(&[("x-api-key", "")]),
        ] {
            assert!(!keys.admits(&refused), "{refused:?}");
        }
    }

    #[test]
    fn keys_come_from_flags_and_files_and_none_means_off() {
        assert!(Keys::load(&KeyArgs::default()).unwrap().is_none());
        let blank = KeyArgs {
            keys: vec![" ".into()],
            ..KeyArgs::default()
        };
        assert!(Keys::load(&blank).unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("agl-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "from-file\n\nsecond\n").unwrap();
        let args = KeyArgs {
            keys: vec!["flag".into()],
            key_files: vec![file.clone()],
        };
        let keys = Keys::load(&args).unwrap().unwrap();
        for k in ["flag", "from-file", "second"] {
            assert!(keys.accepts(k.as_bytes()), "{k}");
        }
        assert!(!format!("{keys:?}").contains("flag"), "never printed");
        std::fs::write(&file, "\n").unwrap();
        assert!(Keys::load(&args).is_err(), "an empty key file is a mistake");
        let missing = KeyArgs {
            key_files: vec![dir.join("nope")],
            ..KeyArgs::default()
        };
        assert!(Keys::load(&missing).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
