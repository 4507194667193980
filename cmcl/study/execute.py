"""One run of a study, in the process that trains it: the engine, its files, its events.

The driver hands a :class:`RunJob` to a worker (cmcl/ray/executor.py) which
calls :func:`execute_run`; the run reports to the driver through ``emit``:

* ``{"kind": "started", "done_steps", "total_steps"}`` when training starts
  (``done_steps`` > 0: it continues from a checkpoint);
* ``{"kind": "evaluation", "index", "row"}`` for every evaluation (1-based
  ``index``; a restarted run first sends again the evaluations up to its
  checkpoint, which the driver already has: it keeps one row per index);
* ``{"kind": "finished", "summary", "history", "has_features", "has_weights",
  "extra"}`` at the end, with the run's whole history.

The run's directory is ``<study>/runs/<run_id>``. On a local or shared
filesystem the engine writes there directly. In an object store the engine
writes to a scratch directory on the worker's node, and :class:`RunFiles`
uploads what it writes (the metrics after every evaluation, each checkpoint,
the final files) and, before a restart, downloads the newest checkpoint.
Nothing here imports Ray.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.config import RunConfig
from cmcl.engine.reporting import Reporter
from cmcl.filestore import FileStore, is_uri
from cmcl.study.spec import Resources

log = logging.getLogger(__name__)

Emit = Callable[[dict[str, Any]], None]
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tensorboard"
RESULT_FILES = ("metrics.parquet", "summary.json", "features.parquet", "model.pt", "config.json")


class RunStopped(Exception):
    """The driver stopped the run (ASHA, or its trial ended): it ends at the next step."""


@dataclass(frozen=True)
class RunJob:
    """Everything a worker needs to run one run (crosses the process boundary pickled)."""

    study: str
    location: str
    """The run's directory: a local path or a URI."""
    trial_id: str
    run_id: str
    benchmark: str
    pair: str
    seed: int
    method: str
    variant: str | None
    config: RunConfig
    """The run's settings, ``out`` not set (the worker sets it)."""
    resources: Resources = field(default_factory=Resources)
    tracking: str | None = None
    """The study's tracker (cmcl/tracking): the run is tracked there too."""


class RunFiles:
    """Where the engine writes a run's files, and their way to the run's directory.

    Args:
        location: the run's directory (a local path or a URI).
        scratch: where the engine writes when ``location`` is an object store
            (default: a directory under the system's temporary directory).
    """

    def __init__(self, location: str, *, scratch: Path | None = None) -> None:
        self.store = FileStore(location)
        if not self.store.remote:
            self.out = self.store.local_path()
        else:
            digest = hashlib.sha1(location.encode()).hexdigest()[:12]
            base = scratch or Path(tempfile.gettempdir()) / "cmcl-runs"
            self.out = base / f"{digest}-{location.rsplit('/', 1)[-1]}"
        self.uploaded: set[str] = set()

    @property
    def remote(self) -> bool:
        return self.store.remote

    def fetch(self) -> None:
        """Before training: the newest complete checkpoint and the metrics from storage,
        unless this node's scratch directory already holds that checkpoint."""
        if not self.remote:
            return
        names = self.remote_checkpoints()
        if not names:
            return
        newest = names[-1]
        local = self.out / CHECKPOINTS / newest
        if not (local / "state.pt").exists():
            for entry in self.store.list(f"{CHECKPOINTS}/{newest}"):
                self.store.download(entry.path, self.out / entry.path)
        for name in ("metrics.parquet", "config.json"):
            self.store.download(name, self.out / name)
        self.uploaded.add(newest)

    def remote_checkpoints(self) -> list[str]:
        """Complete checkpoints on storage (meta.json is written after state.pt), oldest first."""
        found = {e.path.split("/")[1] for e in self.store.list(CHECKPOINTS, recursive=True)}
        return sorted(n for n in found if self.store.exists(f"{CHECKPOINTS}/{n}/meta.json"))

    def after_evaluation(self, checkpoint: Path | None, keep: int) -> None:
        """Upload the metrics, and the checkpoint just written (state first, meta last, so a
        checkpoint on storage with its meta.json is complete); drop those beyond ``keep``."""
        if not self.remote:
            return
        self.store.upload(self.out / "metrics.parquet", "metrics.parquet")
        if checkpoint is None or checkpoint.name in self.uploaded:
            return
        files = sorted(checkpoint.iterdir(), key=lambda p: p.name == "meta.json")
        for path in files:
            self.store.upload(path, f"{CHECKPOINTS}/{checkpoint.name}/{path.name}")
        self.uploaded.add(checkpoint.name)
        for old in self.remote_checkpoints()[:-keep]:
            self.store.delete_dir(f"{CHECKPOINTS}/{old}")

    def at_end(self) -> None:
        if not self.remote:
            return
        for name in RESULT_FILES:
            if (self.out / name).is_file():
                self.store.upload(self.out / name, name)
        # A TensorBoard tracker writes into the run's folder (cmcl/tracking).
        for path in sorted((self.out / TENSORBOARD).rglob("*")):
            if path.is_file():
                self.store.upload(path, str(path.relative_to(self.out)))


class StudyRunReporter(Reporter):
    """Engine hooks -> the driver's events; stops at the next step once ``stop`` is set."""

    def __init__(self, *, emit: Emit, files: RunFiles, keep: int, stop: threading.Event):
        self.emit = emit
        self.files = files
        self.keep = keep
        self.stop = stop
        self.index = 0

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        self.emit({"kind": "started", "done_steps": done_steps, "total_steps": total_steps})
        if done_steps:
            # The evaluations up to the checkpoint (those after it are recomputed, identically).
            for row in read_history(self.files.out):
                if row["global_step"] <= done_steps:
                    self.index += 1
                    self.emit({"kind": "evaluation", "index": self.index, "row": row})

    def on_step(self, *, global_step: int) -> None:
        if self.stop.is_set():
            raise RunStopped(f"stopped by the study at step {global_step}")

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        if not is_chief:
            return
        self.files.after_evaluation(checkpoint, self.keep)
        self.index += 1
        self.emit({"kind": "evaluation", "index": self.index, "row": dict(metrics)})


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run directory's metrics.parquet ([] when there is none yet)."""
    import pandas as pd

    path = Path(run_dir) / "metrics.parquet"
    if not path.exists():
        return []
    return pd.read_parquet(path).to_dict("records")


def end_of_run_numbers(run_dir: Path) -> dict[str, float]:
    """Per-run numbers the report would otherwise compute from the feature dump
    (cross-domain retrieval accuracy), computed once here; {} when there is no dump."""
    path = Path(run_dir) / "features.parquet"
    if not path.exists():
        return {}
    from cmcl.report.retrieval import retrieval_metrics

    return retrieval_metrics(path)


def execute_run(
    job: RunJob, emit: Emit, *, stop: threading.Event | None = None, threads: int | None = None
) -> dict[str, Any]:
    """Train (or finish) one run in this process; returns the engine's summary.

    Raises whatever the engine raises (NonFiniteLossError, FileNotFoundError, out of
    memory) and :class:`RunStopped` when ``stop`` is set.
    """
    from cmcl.engine import fit
    from cmcl.engine.checkpoint import latest_checkpoint

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    files = RunFiles(job.location)
    files.fetch()
    config = job.config.replace({"out": str(files.out)})
    resume = "auto" if latest_checkpoint(files.out) is not None else None
    config = config.replace({"resume": resume})
    reporter = StudyRunReporter(
        emit=emit,
        files=files,
        keep=config.train.keep_checkpoints,
        stop=stop or threading.Event(),
    )
    data = shared_feature_data(config)
    if job.tracking is None:
        summary = fit(config, reporter, data=data).summary
    else:
        from cmcl.tracking import tracking_reporter

        tracked = tracking_reporter(
            job.tracking,
            config=config,
            run_dir=files.out,
            study=job.study,
            trial_id=job.trial_id,
            run_id=job.run_id,
            inner=reporter,
        )
        with tracked.marking_failure():
            summary = fit(config, tracked, data=data).summary
    files.at_end()
    emit(
        {
            "kind": "finished",
            "summary": summary,
            "history": read_history(files.out),
            "has_features": (files.out / "features.parquet").is_file(),
            "has_weights": (files.out / "model.pt").is_file(),
            "extra": end_of_run_numbers(files.out),
        }
    )
    return summary


def execute_distributed_run(job: RunJob, emit: Emit, *, stop: threading.Event) -> None:
    """A run on ``job.resources.workers`` Ray Train workers (cmcl/ray/study_train.py)."""
    from cmcl.ray.study_train import run_on_trainer

    run_on_trainer(job, emit, stop=stop)


_FEATURE_DATA: dict[tuple, Any] = {}
"""Feature-mode data of the runs this process executed, newest last (at most two)."""


def shared_feature_data(config: RunConfig):
    """The feature-mode :class:`~cmcl.data.base.PairData` of ``config``, built once per process.

    A worker process runs many runs of a study; those of one pair read the same
    store, so loading it again (about 1.3 s for an EPIC-sized synthetic pair)
    would be slot time spent on nothing. The data is read-only during training
    (batches are drawn from seeds and steps, not from state in the data), so runs
    that share it compute exactly what they would alone. Video mode (frames
    through DataLoader workers) is built per run: None.
    """
    if config.model.backbone == "i3d":
        return None
    from cmcl.data.build import build_pair_data

    store = config.data.features
    stamp = None
    if store is not None and not is_uri(store):
        meta = Path(store) / "meta.json"
        stamp = meta.stat().st_mtime_ns if meta.exists() else None
    key = (config.data.benchmark, config.data.pair, store, stamp, config.data.sampling)
    if key not in _FEATURE_DATA:
        while len(_FEATURE_DATA) >= 2:
            _FEATURE_DATA.pop(next(iter(_FEATURE_DATA))).close()
        _FEATURE_DATA[key] = build_pair_data(config)
    else:
        _FEATURE_DATA[key] = _FEATURE_DATA.pop(key)  # newest last
    return _FEATURE_DATA[key]
