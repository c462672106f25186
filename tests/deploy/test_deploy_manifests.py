"""The Kubernetes manifests (deploy/kubernetes) and the image recipe (deploy/Dockerfile), checked
offline: no cluster, no container engine, no root, no agent.

Each overlay is rendered with `kubectl kustomize` (what `kubectl apply -k` sends), every object
is validated against the Kubernetes OpenAPI schemas shipped inside the pinned
kubernetes-validate package, in strict mode (unknown fields are errors), and the properties
the agent depends on or the README promises are asserted: host namespaces, mounts, downward-API
environment, probes, resources, RBAC verbs, the capability set of each variant, and that the
ConfigMap carries deploy/agent.example.yaml unchanged.

What this cannot show: that a kubelet admits and runs the pod (see README, "Deploy to
Kubernetes", for what was and was not verified on a real kernel).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZE_DIR = ROOT / "deploy" / "kubernetes"
EXAMPLE_CONFIG = ROOT / "deploy" / "agent.example.yaml"
DOCKERFILE = ROOT / "deploy" / "Dockerfile"

OVERLAYS = ("privileged", "least-privilege")
# 1.30: the oldest the manifests can work on (securityContext.appArmorProfile is GA there);
# 1.32: the kubectl these machines have; 1.37: the newest schema kubernetes-validate ships.
K8S_VERSIONS = ("1.30", "1.32", "1.37")

NAMESPACE = "ebpf-agent"
# The least-privilege variant's capabilities; each one's reason is written beside it in
# deploy/kubernetes/least-privilege/kustomization.yaml and in the README.
LEAST_PRIVILEGE_CAPS = {"BPF", "PERFMON", "SYS_PTRACE", "DAC_READ_SEARCH", "SYS_RESOURCE"}
# The only host paths the agent reads, each mounted at the same path (see base/daemonset.yaml).
HOST_PATHS = {"/sys/kernel/tracing", "/sys/kernel/debug", "/sys/fs/cgroup"}
HEALTH_PORT = 9464
READ_VERBS = {"get", "list", "watch"}


def render(directory: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: the manifests are rendered with `kubectl kustomize` "
                    "(kubectl >= 1.27, kustomize v5)")
    out = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl kustomize {directory} failed:\n{out.stderr}"
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    assert docs, f"kubectl kustomize {directory} rendered nothing"
    return docs


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request) -> tuple[str, list[dict]]:
    return request.param, render(KUSTOMIZE_DIR / request.param)


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def agent_container(docs: list[dict]) -> dict:
    containers = one(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    return containers[0]


def quantity(q: str | int) -> Fraction:
    """A Kubernetes resource quantity (the subset used here: m, Ki/Mi/Gi, plain)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(m|Ki|Mi|Gi)?", str(q))
    assert m, f"unexpected quantity {q!r}"
    scale = {None: 1, "m": Fraction(1, 1000), "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}[m.group(2)]
    return Fraction(m.group(1)) * scale


# --- schema ------------------------------------------------------------------------------

@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_strictly(overlay, version):
    name, docs = overlay
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(["Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
                            "ConfigMap", "PriorityClass", "DaemonSet"]), f"{name}: {kinds}"
    for d in docs:
        # Raises on a schema violation, and on a kind the schemas do not know (never skipped).
        kubernetes_validate.validate(d, version, strict=True)


def test_the_base_renders_and_validates():
    for d in render(KUSTOMIZE_DIR / "base"):
        kubernetes_validate.validate(d, K8S_VERSIONS[1], strict=True)


def test_strict_validation_rejects_what_the_api_server_would():
    """The validator is not a rubber stamp: a misspelt field and a wrong type both fail."""
    ds = one(render(KUSTOMIZE_DIR / "least-privilege"), "DaemonSet")
    misspelt = yaml.safe_load(yaml.safe_dump(ds))
    misspelt["spec"]["template"]["spec"]["hostPid"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(misspelt, K8S_VERSIONS[1], strict=True)
    wrong_type = yaml.safe_load(yaml.safe_dump(ds))
    wrong_type["spec"]["template"]["spec"]["hostPID"] = "yes"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, K8S_VERSIONS[1], strict=True)
    # appArmorProfile is the reason 1.30 is the oldest supported version.
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, "1.29", strict=True)


# --- what the agent needs from the pod -----------------------------------------------------

def test_host_namespaces_and_scheduling(overlay):
    name, docs = overlay
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostPID"] is True, f"{name}: the agent reads /proc/<pid> of host pids"
    assert pod["hostNetwork"] is True, f"{name}: the probes reach the agent on 127.0.0.1"
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet", \
        f"{name}: with hostNetwork, cluster DNS needs ClusterFirstWithHostNet"
    assert {"operator": "Exists"} in pod["tolerations"], f"{name}: must tolerate every taint"
    pc = one(docs, "PriorityClass")
    assert pod["priorityClassName"] == pc["metadata"]["name"]
    # Above ordinary workloads (0), below the system-* classes (>= 2000000000).
    assert 0 < pc["value"] < 2_000_000_000 and pc["globalDefault"] is False
    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]


def test_downward_api_environment(overlay):
    name, docs = overlay
    env = {e["name"]: e for e in agent_container(docs)["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}, name
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    # Empty is "unset" for the agent (OTel spec): spans go to the log until it is set.
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"]["value"] == ""


def test_config_is_the_documented_example(overlay):
    name, docs = overlay
    cm = one(docs, "ConfigMap")
    example = EXAMPLE_CONFIG.read_text()
    assert cm["data"]["agent.yaml"] == example, (
        f"{name}: the ConfigMap is not deploy/agent.example.yaml; after editing the example run\n"
        "  cp deploy/agent.example.yaml deploy/kubernetes/base/agent.yaml")
    c = agent_container(docs)
    assert c["command"] == ["/usr/local/bin/agent"]
    assert c["args"] == ["run", "--config", "/etc/ebpf-agent/agent.yaml"]
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in one(docs, "DaemonSet")["spec"]["template"]["spec"]["volumes"]}
    assert mounts["config"]["mountPath"] == "/etc/ebpf-agent" and mounts["config"]["readOnly"]
    # kustomize rewrote the reference to the generated (hash-suffixed) name.
    assert volumes["config"]["configMap"]["name"] == cm["metadata"]["name"]
    assert re.fullmatch(r"ebpf-agent-config-[a-z0-9]{10}", cm["metadata"]["name"])


def test_host_mounts_are_exactly_the_needed_ones_and_read_only(overlay):
    name, docs = overlay
    volumes = one(docs, "DaemonSet")["spec"]["template"]["spec"]["volumes"]
    host = {v["name"]: v["hostPath"] for v in volumes if "hostPath" in v}
    assert {h["path"] for h in host.values()} == set(HOST_PATHS), f"{name}: {host}"
    assert all(h["type"] == "Directory" for h in host.values())
    mounts = {m["name"]: m for m in agent_container(docs)["volumeMounts"]}
    for vol, h in host.items():
        m = mounts[vol]
        assert m["mountPath"] == h["path"], f"{name}: {m}"
        assert m.get("readOnly") is True, f"{name}: {h['path']} must be mounted read-only"
        # Bidirectional would need privileged and could leak mounts back to the host.
        assert m.get("mountPropagation") == "HostToContainer"


def test_probes_hit_the_loopback_health_endpoint(overlay):
    name, docs = overlay
    c = agent_container(docs)
    pod = one(docs, "DaemonSet")["spec"]["template"]["spec"]
    paths = {}
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = c[probe]["httpGet"]
        assert get["port"] == HEALTH_PORT and get["host"] == "127.0.0.1", f"{name} {probe}: {get}"
        paths[probe] = get["path"]
    assert paths == {"startupProbe": "/healthz", "livenessProbe": "/healthz",
                     "readinessProbe": "/readyz"}
    # 127.0.0.1 is the kubelet's own loopback: only the agent's when they share the netns.
    assert pod["hostNetwork"] is True
    # No declared port: with hostNetwork it would claim hostPort 9464 on the node's IPs,
    # which the agent does not listen on.
    assert "ports" not in c


def test_resources_are_bounded(overlay):
    name, docs = overlay
    r = agent_container(docs)["resources"]
    for res in ("cpu", "memory"):
        req, lim = quantity(r["requests"][res]), quantity(r["limits"][res])
        assert 0 < req <= lim, f"{name}: {res} request {req} > limit {lim}"
    # The BPF maps alone (~30 MiB, charged to the pod's memory cgroup) must fit the limit.
    assert quantity(r["limits"]["memory"]) >= 256 * 2**20


def test_common_container_hardening(overlay):
    name, docs = overlay
    sc = agent_container(docs)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True, name
    assert sc["runAsUser"] == 0 and sc["runAsNonRoot"] is False
    # The API server rejects privileged together with allowPrivilegeEscalation: false.
    assert not (sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False)


# --- the two security variants -------------------------------------------------------------

def test_privileged_variant():
    docs = render(KUSTOMIZE_DIR / "privileged")
    sc = agent_container(docs)["securityContext"]
    assert sc["privileged"] is True
    assert "capabilities" not in sc, "privileged already has every capability"


def test_least_privilege_variant_adds_exactly_the_documented_capabilities():
    docs = render(KUSTOMIZE_DIR / "least-privilege")
    sc = agent_container(docs)["securityContext"]
    assert sc["privileged"] is False
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    added = sc["capabilities"]["add"]
    assert len(added) == len(set(added)) and set(added) == LEAST_PRIVILEGE_CAPS, added
    assert "SYS_ADMIN" not in added
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["appArmorProfile"] == {"type": "Unconfined"}


def readme_deploy_section() -> str:
    readme = (ROOT / "README.md").read_text()
    m = re.search(r"^## Deploy to Kubernetes$(.*?)(?=^## |\Z)", readme, re.S | re.M)
    assert m, "README.md has no '## Deploy to Kubernetes' section"
    return m.group(1)


def test_readme_documents_each_capability():
    section = readme_deploy_section()
    for cap in sorted(LEAST_PRIVILEGE_CAPS):
        assert f"CAP_{cap}" in section, f"README's Deploy section does not explain CAP_{cap}"
    assert "kubectl apply -k deploy/kubernetes/privileged" in section
    assert "kubectl apply -k deploy/kubernetes/least-privilege" in section


def test_readme_kustomization_example_renders(tmp_path):
    """The README's "your own kustomization" example sets the image and the collector."""
    blocks = re.findall(r"```yaml\n(.*?)```", readme_deploy_section(), re.S)
    example = [b for b in blocks if "images:" in b]
    assert len(example) == 1, "expected one kustomization example in the Deploy section"
    checkout = "ebpf-agent/deploy/kubernetes/least-privilege"
    assert checkout in example[0]
    here = os.path.relpath(KUSTOMIZE_DIR / "least-privilege", tmp_path)
    (tmp_path / "kustomization.yaml").write_text(example[0].replace(checkout, here))
    docs = render(tmp_path)
    c = agent_container(docs)
    assert c["image"] == "registry.example.com/ebpf-agent:0.1.0"
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability.svc:4317"
    # The strategic-merge patch replaced the entry, it did not drop the downward-API ones.
    assert {"NODE_NAME", "POD_NAMESPACE"} <= set(env)
    for d in docs:
        kubernetes_validate.validate(d, K8S_VERSIONS[1], strict=True)


# --- namespace and RBAC ---------------------------------------------------------------------

def test_namespace_admits_privileged_pods_and_holds_everything(overlay):
    name, docs = overlay
    ns = one(docs, "Namespace")
    assert ns["metadata"]["name"] == NAMESPACE
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
    for d in docs:
        if d["kind"] not in cluster_scoped:
            assert d["metadata"]["namespace"] == NAMESPACE, f"{name}: {d['kind']}"


def test_rbac_is_read_only_and_minimal(overlay):
    name, docs = overlay
    role = one(docs, "ClusterRole")
    rules = {}
    for rule in role["rules"]:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, f"{name}: {rule}"
        assert set(rule["verbs"]) <= READ_VERBS, f"{name}: write verb in {rule}"
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], f"{name}: wildcard in {rule}"
        for group in rule["apiGroups"]:
            for res in rule["resources"]:
                rules.setdefault((group, res), set()).update(rule["verbs"])
    assert rules == {
        ("", "pods"): READ_VERBS,
        ("apps", "replicasets"): {"get"},
        ("batch", "jobs"): {"get"},
    }, rules
    binding = one(docs, "ClusterRoleBinding")
    sa = one(docs, "ServiceAccount")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                    "namespace": NAMESPACE}]


# --- the image ------------------------------------------------------------------------------

def test_dockerfile_lints_clean_and_matches_the_manifests():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.fail("hadolint is not installed: cargo xtask setup (tests/requirements.txt)")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, f"hadolint deploy/Dockerfile:\n{out.stdout}{out.stderr}"
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert stages[-1] == "debian:bookworm-slim" and len(stages) == 2, stages
    assert "cargo xtask build --release" in text
    # The DaemonSet's command is the binary the image installs.
    assert re.search(r"^COPY --from=builder \S+ /usr/local/bin/agent$", text, re.M)
    assert 'ENTRYPOINT ["/usr/local/bin/agent"]' in text
