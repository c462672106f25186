"""Builds apps/goclient (lib/pq + amqp091-go) offline from the Debian golang-*-dev packages.

A throw-away module dir with a vendor/ of symlinks into /usr/share/gocode/src and
GOFLAGS=-mod=vendor, GOPROXY=off: no network. Built once per session (the `goclient`
fixture); the Go build cache makes later builds take a second or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "apps" / "goclient"
GOCODE = Path("/usr/share/gocode/src")
GO = "/usr/bin/go"
# (module, version, packages used): what vendor/modules.txt must list.
MODULES = [("github.com/lib/pq", "v1.10.7",
            ["github.com/lib/pq", "github.com/lib/pq/oid", "github.com/lib/pq/scram"]),
           ("github.com/rabbitmq/amqp091-go", "v1.5.0", ["github.com/rabbitmq/amqp091-go"])]


def build_goclient(workdir: Path) -> Path:
    mod = workdir / "goclient-src"
    if mod.exists():
        shutil.rmtree(mod)
    mod.mkdir(parents=True)
    for name in ("main.go", "go.mod"):
        shutil.copy(SRC / name, mod / name)
    lines = []
    for module, version, packages in MODULES:
        if not (GOCODE / module).is_dir():
            raise RuntimeError(f"{GOCODE / module} missing: install the packages in "
                               "tests/e2e/APT_PACKAGES")
        link = mod / "vendor" / module
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(GOCODE / module)
        lines += [f"# {module} {version}", "## explicit; go 1.19", *packages]
    (mod / "vendor" / "modules.txt").write_text("\n".join(lines) + "\n")
    out = workdir / "goclient"
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GO111MODULE": "on",
           "GOPATH": str(workdir / "gopath"), "CGO_ENABLED": "0", "GOTELEMETRY": "off"}
    r = subprocess.run([GO, "build", "-o", str(out), "."], cwd=mod, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"go build failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return out
