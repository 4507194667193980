"""File names for a report's per-run files (t-SNE plots, retrieval tables).

A name is made from what identifies a run within its study file: the study,
method, variant, pair and seed (``quickstart_cmco-D2-D1-s0``), never from
Tune's trial ids, which are random per study directory. Rerunning a study
file and its report then rewrites the same files. Where several runs of a
study share those (an Optuna study tries many configurations of one method),
each gets a short hash of its configuration's settings (``-c3f2a91``), which
is as stable as the settings; runs that share even that (the same point
sampled twice) get their trial's number within the study (``-t00007``).
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

import pandas as pd

from cmcl.report.aggregate import configuration_columns, normalise_value

IDENTIFYING = ("run_key", "study", "method", "variant", "pair", "seed", "trial_id", "run_id")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]+")


def safe_name(text: str) -> str:
    """``text`` with every run of characters unsafe in a file name or a Markdown link as ``_``."""
    return _UNSAFE.sub("_", text).strip("_") or "_"


def _base(run: dict[str, Any]) -> str:
    variant = run.get("variant")
    variant = "" if variant is None or pd.isna(variant) or not str(variant) else f"_{variant}"
    return safe_name(f"{run['study']}_{run['method']}{variant}-{run['pair']}-s{int(run['seed'])}")


def config_hash(run: dict[str, Any], columns: list[str]) -> str:
    """Seven hex digits of the run's own configuration settings (its non-empty ones only, so
    that reading other studies beside it, with other settings columns, keeps its hash)."""
    settings = {c: normalise_value(run.get(c)) for c in columns}
    settings = {c: v for c, v in settings.items() if v is not None}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:7]


def _trial_number(run: dict[str, Any]) -> str:
    """``00007`` from Tune's ``69f94_00007`` (the trial's index, in the order Tune made them)."""
    tail = str(run.get("trial_id") or "").rpartition("_")[2]
    return tail if tail.isdigit() else safe_name(str(run.get("run_id") or ""))


def run_file_names(runs: pd.DataFrame) -> dict[str, str]:
    """``run_key`` -> a file name stem, unique among ``runs`` (see the module docstring).

    Raises:
        ValueError: two runs that nothing here tells apart (which would overwrite
            each other's files); names both run keys.
    """
    columns = configuration_columns(runs)
    present = [c for c in IDENTIFYING if c in runs]
    # Identity columns only; a run's settings are read only when its name clashes.
    records = runs[present].to_dict("records")
    names = {r["run_key"]: _base(r) for r in records}
    settings = runs.set_index("run_key")[columns]

    def settings_of(key: str) -> dict[str, Any]:
        # A one-row frame keeps each column's type (a row Series would upcast bools).
        return settings.loc[[key]].to_dict("records")[0]

    for suffix in (
        lambda r: f"-c{config_hash(settings_of(r['run_key']), columns)}",
        lambda r: f"-t{_trial_number(r)}",
    ):
        counts = pd.Series(list(names.values())).value_counts()
        clashing = set(counts[counts > 1].index)
        for r in records:
            if names[r["run_key"]] in clashing:
                names[r["run_key"]] += suffix(r)
    seen: dict[str, str] = {}
    for key, name in names.items():
        if name in seen:
            raise ValueError(
                f"runs {seen[name]} and {key} would both write report files named {name!r}: "
                "they share study, method, variant, pair, seed, settings and trial number"
            )
        seen[name] = key
    return names
