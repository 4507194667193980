"""Safety and completeness rules for the configs under cluster/.

Each ``*_problems`` function returns a list of human-readable problems (empty
when the config passes), so a test can show every violation at once and feed
deliberately broken configs to the same rule to see it fire.
"""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path
from typing import Any

import jsonschema

STORAGE_PATH = "/mnt/cluster_storage"
OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
_ENV_REFERENCE = re.compile(r"^\$\(\w+\)$")  # Kubernetes-expanded pod IP, e.g. $(CMCL_POD_IP)


def ray_schema() -> dict[str, Any]:
    """The cluster-launcher JSON schema shipped inside the installed ray package."""
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def dashboard_host_problem(host: str | None, where: str) -> str | None:
    """Allowed: loopback, a private address, or a pod-IP env reference; never all interfaces."""
    if host is None:
        return f"{where}: dashboard host not set (Ray/KubeRay defaults may bind all interfaces)"
    if host in ("localhost", "127.0.0.1", "::1") or _ENV_REFERENCE.match(host):
        return None
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return f"{where}: dashboard host {host!r} is not an IP, localhost or $(POD_IP_VAR)"
    if address.is_unspecified:
        return f"{where}: dashboard host {host} listens on every interface"
    if not (address.is_private or address.is_loopback):
        return f"{where}: dashboard host {host} is a public address"
    return None


# ---------------------------------------------------------------- launcher ---


def _commands(config: dict[str, Any], key: str) -> list[str]:
    return [str(c) for c in config.get(key) or []]


def launcher_problems(config: dict[str, Any]) -> list[str]:
    """Problems of a Ray cluster-launcher config (aws.yaml, gcp.yaml)."""
    problems = [
        f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(ray_schema()).iter_errors(config)
    ]
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type"):
        if key not in config:
            problems.append(f"missing required key {key!r}")
    types = config.get("available_node_types") or {}
    head = config.get("head_node_type")
    if head not in types:
        problems.append(f"head_node_type {head!r} is not one of {sorted(types)}")
    elif (types[head].get("resources") or {}).get("CPU") != 0:
        problems.append("head node type must advertise resources {CPU: 0} (no tasks on the head)")
    workers = {name: t for name, t in types.items() if name != head}
    if not any(
        t.get("max_workers", 0) > 0 and t.get("min_workers", 0) == 0 for t in workers.values()
    ):
        problems.append("no autoscaling worker type (min_workers 0, max_workers > 0)")
    problems += _gpu_problems(config.get("provider", {}).get("type"), workers)
    problems += _network_problems(config)

    setup = _commands(config, "setup_commands")
    if not any(re.search(r"pip install .*cmcl", c) for c in setup):
        problems.append("setup_commands do not pip install cmcl")
    if not any(re.search(r"pip install .*torch", c) for c in setup):
        problems.append("setup_commands do not pip install torch")
    if not any("mount" in c and STORAGE_PATH in c for c in setup):
        problems.append(f"setup_commands do not mount shared storage at {STORAGE_PATH}")

    head_start = _commands(config, "head_start_ray_commands")
    worker_start = _commands(config, "worker_start_ray_commands")
    if not any("ray start --head" in c for c in head_start):
        problems.append("head_start_ray_commands has no 'ray start --head'")
    elif not any(re.search(r"--num-cpus[= ]0\b", c) for c in head_start):
        problems.append("head 'ray start' lacks --num-cpus=0")
    if not any(re.search(r"ray start .*--address", c) for c in worker_start):
        problems.append("worker_start_ray_commands has no 'ray start --address'")
    for command in head_start + worker_start:
        if "ray start" in command and "RAY_AUTH_MODE=token" not in command:
            problems.append(f"'ray start' without RAY_AUTH_MODE=token: {command[:60]}...")
    for command in head_start:
        if "ray start --head" in command:
            host = re.search(r"--dashboard-host[= ](\S+)", command)
            problem = dashboard_host_problem(host and host.group(1), "head_start_ray_commands")
            if problem:
                problems.append(problem)
    if not any(str(k).endswith(".ray/auth_token") for k in config.get("file_mounts") or {}):
        problems.append("file_mounts do not put the auth token at ~/.ray/auth_token on the nodes")
    return problems


def _gpu_problems(provider: str | None, workers: dict[str, Any]) -> list[str]:
    def has_gpu(node_type: dict[str, Any]) -> bool:
        if (node_type.get("resources") or {}).get("GPU", 0) > 0:
            return True
        instance = str(node_type.get("node_config", {}).get("InstanceType", ""))
        return provider == "aws" and re.match(r"^(g\d|p\d)", instance) is not None

    if not any(has_gpu(t) for t in workers.values()):
        return ["no GPU worker type"]
    return []


def _network_problems(config: dict[str, Any]) -> list[str]:
    """Nodes must not land in a network or security group that is open to the world."""
    problems = []
    provider = config.get("provider", {})
    for rule in (provider.get("security_group") or {}).get("IpPermissions", []):
        cidrs = {r.get("CidrIp") for r in rule.get("IpRanges", [])}
        cidrs |= {r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])}
        is_ssh = rule.get("FromPort") == 22 and rule.get("ToPort") == 22
        if cidrs & OPEN_CIDRS and not is_ssh:
            problems.append(f"security_group rule open to the internet: {rule}")
    for name, node_type in (config.get("available_node_types") or {}).items():
        node_config = node_type.get("node_config", {})
        if provider.get("type") == "aws" and not node_config.get("SecurityGroupIds"):
            problems.append(
                f"{name}: no SecurityGroupIds, so Ray creates a group with SSH open to 0.0.0.0/0"
            )
        if provider.get("type") == "gcp" and not node_config.get("networkInterfaces"):
            problems.append(f"{name}: no networkInterfaces, so Ray picks the default network")
    return problems


# ---------------------------------------------------------------- storage ---


def storage_problems(docs: list[dict[str, Any]]) -> list[str]:
    claims = [d for d in docs if d.get("kind") == "PersistentVolumeClaim"]
    if len(claims) != 1:
        return [f"expected one PersistentVolumeClaim, found {len(claims)}"]
    modes = claims[0].get("spec", {}).get("accessModes", [])
    if modes != ["ReadWriteMany"]:
        return [f"PVC {claims[0]['metadata']['name']} accessModes {modes}, need [ReadWriteMany]"]
    return []


# ------------------------------------------------------------- raw text ---


def text_problems(path: Path, text: str) -> list[str]:
    """Line checks on any config file: auth never disabled, no all-interfaces dashboard."""
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue  # prose may name the bad values to explain them
        where = f"{path.name}:{number}"
        if re.search(r"RAY_AUTH_MODE\W{0,3}(=|:|value:)\s*[\"']?disabled", line):
            problems.append(f"{where}: token authentication disabled")
        if re.search(r"\bmode:\s*[\"']?disabled", line):
            problems.append(f"{where}: authOptions mode disabled")
        if re.search(r"dashboard[-_]host\W{1,3}(0\.0\.0\.0|::|\[::\])", line):
            problems.append(f"{where}: dashboard bound to all interfaces")
        if path.suffix in (".yaml", ".yml") and "0.0.0.0" in line:
            problems.append(f"{where}: 0.0.0.0 in a config value")
    return problems
