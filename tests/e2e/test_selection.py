"""Per-namespace probe toggles applied live (issue 9, "Toggles").

No Kubernetes runs here, so the test builds what the agent sees of one:
- two "pods", in namespaces `shop` and `pay`: each a real HTTP server plus a client looping
  requests at it (a new connection each time), both moved into a cgroup v2 directory shaped like
  the kubelet's systemd driver makes, `kubepods.slice/kubepods-besteffort.slice/
  kubepods-besteffort-pod<uid>.slice/cri-containerd-<64 hex>.scope`;
- a fake API server (Python, in this process) speaking the real list/watch wire format for
  Pods: `GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a` answers a PodList (shaped as in
  the Kubernetes API reference: metadata.resourceVersion, ownerReferences, status.
  containerStatuses[].containerID `containerd://<id>` matching the cgroup), and the watch
  request (`watch=true`) gets a chunked stream that stays open;
- the agent, pointed at it through `kubernetes.kubeconfig`, exporting to the OTLP receiver.

Then the config file is rewritten while traffic runs: `shop` disabled (`protocols: [none]`) →
its spans stop within 5 s while `pay`'s keep flowing, and the kernel counts the connections it
did not track; `shop` back → its spans return; an invalid edit is refused (logged with the
field) and both keep flowing; `pay` limited to postgres → its HTTP connections are dropped in
user space (`agent_connections_deselected_total`). The agent's pid never changes.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from harness.agent import Agent, require_agent_bin
from harness.procs import free_port, wait_until
from otlp_receiver import OtlpReceiver

NODE = "node-a"
# A change must be in force this long after the file is written (the bound).
APPLY_WITHIN_S = 5.0

LOOP = r"""
import http.client, sys, time
port = int(sys.argv[1])
while True:
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        c.request("GET", "/ping", headers={"Connection": "close"})
        c.getresponse().read()
        c.close()
    except OSError:
        pass
    time.sleep(0.1)
"""


def cgroup2_root() -> Path:
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        pre, _, post = line.partition(" - ")
        if post.split(" ")[0] == "cgroup2":
            return Path(pre.split(" ")[4])
    pytest.fail("no cgroup v2 mount on this machine (the agent's kernel filter needs one)",
                pytrace=False)


class FakePod:
    """A pod's kubelet-shaped cgroup with a server and a looping client in it."""

    def __init__(self, namespace: str, name: str, root: Path, logdir: Path) -> None:
        self.namespace, self.name = namespace, name
        self.uid = str(uuid.uuid4())
        self.container_id = secrets.token_hex(32)
        self.slice = (root / "kubepods.slice" / "kubepods-besteffort.slice"
                      / f"kubepods-besteffort-pod{self.uid.replace('-', '_')}.slice")
        self.scope = self.slice / f"cri-containerd-{self.container_id}.scope"
        self.scope.mkdir(parents=True)
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []
        procs_file = str(self.scope / "cgroup.procs")

        def enter_cgroup() -> None:  # runs in the child before exec: it starts in the pod
            with open(procs_file, "w") as f:
                f.write(str(os.getpid()))

        for argv, tag in (([sys.executable, "-m", "http.server", str(self.port), "--bind",
                            "127.0.0.1"], "server"),
                          ([sys.executable, "-c", LOOP, str(self.port)], "client")):
            out = open(logdir / f"{name}-{tag}.log", "wb")
            self.procs.append(subprocess.Popen(argv, stdout=out, stderr=out,
                                               stdin=subprocess.DEVNULL, preexec_fn=enter_cgroup))
        wait_until(lambda: _listening(self.port), 10, f"{name} to listen on {self.port}")

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.procs}

    def pod_object(self) -> dict:
        rs = f"{self.name}-5d8f7b9c4"
        return {
            "metadata": {
                "name": f"{rs}-x2k4p", "generateName": f"{rs}-", "namespace": self.namespace,
                "uid": self.uid, "resourceVersion": "90",
                "creationTimestamp": "2026-12-03T14:00:00Z",
                "labels": {"app.kubernetes.io/name": self.name, "pod-template-hash": "5d8f7b9c4"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs,
                                     "uid": str(uuid.uuid4()), "controller": True,
                                     "blockOwnerDeletion": True}],
            },
            "spec": {"nodeName": NODE, "containers": [
                {"name": "web", "image": f"registry.example.com/{self.name}:1.0"}]},
            "status": {
                "phase": "Running", "qosClass": "BestEffort", "podIP": "10.244.0.7",
                "containerStatuses": [{
                    "name": "web", "ready": True, "restartCount": 0, "started": True,
                    "image": f"registry.example.com/{self.name}:1.0",
                    "imageID": f"registry.example.com/{self.name}@sha256:{'0' * 64}",
                    "containerID": f"containerd://{self.container_id}",
                    "state": {"running": {"startedAt": "2026-12-03T14:00:01Z"}},
                }],
            },
        }

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
        for p in self.procs:
            p.wait(5)
        for d in (self.scope, self.slice):
            for _ in range(50):  # the cgroup empties once the killed processes are reaped
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)


def _listening(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
        return True
    except OSError:
        return False


def assert_pod_resource(resource: dict, pod: "FakePod") -> None:
    """The k8s.* and service.* attributes the pod object of `pod` must give its spans (see
    FakePod.pod_object; service.name from its app.kubernetes.io/name label, per the semantic
    conventions' order, nothing earlier in that order being set)."""
    __tracebackhide__ = True
    want = {
        "k8s.namespace.name": pod.namespace,
        "k8s.pod.name": f"{pod.name}-5d8f7b9c4-x2k4p",
        "k8s.pod.uid": pod.uid,
        "k8s.node.name": NODE,
        "k8s.container.name": "web",
        "container.id": pod.container_id,
        "container.image.name": f"registry.example.com/{pod.name}",
        "container.image.tag": "1.0",
        "k8s.replicaset.name": f"{pod.name}-5d8f7b9c4",
        "k8s.deployment.name": pod.name,
        "service.name": pod.name,
        "service.namespace": pod.namespace,
    }
    got = {k: resource.get(k) for k in want}
    assert got == want, f"resource {resource}"


class FakeApiServer:
    """List and watch of Pods as kube-apiserver serves them (HTTP, no auth)."""

    def __init__(self, pods: list[FakePod], port: int = 0) -> None:
        self.pods = pods
        self.requests: list[str] = []
        self.closing = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                outer.requests.append(self.path)
                path, _, query = self.path.partition("?")
                if path != "/api/v1/pods" or f"spec.nodeName%3D{NODE}" not in query:
                    body = json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404}).encode()
                    self.send_response(404)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                if "watch=true" in query or "watch=1" in query:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    bookmark = json.dumps({"type": "BOOKMARK", "object": {
                        "kind": "Pod", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "101"}}}) + "\n"
                    self._chunk(bookmark.encode())
                    while not outer.closing.wait(1.0):
                        pass  # the watch stays open, as a real one does until its timeout
                    return
                body = json.dumps({
                    "kind": "PodList", "apiVersion": "v1",
                    "metadata": {"resourceVersion": "100"},
                    "items": [p.pod_object() for p in outer.pods],
                }).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                self.wfile.flush()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(path, self.port)

    def stop(self) -> None:
        self.closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def write_kubeconfig(path: Path, port: int) -> Path:
    """A kubeconfig for an API server on 127.0.0.1:`port` (HTTP, no auth)."""
    path.write_text(f"""apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: http://127.0.0.1:{port}
users:
- name: nobody
  user: {{}}
contexts:
- name: fake
  context:
    cluster: fake
    user: nobody
current-context: fake
""")
    return path


def metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and "{" not in line:
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


@pytest.fixture
def cluster(receiver: OtlpReceiver, workroot: Path, request):
    agent_bin = require_agent_bin()
    logdir = workroot / "selection"
    logdir.mkdir(parents=True, exist_ok=True)
    root = cgroup2_root()
    pods: list[FakePod] = []
    api = agent = None
    try:
        pods = [FakePod("shop", "shop-web", root, logdir), FakePod("pay", "pay-api", root, logdir)]
        api = FakeApiServer(pods)
        metrics_port = free_port()
        kubeconfig = api.kubeconfig(logdir / "kubeconfig")
        config = logdir / "agent.yaml"
        base = (f"kubernetes:\n  enabled: true\n  node_name: {NODE}\n  kubeconfig: {kubeconfig}\n"
                f"telemetry:\n  listen: 127.0.0.1:{metrics_port}\n")
        config.write_text(base)
        # Not this process: it hosts the receiver and the fake API server, and its spans
        # would land in the session's receiver for later tests to trip over.
        agent = Agent(agent_bin, logdir, receiver.endpoint, name="agent-selection",
                      config=config, args=("--exclude-pid", str(os.getpid())))
        yield {"pods": pods, "api": api, "agent": agent, "config": config, "base": base,
               "metrics_port": metrics_port, "receiver": receiver}
    finally:
        code = agent.stop() if agent else 0
        if api:
            api.stop()
        for p in pods:
            p.stop()
        shutil.rmtree(logdir, ignore_errors=True)
    assert code == 0, f"agent exited with {code} on SIGTERM"


def test_namespace_toggles_apply_live(cluster):
    shop, pay = cluster["pods"]
    receiver: OtlpReceiver = cluster["receiver"]
    agent: Agent = cluster["agent"]
    config: Path = cluster["config"]
    base: str = cluster["base"]
    agent_pid = agent.pid

    def server_spans(pod: FakePod, after_ns: int):
        return receiver.spans(lambda s: s.pid in pod.pids and s.kind == 2  # SERVER
                              and s.start_ns > after_ns)

    def ns_spans(namespace: str, after_ns: int):
        return receiver.spans(lambda s: s.resource.get("k8s.namespace.name") == namespace
                              and s.start_ns > after_ns)

    def write(rules: str) -> int:
        tmp = config.with_suffix(".tmp")  # a rename, as editors and ConfigMap swaps do
        tmp.write_text(base + rules)
        os.replace(tmp, config)
        return time.time_ns()

    def log() -> str:
        return agent.proc.stderr()

    # 1. Both namespaces traced, with their pods' metadata from the fake API server.
    t = time.time_ns()
    for pod in (shop, pay):
        wait_until(lambda pod=pod: any(s.resource.get("k8s.namespace.name") == pod.namespace
                                       for s in server_spans(pod, t)),
                   20, f"{pod.namespace} server spans with k8s metadata")
        s = [s for s in server_spans(pod, t) if "k8s.namespace.name" in s.resource][-1]
        assert s.resource["k8s.pod.uid"] == pod.uid
        assert s.resource["container.id"] == pod.container_id
        assert s.resource["k8s.deployment.name"] == pod.name
        assert_pod_resource(s.resource, pod)
        assert s.attr("http.request.method") == "GET"
    assert any("watch=true" in r for r in cluster["api"].requests), cluster["api"].requests

    # 2. Disable shop: its spans stop within 5 s, pay's keep flowing; the kernel skips shop's
    # connections (they are never tracked, so their bytes are never copied).
    before = metrics(cluster["metrics_port"])
    t_off = write("selection:\n  rules:\n    - namespaces: [\"shop\"]\n      protocols: [none]\n")
    time.sleep(APPLY_WITHIN_S)
    t_quiet = time.time_ns()
    time.sleep(3.0)
    late = ns_spans("shop", t_quiet)
    assert not late, f"{len(late)} shop spans started more than {APPLY_WITHIN_S}s after it was disabled"
    last_shop = max((s.start_ns for s in ns_spans("shop", 0)), default=0)
    print(f"shop spans stopped {max(0, last_shop - t_off) / 1e9:.2f}s after the edit")
    assert ns_spans("pay", t_quiet), "pay stopped too"
    after = metrics(cluster["metrics_port"])
    skipped = (after["agent_kernel_cgroup_connections_skipped_total"]
               - before.get("agent_kernel_cgroup_connections_skipped_total", 0))
    # ~10 requests/s by shop's client, each a connect and an accept, for 8 s.
    assert skipped >= 40, f"kernel skipped only {skipped} connections of the disabled namespace"
    assert after["agent_config_reloads_total"] == before["agent_config_reloads_total"] + 1
    assert "selection applied" in log()

    # 3. Re-enable: shop's spans come back within 5 s.
    t_on = write("")
    wait_until(lambda: bool(ns_spans("shop", t_on)), APPLY_WITHIN_S + 3,
               "shop spans after re-enabling it")
    back = min(s.start_ns for s in ns_spans("shop", t_on))
    print(f"shop spans back {(back - t_on) / 1e9:.2f}s after the edit")
    assert back - t_on < APPLY_WITHIN_S * 1e9

    # 4. An invalid edit is refused with the field named; tracing goes on unchanged.
    write("selection:\n  rules:\n    - namespaces: [\"pay\"]\n      protocols: [htttp]\n")
    wait_until(lambda: "config reload refused" in log(), APPLY_WITHIN_S, "the refusal in the log")
    refusal = [line for line in log().splitlines() if "config reload refused" in line][-1]
    assert 'selection.rules[0].protocols[0]: unknown protocol "htttp"' in refusal, refusal
    t_bad = time.time_ns()
    time.sleep(3.0)
    assert ns_spans("pay", t_bad + 10**9) and ns_spans("shop", t_bad + 10**9), \
        "tracing changed after a refused edit"
    assert metrics(cluster["metrics_port"])["agent_config_reload_failures_total"] == 1

    # 5. Protocol-level toggle: pay traces only postgres, so its HTTP connections are dropped
    # in user space (the kernel cannot tell protocols apart) and counted.
    before = metrics(cluster["metrics_port"])
    write("selection:\n  rules:\n    - namespaces: [\"pay\"]\n      protocols: [postgres, tls]\n")
    time.sleep(APPLY_WITHIN_S)
    t_quiet = time.time_ns()
    time.sleep(3.0)
    assert not ns_spans("pay", t_quiet), "pay's HTTP spans continue with only postgres traced"
    assert ns_spans("shop", t_quiet), "shop stopped"
    after = metrics(cluster["metrics_port"])
    assert (after["agent_connections_deselected_total"]
            - before.get("agent_connections_deselected_total", 0)) >= 20

    assert agent.proc.poll() is None and agent.pid == agent_pid, "the agent restarted"


def test_api_server_down_at_start_then_up(receiver: OtlpReceiver, workroot: Path):
    """The API server is unreachable when the agent starts: spans flow from the start with what
    procfs and the cgroup give (container.id, k8s.pod.uid), and the pod's metadata appears on
    them once the server is up and the watch has listed (no restart)."""
    agent_bin = require_agent_bin()
    logdir = workroot / "selection-api-late"
    logdir.mkdir(parents=True, exist_ok=True)
    pod = api = agent = None
    try:
        pod = FakePod("late", "late-web", cgroup2_root(), logdir)
        port = free_port()  # nothing listens here yet
        config = logdir / "agent.yaml"
        config.write_text(f"kubernetes:\n  enabled: true\n  node_name: {NODE}\n"
                          f"  kubeconfig: {write_kubeconfig(logdir / 'kubeconfig', port)}\n")
        agent = Agent(agent_bin, logdir, receiver.endpoint, name="agent-api-late",
                      config=config, args=("--exclude-pid", str(os.getpid())))
        t0 = time.time_ns()

        def spans(after_ns: int):
            return receiver.spans(lambda s: s.pid in pod.pids and s.kind == 2
                                  and s.start_ns > after_ns)

        wait_until(lambda: bool(spans(t0)), 15, "spans while the API server is down")
        early = spans(t0)[0]
        assert early.resource.get("container.id") == pod.container_id, early.resource
        assert early.resource.get("k8s.pod.uid") == pod.uid, early.resource
        assert "k8s.namespace.name" not in early.resource, early.resource
        time.sleep(2.0)  # the watch has failed and is backing off
        api = FakeApiServer([pod], port=port)
        t_up = time.time_ns()
        wait_until(lambda: any("k8s.namespace.name" in s.resource for s in spans(t_up)), 45,
                   "the pod's metadata on spans after the API server came up")
        late = [s for s in spans(t_up) if "k8s.namespace.name" in s.resource][-1]
        assert_pod_resource(late.resource, pod)
        print(f"metadata on spans {(late.start_ns - t_up) / 1e9:.1f}s after the API server "
              f"came up")
        assert agent.proc.poll() is None, "the agent exited"
    finally:
        code = agent.stop() if agent else 0
        if api:
            api.stop()
        if pod:
            pod.stop()
        shutil.rmtree(logdir, ignore_errors=True)
    assert code == 0, f"agent exited with {code} on SIGTERM"
