"""A small agent instrumented with the real AgentOps SDK, run in a process of its own.

The environment points the SDK at agl-agentops (AGENTOPS_API_ENDPOINT and friends). The
script initialises the SDK, runs a decorated agent whose operation calls a decorated tool,
prints a marker line (the SDK captures print() and uploads it when the trace ends), ends
the trace, and prints one JSON line describing what it saw:

    {"version": ..., "initialized": ..., "jwt": ..., "trace_id": ..., "result": ...}
"""

import json
import os
import sys
import time

import agentops

MARKER = os.environ.get("AGL_TEST_MARKER", "agl-agentops-marker")
TRACE_NAME = os.environ.get("AGL_TEST_TRACE_NAME", "agl-compat")

# 0.4.19+ has @agentops.tool; 0.4.13 - 0.4.18 only @agentops.operation.
tool = getattr(agentops, "tool", None) or agentops.operation


@tool
def add(a, b):
    return a + b


@agentops.agent
class Calc:
    @agentops.operation
    def run(self, x):
        print(f"{MARKER}: adding 1 to {x}")
        return add(x, 1)


def current_jwt(client):
    getter = getattr(client, "get_current_jwt", None)
    return getter() if getter else None


def main():
    version = None
    try:
        from importlib.metadata import version as dist_version

        version = dist_version("agentops")
    except Exception:  # pragma: no cover - metadata is always there in a venv
        pass
    agentops.init(auto_start_session=False)
    client = agentops.get_client()
    # 0.4.19+ authenticate in a background thread; wait (bounded) so that the first export
    # already carries the token. 0.4.13 - 0.4.18 authenticated inside init() already.
    if hasattr(client, "get_current_jwt"):
        deadline = time.monotonic() + 15
        while current_jwt(client) is None and time.monotonic() < deadline:
            time.sleep(0.05)
    trace = agentops.start_trace(TRACE_NAME)
    result = Calc().run(41)
    trace_id = None
    span = getattr(trace, "span", None)
    if span is not None:
        trace_id = format(span.get_span_context().trace_id, "032x")
    agentops.end_trace(trace, end_state="Success")
    report = {
        "version": version,
        "initialized": bool(getattr(client, "initialized", False)),
        "jwt": current_jwt(client),
        "trace_id": trace_id,
        "result": result,
    }
    sys.stdout.write("AGL-REPORT " + json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
