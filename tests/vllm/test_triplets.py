"""Upstream's own consumer agrees with what the proxy records.

An agent (the official openai SDK) calls the proxy at the attempt's base URL, as
`LLMProxy.as_resource` hands it out; the spans are read back with the official
`LightningStoreClient` and turned into triplets by the official `LlmProxyTraceToTriplet`
(agentlightning 0.3.0). The triplets must carry exactly the token ids the double produced,
in call order, with a reward matched by sequence id. The store is agl-store or the official
Python server (so the proxy's OTLP also passes upstream's own ingestion), and the proxy runs
as a sidecar or behind the launcher.
"""

import ast
import asyncio
import json
import time

import openai
from agentlightning.adapter.triplet import LlmProxyTraceToTriplet
from agentlightning.store.client_server import LightningStoreClient

from conftest import http, reward_span

# Quotes of both kinds, a backslash and non-ASCII: the double echoes the first words, so
# the recorded choices must survive Python's repr()/literal_eval round trip.
TRICKY = "It's \"quoted\" caf\u00e9 \\path \u2615 and more words here"
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]


def test_official_adapter_reads_the_recorded_token_ids(llm, store):
    async def scenario():
        client = LightningStoreClient(store.base)
        try:
            rollout = await client.start_rollout(input={"task": "agl-vllm compat"})
            rid, aid = rollout.rollout_id, rollout.attempt.attempt_id
            agent = openai.OpenAI(
                base_url=f"{llm.base}/rollout/{rid}/attempt/{aid}/v1", api_key="not-needed"
            )
            expected = []

            # 1. Non-streaming chat; the response keeps the ids (agent-side tracing reads them).
            first = agent.chat.completions.create(
                model="agl-model", messages=[{"role": "user", "content": TRICKY}], max_tokens=32
            ).model_dump()
            assert first["prompt_token_ids"], first
            expected.append((first["prompt_token_ids"], first["choices"][0]["token_ids"], first["id"]))

            # 2. A streamed tool call: ids arrive per chunk, prompt ids in the first one.
            prompt_ids, response_ids, call_id, arguments = None, [], None, ""
            for chunk in agent.chat.completions.create(
                model="agl-model", messages=[{"role": "user", "content": "[[tool]] Paris weather"}],
                tools=TOOLS, stream=True,
            ):
                data = chunk.model_dump()
                call_id = data["id"]
                prompt_ids = prompt_ids or data.get("prompt_token_ids")
                for choice in data["choices"]:
                    response_ids.extend(choice.get("token_ids") or [])
                    for tool in (choice["delta"].get("tool_calls") or []):
                        arguments += (tool.get("function") or {}).get("arguments") or ""
            assert json.loads(arguments) == {"query": "Paris"}
            expected.append((prompt_ids, response_ids, call_id))

            # A reward after the second call: the adapter gives it to that call.
            sequence = await client.get_next_span_sequence_id(rid, aid)
            status, body = http("POST", f"{store.base}/v1/agl/spans", reward_span(rid, aid, sequence, 0.5))
            assert status in (200, 201), body

            # 3. A streamed answer with reasoning.
            prompt_ids, response_ids, call_id = None, [], None
            stream = agent.chat.completions.create(
                model="agl-model", messages=[{"role": "user", "content": "[[reasoning]] think first"}],
                stream=True,
            )
            for chunk in stream:
                data = chunk.model_dump()
                call_id = data["id"]
                prompt_ids = prompt_ids or data.get("prompt_token_ids")
                for choice in data["choices"]:
                    response_ids.extend(choice.get("token_ids") or [])
            expected.append((prompt_ids, response_ids, call_id))

            # 4. A text completion: the ids are per choice.
            completion = agent.completions.create(
                model="agl-model", prompt="Once upon a time", max_tokens=4
            ).model_dump()
            choice = completion["choices"][0]
            expected.append((choice["prompt_token_ids"], choice["token_ids"], completion["id"]))

            # Four calls of three spans each, and the reward.
            deadline = time.monotonic() + 30
            while True:
                spans = list(await client.query_spans(rid))
                if len(spans) >= 4 * 3 + 1:
                    break
                assert time.monotonic() < deadline, f"only {len(spans)} spans recorded"
                await asyncio.sleep(0.05)
            return rid, aid, spans, expected, first
        finally:
            await client.close()

    rid, aid, spans, expected, first = asyncio.run(scenario())
    assert all(s.rollout_id == rid and s.attempt_id == aid for s in spans)
    calls = [s for s in spans if s.name == "raw_gen_ai_request"]
    assert [s.sequence_id for s in calls] == [1, 2, 4, 5]

    triplets = LlmProxyTraceToTriplet().adapt(spans)
    assert len(triplets) == 4
    for triplet, (prompt_ids, response_ids, call_id) in zip(triplets, expected):
        assert triplet.prompt["token_ids"] == prompt_ids
        assert triplet.response["token_ids"] == response_ids
        assert triplet.metadata["response_id"] == call_id
    assert [t.reward for t in triplets] == [None, 0.5, None, None]

    # The recorded response is a Python literal that parses back to what the agent got.
    raw = calls[0].attributes
    choices = ast.literal_eval(raw["llm.hosted_vllm.choices"])
    assert choices[0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert "It's" in choices[0]["message"]["content"] and "caf\u00e9" in choices[0]["message"]["content"]
    assert ast.literal_eval(raw["llm.hosted_vllm.messages"]) == [{"role": "user", "content": TRICKY}]
    headers = ast.literal_eval(
        next(s for s in spans if s.name == "litellm_request" and s.sequence_id == 1)
        .attributes["metadata.requester_custom_headers"]
    )
    assert headers == {"x-rollout-id": rid, "x-attempt-id": aid, "x-sequence-id": "1"}
    reasoning = ast.literal_eval(calls[2].attributes["llm.hosted_vllm.choices"])
    assert reasoning[0]["message"]["reasoning_content"] == "Let me think."
    tool = ast.literal_eval(calls[1].attributes["llm.hosted_vllm.choices"])
    assert tool[0]["message"]["tool_calls"][0]["function"]["name"] == "get_weather"
    assert tool[0]["finish_reason"] == "tool_calls"


def test_calls_outside_a_rollout_are_served_but_not_recorded(llm, store):
    agent = openai.OpenAI(base_url=f"{llm.base}/v1", api_key="not-needed")
    response = agent.chat.completions.create(
        model="agl-model", messages=[{"role": "user", "content": "hello"}]
    ).model_dump()
    assert response["choices"][0]["message"]["content"] == "You said: hello."
    assert response["prompt_token_ids"] and response["choices"][0]["token_ids"]
    status, body = http("GET", f"{llm.base}/metrics")
    assert status == 200
    assert 'agl_vllm_untracked_requests_total{reason="no_rollout"}' in body.decode()
