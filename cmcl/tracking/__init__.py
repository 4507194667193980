"""Experiment tracking: MLflow, Weights & Biases or TensorBoard, behind one switch.

    check_tracking("mlflow")                        # before any run: is the client there?
    reporter = tracking_reporter("mlflow", config=config, run_dir=out, inner=ConsoleReporter())
    with reporter.marking_failure():
        fit(config, reporter)

One tracked run per run, found again by its key (``cmcl.run_key``) when the run
resumes; every point is logged once, at the run's global step; a tracker
that fails gives one warning and the run goes on without it. See
docs/tracking.md.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cmcl.engine.reporting import Reporter
from cmcl.tracking.backends import (
    BACKENDS,
    TrackingNotInstalledError,
    backend_info,
    check_tracking,
)
from cmcl.tracking.base import Backend
from cmcl.tracking.identity import RunIdentity, run_identity, run_params
from cmcl.tracking.reporter import TrackingReporter

__all__ = [
    "BACKENDS",
    "RunIdentity",
    "TrackingNotInstalledError",
    "TrackingReporter",
    "attach_files",
    "build_backend",
    "check_tracking",
    "prepare_group",
    "run_identity",
    "run_params",
    "tracking_reporter",
]


def build_backend(
    name: str,
    identity: RunIdentity,
    *,
    run_dir: str | Path | None = None,
    directory: str | Path | None = None,
) -> Backend:
    """The backend ``name`` for one run (imports its client; call it where that may take time).

    ``directory`` (``--tracking-dir``): TensorBoard's log root (the run goes to
    ``<directory>/<group>/<name>``) or W&B's ``dir`` (else ``WANDB_DIR``); without it
    both write into ``run_dir``. MLflow takes none: it is configured by ``MLFLOW_TRACKING_URI``.
    """
    backend_info(name)
    if name == "mlflow":
        if directory is not None:
            raise ValueError(
                "--tracking-dir does not apply to mlflow: set MLFLOW_TRACKING_URI instead "
                "(a server, or a local store such as sqlite:///DIR/mlflow.db)"
            )
        from cmcl.tracking.mlflow_backend import MlflowBackend

        return MlflowBackend()
    if name == "wandb":
        from cmcl.tracking.wandb_backend import WandbBackend

        root = directory or os.environ.get("WANDB_DIR") or run_dir
        return WandbBackend(directory=None if root is None else Path(root))
    from cmcl.tracking.tensorboard_backend import TensorBoardBackend

    return TensorBoardBackend(directory=_tensorboard_dir(identity, run_dir, directory))


def _tensorboard_dir(
    identity: RunIdentity, run_dir: str | Path | None, directory: str | Path | None
) -> Path:
    from cmcl.tracking.tensorboard_backend import log_dir

    if directory is not None:
        return log_dir(Path(directory), identity)
    if run_dir is None:
        raise ValueError(
            "tracking tensorboard writes into the run's folder: give the run a directory "
            "(--out) or a log root (--tracking-dir)"
        )
    return Path(run_dir) / "tensorboard"


def tracker_label(name: str, *, run_dir: str | Path | None, directory: str | Path | None) -> str:
    """How the one warning names the tracker."""
    if name == "mlflow":
        return f"mlflow at {os.environ.get('MLFLOW_TRACKING_URI') or 'its default store'}"
    if name == "wandb":
        return f"wandb ({os.environ.get('WANDB_MODE') or 'online'})"
    return f"tensorboard in {directory or Path(run_dir or '.') / 'tensorboard'}"


def tracking_reporter(
    name: str,
    *,
    config: Any,
    run_dir: str | Path | None = None,
    directory: str | Path | None = None,
    study: str | None = None,
    trial_id: str | None = None,
    run_id: str | None = None,
    inner: Reporter | None = None,
) -> TrackingReporter:
    """A reporter tracking ``config``'s run (a ``RunConfig``) in ``name``, wrapping ``inner``.

    Checks up front (before ``fit``) that the client is installed and the
    directories make sense; nothing here touches the network.
    """
    check_tracking(name)
    identity = run_identity(run_dir=run_dir, study=study, trial_id=trial_id, run_id=run_id)
    build_backend(name, identity, run_dir=run_dir, directory=directory)  # refuse bad options now
    return TrackingReporter(
        backend=lambda: build_backend(name, identity, run_dir=run_dir, directory=directory),
        label=tracker_label(name, run_dir=run_dir, directory=directory),
        identity=identity,
        params=run_params(config.flat()),
        inner=inner,
    )


def prepare_group(name: str, group: str) -> str | None:
    """Before a study's runs start, once, in the driver: create the group where the tracker
    needs it (MLflow: the experiment, and a new sqlite store's tables), so that the runs,
    starting side by side, only find it. Returns a warning line if the tracker cannot be
    reached (the runs go on: tracking never stops a study), else None."""
    check_tracking(name)
    if name != "mlflow":
        return None
    from cmcl.tracking.mlflow_backend import MlflowBackend, bounded_http

    try:
        with bounded_http():
            MlflowBackend().experiment_id(group)
    except Exception as error:  # any failure means the same: the tracker is not there now
        where = os.environ.get("MLFLOW_TRACKING_URI") or "its default store"
        return f"tracking: mlflow at {where} cannot be reached now ({error}); runs go on"
    return None


def attach_files(
    paths: Sequence[str | Path],
    *,
    tracking: str,
    group: str,
    directory: str | Path | None = None,
) -> None:
    """Keep files (a report's tables and plots) with ``group`` in the tracker: an MLflow run
    ``report`` in the group's experiment, a W&B artifact of a ``report`` run in the group.
    Raises on failure: this is an explicit upload, not a training run."""
    check_tracking(tracking)
    files = [Path(p) for p in paths]
    missing = [str(p) for p in files if not p.exists()]
    if missing:
        raise FileNotFoundError(f"attach_files: no such file or directory: {', '.join(missing)}")
    identity = RunIdentity(run_key=f"{group}/report", name="report", group=group)
    run_dir = directory if directory is not None else Path.cwd()
    build_backend(tracking, identity, run_dir=run_dir, directory=None).attach(files, group=group)
