"""examples/training/train.py, run as the README says: upstream's own `Trainer` with its
default client-server strategy, as two processes against the store under test
(`AGL_MANAGED_STORE=0`; `AGL_CURRENT_ROLE=runner` with two runner processes, then
`AGL_CURRENT_ROLE=algorithm`). The algorithm's prompt search must find the template that
works from the rewards the store gives back; the runners stop on Ctrl+C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from agentlightning.store.client_server import LightningStoreClient

EXAMPLE = Path(__file__).resolve().parents[3] / "examples/training/train.py"


def role_env(role: str) -> dict:
    env = dict(os.environ, AGL_MANAGED_STORE="0", AGL_CURRENT_ROLE=role, PYTHONUNBUFFERED="1")
    # The example must not fall back on a server of its own: no port for one.
    env.pop("AGL_SERVER_PORT", None)
    return env


async def test_upstream_trainer_runs_against_the_store_as_two_processes(server_v030, tmp_path):
    store = server_v030.base_url
    runner_log = open(tmp_path / "runner.log", "w")
    runners = subprocess.Popen(
        [sys.executable, str(EXAMPLE), "--store", store, "--runners", "2"],
        env=role_env("runner"), stdout=runner_log, stderr=subprocess.STDOUT, start_new_session=True,
        # A terminal delivers Ctrl+C; a test run started in the background inherits SIGINT
        # ignored (and Python then never raises KeyboardInterrupt): give it back.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        algorithm = subprocess.run(
            [sys.executable, str(EXAMPLE), "--store", store],
            env=role_env("algorithm"), capture_output=True, text=True, timeout=100,
        )
        output = algorithm.stdout + algorithm.stderr
        assert algorithm.returncode == 0, output
        results = [line for line in algorithm.stdout.splitlines() if line.startswith("AGL-RESULT ")]
        assert results, output
        result = json.loads(results[-1][len("AGL-RESULT "):])
        assert result["best"].startswith("Show your work step by step"), result
        assert result["scores"][result["best"]] == 1.0 and result["val_reward"] == 1.0, result
        assert sorted(result["scores"].values()) == [0.0, 0.0, 1.0], result
    finally:
        # Ctrl+C, as a user stops the runners: they exit on their own.
        os.killpg(runners.pid, signal.SIGINT)
        try:
            code = runners.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(runners.pid, signal.SIGKILL)
            raise
        runner_log.close()
    log = (tmp_path / "runner.log").read_text()
    assert code in (0, 130, -signal.SIGINT), f"runners exited {code}:\n{log[-3000:]}"

    # What the store recorded: every rollout claimed by the example's runners, finished,
    # with the spans upstream's tracer sent and a reward among them.
    client = LightningStoreClient(store)
    try:
        rollouts = list(await client.query_rollouts())
        assert len(rollouts) == 3 * 4 + 2
        assert {r.status for r in rollouts} == {"succeeded"}
        assert {r.mode for r in rollouts} == {"train", "val"}
        attempts = [await client.get_latest_attempt(r.rollout_id) for r in rollouts]
        assert {a.worker_id for a in attempts} <= {"Worker-0", "Worker-1"}
        spans = list(await client.query_spans(rollouts[-1].rollout_id))
        names = {s.name for s in spans}
        assert "agentlightning.message" in names and "agentlightning.annotation" in names, names
        resources = list(await client.query_resources())
        assert len(resources) == 4  # one version per candidate, and the winner for validation
    finally:
        await client.close()
