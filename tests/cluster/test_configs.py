"""The configs under cluster/ parse, validate against Ray's own schema, and stay safe.

Every rule is also fed a deliberately broken copy of a real config to show it fires.
"""

from __future__ import annotations

import copy
import os
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from cluster_rules import (
    STORAGE_PATH,
    dashboard_host_problem,
    launcher_problems,
    storage_problems,
    text_problems,
)
from kuberay_rules import (
    admits,
    crd_problems,
    head_labels,
    kuberay_problems,
    submitter_address,
)

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
LAUNCHERS = ["aws.yaml", "gcp.yaml"]
KUBERAY = ["kuberay/raycluster.yaml", "kuberay/rayjob.yaml"]
CONFIG_FILES = sorted(
    p
    for p in CLUSTER.rglob("*")
    if p.is_file() and (p.suffix in (".yaml", ".sh") or p.name == "Dockerfile")
)


def load(name: str) -> dict[str, Any]:
    return yaml.safe_load((CLUSTER / name).read_text())


def load_all(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((CLUSTER / name).read_text()) if d]


def pvc_name() -> str:
    return load("kuberay/storage.yaml")["metadata"]["name"]


# ------------------------------------------------------------ every file ---


def test_every_yaml_parses() -> None:
    yamls = sorted(CLUSTER.rglob("*.yaml"))
    assert {p.relative_to(CLUSTER).as_posix() for p in yamls} >= {*LAUNCHERS, *KUBERAY}
    for path in yamls:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(d, dict) for d in docs), path


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.relative_to(CLUSTER).as_posix())
def test_no_disabled_auth_or_open_dashboard_in_text(path: Path) -> None:
    assert text_problems(path, path.read_text()) == []


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("  - export RAY_AUTH_MODE=disabled; ray start --head", "token authentication disabled"),
        ("    mode: disabled", "authOptions mode disabled"),
        ("    ray start --head --dashboard-host=0.0.0.0", "dashboard bound to all interfaces"),
        ("      dashboard-host: '0.0.0.0'", "dashboard bound to all interfaces"),
        ("    ray start --head --dashboard-host ::", "dashboard bound to all interfaces"),
        ("          CidrIp: 0.0.0.0/0", "0.0.0.0 in a config value"),
    ],
)
def test_text_rules_fire(line: str, expected: str) -> None:
    problems = text_problems(Path("bad.yaml"), f"# a comment may say 0.0.0.0\n{line}\n")
    assert any(expected in p for p in problems), problems
    assert all(p.startswith("bad.yaml:2:") for p in problems)


@pytest.mark.parametrize(
    ("host", "ok"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("10.0.3.7", True),
        ("$(CMCL_POD_IP)", True),
        ("0.0.0.0", False),
        ("::", False),
        ("[::]", False),
        ("34.120.5.9", False),
        (None, False),
        ("$CMCL_POD_IP", False),
    ],
)
def test_dashboard_host_rule(host: str | None, ok: bool) -> None:
    assert (dashboard_host_problem(host, "x") is None) == ok


def test_every_placeholder_is_documented() -> None:
    readme = (CLUSTER / "README.md").read_text()
    placeholders = set()
    for path in CONFIG_FILES:
        placeholders |= set(re.findall(r"[\w-]*REPLACE_ME[\w-]*", path.read_text()))
    assert placeholders, "expected region/project-specific placeholders"
    assert sorted(p for p in placeholders if p not in readme) == []


# ------------------------------------------------------ cluster launcher ---


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_is_valid_and_safe(name: str) -> None:
    assert launcher_problems(load(name)) == []


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_config_passes_rays_own_preparation(name: str) -> None:
    # What `ray up` does before launching anything: merge provider defaults, validate.
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(copy.deepcopy(load(name))))


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        config = config[key]
    if value is _DELETE:
        del config[last]
    else:
        config[last] = value


_DELETE = object()
_HEAD_START = "head_start_ray_commands"


def _replace_in_commands(key: str, old: str, new: str) -> Any:
    def change(config: dict[str, Any]) -> None:
        config[key] = [c.replace(old, new) for c in config[key]]

    return change


LAUNCHER_BREAKAGES = {
    "unknown key": (lambda c: _set(c, "head_ip", "1.2.3.4"), "schema"),
    "no cluster_name": (lambda c: _set(c, "cluster_name", _DELETE), "cluster_name"),
    "head runs tasks": (
        lambda c: _set(c, "available_node_types.head.resources", {"CPU": 8}),
        "CPU: 0",
    ),
    "no cmcl install": (
        lambda c: _set(
            c,
            "setup_commands",
            [s for s in c["setup_commands"] if "cmcl" not in s.split("install")[-1]],
        ),
        "install cmcl",
    ),
    "no shared storage": (
        lambda c: _set(c, "setup_commands", [s for s in c["setup_commands"] if "mount" not in s]),
        "shared storage",
    ),
    "public dashboard": (
        _replace_in_commands(_HEAD_START, "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
        "every interface",
    ),
    "default dashboard host": (
        _replace_in_commands(_HEAD_START, "--dashboard-host=127.0.0.1", ""),
        "dashboard host not set",
    ),
    "auth off on the head": (
        _replace_in_commands(_HEAD_START, "export RAY_AUTH_MODE=token;", ""),
        "without RAY_AUTH_MODE=token",
    ),
    "token not shipped": (lambda c: _set(c, "file_mounts", {}), "auth token"),
    "no worker start": (lambda c: _set(c, "worker_start_ray_commands", []), "ray start --address"),
}


@pytest.mark.parametrize("name", LAUNCHERS)
@pytest.mark.parametrize("breakage", sorted(LAUNCHER_BREAKAGES))
def test_launcher_rules_fire(name: str, breakage: str) -> None:
    config = load(name)
    change, expected = LAUNCHER_BREAKAGES[breakage]
    change(config)
    problems = launcher_problems(config)
    assert any(expected in p for p in problems), problems


def test_aws_rules_fire_on_open_network() -> None:
    config = load("aws.yaml")
    del config["available_node_types"]["gpu_1x_a10g"]["node_config"]["SecurityGroupIds"]
    open_rule = {
        "FromPort": 6379,
        "ToPort": 6379,
        "IpProtocol": "tcp",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    ssh_rule = {
        "FromPort": 22,
        "ToPort": 22,
        "IpProtocol": "tcp",
        "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    }
    config["provider"]["security_group"] = {
        "GroupName": "x",
        "IpPermissions": [open_rule, ssh_rule],
    }
    problems = launcher_problems(config)
    assert any("gpu_1x_a10g: no SecurityGroupIds" in p for p in problems), problems
    assert (
        sum("open to the internet" in p for p in problems) == 1
    )  # SSH is the documented exception


def test_gcp_rules_fire_on_default_network() -> None:
    config = load("gcp.yaml")
    del config["available_node_types"]["gpu_1x_l4"]["node_config"]["networkInterfaces"]
    config["available_node_types"]["gpu_1x_l4"]["resources"] = {"CPU": 8}
    config["available_node_types"]["gpu_1x_a100"]["resources"] = {"CPU": 12}
    problems = launcher_problems(config)
    assert any("gpu_1x_l4: no networkInterfaces" in p for p in problems), problems
    assert "no GPU worker type" in problems


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launcher_uses_one_storage_path(name: str) -> None:
    text = (CLUSTER / name).read_text()
    assert STORAGE_PATH in text
    assert set(re.findall(r"/mnt/[\w-]+", text)) == {STORAGE_PATH}


# ---------------------------------------------------------------- KubeRay ---


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_is_valid_and_safe(name: str) -> None:
    assert kuberay_problems(load_all(name), pvc_name()) == []


def test_storage_claim_is_read_write_many() -> None:
    assert storage_problems(load_all("kuberay/storage.yaml")) == []
    claim = load("kuberay/storage.yaml")
    claim["spec"]["accessModes"] = ["ReadWriteOnce"]
    assert "need [ReadWriteMany]" in storage_problems([claim])[0]


def test_rayjob_runs_a_study_on_the_shared_volume() -> None:
    job = next(d for d in load_all("kuberay/rayjob.yaml") if d["kind"] == "RayJob")
    words = shlex.split(job["spec"]["entrypoint"].replace("&&", " && "))
    start = words.index("cmcl")
    assert words[start : start + 3] == ["cmcl", "study", "run"]
    assert re.fullmatch(r"studies/[\w-]+\.yaml", words[start + 3])
    storage = words[words.index("--storage") + 1]
    assert storage.startswith(STORAGE_PATH + "/")


def _kuberay_docs(name: str) -> list[dict[str, Any]]:
    return load_all(name)


def _cluster_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    doc = next(d for d in docs if d["kind"] in ("RayCluster", "RayJob"))
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def _policy(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "NetworkPolicy")


KUBERAY_BREAKAGES = {
    "LoadBalancer head": (
        lambda d: _cluster_spec(d)["headGroupSpec"].update(serviceType="LoadBalancer"),
        "ClusterIP only",
    ),
    "NodePort service": (
        lambda d: d.append(
            {"kind": "Service", "metadata": {"name": "dash"}, "spec": {"type": "NodePort"}}
        ),
        "is NodePort",
    ),
    "dashboard on all interfaces": (
        lambda d: _cluster_spec(d)["headGroupSpec"]["rayStartParams"].update(
            {"dashboard-host": "0.0.0.0"}
        ),
        "every interface",
    ),
    "dashboard host left to KubeRay": (
        lambda d: _cluster_spec(d)["headGroupSpec"]["rayStartParams"].pop("dashboard-host"),
        "dashboard host not set",
    ),
    "auth disabled": (
        lambda d: _cluster_spec(d).update(authOptions={"mode": "disabled"}),
        "must be token",
    ),
    "auth env disabled": (
        lambda d: (
            _cluster_spec(d)["headGroupSpec"]["template"]["spec"]["containers"][0]
            .setdefault("env", [])
            .append({"name": "RAY_AUTH_MODE", "value": "disabled"})
        ),
        "RAY_AUTH_MODE=disabled",
    ),
    "no network policy": (lambda d: d.remove(_policy(d)), "no NetworkPolicy selects"),
    "policy admits everyone": (
        lambda d: _policy(d)["spec"]["ingress"].append({"ports": [{"port": 8265}]}),
        "without 'from' admits everyone",
    ),
    "policy admits the internet": (
        lambda d: _policy(d)["spec"]["ingress"].append(
            {"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}
        ),
        "ipBlock",
    ),
    "policy admits another namespace": (
        lambda d: _policy(d)["spec"]["ingress"].append({"from": [{"namespaceSelector": {}}]}),
        "must be the KubeRay operator",
    ),
    "worker without shared volume": (
        lambda d: _cluster_spec(d)["workerGroupSpecs"][0]["template"]["spec"]["containers"][0].pop(
            "volumeMounts"
        ),
        f"does not mount cmcl-cluster-storage at {STORAGE_PATH}",
    ),
    "fixed-size worker group": (
        lambda d: _cluster_spec(d)["workerGroupSpecs"][0].update(minReplicas=8),
        "does not autoscale",
    ),
    "head runs tasks": (
        lambda d: _cluster_spec(d)["headGroupSpec"]["rayStartParams"].pop("num-cpus"),
        "num-cpus must be '0'",
    ),
}


@pytest.mark.parametrize("name", KUBERAY)
@pytest.mark.parametrize("breakage", sorted(KUBERAY_BREAKAGES))
def test_kuberay_rules_fire(name: str, breakage: str) -> None:
    docs = _kuberay_docs(name)
    change, expected = KUBERAY_BREAKAGES[breakage]
    change(docs)
    problems = kuberay_problems(docs, pvc_name())
    assert any(expected in p for p in problems), problems


@pytest.mark.parametrize("name", KUBERAY)
def test_kuberay_manifest_matches_kuberays_crd(name: str) -> None:
    doc = next(d for d in load_all(name) if d["kind"] in ("RayCluster", "RayJob"))
    assert crd_problems(doc) == []
    doc["spec"]["submiterPodTemplate"] = {}  # a misspelt field, which kubectl rejects
    _cluster_spec([doc])["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0  # not a string
    problems = crd_problems(doc)
    assert any("'submiterPodTemplate' was unexpected" in p for p in problems), problems
    assert any("rayStartParams/num-cpus: 0 is not of type 'string'" in p for p in problems)


def _rayjob(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "RayJob")


def test_rayjob_submitter_reaches_the_head_dashboard_and_nothing_else() -> None:
    docs = load_all("kuberay/rayjob.yaml")
    job = _rayjob(docs)
    spec = _cluster_spec(docs)
    # K8sJobMode: `ray job submit` goes to the head Service of the job's RayCluster,
    # the address where the operator reads the job's status too.
    assert job["spec"]["submissionMode"] == "K8sJobMode"
    assert submitter_address(job, "research") == (
        "http://cmcl-study-xxxxx-head-svc.research.svc.cluster.local:8265"
    )
    # Behind the Service, the head pod's IP: where the dashboard binds.
    host = spec["headGroupSpec"]["rayStartParams"]["dashboard-host"]
    env = {e["name"]: e for e in spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]}
    assert env[host.strip("$()")]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    submitter = job["spec"]["submitterPodTemplate"]["metadata"]["labels"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    head = head_labels(spec)
    worker = spec["workerGroupSpecs"][0]["template"]["metadata"]["labels"]
    assert admits(policies, head, submitter, 8265)
    for port in (6379, 10001, 8076, 52365):  # GCS, Ray Client, object manager, agent
        assert not admits(policies, head, submitter, port), port
    assert not admits(policies, worker, submitter, 8265)
    assert not admits(policies, head, {"app": "something-else"}, 8265)
    assert admits(policies, worker, head, 6379)  # the cluster itself is unaffected


RAYJOB_BREAKAGES = {
    # The file before this fix: the sidecar dials 127.0.0.1, the dashboard binds the pod IP.
    "sidecar submitter": (
        lambda d: _rayjob(d)["spec"].update(submissionMode="SidecarMode"),
        "SidecarMode: the submitter sidecar dials http://127.0.0.1:8265, but the dashboard "
        "binds $(CMCL_POD_IP)",
    ),
    "dashboard on loopback": (
        lambda d: _cluster_spec(d)["headGroupSpec"]["rayStartParams"].update(
            {"dashboard-host": "127.0.0.1"}
        ),
        "which a dashboard on 127.0.0.1 never answers",
    ),
    "pod IP variable undefined": (
        lambda d: _cluster_spec(d)["headGroupSpec"]["template"]["spec"]["containers"][0].pop("env"),
        "the head has no env CMCL_POD_IP from status.podIP",
    ),
    "unlabelled submitter": (
        lambda d: _rayjob(d)["spec"].pop("submitterPodTemplate"),
        "K8sJobMode needs submitterPodTemplate.metadata.labels",
    ),
    "submitter not admitted": (
        lambda d: d[-1]["spec"]["ingress"][0]["from"].pop(),
        "no NetworkPolicy admits the submitter pod",
    ),
    "submitter admitted to every port": (
        lambda d: d[-1]["spec"]["ingress"][0].pop("ports"),
        "the job submitter {'cmcl/ray-job-submitter': 'cmcl-study'} may reach port 8265 only",
    ),
    "submitter as a cluster member": (
        lambda d: _rayjob(d)["spec"]["submitterPodTemplate"]["metadata"]["labels"].update(
            {"cmcl/ray-cluster": "cmcl-study"}
        ),
        "carries the cluster's labels and so reaches every Ray port",
    ),
    "submitter command replaced": (
        lambda d: _rayjob(d)["spec"]["submitterPodTemplate"]["spec"]["containers"][0].update(
            command=["ray", "job", "submit", "--address", "http://127.0.0.1:8265"]
        ),
        "the submitter's command is KubeRay's",
    ),
    "unknown mode": (
        lambda d: _rayjob(d)["spec"].update(submissionMode="Sidecar"),
        "submissionMode 'Sidecar' is not one of",
    ),
}


@pytest.mark.parametrize("breakage", sorted(RAYJOB_BREAKAGES))
def test_rayjob_rules_fire(breakage: str) -> None:
    docs = load_all("kuberay/rayjob.yaml")
    change, expected = RAYJOB_BREAKAGES[breakage]
    change(docs)
    problems = kuberay_problems(docs, pvc_name())
    assert any(expected in p for p in problems), problems


def test_the_old_sidecar_rayjob_is_rejected() -> None:
    # The shape of rayjob.yaml before K8sJobMode, rebuilt from today's file.
    docs = load_all("kuberay/rayjob.yaml")
    job = _rayjob(docs)
    job["spec"]["submissionMode"] = "SidecarMode"
    del job["spec"]["submitterPodTemplate"]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    policies[1]["spec"]["podSelector"]["matchLabels"].pop("ray.io/node-type")
    policies[1]["spec"]["ingress"][0]["from"].pop()
    assert submitter_address(job) == "http://127.0.0.1:8265"
    problems = kuberay_problems(docs, pvc_name())
    assert [p for p in problems if "SidecarMode" in p] == [
        "cmcl-study: SidecarMode: the submitter sidecar dials http://127.0.0.1:8265, "
        "but the dashboard binds $(CMCL_POD_IP)"
    ]


# ------------------------------------------- firewall / security scripts ---

STUB = """#!/usr/bin/env bash
printf '%s\\n' "$*" >> "$STUB_LOG"
case "$*" in *create-security-group*) echo sg-0123abcd ;; esac
"""


def run_script(
    script: str, args: list[str], tmp_path: Path
) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Runs a cluster/ script with stub aws/gcloud commands that only record their arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for tool in ("aws", "gcloud"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    log.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "STUB_LOG": str(log)}
    result = subprocess.run(
        ["bash", str(CLUSTER / script), *args], capture_output=True, text=True, env=env, timeout=30
    )
    return result, log.read_text().splitlines()


def test_aws_security_group_allows_only_the_group_and_admin_ssh(tmp_path: Path) -> None:
    result, calls = run_script(
        "aws_security_group.sh",
        ["--vpc-id", "vpc-0abc", "--admin-cidr", "203.0.113.7/32"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sg-0123abcd"
    ingress = [c for c in calls if "authorize-security-group-ingress" in c]
    assert len(ingress) == 2
    assert "IpProtocol=-1,UserIdGroupPairs=[{GroupId=sg-0123abcd" in ingress[0]
    assert "IpProtocol=tcp,FromPort=22,ToPort=22,IpRanges=[{CidrIp=203.0.113.7/32" in ingress[1]
    assert not any("0.0.0.0" in c or "::/0" in c for c in calls)


def test_gcp_firewall_allows_only_the_cluster_tag_and_admin_ssh(tmp_path: Path) -> None:
    result, calls = run_script(
        "gcp_firewall.sh", ["--project", "my-proj-123", "--admin-cidr", "198.51.100.0/24"], tmp_path
    )
    assert result.returncode == 0, result.stderr
    rules = [c for c in calls if "firewall-rules create" in c]
    assert len(rules) == 2
    assert "--source-tags cmcl-ray --target-tags cmcl-ray" in rules[0]
    assert "--rules tcp:22 --source-ranges 198.51.100.0/24" in rules[1]
    assert all("--direction INGRESS" in r for r in rules)
    assert not any("0.0.0.0" in c or "::/0" in c for c in calls)
    # The subnet and tag the script makes are the ones gcp.yaml uses.
    gcp = load("gcp.yaml")["available_node_types"]["head"]["node_config"]
    assert gcp["networkInterfaces"][0]["subnetwork"].endswith("/subnetworks/cmcl-ray")
    assert gcp["tags"]["items"] == ["cmcl-ray"]


@pytest.mark.parametrize("script", ["aws_security_group.sh", "gcp_firewall.sh"])
@pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/0", "1.0.0.0/4", "::/0", "everyone"])
def test_network_scripts_refuse_open_ssh(script: str, cidr: str, tmp_path: Path) -> None:
    ids = ["--vpc-id", "vpc-0abc"] if script.startswith("aws") else ["--project", "my-proj-123"]
    result, calls = run_script(script, [*ids, "--admin-cidr", cidr], tmp_path)
    assert result.returncode == 2
    assert "--admin-cidr" in result.stderr
    assert calls == []


# ------------------------------------------------------------- local.sh ---


def test_local_sh_is_token_protected_loopback_and_pid_scoped() -> None:
    code = [
        line
        for line in (CLUSTER / "local.sh").read_text().splitlines()
        if not line.lstrip().startswith("#")
    ]
    text = "\n".join(code)
    assert "--dashboard-host=127.0.0.1" in text
    assert "RAY_AUTH_MODE=token" in text
    assert not re.search(r"\bray stop\b", text), "local.sh must never run the unscoped 'ray stop'"
