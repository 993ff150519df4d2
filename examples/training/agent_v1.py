"""The agent of the agentlightning 1.0 example. `agl-controller runner_type=local` starts a
process for every queued rollout that imports `agent_v1.ArithmeticAgent` (this folder must
be on its PYTHONPATH) and calls `run()`, with what the controller hands every agent:

- `AGL_OPENAI_BASE_URL`: the store's capturing gateway for this rollout and attempt, which
  forwards to the model the trainer registered and records the call with its token ids;
- `AGL_EVENT_URL`: where the rollout's events go (the agent posts its reward there);
- `AGL_KEY`: the store's key, if it has one (the gateway's and the events' bearer token);
- and the rollout's input fields the trainer's `env_map` names: `AGL_QUESTION`,
  `AGL_ANSWER` (JSON-encoded, as the controller encodes every non-string) and `AGL_TEMPLATE`.

A return from `run()` is a succeeded rollout, an exception a failed one.
"""

from __future__ import annotations

import json
import os

import httpx
from httpx_retries import Retry, RetryTransport

from tasks import reward


class ArithmeticAgent:
    def run(self) -> None:
        question = os.environ["AGL_QUESTION"]
        expected = int(json.loads(os.environ["AGL_ANSWER"]))
        prompt = os.environ["AGL_TEMPLATE"].format(question=question)
        key = os.environ.get("AGL_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # The gateway answers 429 while the trainer syncs weights, and a model server may be
        # briefly away: retry those, as upstream's documentation tells agents to.
        retry = Retry(total=6, backoff_factor=0.5, allowed_methods=["POST"], status_forcelist=[429, 502, 503, 504])
        with httpx.Client(transport=RetryTransport(retry=retry), headers=headers, timeout=300) as client:
            response = client.post(
                f"{os.environ['AGL_OPENAI_BASE_URL']}/chat/completions",
                # The gateway puts the served model's name in; the temperature too, per mode.
                json={"model": "agl-example", "messages": [{"role": "user", "content": prompt}], "max_tokens": 256},
            )
            response.raise_for_status()
            answer = response.json()["choices"][0]["message"]["content"] or ""
            event = {"event_type": "reward", "data": {"value": reward(answer, expected), "source": "agent"}}
            client.post(os.environ["AGL_EVENT_URL"], json=event).raise_for_status()
