//! The launcher as a process: `agl-vllm … serve …` with the double standing in for `vllm`
//! on PATH (a script named `vllm` that runs `agl-vllm fake-vllm`).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};

use crate::helpers::{chat, client, eventually, post};

const BIN: &str = env!("CARGO_BIN_EXE_agl-vllm");

/// A scratch directory holding the `vllm` script and the double's files.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "agl-vllm-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("vllm");
        std::fs::write(
            &script,
            format!("#!/bin/sh\nexec '{BIN}' fake-vllm \"$@\"\n"),
        )
        .unwrap();
        set_executable(&script);
        Self(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.file(name))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// PATH with this directory first, so `vllm` is the double.
    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.0.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn set_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A free loopback port for vLLM (the launcher must know it up front).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running launcher with its output collected.
struct Launched {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Launched {
    fn start(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("PATH", scratch.path_var())
            .env("AGL_DOUBLE_ARGS_FILE", scratch.file("args"))
            .env("AGL_DOUBLE_EVENTS_FILE", scratch.file("events"))
            .env("AGL_LOG_FORMAT", "json")
            .env_remove("AGL_STORE_URL")
            .env_remove("AGL_SERVER_HOST")
            .env_remove("AGL_SERVER_PORT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().unwrap();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        for (stream, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
                Arc::clone(&stdout),
            ),
            (Box::new(child.stderr.take().unwrap()), Arc::clone(&stderr)),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().push(line);
                }
            });
        }
        Self {
            child,
            stdout,
            stderr,
        }
    }

    fn output(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout.lock().join("\n"),
            self.stderr.lock().join("\n")
        )
    }

    /// The proxy's URL, from the launcher's announcement.
    async fn proxy_url(&mut self) -> String {
        let stdout = Arc::clone(&self.stdout);
        let found = eventually(Duration::from_secs(15), "the proxy announcement", || {
            let line = stdout.lock().iter().find_map(|l| {
                l.strip_prefix("agl-vllm: proxy listening on ")
                    .map(str::to_owned)
            });
            async move { line }
        })
        .await;
        found.split(',').next().unwrap().to_owned()
    }

    async fn wait_stdout(&self, needle: &str) {
        let stdout = Arc::clone(&self.stdout);
        eventually(Duration::from_secs(20), needle, || {
            let seen = stdout.lock().iter().any(|l| l.contains(needle));
            async move { seen.then_some(()) }
        })
        .await;
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(self.child.id() as i32).unwrap();
        kill_process(pid, signal).unwrap();
    }

    /// Waits for the exit (bounded); the exit code.
    async fn exit(&mut self, within: Duration) -> i32 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader threads take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return status.code().unwrap_or_else(|| {
                    use std::os::unix::process::ExitStatusExt as _;
                    128 + status.signal().unwrap_or(0)
                });
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("agl-vllm did not exit within {within:?}\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn serve_args<'a>(port: &'a str, extra_agl: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "--agl-port",
        "0",
        "--agl-host",
        "127.0.0.1",
        "--agl-health-interval-seconds",
        "0.2",
    ];
    args.extend_from_slice(extra_agl);
    args.extend(["serve", "agl-model", "--port", port, "--host", "127.0.0.1"]);
    args
}

async fn status_of(proxy: &str) -> Value {
    client()
        .get(format!("{proxy}/agl/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn readyz(proxy: &str) -> u16 {
    client()
        .get(format!("{proxy}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

#[tokio::test]
async fn arguments_pass_through_unchanged_and_readiness_is_awaited() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = [
        "--agl-port",
        "0",
        "serve",
        "agl-model",
        "--agl-host=127.0.0.1",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
        "--chat-template",
        "{{ messages | tojson }}",
        "--max-model-len=2048",
        "--agl-health-interval-seconds",
        "0.2",
        "--served-model-name",
        "agl-model",
        "",
        "--enable-auto-tool-choice",
    ];
    let mut launched = Launched::start(&scratch, &args, &[("AGL_DOUBLE_STARTUP_DELAY_MS", "1500")]);
    let proxy = launched.proxy_url().await;
    // vLLM is loading: the proxy answers, but is not ready and says why on calls.
    assert_eq!(readyz(&proxy).await, 503);
    let (status, _, body) = post(&format!("{proxy}/v1/chat/completions"), &chat("early")).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("is not ready yet"));
    launched.wait_stdout("vllm is ready at").await;
    assert_eq!(readyz(&proxy).await, 200);
    let (status, _, _) = post(&format!("{proxy}/v1/chat/completions"), &chat("later")).await;
    assert_eq!(status, 200);

    let seen: Vec<String> = serde_json::from_str(&scratch.lines("args")[0]).unwrap();
    let expected: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            !a.starts_with("--agl-")
                && !args
                    .get(i.wrapping_sub(1))
                    .is_some_and(|p| ["--agl-port", "--agl-health-interval-seconds"].contains(p))
        })
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(seen, expected);

    launched.signal(Signal::Term);
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        0,
        "{}",
        launched.output()
    );
}

#[tokio::test]
async fn a_crashed_vllm_is_started_again_with_backoff() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = serve_args(&port, &["--agl-restart-delay-seconds", "0.1"]);
    let mut launched = Launched::start(&scratch, &args, &[]);
    let proxy = launched.proxy_url().await;
    launched.wait_stdout("vllm is ready at").await;
    let (status, _, _) = post(&format!("{proxy}/v1/chat/completions"), &chat("[[crash]]")).await;
    assert!(status >= 500, "{status}");
    eventually(Duration::from_secs(20), "vllm to be started again", || {
        let starts = scratch.lines("args").len();
        async move { (starts == 2).then_some(()) }
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "readiness after the restart",
        || {
            let proxy = proxy.clone();
            async move { (readyz(&proxy).await == 200).then_some(()) }
        },
    )
    .await;
    let (status, _, _) = post(&format!("{proxy}/v1/chat/completions"), &chat("again")).await;
    assert_eq!(status, 200);
    assert_eq!(status_of(&proxy).await["restarts"], 1);
    launched.signal(Signal::Term);
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        0,
        "{}",
        launched.output()
    );
}

#[tokio::test]
async fn with_restarts_off_the_launcher_exits_with_vllms_status() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = serve_args(&port, &["--agl-restart", "never"]);
    let mut launched = Launched::start(&scratch, &args, &[]);
    let proxy = launched.proxy_url().await;
    launched.wait_stdout("vllm is ready at").await;
    let _ = post(&format!("{proxy}/v1/chat/completions"), &chat("[[crash]]")).await;
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        3,
        "{}",
        launched.output()
    );
}

#[tokio::test]
async fn a_vllm_that_never_comes_up_is_given_up_after_max_restarts() {
    let scratch = Scratch::new();
    // A `vllm` that fails at once, every time.
    let broken = scratch.file("broken-vllm");
    std::fs::write(
        &broken,
        format!(
            "#!/bin/sh\necho start >> '{}'\nexit 4\n",
            scratch.file("starts").display()
        ),
    )
    .unwrap();
    set_executable(&broken);
    let port = free_port().to_string();
    let bin = broken.display().to_string();
    let args = serve_args(
        &port,
        &[
            "--agl-vllm-bin",
            &bin,
            "--agl-max-restarts",
            "2",
            "--agl-restart-delay-seconds",
            "0.05",
        ],
    );
    let mut launched = Launched::start(&scratch, &args, &[]);
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        4,
        "{}",
        launched.output()
    );
    assert_eq!(scratch.lines("starts").len(), 3);
}

#[tokio::test]
async fn sigterm_drains_in_flight_calls_before_vllm_is_stopped() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = serve_args(&port, &[]);
    let mut launched = Launched::start(&scratch, &args, &[("AGL_DOUBLE_EXIT_CODE", "7")]);
    let proxy = launched.proxy_url().await;
    launched.wait_stdout("vllm is ready at").await;

    // A stream of 10 tokens, 150 ms apart.
    let mut request = chat("[[slow:150]] [[long]] drain me");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(10);
    let response = client()
        .post(format!("{proxy}/v1/chat/completions"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let reading = tokio::spawn(async move { response.bytes().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    launched.signal(Signal::Term);
    // New calls are turned away while the stream finishes.
    eventually(Duration::from_secs(5), "the drain to start", || {
        let proxy = proxy.clone();
        async move { (readyz(&proxy).await == 503).then_some(()) }
    })
    .await;
    let (status, _, body) = post(&format!("{proxy}/v1/chat/completions"), &chat("too late")).await;
    assert_eq!(status, 503, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains("shutting down"));
    let body = reading.await.unwrap();
    assert!(
        body.ends_with(b"data: [DONE]\n\n"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        7,
        "{}",
        launched.output()
    );
    // vLLM got its SIGTERM only once nothing was in flight.
    let events = scratch.lines("events");
    assert!(
        events.contains(&"sigterm in_flight=0".to_owned()),
        "{events:?}"
    );
}

#[tokio::test]
async fn a_vllm_that_ignores_sigterm_is_killed_with_its_process_group() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = serve_args(&port, &["--agl-kill-timeout-seconds", "1"]);
    let grandchild_file = scratch.file("grandchild");
    let grandchild_path = grandchild_file.display().to_string();
    let mut launched = Launched::start(
        &scratch,
        &args,
        &[
            ("AGL_DOUBLE_IGNORE_SIGTERM", "1"),
            ("AGL_DOUBLE_GRANDCHILD_PID_FILE", &grandchild_path),
        ],
    );
    launched.proxy_url().await;
    launched.wait_stdout("vllm is ready at").await;
    let grandchild: i32 = scratch.lines("grandchild")[0].parse().unwrap();
    assert!(alive(grandchild));
    let started = Instant::now();
    launched.signal(Signal::Term);
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        137,
        "{}",
        launched.output()
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually(
        Duration::from_secs(5),
        "the group's other process to be gone",
        || async { (!alive(grandchild)).then_some(()) },
    )
    .await;
}

/// Whether `pid` is a live (not zombie) process.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().chars().next())
        })
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

#[tokio::test]
async fn one_shot_commands_run_in_the_foreground_and_exit_with_vllms_status() {
    let scratch = Scratch::new();
    let mut version = Launched::start(&scratch, &["--version"], &[]);
    assert_eq!(version.exit(Duration::from_secs(10)).await, 0);
    assert_eq!(version.stdout.lock().clone(), ["0.11.0"]);
    let mut help = Launched::start(&scratch, &["--help"], &[]);
    assert_eq!(help.exit(Duration::from_secs(10)).await, 0);
    assert!(help.stdout.lock()[0].starts_with("usage: vllm"));
    let mut unknown = Launched::start(&scratch, &["frobnicate", "--x"], &[]);
    assert_eq!(unknown.exit(Duration::from_secs(10)).await, 2);
    // No proxy for one-shot commands.
    assert!(!unknown.output().contains("proxy listening"));
    let seen: Vec<Vec<String>> = scratch
        .lines("args")
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        seen,
        [vec!["--version"], vec!["--help"], vec!["frobnicate", "--x"]]
    );
    let mut ours = Launched::start(&scratch, &["--agl-help"], &[]);
    assert_eq!(ours.exit(Duration::from_secs(10)).await, 0);
    assert!(ours.output().contains("--agl-vllm-bin"));
    assert_eq!(
        scratch.lines("args").len(),
        3,
        "--agl-help does not run vllm"
    );
}

#[tokio::test]
async fn a_missing_vllm_is_a_clear_error() {
    let scratch = Scratch::new();
    let port = free_port().to_string();
    let args = serve_args(&port, &["--agl-vllm-bin", "/nonexistent/vllm"]);
    let mut missing = Launched::start(&scratch, &args, &[]);
    assert_eq!(missing.exit(Duration::from_secs(10)).await, 127);
    assert!(
        missing.output().contains("not found"),
        "{}",
        missing.output()
    );
    assert!(missing.output().contains("pip install vllm"));
    let mut one_shot = Launched::start(
        &scratch,
        &["--agl-vllm-bin", "/nonexistent/vllm", "--version"],
        &[],
    );
    assert_eq!(one_shot.exit(Duration::from_secs(10)).await, 127);
}

#[tokio::test]
async fn taken_ports_are_clear_errors() {
    let scratch = Scratch::new();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port().to_string();
    // vLLM's port.
    let mut launched = Launched::start(&scratch, &serve_args(&taken, &[]), &[]);
    assert_eq!(launched.exit(Duration::from_secs(10)).await, 1);
    assert!(
        launched.output().contains("already in use"),
        "{}",
        launched.output()
    );
    assert!(scratch.lines("args").is_empty(), "vllm was not started");
    // The proxy's port.
    let port = free_port().to_string();
    let args = [
        "--agl-port",
        &taken,
        "--agl-host",
        "127.0.0.1",
        "serve",
        "agl-model",
        "--port",
        &port,
        "--host",
        "127.0.0.1",
    ];
    let mut launched = Launched::start(&scratch, &args, &[]);
    assert_eq!(launched.exit(Duration::from_secs(10)).await, 1);
    assert!(
        launched.output().contains("already in use"),
        "{}",
        launched.output()
    );
    // The same port for both.
    let args = ["--agl-port", &port, "serve", "agl-model", "--port", &port];
    let mut launched = Launched::start(&scratch, &args, &[]);
    assert_eq!(launched.exit(Duration::from_secs(10)).await, 1);
    assert!(
        launched.output().contains("would both listen on port"),
        "{}",
        launched.output()
    );
    // Bad flags of ours.
    let mut launched = Launched::start(&scratch, &["--agl-nope", "serve", "m"], &[]);
    assert_eq!(launched.exit(Duration::from_secs(10)).await, 2);
    assert!(launched.output().contains("unknown flag --agl-nope"));
    drop(held);
}

/// One trace from the proxy through the store and vLLM: with an OTLP exporter configured,
/// the `traceparent` the proxy sends with its sequence-id request to the store and with the
/// call to vLLM names the trace of the request span it exports, and a span of it as the
/// parent, so a trace backend shows the store's and vLLM's spans under the proxy's request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_is_one_trace_from_the_proxy_through_the_store_and_vllm() {
    use agl_common::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
    use agl_common::otlp::proto::trace::v1::Span;
    use agl_vllm::double::{Double, DoubleConfig};
    use axum::routing::post as route_post;
    use prost::Message as _;

    // A store stand-in: sequence ids (recording the traceparent they were asked with),
    // the recorded calls' export, and an OTLP collector for the proxy's own spans.
    let asked = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let exported = Arc::new(Mutex::new(Vec::<Span>::new()));
    let app = axum::Router::new()
        .route(
            "/v1/agl/spans/next",
            route_post({
                let asked = Arc::clone(&asked);
                move |headers: axum::http::HeaderMap| {
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    asked.lock().push(traceparent);
                    async { axum::Json(json!({"sequence_id": 1})) }
                }
            }),
        )
        .route("/v1/traces", route_post(|| async { "" }))
        .route(
            "/collector/v1/traces",
            route_post({
                let exported = Arc::clone(&exported);
                move |body: bytes::Bytes| {
                    let request = ExportTraceServiceRequest::decode(body).expect("otlp protobuf");
                    exported.lock().extend(
                        request
                            .resource_spans
                            .into_iter()
                            .flat_map(|r| r.scope_spans)
                            .flat_map(|s| s.spans),
                    );
                    async { "" }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let store = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let double = Double::start(DoubleConfig::default()).await.unwrap();

    let scratch = Scratch::new();
    let collector = format!("{store}/collector/v1/traces");
    let args = [
        "proxy",
        "--port",
        "0",
        "--upstream",
        &double.url(),
        "--store-url",
        &store,
    ];
    let mut launched = Launched::start(
        &scratch,
        &args,
        &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &collector)],
    );
    let proxy = launched.proxy_url().await;
    let url = format!("{proxy}/rollout/ro-1/attempt/at-1/v1/chat/completions");
    let (status, _, body) = post(&url, &chat("follow me")).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    // The exporter flushes on the way out.
    launched.signal(Signal::Term);
    assert_eq!(
        launched.exit(Duration::from_secs(20)).await,
        0,
        "{}",
        launched.output()
    );

    let spans = exported.lock().clone();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let request = spans
        .iter()
        .find(|s| s.name.starts_with("POST /rollout/"))
        .unwrap_or_else(|| panic!("no request span among {names:?}"));
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let trace = hex(&request.trace_id);
    let in_trace: Vec<String> = spans
        .iter()
        .filter(|s| s.trace_id == request.trace_id)
        .map(|s| hex(&s.span_id))
        .collect();
    let to_vllm = double
        .state()
        .exchanges()
        .into_iter()
        .find_map(|e| e.headers.get("traceparent").cloned());
    let to_store = asked.lock().first().cloned().flatten();
    for (to, traceparent) in [("the store", to_store), ("vLLM", to_vllm)] {
        let traceparent = traceparent.unwrap_or_else(|| panic!("no traceparent sent to {to}"));
        let parts: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(parts.len(), 4, "{to}: {traceparent}");
        assert_eq!(
            parts[1], trace,
            "{to}: {traceparent} is not the request's trace"
        );
        assert!(
            in_trace.iter().any(|id| id == parts[2]),
            "{to}: parent {} is not a span of the proxy's ({in_trace:?})",
            parts[2]
        );
    }
}
