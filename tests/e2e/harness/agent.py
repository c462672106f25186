"""Locating, starting and stopping the agent under test (the binary named by $AGENT_BIN)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import pytest

from .procs import Proc, tail_file, wait_until

READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
_READY = re.compile(r"agent ready", re.IGNORECASE)


def require_agent_bin() -> Path:
    """The agent binary, or a test failure (never a skip) saying what is missing."""
    problems = []
    value = os.environ.get("AGENT_BIN")
    if os.geteuid() != 0:
        problems.append("the e2e agent tests must run as root (the agent loads eBPF programs)")
    if not value:
        problems.append("AGENT_BIN is not set; run e.g. "
                        "AGENT_BIN=$PWD/target/release/agent python3 -m pytest tests/e2e -q")
    elif not os.path.isfile(value) or not os.access(value, os.X_OK):
        problems.append(f"AGENT_BIN={value!r} is not an executable file")
    if problems:
        pytest.fail("; ".join(problems), pytrace=False)
    return Path(value).resolve()


class Agent:
    """One running agent. `endpoint=None` runs it in console mode (spans on stdout); `args` are
    more `agent run` arguments (e.g. `--config FILE`)."""

    def __init__(self, binary: Path, logdir: Path, endpoint: str | None,
                 name: str = "agent", args: list[str] | None = None) -> None:
        argv = [str(binary), "run", "--log-level", "info", *(args or [])]
        if endpoint:
            argv[2:2] = ["--otlp-endpoint", endpoint]
        # OTEL_* variables would change the agent's defaults (e.g. an OTLP endpoint in console
        # mode); the tests pass everything they mean on the command line.
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        self.proc = Proc(name, argv, logdir, env=env)
        self.pid = self.proc.pid
        self.exit_code: int | None = None
        try:
            wait_until(lambda: _READY.search(self.proc.stderr()) is not None, READY_TIMEOUT,
                       "the agent to print 'agent ready' on stderr", interval=0.1,
                       alive=self.proc)
        except BaseException:
            self.proc.kill_group()
            raise

    def stderr_tail(self, lines: int = 40) -> str:
        return tail_file(self.proc.stderr_path, lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Sends `sig`, waits up to STOP_TIMEOUT s; returns the exit code (kills it if it hangs)."""
        if self.exit_code is not None:
            return self.exit_code
        self.proc.signal(sig)
        try:
            self.exit_code = self.proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill_group(grace=0)
            self.exit_code = self.proc.wait(5)
            raise AssertionError(f"agent did not exit within {STOP_TIMEOUT}s of signal {sig} "
                                 f"(killed)\n{self.stderr_tail()}")
        return self.exit_code
