"""Shared by the Ray tests: a private Ray per module, and hooks that run inside Train workers.

Workers import this module by name (the private Ray puts this directory and
the project root on their PYTHONPATH), so the hooks below can be passed to
``fit_distributed(train_loop=...)`` with ``functools.partial``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# Private loopback instances only: token auth off, fast controller polling, no print patch.
RAY_ENV = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
    "RAY_TRAIN_ENABLE_PRINT_PATCH": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_AIR_NEW_OUTPUT": "0",
}


@contextlib.contextmanager
def ray_test_environment() -> Iterator[None]:
    saved = dict(os.environ)
    # A short path: Ray's unix sockets live under it and have a 107-byte limit.
    tmp = tempfile.mkdtemp(prefix="ray-raytrain-", dir="/tmp")
    os.environ.update(RAY_ENV)
    os.environ["RAY_TMPDIR"] = tmp
    paths = [str(ROOT), str(HERE), os.environ.get("PYTHONPATH", "")]
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def private_ray(num_cpus: int = 2) -> Iterator[None]:
    """A fresh local Ray (never someone else's cluster), shut down afterwards."""
    import ray

    with ray_test_environment():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            log_to_driver=True,
            logging_level="WARNING",
        )
        try:
            yield
        finally:
            ray.shutdown()


@contextlib.contextmanager
def private_cluster(nodes: int = 2, cpus_per_node: int = 1) -> Iterator[Any]:
    """A head with no CPUs and ``nodes`` worker nodes (separate raylets) on this machine."""
    import ray
    from ray.cluster_utils import Cluster

    with ray_test_environment():
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 0, "include_dashboard": False},
        )
        try:
            for _ in range(nodes):
                cluster.add_node(num_cpus=cpus_per_node)
            ray.init(address=cluster.address, log_to_driver=True, logging_level="WARNING")
            cluster.wait_for_nodes()
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


# -- hooks that run inside the Train workers ----------------------------------------------


def state_digest(module: Any, part: str) -> str:
    """sha256 over the tensors of ``module.state_dict()`` whose key contains ``part``."""
    digest = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        if part in key:
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def recording_loop(
    payload: dict[str, Any],
    *,
    record_dir: str,
    pause_rank: int | None = None,
    pause_at: int | None = None,
) -> Any:
    """``train_worker`` that also records, per worker process, where it ran and its state.

    Writes ``start-rank<r>-<pid>.json`` (pid, node, checkpoint it resumed from)
    and ``digests-rank<r>-<pid>.json`` (after every optimiser step of the
    adaptation stage, digests of the banks and of all parameters). On the first
    attempt only, worker ``pause_rank`` stops after global step ``pause_at``
    and writes ``paused.json`` with its pid, so that the test can kill it.
    """
    import ray
    import ray.train

    from cmcl.methods import method_class
    from cmcl.ray import train as adapter

    record = Path(record_dir)
    rank = ray.train.get_context().get_world_rank()
    checkpoint = ray.train.get_checkpoint()
    start = {
        "rank": rank,
        "pid": os.getpid(),
        "node": ray.get_runtime_context().get_node_id(),
        "checkpoint": None if checkpoint is None else Path(checkpoint.path).name,
    }
    (record / f"start-rank{rank}-{os.getpid()}.json").write_text(json.dumps(start))

    digests: list[dict[str, Any]] = []
    cls = method_class(payload["config"]["method"]["name"])
    original_after_step = cls.after_step

    def after_step(self, result, ctx):
        original_after_step(self, result, ctx)
        digests.append(
            {
                "stage": ctx.stage,
                "step": ctx.step + 1,
                "banks": state_digest(self, "banks."),
                "parameters": state_digest(self, "model."),
            }
        )

    cls.after_step = after_step
    if pause_rank == rank and not (record / "killed").exists():
        original_on_step = adapter.RayTrainReporter.on_step

        def on_step(self, *, global_step: int) -> None:
            original_on_step(self, global_step=global_step)
            if global_step == pause_at:
                (record / "paused.json").write_text(json.dumps({"pid": os.getpid()}))
                time.sleep(600)  # until the test kills this process

        adapter.RayTrainReporter.on_step = on_step
    try:
        return adapter.train_worker(payload)
    finally:
        out = record / f"digests-rank{rank}-{os.getpid()}.json"
        out.write_text(json.dumps(digests))


def read_records(record_dir: Path, prefix: str) -> list[dict[str, Any]]:
    """Every ``<prefix>-rank*-*.json`` as ``{"rank", "pid", "data"}``, in file-name order."""
    rows = []
    for path in sorted(record_dir.glob(f"{prefix}-rank*-*.json")):
        rank, pid = path.stem.split("-")[1:3]
        rows.append({"rank": int(rank[4:]), "pid": int(pid), "data": json.loads(path.read_text())})
    return rows
