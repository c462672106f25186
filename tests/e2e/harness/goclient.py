"""Builds apps/goclient (lib/pq + amqp091-go) offline from the Debian golang-*-dev packages
(harness.gobuild: a vendor/ of symlinks, GOFLAGS=-mod=vendor, GOPROXY=off). Built once per
session (the `goclient` fixture).
"""

from __future__ import annotations

from pathlib import Path

from .gobuild import go_build

SRC = Path(__file__).resolve().parent.parent / "apps" / "goclient"
# (module, version, packages used): what vendor/modules.txt must list.
MODULES = [("github.com/lib/pq", "v1.10.7",
            ["github.com/lib/pq", "github.com/lib/pq/oid", "github.com/lib/pq/scram"]),
           ("github.com/rabbitmq/amqp091-go", "v1.5.0", ["github.com/rabbitmq/amqp091-go"])]


def build_goclient(workdir: Path) -> Path:
    return go_build(SRC, workdir, workdir / "goclient", modules=MODULES)
