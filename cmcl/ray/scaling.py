"""Worker layouts: what a run's config allows and what a Ray cluster can host (no Ray import).

The CLI calls these before it starts or joins Ray, so that a layout that
cannot work fails in a second with a message saying what would.
"""

from __future__ import annotations

from cmcl.config import RunConfig

PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


def check_scaling(
    config: RunConfig, *, workers: int, gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0
) -> None:
    """Raise ValueError for a worker layout that cannot run this config."""
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if gpus_per_worker < 0 or cpus_per_worker <= 0:
        raise ValueError(
            f"gpus_per_worker must be >= 0 and cpus_per_worker > 0, "
            f"got {gpus_per_worker} and {cpus_per_worker}"
        )
    if 0 < gpus_per_worker < 1 and workers > 1:
        raise ValueError(
            f"gpus_per_worker={gpus_per_worker} with {workers} workers would put several "
            "NCCL ranks on one GPU, which NCCL refuses; use whole GPUs (>= 1) per worker"
        )
    if gpus_per_worker == 0 and config.train.device.startswith("cuda"):
        raise ValueError(f"train.device={config.train.device} needs gpus_per_worker > 0")
    if gpus_per_worker > 0 and config.train.device == "cpu":
        raise ValueError("train.device=cpu with gpus_per_worker > 0; use device auto or cuda")
    for split, batch in (
        ("source", config.train.batch_source),
        ("target", config.train.batch_target),
    ):
        if batch % workers:
            valid = [n for n in range(1, batch + 1) if batch % n == 0]
            raise ValueError(
                f"global batch train.batch_{split}={batch} is not divisible by {workers} "
                f"workers (each worker takes an equal shard); valid worker counts: {valid}"
            )


def missing_resources(
    available: dict[str, float], *, workers: int, gpus_per_worker: float, cpus_per_worker: float
) -> str | None:
    """Why ``available`` cannot host the workers right now (None if it can)."""
    need = {"CPU": workers * cpus_per_worker, "GPU": workers * gpus_per_worker}
    short = [f"{need[k]:g} {k}" for k in need if need[k] > available.get(k, 0.0)]
    if not short:
        return None
    have = ", ".join(f"{available.get(k, 0.0):g} {k}" for k in need)
    return f"{workers} workers need {' and '.join(short)}; the Ray cluster has {have}"
