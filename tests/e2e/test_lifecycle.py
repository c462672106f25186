"""Agent lifecycle: on SIGTERM or SIGINT it exports the spans it still holds and exits 0.

Each case starts its own agent (so it is the only one running), sends one request, and stops
the agent right away, before a batch timeout could have flushed the spans.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.expect import http_pair
from harness.scenario import CURL_UA, Scenario
from otlp_receiver import OtlpReceiver


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_flushes_and_exits_0(sig: int, agent_bin: Path, receiver: OtlpReceiver,
                                         workroot: Path, request) -> None:
    d = workroot / request.node.name
    d.mkdir()
    agent = Agent(agent_bin, d, receiver.endpoint, name="agent-lifecycle")
    scn = Scenario(receiver, agent, d, span_timeout=2.0, quiet=0.5)
    request.node.e2e_scenario = scn  # for the failure report
    try:
        svc = scn.service()
        call = scn.curl(f"http://127.0.0.1:{svc.port}/users/77")
        code = agent.stop(sig)
        assert code == 0, f"agent exited with {code} on signal {sig}\n{agent.stderr_tail()}"
        # The agent is gone: whatever it was going to export must be here already.
        spans = scn.collect(2)
        http_pair(spans, client=call, server=svc, method="GET", path="/users/77",
                  template="/users/{id}", ua=CURL_UA, client_port=call.rows[0]["local_port"],
                  response_size=call.rows[0]["size_download"])
    finally:
        agent.stop(signal.SIGKILL)
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
