"""An agent instrumented with the real AgentOps SDK (0.4.21), run in a process of its own
against agl-agentops (the environment carries AGENTOPS_API_ENDPOINT and friends).

One trace, "browser-demo": an agent whose operation calls a tool twice and then a nested
operation, so the trace has a session root, an agent span, and tasks and tools below it.
The operation print()s a marker (the SDK captures it and uploads it as the trace's log).
Last line on stdout: `AGL-REPORT {"trace_id": ..., "result": ...}`; the SDK's own
"Session Replay" line goes to stderr through its logger.
"""

import json
import os
import sys
import time

import agentops

MARKER = os.environ.get("AGL_TEST_MARKER", "agl-browser-marker")


@agentops.tool
def search(query):
    return f"results for {query}"


@agentops.operation
def summarise(results):
    return " | ".join(results)


@agentops.agent
class Researcher:
    @agentops.operation
    def investigate(self, topic):
        print(f"{MARKER}: investigating {topic}")
        results = [search(topic), search(topic + " dashboards")]
        return summarise(results)


def main():
    agentops.init(auto_start_session=False)
    client = agentops.get_client()
    # 0.4.21 authenticates in a background thread; wait (bounded) so that the first export
    # already carries the token.
    deadline = time.monotonic() + 15
    while client.get_current_jwt() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    trace = agentops.start_trace("browser-demo")
    result = Researcher().investigate("waterfalls")
    trace_id = format(trace.span.get_span_context().trace_id, "032x")
    agentops.end_trace(trace, end_state="Success")
    sys.stdout.write("AGL-REPORT " + json.dumps({"trace_id": trace_id, "result": result}) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
