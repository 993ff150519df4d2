"""Upstream's own `Trainer` (agentlightning 0.3.0) against an external agl-store, as two
processes of its default client-server strategy:

    # the runners: two processes claiming rollouts and running the agent
    AGL_MANAGED_STORE=0 AGL_CURRENT_ROLE=runner python examples/training/train.py
    # the algorithm: enqueues rollouts, waits for them, reads their rewards back
    AGL_MANAGED_STORE=0 AGL_CURRENT_ROLE=algorithm python examples/training/train.py

`AGL_MANAGED_STORE=0` makes the strategy use the store it is given (a
`LightningStoreClient` of `--store`, default http://localhost:4747) instead of starting a
server of its own on AGL_SERVER_PORT; `AGL_CURRENT_ROLE` picks the side this process runs.

The agent needs no GPU: it answers arithmetic questions with a prompt template (the
resource being trained), through a deterministic stand-in for a model that only computes
when the prompt asks it to show its work (`tasks.py`, shared with the 1.0 example). Its
spans go through upstream's tracer (`OtelTracer`) into the store; its return value is its
reward. The algorithm is a prompt search: each candidate template is published as a resources version, the training
questions are enqueued under it, and the rewards the store holds decide the best one, which
is then checked on the validation questions. The algorithm prints one JSON line,
`AGL-RESULT {...}`, with the mean reward of every template and the winner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from typing import Any, Dict, List

import agentlightning as agl
from agentlightning.emitter.reward import find_final_reward

from tasks import CANDIDATES, TRAIN, VAL, model, reward


@agl.rollout
def arithmetic_agent(task: Dict[str, Any], prompt_template: agl.PromptTemplate) -> float:
    """One rollout: format the prompt, ask the model, score the last number it said."""
    prompt = prompt_template.format(question=task["question"])
    agl.emit_message(f"prompt: {prompt}")
    answer = model(prompt)
    agl.emit_object({"question": task["question"], "answer": answer})
    return reward(answer, task["answer"])


class TemplateSearch(agl.Algorithm):
    """Publishes each candidate template, runs the training questions under it, keeps the
    best by mean reward, then validates it."""

    async def _mean_reward(self, template: str, tasks: List[Dict[str, Any]], mode: str) -> float:
        store = self.get_store()
        resources = await store.add_resources(
            {"prompt_template": agl.PromptTemplate(template=template, engine="f-string")}
        )
        ids = []
        for task in tasks:
            rollout = await store.enqueue_rollout(input=task, mode=mode, resources_id=resources.resources_id)
            ids.append(rollout.rollout_id)
        pending = set(ids)
        while pending:
            # The client's wait returns at once (it refuses to block its event loop): poll.
            done = await store.wait_for_rollouts(rollout_ids=sorted(pending), timeout=0)
            for rollout in done:
                if rollout.status != "succeeded":
                    raise RuntimeError(f"rollout {rollout.rollout_id} ended {rollout.status}")
                pending.discard(rollout.rollout_id)
            if pending:
                await asyncio.sleep(0.1)
        rewards = []
        for rollout_id in ids:
            reward = find_final_reward(await store.query_spans(rollout_id))
            if reward is None:
                raise RuntimeError(f"rollout {rollout_id} recorded no reward span")
            rewards.append(reward)
        return sum(rewards) / len(rewards)

    async def run(self, train_dataset=None, val_dataset=None) -> None:
        scores = {}
        for template in CANDIDATES:
            scores[template] = await self._mean_reward(template, list(train_dataset), "train")
            print(f"template {template!r}: mean reward {scores[template]:.2f}", flush=True)
        best = max(CANDIDATES, key=lambda t: scores[t])
        val = await self._mean_reward(best, list(val_dataset), "val")
        print("AGL-RESULT " + json.dumps({"scores": scores, "best": best, "val_reward": val}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("AGL_STORE_URL", "http://localhost:4747"),
                        help="the agl-store URL (default: $AGL_STORE_URL or http://localhost:4747)")
    parser.add_argument("--runners", type=int, default=2, help="runner processes (role runner)")
    args = parser.parse_args()
    trainer = agl.Trainer(
        store=agl.LightningStoreClient(args.store),
        n_runners=args.runners,
        algorithm=TemplateSearch(),
        tracer=agl.OtelTracer(),
    )
    trainer.fit(arithmetic_agent, train_dataset=TRAIN, val_dataset=VAL)


if __name__ == "__main__":
    main()
