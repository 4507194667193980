"""Safety and completeness rules for the KubeRay manifests under cluster/kuberay/.

Like cluster_rules, each ``*_problems`` function returns human-readable problems
(empty when the manifest passes). Where a rule depends on what the KubeRay operator
does, the docstring names the source it models: ray-project/kuberay v1.6.0
(3fe72c3c), ``ray-operator/controllers/ray/``; v1.7.0 (59d663ae) behaves the same
in every point used here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from cluster_rules import STORAGE_PATH, dashboard_host_problem

# KubeRay's RayJob CRD (v1), made by make_kuberay_schema.py; its rayClusterSpec is
# the RayCluster CRD's spec.
CRD_SCHEMA = Path(__file__).with_name("kuberay_rayjob_v1.schema.json")
SUBMISSION_MODES = ("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")
DEFAULT_DASHBOARD_PORT = 8265  # utils.DefaultDashboardPort
LOOPBACK = ("localhost", "127.0.0.1", "::1")
# common/pod.go labelPod: on every head pod, and a template cannot override it.
HEAD_POD_LABELS = {"ray.io/node-type": "head"}
_ENV_REFERENCE = re.compile(r"^\$\((\w+)\)$")


def crd_problems(doc: dict[str, Any]) -> list[str]:
    """Fields and types a RayJob or RayCluster has that KubeRay's CRD does not accept."""
    schema = json.loads(CRD_SCHEMA.read_text())
    if doc.get("kind") == "RayCluster":  # same top level, with rayClusterSpec as spec
        cluster_spec = schema["properties"]["spec"]["properties"]["rayClusterSpec"]
        schema["properties"] = {**schema["properties"], "spec": cluster_spec}
    return [
        f"CRD: /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(doc)
    ]


def ray_cluster_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in docs:
        if doc.get("kind") == "RayCluster":
            yield doc["metadata"]["name"], doc.get("spec", {})
        elif doc.get("kind") == "RayJob":
            yield doc["metadata"]["name"], doc.get("spec", {}).get("rayClusterSpec", {})


def _pod_templates(spec: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    yield "head", spec.get("headGroupSpec", {}).get("template", {})
    for group in spec.get("workerGroupSpecs", []):
        yield f"worker group {group.get('groupName')}", group.get("template", {})


def _labels(template: dict[str, Any]) -> dict[str, str]:
    return template.get("metadata", {}).get("labels") or {}


def cluster_labels(spec: dict[str, Any]) -> dict[str, str]:
    """The labels every pod template of a Ray cluster shares: what selects the cluster."""
    shared: dict[str, str] | None = None
    for _, template in _pod_templates(spec):
        labels = _labels(template)
        shared = (
            dict(labels)
            if shared is None
            else {k: v for k, v in shared.items() if labels.get(k) == v}
        )
    return shared or {}


def head_labels(spec: dict[str, Any]) -> dict[str, str]:
    """The labels the head pod gets: its template's plus KubeRay's own."""
    return {**_labels(spec.get("headGroupSpec", {}).get("template", {})), **HEAD_POD_LABELS}


def _head_container(spec: dict[str, Any]) -> dict[str, Any]:
    containers = spec.get("headGroupSpec", {}).get("template", {}).get("spec", {})
    return (containers.get("containers") or [{}])[0]  # utils.RayContainerIndex = 0


def dashboard_port(spec: dict[str, Any]) -> int:
    """The head container's port named "dashboard" (utils.FindContainerPort), else 8265."""
    for port in _head_container(spec).get("ports", []):
        if port.get("name") == "dashboard":
            return int(port["containerPort"])
    return DEFAULT_DASHBOARD_PORT


def submission_mode(job: dict[str, Any]) -> str:
    return job.get("spec", {}).get("submissionMode") or "K8sJobMode"  # the CRD's default


def submitter_address(job: dict[str, Any], namespace: str = "default") -> str | None:
    """The URL KubeRay's submitter gives `ray job submit --address` (None: no submitter).

    common/job.go BuildJobSubmitCommand: SidecarMode dials http://127.0.0.1:<dashboard
    port>; K8sJobMode dials "http://" + status.dashboardURL, which rayjob_controller.go
    sets from utils.FetchHeadServiceURL: <raycluster>-head-svc.<ns>.svc.cluster.local:
    <port>, the RayCluster being named <rayjob>-<5 random characters>
    (utils.GenerateRayClusterName), written xxxxx here.
    """
    port = dashboard_port(job.get("spec", {}).get("rayClusterSpec", {}))
    mode = submission_mode(job)
    if mode == "SidecarMode":
        return f"http://127.0.0.1:{port}"
    if mode == "K8sJobMode":
        cluster = f"{job['metadata']['name']}-xxxxx"
        return f"http://{cluster}-head-svc.{namespace}.svc.cluster.local:{port}"
    return None


def admits(
    policies: list[dict[str, Any]], target: dict[str, str], peer: dict[str, str], port: int
) -> bool:
    """Whether some policy selecting pods labelled `target` lets same-namespace pods
    labelled `peer` connect to `port` (NetworkPolicy rules are a union)."""
    for policy in policies:
        spec = policy.get("spec", {})
        if not _matches(spec.get("podSelector", {}).get("matchLabels", {}), target):
            continue
        for rule in spec.get("ingress", []):
            ports = {p.get("port") for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for source in rule.get("from", []):
                selector = source.get("podSelector", {}).get("matchLabels", {})
                if "namespaceSelector" not in source and _matches(selector, peer):
                    return True
    return False


def _matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def kuberay_problems(docs: list[dict[str, Any]], pvc_name: str) -> list[str]:
    """Problems of the KubeRay documents of one file (RayCluster or RayJob + NetworkPolicy)."""
    problems = []
    for doc in docs:
        kind = doc.get("kind")
        if kind == "Service" and doc.get("spec", {}).get("type") in ("LoadBalancer", "NodePort"):
            problems.append(f"Service {doc['metadata']['name']} is {doc['spec']['type']}")
        if kind in ("Ingress", "Route", "Gateway", "HTTPRoute"):
            problems.append(f"{kind} {doc['metadata']['name']} exposes the cluster")
        if kind in ("RayCluster", "RayJob"):
            if doc.get("apiVersion") != "ray.io/v1":
                problems.append(f"{kind} apiVersion must be ray.io/v1, got {doc.get('apiVersion')}")
            problems += crd_problems(doc)
        if kind == "RayJob":
            problems += rayjob_submission_problems(doc, docs)
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    specs = list(ray_cluster_specs(docs))
    if not specs:
        problems.append("no RayCluster or RayJob")
    for name, spec in specs:
        problems += _cluster_spec_problems(name, spec)
        for where, template in _pod_templates(spec):
            problems += _pod_problems(f"{name} {where}", template, pvc_name)
            if not any(
                _matches(p["spec"].get("podSelector", {}).get("matchLabels", {}), _labels(template))
                for p in policies
            ):
                problems.append(f"{name} {where}: no NetworkPolicy selects its pods")
    members = [cluster_labels(spec) for _, spec in specs]
    submitters = [_submitter_labels(d) for d in docs if d.get("kind") == "RayJob"]
    for policy in policies:
        problems += _policy_problems(policy, members, [s for s in submitters if s])
    return problems


def _cluster_spec_problems(name: str, spec: dict[str, Any]) -> list[str]:
    problems = []
    head = spec.get("headGroupSpec", {})
    if head.get("serviceType", "ClusterIP") != "ClusterIP":
        problems.append(f"{name}: head serviceType {head['serviceType']} (ClusterIP only)")
    params = head.get("rayStartParams", {})
    host = params.get("dashboard-host")
    problem = dashboard_host_problem(host, f"{name} rayStartParams")
    if problem:
        problems.append(problem)
    reference = _ENV_REFERENCE.match(host or "")
    if reference and not any(
        env.get("name") == reference.group(1)
        and env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "status.podIP"
        for env in _head_container(spec).get("env", [])
    ):
        problems.append(
            f"{name}: dashboard-host {host} but the head has no env "
            f"{reference.group(1)} from status.podIP"
        )
    if str(params.get("num-cpus")) != "0":
        problems.append(f"{name}: head rayStartParams num-cpus must be '0'")
    if (spec.get("authOptions") or {}).get("mode") != "token":
        problems.append(f"{name}: authOptions.mode must be token")
    if not spec.get("workerGroupSpecs"):
        problems.append(f"{name}: no worker group")
    for group in spec.get("workerGroupSpecs", []):
        if not (group.get("minReplicas", 0) < group.get("maxReplicas", 0)):
            problems.append(f"{name}: worker group {group.get('groupName')} does not autoscale")
    if not spec.get("enableInTreeAutoscaling"):
        problems.append(f"{name}: enableInTreeAutoscaling is off")
    return problems


def _submitter_labels(job: dict[str, Any]) -> dict[str, str]:
    if submission_mode(job) != "K8sJobMode":
        return {}
    return _labels(job.get("spec", {}).get("submitterPodTemplate") or {})


def rayjob_submission_problems(job: dict[str, Any], docs: list[dict[str, Any]]) -> list[str]:
    """Can the job be submitted and followed with the dashboard where it binds?

    rayjob_controller.go reads the job's status from status.dashboardURL (the head
    Service) in every mode, so the dashboard must answer on the pod IP; what else
    must reach it depends on the mode (see submitter_address).
    """
    name = job["metadata"]["name"]
    spec = job.get("spec", {}).get("rayClusterSpec", {})
    host = spec.get("headGroupSpec", {}).get("rayStartParams", {}).get("dashboard-host")
    port = dashboard_port(spec)
    mode = submission_mode(job)
    problems = []
    if mode not in SUBMISSION_MODES:
        return [f"{name}: submissionMode {mode!r} is not one of {', '.join(SUBMISSION_MODES)}"]
    if host in LOOPBACK:
        problems.append(
            f"{name}: the operator reads the job's status through the head Service on port "
            f"{port}, which a dashboard on {host} never answers"
        )
    if mode == "SidecarMode" and host not in LOOPBACK:
        problems.append(
            f"{name}: SidecarMode: the submitter sidecar dials {submitter_address(job)}, "
            f"but the dashboard binds {host}"
        )
    if mode != "K8sJobMode":
        return problems
    template = job["spec"].get("submitterPodTemplate") or {}
    labels = _labels(template)
    if not labels:
        problems.append(
            f"{name}: K8sJobMode needs submitterPodTemplate.metadata.labels (KubeRay v1.6 "
            "puts none on the submitter pod) for the NetworkPolicy to admit"
        )
        return problems
    containers = template.get("spec", {}).get("containers") or [{}]
    if "command" in containers[0] or "args" in containers[0]:
        problems.append(f"{name}: the submitter's command is KubeRay's (it sets the address)")
    if _matches(cluster_labels(spec), labels):
        problems.append(
            f"{name}: the submitter pod carries the cluster's labels and so reaches every Ray port"
        )
    policies = [d for d in docs if d.get("kind") == "NetworkPolicy"]
    if not admits(policies, head_labels(spec), labels, port):
        problems.append(
            f"{name}: no NetworkPolicy admits the submitter pod {labels} to port {port} of the head"
        )
    return problems


def _pod_problems(where: str, template: dict[str, Any], pvc_name: str) -> list[str]:
    problems = []
    spec = template.get("spec", {})
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in spec.get("volumes", [])
        if "persistentVolumeClaim" in v
    }
    for container in spec.get("containers", []):
        for env in container.get("env", []):
            if env.get("name") == "RAY_AUTH_MODE" and env.get("value") != "token":
                problems.append(f"{where}: RAY_AUTH_MODE={env.get('value')}")
        mounts = {m["mountPath"]: claims.get(m["name"]) for m in container.get("volumeMounts", [])}
        if mounts.get(STORAGE_PATH) != pvc_name:
            problems.append(
                f"{where}: {container['name']} does not mount {pvc_name} at {STORAGE_PATH}"
            )
    return problems


def _policy_problems(
    policy: dict[str, Any], members: list[dict[str, str]], submitters: list[dict[str, str]]
) -> list[str]:
    """Ingress only from the Ray cluster's own pods, or on the dashboard port from the
    KubeRay operator and the job's submitter pod."""
    name = policy["metadata"]["name"]
    spec = policy.get("spec", {})
    problems = []
    if not spec.get("podSelector", {}).get("matchLabels"):
        problems.append(f"NetworkPolicy {name}: empty podSelector selects every pod")
    if "Ingress" not in spec.get("policyTypes", []):
        problems.append(f"NetworkPolicy {name}: policyTypes lacks Ingress")
    for rule in spec.get("ingress", []):
        peers = rule.get("from")
        if not peers:
            problems.append(f"NetworkPolicy {name}: an ingress rule without 'from' admits everyone")
            continue
        dashboard_only = {p.get("port") for p in rule.get("ports", [])} == {DEFAULT_DASHBOARD_PORT}
        for peer in peers:
            selector = peer.get("podSelector", {}).get("matchLabels")
            if "ipBlock" in peer:
                problems.append(f"NetworkPolicy {name}: ipBlock peer {peer['ipBlock']}")
            elif "namespaceSelector" in peer:
                if (selector or {}).get("app.kubernetes.io/name") != "kuberay-operator" or not (
                    dashboard_only
                ):
                    problems.append(
                        f"NetworkPolicy {name}: other-namespace peer {peer} must be the KubeRay "
                        "operator on port 8265 only"
                    )
            elif selector in submitters:
                if not dashboard_only:
                    problems.append(
                        f"NetworkPolicy {name}: the job submitter {selector} may reach port "
                        "8265 only"
                    )
            elif not selector or selector not in members:
                problems.append(f"NetworkPolicy {name}: peer {peer} is not this Ray cluster")
    return problems
