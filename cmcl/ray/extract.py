"""Feature extraction across a Ray cluster: one actor per GPU (or CPU slot), shards handed out.

Each actor builds the frozen I3D once (cmcl.data.extract.ShardWorker) and
computes the shards it is given; the driver hands out shards as actors free
up (two queued per actor, so an actor never waits for the driver), writes
each returned part file, and assembles the store (cmcl.data.store_parts).
Workers read frames from ``settings.root``, so on a multi-node cluster the
frames must be on storage every node mounts at the same path; only the
driver writes the store.

A failed actor is restarted and its shard retried (``max_restarts`` /
``max_task_retries``); if a shard still fails, the error ends the run with
every finished part kept, and a re-run computes only what is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from cmcl.data.extract import (
    ExtractionReport,
    ExtractSettings,
    Plan,
    Shard,
    ShardMapper,
    ShardWorker,
    extract_store,
)
from cmcl.ray.session import ray_session

RETRIES = 2
QUEUED_PER_ACTOR = 2


class _ShardActor:
    """Holds one ShardWorker (the I3D stays loaded between shards)."""

    def __init__(self, settings: ExtractSettings, loader_workers: int) -> None:
        self.worker = ShardWorker(settings, loader_workers=loader_workers)

    def run(self, shard: Shard, segments) -> pa.Table:
        return self.worker.run(shard, segments)


def actor_layout(
    resources: dict[str, float],
    *,
    gpus_per_worker: float | None,
    cpus_per_worker: float | None,
    max_workers: int | None = None,
) -> tuple[int, float, float]:
    """(number of actors, CPUs and GPUs per actor) for a cluster's resources.

    GPUs present: ``gpus_per_worker`` defaults to 1 and CPUs are split evenly
    between the GPU actors (they decode the frames); otherwise one actor per
    ``cpus_per_worker`` (default 1) CPUs.
    """
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if gpus >= 1 else 0.0
    if gpus_per_worker < 0 or (cpus_per_worker is not None and cpus_per_worker <= 0):
        raise ValueError(
            f"gpus_per_worker must be >= 0 and cpus_per_worker > 0; got {gpus_per_worker}, "
            f"{cpus_per_worker}"
        )
    if gpus_per_worker > 0:
        if gpus < gpus_per_worker:
            raise ValueError(f"gpus_per_worker={gpus_per_worker} but the cluster has {gpus} GPUs")
        actors = int(gpus // gpus_per_worker)
        if cpus_per_worker is None:
            cpus_per_worker = max(1.0, float(int(cpus // actors)))
    else:
        cpus_per_worker = 1.0 if cpus_per_worker is None else cpus_per_worker
        actors = int(cpus // cpus_per_worker)
    if actors < 1:
        raise ValueError(
            f"the cluster ({resources}) cannot fit one worker of {cpus_per_worker} CPUs"
        )
    if max_workers is not None:
        actors = max(1, min(actors, max_workers))
    return actors, cpus_per_worker, gpus_per_worker


def ray_mapper(actors: list) -> ShardMapper:
    """A :data:`cmcl.data.extract.ShardMapper` over started actors."""

    def mapper(plan: Plan, shards: list[Shard]) -> Iterator[tuple[Shard, pa.Table]]:
        import ray

        queue = list(shards)
        running: dict = {}
        load = {i: 0 for i in range(len(actors))}

        def submit() -> None:
            for i, actor in enumerate(actors):
                while queue and load[i] < QUEUED_PER_ACTOR:
                    shard = queue.pop(0)
                    running[actor.run.remote(shard, plan.segments(shard))] = (shard, i)
                    load[i] += 1

        submit()
        while running:
            [ready], _ = ray.wait(list(running), num_returns=1)
            shard, i = running.pop(ready)
            load[i] -= 1
            table = ray.get(ready)
            submit()
            yield shard, table

    return mapper


def extract_on_ray(
    settings: ExtractSettings,
    store: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float | None = None,
    max_workers: int | None = None,
    progress: bool = True,
) -> ExtractionReport:
    """:func:`cmcl.data.extract.extract_store` with the shards computed by Ray actors.

    Args:
        address: a running cluster (``auto``, ``ray://host:10001``); None starts a
            private local Ray with ``num_cpus`` CPUs (default: all).
        gpus_per_worker: GPUs per actor (default 1 when the cluster has GPUs, else 0;
            fractions put several actors on one GPU).
        cpus_per_worker: CPUs per actor; all but one of them run DataLoader workers
            decoding frames unless ``settings.loader_workers`` says otherwise.
        max_workers: at most this many actors.
    """
    with ray_session(address, num_cpus=num_cpus) as resources:
        # Imported once the session is up (a private Ray binds to loopback only if ray
        # was not imported before it: cmcl/ray/session.py).
        import ray

        count, cpus, gpus = actor_layout(
            resources,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            max_workers=max_workers,
        )
        # Auto inside an actor would size itself by the node's CPUs, not the actor's share.
        loader_workers = (
            settings.loader_workers if settings.loader_workers != -1 else max(0, int(cpus) - 1)
        )
        actor_class = ray.remote(
            num_cpus=cpus,
            num_gpus=gpus,
            max_restarts=RETRIES,
            max_task_retries=RETRIES,
        )(_ShardActor)
        created: list = []

        def mapper(plan: Plan, shards: list[Shard]):
            if not shards:
                return
            created.extend(
                actor_class.remote(plan.settings, loader_workers)
                for _ in range(min(count, len(shards)))
            )
            yield from ray_mapper(created)(plan, shards)

        try:
            return extract_store(settings, store, mapper=mapper, progress=progress)
        finally:
            for actor in created:
                ray.kill(actor)
