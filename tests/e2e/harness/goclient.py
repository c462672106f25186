"""Builds the Go apps offline from the Debian golang-*-dev packages: apps/goclient (lib/pq +
amqp091-go) and apps/h2cserver (net/http + golang.org/x/net/http2/h2c).

A throw-away module dir with a vendor/ of symlinks into /usr/share/gocode/src and
GOFLAGS=-mod=vendor, GOPROXY=off: no network. Built once per session (the `goclient` and
`h2cserver` fixtures); the Go build cache makes later builds take a second or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

APPS = Path(__file__).resolve().parent.parent / "apps"
GOCODE = Path("/usr/share/gocode/src")
GO = "/usr/bin/go"
# (module, version, packages used): what vendor/modules.txt must list.
GOCLIENT_MODULES = [("github.com/lib/pq", "v1.10.7",
                     ["github.com/lib/pq", "github.com/lib/pq/oid", "github.com/lib/pq/scram"]),
                    ("github.com/rabbitmq/amqp091-go", "v1.5.0", ["github.com/rabbitmq/amqp091-go"])]
H2CSERVER_MODULES = [("golang.org/x/net", "v0.7.0",
                      ["golang.org/x/net/http/httpguts", "golang.org/x/net/http2",
                       "golang.org/x/net/http2/h2c", "golang.org/x/net/http2/hpack",
                       "golang.org/x/net/idna"]),
                     ("golang.org/x/text", "v0.7.0",
                      ["golang.org/x/text/secure/bidirule", "golang.org/x/text/transform",
                       "golang.org/x/text/unicode/bidi", "golang.org/x/text/unicode/norm"])]


def build_go_app(name: str, modules: list, workdir: Path) -> Path:
    """apps/NAME built into workdir/NAME, its dependencies vendored from `modules`."""
    mod = workdir / f"{name}-src"
    if mod.exists():
        shutil.rmtree(mod)
    mod.mkdir(parents=True)
    for f in ("main.go", "go.mod"):
        shutil.copy(APPS / name / f, mod / f)
    lines = []
    for module, version, packages in modules:
        if not (GOCODE / module).is_dir():
            raise RuntimeError(f"{GOCODE / module} missing: install the packages in "
                               "tests/e2e/APT_PACKAGES")
        link = mod / "vendor" / module
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(GOCODE / module)
        lines += [f"# {module} {version}", "## explicit; go 1.19", *packages]
    (mod / "vendor" / "modules.txt").write_text("\n".join(lines) + "\n")
    out = workdir / name
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "GOFLAGS": "-mod=vendor", "GOPROXY": "off", "GO111MODULE": "on",
           "GOPATH": str(workdir / "gopath"), "CGO_ENABLED": "0", "GOTELEMETRY": "off"}
    r = subprocess.run([GO, "build", "-o", str(out), "."], cwd=mod, env=env,
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"go build of {name} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return out


def build_goclient(workdir: Path) -> Path:
    return build_go_app("goclient", GOCLIENT_MODULES, workdir)


def build_h2cserver(workdir: Path) -> Path:
    return build_go_app("h2cserver", H2CSERVER_MODULES, workdir)
