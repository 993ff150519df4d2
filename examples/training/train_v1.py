"""Upstream 1.0's training loop without a GPU, against an agl-store (its `agl-server` API):
the trainer side is upstream's own rollout manager (`AglRolloutManager`, what 1.0's verl
trainer calls every step), the agents are run by upstream's `agl-controller`, and every
model call goes through the store's capturing gateway, which records its token ids.

    # the controller: one agent process per queued rollout (this folder on PYTHONPATH)
    PYTHONPATH=examples/training agl-controller runner_type=local \\
        agl_server.url=http://localhost:4747 local_runner.poll_interval=1
    # the trainer: registers the model, enqueues, waits, reads rewards and triplets back
    python examples/training/train_v1.py --store http://localhost:4747

The search is the 0.3.0 example's (`tasks.py`): each candidate prompt template is a step
whose training questions are enqueued with the template in their input; the agent
(`agent_v1.py`) asks the model through `AGL_OPENAI_BASE_URL` and posts its reward to
`AGL_EVENT_URL`; the manager polls each rollout until it ends, reads its events as triplets
(prompt and response token ids, the reward on the last) and deletes it, as 1.0's trainer
does. The best template is then checked on the validation questions.

The model is `stand_in_model.py`, started here on loopback (so the store must reach this
machine's loopback: run the store natively), unless `--model-url` names an OpenAI-compatible
server the store reaches (vLLM: `http://vllm:8000/v1` in compose's `gpu` profile). The
gateway forwards only to models registered under the name it serves (upstream's
`default_proxy.model_name`, `--proxy-model-name`; `--model` here), Qwen/Qwen2.5-7B-Instruct
unless both are told otherwise. The trainer prints one JSON line,
`AGL-RESULT {...}`: every template's mean reward, the winner, its validation reward, the
number of triplets read, and (with the stand-in, whose tokens are bytes) the answers decoded
from the recorded token ids.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Dict, List, Optional

from agentlightning.verl.agl_rollout_manager import AglRolloutManager, CompletedRollout

from stand_in_model import serve
from tasks import CANDIDATES, TRAIN, VAL

AGENT_CLASS = "agent_v1.ArithmeticAgent"
# Each variable the agent reads, from a field of the rollout's input.
ENV_MAP = {"AGL_QUESTION": "input.question", "AGL_ANSWER": "input.answer", "AGL_TEMPLATE": "input.template"}


class Step:
    """One template's rollouts, run as one step of 1.0's trainer runs its batch."""

    def __init__(self, args: argparse.Namespace, step: int) -> None:
        self.manager = AglRolloutManager(
            agl_base_url=args.store,
            agl_key=args.key,
            model=args.model,
            step=step,
            rollout_timeout_seconds=args.rollout_timeout,
            poll_interval_seconds=args.poll_interval,
            local_agent_class=AGENT_CLASS,
            local_env_map=ENV_MAP,
        )

    def run(self, template: str, tasks: List[Dict[str, Any]], is_train: bool) -> List[CompletedRollout]:
        # The manager takes a batch as columns, as verl hands it one.
        batch = {
            "question": [t["question"] for t in tasks],
            "answer": [t["answer"] for t in tasks],
            "template": [template] * len(tasks),
        }
        try:
            completed = self.manager.enqueue_and_wait_until_completed(batch, is_train=is_train)
        finally:
            self.manager.client.close()
        for rollout in completed:
            if rollout.rollout_state != "succeeded":
                raise SystemExit(f"rollout {rollout.rollout_id} ended {rollout.rollout_state}: {rollout.error_message}")
            if rollout.final_reward is None:
                raise SystemExit(f"rollout {rollout.rollout_id} recorded no reward event")
            if not rollout.triplets:
                raise SystemExit(f"rollout {rollout.rollout_id}: the gateway recorded no model call with token ids")
        return completed


def mean_reward(completed: List[CompletedRollout]) -> float:
    return sum(r.final_reward or 0.0 for r in completed) / len(completed)


def answers(completed: List[CompletedRollout]) -> Dict[str, str]:
    """What the stand-in said to each question, read back from the recorded token ids."""
    return {
        r.input["question"]: bytes(r.triplets[-1].response["token_ids"]).decode("utf-8", errors="replace")
        for r in completed
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=os.environ.get("AGL_STORE_URL", "http://localhost:4747"),
                        help="the store's URL (default: $AGL_STORE_URL or http://localhost:4747)")
    parser.add_argument("--key", default=os.environ.get("AGL_KEY", ""), help="the store's key (default: $AGL_KEY)")
    parser.add_argument("--model-url", help="an OpenAI-compatible base URL the store reaches (default: a stand-in)")
    parser.add_argument("--model", default="Qwen/Qwen2.5-7B-Instruct",
                        help="the model name registered with the store: the gateway forwards only to the model it "
                             "serves (default_proxy.model_name, --proxy-model-name; upstream's default here)")
    parser.add_argument("--rollout-timeout", type=float, default=120, help="seconds before the controller kills an agent")
    parser.add_argument("--poll-interval", type=float, default=0.5, help="seconds between the manager's polls")
    args = parser.parse_args()

    stand_in: Optional[Any] = None
    endpoint = args.model_url
    if endpoint is None:
        stand_in = serve("127.0.0.1", 0)
        endpoint = f"http://127.0.0.1:{stand_in.server_address[1]}/v1"
    registrar = Step(args, step=0).manager
    try:
        registrar.register_model([endpoint])
        print(f"model {args.model!r} at {endpoint} registered with {args.store}", flush=True)

        scores: Dict[str, float] = {}
        said: Dict[str, Dict[str, str]] = {}
        triplets = 0
        for step, template in enumerate(CANDIDATES):
            completed = Step(args, step).run(template, TRAIN, is_train=True)
            scores[template] = mean_reward(completed)
            triplets += sum(len(r.triplets or []) for r in completed)
            if stand_in is not None:
                said[template] = answers(completed)
            print(f"template {template!r}: mean reward {scores[template]:.2f}", flush=True)
        best = max(CANDIDATES, key=lambda t: scores[t])
        val_reward = mean_reward(Step(args, len(CANDIDATES)).run(best, VAL, is_train=False))
        result: Dict[str, Any] = {"scores": scores, "best": best, "val_reward": val_reward, "triplets": triplets}
        if stand_in is not None:
            result["answers"] = said
        print("AGL-RESULT " + json.dumps(result), flush=True)
    finally:
        registrar.delete_model()
        registrar.client.close()
        if stand_in is not None:
            stand_in.shutdown()


if __name__ == "__main__":
    main()
