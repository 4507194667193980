"""Names and places inside a study directory (docs/results-format.md, "A study directory").

Run ids derive from Tune trial ids, which survive ``Tuner.restore``: a trial
that restarts after a crash finds its runs' directories, and so their newest
checkpoints, under the same names.
"""

from __future__ import annotations

from pathlib import Path

SPEC_FILE = "spec.yaml"
STUDY_FILE = "study.json"
DRIVER_FILE = "driver.json"
JOURNAL_FILE = "optuna.journal"
TUNE_DIR = "tune"
RESULTS_DIR = "results"
RUNS_DIR = "runs"
TRIALS_DIR = "trials"


def run_id(trial_id: str, pair: str, seed: int) -> str:
    """``<trial_id>-<pair>-s<seed>``, e.g. ``a1b2c_00003-D2-D1-s0``."""
    return f"{trial_id}-{pair}-s{seed}"


def parse_run_id(text: str) -> tuple[str, str, int]:
    """Inverse of :func:`run_id`: (trial_id, pair, seed)."""
    head, _, seed = text.rpartition("-s")
    trial_id, _, rest = head.partition("-")
    if not (trial_id and rest and seed.isdigit()):
        raise ValueError(f"not a run id (<trial_id>-<pair>-s<seed>): {text!r}")
    return trial_id, rest, int(seed)


def study_dir(storage: str | Path, name: str) -> Path:
    """``<storage>/<name>``, absolute (Tune trials run in other working directories)."""
    return (Path(storage).expanduser() / name).resolve()


def run_dir(study: Path, run: str) -> Path:
    return study / RUNS_DIR / run


def results_file(study: Path, run: str) -> Path:
    return study / RESULTS_DIR / f"evals-{run}.parquet"


def trial_file(study: Path, trial_id: str) -> Path:
    return study / TRIALS_DIR / f"{trial_id}.json"
