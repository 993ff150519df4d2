"""Upstream v1's API (agentlightning 1.0.2, `agl-server`), driven with upstream's own code: its
`AgentLightningSyncClient`, its pydantic models for every body sent and every answer read,
and its `agl-controller` (local runner) running an agent process per rollout.

Run against ours (default) or against 1.0.2's own `agl-server` (`AGL_COMPAT_TARGET=official`),
which validates the tests. The model server behind the capturing proxy (`/proxy/...`) is the vLLM
test double (`agl-vllm fake-vllm`), which answers with token ids as vLLM does.
"""

from __future__ import annotations

import time
from pathlib import Path

from agentlightning.client import AgentLightningSyncClient
from agentlightning.schemas import (
    Event,
    EventCreate,
    Model,
    ModelRequestData,
    Rollout,
    RolloutConfig,
    RolloutCreate,
    RolloutLocalConfig,
    RolloutPatch,
    RolloutStatusPatch,
)

from common import IS_OFFICIAL, PROXY_MODEL, local_controller, unique

HERE = Path(__file__).resolve().parent


def client(server) -> AgentLightningSyncClient:
    return AgentLightningSyncClient(base_url=server.base_url, timeout=30)


def create(api, *items: RolloutCreate) -> list[Rollout]:
    body = [item.model_dump(mode="json", exclude_unset=True) for item in items]
    response = api.post("/api/rollouts", json=body)
    assert response.status_code == 201, response.text
    return [Rollout.model_validate(item) for item in response.json()]


def patch(api, rollout_id: str, **status) -> "httpx.Response":  # noqa: F821
    body = RolloutPatch(status=RolloutStatusPatch(**status)).model_dump(mode="json", exclude_unset=True)
    return api.patch(f"/api/rollouts/{rollout_id}", json=body)


def post_event(api, rollout_id: str, attempt_id: str, event_type: str, data: dict) -> Event:
    body = EventCreate(event_type=event_type, data=data).model_dump(mode="json")
    response = api.post(f"/api/rollouts/{rollout_id}/attempt/{attempt_id}/events", json=body)
    assert response.status_code == 200, response.text
    return Event.model_validate(response.json())


def events(api, rollout_id: str, **params) -> list[Event]:
    response = api.get(f"/api/rollouts/{rollout_id}/events", params=params)
    assert response.status_code == 200, response.text
    return [Event.model_validate(item) for item in response.json()]


def model_request(prompt: list[int], response: list[int], logprob: float = -0.25) -> dict:
    """A `model_request` event's data as upstream's gateway records it (ModelRequestData)."""
    return {
        "model": "test-model",
        "model_version": 0,
        "request": {"messages": [{"role": "user", "content": "2+2?"}], "temperature": 1.0},
        "response": {
            "id": "cmpl-1",
            "object": "chat.completion",
            "prompt_token_ids": prompt,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "4"},
                    "finish_reason": "stop",
                    "token_ids": response,
                    "logprobs": {"content": [{"token": "4", "logprob": logprob}] * len(response)},
                }
            ],
            "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(response)},
        },
        "server": {"model": "test-model", "endpoint": "http://model.test/v1", "version": 0},
        "latency_ms": 3.5,
        "http_status": 200,
        "status": "ok",
        "retry_count": 0,
        "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(response)},
        "finish_reason": "stop",
    }


def test_health_needs_nothing(server_v102):
    with client(server_v102) as api:
        response = api.get("/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}


def test_rollouts_follow_the_state_machine(server_v102):
    with client(server_v102) as api:
        (rollout,) = create(api, RolloutCreate(input={"data_id": unique()}, metadata={"batch_idx": 1, "note": "x"}))
        assert rollout.status.state == "queuing" and rollout.status.version == 1
        assert rollout.metadata.batch_idx == 1 and rollout.metadata.model_extra == {"note": "x"}
        assert rollout.config == RolloutConfig()

        response = patch(api, rollout.rollout_id, state="succeeded")
        assert response.status_code == 409
        assert response.json() == {
            "detail": f"Rollout {rollout.rollout_id}: cannot transition queuing -> succeeded"
        }

        response = patch(api, rollout.rollout_id, state="running", k8s_job_name="job-1", last_attempt_id="0")
        assert response.status_code == 200, response.text
        running = Rollout.model_validate(response.json())
        assert running.status.state == "running" and running.status.version == 2
        assert running.status.k8s_job_name == "job-1" and running.status.last_attempt_id == "0"
        assert running.status.updated_at >= running.status.created_at

        done = Rollout.model_validate(patch(api, rollout.rollout_id, state="succeeded").json())
        assert done.status.state == "succeeded" and done.status.version == 3
        assert patch(api, rollout.rollout_id, state="failed").status_code == 409
        # Terminal is final for the state only.
        noted = patch(api, rollout.rollout_id, error_message="late note")
        assert noted.status_code == 200 and noted.json()["status"]["version"] == 4

        detail = api.get(f"/api/rollouts/{rollout.rollout_id}")
        assert detail.status_code == 200
        assert Rollout.model_validate(detail.json()["rollout"]).status.error_message == "late note"
        assert detail.json()["attempts"] == []

        missing = api.get("/api/rollouts/does-not-exist")
        assert missing.status_code == 404
        assert missing.json() == {"detail": "Rollout not found: does-not-exist"}


def test_states_upstream_does_not_have_are_422(server_v102):
    with client(server_v102) as api:
        (rollout,) = create(api, RolloutCreate(input=1))
        for body in ({"status": {"state": "cancelled"}}, {"status": {"cancel_requested": True}}):
            response = api.patch(f"/api/rollouts/{rollout.rollout_id}", json=body)
            assert response.status_code == 422, body
            assert isinstance(response.json()["detail"], list)


def test_list_filters_by_state(fresh_server_v102):
    with client(fresh_server_v102) as api:
        queued, running, failed = create(api, RolloutCreate(input=1), RolloutCreate(input=2), RolloutCreate(input=3))
        assert patch(api, running.rollout_id, state="running").status_code == 200
        assert patch(api, failed.rollout_id, state="failed", error_message="nope").status_code == 200

        def listed(*states, **params):
            response = api.get("/api/rollouts", params={"state_in": list(states), **params})
            assert response.status_code == 200, response.text
            return [Rollout.model_validate(item).rollout_id for item in response.json()]

        assert listed("queuing") == [queued.rollout_id]
        assert listed("queuing", "running") == [queued.rollout_id, running.rollout_id]
        assert listed("failed", "succeeded") == [failed.rollout_id]
        assert listed("queuing", "running", "failed", limit=2) == [queued.rollout_id, running.rollout_id]
        assert api.get("/api/rollouts").status_code == 422


def test_creation_is_idempotent_on_a_callers_id(server_v102):
    with client(server_v102) as api:
        rid = unique("pre-")
        (first,) = create(api, RolloutCreate(rollout_id=rid, input={"v": 1}, is_train=False))
        assert first.rollout_id == rid and first.is_train is False
        assert patch(api, rid, state="running").status_code == 200
        post_event(api, rid, "0", "reward", {"value": 1.0})
        # A retried create (the trainer re-enqueues with the same ids) changes nothing.
        (again,) = create(api, RolloutCreate(rollout_id=rid, input={"v": 2}))
        assert again.input == {"v": 1} and again.status.state == "running" and again.is_train is False
        assert len(events(api, rid)) == 1


def test_events_of_the_named_attempt_and_triplets(server_v102):
    with client(server_v102) as api:
        (rollout,) = create(api, RolloutCreate(input=1))
        rid = rollout.rollout_id
        assert patch(api, rid, state="running", last_attempt_id="0").status_code == 200
        first = post_event(api, rid, "0", "model_request", model_request([1, 2, 3], [4, 5]))
        assert first.rollout_id == rid and first.attempt_id == "0" and first.event_type == "model_request"
        post_event(api, rid, "0", "model_request", model_request([1, 2, 3], [6], logprob=-1.0))
        post_event(api, rid, "0", "model_request", model_request([1, 2, 3, 6, 7], [8]))
        post_event(api, rid, "0", "reward", {"value": 0.5, "message": "half", "source": "agent"})
        post_event(api, rid, "1", "reward", {"value": 9.0})

        raw = events(api, rid)
        assert [e.event_type for e in raw] == ["model_request"] * 3 + ["reward"]
        assert raw[0].data == model_request([1, 2, 3], [4, 5])
        assert [e.timestamp for e in raw] == sorted(e.timestamp for e in raw)
        assert [e.data["value"] for e in events(api, rid, event_type="reward")] == [0.5]

        triplets = events(api, rid, format="triplet")
        assert [e.event_type for e in triplets] == ["model_request", "model_request", "reward"]
        # Deduplicated by prompt token ids, the last kept.
        assert triplets[0].data == {
            "prompt_token_ids": [1, 2, 3],
            "response_token_ids": [6],
            "response_log_probs": [-1.0],
            "server": {"model": "test-model", "version": 0},
            "http_status": 200,
            "status": "ok",
        }
        assert triplets[1].data["prompt_token_ids"] == [1, 2, 3, 6, 7]
        assert triplets[2].data == {"value": 0.5, "source": "agent"}

        detail = api.get(f"/api/rollouts/{rid}").json()
        assert detail["attempts"] == ["0", "1"]
        assert patch(api, rid, last_attempt_id="1").status_code == 200
        assert [e.data for e in events(api, rid)] == [{"value": 9.0}]

        unknown = api.post("/api/rollouts/nope/attempt/0/events", json={"event_type": "x", "data": {}})
        assert unknown.status_code == 404


def test_delete_is_idempotent_and_takes_the_events(server_v102):
    with client(server_v102) as api:
        (rollout,) = create(api, RolloutCreate(input=1))
        post_event(api, rollout.rollout_id, "0", "reward", {"value": 1.0})
        assert api.delete(f"/api/rollouts/{rollout.rollout_id}").status_code == 204
        assert api.delete(f"/api/rollouts/{rollout.rollout_id}").status_code == 204
        assert api.get(f"/api/rollouts/{rollout.rollout_id}").status_code == 404
        assert api.get(f"/api/rollouts/{rollout.rollout_id}/events").status_code == 404


def test_terminal_cursor(fresh_server_v102):
    with client(fresh_server_v102) as api:
        a, b, c = create(
            api,
            RolloutCreate(input={"data_id": "a"}),
            RolloutCreate(input={"instance_id": "b"}, is_train=False),
            RolloutCreate(input=3),
        )
        for rollout, end in ((b, "succeeded"), (a, "failed"), (c, "failed")):
            if end == "succeeded":
                assert patch(api, rollout.rollout_id, state="running").status_code == 200
            assert patch(api, rollout.rollout_id, state=end).status_code == 200
        page = api.get("/api/rollouts/terminal", params={"after": 0, "limit": 2}).json()
        assert page == {
            "items": [
                {"rollout_id": b.rollout_id, "state": "succeeded", "data_id": "b", "is_train": False},
                {"rollout_id": a.rollout_id, "state": "failed", "data_id": "a", "is_train": True},
            ],
            "next_after": 2,
            "total_terminal": 3,
        }
        rest = api.get("/api/rollouts/terminal", params={"after": page["next_after"]}).json()
        assert [item["rollout_id"] for item in rest["items"]] == [c.rollout_id]
        assert rest["next_after"] == 3 and rest["total_terminal"] == 3


def wait_terminal(api, rollout_id: str, timeout: float) -> Rollout:
    """Poll a rollout as upstream's trainer does until it is terminal."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/api/rollouts/{rollout_id}")
        assert response.status_code == 200, response.text
        rollout = Rollout.model_validate(response.json()["rollout"])
        if rollout.status.state in ("succeeded", "failed"):
            return rollout
        assert time.monotonic() < deadline, f"{rollout_id} still {rollout.status.state} after {timeout}s"
        time.sleep(0.1)  # the trainer's poll, shortened


def test_local_controller_runs_agents_against_the_store(fresh_server_v102, model_server, tmp_path):
    """`agl-controller runner_type=local` claims each queued rollout, runs its agent class in a
    process of its own (which posts its reward to the store), and records the outcome."""
    with client(fresh_server_v102) as api:
        register(api, model_server)
        local = RolloutLocalConfig(
            agent_class="reward_agent.RewardAgent",
            env_map={
                "AGL_TEST_VALUE": "input.value",
                "AGL_TEST_FAIL": "input.fail",
                "AGL_TEST_LLM": "input.llm",
                "AGL_TEST_STREAM": "input.stream",
            },
        )
        good, bad = create(
            api,
            RolloutCreate(
                # Streams only where served: agl-store (upstream's gateway answers 400).
                input={"value": 0.75, "fail": False, "llm": True, "stream": not IS_OFFICIAL},
                config=RolloutConfig(timeout_seconds=120, local=local),
            ),
            RolloutCreate(
                input={"value": 0, "fail": True, "llm": False, "stream": False},
                is_train=False,
                config=RolloutConfig(timeout_seconds=120, local=local),
            ),
        )
        with local_controller(fresh_server_v102.base_url, tmp_path, HERE) as controller_log:
            try:
                finished = wait_terminal(api, good.rollout_id, timeout=90)
                failed = wait_terminal(api, bad.rollout_id, timeout=90)
            except AssertionError:
                raise AssertionError(controller_log.read_text(errors="replace")[-4000:]) from None

        assert finished.status.state == "succeeded", finished.status
        assert finished.status.last_attempt_id == "0"
        assert failed.status.state == "failed"
        assert failed.status.error_message == "subprocess exited with code 1"

        raw = events(api, good.rollout_id)
        calls = 1 if IS_OFFICIAL else 2
        assert [e.event_type for e in raw] == ["model_request"] * calls + ["reward", "agent_env"]
        if not IS_OFFICIAL:
            streamed = ModelRequestData.model_validate(raw[1].data)
            assert streamed.request["stream"] is True
            assert streamed.response["choices"][0]["token_ids"], "the stream's token ids"
        raw = [raw[0]] + raw[calls:]
        call = ModelRequestData.model_validate(raw[0].data)
        assert call.model == PROXY_MODEL and call.http_status == 200 and call.status == "ok"
        assert raw[1].data == {"value": 0.75, "source": "agent", "message": "done"}
        assert raw[2].data["openai_base_url"] == (
            f"{fresh_server_v102.base_url}/proxy/rollout/{good.rollout_id}/attempt/0/mode/train/openai/v1"
        )
        triplets = events(api, good.rollout_id, format="triplet")
        assert [e.event_type for e in triplets] == ["model_request"] * calls + ["reward", "agent_env"]
        triplets = [triplets[0]] + triplets[calls:]
        assert triplets[0].data["prompt_token_ids"] and triplets[0].data["response_token_ids"]
        assert triplets[0].data["response_token_ids"] == call.response["choices"][0]["token_ids"]
        assert triplets[1].data == {"value": 0.75, "source": "agent"}
        assert events(api, bad.rollout_id) == []

        # The trainer deletes what it has read, to bound what the server keeps.
        for rollout in (good, bad):
            assert api.delete(f"/api/rollouts/{rollout.rollout_id}").status_code == 204
            assert api.get(f"/api/rollouts/{rollout.rollout_id}").status_code == 404


def test_the_shared_key(keyed_server_v102):
    from conftest import TEST_KEY

    with AgentLightningSyncClient(base_url=keyed_server_v102.base_url, timeout=30) as anonymous:
        assert anonymous.get("/healthz").status_code == 200
        refused = anonymous.get("/api/rollouts", params={"state_in": "queuing"})
        assert refused.status_code == 401
        assert refused.json() == {"detail": "Invalid or missing API key"}
        assert anonymous.get("/api/rollouts/x", headers={"x-api-key": "wrong"}).status_code == 401
        by_header = anonymous.get("/api/rollouts", params={"state_in": "queuing"}, headers={"x-api-key": TEST_KEY})
        assert by_header.status_code == 200
    with AgentLightningSyncClient(base_url=keyed_server_v102.base_url, key=TEST_KEY, timeout=30) as api:
        (rollout,) = create(api, RolloutCreate(input=1))
        assert api.get(f"/api/rollouts/{rollout.rollout_id}").status_code == 200


def register(api, model_server, version: int = 2) -> list[Model]:
    """Registers the model server as upstream's trainer does (its OpenAI base URL)."""
    models = [Model(model=PROXY_MODEL, endpoint=f"{model_server.base_url}/v1", version=version)]
    response = api.post("/api/models", json=[m.model_dump() for m in models])
    assert response.status_code == 201, response.text
    assert [Model.model_validate(m) for m in response.json()] == models
    return models


def proxy_base(server, rollout_id: str, mode: str = "train") -> str:
    return f"{server.base_url}/proxy/rollout/{rollout_id}/attempt/0/mode/{mode}/openai/v1"


def test_the_proxy_records_model_requests_with_token_ids(server_v102, model_server):
    with client(server_v102) as api:
        (rollout,) = create(api, RolloutCreate(input=1))
        rid = rollout.rollout_id
        assert api.post(f"{proxy_base(server_v102, rid)}/chat/completions", json={"messages": []}).status_code == 503
        register(api, model_server)
        assert patch(api, rid, state="running", last_attempt_id="0").status_code == 200
        chat = {"model": "whatever", "messages": [{"role": "user", "content": "one two three"}]}
        answer = api.post(f"{proxy_base(server_v102, rid)}/chat/completions", json=chat)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        token_ids = body["choices"][0]["token_ids"]
        assert token_ids and body["prompt_token_ids"]
        text = api.post(f"{proxy_base(server_v102, rid, 'val')}/completions", json={"prompt": "a b c"})
        assert text.status_code == 200, text.text

        raw = events(api, rid, event_type="model_request")
        assert len(raw) == 2
        first = ModelRequestData.model_validate(raw[0].data)
        assert first.model == PROXY_MODEL and first.model_version == 2
        assert first.request["model"] == PROXY_MODEL and first.request["return_token_ids"] is True
        assert first.request["temperature"] == 1.0 and first.request["logprobs"] is True
        assert first.http_status == 200 and first.status == "ok" and first.retry_count == 0
        assert raw[0].data["server"] == {
            "model": PROXY_MODEL,
            "endpoint": f"{model_server.base_url}/v1",
            "version": 2,
        }
        assert ModelRequestData.model_validate(raw[1].data).request["temperature"] == 0.7
        triplets = events(api, rid, format="triplet")
        assert triplets[0].data["prompt_token_ids"] == body["prompt_token_ids"]
        assert triplets[0].data["response_token_ids"] == token_ids

        assert api.post(f"{server_v102.base_url}/proxy/rollout/{rid}/attempt/0/mode/test/openai/v1/chat/completions", json=chat).status_code == 404
        assert api.post(f"{proxy_base(server_v102, 'nope')}/chat/completions", json=chat).status_code == 404
        streamed = api.post(f"{proxy_base(server_v102, rid)}/chat/completions", json={**chat, "stream": True})
        if IS_OFFICIAL:
            assert streamed.status_code == 400
        else:
            # agl-store serves streams (upstream refuses them) and records what they add up to.
            assert streamed.status_code == 200 and "data: [DONE]" in streamed.text
            deadline = time.monotonic() + 10
            while len(events(api, rid, event_type="model_request")) < 3:
                assert time.monotonic() < deadline, "the stream was not recorded"
                time.sleep(0.05)
            last = events(api, rid, format="triplet")[-1]
            assert last.data["response_token_ids"]


def test_a_pause_answers_429_until_resumed(server_v102, model_server):
    with client(server_v102) as api:
        register(api, model_server)
        (rollout,) = create(api, RolloutCreate(input=1))
        url = f"{proxy_base(server_v102, rollout.rollout_id)}/chat/completions"
        chat = {"messages": [{"role": "user", "content": "hi"}]}
        paused = api.post("/proxy/pause", json={"retry_after_seconds": 2, "reason": "weight sync"})
        assert paused.status_code == 200
        assert paused.json() == {"paused": True, "retry_after_seconds": 2, "reason": "weight sync", "inflight": 0}
        refused = api.post(url, json=chat)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "2" and refused.headers["x-agl-paused"] == "true"
        assert refused.json() == {"error": "gateway paused", "reason": "weight sync"}
        assert api.get("/proxy/state").json()["paused"] is True
        resumed = api.post("/proxy/resume")
        assert resumed.json() == {"paused": False, "retry_after_seconds": 2, "reason": None, "inflight": 0}
        assert api.post(url, json=chat).status_code == 200
        cleared = api.delete("/api/models")
        assert cleared.status_code == 200 and cleared.json() == {"status": "ok"}
        assert api.post(url, json=chat).status_code == 503
