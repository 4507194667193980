"""What the report's readers share: a study's metadata, the batch a reader yields, tidying.

A reader (:mod:`cmcl.report.legacy` for results format version 1 and bare run
directories, :mod:`cmcl.report.chunked` for version 2) yields its runs in
batches: a few hundred runs' evaluations and one row per run of what else it
knows about them (:data:`RUN_INFO`). :mod:`cmcl.report.store` reduces each
batch to per-run numbers and drops it, so that memory holds one batch and the
per-run rows, whatever the number of runs.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from cmcl.common import IDENTITY, normalise_pair

RUN_INFO = ("run_key", *IDENTITY, "state", "run_dir", "has_features", "wall_s")
"""Columns of a batch's run rows besides ``cfg.*`` (and the retrieval numbers, where known).

``state``: ``done``, ``stopped`` (by the study's scheduler) or ``""`` (not recorded:
finished when the run's last adaptation evaluation reached ``cfg.train.steps``).
``run_dir``: a local path or a URI, None when the run has no directory.
"""
EVAL_COLUMNS = (
    "run_id",
    "stage",
    "step",
    "global_step",
    "target_acc",
    "target_acc_rgb",
    "target_acc_flow",
    "source_val_acc",
    "target_entropy",
    "snd",
    "cfg.train.eval_last_k",
)
"""The evaluation columns the per-run numbers are computed from (a reader projects on them)."""
CURVE_COLUMNS = ("run_id", "stage", "step", "global_step", "target_acc")
BATCH_RUNS = 256
"""Runs per batch where a reader chooses (one file per run); a chunk of version 2 is one batch."""


@dataclass
class StudyInfo:
    """One study directory (or the bare run directories, pooled as one pseudo-study)."""

    name: str
    path: Path | str
    """A local path, or the URI of a study in an object store."""
    kind: str
    """``study`` or ``runs``."""
    meta: dict[str, Any] = field(default_factory=dict)
    spec: str | None = None
    journal: Path | str | None = None
    """``optuna.journal``: a local path or a URI (:func:`cmcl.report.hpo` copies it locally)."""
    layout: str = ""
    """How its results are stored: ``1`` (``results/evals-*.parquet``), ``2`` (chunked
    ``results/`` and ``summaries/``), or ``runs`` (bare run directories)."""

    @property
    def selection_metric(self) -> str | None:
        value = self.meta.get("selection_metric", self.meta.get("metric"))
        return str(value) if value else None

    @property
    def objective(self) -> str | None:
        value = self.meta.get("objective")
        return str(value) if value else None

    @property
    def tables(self) -> tuple[str, ...] | None:
        """The paper tables the study declares; None when it declares none (the study
        runner writes an empty list then), meaning every table its runs fill."""
        value = self.meta.get("tables")
        return tuple(value) if isinstance(value, list | tuple) and value else None


class Batch(NamedTuple):
    """Whole runs: their evaluations (tidy, :func:`tidy_evals`) and one row per run."""

    evals: pd.DataFrame
    runs: pd.DataFrame


class Source:
    """A reader of one study directory or of bare run directories."""

    info: StudyInfo
    problems: list[str]

    def problem(self, text: str) -> None:
        # Reading some runs' files again (curves) must not list a bad file twice.
        if text not in self.problems:
            self.problems.append(text)

    def batches(self) -> Iterator[Batch]:
        """Every run, a batch at a time (each run in one batch)."""
        raise NotImplementedError

    def evaluations(
        self, run_ids: Collection[str] | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """Tidy evaluation rows of ``run_ids`` (None: every run), ``columns`` or all,
        a part at a time."""
        raise NotImplementedError


def batched(items: Sequence[Any], size: int = BATCH_RUNS) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _pair(value: Any) -> str:
    try:
        return normalise_pair(str(value))
    except ValueError:  # shown as recorded rather than failing the whole report
        return str(value)


def tidy_evals(evals: pd.DataFrame, study: str) -> pd.DataFrame:
    """Evaluation rows of one study, typed, with ``run_key``, in order, each step once."""
    if evals.empty:
        return pd.DataFrame(columns=[*IDENTITY, "run_key", "stage", "step", "global_step"])
    evals = evals.copy()
    evals["study"] = study
    if "stage" not in evals:
        evals["stage"] = "adapt"
    evals["stage"] = evals["stage"].fillna("adapt").astype(str)
    for column in ("step", "global_step"):
        if column not in evals:
            evals[column] = evals["step"] if "step" in evals else range(len(evals))
        evals[column] = evals[column].astype("int64")
    for column in IDENTITY:
        if column not in evals:
            evals[column] = 0 if column == "seed" else ""
    evals["variant"] = evals["variant"].fillna("").astype(str)
    evals["seed"] = evals["seed"].fillna(0).astype("int64")
    evals["pair"] = evals["pair"].astype(str).map(_pair)
    evals["run_key"] = study + "/" + evals["run_id"].astype(str)
    # A resumed run may evaluate the same step twice; the later row is the one kept.
    evals = evals.drop_duplicates(subset=["run_key", "stage", "step"], keep="last")
    stage_order = evals["stage"].map({"warmup": 0, "adapt": 1}).fillna(2)
    return (
        evals.assign(_order=stage_order)
        .sort_values(["run_key", "_order", "step"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def run_rows(evals: pd.DataFrame) -> pd.DataFrame:
    """One row per run of tidy ``evals``: identity and ``cfg.*`` (their first value)."""
    cfg = [c for c in evals.columns if c.startswith("cfg.")]
    first = evals.groupby("run_key", sort=True)[[*IDENTITY, *cfg]].first()
    return first.reset_index()


def with_pairs_normalised(runs: pd.DataFrame) -> pd.DataFrame:
    if "pair" in runs:
        runs["pair"] = runs["pair"].astype(str).map(_pair)
    return runs
