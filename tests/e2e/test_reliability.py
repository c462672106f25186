"""The agent on a bad day: killed, stopped with work queued (and, further down, the collector
gone or pushing back).

- SIGKILL: every BPF program, map and link the agent created is gone once its process is
  (checked with `bpftool`, by the ids that appeared while it ran — the tests hold the machine's
  trace lock, so no other tracer adds any), no uprobe/kprobe event is left in tracefs, no
  process of the agent binary survives, and an agent started right after traces at once.
- SIGTERM with spans still queued (a batch timeout of a minute): they reach the receiver.

Agents here exclude the pytest process (which hosts the receiver).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from harness.agent import Agent
from harness.procs import free_port, wait_until
from harness.scenario import Scenario
from otlp_receiver import OtlpReceiver

TRACEFS = [Path("/sys/kernel/tracing"), Path("/sys/kernel/debug/tracing")]


def start_agent(agent_bin: Path, d: Path, endpoint: str | None, extra: str = "",
                name: str = "agent-reliability") -> Agent:
    d.mkdir(parents=True, exist_ok=True)
    cfg = d / f"{name}.yaml"
    cfg.write_text(f"processes:\n  exclude_pids: [{os.getpid()}]\n{extra}")
    return Agent(agent_bin, d, endpoint, name=name, args=["--config", str(cfg)])


def bpf_ids(kind: str) -> set[int]:
    """Ids of every loaded BPF object of `kind` (prog, map, link)."""
    bpftool = shutil.which("bpftool")
    if bpftool is None:
        pytest.fail("bpftool is not installed (tests/e2e/APT_PACKAGES lists it)", pytrace=False)
    out = subprocess.run([bpftool, kind, "show", "-j"], capture_output=True, text=True,
                         check=True).stdout
    return {o["id"] for o in json.loads(out or "[]")}


def bpf_objects() -> dict[str, set[int]]:
    return {k: bpf_ids(k) for k in ("prog", "map", "link")}


def probe_events() -> set[str]:
    """Dynamic probe events registered through tracefs (an agent that created any must remove
    them; ours attaches through perf_event_open and should create none)."""
    lines: set[str] = set()
    for root in TRACEFS:
        for f in ("uprobe_events", "kprobe_events"):
            p = root / f
            if p.exists():
                lines |= {f"{p}: {line}" for line in p.read_text().splitlines() if line.strip()}
    return lines


def processes_of(binary: Path) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if Path(os.readlink(d / "exe")) == binary:
                    pids.append(int(d.name))
            except OSError:
                continue
    return pids


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#") and " " in line:
            name, value = line.rsplit(" ", 1)
            try:
                out[name] = float(value)
            except ValueError:
                pass
    return out


def test_sigkill_leaves_nothing_behind_and_a_restart_traces_at_once(
        agent_bin: Path, receiver: OtlpReceiver, workroot: Path) -> None:
    d = workroot / "reliability-kill"
    before, events_before = bpf_objects(), probe_events()
    a = start_agent(agent_bin, d, receiver.endpoint)
    try:
        during = bpf_objects()
        ours = {k: during[k] - before[k] for k in during}
        assert ours["prog"] and ours["map"] and ours["link"], \
            f"the running agent shows no BPF objects of its own: {ours}"
        assert probe_events() == events_before, "the agent registered tracefs probe events"
    finally:
        code = a.stop(signal.SIGKILL)  # returns once the process is reaped
    assert code == -signal.SIGKILL, code
    left: dict[str, set[int]] = {}

    def released() -> bool:
        now = bpf_objects()
        left.update({k: ours[k] & now[k] for k in ours})
        return not any(left.values())
    # The kernel frees them as the dead process's descriptors close, within moments.
    wait_until(released, 10, "the killed agent's BPF programs, maps and links to be freed")
    assert probe_events() == events_before
    assert processes_of(agent_bin) == [], "a process of the agent binary survived SIGKILL"

    # A new agent attaches again and traces the very first request.
    b = start_agent(agent_bin, d, receiver.endpoint, name="agent-reliability-restarted")
    scn = Scenario(receiver, b, d / "scn")
    (d / "scn").mkdir(parents=True, exist_ok=True)
    try:
        svc = scn.service()
        scn.curl(f"http://127.0.0.1:{svc.port}/users/1")
        spans = scn.collect(2)
        assert sorted(s.kind for s in spans) == [2, 3], spans  # SERVER and CLIENT
    finally:
        scn.close()
        code = b.stop()
    assert code == 0, f"restarted agent exited with {code}\n{b.stderr_tail()}"


def test_sigterm_flushes_the_queued_spans(agent_bin: Path, receiver: OtlpReceiver,
                                          workroot: Path) -> None:
    """Spans made just before SIGTERM are still held (a batch goes out after a minute or 512
    spans): the shutdown flush delivers every one of them."""
    n = 5
    d = workroot / "reliability-term"
    port = free_port()
    a = start_agent(agent_bin, d, receiver.endpoint,
                    f"telemetry:\n  listen: '127.0.0.1:{port}'\n  log_interval_secs: 0\n"
                    "export:\n  batch_timeout_ms: 60000\n  batch_size: 512\n")
    scn = Scenario(receiver, a, d / "scn")
    (d / "scn").mkdir(parents=True, exist_ok=True)
    try:
        svc = scn.service()
        scn.curl(*[f"http://127.0.0.1:{svc.port}/users/{i}" for i in range(n)])
        wait_until(lambda: scrape(port).get("agent_spans_created_total", 0) >= 2 * n, 15,
                   f"the agent to build the {2 * n} spans")
        assert not receiver.spans(scn.mine), "spans left before the batch timeout"
        code = a.stop()
        assert code == 0, f"agent exited with {code} on SIGTERM\n{a.stderr_tail()}"
        spans = scn.collect(2 * n)
        assert len(spans) == 2 * n
    finally:
        scn.close()
        a.stop()
