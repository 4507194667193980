"""Ray Train adapter: the engine on N DDP workers, checkpointed to shared storage, restartable.

``fit_distributed(config, workers=N, storage=..., name=...)`` runs
:func:`cmcl.engine.fit` in every worker of a ``ray.train.torch.TorchTrainer``
(Ray 2.60, Train V2). Ray Train's TorchConfig sets up the process group
(gloo on CPU, nccl on GPU); from there the engine does the distributed work
itself: DDP, each worker's shard of the deterministic global batch, gathered
evaluation and all-gathered memory-bank updates (docs/distributed.md).

This module adds what only Ray knows about:

* every evaluation goes to ``ray.train.report`` on every rank; rank 0 passes
  the checkpoint the engine just wrote, which Ray persists as
  ``<storage>/<name>/checkpoints/step_XXXXXXX``;
* a restarted worker group (``FailureConfig(max_failures)``) and a re-run
  with the same ``(storage, name)`` resume from ``ray.train.get_checkpoint()``;
* rank 0 writes the engine's run files to a scratch directory on its node and
  uploads them to ``<storage>/<name>/`` (cmcl/ray/storage.py), because its
  local disk may be gone after the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
from ray.train import (
    Checkpoint,
    CheckpointConfig,
    FailureConfig,
    LoggingConfig,
    ScalingConfig,
)
from ray.train.torch import TorchConfig, TorchTrainer

from cmcl.config import RunConfig
from cmcl.engine import NonFiniteLossError, NonFiniteMetricError, Reporter, fit
from cmcl.engine.checkpoint import CorruptCheckpointError, checkpoint_problem, latest_checkpoint
from cmcl.engine.reporting import FAILURE_FILE, write_failure
from cmcl.engine.resume import check_resume_settings, recorded_config
from cmcl.ray.scaling import PLACEMENTS, check_scaling, missing_resources
from cmcl.ray.session import ray_session
from cmcl.ray.storage import CHECKPOINTS, RunLocation, record_config
from cmcl.study.execute import RunStopped

log = logging.getLogger(__name__)

SCRATCH = "cmcl-run"
STOP_FILE = "STOP"
"""Written in a study run's directory when the study stops the run (ASHA, its trial ended):
the workers stop after their next evaluation."""
"""Rank 0's local run directory, under Ray's per-run working directory on its node."""

TrainLoop = Callable[[dict[str, Any]], Any]


# -- the worker side -------------------------------------------------------------------


class RayTrainReporter(Reporter):
    """Engine hooks -> ``ray.train.report`` on every rank; rank 0 also uploads run files.

    Args:
        location: ``<storage>/<name>`` (given on rank 0 only: it uploads).
        scratch: the engine's local run directory on this node.
        progress: rank 0 prints one line per evaluation (reaches the driver's stderr).
    """

    def __init__(
        self,
        *,
        location: RunLocation | None,
        scratch: Path,
        progress: bool,
        stop_marker: RunLocation | None = None,
    ) -> None:
        self.location = location
        self.stop_marker = stop_marker
        self.scratch = scratch
        self.progress = progress
        self.total = 0

    def _say(self, text: str) -> None:
        if self.progress and self.location is not None:
            print(f"[cmcl] {text}", file=sys.stderr, flush=True)

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        self.total = total_steps
        verb = f"resuming at step {done_steps}" if done_steps else "starting"
        self._say(f"{verb} of {total_steps}")

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        if self.location is not None:
            self.location.upload(self.scratch / "metrics.parquet")
        persisted = None if checkpoint is None else Checkpoint.from_directory(checkpoint)
        # Same name as the engine's own directory: <storage>/<name> is then a run directory.
        name = None if checkpoint is None else f"{CHECKPOINTS}/{checkpoint.name}"
        ray.train.report(dict(metrics), checkpoint=persisted, checkpoint_dir_name=name)
        if self.stop_marker is not None and self._stop_requested():
            raise RunStopped(f"stopped by the study after step {metrics['global_step']}")
        self._say(
            f"{metrics['stage']} step {metrics['step']} ({metrics['global_step']}/{self.total}): "
            f"target acc {metrics['target_acc']:.2f} loss {metrics.get('loss_total', float('nan')):.4f}"
            + (" [checkpoint]" if checkpoint is not None else "")
        )

    def _stop_requested(self) -> bool:
        """Whether the study asked the run to stop (:data:`STOP_FILE` in its directory): rank
        0 reads it and every rank learns its answer, so all ranks stop at the same step."""
        from cmcl import dist

        assert self.stop_marker is not None
        asked = self.stop_marker.exists(STOP_FILE) if dist.rank() == 0 else False
        return bool(dist.broadcast_object(asked))

    def on_end(self, summary: dict[str, Any], *, is_chief: bool) -> None:
        if self.location is None:
            return
        for name in ("metrics.parquet", "features.parquet", "model.pt", "summary.json"):
            if (self.scratch / name).is_file():
                self.location.upload(self.scratch / name)


def _newest(checkpoint: Checkpoint | None, run: RunLocation) -> Checkpoint | None:
    """The newest complete checkpoint of ``run``: Ray's, or a newer one in the run's storage.

    Ray restores the newest checkpoint its controller registered; one that rank 0 had
    written to storage when a worker died, before every worker had reported it, is
    complete on storage but unknown to Ray. Restarting from Ray's would repeat the
    steps between the two. Every rank lists the same storage and chooses alike.
    """
    names = run.checkpoint_names()
    known = None if checkpoint is None else Path(checkpoint.path).name
    if names and (known is None or names[-1] > known):
        if known is not None:
            log.warning(
                "resuming from %s/%s/%s, newer than Ray's %s",
                run.uri,
                CHECKPOINTS,
                names[-1],
                known,
            )
        return Checkpoint(f"{run.fs_path}/{CHECKPOINTS}/{names[-1]}", filesystem=run.fs)
    return checkpoint


@contextlib.contextmanager
def _local_copy(checkpoint: Checkpoint | None) -> Iterator[Path | None]:
    """A local directory holding ``checkpoint`` (downloaded if it lives in an object store)."""
    if checkpoint is None:
        yield None
        return
    with checkpoint.as_directory() as path:
        yield Path(path)


@contextlib.contextmanager
def _intact(
    copied: Path | None, checkpoint: Checkpoint | None, run: RunLocation
) -> Iterator[Path | None]:
    """``copied`` if it is an intact checkpoint; else the newest intact older one of ``run``.

    Ray restores its newest checkpoint whatever state its files are in; a damaged
    one (a flipped bit, a truncated upload) is passed over, saying so, as the
    in-process engine does (cmcl.engine.checkpoint.latest_checkpoint). Every rank
    makes the same choice: they read the same files.
    """
    problem = None if copied is None else checkpoint_problem(copied)
    if problem is None:
        yield copied
        return
    assert checkpoint is not None
    damaged = Path(checkpoint.path).name
    for name in reversed(run.checkpoint_names()):
        if name >= damaged:
            continue
        older = Checkpoint(f"{run.fs_path}/{CHECKPOINTS}/{name}", filesystem=run.fs)
        with older.as_directory() as path:
            if checkpoint_problem(Path(path)) is None:
                log.warning(
                    "%s; resuming from %s/%s/%s instead", problem, run.uri, CHECKPOINTS, name
                )
                yield Path(path)
                return
    raise CorruptCheckpointError(
        f"{problem}, and {run.uri}/{CHECKPOINTS} holds no older intact checkpoint; "
        "start the run again under another name"
    )


def train_worker(payload: dict[str, Any]) -> dict[str, Any] | None:
    """The function every Ray Train worker runs; returns the summary on rank 0.

    ``payload``: ``config`` (RunConfig dict), ``storage``, ``name``, ``resume``
    (a checkpoint directory every worker can read, used when Ray has none yet)
    and ``progress``.
    """
    context = ray.train.get_context()
    rank = context.get_world_rank()
    scratch = Path(context.get_storage().local_working_directory) / SCRATCH
    if rank == 0:
        # Left over from a killed attempt on this node: its newer checkpoints
        # would make the engine prune the ones this attempt writes.
        shutil.rmtree(scratch, ignore_errors=True)
    if torch.cuda.is_available() and payload["gpus_per_worker"] > 0:
        torch.cuda.set_device(ray.train.torch.get_device())
    config = RunConfig.from_dict(payload["config"])
    location = RunLocation(payload["storage"], payload["name"]) if rank == 0 else None
    run = RunLocation(payload["storage"], payload["name"])
    reporter = RayTrainReporter(
        location=location,
        scratch=scratch,
        progress=payload["progress"],
        stop_marker=run if payload.get("stoppable") else None,
    )
    checkpoint = _newest(ray.train.get_checkpoint(), run)
    with _local_copy(checkpoint) as copied, _intact(copied, checkpoint, run) as restored:
        resume = str(restored) if restored is not None else payload["resume"]
        try:
            result = fit(config.replace({"out": str(scratch), "resume": resume}), reporter)
        except NonFiniteLossError as error:
            # Deterministic: a restart would hit it again. Every rank sees it (the
            # losses are all-reduced), so all return and the driver raises it.
            failed = {"non_finite": str(error), "error": type(error).__name__}
            return failed if rank == 0 else None
        except RunStopped as stopped:
            # Every rank stops at the same evaluation (the marker's answer is broadcast).
            return {"stopped": str(stopped)} if rank == 0 else None
    if rank != 0:
        return None
    shutil.rmtree(scratch, ignore_errors=True)
    return result.summary


# -- the driver side -------------------------------------------------------------------


def _initial_resume(config: RunConfig) -> str | None:
    """``config.resume`` as a directory (``"auto"``: the newest under ``config.out``)."""
    if config.resume == "auto":
        found = latest_checkpoint(config.out) if config.out else None
        return None if found is None else str(Path(found).resolve())
    return None if config.resume is None else str(Path(config.resume).resolve())


def _check_local_gpus(workers: int, gpus_per_worker: float) -> None:
    """Before a private Ray starts: this machine has the GPUs the workers ask for."""
    need, have = math.ceil(workers * gpus_per_worker), torch.cuda.device_count()
    if need > have:
        raise ValueError(
            f"{gpus_per_worker:g} GPUs per worker x {workers} workers needs {need} GPUs; this "
            f"machine has {have} (torch.cuda.device_count()); join a cluster with GPUs "
            "(--address), or train on CPUs (no GPUs per worker)"
        )


def fit_distributed(
    config: RunConfig,
    *,
    workers: int,
    gpus_per_worker: float = 0.0,
    storage: str,
    name: str,
    max_failures: int | None = None,
    callbacks: list | None = None,
    cpus_per_worker: float = 1.0,
    placement_strategy: str = "PACK",
    progress: bool = False,
    stoppable: bool = False,
    address: str | None = None,
    quiet: bool = False,
    train_loop: TrainLoop = train_worker,
) -> dict[str, Any]:
    """Train one run on ``workers`` Ray Train workers; return its summary (as summary.json).

    The run directory is ``<storage>/<name>/`` (:mod:`cmcl.ray.storage`);
    running again with the same ``storage`` and ``name`` resumes it from its
    newest checkpoint (or, if it finished, just rewrites the summary). When
    ``config.out`` is set, the result files (not the checkpoints) are also
    copied there at the end. ``config.resume`` (a checkpoint directory every
    worker can read, or ``"auto"`` for the newest under ``config.out``) seeds a
    run that has no Ray checkpoint yet. If Ray is not initialised, a private
    local instance is started for the call.

    Args:
        config: the run; ``train.batch_source`` / ``batch_target`` are the global
            batches and must be divisible by ``workers``.
        workers: Ray Train workers (DDP ranks).
        gpus_per_worker: 0 for CPU workers (gloo); >= 1 per worker for nccl.
        storage: a directory every node can reach (NFS) or a URI (``s3://...``).
        name: run name, one directory name; fixed names make retries resume.
        max_failures: worker-group restarts before the run fails (a lost worker or
            node: the group restarts from the newest checkpoint); default
            ``config.train.restarts``.
        callbacks: ``ray.train.UserCallback`` objects (e.g. Tune's TuneReportCallback).
        cpus_per_worker: CPUs reserved per worker.
        placement_strategy: Ray placement group strategy (PACK fills nodes first).
        progress: print one line per evaluation from rank 0.
        stoppable: the workers stop after an evaluation once :data:`STOP_FILE` is in the
            run's directory (a study stopping the run); the call then raises RunStopped.
        address: the Ray cluster to join when Ray is not initialised yet (None: a
            private local instance for the call, :func:`cmcl.ray.session.ray_session`).
        quiet: Ray's messages about lost nodes become one line each (cmcl/ray/quiet.py).
        train_loop: the per-worker function (tests wrap :func:`train_worker`).

    Raises:
        ValueError: a layout that cannot work (batch not divisible, not enough
            resources in a private instance).
        cmcl.engine.resume.ResumeSettingsError: ``<storage>/<name>`` holds a run
            recorded with other settings (operational keys aside).
        NonFiniteLossError: a loss became NaN/inf (not retried: it is deterministic).
        ray.train.TrainingFailedError: the workers failed more than ``max_failures`` times.
    """
    check_scaling(
        config, workers=workers, gpus_per_worker=gpus_per_worker, cpus_per_worker=cpus_per_worker
    )
    if placement_strategy not in PLACEMENTS:
        raise ValueError(
            f"placement_strategy must be one of {PLACEMENTS}, got {placement_strategy!r}"
        )
    location = RunLocation(storage, name)
    if config.train.device == "auto" and gpus_per_worker == 0:
        # A CPU worker on a GPU node must not pick the GPU it did not reserve.
        config = config.replace({"train.device": "cpu"})
    payload = {
        "config": config.replace({"out": None, "resume": None}).to_dict(),
        "storage": location.storage,
        "name": location.name,
        "resume": _initial_resume(config),
        "progress": progress,
        "gpus_per_worker": gpus_per_worker,
        "stoppable": stoppable,
    }
    if max_failures is None:
        max_failures = config.train.restarts
    source = f"{location.uri}/config.json"
    try:
        recorded = location.read_json("config.json")
    except ValueError as error:
        raise ValueError(
            f"{source}: not valid JSON ({error}); restore it or use another name"
        ) from None
    if recorded is None:
        record_config(location, config)
    else:
        # The run's config.json stays as written: a re-run may change only operational keys.
        check_resume_settings(recorded_config(recorded, source=source), config, source=source)
    private = address is None and not ray.is_initialized()
    if private and gpus_per_worker > 0:
        _check_local_gpus(workers, gpus_per_worker)
    with ray_session(address, quiet=quiet) as available:
        problem = missing_resources(
            available,
            workers=workers,
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
        )
        if problem and private:
            raise ValueError(f"{problem} (this machine); lower the workers or GPUs per worker")
        if problem:
            log.warning("%s; the run waits until the cluster grows", problem)
        use_gpu = gpus_per_worker > 0
        resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if use_gpu else {})}
        trainer = TorchTrainer(
            train_loop,
            train_loop_config=payload,
            torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
            scaling_config=ScalingConfig(
                num_workers=workers,
                use_gpu=use_gpu,
                resources_per_worker=resources,
                placement_strategy=placement_strategy,
            ),
            run_config=ray.train.RunConfig(
                name=location.name,
                storage_path=location.storage,
                failure_config=FailureConfig(max_failures=max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=config.train.keep_checkpoints),
                callbacks=callbacks,
                # Ray's per-report INFO lines would drown the run's own progress lines.
                logging_config=LoggingConfig(log_level="WARNING"),
            ),
        )
        result = trainer.fit()
    summary = result.return_value
    if isinstance(summary, dict) and "stopped" in summary:
        raise RunStopped(summary["stopped"])
    if isinstance(summary, dict) and "non_finite" in summary:
        kind = (
            NonFiniteMetricError
            if summary.get("error") == NonFiniteMetricError.__name__
            else NonFiniteLossError
        )
        error = kind(summary["non_finite"])
        # Rank 0 wrote its record in its scratch directory, which is never uploaded.
        record = {"error": kind.__name__, "message": str(error)}
        location.write_bytes(FAILURE_FILE, (json.dumps(record, indent=1) + "\n").encode())
        if config.out is not None:
            write_failure(Path(config.out), error)
        raise error
    if summary is None:
        raise RuntimeError(f"the run {location.uri} ended without a summary from rank 0")
    location.remove(FAILURE_FILE)  # an earlier attempt's record: the run has now finished
    if config.out is not None:
        location.download_results(Path(config.out))
    return summary
