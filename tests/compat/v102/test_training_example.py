"""examples/training/train_v1.py run as the README says: upstream 1.0.2's `agl-controller`
(local runner, the example folder on its PYTHONPATH) runs the example's agent for every
rollout, and the trainer side, upstream's own `AglRolloutManager`, registers the stand-in
model, enqueues each template's questions, waits, reads rewards and triplets back and
deletes what it read. The search must find the template that works, and the answers decoded
from the token ids the gateway recorded must be what the model said."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentlightning.client import AgentLightningSyncClient

from common import PROXY_MODEL, local_controller

EXAMPLES = Path(__file__).resolve().parents[3] / "examples/training"
sys.path.insert(0, str(EXAMPLES))

from tasks import CANDIDATES, TRAIN, model  # noqa: E402


def test_upstream_controller_and_rollout_manager_train_against_the_store(fresh_server_v102, tmp_path):
    store = fresh_server_v102.base_url
    with local_controller(store, tmp_path, EXAMPLES, poll_interval=0.5) as controller_log:
        trainer = subprocess.run(
            # The model registered under the name the store's gateway serves, as the README says.
            [sys.executable, str(EXAMPLES / "train_v1.py"), "--store", store, "--model", PROXY_MODEL],
            env=dict(os.environ, PYTHONPATH=str(EXAMPLES)), capture_output=True, text=True, timeout=100,
        )
    output = trainer.stdout + trainer.stderr
    log = controller_log.read_text(errors="replace")
    assert trainer.returncode == 0, f"{output[-4000:]}\ncontroller:\n{log[-3000:]}"
    results = [line for line in trainer.stdout.splitlines() if line.startswith("AGL-RESULT ")]
    assert results, output
    result = json.loads(results[-1][len("AGL-RESULT "):])

    best = CANDIDATES[2]
    assert result["best"] == best, result
    assert result["scores"] == {CANDIDATES[0]: 0.0, CANDIDATES[1]: 0.0, best: 1.0}, result
    assert result["val_reward"] == 1.0, result
    # One model call per training rollout, each read back as a triplet with token ids.
    assert result["triplets"] == len(CANDIDATES) * len(TRAIN), result
    # The recorded response token ids are the stand-in's bytes: they decode to its answers.
    for template in CANDIDATES:
        expected = {task["question"]: model(template.format(question=task["question"])) for task in TRAIN}
        assert result["answers"][template] == expected, (template, result["answers"][template])

    # The trainer deleted every rollout it read, as 1.0's does to bound what the server keeps.
    with AgentLightningSyncClient(base_url=store, timeout=30) as api:
        listed = api.get("/api/rollouts", params={"state_in": ["queuing", "running", "succeeded", "failed"]})
        assert listed.status_code == 200, listed.text
        assert listed.json() == [], listed.text
