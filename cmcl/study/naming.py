"""Names and places inside a study directory (docs/results-format.md, "A study directory").

A trial's id is ``t<number>``: its index in the grid's order, or its Optuna
trial number; a run's id adds the pair and the seed. Both are stable: the
same study file gives the same ids on every machine and after every resume,
so a restarted run finds its directory (and its newest checkpoint) by name.
"""

from __future__ import annotations

from pathlib import Path

from cmcl.filestore import resolve_location

SPEC_FILE = "spec.yaml"
STUDY_FILE = "study.json"
STATE_FILE = "state.json"
DRIVER_FILE = "driver.json"
JOURNAL_FILE = "optuna.journal"
RUNS_DIR = "runs"
LEGACY_TUNE_DIR = "tune"
LEGACY_TRIALS_DIR = "trials"
"""Layout 1 (cmcl 0.1 on Ray Tune): Tune's state and one JSON record per trial."""


def trial_id(number: int) -> str:
    """``t0007`` for trial number 7 (grid index or Optuna trial number)."""
    return f"t{number:04d}"


def run_id(trial: str, pair: str, seed: int) -> str:
    """``<trial_id>-<pair>-s<seed>``, e.g. ``t0003-D2-D1-s0``."""
    return f"{trial}-{pair}-s{seed}"


def parse_run_id(text: str) -> tuple[str, str, int]:
    """Inverse of :func:`run_id`: (trial_id, pair, seed)."""
    head, _, seed = text.rpartition("-s")
    trial, _, rest = head.partition("-")
    if not (trial and rest and seed.isdigit()):
        raise ValueError(f"not a run id (<trial_id>-<pair>-s<seed>): {text!r}")
    return trial, rest, int(seed)


def storage_location(storage: str | Path) -> str:
    """Where study directories go: an absolute path, or an object-store URI."""
    return resolve_location(storage)


def study_location(storage: str | Path, name: str) -> str:
    """``<storage>/<name>``: an absolute path or a URI."""
    return f"{storage_location(storage)}/{name}"


def run_dir(run: str) -> str:
    """A run's directory, relative to the study directory."""
    return f"{RUNS_DIR}/{run}"
