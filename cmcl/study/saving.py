"""Saving a study's ended runs: their results in chunks, then pruning their directories.

The driver hands each ended run (done, or stopped by ASHA) to a
:class:`ResultsBuffer`; every :data:`FLUSH_EVERY_S` seconds, every
:data:`FLUSH_RUNS` runs and when the driver stops, the buffer writes them as
one chunk of ``results/`` and ``summaries/`` (cmcl/results.py). Only then are
the runs marked saved and, with ``keep: final``, their directories pruned to
what the report and an evaluation need: a run is never pruned before its
numbers are safe. No Ray.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cmcl.config import RunConfig
from cmcl.results import ResultsWriter, RunIdentity, evaluation_rows, summary_row
from cmcl.study.directory import StudyDir
from cmcl.study.naming import run_dir
from cmcl.study.plan import TrialPlan
from cmcl.study.records import RunRecord, TrialRecord

FLUSH_EVERY_S = 20.0
FLUSH_RUNS = 64


@dataclass
class EndedRun:
    """A run whose results wait for the next flush."""

    run: RunRecord
    trial: TrialRecord
    plan: TrialPlan
    config: RunConfig
    state: str
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    has_features: bool = False
    has_weights: bool = False
    extra: dict[str, float] = field(default_factory=dict)

    def rows(self, study: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """(evaluation rows, summary row) in the results schema."""
        identity = RunIdentity(
            study=study,
            trial_id=self.trial.trial_id,
            run_id=self.run.run_id,
            benchmark=self.run.benchmark,
            pair=self.run.pair,
            method=self.plan.method,
            seed=self.run.seed,
            variant=self.plan.variant or "",
        )
        settings = self.config.flat()
        summary = summary_row(
            self.summary,
            identity=identity,
            settings=settings,
            state=self.state,
            run_dir=run_dir(self.run.run_id),
            has_features=self.has_features,
            has_weights=self.has_weights,
            attempts=self.run.attempts,
            node_failures=self.run.node_failures,
            extra=self.extra,
        )
        return evaluation_rows(self.history, identity=identity, settings=settings), summary


class ResultsBuffer:
    """Ended runs on their way to the study's results (see the module docstring).

    Args:
        study: the study directory; ``name``: the study's name (the ``study`` column).
        keep: the study's ``keep`` (``final`` prunes saved runs' directories).
        clock: seconds, for the flush interval.
    """

    def __init__(self, study: StudyDir, *, name: str, keep: str, clock: Callable[[], float]):
        self.study, self.name, self.keep, self.clock = study, name, keep, clock
        self.writer = ResultsWriter(study.store)
        self.ending: list[EndedRun] = []
        self.flushed_at = clock()

    def recover(self) -> list[str]:
        """Remove what a killed writer left half done (cmcl/results.py)."""
        return self.writer.recover()

    def add(self, ended: EndedRun) -> None:
        self.ending.append(ended)

    def flush(self, *, force: bool) -> list[EndedRun]:
        """Write the buffered runs if due (or ``force``); returns the runs now saved."""
        if not self.ending:
            self.flushed_at = self.clock()
            return []
        due = len(self.ending) >= FLUSH_RUNS or self.clock() - self.flushed_at >= FLUSH_EVERY_S
        if not (force or due):
            return []
        evaluations, summaries = [], []
        for item in self.ending:
            rows, summary = item.rows(self.name)
            evaluations += rows
            summaries.append(summary)
        self.writer.flush(evaluations, summaries)
        flushed, self.ending = self.ending, []
        self.flushed_at = self.clock()
        for item in flushed:
            item.run.saved = True
        return flushed

    def prune(self, flushed: list[EndedRun]) -> None:
        """With ``keep: final``, reduce each saved run's directory to model.pt and its
        feature dump (call after the records that say the runs are saved are written)."""
        if self.keep != "final":
            return
        for item in flushed:
            self.study.prune_run(item.run.run_id)


def timed_write(write: Callable[[], None]) -> float:
    """Run ``write``; return the seconds it took."""
    started = time.perf_counter()
    write()
    return time.perf_counter() - started
