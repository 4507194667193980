"""Checkpoints: everything needed to continue a run bit-for-bit.

A checkpoint is a directory (so Ray Train can persist it as is)::

    state.pt    method (model, heads, banks), optimiser, scheduler, RNG states
                (rank 0's, and every worker's under DDP), position (stage,
                step) and the evaluation history
    meta.json   stage, step, global step, config: readable without torch

A checkpoint is written under a temporary name and renamed, so a crash never
leaves half of one; a disk error, a partial copy or a bit flip can still
damage one later. ``state.pt`` is a zip archive with a CRC per member, which
:func:`checkpoint_problem` verifies (``torch.load`` does not: it loads a
flipped bit silently), and :func:`latest_checkpoint` passes over a damaged
newest checkpoint to the previous intact one, saying so.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

STATE_FILE = "state.pt"
META_FILE = "meta.json"

log = logging.getLogger(__name__)


class CorruptCheckpointError(ValueError):
    """A checkpoint's files exist but cannot be read back as written."""


@dataclass
class Position:
    """Completed steps: ``steps_done`` optimiser steps of ``stage``; earlier stages are complete."""

    stage: str
    steps_done: int
    history: list[dict[str, Any]] = field(default_factory=list)
    own_rng: bool = True
    """Whether this worker's own random state was restored (False: it has rank 0's)."""


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(gauss),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["name"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["gauss"],
        )
    )
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuple(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return tuple(_as_tuple(v) for v in value)
    return value


def save_checkpoint(
    directory: Path,
    *,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: Position,
    meta: dict[str, Any],
    worker_rng: list[dict[str, Any]] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (a partial one never appears under its name).

    ``worker_rng``: every DDP worker's :func:`rng_state`, in rank order (their
    dropout streams differ); None in one process.
    """
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(
        {
            "method": method.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "worker_rng": worker_rng,
            "stage": position.stage,
            "steps_done": position.steps_done,
            "history": position.history,
        },
        tmp / STATE_FILE,
    )
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    shutil.rmtree(directory, ignore_errors=True)
    tmp.replace(directory)
    return directory


WEIGHTS_FILE = "model.pt"
"""A finished run's final network weights alone (no optimiser, no banks): what evaluating
the run needs, a fraction of a checkpoint's size."""


def save_weights(run_dir: Path, model: torch.nn.Module) -> Path:
    """Write ``run_dir/model.pt`` (the model's ``state_dict``) atomically."""
    path = Path(run_dir) / WEIGHTS_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return path


def load_checkpoint(
    directory: str | Path,
    *,
    method: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rank: int = 0,
    world: int = 1,
) -> Position:
    """Restore states in place and return where the run was.

    Worker ``rank`` of ``world`` gets its own random state when the checkpoint
    was written by as many workers; otherwise rank 0's (``Position.own_rng``
    says which, so that the caller can derive a stream of its own).
    """
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint state here")
    problem = checkpoint_problem(directory)
    if problem is not None:
        raise CorruptCheckpointError(
            f"{problem}; resume from an earlier checkpoint of the run (delete this one, "
            "and --resume takes the newest intact one) or start the run again"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as error:
        raise CorruptCheckpointError(f"{path}: cannot load the checkpoint: {error}") from None
    method.load_state_dict(state["method"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    workers = state.get("worker_rng")  # absent in checkpoints older than per-worker streams
    own = rank == 0 or (workers is not None and len(workers) == world)
    set_rng_state(workers[rank] if own and workers is not None else state["rng"])
    return Position(
        stage=state["stage"],
        steps_done=int(state["steps_done"]),
        history=list(state["history"]),
        own_rng=own,
    )


def checkpoint_problem(directory: str | Path) -> str | None:
    """Why the checkpoint in ``directory`` cannot be trusted, naming the file; None if intact.

    Reads every byte of ``state.pt`` once (its zip CRCs) and parses ``meta.json``.
    """
    state = Path(directory) / STATE_FILE
    try:
        with zipfile.ZipFile(state) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"{state}: damaged checkpoint ({error})"
    if bad is not None:
        return f"{state}: damaged checkpoint (member {bad} fails its CRC check)"
    meta = Path(directory) / META_FILE
    try:
        json.loads(meta.read_text())
    except (OSError, ValueError) as error:
        return f"{meta}: damaged checkpoint ({error})"
    return None


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories (holding ``state.pt``) under ``run_dir``, newest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step_*") if (p / STATE_FILE).is_file() and p.suffix != ".tmp"]
    return sorted(done, key=lambda p: p.name, reverse=True)


def latest_intact_checkpoint(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest checkpoint that passes :func:`checkpoint_problem`, and one line per newer
    one passed over (what is wrong with it).

    Raises:
        CorruptCheckpointError: there are checkpoints, but none is intact (starting
            over would silently discard the run).
    """
    skipped: list[str] = []
    for directory in checkpoint_dirs(run_dir):
        problem = checkpoint_problem(directory)
        if problem is None:
            return directory, skipped
        skipped.append(problem)
    if skipped:
        raise CorruptCheckpointError(
            f"no intact checkpoint under {Path(run_dir) / 'checkpoints'}: "
            + "; ".join(skipped)
            + ". Start the run again (remove the run directory or give another --out)"
        )
    return None, skipped


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest intact checkpoint under ``run_dir/checkpoints`` (None if there is none).

    A damaged newer one is passed over with a warning naming it (see
    :func:`latest_intact_checkpoint`, which raises when none is intact).
    """
    found, skipped = latest_intact_checkpoint(run_dir)
    for problem in skipped:
        log.warning("%s; resuming from %s instead", problem, found)
    return found


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    root = run_dir / "checkpoints"
    done = sorted(p for p in root.glob("step_*") if p.suffix != ".tmp")
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
