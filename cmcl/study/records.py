"""The study directory's own files: per-run result tables, trial records, study.json.

Everything here is plain files (JSON, Parquet) written atomically (a temporary
name, then a rename), so a reader never sees half a file and a killed writer
leaves the previous version. Nothing imports torch or ray.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl.study.naming import STUDY_FILE, TRIALS_DIR, trial_file

TRIAL_STATES = ("pending", "running", "done", "stopped", "errored")
"""done: finished every run; stopped: ended early by the scheduler (ASHA); errored: failed."""
IDENTITY = ("study", "trial_id", "run_id", "benchmark", "pair", "method", "seed", "variant")


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    _atomic_write(path, (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode())


def read_json(path: Path) -> dict[str, Any] | None:
    """The file's object, or None when it is missing or unreadable (being replaced)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_run_results(
    path: Path,
    history: list[Mapping[str, Any]],
    *,
    identity: Mapping[str, Any],
    settings: Mapping[str, Any],
) -> None:
    """Rewrite ``results/evals-<run_id>.parquet`` from a run's whole history.

    Args:
        history: every evaluation of the run so far (rows of its metrics.parquet).
        identity: the :data:`IDENTITY` columns.
        settings: ``RunConfig.flat()``; written as ``cfg.<key>`` columns.
    """
    missing = [k for k in IDENTITY if k not in identity]
    if missing:
        raise ValueError(f"identity lacks {', '.join(missing)}")
    frame = pd.DataFrame(list(history))
    n = len(frame)
    columns: dict[str, Any] = {k: [identity[k]] * n for k in IDENTITY}
    columns.update({f"cfg.{k}": [v] * n for k, v in settings.items()})
    table = pd.concat([pd.DataFrame(columns), frame.reset_index(drop=True)], axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    table.to_parquet(tmp, index=False)
    tmp.replace(path)


def write_trial_record(study: Path, record: Mapping[str, Any]) -> None:
    """``trials/<trial_id>.json``: the driver's view of one trial (see :func:`new_record`)."""
    if record.get("state") not in TRIAL_STATES:
        raise ValueError(f"trial state must be one of {TRIAL_STATES}; got {record.get('state')!r}")
    write_json(trial_file(study, record["trial_id"]), {**record, "updated": time.time()})


def read_trial_records(study: Path) -> list[dict[str, Any]]:
    """Every trial record, oldest trial first."""
    records = [read_json(p) for p in sorted((study / TRIALS_DIR).glob("*.json"))]
    return sorted((r for r in records if r), key=lambda r: (r.get("created", 0), r["trial_id"]))


def new_record(trial_id: str, *, plan: Mapping[str, Any], runs: list[str]) -> dict[str, Any]:
    """A trial record as the driver first writes it."""
    return {
        "trial_id": trial_id,
        "state": "running",
        "created": time.time(),
        **plan,
        "runs": runs,
        "evaluations": 0,
        "value": None,
        "last": None,
        "per_pair": {},
        "reason": None,
    }


def read_study(study: Path) -> dict[str, Any]:
    """study.json, or a FileNotFoundError naming what a study directory holds."""
    meta = read_json(study / STUDY_FILE)
    if meta is None:
        raise FileNotFoundError(
            f"{study} is not a study directory (no readable {STUDY_FILE}; `cmcl study run` "
            "writes one)"
        )
    return meta
