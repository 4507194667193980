"""What a study's runs ask of a Ray cluster, and how many of them it holds at once (no Ray).

A study run is one process per worker, each with ``cpus_per_worker`` CPUs and
``gpus_per_worker`` GPUs. A fraction of a GPU (e.g. 0.25) packs several
feature-mode runs of one worker on each GPU; :func:`check_resources` refuses
the layouts where that cannot work (docs/studies.md, "Resources and
concurrency").

The count follows Ray's own accounting, in integers: Ray keeps resource
quantities in fixed point, in steps of 1/10,000, and gives a fractional GPU
request a share of one GPU, never parts of two. So runs of 0.25 GPU fill a GPU
four to one exactly, runs of 0.3 pack three to a GPU (0.9), and runs of 0.4
pack two to a GPU: four on two GPUs, not five.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from cmcl.study.spec import Resources, StudySpec

RESOURCE_UNIT = 10_000
"""Ray's resource quantities are multiples of 1 / RESOURCE_UNIT."""


def resource_units(value: float) -> int:
    """``value`` in Ray's fixed-point units (1 GPU -> 10,000)."""
    return round(value * RESOURCE_UNIT)


def _is_whole_units(value: float) -> bool:
    return abs(value * RESOURCE_UNIT - resource_units(value)) <= 1e-6


def video_mode_sources(
    spec: StudySpec, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> list[str]:
    """Where the study puts runs in video mode (``model.backbone: i3d``); empty in feature mode."""
    from cmcl.config import resolve_key

    backbone = ("model", "backbone")
    layers: list[tuple[str, Any]] = [("settings", spec.settings)]
    layers += [(f"variant {v.name}", v.settings) for v in spec.variants]
    layers += [
        (f"--root/--set for {benchmark}", tuple(settings.items()))
        for benchmark, settings in (overrides or {}).items()
    ]
    sources = [
        where
        for where, settings in layers
        if any(resolve_key(k) == backbone and v == "i3d" for k, v in settings)
    ]
    for param in spec.search:
        if resolve_key(param.key) == backbone and "i3d" in (param.values or ()):
            sources.append("search")
    return sources


def check_resources(
    spec: StudySpec, overrides: Mapping[str, Mapping[str, Any]] | None = None
) -> None:
    """Raise ValueError for a ``resources:`` block whose runs cannot use what they ask for.

    Refused: values that are not finite, negative GPUs or CPUs <= 0;
    quantities finer than Ray's 0.0001; more than one GPU per worker (a worker
    trains on one device, the others would idle); and a fraction of a GPU for
    a run with several DDP workers (NCCL refuses two ranks on one GPU) or in
    video mode (an I3D run on frame clips needs a whole GPU's memory).

    Args:
        overrides: per-benchmark command-line settings (``--root`` selects video mode).
    """
    res = spec.resources
    gpus, cpus = res.gpus_per_worker, res.cpus_per_worker
    for name, value, low in (("gpus_per_worker", gpus, 0.0), ("cpus_per_worker", cpus, None)):
        if not math.isfinite(value) or value < 0 or (low is None and value == 0):
            valid = "a finite number >= 0" if low is not None else "a finite number > 0"
            raise ValueError(f"resources.{name} must be {valid}; got {value!r}")
        if not _is_whole_units(value):
            near = max(round(value, 4), 1 / RESOURCE_UNIT)
            raise ValueError(
                f"resources.{name}={value!r}: Ray counts resources in steps of 0.0001; "
                f"use a multiple of it, e.g. {near:g}"
            )
    if gpus > 1:
        raise ValueError(
            f"resources.gpus_per_worker={gpus:g}: a worker trains on one GPU, the rest would "
            "idle; use gpus_per_worker: 1 with workers: N for N GPUs per run, or a fraction "
            "(e.g. 0.25) for several runs per GPU"
        )
    if 0 < gpus < 1 and res.workers > 1:
        raise ValueError(
            f"resources.gpus_per_worker={gpus:g} with workers={res.workers}: a fraction of a "
            "GPU packs one-worker runs together; the DDP workers of one run would share a "
            "GPU, which NCCL refuses. Use workers: 1 to pack runs, or gpus_per_worker: 1"
        )
    if 0 < gpus < 1:
        sources = video_mode_sources(spec, overrides)
        if sources:
            raise ValueError(
                f"resources.gpus_per_worker={gpus:g} in video mode (model.backbone: i3d, "
                f"from {', '.join(sources)}): a video-mode run needs a whole GPU's memory; "
                "packing runs on a GPU is for feature mode. Use gpus_per_worker: 1"
            )


def runs_held(
    cluster: Mapping[str, float], *, workers: int, cpus_per_worker: float, gpus_per_worker: float
) -> int:
    """How many runs of ``workers`` workers ``cluster`` (total resources) runs at once."""
    held = resource_units(cluster.get("CPU", 0.0)) // (resource_units(cpus_per_worker) * workers)
    gpu = resource_units(gpus_per_worker)
    if gpu > 0:
        whole, rest = divmod(resource_units(cluster.get("GPU", 0.0)), RESOURCE_UNIT)
        if gpu <= RESOURCE_UNIT:
            # A fractional request is a share of one GPU: what is left on a GPU
            # after its last whole share is lost to this study.
            shares = whole * (RESOURCE_UNIT // gpu) + rest // gpu
        else:
            shares = whole // math.ceil(gpu / RESOURCE_UNIT)
        held = min(held, shares // workers)
    return held


def runs_at_once(nodes: Sequence[Mapping[str, float]], resources: Resources) -> int:
    """How many runs of ``resources`` the nodes (each its total resources) hold at once.

    A worker never spans two nodes; the workers of one multi-worker run may
    (Ray Train places them), so it counts worker slots over the nodes.
    """
    slots = sum(
        runs_held(
            node,
            workers=1,
            cpus_per_worker=resources.cpus_per_worker,
            gpus_per_worker=resources.gpus_per_worker,
        )
        for node in nodes
    )
    return slots // resources.workers


def describe_cluster(nodes: Sequence[Mapping[str, float]]) -> str:
    """``4 CPU, 1 GPU on 3 node(s)``."""
    totals = {k: sum(float(n.get(k, 0.0)) for n in nodes) for k in ("CPU", "GPU")}
    return ", ".join(f"{v:g} {k}" for k, v in totals.items()) + f" on {len(nodes)} node(s)"


def describe_run(resources: Resources) -> str:
    """What one run asks, in words: ``1 CPU + 0.25 GPU (1 worker)``."""
    text = f"{resources.cpus_per_worker * resources.workers:g} CPU"
    if resources.gpus_per_worker:
        text += f" + {resources.gpus_per_worker * resources.workers:g} GPU"
    plural = "s" if resources.workers > 1 else ""
    return text + f" ({resources.workers} worker{plural})"
