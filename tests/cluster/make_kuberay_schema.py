"""Writes the JSON schema the config tests check KubeRay manifests against.

Input: KubeRay's generated RayJob CRD (ray-operator/config/crd/bases/ray.io_rayjobs.yaml
of a release tag); its `rayClusterSpec` is the RayCluster CRD's `spec` as well, so one
file covers raycluster.yaml and rayjob.yaml. Output: the v1 openAPIV3Schema with the
descriptions dropped, every object with listed properties closed to other keys (as
`kubectl apply`'s default strict field validation rejects unknown fields), and subtrees
that repeat (pod templates, containers) stored once under `definitions`.

    git -C kuberay show v1.6.0:ray-operator/config/crd/bases/ray.io_rayjobs.yaml > ray.io_rayjobs.yaml
    python tests/cluster/make_kuberay_schema.py ray.io_rayjobs.yaml v1.6.0 "$(git -C kuberay rev-parse v1.6.0)" \
        > tests/cluster/kuberay_rayjob_v1.schema.json
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

_MIN_SHARED = 1000  # characters of JSON: smaller repeats stay inline


def _key(node: Any) -> str:
    return json.dumps(node, sort_keys=True, separators=(",", ":"))


def _closed(schema: dict[str, Any]) -> dict[str, Any]:
    """A schema node without descriptions, closed to keys it does not list."""
    out = {k: v for k, v in schema.items() if k != "description"}
    if "properties" in out:
        out["properties"] = {name: _closed(sub) for name, sub in out["properties"].items()}
        if "additionalProperties" not in out and not out.get(
            "x-kubernetes-preserve-unknown-fields"
        ):
            out["additionalProperties"] = False
    for word in ("items", "additionalProperties"):
        if isinstance(out.get(word), dict):
            out[word] = _closed(out[word])
    for word in ("anyOf", "allOf", "oneOf"):
        if word in out:
            out[word] = [_closed(sub) for sub in out[word]]
    return out


def _subtrees(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _subtrees(value)
    elif isinstance(node, list):
        for value in node:
            yield from _subtrees(value)


def _replace(node: Any, target: str, ref: dict[str, str]) -> Any:
    if isinstance(node, dict):
        if _key(node) == target:
            return dict(ref)
        return {k: _replace(v, target, ref) for k, v in node.items()}
    if isinstance(node, list):
        return [_replace(v, target, ref) for v in node]
    return node


def shared_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The same schema with each repeated subtree stored once under `definitions`."""
    doc: dict[str, Any] = {"root": schema, "definitions": {}}
    while True:
        counts = Counter(_key(n) for n in _subtrees(doc) if "$ref" not in n)
        repeated = [k for k, c in counts.items() if c > 1 and len(k) >= _MIN_SHARED]
        if not repeated:
            break
        target = max(repeated, key=len)
        name = f"s{len(doc['definitions'])}"
        ref = {"$ref": f"#/definitions/{name}"}
        doc = _replace(doc, target, ref)
        doc["definitions"][name] = json.loads(target)
    return {**doc["root"], "definitions": doc["definitions"]}


def main(crd_path: str, tag: str, commit: str) -> None:
    crd = yaml.safe_load(Path(crd_path).read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema = shared_schema(_closed(version["schema"]["openAPIV3Schema"]))
    schema["$comment"] = (
        f"ray-project/kuberay {tag} ({commit}) ray-operator/config/crd/bases/"
        f"{Path(crd_path).name}, kind {crd['spec']['names']['kind']} v1; "
        "made by tests/cluster/make_kuberay_schema.py"
    )
    json.dump(schema, sys.stdout, sort_keys=True, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
