"""Builds the Go apps that need third-party modules offline from the Debian golang-*-dev
packages (harness.gobuild: a vendor/ of symlinks, GOFLAGS=-mod=vendor, GOPROXY=off):
apps/goclient (lib/pq + amqp091-go) and apps/h2cserver (net/http + golang.org/x/net/http2/h2c).
Built once per session (the `goclient` and `h2cserver` fixtures).
"""

from __future__ import annotations

from pathlib import Path

from .gobuild import go_build

APPS = Path(__file__).resolve().parent.parent / "apps"
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


def build_goclient(workdir: Path) -> Path:
    return go_build(APPS / "goclient", workdir, workdir / "goclient", modules=GOCLIENT_MODULES)


def build_h2cserver(workdir: Path) -> Path:
    return go_build(APPS / "h2cserver", workdir, workdir / "h2cserver",
                    modules=H2CSERVER_MODULES)
