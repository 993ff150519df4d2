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
//! An admin key (`--admin-key-file`) may be set apart for the routes a service names as
//! admin (what changes or exposes the whole service: a backup, a reset, pausing the proxy):
//! once set, only it opens them, and it opens every other route too.
//!
//! The paths a service names as open (health), `/livez`, `/readyz`, the dashboards' assets
//! and, unless `--metrics-require-key`, `/metrics` pass without a key. The layer goes outside
//! [`crate::ops::Ops::wrap`], so it covers the routes that adds.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use base64::Engine as _;
use prometheus::{IntCounterVec, Opts, Registry};

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

    /// A key for the admin routes (backup, reset, inspection, pause): once set, only an
    /// admin key opens them; it opens every other route too. Repeatable
    #[arg(
        long = "admin-key",
        env = "AGL_ADMIN_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub admin_keys: Vec<String>,

    /// A file holding admin keys, one per non-empty line; repeatable
    #[arg(
        long = "admin-key-file",
        env = "AGL_ADMIN_KEY_FILE",
        value_name = "FILE"
    )]
    pub admin_key_files: Vec<PathBuf>,

    /// Also require a key for `/metrics` (open by default, for scrapers inside the cluster)
    #[arg(long, env = "AGL_METRICS_REQUIRE_KEY")]
    pub metrics_require_key: bool,
}

impl KeyArgs {
    /// Whether ordinary keys are configured (before reading any file).
    pub fn configured(&self) -> bool {
        self.keys.iter().any(|k| !k.trim().is_empty()) || !self.key_files.is_empty()
    }
}

/// The keys a service accepts, by kind.
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Keys of the ordinary routes (`None`: they are open).
    pub keys: Option<Arc<Keys>>,
    /// Keys of the admin routes (`None`: the ordinary keys open them).
    pub admin: Option<Arc<Keys>>,
    /// Whether `/metrics` needs a key.
    pub metrics_require_key: bool,
}

impl Access {
    /// What the flags configure; logs a line when everything is open.
    pub fn load(args: &KeyArgs) -> anyhow::Result<Self> {
        let access = Self {
            keys: Keys::load_from(&args.keys, &args.key_files)?,
            admin: Keys::load_from(&args.admin_keys, &args.admin_key_files)?,
            metrics_require_key: args.metrics_require_key,
        };
        if access.keys.is_none() && access.admin.is_none() {
            tracing::info!("no --key or --key-file: every route answers without a key");
        }
        Ok(access)
    }

    /// Ordinary keys only (tests, tools).
    pub fn keys(keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            keys: Some(Arc::new(Keys::new(keys))),
            ..Self::default()
        }
    }

    /// Whether any key is required anywhere.
    pub fn enabled(&self) -> bool {
        self.keys.is_some() || self.admin.is_some()
    }

    /// The same, with `token` also accepted on the ordinary routes when they need a key (a
    /// credential the service hands out itself, as the AgentOps endpoint does).
    pub fn also_accepting(mut self, token: &str) -> Self {
        if let Some(keys) = &self.keys {
            let mut fixed = keys.fixed.clone();
            fixed.push(token.as_bytes().into());
            self.keys = Some(Arc::new(Keys {
                fixed,
                files: Arc::clone(&keys.files),
            }));
        }
        self
    }

    /// Whether `headers` open a route of the given kind.
    pub fn admits(&self, headers: &HeaderMap, admin_route: bool) -> bool {
        let admin = || self.admin.as_ref().is_some_and(|k| k.admits(headers));
        if admin_route && self.admin.is_some() {
            return admin();
        }
        match &self.keys {
            // Ordinary routes are open (and admin routes, when no admin key is set).
            None => true,
            Some(keys) => keys.admits(headers) || admin(),
        }
    }
}

/// Which routes of a service are open and which are admin routes.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Exact paths that need no key (health).
    pub open: &'static [&'static str],
    /// Path prefixes of the admin routes.
    pub admin: &'static [&'static str],
    /// Further exact paths that expose metrics: open as `/metrics` is, unless
    /// `--metrics-require-key`.
    pub metrics: &'static [&'static str],
}

/// The paths [`crate::ops::Ops::wrap`] adds that stay open.
const OPS_OPEN: &[&str] = &["/livez", "/readyz"];

/// The dashboards' stylesheet, script and icon ([`crate::ui::assets`]) are the same in every
/// build and hold no data: open, so that a page never loads unstyled while a browser has
/// not yet offered the credentials it was asked for on another path.
fn is_ui_asset(path: &str) -> bool {
    path.strip_prefix(crate::ui::ASSETS)
        .is_some_and(|rest| crate::ui::ASSET_NAMES.contains(&rest))
}

/// The keys a service accepts: those given directly, and those of key files, which are
/// read again when a file changes (a rotated Kubernetes Secret reaches the pod's files
/// within a minute; no restart is needed).
pub struct Keys {
    /// Flags and tokens: fixed for the process's life.
    fixed: Vec<Box<[u8]>>,
    /// Key files and what they held at their last reading; shared by the copies
    /// [`Access::also_accepting`] makes, so that one reload serves them all.
    files: Arc<FileKeys>,
}

/// Keys as bytes.
type KeyList = Vec<Box<[u8]>>;

struct FileKeys {
    paths: Vec<PathBuf>,
    /// The files' modification times at the last reading, and the keys they held.
    current: RwLock<(Vec<Option<SystemTime>>, Arc<KeyList>)>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keys({} redacted)",
            self.fixed.len() + self.file_keys().len()
        )
    }
}

/// Longest accepted key, in bytes (a header line has room for far more; this is a key).
pub const MAX_KEY_BYTES: usize = 4096;

/// Reads the keys of `files`, one per non-empty line; a file without one is an error.
fn read_key_files(files: &[PathBuf]) -> anyhow::Result<Vec<Box<[u8]>>> {
    let mut keys: Vec<Box<[u8]>> = Vec::new();
    for file in files {
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
    check_lengths(&keys)?;
    Ok(keys)
}

fn check_lengths(keys: &[Box<[u8]>]) -> anyhow::Result<()> {
    if let Some(long) = keys.iter().find(|k| k.len() > MAX_KEY_BYTES) {
        anyhow::bail!(
            "a key of {} bytes is longer than the {MAX_KEY_BYTES} accepted",
            long.len()
        );
    }
    Ok(())
}

fn stamps(files: &[PathBuf]) -> Vec<Option<SystemTime>> {
    files
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

impl Keys {
    /// The keys of `keys` and `files`; `None` when there are none.
    fn load_from(keys_given: &[String], files: &[PathBuf]) -> anyhow::Result<Option<Arc<Self>>> {
        let fixed: Vec<Box<[u8]>> = keys_given
            .iter()
            .map(|k| k.trim())
            .filter(|k| !k.is_empty())
            .map(|k| k.as_bytes().into())
            .collect();
        check_lengths(&fixed)?;
        let stamped = stamps(files);
        let from_files = read_key_files(files)?;
        if fixed.is_empty() && from_files.is_empty() {
            return Ok(None);
        }
        Ok(Some(Arc::new(Self {
            fixed,
            files: Arc::new(FileKeys {
                paths: files.to_vec(),
                current: RwLock::new((stamped, Arc::new(from_files))),
            }),
        })))
    }

    /// Keys given directly (tests, tools).
    pub fn new(keys: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            fixed: keys
                .into_iter()
                .map(|k| k.into().into_bytes().into_boxed_slice())
                .collect(),
            files: Arc::new(FileKeys {
                paths: Vec::new(),
                current: RwLock::new((Vec::new(), Arc::default())),
            }),
        }
    }

    fn file_keys(&self) -> Arc<KeyList> {
        Arc::clone(
            &self
                .files
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .1,
        )
    }

    /// The first key (what a client of the service sends).
    fn first(&self) -> String {
        let files = self.file_keys();
        let first = self.fixed.first().or_else(|| files.first());
        String::from_utf8_lossy(first.map_or(&[][..], |k| &k[..])).into_owned()
    }

    /// Whether `offered` is one of the keys; every key is compared in full either way.
    pub fn accepts(&self, offered: &[u8]) -> bool {
        let files = self.file_keys();
        self.fixed
            .iter()
            .chain(files.iter())
            .fold(false, |found, key| same(offered, key) | found)
    }

    /// Whether the request's headers carry one of the keys.
    pub fn admits(&self, headers: &HeaderMap) -> bool {
        offered_keys(headers).any(|k| self.accepts(&k))
    }

    /// Reads the key files again if one changed; keeps the previous keys when a file is
    /// unreadable or empty (a Secret being rewritten). Whether the keys changed.
    pub fn reload_if_changed(&self) -> bool {
        let files = &self.files;
        if files.paths.is_empty() {
            return false;
        }
        let now = stamps(&files.paths);
        if now
            == files
                .current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .0
        {
            return false;
        }
        match read_key_files(&files.paths) {
            Ok(keys) => {
                let count = keys.len();
                *files
                    .current
                    .write()
                    .unwrap_or_else(PoisonError::into_inner) = (now, Arc::new(keys));
                tracing::info!(keys = count, "key files changed: keys reloaded");
                true
            }
            Err(err) => {
                tracing::warn!(
                    error = format!("{err:#}"),
                    "a key file changed but cannot be used; keeping the previous keys"
                );
                false
            }
        }
    }

    /// Checks the key files every [`crate::tls::RELOAD_INTERVAL`] while the runtime lives.
    fn watch(self: &Arc<Self>) {
        if self.files.paths.is_empty() {
            return;
        }
        let keys = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(crate::tls::RELOAD_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(keys) = keys.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || keys.reload_if_changed()).await;
            }
        });
    }
}

/// The key a client of the service sends (`None`: none): the first admin key if there is
/// one (it opens every route), else the first ordinary key.
pub fn first_key(args: &KeyArgs) -> anyhow::Result<Option<String>> {
    let admin = Keys::load_from(&args.admin_keys, &args.admin_key_files)?;
    let keys = match admin {
        Some(admin) => Some(admin),
        None => Keys::load_from(&args.keys, &args.key_files)?,
    };
    Ok(keys.map(|keys| keys.first()))
}

/// A key a client sends to another service: `--{name}-key`, or the first line of
/// `--{name}-key-file`; `None` when neither is given.
pub fn client_key(
    key: Option<&str>,
    file: Option<&std::path::Path>,
) -> anyhow::Result<Option<String>> {
    let keys = Keys::load_from(
        &key.map(str::to_owned).into_iter().collect::<Vec<_>>(),
        &file
            .map(std::path::Path::to_path_buf)
            .into_iter()
            .collect::<Vec<_>>(),
    )?;
    Ok(keys.map(|keys| keys.first()))
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

/// `builder` with `Authorization: Bearer KEY` on every request when there is a key (the
/// header is marked sensitive, so it never shows in debug output).
pub fn sending_key(
    builder: reqwest::ClientBuilder,
    key: Option<&str>,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let Some(key) = key else {
        return Ok(builder);
    };
    let mut value =
        HeaderValue::from_str(&format!("Bearer {key}")).context("a key must be printable ASCII")?;
    value.set_sensitive(true);
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    Ok(builder.default_headers(headers))
}

struct Guard {
    access: Access,
    policy: Policy,
    failures: IntCounterVec,
    /// When refusals were last logged, and how many since.
    last_log: Mutex<Option<Instant>>,
    unlogged: AtomicU64,
}

impl Guard {
    fn is_open(&self, path: &str) -> bool {
        self.policy.open.contains(&path)
            || OPS_OPEN.contains(&path)
            || is_ui_asset(path)
            || ((path == "/metrics" || self.policy.metrics.contains(&path))
                && !self.access.metrics_require_key)
    }

    fn is_admin(&self, path: &str) -> bool {
        self.policy
            .admin
            .iter()
            .any(|prefix| path.starts_with(prefix))
    }
}

/// Puts the key check in front of every route of `app` (wrapped by [`crate::ops::Ops::wrap`]
/// already) except the open ones; `app` as it is when `access` requires no key.
pub fn protect(
    app: Router,
    access: &Access,
    policy: Policy,
    registry: &Registry,
) -> anyhow::Result<Router> {
    let failures = IntCounterVec::new(
        Opts::new(
            "agl_auth_failures_total",
            "Requests refused for a missing or wrong key, by route kind (api, admin)",
        ),
        &["kind"],
    )?;
    registry.register(Box::new(failures.clone()))?;
    if !access.enabled() {
        return Ok(app);
    }
    for keys in [&access.keys, &access.admin].into_iter().flatten() {
        keys.watch();
    }
    let guard = Arc::new(Guard {
        access: access.clone(),
        policy,
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
    let path = req.uri().path();
    if preflight || guard.is_open(path) {
        return next.run(req).await;
    }
    let admin = guard.is_admin(path);
    if guard.access.admits(req.headers(), admin) {
        return next.run(req).await;
    }
    // An admin route is refused as one only where an admin key exists to open it.
    let admin = admin && guard.access.admin.is_some();
    let kind = if admin { "admin" } else { "api" };
    guard.failures.with_label_values(&[kind]).inc();
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
                path,
                kind,
                refused_since_last_log = refused,
                "request without a valid key refused"
            );
        }
    }
    refusal(if admin {
        "Invalid or missing admin key"
    } else {
        "Invalid or missing API key"
    })
}

/// The 401 every refusal is: upstream v1's body and `WWW-Authenticate` challenges, Bearer
/// for clients and Basic so that a browser opening a dashboard asks for the key (as the
/// password; any user name).
pub fn refusal(detail: &str) -> Response {
    let mut response = error_json(StatusCode::UNAUTHORIZED, detail);
    let headers = response.headers_mut();
    headers.insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Bearer realm="agl""#),
    );
    headers.append(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(r#"Basic realm="agl", charset="UTF-8""#),
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
        let load = |a: &KeyArgs| Keys::load_from(&a.keys, &a.key_files);
        assert!(load(&KeyArgs::default()).unwrap().is_none());
        let blank = KeyArgs {
            keys: vec![" ".into()],
            ..KeyArgs::default()
        };
        assert!(load(&blank).unwrap().is_none());
        let dir = std::env::temp_dir().join(format!("agl-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("key");
        std::fs::write(&file, "from-file\n\nsecond\n").unwrap();
        let args = KeyArgs {
            keys: vec!["flag".into()],
            key_files: vec![file.clone()],
            ..KeyArgs::default()
        };
        let keys = load(&args).unwrap().unwrap();
        for k in ["flag", "from-file", "second"] {
            assert!(keys.accepts(k.as_bytes()), "{k}");
        }
        assert!(!format!("{keys:?}").contains("flag"), "never printed");
        std::fs::write(&file, "\n").unwrap();
        assert!(load(&args).is_err(), "an empty key file is a mistake");
        let missing = KeyArgs {
            key_files: vec![dir.join("nope")],
            ..KeyArgs::default()
        };
        assert!(load(&missing).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_admin_key_alone_opens_admin_routes_and_opens_every_other() {
        let access = Access {
            keys: Some(Arc::new(Keys::new(["user"]))),
            admin: Some(Arc::new(Keys::new(["root"]))),
            metrics_require_key: false,
        };
        let user = headers(&[("authorization", "Bearer user")]);
        let root = headers(&[("x-api-key", "root")]);
        assert!(access.admits(&user, false));
        assert!(
            !access.admits(&user, true),
            "an ordinary key never opens an admin route"
        );
        assert!(access.admits(&root, true));
        assert!(access.admits(&root, false));
        assert!(!access.admits(&headers(&[]), false));

        let admin_only = Access {
            keys: None,
            ..access
        };
        assert!(
            admin_only.admits(&headers(&[]), false),
            "ordinary routes stay open"
        );
        assert!(!admin_only.admits(&user, true));
        assert!(admin_only.admits(&root, true));

        let user_only = Access::keys(["user"]);
        assert!(
            user_only.admits(&user, true),
            "without an admin key, the key opens all"
        );
        assert!(!user_only.admits(&root, true));

        let with_token = user_only.also_accepting("tok");
        assert!(with_token.admits(&headers(&[("authorization", "Bearer tok")]), false));
        assert!(!Access::default().also_accepting("tok").enabled());
    }

    #[test]
    fn a_changed_key_file_is_read_again_and_a_broken_one_keeps_the_keys() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "old-key\n").unwrap();
        let keys = Keys::load_from(&["flag".into()], std::slice::from_ref(&file))
            .unwrap()
            .unwrap();
        let copy = Access {
            keys: Some(Arc::clone(&keys)),
            ..Access::default()
        }
        .also_accepting("token");
        assert!(!keys.reload_if_changed(), "nothing changed");
        // Each write gets a later modification time, whatever the clock's grain.
        let rewrite = |text: &str, later_by: u64| {
            std::fs::write(&file, text).unwrap();
            let later = std::time::SystemTime::now() + std::time::Duration::from_secs(later_by);
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        // Rotation: the new key is added beside the old, then the old one goes.
        rewrite("old-key\nnew-key\n", 1);
        assert!(keys.reload_if_changed());
        assert!(keys.accepts(b"new-key") && keys.accepts(b"old-key") && keys.accepts(b"flag"));
        let bearer = |k: &str| headers(&[("authorization", &format!("Bearer {k}"))]);
        assert!(
            copy.admits(&bearer("new-key"), false),
            "copies see the reload"
        );
        rewrite("new-key\n", 2);
        assert!(keys.reload_if_changed());
        assert!(!keys.accepts(b"old-key") && keys.accepts(b"new-key"));
        // Half-written: an empty file keeps the keys there were.
        rewrite("", 3);
        assert!(!keys.reload_if_changed());
        assert!(keys.accepts(b"new-key"));
        assert!(copy.admits(&bearer("token"), false));
    }
}
