//! Upstream v1's hot paths (`agl-server`'s API of agentlightning 1.0): batch creation, the
//! controller's patch, an agent's event, the trainer's reads of a rollout's events (raw and
//! as triplets), and the capturing proxy, each call of which is paired with the same call
//! straight to the model server so that the proxy's own cost reads as the difference.

use std::time::Instant;

use serde_json::{Value, json};

use super::{Ctx, Outcome, Request, RolloutRef, repeat};
use crate::driver::{Http, PathSpec, Recorder, recorded, run_workers};

const PATCH: PathSpec = PathSpec::http("PATCH /api/rollouts/{id}");
const EVENT: PathSpec = PathSpec::http("POST /api/rollouts/{id}/attempt/0/events");
const EVENTS: PathSpec = PathSpec::http("GET /api/rollouts/{id}/events");
const TRIPLETS: PathSpec = PathSpec::http("GET /api/rollouts/{id}/events?format=triplet");
const PROXY: PathSpec = PathSpec::http("POST /proxy/…/openai/v1/chat/completions");
const DIRECT: PathSpec = PathSpec::http("POST {model server}/v1/chat/completions (direct)");
const PROXY_STREAM: PathSpec = PathSpec::http("POST /proxy/…/openai/v1/chat/completions (stream)");
const DIRECT_STREAM: PathSpec =
    PathSpec::http("POST {model server}/v1/chat/completions (stream, direct)");

/// The model the proxy serves in the benchmark (the double serves it under this name).
pub const MODEL: &str = "test-model";

/// LLM calls in the rollout the read scenarios read.
const CALLS_READ: usize = 20;

/// Runs one v1 scenario.
pub(super) async fn run(ctx: &Ctx, scenario: super::Scenario) -> anyhow::Result<Outcome> {
    use super::Scenario as S;
    match scenario {
        S::V1Create => create(ctx).await,
        S::V1Patch => patch(ctx).await,
        S::V1Event => event(ctx).await,
        S::V1Events => read(ctx, &EVENTS, "").await,
        S::V1Triplets => read(ctx, &TRIPLETS, "?format=triplet").await,
        S::V1Proxy => proxy(ctx, false).await,
        S::V1ProxyStream => proxy(ctx, true).await,
        _ => unreachable!("only v1 scenarios come here"),
    }
}

/// Creates `n` rollouts; their ids.
async fn rollouts(http: &Http, n: usize) -> anyhow::Result<Vec<String>> {
    let items: Vec<Value> = (0..n).map(|i| json!({"input": {"data_id": i}})).collect();
    let body = http
        .post_json("/api/rollouts", serde_json::to_vec(&items)?)
        .await
        .map_err(anyhow::Error::msg)?;
    let created: Vec<RolloutRef> = serde_json::from_slice(&body)?;
    Ok(created.into_iter().map(|r| r.rollout_id).collect())
}

async fn send_patch(http: &Http, id: &str, body: &Value) -> Result<bytes::Bytes, String> {
    http.send(
        reqwest::Method::PATCH,
        &format!("/api/rollouts/{id}"),
        Some("application/json"),
        Some(serde_json::to_vec(body).expect("JSON").into()),
    )
    .await
}

async fn create(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let batch = ctx.cfg.sizes.enqueue_batch;
    let items: Vec<Value> = (0..batch)
        .map(|i| json!({"input": {"data_id": i}}))
        .collect();
    let request = Request::PostJson("/api/rollouts".into(), serde_json::to_vec(&items)?.into());
    let notes = vec![format!("{batch} rollouts per request")];
    let path = PathSpec::http("POST /api/rollouts").items(batch as u64);
    repeat(ctx, path, |_| request.clone(), notes).await
}

async fn patch(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let ids = rollouts(&ctx.http, ctx.cfg.concurrency).await?;
    let paths = vec![PATCH];
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths, id) = (ctx.http.clone(), paths.clone(), ids[i].clone());
        async move {
            let mut rec = Recorder::new(window, &paths);
            let mut n = 0u64;
            while window.running() {
                n += 1;
                let body = json!({"status": {"k8s_job_name": format!("agl-rollout-{n}")}});
                let t0 = Instant::now();
                let r = send_patch(&http, &id, &body).await;
                recorded(&mut rec, &PATCH, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![
            "a lifecycle field of the worker's own rollout, as a controller patches it".into(),
        ],
    })
}

async fn event(ctx: &Ctx) -> anyhow::Result<Outcome> {
    let ids = rollouts(&ctx.http, ctx.cfg.concurrency).await?;
    let body = bytes::Bytes::from(serde_json::to_vec(
        &json!({"event_type": "reward", "data": {"value": 1.0, "source": "agent"}}),
    )?);
    let request = |i: usize| {
        let url = format!("/api/rollouts/{}/attempt/0/events", ids[i]);
        Request::PostJson(url, body.clone())
    };
    let notes = vec!["each worker appends to its own rollout".into()];
    repeat(ctx, EVENT, request, notes).await
}

/// A `model_request` event as upstream's gateway records it: a chat of a few hundred
/// tokens with their ids and logprobs.
fn model_request(i: usize) -> Value {
    let prompt: Vec<u64> = (0..200).map(|t| (t * 7 + i as u64) % 32000).collect();
    let response: Vec<u64> = (0..100).map(|t| (t * 13 + i as u64) % 32000).collect();
    let logprobs: Vec<Value> = response
        .iter()
        .map(|t| json!({"token": format!("t{t}"), "logprob": -0.25}))
        .collect();
    json!({"event_type": "model_request", "data": {
        "model": MODEL, "model_version": 1,
        "request": {"model": MODEL, "messages": [{"role": "user", "content": "x ".repeat(200)}],
                    "temperature": 1.0, "return_token_ids": true, "logprobs": true},
        "response": {"id": format!("chatcmpl-{i}"), "object": "chat.completion",
                     "prompt_token_ids": prompt,
                     "choices": [{"index": 0, "finish_reason": "stop",
                                  "message": {"role": "assistant", "content": "y ".repeat(100)},
                                  "token_ids": response, "logprobs": {"content": logprobs}}],
                     "usage": {"prompt_tokens": 200, "completion_tokens": 100}},
        "server": {"model": MODEL, "endpoint": "http://127.0.0.1:9/v1", "version": 1},
        "latency_ms": 120.5, "http_status": 200, "status": "ok", "retry_count": 0,
        "usage": {"prompt_tokens": 200, "completion_tokens": 100}, "finish_reason": "stop"}})
}

async fn read(ctx: &Ctx, path: &PathSpec, query: &'static str) -> anyhow::Result<Outcome> {
    let id = rollouts(&ctx.http, 1).await?.remove(0);
    let url = format!("/api/rollouts/{id}/attempt/0/events");
    for i in 0..CALLS_READ {
        ctx.http
            .post_json(&url, serde_json::to_vec(&model_request(i))?)
            .await
            .map_err(anyhow::Error::msg)?;
    }
    ctx.http
        .post_json(
            &url,
            serde_json::to_vec(&json!({"event_type": "reward", "data": {"value": 1.0}}))?,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let notes = vec![format!(
        "one rollout of {CALLS_READ} LLM calls (200 + 100 tokens each, with logprobs) and a reward"
    )];
    let request = Request::Get(format!("/api/rollouts/{id}/events{query}"));
    repeat(ctx, *path, |_| request.clone(), notes).await
}

async fn proxy(ctx: &Ctx, stream: bool) -> anyhow::Result<Outcome> {
    let model_url = ctx
        .cfg
        .model_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("the proxy scenarios need --model-url"))?;
    let models = json!([{"model": MODEL, "endpoint": model_url, "version": 1}]);
    ctx.http
        .post_json("/api/models", serde_json::to_vec(&models)?)
        .await
        .map_err(anyhow::Error::msg)?;
    let ids = rollouts(&ctx.http, ctx.cfg.concurrency).await?;
    let (via, direct) = if stream {
        (PROXY_STREAM, DIRECT_STREAM)
    } else {
        (PROXY, DIRECT)
    };
    let paths = vec![via, direct];
    let body = bytes::Bytes::from(serde_json::to_vec(&json!({
        "model": MODEL, "stream": stream, "max_tokens": 16,
        "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
    }))?);
    let direct_client = Http::new(&model_url)?;
    let window = ctx.begin();
    let recorders = run_workers(ctx.cfg.concurrency, |i| {
        let (http, paths, body) = (ctx.http.clone(), paths.clone(), body.clone());
        let straight = direct_client.clone();
        let url = format!(
            "/proxy/rollout/{}/attempt/0/mode/train/openai/v1/chat/completions",
            ids[i]
        );
        async move {
            let mut rec = Recorder::new(window, &paths);
            while window.running() {
                let t0 = Instant::now();
                let r = http.post_json(&url, body.clone()).await;
                recorded(&mut rec, &via, t0, r).await;
                let t0 = Instant::now();
                let r = straight.post_json("/chat/completions", body.clone()).await;
                recorded(&mut rec, &direct, t0, r).await;
            }
            rec
        }
    })
    .await?;
    Ok(Outcome {
        window,
        paths,
        recorders,
        notes: vec![
            "each worker calls through the proxy, then the model server directly, in turn: \
             the difference of the two is the proxy's"
                .into(),
        ],
    })
}
