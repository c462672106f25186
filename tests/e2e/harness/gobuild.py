"""Offline `go build` of the suite's Go apps (apps/goclient, apps/gotls).

The app's sources are copied into a throw-away module dir. Third-party modules come from the
Debian golang-*-dev packages: a vendor/ of symlinks into /usr/share/gocode/src and
GOFLAGS=-mod=vendor. A stdlib-only app builds with GOFLAGS=-mod=mod. Always GOPROXY=off: no
network. The Go build cache makes rebuilds take a second or two.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GOCODE = Path("/usr/share/gocode/src")
GO = "/usr/bin/go"
STRIP = "-s -w"  # ldflags of a stripped binary: no symbol table, no DWARF (pclntab remains)


def go_build(src: Path, workdir: Path, out: Path,
             modules: list[tuple[str, str, list[str]]] = (), ldflags: str = "") -> Path:
    """Builds the main package in `src` (its *.go and go.mod) to `out`.

    modules: (module, version, packages used) of each vendored dependency, as
             vendor/modules.txt must list them.
    ldflags: e.g. STRIP; empty: a default (unstripped) build.
    """
    mod = workdir / f"{out.name}-src"
    if mod.exists():
        shutil.rmtree(mod)
    mod.mkdir(parents=True)
    for f in src.iterdir():
        if f.suffix == ".go" or f.name == "go.mod":
            shutil.copy(f, mod / f.name)
    lines = []
    for module, version, packages in modules:
        if not (GOCODE / module).is_dir():
            raise RuntimeError(f"{GOCODE / module} missing: install the packages in "
                               "tests/e2e/APT_PACKAGES")
        link = mod / "vendor" / module
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(GOCODE / module)
        lines += [f"# {module} {version}", "## explicit; go 1.19", *packages]
    if modules:
        (mod / "vendor" / "modules.txt").write_text("\n".join(lines) + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/root"),
           "GOFLAGS": "-mod=vendor" if modules else "-mod=mod", "GOPROXY": "off",
           "GO111MODULE": "on", "GOPATH": str(workdir / "gopath"), "CGO_ENABLED": "0",
           "GOTELEMETRY": "off"}
    argv = [GO, "build", "-o", str(out)]
    if ldflags:
        argv.append(f"-ldflags={ldflags}")
    r = subprocess.run(argv + ["."], cwd=mod, env=env, capture_output=True, text=True,
                       timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"go build of {src.name} failed ({r.returncode}):\n{r.stdout}\n"
                           f"{r.stderr}")
    return out
