"""An agent for ``agl-controller runner_type=local``: it reads what the controller hands every
agent process (``AGL_EVENT_URL``, ``AGL_KEY`` and the ``env_map`` values taken from the
rollout's input) and posts a reward event, as upstream's example agents do."""

from __future__ import annotations

import os

import httpx


class RewardAgent:
    def run(self) -> None:
        if os.environ.get("AGL_TEST_FAIL") == "true":
            raise RuntimeError("this rollout is meant to fail")
        headers = {"Authorization": f"Bearer {os.environ['AGL_KEY']}"} if os.environ.get("AGL_KEY") else {}
        if os.environ.get("AGL_TEST_LLM") == "true":
            # The agent's LLM call, through the gateway the controller names (its OpenAI base URL).
            answer = httpx.post(
                f"{os.environ['AGL_OPENAI_BASE_URL']}/chat/completions",
                json={"model": "whatever", "messages": [{"role": "user", "content": "what is two plus two"}]},
                headers=headers,
                timeout=60,
            )
            answer.raise_for_status()
            assert answer.json()["choices"][0]["message"]["content"]
        if os.environ.get("AGL_TEST_STREAM") == "true":
            # A streamed call (agl-store serves streams; upstream's gateway refuses them).
            with httpx.stream(
                "POST",
                f"{os.environ['AGL_OPENAI_BASE_URL']}/chat/completions",
                json={"model": "whatever", "stream": True, "messages": [{"role": "user", "content": "and three"}]},
                headers=headers,
                timeout=60,
            ) as streamed:
                streamed.raise_for_status()
                lines = [line for line in streamed.iter_lines() if line.startswith("data: ")]
                assert lines[-1] == "data: [DONE]", lines[-3:]
        value = float(os.environ["AGL_TEST_VALUE"])
        response = httpx.post(
            os.environ["AGL_EVENT_URL"],
            json={"event_type": "reward", "data": {"value": value, "source": "agent", "message": "done"}},
            headers=headers,
            timeout=30,
        )
        response.raise_for_status()
        # The OpenAI base URL the controller computed for this rollout, for the test to read.
        response = httpx.post(
            os.environ["AGL_EVENT_URL"],
            json={"event_type": "agent_env", "data": {"openai_base_url": os.environ["AGL_OPENAI_BASE_URL"]}},
            headers=headers,
            timeout=30,
        )
        response.raise_for_status()
