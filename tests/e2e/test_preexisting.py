"""Connections that existed before the agent started are traced too.

A keep-alive client connects and finishes one request while no agent runs; then the agent
starts (it finds both ends of the connection in procfs) and the client sends three more
requests on the same connection.

The server thread is parked in read() when the probes attach: that syscall's entry was never
seen, so the agent takes its arguments from /proc/<pid>/task/<tid>/syscall. Every request
after the start (/users/2 included) must produce a CLIENT and a SERVER span stitched across
the two processes exactly as on connections the agent saw open. The request made before the
agent existed (/users/1) must not appear at all.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

from harness.agent import Agent
from harness.expect import http_pair
from harness.procs import Proc, wait_until
from harness.scenario import PYTHON, Call, Scenario, app_env
from otlp_receiver import OtlpReceiver

PAUSED_CLIENT = '''
import http.client, json, os, sys, time
port, go = int(sys.argv[1]), sys.argv[2]
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
def get(path):
    conn.request("GET", path, headers={"User-Agent": "e2e-pyclient/1.0"})
    r = conn.getresponse(); body = r.read()
    print(json.dumps({"path": path, "status": r.status, "local_port": conn.sock.getsockname()[1]}), flush=True)
get("/users/1")
print("CONNECTED", flush=True)
while not os.path.exists(go):
    time.sleep(0.02)
get("/users/2")
get("/users/3")
get("/users/4")
print("DONE", flush=True)
'''


def test_connection_opened_before_the_agent(agent_bin: Path, receiver: OtlpReceiver,
                                            workroot: Path, request) -> None:
    d = workroot / request.node.name
    d.mkdir()
    scn = Scenario(receiver, None, d)
    request.node.e2e_scenario = scn
    agent = None
    try:
        svc = scn.service()
        script = d / "paused_client.py"
        script.write_text(PAUSED_CLIENT)
        go = d / "go"
        client = Proc("paused_client", [PYTHON, str(script), str(svc.port), str(go)], d,
                      env=app_env())
        scn.procs.append(client)
        scn.pids.add(client.pid)
        wait_until(lambda: "CONNECTED" in client.stdout(), 10, "the client's first request",
                   alive=client)

        agent = Agent(agent_bin, d, receiver.endpoint, name="agent-preexisting")
        scn.agent = agent
        # Both ends of the client's connection, at least (other tests' leftovers may add more).
        m = re.search(r"(\d+) pre-existing connections tracked", agent.stderr_tail())
        assert m and int(m.group(1)) >= 2, agent.stderr_tail()
        go.touch()
        wait_until(lambda: "DONE" in client.stdout(), 10, "the client's later requests",
                   alive=client)
        rows = [json.loads(line) for line in client.stdout().splitlines() if line.startswith("{")]
        assert [r["status"] for r in rows] == [200, 200, 200, 200]
        assert len({r["local_port"] for r in rows}) == 1, "the client did not keep its connection"
        call = Call(client.pid, rows[1:], 0, time.time_ns(), "paused_client", "python3")
        assert "reads already blocked on pre-existing connections" in agent.stderr_tail(), \
            agent.stderr_tail()
        spans = scn.collect(6)
        for user, row in zip((2, 3, 4), call.rows):
            http_pair([s for s in spans if s.attributes.get("url.path") == f"/users/{user}"],
                      client=call, server=svc, method="GET", path=f"/users/{user}",
                      template="/users/{id}", ua="e2e-pyclient/1.0",
                      client_port=row["local_port"])
        assert not [s for s in spans if s.attributes.get("url.path") == "/users/1"]
    finally:
        if agent is not None:
            code = agent.stop(signal.SIGTERM)
            assert code == 0, agent.stderr_tail()
        scn.close()
        shutil.rmtree(d, ignore_errors=True)
