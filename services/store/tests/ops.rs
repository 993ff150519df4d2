//! Operations, tested on the real `agl-store` binary in its own process: OTLP export of
//! request spans (with a caller's `traceparent` continued), metrics that `promtool` accepts
//! and a real Prometheus scrapes, and SIGTERM that lets an in-flight request finish.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use serde_json::Value;

mod process;

use process::{Server, command};

fn start(envs: &[(&str, &str)]) -> Server {
    let mut cmd = command(&[]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    Server::start(cmd)
}

type Received = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

async fn collect(State(received): State<Received>, body: Bytes) -> &'static str {
    let request = ExportTraceServiceRequest::decode(body).expect("valid otlp protobuf");
    received.lock().unwrap().push(request);
    ""
}

// Multi-threaded: the collector must keep answering while the test blocks on the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_and_continue_the_callers_trace() {
    let received: Received = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let app = Router::new()
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let mut server = start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &collector),
        ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test"),
    ]);
    let client = agl_common::tls::http_client().build().unwrap();
    let r = client
        .get(format!("{}/v1/agl/rollouts/ro-abc", server.base))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    server.sigterm();
    assert!(server.wait_exit().success(), "exit 0 after SIGTERM");

    let requests = received.lock().unwrap();
    let mut found = None;
    for req in requests.iter() {
        for rs in &req.resource_spans {
            for ss in &rs.scope_spans {
                for span in &ss.spans {
                    if span.name == "GET /v1/agl/rollouts/{rollout_id}" {
                        found = Some((rs.resource.clone().unwrap(), span.clone()));
                    }
                }
            }
        }
    }
    let names: Vec<String> = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.name.clone())
        .collect();
    let (resource, span) =
        found.unwrap_or_else(|| panic!("the request span was not exported; got {names:?}"));
    assert_eq!(
        hex::encode(&span.trace_id),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(hex::encode(&span.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(span.kind, 2, "SPAN_KIND_SERVER");
    let attr = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue], key: &str| {
        attrs
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.clone())
    };
    let string = |v: Option<any_value::Value>| match v {
        Some(any_value::Value::StringValue(s)) => s,
        other => panic!("not a string: {other:?}"),
    };
    assert_eq!(
        string(attr(&span.attributes, "http.route")),
        "/v1/agl/rollouts/{rollout_id}"
    );
    assert_eq!(string(attr(&span.attributes, "http.request.method")), "GET");
    let status = attr(&span.attributes, "http.response.status_code");
    assert!(
        matches!(status, Some(any_value::Value::IntValue(200))),
        "{status:?}"
    );
    assert_eq!(
        string(attr(&resource.attributes, "service.name")),
        "agl-store"
    );
    assert_eq!(
        string(attr(&resource.attributes, "deployment.environment")),
        "test"
    );
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish() {
    let mut server = start(&[]);
    let client = agl_common::tls::http_client().build().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(2);
    let body = reqwest::Body::wrap_stream(tokio_stream_from(rx));
    let url = format!("{}/v1/agl/queues/rollouts/enqueue", server.base);
    let request = tokio::spawn(
        client
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send(),
    );
    tx.send(Ok(br#"{"rollouts": [{"input": "#.to_vec()))
        .await
        .unwrap();
    // The request is in flight once the server counts it (the scrape itself is the other one).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metrics.contains("http_requests_in_flight 2") {
            break;
        }
        assert!(Instant::now() < deadline, "request never arrived");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.sigterm();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "still serving the in-flight request"
    );
    tx.send(Ok(br#""late"}]}"#.to_vec())).await.unwrap();
    drop(tx);
    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body[0]["input"], "late");
    assert!(server.wait_exit().success());
}

fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// `promtool` and `prometheus` come from Debian's `prometheus` package; the test command
/// installs it and sets `AGL_REQUIRE_PROMETHEUS=1`, so only a bare `cargo test` skips.
fn prometheus_tools() -> bool {
    let found = Command::new("promtool").arg("--version").output().is_ok()
        && Command::new("prometheus").arg("--version").output().is_ok();
    if !found {
        assert!(
            std::env::var("AGL_REQUIRE_PROMETHEUS").is_err(),
            "promtool/prometheus are required but missing"
        );
        eprintln!("skipped: promtool and prometheus are not installed");
    }
    found
}

fn promtool_check(metrics: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn metrics_pass_promtool_and_a_real_prometheus_scrapes_them() {
    if !prometheus_tools() {
        return;
    }
    let server = start(&[]);
    let client = agl_common::tls::http_client().build().unwrap();
    for _ in 0..5 {
        client
            .get(format!("{}/v1/agl/health", server.base))
            .send()
            .await
            .unwrap();
    }
    client
        .post(format!("{}/v1/agl/queues/rollouts/enqueue", server.base))
        .json(&serde_json::json!({"rollouts": [{"input": 1}]}))
        .send()
        .await
        .unwrap();
    for path in ["/metrics", "/v1/prometheus/"] {
        let text = client
            .get(format!("{}{path}", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("# TYPE"), "{path} is an exposition");
        promtool_check(&text);
    }

    let dir = std::env::temp_dir().join(format!("agl-prom-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let target = server.base.trim_start_matches("http://").to_owned();
    std::fs::write(
        dir.join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: agl-store\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=http_requests_total%7Broute%3D%22%2Fv1%2Fagl%2Fhealth%22%7D"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        if let Ok(r) = client.get(&query).send().await
            && let Ok(v) = r.json::<Value>().await
            && let Some(sample) = v["data"]["result"].get(0)
        {
            break sample["value"][1].as_str().unwrap().parse::<f64>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never returned the counter"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let _ = prom.kill();
    let _ = prom.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(value, 5.0, "five health calls counted");
}

/// Text logs written to a pipe or a file (a container's log, `2> file`) carry no colour
/// codes: only a terminal gets them.
#[test]
fn text_logs_to_a_pipe_are_plain() {
    use std::io::{BufRead as _, BufReader};

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_agl-store"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG")
        .env_remove("AGL_STORAGE")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("agl-store starts");
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        let listening = line.contains("127.0.0.1:");
        seen.push(line);
        if listening {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seen.iter().any(|l| l.contains("127.0.0.1:")),
        "no address logged: {seen:?}"
    );
    assert!(
        seen.iter().all(|l| !l.contains('\u{1b}')),
        "colour codes in a piped log: {seen:?}"
    );
    assert!(seen.iter().any(|l| l.contains(" INFO ")), "{seen:?}");
}

/// The v1 gateway passes the request's trace on to the model server: the `traceparent` it
/// sends vLLM names the caller's trace and the store's exported span of the call as parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_continues_the_trace_to_the_model_server() {
    let received: Received = Arc::default();
    let asked = Arc::new(Mutex::new(Vec::<Option<String>>::new()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    let model_server = Router::new()
        .route(
            "/v1/chat/completions",
            post({
                let asked = Arc::clone(&asked);
                move |headers: axum::http::HeaderMap| {
                    asked.lock().unwrap().push(
                        headers
                            .get("traceparent")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                    );
                    async {
                        axum::Json(serde_json::json!({
                            "id": "c", "object": "chat.completion", "created": 0, "model": "m",
                            "prompt_token_ids": [1, 2],
                            "choices": [{"index": 0, "finish_reason": "stop", "token_ids": [3],
                                         "message": {"role": "assistant", "content": "ok"}}],
                        }))
                    }
                }
            }),
        )
        .route("/v1/traces", post(collect))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, model_server).await });

    let mut server = start(&[("OTEL_EXPORTER_OTLP_ENDPOINT", &collector)]);
    let client = agl_common::tls::http_client().build().unwrap();
    let models = serde_json::json!([{"model": "Qwen/Qwen2.5-7B-Instruct", "endpoint": format!("{collector}/v1")}]);
    let r = client
        .post(format!("{}/api/models", server.base))
        .json(&models)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(format!("{}/api/rollouts", server.base))
        .json(&serde_json::json!([{"input": {"q": 1}}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let rollout: Value = r.json().await.unwrap();
    let rollout_id = rollout[0]["rollout_id"].as_str().unwrap().to_owned();
    let r = client
        .post(format!(
            "{}/proxy/rollout/{rollout_id}/attempt/0/mode/train/openai/v1/chat/completions",
            server.base
        ))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    server.sigterm();
    assert!(server.wait_exit().success(), "exit 0 after SIGTERM");

    let sent = asked.lock().unwrap().first().cloned().flatten();
    let sent = sent.expect("the gateway sent no traceparent to the model server");
    let parts: Vec<&str> = sent.split('-').collect();
    assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736", "{sent}");
    let requests = received.lock().unwrap();
    let call = requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .find(|s| s.name.starts_with("POST /proxy/"))
        .expect("the gateway's request span was exported");
    assert_eq!(parts[2], hex::encode(&call.span_id), "{sent}");
}
