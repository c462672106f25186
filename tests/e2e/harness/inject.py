"""Helpers of the traceparent injection tests (test_inject.py, test_two_nodes.py)."""

from __future__ import annotations

import urllib.request
from pathlib import Path

import pytest


def cgroup2_root() -> Path:
    """The cgroup v2 mount point (the injection programs attach below it)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            return Path(left.split()[4])
    pytest.fail("no cgroup v2 hierarchy mounted: injection needs one", pytrace=False)


def traceparents(headers: list) -> list[str]:
    """The traceparent values among (name, value) pairs, in order."""
    return [v for k, v in headers if k.lower() == "traceparent"]


def parse_tp(tp: str) -> tuple[str, str, str]:
    """(trace id, parent id, flags) of a well-formed version-00 traceparent."""
    version, trace, parent, flags = tp.split("-")
    assert version == "00" and len(trace) == 32 and len(parent) == 16 and len(flags) == 2, tp
    int(trace, 16), int(parent, 16), int(flags, 16)
    assert trace != "0" * 32 and parent != "0" * 16, tp
    return trace, parent, flags


def agent_metrics(port: int) -> dict[str, int]:
    """An agent's /metrics (on 127.0.0.1:port): every sample without labels, by name."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            out[name] = int(float(value.split()[0]))
    return out
