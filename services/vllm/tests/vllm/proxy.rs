//! The proxy between the vLLM double and a real agl-store: what the agent receives, what
//! vLLM receives, and what lands in the store.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use serde_json::{Value, json};

use crate::helpers::{Stack, by_name, chat, client, eventually, post, py_list, sse_data};

#[tokio::test]
async fn non_streaming_calls_reach_the_agent_unchanged_and_land_in_the_store() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    let url = format!("{}/chat/completions", stack.base(&rollout));
    let (status, content_type, body) = post(&url, &chat("what is two plus two")).await;
    assert_eq!(status, 200);
    assert_eq!(content_type, "application/json");

    // Byte for byte what vLLM sent.
    let exchanges = stack.double.state().exchanges();
    let exchange = exchanges.last().unwrap();
    assert_eq!(String::from_utf8(body.clone()).unwrap(), exchange.response);
    // vLLM was asked for token ids and told whose call it is.
    assert_eq!(exchange.body["return_token_ids"], true);
    assert_eq!(
        exchange.body["messages"],
        chat("what is two plus two")["messages"]
    );
    assert_eq!(exchange.headers["x-rollout-id"], rollout.0);
    assert_eq!(exchange.headers["x-attempt-id"], rollout.1);
    assert_eq!(exchange.headers["x-sequence-id"], "1");
    // The agent's response keeps the ids, for agent-side tracing.
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        response["prompt_token_ids"],
        json!(exchange.prompt_token_ids)
    );
    assert_eq!(
        response["choices"][0]["token_ids"],
        json!(exchange.token_ids[0])
    );

    let spans = stack.store.wait_spans(&rollout.0, 3).await;
    assert_eq!(spans.len(), 3);
    for span in &spans {
        assert_eq!(span["attempt_id"], rollout.1);
        assert_eq!(span["sequence_id"], 1);
        assert_eq!(span["status"]["status_code"], "OK");
        let resource = &span["resource"]["attributes"];
        assert_eq!(resource["agentlightning.rollout_id"], rollout.0);
        assert_eq!(resource["agentlightning.attempt_id"], rollout.1);
        assert_eq!(resource["agentlightning.span_sequence_id"], 1);
    }
    let names: BTreeSet<&str> = spans.iter().filter_map(|s| s["name"].as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "Received Proxy Server Request",
            "litellm_request",
            "raw_gen_ai_request"
        ])
    );
    let raw = &by_name(&spans, "raw_gen_ai_request")[0]["attributes"];
    assert_eq!(
        raw["llm.hosted_vllm.prompt_token_ids"],
        py_list(&exchange.prompt_token_ids)
    );
    assert_eq!(
        raw["llm.hosted_vllm.response_token_ids"],
        format!("[{}]", py_list(&exchange.token_ids[0]))
    );
    assert_eq!(raw["llm.hosted_vllm.id"], response["id"]);
    assert_eq!(raw["llm.hosted_vllm.return_token_ids"], true);
    let request = &by_name(&spans, "litellm_request")[0]["attributes"];
    assert_eq!(request["gen_ai.response.id"], response["id"]);
    assert_eq!(request["gen_ai.prompt.1.content"], "what is two plus two");
    assert_eq!(
        request["gen_ai.completion.0.content"],
        response["choices"][0]["message"]["content"]
    );
    assert_eq!(
        request["gen_ai.usage.prompt_tokens"],
        exchange.prompt_token_ids.len()
    );
    assert_eq!(request["llm.is_streaming"], "False");
    // The root has no parent; the others hang below it, all in one trace.
    let root = &by_name(&spans, "Received Proxy Server Request")[0];
    assert!(root["parent_id"].is_null());
    assert_eq!(
        by_name(&spans, "litellm_request")[0]["parent_id"],
        root["span_id"]
    );
    assert!(spans.iter().all(|s| s["trace_id"] == root["trace_id"]));
    stack.stop().await;
}

#[tokio::test]
async fn streams_pass_through_byte_for_byte_and_are_rebuilt_for_the_record() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    let url = format!("{}/chat/completions", stack.base(&rollout));
    let mut request = chat("[[tool]] [[reasoning]] weather in Paris");
    request["stream"] = json!(true);
    request["tools"] = json!([{"type": "function", "function": {
        "name": "get_weather", "description": "the weather", "parameters": {"type": "object"}}}]);
    let (status, content_type, body) = post(&url, &request).await;
    assert_eq!(status, 200);
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let exchange = stack.double.state().exchanges().pop().unwrap();
    assert!(exchange.complete);
    assert_eq!(String::from_utf8(body.clone()).unwrap(), exchange.response);
    let data = sse_data(&body);
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    // The first chunk carries the prompt ids, every later one its token ids.
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["prompt_token_ids"], json!(exchange.prompt_token_ids));

    let spans = stack.store.wait_spans(&rollout.0, 3).await;
    let raw = &by_name(&spans, "raw_gen_ai_request")[0]["attributes"];
    assert_eq!(
        raw["llm.hosted_vllm.prompt_token_ids"],
        py_list(&exchange.prompt_token_ids)
    );
    assert_eq!(
        raw["llm.hosted_vllm.response_token_ids"],
        format!("[{}]", py_list(&exchange.token_ids[0]))
    );
    assert_eq!(raw["llm.hosted_vllm.object"], "chat.completion");
    let choices = raw["llm.hosted_vllm.choices"].as_str().unwrap();
    assert!(
        choices.contains("'reasoning_content': 'Let me think.'"),
        "{choices}"
    );
    assert!(choices.contains("'content': None"), "{choices}");
    let request_span = &by_name(&spans, "litellm_request")[0]["attributes"];
    assert_eq!(request_span["llm.is_streaming"], "True");
    assert_eq!(
        request_span["gen_ai.completion.0.finish_reason"],
        "tool_calls"
    );
    assert_eq!(
        request_span["gen_ai.completion.0.function_call.name"],
        "get_weather"
    );
    assert_eq!(
        request_span["gen_ai.completion.0.function_call.arguments"],
        "{\"query\": \"weather\"}"
    );
    assert_eq!(request_span["llm.request.functions.0.name"], "get_weather");
    // No usage chunk was asked for: the usage comes from the token ids.
    assert_eq!(
        request_span["gen_ai.usage.completion_tokens"],
        exchange.token_ids[0].len()
    );
    stack.stop().await;
}

#[tokio::test]
async fn streamed_chunks_reach_the_agent_as_they_are_produced() {
    let stack = Stack::start().await;
    let mut request = chat("[[slow:150]] one two three four");
    request["stream"] = json!(true);
    let started = Instant::now();
    let response = client()
        .post(format!("{}/v1/chat/completions", stack.proxy.url))
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let mut arrivals = Vec::new();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.unwrap();
        if chunk.windows(9).any(|w| w == b"token_ids") {
            arrivals.push(started.elapsed());
        }
        bytes.extend_from_slice(&chunk);
    }
    let total = started.elapsed();
    assert!(arrivals.len() >= 4, "{arrivals:?}");
    // 8 tokens 150 ms apart: the first is there long before the last.
    assert!(
        arrivals[0] < total / 2,
        "first token at {:?} of {total:?}: the proxy buffered the stream",
        arrivals[0]
    );
    assert_eq!(
        String::from_utf8(bytes).unwrap(),
        stack.double.state().exchanges().pop().unwrap().response
    );
    let ttft = stack
        .proxy
        .metric("agl_vllm_time_to_first_token_seconds_count{endpoint=\"chat\"}")
        .await;
    assert_eq!(ttft, 1.0);
    stack.stop().await;
}

#[tokio::test]
async fn sequence_ids_increase_per_rollout_and_concurrent_calls_get_distinct_ones() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    let url = format!("{}/chat/completions", stack.base(&rollout));
    for i in 0..3 {
        let (status, _, _) = post(&url, &chat(&format!("call {i}"))).await;
        assert_eq!(status, 200);
    }
    let sent: Vec<String> = stack
        .double
        .state()
        .exchanges()
        .iter()
        .map(|e| e.headers["x-sequence-id"].clone())
        .collect();
    assert_eq!(sent, ["1", "2", "3"]);
    let spans = stack.store.wait_spans(&rollout.0, 9).await;
    let mut by_seq: BTreeMap<i64, usize> = BTreeMap::new();
    for span in &spans {
        *by_seq
            .entry(span["sequence_id"].as_i64().unwrap())
            .or_default() += 1;
    }
    assert_eq!(by_seq, BTreeMap::from([(1, 3), (2, 3), (3, 3)]));

    // Ten at once on another rollout: ids 1..=10, each shared by the spans of one call.
    let other = stack.store.rollout().await;
    let url = format!("{}/chat/completions", stack.base(&other));
    let calls = (0..10).map(|i| {
        let url = url.clone();
        async move {
            let mut request = chat(&format!("concurrent {i}"));
            request["stream"] = json!(i % 2 == 0);
            post(&url, &request).await.0
        }
    });
    let statuses = futures::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let spans = stack.store.wait_spans(&other.0, 30).await;
    let mut traces: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for span in &spans {
        traces
            .entry(span["trace_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(span["sequence_id"].as_i64().unwrap());
    }
    assert_eq!(traces.len(), 10);
    assert!(traces.values().all(|seqs| seqs.len() == 1));
    let seqs: BTreeSet<i64> = traces.values().flatten().copied().collect();
    assert_eq!(seqs, (1..=10).collect());
    stack.stop().await;
}

#[tokio::test]
async fn text_completions_are_recorded_with_their_per_choice_ids() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    // Without `/v1`, as agents given the bare attempt URL call it.
    let url = format!(
        "{}/rollout/{}/attempt/{}/completions",
        stack.proxy.url, rollout.0, rollout.1
    );
    let request =
        json!({"model": "agl-model", "prompt": "complete this sentence", "max_tokens": 4});
    let (status, _, body) = post(&url, &request).await;
    assert_eq!(status, 200);
    let mut streamed = request.clone();
    streamed["stream"] = json!(true);
    let (status, _, streamed_body) = post(&url, &streamed).await;
    assert_eq!(status, 200);
    let exchanges = stack.double.state().exchanges();
    assert_eq!(exchanges[0].path, "/v1/completions");
    assert_eq!(String::from_utf8(body).unwrap(), exchanges[0].response);
    assert_eq!(
        String::from_utf8(streamed_body).unwrap(),
        exchanges[1].response
    );

    let spans = stack.store.wait_spans(&rollout.0, 6).await;
    for raw in by_name(&spans, "raw_gen_ai_request") {
        let attrs = &raw["attributes"];
        let exchange = &exchanges[raw["sequence_id"].as_u64().unwrap() as usize - 1];
        assert_eq!(
            attrs["llm.hosted_vllm.prompt_token_ids"],
            py_list(&exchange.prompt_token_ids)
        );
        assert_eq!(
            attrs["llm.hosted_vllm.response_token_ids"],
            format!("[{}]", py_list(&exchange.token_ids[0]))
        );
        assert_eq!(attrs["llm.hosted_vllm.object"], "text_completion");
    }
    for request_span in by_name(&spans, "litellm_request") {
        let attrs = &request_span["attributes"];
        assert_eq!(attrs["llm.request.type"], "atext_completion");
        assert_eq!(attrs["gen_ai.prompt.0.content"], "complete this sentence");
        assert_eq!(attrs["gen_ai.completion.0.content"], "You said: complete");
        assert_eq!(attrs["gen_ai.completion.0.finish_reason"], "length");
    }
    stack.stop().await;
}

#[tokio::test]
async fn calls_outside_a_rollout_are_served_untracked_with_token_ids() {
    let stack = Stack::start().await;
    let (status, _, body) = post(
        &format!("{}/v1/chat/completions", stack.proxy.url),
        &chat("no rollout here"),
    )
    .await;
    assert_eq!(status, 200);
    let exchange = stack.double.state().exchanges().pop().unwrap();
    assert_eq!(exchange.body["return_token_ids"], true);
    assert!(!exchange.headers.contains_key("x-rollout-id"));
    assert!(!exchange.headers.contains_key("x-sequence-id"));
    let response: Value = serde_json::from_slice(&body).unwrap();
    assert!(response["prompt_token_ids"].is_array());
    let untracked = "agl_vllm_untracked_requests_total{reason=\"no_rollout\"}";
    eventually(Duration::from_secs(5), "the untracked count", || async {
        (stack.proxy.metric(untracked).await == 1.0).then_some(())
    })
    .await;
    eventually(Duration::from_secs(5), "the request count", || async {
        let n = stack
            .proxy
            .metric("agl_vllm_requests_total{endpoint=\"chat\",outcome=\"ok\",stream=\"false\"}")
            .await;
        (n == 1.0).then_some(())
    })
    .await;
    assert_eq!(
        stack
            .proxy
            .metric("agl_vllm_export_spans_total{outcome=\"exported\"}")
            .await,
        0.0
    );
    assert!(
        stack
            .proxy
            .metric("agl_vllm_prompt_tokens_total{endpoint=\"chat\"}")
            .await
            > 0.0
    );
    stack.stop().await;
}

#[tokio::test]
async fn vllm_routes_pass_through_and_both_metrics_are_reachable() {
    let stack = Stack::start().await;
    let direct = stack.double.url();
    let http = client();
    for (method, path, body) in [
        ("GET", "/health", None),
        ("GET", "/version", None),
        ("GET", "/load", None),
        (
            "POST",
            "/tokenize",
            Some(json!({"model": "agl-model", "prompt": "a b c"})),
        ),
        (
            "POST",
            "/detokenize",
            Some(json!({"model": "agl-model", "tokens": [1, 2]})),
        ),
        ("GET", "/no/such/route", None),
    ] {
        let send = |base: &str| {
            let mut r = http.request(method.parse().unwrap(), format!("{base}{path}"));
            if let Some(b) = &body {
                r = r.json(b);
            }
            r.send()
        };
        let via = send(&stack.proxy.url).await.unwrap();
        let straight = send(&direct).await.unwrap();
        assert_eq!(via.status(), straight.status(), "{path}");
        assert_eq!(
            via.text().await.unwrap(),
            straight.text().await.unwrap(),
            "{path}"
        );
    }
    let models: Value = http
        .get(format!("{}/v1/models", stack.proxy.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "agl-model");
    // vLLM's metrics under /vllm/metrics, ours at /metrics and /agl/metrics.
    let vllm = http
        .get(format!("{}/vllm/metrics", stack.proxy.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(vllm.contains("vllm:num_requests_running"), "{vllm}");
    for path in ["/metrics", "/agl/metrics"] {
        let ours = http
            .get(format!("{}{path}", stack.proxy.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for series in [
            "agl_vllm_upstream_ready 1",
            "agl_vllm_export_queue_depth",
            "http_requests_total",
            "agl_build_info",
        ] {
            assert!(ours.contains(series), "{series} missing from {path}");
        }
        assert!(!ours.contains("vllm:num_requests_running"));
    }
    let status: Value = http
        .get(format!("{}/agl/status", stack.proxy.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["upstream_ready"], true);
    assert_eq!(status["models"], json!(["agl-model"]));
    assert_eq!(status["store"], json!(stack.store.url));
    stack.stop().await;
}

#[tokio::test]
async fn logprobs_and_the_served_model_are_added_when_configured() {
    let stack = Stack::start_with(|args| {
        args.logprobs = true;
        args.served_model = Some("auto".into());
        args.stream_usage = true;
    })
    .await;
    let rollout = stack.store.rollout().await;
    let mut request = chat("hello");
    request["model"] = json!("gpt-4o-any-alias");
    request["stream"] = json!(true);
    let (status, _, body) = post(
        &format!("{}/chat/completions", stack.base(&rollout)),
        &request,
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let exchange = stack.double.state().exchanges().pop().unwrap();
    assert_eq!(exchange.body["model"], "agl-model");
    assert_eq!(exchange.body["logprobs"], true);
    assert_eq!(
        exchange.body["stream_options"],
        json!({"include_usage": true})
    );
    let data = sse_data(&body);
    let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
    assert_eq!(usage["choices"], json!([]));
    let spans = stack.store.wait_spans(&rollout.0, 3).await;
    let raw = &by_name(&spans, "raw_gen_ai_request")[0]["attributes"];
    assert!(
        raw["llm.hosted_vllm.choices"]
            .as_str()
            .unwrap()
            .contains("'logprobs': {'content': [{'token': 'You', 'logprob': -0.1"),
        "{}",
        raw["llm.hosted_vllm.choices"]
    );
    assert!(
        raw["llm.hosted_vllm.usage"]
            .as_str()
            .unwrap()
            .starts_with("{'prompt_tokens': ")
    );
    stack.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_aborts_the_upstream_call() {
    let stack = Stack::start().await;
    let rollout = stack.store.rollout().await;
    let mut request = chat("[[slow:200]] [[long]] never mind");
    request["stream"] = json!(true);
    request["max_tokens"] = json!(50);
    let response = client()
        .post(format!("{}/chat/completions", stack.base(&rollout)))
        .json(&request)
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    let _first = body.next().await.unwrap().unwrap();
    drop(body);
    eventually(Duration::from_secs(10), "vllm to see the abort", || async {
        (stack.double.state().aborted() == 1).then_some(())
    })
    .await;
    let spans = stack.store.wait_spans(&rollout.0, 3).await;
    for span in &spans {
        assert_eq!(span["status"]["status_code"], "ERROR");
        assert!(
            span["status"]["description"]
                .as_str()
                .unwrap()
                .contains("client disconnected"),
            "{span}"
        );
    }
    eventually(Duration::from_secs(5), "the outcome metric", || async {
        let n = stack
            .proxy
            .metric("agl_vllm_requests_total{endpoint=\"chat\",outcome=\"client_disconnected\",stream=\"true\"}")
            .await;
        (n == 1.0).then_some(())
    })
    .await;
    stack.stop().await;
}

#[tokio::test]
async fn spans_waiting_for_export_are_flushed_at_shutdown() {
    let stack = Stack::start_with(|args| {
        // A batch would wait a minute to fill: only the shutdown flush can send it.
        args.export_interval_seconds = 60.0;
        args.export_batch = 1000;
    })
    .await;
    let rollout = stack.store.rollout().await;
    let (status, _, _) = post(
        &format!("{}/chat/completions", stack.base(&rollout)),
        &chat("flush me"),
    )
    .await;
    assert_eq!(status, 200);
    let Stack {
        double,
        store,
        proxy,
    } = stack;
    // The recorder has the call once the metric counts it.
    eventually(
        Duration::from_secs(5),
        "the call to be recorded",
        || async { (proxy.metric("agl_vllm_export_queue_depth").await == 1.0).then_some(()) },
    )
    .await;
    assert!(store.spans(&rollout.0).await.is_empty());
    let stopping = Instant::now();
    proxy.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(10));
    assert_eq!(store.spans(&rollout.0).await.len(), 3);
    double.stop().await;
    store.stop().await;
}

#[tokio::test]
async fn a_vllm_with_an_api_key_is_ready_and_the_agents_key_passes_through() {
    use agl_vllm::double::{Double, DoubleConfig};
    let double = Double::start(DoubleConfig {
        api_key: Some("sekret".into()),
        ..DoubleConfig::default()
    })
    .await
    .unwrap();
    let proxy =
        crate::helpers::Proxy::start(&crate::helpers::proxy_args(None), &double.url()).await;
    // The proxy was not given the key: a 401 from /v1/models still means vLLM serves.
    proxy.ready().await;
    let url = format!("{}/v1/chat/completions", proxy.url);
    let (status, _, _) = post(&url, &chat("no key")).await;
    assert_eq!(status, 401);
    let response = client()
        .post(&url)
        .bearer_auth("sekret")
        .json(&chat("with key"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let exchange = double.state().exchanges().pop().unwrap();
    assert_eq!(exchange.headers["authorization"], "Bearer sekret");
    proxy.stop().await;
    double.stop().await;
}

#[tokio::test]
async fn a_pause_refuses_new_calls_while_those_in_flight_finish() {
    let stack = Stack::start().await;
    let state = |path: &'static str| {
        let url = format!("{}{path}", stack.proxy.url);
        async move {
            let r = if path == "/proxy/state" {
                client().get(url).send().await.unwrap()
            } else {
                client()
                    .post(url)
                    .json(&json!({"retry_after_seconds": 2, "reason": "weight sync"}))
                    .send()
                    .await
                    .unwrap()
            };
            assert_eq!(r.status(), 200, "{path}");
            r.json::<Value>().await.unwrap()
        }
    };
    assert_eq!(
        state("/proxy/state").await,
        json!({"paused": false, "retry_after_seconds": 5, "reason": null, "inflight": 0})
    );
    // A slow streamed call is in flight when the pause comes.
    let mut slow = chat("[[slow:100]] one two three");
    slow["stream"] = json!(true);
    let response = client()
        .post(format!("{}/v1/chat/completions", stack.proxy.url))
        .json(&slow)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let paused = state("/proxy/pause").await;
    assert_eq!(
        paused,
        json!({"paused": true, "retry_after_seconds": 2, "reason": "weight sync", "inflight": 1})
    );
    let refused = client()
        .post(format!("{}/v1/chat/completions", stack.proxy.url))
        .json(&chat("hello"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "2");
    assert_eq!(refused.headers()["x-agl-paused"], "true");
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        json!({"error": "gateway paused", "reason": "weight sync"})
    );
    // The call in flight finishes in full; then nothing is in flight.
    let body = response.bytes().await.unwrap();
    assert!(sse_data(&body).last().is_some_and(|d| d == "[DONE]"));
    let drained = eventually(Duration::from_secs(5), "the count to drop", || async {
        let s = state("/proxy/state").await;
        (s["inflight"] == 0).then_some(s)
    })
    .await;
    assert_eq!(drained["paused"], true);
    let resumed = state("/proxy/resume").await;
    assert_eq!(
        resumed,
        json!({"paused": false, "retry_after_seconds": 2, "reason": null, "inflight": 0})
    );
    let (status, _, _) = post(
        &format!("{}/v1/chat/completions", stack.proxy.url),
        &chat("hi"),
    )
    .await;
    assert_eq!(status, 200);
    stack.stop().await;
}
