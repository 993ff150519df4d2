//! The serve loop every service runs: HTTP/1.1 and HTTP/2 on one port, optionally TLS, with
//! explicit limits on what a slow or hostile client can hold, and a graceful drain.
//!
//! Limits (flags in [`ListenArgs`], documented in `docs/security.md`):
//! * connections: at most `--max-connections` are served at once; the rest wait in the
//!   kernel's backlog, so idle sockets cannot exhaust memory or file descriptors;
//! * headers: a request's headers (and a TLS handshake) must arrive within
//!   `--header-timeout-seconds`; a connection on which nothing moves and no request is being
//!   answered (never used, or kept alive and left) is closed after as long;
//! * bodies: a body must be complete within `--body-timeout-seconds` of its headers
//!   (408 otherwise); its size is each service's own limit (413).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::extract::Request as AxumRequest;
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use http::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::http::error_json;
use crate::ops::{Health, Phase};
use crate::tls::{ServerTls, ServerTlsArgs};

/// Connections served at once unless `--max-connections` says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Seconds for a request's headers unless `--header-timeout-seconds` says otherwise.
pub const DEFAULT_HEADER_TIMEOUT: f64 = 30.0;
/// Seconds for a request's body unless `--body-timeout-seconds` says otherwise.
pub const DEFAULT_BODY_TIMEOUT: f64 = 120.0;

/// Flags of the listening socket, the same for every service.
#[derive(Debug, Clone, clap::Args)]
pub struct ListenArgs {
    #[command(flatten)]
    pub tls: ServerTlsArgs,

    /// Most client connections served at once; more wait in the kernel's backlog until one
    /// closes
    #[arg(long, env = "AGL_MAX_CONNECTIONS", value_name = "N",
          default_value_t = DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,

    /// Seconds a client has to send a request's headers (and to finish a TLS handshake); a
    /// connection idle between requests is closed after as long
    #[arg(long, env = "AGL_HEADER_TIMEOUT_SECONDS", value_name = "SECONDS",
          default_value_t = DEFAULT_HEADER_TIMEOUT)]
    pub header_timeout_seconds: f64,

    /// Seconds a client has to send a request's body once its headers arrived (408 after)
    #[arg(long, env = "AGL_BODY_TIMEOUT_SECONDS", value_name = "SECONDS",
          default_value_t = DEFAULT_BODY_TIMEOUT)]
    pub body_timeout_seconds: f64,
}

impl Default for ListenArgs {
    fn default() -> Self {
        Self {
            tls: ServerTlsArgs::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_timeout_seconds: DEFAULT_HEADER_TIMEOUT,
            body_timeout_seconds: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// How a service listens: checked flags, the certificate loaded.
#[derive(Debug, Clone)]
pub struct Listening {
    tls: Option<Arc<ServerTls>>,
    max_connections: usize,
    header_timeout: Duration,
    body_timeout: Duration,
}

impl Default for Listening {
    fn default() -> Self {
        Self::from_args(&ListenArgs::default()).expect("the defaults are valid")
    }
}

impl Listening {
    /// Checks the flags and reads the certificate pair, if any.
    pub fn from_args(args: &ListenArgs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            args.max_connections > 0,
            "--max-connections must be positive"
        );
        let seconds = |flag: &str, v: f64| {
            anyhow::ensure!(
                v.is_finite() && v > 0.0,
                "{flag} must be a positive number of seconds"
            );
            Ok(Duration::from_secs_f64(v))
        };
        Ok(Self {
            tls: ServerTls::load(&args.tls)?,
            max_connections: args.max_connections,
            header_timeout: seconds("--header-timeout-seconds", args.header_timeout_seconds)?,
            body_timeout: seconds("--body-timeout-seconds", args.body_timeout_seconds)?,
        })
    }

    /// `https` when serving TLS, else `http` (for the URLs a service prints).
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then drains: readiness turns to
/// 503, `on_drain` runs (to end long polls), idle connections close, in-flight requests get
/// `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    health: Arc<Health>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
    on_drain: impl FnOnce() + Send + 'static,
    listening: &Listening,
) -> anyhow::Result<()> {
    let body_timeout = listening.body_timeout;
    let app = app.layer(middleware::from_fn(move |req, next| {
        limit_body_time(req, next, body_timeout)
    }));
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(listening.header_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(listening.header_timeout))
        .keep_alive_timeout(listening.header_timeout);
    let builder = Arc::new(builder);
    let tls = listening.tls.as_ref().map(|tls| {
        tls.watch();
        tokio_rustls::TlsAcceptor::from(tls.server_config())
    });
    let permits = Arc::new(Semaphore::new(listening.max_connections));
    let graceful = GracefulShutdown::new();
    health.set(Phase::Ready);

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&permits).acquire_owned() => permit.context("connection limit")?,
            () = &mut shutdown => break,
        };
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(err) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small writes go out at once: a streamed answer's chunks (server-sent events) are
        // not held back by Nagle's algorithm waiting for a delayed acknowledgement (40 ms
        // per chunk on Linux).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let connection = Connection {
            app: app.clone(),
            builder: Arc::clone(&builder),
            tls: tls.clone(),
            handshake_timeout: listening.header_timeout,
        };
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            connection.run(tcp, watcher).await;
            drop(permit);
        });
    }

    health.set(Phase::Draining);
    on_drain();
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(grace) => tracing::warn!(
            grace_seconds = grace.as_secs_f64(),
            "in-flight requests outlived the shutdown grace period"
        ),
    }
    Ok(())
}

struct Connection {
    app: Router,
    builder: Arc<Builder<TokioExecutor>>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handshake_timeout: Duration,
}

impl Connection {
    async fn run(self, tcp: TcpStream, watcher: hyper_util::server::graceful::Watcher) {
        let idle_limit = self.handshake_timeout;
        let activity = Arc::new(Activity::new());
        let stream = match self.tls {
            None => Stream::Plain(tcp),
            Some(acceptor) => {
                match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => Stream::Tls(Box::new(stream)),
                    Ok(Err(err)) => {
                        tracing::debug!(error = %err, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("tls handshake timed out");
                        return;
                    }
                }
            }
        };
        let io = Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        };
        let app = self.app;
        let tracked = Arc::clone(&activity);
        let service = tower::service_fn(move |req: Request<hyper::body::Incoming>| {
            let busy = Busy::start(&tracked);
            let app = app.clone();
            async move {
                let response =
                    tower::ServiceExt::oneshot(app, req.map(axum::body::Body::new)).await?;
                // Busy until the body is sent: a streamed answer is not idle.
                Ok::<_, std::convert::Infallible>(response.map(|body| {
                    axum::body::Body::new(BusyBody {
                        inner: body,
                        _busy: busy,
                    })
                }))
            }
        });
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
        let result = tokio::select! {
            result = watcher.watch(conn) => result,
            () = activity.idle(idle_limit) => Ok(()),
        };
        if let Err(err) = result {
            // Clients that hang up mid-request are routine, not errors of the service.
            tracing::debug!(error = %err, "connection ended with an error");
        }
    }
}

/// What a connection did last: a byte moved, and how many requests are being answered.
struct Activity {
    since: Instant,
    last_millis: AtomicU64,
    busy: AtomicUsize,
}

impl Activity {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_millis: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_millis.store(now, Ordering::Relaxed);
    }

    /// Resolves once no request is being answered and no byte has moved for `limit`: a
    /// connection opened and never used, or kept alive and left.
    async fn idle(&self, limit: Duration) {
        loop {
            if self.busy.load(Ordering::Relaxed) > 0 {
                tokio::time::sleep(limit).await;
                continue;
            }
            let last = Duration::from_millis(self.last_millis.load(Ordering::Relaxed));
            let quiet_until = self.since + last + limit;
            if Instant::now() >= quiet_until {
                return;
            }
            tokio::time::sleep_until(quiet_until.into()).await;
        }
    }
}

/// One request being answered, until its response body is dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its connection busy while it is sent.
    struct BusyBody {
        #[pin]
        inner: axum::body::Body,
        _busy: Busy,
    }
}

impl http_body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client connection, plain or TLS.
enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

pin_project_lite::pin_project! {
    /// A connection that notes when bytes move.
    struct Watched {
        #[pin]
        inner: Stream,
        activity: Arc<Activity>,
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let result = this.inner.poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// A body that does not arrive within `limit` of its headers ends the request with 408
/// (the handler sees a failed body read; the answer is replaced here).
async fn limit_body_time(req: AxumRequest, next: Next, limit: Duration) -> Response {
    let (parts, body) = req.into_parts();
    let timed_out = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let body = TimedBody::new(body, limit, Arc::clone(&timed_out));
    let response = next
        .run(AxumRequest::from_parts(parts, axum::body::Body::new(body)))
        .await;
    if timed_out.load(std::sync::atomic::Ordering::Relaxed) {
        return error_json(
            StatusCode::REQUEST_TIMEOUT,
            &format!(
                "the request body did not arrive within {} s",
                limit.as_secs_f64()
            ),
        );
    }
    response
}

pin_project_lite::pin_project! {
    /// A request body that fails once `limit` has passed since `started` before its end.
    /// The timer is armed only when the body first makes its reader wait: a body already
    /// there (most of them) costs no timer.
    struct TimedBody {
        #[pin]
        inner: axum::body::Body,
        started: Instant,
        limit: Duration,
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        timed_out: Arc<std::sync::atomic::AtomicBool>,
    }
}

impl TimedBody {
    fn new(
        inner: axum::body::Body,
        limit: Duration,
        timed_out: Arc<std::sync::atomic::AtomicBool>,
    ) -> Self {
        Self {
            inner,
            started: Instant::now(),
            limit,
            deadline: None,
            timed_out,
        }
    }
}

impl http_body::Body for TimedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if let Poll::Ready(frame) = this.inner.poll_frame(cx) {
            return Poll::Ready(frame);
        }
        let deadline = this.deadline.get_or_insert_with(|| {
            Box::pin(tokio::time::sleep_until(
                (*this.started + *this.limit).into(),
            ))
        });
        if deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new("request body timed out"))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
