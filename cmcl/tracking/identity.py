"""What a tracked run is called and what it records as parameters, from a run's settings.

The same functions serve live tracking (``cmcl train``, study runs) and
``cmcl track sync`` (results read back from files), so both find the same
tracked run by its key and log under the same names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.config import ALIASES

RUN_KEY_TAG = "cmcl.run_key"
"""The tag a tracked run is found by when a restarted run (or a sync) reopens it."""

USER_PARAMS = ("lambda", "tau", "T", "delta", "method", "benchmark", "pair", "seed")
"""Parameters logged under the names people search by (cmcl.config.ALIASES), beside the
full resolved config under its dotted keys."""

AXIS_COLUMNS = ("stage", "step", "global_step")
"""Evaluation columns that place a row rather than measure it."""

LOSS_PREFIX = "train/loss_"
"""Loss terms at each ``train.log_every`` read (the evaluations' ``loss_*`` columns are
the means since the previous evaluation, a different quantity)."""

SUMMARY_PREFIX = "summary/"


@dataclass(frozen=True)
class RunIdentity:
    """How a run appears in a tracker.

    ``run_key`` must stay the same for every attempt of the run (a restart, a
    resume, a later sync); ``group`` is the study (an MLflow experiment, a W&B
    group, a TensorBoard folder).
    """

    run_key: str
    name: str
    group: str | None = None
    tags: dict[str, str] = field(default_factory=dict)


def run_identity(
    *,
    run_dir: str | Path | None = None,
    study: str | None = None,
    trial_id: str | None = None,
    run_id: str | None = None,
) -> RunIdentity:
    """A study run is ``<study>/<run_id>`` (as in cmcl.report.store's ``run_key``); a bare
    run (``cmcl train --out DIR``) is its directory's absolute path."""
    if study and run_id:
        key = f"{study}/{run_id}"
    elif run_dir is not None:
        key = f"dir:{Path(run_dir).resolve()}"
    else:
        raise ValueError(
            "a tracked run needs a stable key: give study and run_id, or the run directory "
            "(a run with no directory cannot be resumed, nor found again)"
        )
    key = re.sub(r"['\"`]", "_", key)  # quotes would break the trackers' tag searches
    tags = {RUN_KEY_TAG: key}
    for name, value in (
        ("cmcl.study", study),
        ("cmcl.trial_id", trial_id),
        ("cmcl.run_id", run_id),
    ):
        if value:
            tags[name] = str(value)
    if run_dir is not None:
        tags["cmcl.run_dir"] = str(run_dir)
    name = run_id or (Path(run_dir).name if run_dir is not None else key)
    return RunIdentity(run_key=key, name=name, group=study or None, tags=tags)


def run_params(flat: Mapping[str, Any]) -> dict[str, Any]:
    """The user's names (``lambda``, ``T``, ...) first, then every dotted setting.

    ``flat``: ``RunConfig.flat()``, or the ``cfg.*`` columns of a results row
    (the prefix is dropped).
    """
    settings = {k.removeprefix("cfg."): v for k, v in flat.items()}
    params = {name: settings[ALIASES[name]] for name in USER_PARAMS if ALIASES[name] in settings}
    params.update(settings)
    return params


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        try:  # numpy scalars from a results table
            value = float(value)
        except (TypeError, ValueError):
            return None
    value = float(value)
    return value if math.isfinite(value) else None


def evaluation_values(row: Mapping[str, Any]) -> dict[str, float]:
    """An evaluation's measured numbers under the engine's names (NaN: not measured, left out)."""
    values = {}
    for key, value in row.items():
        if key in AXIS_COLUMNS:
            continue
        number = _number(value)
        if number is not None:
            values[key] = number
    return values


def loss_values(values: Mapping[str, float]) -> dict[str, float]:
    """A loss read's terms under :data:`LOSS_PREFIX`."""
    return {f"{LOSS_PREFIX}{k}": float(v) for k, v in values.items() if _number(v) is not None}


def summary_values(summary: Mapping[str, Any]) -> dict[str, float]:
    """The final numbers of ``summary.json`` (``best``/``final`` flattened), under ``summary/``."""
    values = {}
    for key, value in summary.items():
        if isinstance(value, Mapping):
            if key == "config":
                continue
            for inner, item in value.items():
                number = _number(item)
                if number is not None:
                    values[f"{SUMMARY_PREFIX}{key}_{inner}"] = number
            continue
        number = _number(value)
        if number is not None:
            values[f"{SUMMARY_PREFIX}{key}"] = number
    return values


def summary_step(summary: Mapping[str, Any], default: int) -> int:
    """The global step the summary is logged at: the run's last step."""
    steps = summary.get("steps")
    return int(steps) if isinstance(steps, int | float) and not isinstance(steps, bool) else default
