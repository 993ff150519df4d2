//! A test double of vLLM's OpenAI server, for the tests and the overhead benchmark: no
//! GPU, no model, deterministic answers in vLLM's exact shapes (0.10.2 and newer, with
//! `return_token_ids`).
//!
//! It is not vLLM. It "tokenizes" by words, answers by echoing the last user words, and
//! does what markers in the last message ask:
//!
//! | marker | effect |
//! |---|---|
//! | `[[tool]]` (with `tools`) | a tool call to the first tool, streamed as vLLM's hermes parser does (swallowed tokens as empty-content deltas that still carry `token_ids`) |
//! | `[[reasoning]]` | `reasoning_content` before the answer |
//! | `[[long]]` | exactly `max_tokens` tokens (default 16) |
//! | `[[slow]]`, `[[slow:MS]]` | 100 ms (or MS) between streamed tokens |
//! | `[[error]]`, `[[error500]]` | a 400 or 500 error body |
//! | `[[stream-error]]` | an error event in the middle of a stream |
//! | `[[crash]]` | the process exits with status 3 (`fake-vllm` only) |
//!
//! Routes: `/v1/chat/completions`, `/v1/completions`, `/v1/models`, `/health`, `/ping`,
//! `/version`, `/tokenize`, `/detokenize`, `/load`, `/metrics`; and for tests
//! `/_double/exchanges` (every request and the exact bytes answered; `DELETE` clears) and
//! `/_double/stats`.
//!
//! `agl-vllm fake-vllm` stands in for the `vllm` executable (a script named `vllm` on
//! `PATH` runs it): `serve MODEL [--host H] [--port P] [--served-model-name N…]
//! [--api-key K]`, other flags ignored; `--version`, `--help`. Environment:
//! `AGL_DOUBLE_ARGS_FILE` (each start appends its argv as a JSON line),
//! `AGL_DOUBLE_EVENTS_FILE` (lines `started`, `listening`, `sigterm in_flight=N`,
//! `exiting CODE`), `AGL_DOUBLE_STARTUP_DELAY_MS` (sleep before binding, as vLLM loads its
//! model before it listens), `AGL_DOUBLE_EXIT_CODE` (status after SIGTERM, default 0),
//! `AGL_DOUBLE_IGNORE_SIGTERM=1`, `AGL_DOUBLE_GRANDCHILD_PID_FILE` (start a `sleep` in
//! the process group and write its pid), `AGL_DOUBLE_TOKEN_DELAY_MS`.

use std::collections::BTreeMap;
use std::future::Future as _;
use std::io::Write as _;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use futures::Stream;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How the double behaves.
#[derive(Debug, Clone)]
pub struct DoubleConfig {
    /// Served model names (`--served-model-name`); the first is reported.
    pub models: Vec<String>,
    /// The model path (`root` in `/v1/models`).
    pub root: String,
    /// What `/version` says.
    pub version: String,
    /// Pause between streamed tokens.
    pub token_delay: Duration,
    /// Whether `[[crash]]` may end the process.
    pub allow_crash: bool,
    /// Bearer key required on `/v1/*`, as vLLM's `--api-key`.
    pub api_key: Option<String>,
}

impl Default for DoubleConfig {
    fn default() -> Self {
        Self {
            models: vec!["agl-model".into()],
            root: "agl/double-model".into(),
            version: "0.11.0".into(),
            token_delay: Duration::ZERO,
            allow_crash: false,
            api_key: None,
        }
    }
}

/// One request and the exact answer.
#[derive(Debug, Clone, Serialize)]
pub struct Exchange {
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Request headers (lowercase names).
    pub headers: BTreeMap<String, String>,
    /// Request body as JSON (`null` when not JSON).
    pub body: Value,
    /// Answer status.
    pub status: u16,
    /// The bytes answered, in full (streams: as far as they got).
    pub response: String,
    /// Whether the answer was sent to its end (a stream can be cut by the client).
    pub complete: bool,
    /// The prompt token ids the double produced.
    pub prompt_token_ids: Vec<u64>,
    /// The generated token ids per choice.
    pub token_ids: Vec<Vec<u64>>,
}

/// Shared state of a running double.
pub struct DoubleState {
    config: DoubleConfig,
    exchanges: Mutex<Vec<Exchange>>,
    aborted: AtomicUsize,
    in_flight: AtomicUsize,
    ids: AtomicU64,
}

impl DoubleState {
    /// A fresh state.
    pub fn new(config: DoubleConfig) -> Arc<Self> {
        Arc::new(Self {
            config,
            exchanges: Mutex::new(Vec::new()),
            aborted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            ids: AtomicU64::new(1),
        })
    }

    /// Every exchange so far.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.exchanges.lock().clone()
    }

    /// Streams cut off by the client.
    pub fn aborted(&self) -> usize {
        self.aborted.load(Ordering::SeqCst)
    }

    /// Generation requests being answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn record(&self, exchange: Exchange) -> usize {
        let mut log = self.exchanges.lock();
        log.push(exchange);
        log.len() - 1
    }
}

/// A double serving on a loopback port.
pub struct Double {
    addr: std::net::SocketAddr,
    state: Arc<DoubleState>,
    stop: Option<oneshot::Sender<()>>,
    handle: tokio::task::JoinHandle<()>,
}

impl Double {
    /// Starts a double on `127.0.0.1`, port 0.
    pub async fn start(config: DoubleConfig) -> anyhow::Result<Self> {
        Self::start_on(crate::net::bind("127.0.0.1:0").await?, config)
    }

    /// Starts a double on `listener` (bound with TCP_NODELAY, as vLLM's uvicorn has it, or
    /// streams stall on delayed acknowledgements).
    pub fn start_on(listener: TcpListener, config: DoubleConfig) -> anyhow::Result<Self> {
        let addr = listener.local_addr()?;
        let state = DoubleState::new(config);
        let (stop, stopped) = oneshot::channel::<()>();
        let app = router(Arc::clone(&state));
        let handle = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(Self {
            addr,
            state,
            stop: Some(stop),
            handle,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The shared state (exchanges, counters).
    pub fn state(&self) -> &Arc<DoubleState> {
        &self.state
    }

    /// Stops serving (in-flight answers are dropped).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.handle.abort();
        let _ = self.handle.await;
    }
}

/// The double's routes.
pub fn router(state: Arc<DoubleState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(generate))
        .route("/v1/completions", post(generate))
        .route("/v1/models", get(models))
        .route("/health", get(|| async { StatusCode::OK }))
        .route("/ping", any(|| async { StatusCode::OK }))
        .route("/version", get(version))
        .route("/load", get(load))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .route("/_double/exchanges", get(exchanges).delete(clear))
        .route("/_double/stats", get(stats))
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                [(header::CONTENT_TYPE, "application/json")],
                r#"{"detail":"Not Found"}"#,
            )
        })
        .with_state(state)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn json_response(status: StatusCode, body: &Value) -> (StatusCode, String) {
    (status, body.to_string())
}

fn vllm_error(status: StatusCode, kind: &str, message: &str, param: Option<&str>) -> Value {
    json!({"error": {"message": message, "type": kind, "param": param, "code": status.as_u16()}})
}

async fn models(State(state): State<Arc<DoubleState>>, headers: HeaderMap) -> Response {
    if let Some(denied) = check_key(&state, &headers) {
        return denied;
    }
    let created = now();
    let data: Vec<Value> = state
        .config
        .models
        .iter()
        .map(|name| {
            json!({"id": name, "object": "model", "created": created, "owned_by": "vllm",
                   "root": state.config.root, "parent": null, "max_model_len": 4096, "permission": []})
        })
        .collect();
    json_out(StatusCode::OK, &json!({"object": "list", "data": data}))
}

async fn version(State(state): State<Arc<DoubleState>>) -> Response {
    json_out(StatusCode::OK, &json!({"version": state.config.version}))
}

async fn load(State(state): State<Arc<DoubleState>>) -> Response {
    json_out(StatusCode::OK, &json!({"server_load": state.in_flight()}))
}

async fn metrics(State(state): State<Arc<DoubleState>>) -> Response {
    let model = state.config.models.first().cloned().unwrap_or_default();
    let requests = state.exchanges.lock().len();
    let body = format!(
        "# HELP vllm:num_requests_running Number of requests in model execution batches.\n\
         # TYPE vllm:num_requests_running gauge\n\
         vllm:num_requests_running{{model_name=\"{model}\"}} {}\n\
         # HELP vllm:request_success_total Count of successfully processed requests.\n\
         # TYPE vllm:request_success_total counter\n\
         vllm:request_success_total{{finished_reason=\"stop\",model_name=\"{model}\"}} {requests}\n",
        state.in_flight()
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn tokenize(body: Bytes) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return json_out(
            StatusCode::BAD_REQUEST,
            &vllm_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "invalid json",
                None,
            ),
        );
    };
    let tokens: Vec<u64> = if request.get("messages").is_some() {
        chat_prompt_ids(&request)
    } else {
        text_ids(request.get("prompt").and_then(Value::as_str).unwrap_or(""))
    };
    json_out(
        StatusCode::OK,
        &json!({"count": tokens.len(), "max_model_len": 4096, "tokens": tokens, "token_strs": null}),
    )
}

async fn detokenize(body: Bytes) -> Response {
    let request = serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let count = request["tokens"].as_array().map_or(0, Vec::len);
    json_out(
        StatusCode::OK,
        &json!({"prompt": format!("<{count} tokens>")}),
    )
}

async fn exchanges(State(state): State<Arc<DoubleState>>) -> Response {
    json_out(StatusCode::OK, &json!(state.exchanges()))
}

async fn clear(State(state): State<Arc<DoubleState>>) -> Response {
    state.exchanges.lock().clear();
    StatusCode::NO_CONTENT.into_response()
}

async fn stats(State(state): State<Arc<DoubleState>>) -> Response {
    json_out(
        StatusCode::OK,
        &json!({"requests": state.exchanges.lock().len(), "aborted": state.aborted(), "in_flight": state.in_flight()}),
    )
}

fn json_out(status: StatusCode, value: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn check_key(state: &DoubleState, headers: &HeaderMap) -> Option<Response> {
    let key = state.config.api_key.as_ref()?;
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    (given != Some(key.as_str()))
        .then(|| json_out(StatusCode::UNAUTHORIZED, &json!({"error": "Unauthorized"})))
}

/// A word-level "token": its text and a stable id.
fn token_id(piece: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in piece.as_bytes() {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    1000 + hash % 100_000
}

/// Splits text into pieces that start at word boundaries (the space stays with the word).
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut prev_space = false;
    for ch in text.chars() {
        if ch.is_whitespace() && !prev_space && !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
        prev_space = ch.is_whitespace();
        current.push(ch);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

fn text_ids(text: &str) -> Vec<u64> {
    pieces(text).iter().map(|p| token_id(p)).collect()
}

fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// A Qwen-like chat template: `<|im_start|>role\ncontent<|im_end|>\n` per message, then
/// the assistant's header.
fn chat_prompt_ids(request: &Value) -> Vec<u64> {
    const IM_START: u64 = 151_644;
    const IM_END: u64 = 151_645;
    const NEWLINE: u64 = 198;
    let mut ids = Vec::new();
    for message in request["messages"].as_array().into_iter().flatten() {
        ids.push(IM_START);
        ids.extend(text_ids(message["role"].as_str().unwrap_or("user")));
        ids.push(NEWLINE);
        ids.extend(text_ids(&content_text(&message["content"])));
        ids.extend([IM_END, NEWLINE]);
    }
    ids.push(IM_START);
    ids.extend(text_ids("assistant"));
    ids.push(NEWLINE);
    ids
}

/// One generated token and where it goes.
#[derive(Debug, Clone)]
enum Piece {
    Content(String),
    Reasoning(String),
    /// Swallowed by the tool parser: no visible delta, ids still sent.
    Hidden(String),
    ToolName {
        text: String,
        id: String,
        name: String,
    },
    ToolArgs(String),
}

impl Piece {
    fn text(&self) -> &str {
        match self {
            Self::Content(t) | Self::Reasoning(t) | Self::Hidden(t) | Self::ToolArgs(t) => t,
            Self::ToolName { text, .. } => text,
        }
    }
}

/// What the double will answer to one request.
struct Plan {
    chat: bool,
    model: String,
    prompt_ids: Vec<u64>,
    pieces: Vec<Piece>,
    finish_reason: &'static str,
    delay: Duration,
    stream_error: bool,
    n: usize,
}

fn last_user_text(request: &Value, chat: bool) -> String {
    if chat {
        request["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| content_text(&m["content"]))
            .unwrap_or_default()
    } else {
        match &request["prompt"] {
            Value::String(s) => s.clone(),
            Value::Array(items) => items
                .first()
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            _ => String::new(),
        }
    }
}

fn slow_delay(text: &str) -> Option<Duration> {
    let at = text.find("[[slow")?;
    let rest = &text[at + 6..];
    let ms = rest
        .strip_prefix(':')
        .and_then(|r| r.split("]]").next())
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(100);
    Some(Duration::from_millis(ms))
}

fn plan(state: &DoubleState, request: &Value, chat: bool) -> Result<Plan, (StatusCode, Value)> {
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    if !state.config.models.contains(&model) && model != state.config.root {
        return Err((
            StatusCode::NOT_FOUND,
            vllm_error(
                StatusCode::NOT_FOUND,
                "NotFoundError",
                &format!("The model `{model}` does not exist."),
                Some("model"),
            ),
        ));
    }
    if chat && !request["messages"].is_array() {
        return Err((
            StatusCode::BAD_REQUEST,
            vllm_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "messages: field required",
                None,
            ),
        ));
    }
    let text = last_user_text(request, chat);
    if text.contains("[[crash]]") {
        if state.config.allow_crash {
            eprintln!("fake-vllm: crashing as asked");
            std::process::exit(3);
        }
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            vllm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "double: crash asked in-process",
                None,
            ),
        ));
    }
    if text.contains("[[error500]]") {
        return Err((
            StatusCode::INTERNAL_SERVER_ERROR,
            vllm_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalServerError",
                "double: the request asked for a server error",
                None,
            ),
        ));
    }
    if text.contains("[[error]]") {
        return Err((
            StatusCode::BAD_REQUEST,
            vllm_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "double: the request asked for an error",
                None,
            ),
        ));
    }
    let prompt_ids = if chat {
        chat_prompt_ids(request)
    } else {
        text_ids(&text)
    };
    let max_tokens = request["max_tokens"]
        .as_u64()
        .or_else(|| request["max_completion_tokens"].as_u64());
    let words: Vec<String> = text
        .split_whitespace()
        .filter(|w| !w.starts_with("[["))
        .take(5)
        .map(str::to_owned)
        .collect();
    let mut pieces_out = Vec::new();
    if text.contains("[[reasoning]]") && chat {
        for p in ["Let", " me", " think", "."] {
            pieces_out.push(Piece::Reasoning(p.into()));
        }
    }
    let tool = request["tools"]
        .as_array()
        .and_then(|t| t.first())
        .and_then(|t| t.pointer("/function/name"))
        .and_then(Value::as_str);
    let mut finish_reason = "stop";
    if let (true, Some(name), true) = (chat, tool, text.contains("[[tool]]")) {
        let id = format!(
            "chatcmpl-tool-{:016x}",
            state.ids.fetch_add(1, Ordering::SeqCst)
        );
        let arg = words.first().cloned().unwrap_or_else(|| "x".into());
        pieces_out.push(Piece::Hidden("<tool_call>".into()));
        pieces_out.push(Piece::ToolName {
            text: format!("{{\"name\": \"{name}\", "),
            id,
            name: name.to_owned(),
        });
        pieces_out.push(Piece::Hidden("\"arguments\": ".into()));
        pieces_out.push(Piece::ToolArgs("{\"query\": ".into()));
        pieces_out.push(Piece::ToolArgs(
            serde_json::to_string(&arg).unwrap_or_default(),
        ));
        pieces_out.push(Piece::ToolArgs("}".into()));
        pieces_out.push(Piece::Hidden("}</tool_call>".into()));
        finish_reason = "tool_calls";
    } else if text.contains("[[long]]") {
        let vocabulary = [
            " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dogs",
        ];
        let n = max_tokens.unwrap_or(16) as usize;
        for i in 0..n {
            pieces_out.push(Piece::Content(vocabulary[i % vocabulary.len()].into()));
        }
        finish_reason = "length";
    } else {
        let mut answer = vec!["You".to_owned(), " said".into(), ":".into()];
        answer.extend(words.iter().map(|w| format!(" {w}")));
        answer.push(".".into());
        pieces_out.extend(answer.into_iter().map(Piece::Content));
    }
    if let Some(max) = max_tokens
        && (max as usize) < pieces_out.len()
    {
        pieces_out.truncate(max as usize);
        finish_reason = "length";
    }
    let delay = slow_delay(&text).unwrap_or(state.config.token_delay);
    Ok(Plan {
        chat,
        model,
        prompt_ids,
        pieces: pieces_out,
        finish_reason,
        delay,
        stream_error: text.contains("[[stream-error]]"),
        n: request["n"].as_u64().unwrap_or(1).clamp(1, 8) as usize,
    })
}

fn logprob_entry(piece: &str, k: usize) -> Value {
    json!({"token": piece, "logprob": -((k as f64) + 1.0) / 10.0, "bytes": piece.as_bytes(), "top_logprobs": []})
}

/// The non-streaming body, with vLLM's full set of fields (it dumps the whole model).
fn full_body(p: &Plan, id: &str, created: u64, request: &Value) -> Value {
    let ids: Vec<u64> = p.pieces.iter().map(|x| token_id(x.text())).collect();
    let return_ids = request["return_token_ids"] == true;
    let logprobs = if p.chat {
        request["logprobs"] == true
    } else {
        request["logprobs"].as_u64().is_some()
    };
    let usage = json!({"prompt_tokens": p.prompt_ids.len(), "total_tokens": p.prompt_ids.len() + ids.len() * p.n,
                       "completion_tokens": ids.len() * p.n, "prompt_tokens_details": null});
    let choices: Vec<Value> = (0..p.n)
        .map(|index| {
            if p.chat {
                let content: String = p
                    .pieces
                    .iter()
                    .filter(|x| matches!(x, Piece::Content(_)))
                    .map(Piece::text)
                    .collect();
                let reasoning: String = p
                    .pieces
                    .iter()
                    .filter(|x| matches!(x, Piece::Reasoning(_)))
                    .map(Piece::text)
                    .collect();
                let tool_calls: Vec<Value> = p
                    .pieces
                    .iter()
                    .filter_map(|x| match x {
                        Piece::ToolName { id, name, .. } => {
                            let args: String = p
                                .pieces
                                .iter()
                                .filter(|y| matches!(y, Piece::ToolArgs(_)))
                                .map(Piece::text)
                                .collect();
                            Some(json!({"id": id, "type": "function", "function": {"name": name, "arguments": args}}))
                        }
                        _ => None,
                    })
                    .collect();
                json!({
                    "index": index,
                    "message": {
                        "role": "assistant",
                        "content": if content.is_empty() && !tool_calls.is_empty() { Value::Null } else { Value::from(content) },
                        "refusal": null, "annotations": null, "audio": null, "function_call": null,
                        "tool_calls": tool_calls,
                        "reasoning_content": if reasoning.is_empty() { Value::Null } else { Value::from(reasoning) },
                    },
                    "logprobs": if logprobs {
                        json!({"content": p.pieces.iter().enumerate().map(|(k, x)| logprob_entry(x.text(), k)).collect::<Vec<_>>()})
                    } else { Value::Null },
                    "finish_reason": p.finish_reason,
                    "stop_reason": null,
                    "token_ids": if return_ids { json!(ids) } else { Value::Null },
                })
            } else {
                let text: String = p.pieces.iter().map(Piece::text).collect();
                json!({
                    "index": index,
                    "text": text,
                    "logprobs": if logprobs { completion_logprobs(&p.pieces.iter().map(|x| x.text().to_owned()).collect::<Vec<_>>(), 0) } else { Value::Null },
                    "finish_reason": p.finish_reason,
                    "stop_reason": null,
                    "prompt_logprobs": null,
                    "prompt_token_ids": if return_ids { json!(p.prompt_ids) } else { Value::Null },
                    "token_ids": if return_ids { json!(ids) } else { Value::Null },
                })
            }
        })
        .collect();
    let mut body = json!({
        "id": id,
        "object": if p.chat { "chat.completion" } else { "text_completion" },
        "created": created,
        "model": p.model,
        "choices": choices,
        "service_tier": null,
        "system_fingerprint": null,
        "usage": usage,
    });
    if p.chat {
        body["prompt_logprobs"] = Value::Null;
        body["prompt_token_ids"] = if return_ids {
            json!(p.prompt_ids)
        } else {
            Value::Null
        };
    }
    body["kv_transfer_params"] = Value::Null;
    body
}

fn completion_logprobs(texts: &[String], offset: usize) -> Value {
    let mut pos = offset;
    let mut text_offset = Vec::new();
    for t in texts {
        text_offset.push(pos);
        pos += t.len();
    }
    json!({
        "text_offset": text_offset,
        "token_logprobs": texts.iter().enumerate().map(|(k, _)| -((k as f64) + 1.0) / 10.0).collect::<Vec<_>>(),
        "tokens": texts,
        "top_logprobs": texts.iter().enumerate().map(|(k, t)| json!({t.clone(): -((k as f64) + 1.0) / 10.0})).collect::<Vec<_>>(),
    })
}

/// The SSE events of a stream, in vLLM's order and with its field sets (it dumps each
/// chunk with `exclude_unset`).
fn stream_events(p: &Plan, id: &str, created: u64, request: &Value) -> Vec<String> {
    let return_ids = request["return_token_ids"] == true;
    let logprobs = if p.chat {
        request["logprobs"] == true
    } else {
        request["logprobs"].as_u64().is_some()
    };
    let include_usage =
        request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
    let object = if p.chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let head = |choices: Value| {
        let mut chunk = Map::new();
        chunk.insert("id".into(), Value::from(id));
        chunk.insert("object".into(), Value::from(object));
        chunk.insert("created".into(), Value::from(created));
        chunk.insert("model".into(), Value::from(p.model.clone()));
        chunk.insert("choices".into(), choices);
        chunk
    };
    let mut events = Vec::new();
    if p.chat {
        for index in 0..p.n {
            let mut chunk = head(
                json!([{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            );
            if return_ids {
                chunk.insert("prompt_token_ids".into(), json!(p.prompt_ids));
            }
            events.push(Value::Object(chunk).to_string());
        }
    }
    let last = p.pieces.len().saturating_sub(1);
    for (k, piece) in p.pieces.iter().enumerate() {
        if p.stream_error && k == 2 {
            events.push(
                vllm_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalServerError",
                    "double: generation failed",
                    None,
                )
                .to_string(),
            );
            events.push("[DONE]".into());
            return events;
        }
        for index in 0..p.n {
            let mut choice = Map::new();
            choice.insert("index".into(), Value::from(index));
            if p.chat {
                let delta = match piece {
                    Piece::Content(t) => json!({"content": t}),
                    Piece::Reasoning(t) => json!({"reasoning_content": t}),
                    Piece::Hidden(_) => json!({"content": ""}),
                    Piece::ToolName { id, name, .. } => {
                        json!({"tool_calls": [{"id": id, "type": "function", "index": 0, "function": {"name": name}}]})
                    }
                    Piece::ToolArgs(t) => {
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": t}}]})
                    }
                };
                choice.insert("delta".into(), delta);
                choice.insert(
                    "logprobs".into(),
                    if logprobs {
                        json!({"content": [logprob_entry(piece.text(), k)]})
                    } else {
                        Value::Null
                    },
                );
            } else {
                choice.insert("text".into(), Value::from(piece.text()));
                choice.insert(
                    "logprobs".into(),
                    if logprobs {
                        completion_logprobs(&[piece.text().to_owned()], 0)
                    } else {
                        Value::Null
                    },
                );
            }
            if k == last {
                choice.insert("finish_reason".into(), Value::from(p.finish_reason));
                choice.insert("stop_reason".into(), Value::Null);
            } else {
                choice.insert("finish_reason".into(), Value::Null);
                if !p.chat {
                    choice.insert("stop_reason".into(), Value::Null);
                }
            }
            if return_ids {
                if !p.chat && k == 0 {
                    choice.insert("prompt_token_ids".into(), json!(p.prompt_ids));
                }
                choice.insert("token_ids".into(), json!([token_id(piece.text())]));
            }
            events.push(Value::Object(head(Value::Array(vec![Value::Object(choice)]))).to_string());
        }
    }
    if include_usage {
        let completion = p.pieces.len() * p.n;
        let mut chunk = head(json!([]));
        chunk.insert(
            "usage".into(),
            json!({"prompt_tokens": p.prompt_ids.len(), "total_tokens": p.prompt_ids.len() + completion, "completion_tokens": completion}),
        );
        events.push(Value::Object(chunk).to_string());
    }
    events.push("[DONE]".into());
    events
}

fn interesting_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            let n = name.as_str();
            n.starts_with("x-")
                || n == "traceparent"
                || n == "authorization"
                || n == "content-type"
                || n == "accept-encoding"
        })
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Counts a generation request in flight while alive.
struct Busy(Arc<DoubleState>);

impl Busy {
    fn new(state: &Arc<DoubleState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(Arc::clone(state))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn generate(State(state): State<Arc<DoubleState>>, req: Request) -> Response {
    let busy = Busy::new(&state);
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_owned();
    let chat = path.ends_with("/chat/completions");
    let body = axum::body::to_bytes(body, 64 * 1024 * 1024)
        .await
        .unwrap_or_default();
    let mut exchange = Exchange {
        method: Method::POST.to_string(),
        path: path.clone(),
        headers: interesting_headers(&parts.headers),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        status: 200,
        response: String::new(),
        complete: true,
        prompt_token_ids: Vec::new(),
        token_ids: Vec::new(),
    };
    if let Some(denied) = check_key(&state, &parts.headers) {
        exchange.status = 401;
        state.record(exchange);
        return denied;
    }
    let request = exchange.body.clone();
    if !request.is_object() {
        let (status, text) = json_response(
            StatusCode::BAD_REQUEST,
            &vllm_error(
                StatusCode::BAD_REQUEST,
                "BadRequestError",
                "the request body is not a json object",
                None,
            ),
        );
        exchange.status = status.as_u16();
        exchange.response = text.clone();
        state.record(exchange);
        return (status, [(header::CONTENT_TYPE, "application/json")], text).into_response();
    }
    let plan = match plan(&state, &request, chat) {
        Ok(plan) => plan,
        Err((status, error)) => {
            let text = error.to_string();
            exchange.status = status.as_u16();
            exchange.response = text.clone();
            state.record(exchange);
            return (status, [(header::CONTENT_TYPE, "application/json")], text).into_response();
        }
    };
    let n = state.ids.fetch_add(1, Ordering::SeqCst);
    let id = if chat {
        format!("chatcmpl-{n:032x}")
    } else {
        format!("cmpl-{n:032x}")
    };
    let created = now();
    exchange.prompt_token_ids = plan.prompt_ids.clone();
    exchange.token_ids = vec![plan.pieces.iter().map(|x| token_id(x.text())).collect(); plan.n];
    if request["stream"] == true {
        let events: Vec<Bytes> = stream_events(&plan, &id, created, &request)
            .into_iter()
            .map(|e| Bytes::from(format!("data: {e}\n\n")))
            .collect();
        exchange.complete = false;
        let slot = state.record(exchange);
        let stream = Sse {
            events: events.into_iter(),
            delay: plan.delay,
            sleep: None,
            first: true,
            slot,
            state: Arc::clone(&state),
            done: false,
            _busy: busy,
        };
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "text/event-stream; charset=utf-8")],
            Body::from_stream(stream),
        )
            .into_response();
    }
    if !plan.delay.is_zero() {
        tokio::time::sleep(plan.delay * plan.pieces.len() as u32).await;
    }
    let text = full_body(&plan, &id, created, &request).to_string();
    exchange.response = text.clone();
    state.record(exchange);
    drop(busy);
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        text,
    )
        .into_response()
}

/// A stream of prepared events, paced by the token delay; what it yields is appended to
/// its exchange, and a drop before the end counts as an abort.
struct Sse {
    events: std::vec::IntoIter<Bytes>,
    delay: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    first: bool,
    slot: usize,
    state: Arc<DoubleState>,
    done: bool,
    _busy: Busy,
}

impl Stream for Sse {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if !this.first && !this.delay.is_zero() {
            let sleep = this
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(this.delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.sleep = None;
        }
        this.first = false;
        match this.events.next() {
            Some(event) => {
                if let Some(ex) = this.state.exchanges.lock().get_mut(this.slot) {
                    ex.response.push_str(&String::from_utf8_lossy(&event));
                }
                Poll::Ready(Some(Ok(event)))
            }
            None => {
                this.done = true;
                if let Some(ex) = this.state.exchanges.lock().get_mut(this.slot) {
                    ex.complete = true;
                }
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for Sse {
    fn drop(&mut self) {
        if !self.done && !self.events.as_slice().is_empty() {
            self.state.aborted.fetch_add(1, Ordering::SeqCst);
        } else if !self.done
            && let Some(ex) = self.state.exchanges.lock().get_mut(self.slot)
        {
            // Everything was sent; only the end-of-stream poll did not happen.
            ex.complete = true;
        }
    }
}

/// `agl-vllm fake-vllm …`: the double standing in for the `vllm` executable.
pub fn main(args: &[String]) -> ExitCode {
    if let Ok(path) = std::env::var("AGL_DOUBLE_ARGS_FILE") {
        append_line(&path, &serde_json::to_string(args).unwrap_or_default());
    }
    event("started");
    let first = args.first().map(String::as_str);
    match first {
        Some("--version") => {
            println!("0.11.0");
            return ExitCode::SUCCESS;
        }
        None | Some("--help" | "-h") => {
            println!(
                "usage: vllm [-h] [-v] {{chat,complete,serve,bench,collect-env,run-batch}} ..."
            );
            return ExitCode::SUCCESS;
        }
        Some("serve") => {}
        Some(other) => {
            eprintln!("vllm: error: argument subparser: invalid choice: '{other}'");
            return ExitCode::from(2);
        }
    }
    let rest = &args[1..];
    let mut model = None;
    let mut host = "0.0.0.0".to_owned();
    let mut port = 8000u16;
    let mut names = Vec::new();
    let mut api_key = None;
    let mut i = 0;
    while i < rest.len() {
        let arg = &rest[i];
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = || {
            inline.clone().or_else(|| {
                i += 1;
                rest.get(i).cloned()
            })
        };
        match flag {
            "--port" => port = value().and_then(|v| v.parse().ok()).unwrap_or(8000),
            "--host" => host = value().unwrap_or(host.clone()),
            "--model" => model = value(),
            "--api-key" => api_key = value(),
            "--served-model-name" => {
                if let Some(v) = inline.clone() {
                    names.push(v);
                } else {
                    while rest.get(i + 1).is_some_and(|v| !v.starts_with("--")) {
                        i += 1;
                        names.push(rest[i].clone());
                    }
                }
            }
            f if !f.starts_with('-') && model.is_none() => model = Some(f.to_owned()),
            _ => {}
        }
        i += 1;
    }
    let model = model.unwrap_or_else(|| "agl/double-model".to_owned());
    if names.is_empty() {
        names.push(model.clone());
    }
    let env_ms = |name: &str| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map(Duration::from_millis)
    };
    let config = DoubleConfig {
        models: names,
        root: model,
        token_delay: env_ms("AGL_DOUBLE_TOKEN_DELAY_MS").unwrap_or_default(),
        allow_crash: true,
        api_key: api_key.or_else(|| std::env::var("VLLM_API_KEY").ok()),
        ..DoubleConfig::default()
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("fake-vllm: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(serve_process(
        config,
        host,
        port,
        env_ms("AGL_DOUBLE_STARTUP_DELAY_MS"),
    ));
    event(&format!("exiting {code}"));
    ExitCode::from(code)
}

async fn serve_process(
    config: DoubleConfig,
    host: String,
    port: u16,
    startup: Option<Duration>,
) -> u8 {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            eprintln!("fake-vllm: {err}");
            return 1;
        }
    };
    if let Ok(path) = std::env::var("AGL_DOUBLE_GRANDCHILD_PID_FILE") {
        // A process of the group that outlives nobody's wishes: the launcher must kill it.
        if let Ok(child) = std::process::Command::new("sleep").arg("300").spawn() {
            append_line(&path, &child.id().to_string());
        }
    }
    if let Some(delay) = startup {
        // Loading the model: nothing listens yet.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = term.recv() => { event("sigterm in_flight=0"); return exit_code_after_term(); }
        }
    }
    // With TCP_NODELAY, as vLLM's server (uvicorn on asyncio) has.
    let listener = match crate::net::bind(&format!("{host}:{port}")).await {
        Ok(l) => l,
        Err(err) => {
            eprintln!("fake-vllm: cannot listen on {host}:{port}: {err}");
            return 1;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!("fake-vllm listening on {addr}");
    let _ = std::io::stdout().flush();
    event("listening");
    let state = DoubleState::new(config);
    let app = router(Arc::clone(&state));
    let ignore = std::env::var("AGL_DOUBLE_IGNORE_SIGTERM").is_ok_and(|v| v == "1");
    let watched = Arc::clone(&state);
    let shutdown = async move {
        loop {
            term.recv().await;
            event(&format!("sigterm in_flight={}", watched.in_flight()));
            if !ignore {
                return;
            }
            eprintln!("fake-vllm: ignoring sigterm");
        }
    };
    // Like vLLM with --shutdown-timeout: in-flight requests finish, then it exits.
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    exit_code_after_term()
}

fn exit_code_after_term() -> u8 {
    std::env::var("AGL_DOUBLE_EXIT_CODE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn event(line: &str) {
    if let Ok(path) = std::env::var("AGL_DOUBLE_EVENTS_FILE") {
        append_line(&path, line);
    }
}

fn append_line(path: &str, line: &str) {
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = writeln!(file, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_words() {
        assert_eq!(pieces("Hello  big world"), ["Hello", "  big", " world"]);
        assert_eq!(token_id("Hello"), token_id("Hello"));
        assert_ne!(token_id("Hello"), token_id(" Hello"));
        let ids = chat_prompt_ids(&json!({"messages": [{"role": "user", "content": "hi there"}]}));
        assert_eq!(ids.first(), Some(&151_644));
        assert_eq!(ids.len(), 1 + 1 + 1 + 2 + 2 + 1 + 1 + 1);
    }

    #[test]
    fn markers_shape_the_answer() {
        let state = DoubleState::new(DoubleConfig::default());
        let request = |text: &str, extra: Value| {
            let mut r =
                json!({"model": "agl-model", "messages": [{"role": "user", "content": text}]});
            if let (Some(r), Some(extra)) = (r.as_object_mut(), extra.as_object()) {
                r.extend(extra.clone());
            }
            r
        };
        let p = plan(&state, &request("hi you", json!({})), true)
            .ok()
            .unwrap();
        let text: String = p.pieces.iter().map(Piece::text).collect();
        assert_eq!(text, "You said: hi you.");
        assert_eq!(p.finish_reason, "stop");
        let p = plan(&state, &request("[[long]]", json!({"max_tokens": 5})), true)
            .ok()
            .unwrap();
        assert_eq!((p.pieces.len(), p.finish_reason), (5, "length"));
        let tools = json!({"tools": [{"type": "function", "function": {"name": "lookup"}}]});
        let p = plan(&state, &request("[[tool]] cats", tools), true)
            .ok()
            .unwrap();
        assert_eq!(p.finish_reason, "tool_calls");
        let full = full_body(&p, "x", 1, &json!({"return_token_ids": true}));
        assert_eq!(
            full["choices"][0]["message"]["tool_calls"][0]["function"],
            json!({"name": "lookup", "arguments": "{\"query\": \"cats\"}"})
        );
        assert_eq!(full["choices"][0]["message"]["content"], Value::Null);
        assert!(plan(&state, &request("[[error]]", json!({})), true).is_err());
        let Err((status, _)) = plan(&state, &json!({"model": "nope", "messages": []}), true) else {
            panic!("unknown model accepted");
        };
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    #[test]
    fn streams_add_up_to_the_full_body() {
        let state = DoubleState::new(DoubleConfig::default());
        let request = json!({"model": "agl-model", "stream": true, "return_token_ids": true, "logprobs": true,
            "messages": [{"role": "user", "content": "[[reasoning]] tell me"}]});
        let p = plan(&state, &request, true).ok().unwrap();
        let events = stream_events(&p, "id", 1, &request);
        let mut acc = crate::sse::Accumulator::default();
        for e in &events {
            acc.push(e);
        }
        assert!(acc.done());
        let rebuilt = acc.finish();
        let full = full_body(&p, "id", 1, &request);
        assert_eq!(rebuilt["prompt_token_ids"], full["prompt_token_ids"]);
        assert_eq!(
            rebuilt["choices"][0]["token_ids"],
            full["choices"][0]["token_ids"]
        );
        assert_eq!(
            rebuilt["choices"][0]["message"]["content"],
            full["choices"][0]["message"]["content"]
        );
        assert_eq!(
            rebuilt["choices"][0]["message"]["reasoning_content"],
            full["choices"][0]["message"]["reasoning_content"]
        );
        assert_eq!(
            rebuilt["choices"][0]["logprobs"],
            full["choices"][0]["logprobs"]
        );
    }
}
