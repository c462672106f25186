"""Process and port plumbing: free ports, listening checks, and child processes that are
always killed (whole process group) and whose output goes to files (never a full pipe)."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable

# Below the kernel's ephemeral range (32768+), so a client connection cannot grab a port between
# our check and the server's bind; never handed out twice per session, so spans can be
# attributed to a test by port.
_PORT_RANGE = (20000, 32000)
_used_ports: set[int] = set()


def free_port() -> int:
    for _ in range(1000):
        port = random.randint(*_PORT_RANGE)
        if port in _used_ports:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _used_ports.add(port)
        return port
    raise RuntimeError("no free port found")


def listening_ports() -> set[int]:
    """Local TCP ports in LISTEN state, read from /proc so the check sends no traffic."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":
                ports.add(int(f[1].rsplit(":", 1)[1], 16))
    return ports


def wait_until(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.02,
               alive: "Proc | None" = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if alive is not None and alive.poll() is not None:
            raise RuntimeError(f"{alive.name} exited ({alive.poll()}) while waiting for {what}\n"
                               f"{alive.tail()}")
        if time.monotonic() > deadline:
            extra = f"\n{alive.tail()}" if alive is not None else ""
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}{extra}")
        time.sleep(interval)


def tail_file(path: Path, lines: int = 30) -> str:
    try:
        data = path.read_bytes()[-64 * 1024:].decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class Proc:
    """A child in its own session/process group, stdout and stderr in files under `logdir`."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None,
                 cwd: Path | None = None) -> None:
        self.name = name
        self.argv = argv
        self.stdout_path = logdir / f"{name}.stdout"
        self.stderr_path = logdir / f"{name}.stderr"
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                          env=env, cwd=cwd, start_new_session=True)
        self.pid = self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def tail(self, lines: int = 30) -> str:
        return (f"--- {self.name} (pid {self.pid}) {' '.join(self.argv)}\n"
                f"[stdout]\n{tail_file(self.stdout_path, lines)}\n"
                f"[stderr]\n{tail_file(self.stderr_path, lines)}")

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill_group(self, grace: float = 3.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left after `grace` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            # The leader is gone; take down any stragglers in its group.
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            return


def run(name: str, argv: list[str], logdir: Path, timeout: float,
        env: dict[str, str] | None = None) -> tuple[Proc, int]:
    """Runs a short-lived command to completion; returns it (for pid and output) and its rc."""
    p = Proc(name, argv, logdir, env=env)
    try:
        rc = p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill_group()
        raise TimeoutError(f"{name} did not finish within {timeout}s\n{p.tail()}")
    return p, rc
