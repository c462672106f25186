"""`$AGENT_BIN check`: reports what the kernel supports and exits 0 when tracing can work."""

from __future__ import annotations

from pathlib import Path

from harness.procs import run


def test_check_exits_0_and_mentions_tracepoints(agent_bin: Path, workroot: Path) -> None:
    proc, rc = run("agent-check", [str(agent_bin), "check"], workroot, timeout=30)
    out = proc.stdout() + proc.stderr()
    assert rc == 0, f"`agent check` exited {rc}:\n{out}"
    assert "tracepoint" in out.lower(), f"`agent check` output does not mention tracepoints:\n{out}"
