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


def storage_path(storage: str | Path) -> Path:
    """The directory a ``storage`` value names: a path, or a ``file://`` URI.

    Raises:
        ValueError: an object-store URI (``s3://``, ``gs://``...), which a study
            directory cannot be: its Optuna journal needs file locks, result
            files are appended and runs write their directories in place.
    """
    # The same reading of paths and URIs as a Ray Train run's --storage (no Ray import).
    from cmcl.ray.storage import is_uri, resolve_storage

    resolved = resolve_storage(storage)
    if not is_uri(resolved):
        return Path(resolved)
    scheme = resolved.split("://", 1)[0]
    raise ValueError(
        f"storage {str(storage)!r}: a study directory must be a filesystem path; "
        f"{scheme}:// URIs are not supported (its Optuna journal needs file "
        "locks and its runs write files in place). On one machine use a local directory; "
        "on a cluster, a directory every node mounts at the same path (NFS, EFS, "
        "Filestore). To keep a copy in object storage, sync the study directory there "
        "afterwards (e.g. `aws s3 sync DIR s3://...`)."
    )


def study_dir(storage: str | Path, name: str) -> Path:
    """``<storage>/<name>``, absolute (Tune trials run in other working directories)."""
    return (storage_path(storage) / name).resolve()


def run_dir(study: Path, run: str) -> Path:
    return study / RUNS_DIR / run


def results_file(study: Path, run: str) -> Path:
    return study / RESULTS_DIR / f"evals-{run}.parquet"


def trial_file(study: Path, trial_id: str) -> Path:
    return study / TRIALS_DIR / f"{trial_id}.json"
