"""What a trial reports: its runs' evaluations combined round by round, then their summaries.

A trial runs one configuration on several (pair, seed) runs with the same
schedule. Round ``k`` is every run's ``k``-th evaluation; it is reported once
all runs have made it, as the mean over runs (and per pair, the mean over
seeds). The last report is the configuration's value: the mean over runs of
each run's summary (the SPEC's mean of the last evaluations), marked
``final``. A trial whose last result is not final was stopped early.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cmcl.common import METRICS

Event = dict[str, Any]
"""``{"kind": "evaluation", "run_id", "index", "metrics"}`` or ``{"kind": "summary", "run_id",
"summary"}``; ``metrics``/``summary`` hold the selection metrics."""


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


class TrialProgress:
    """Collects run events; :meth:`add` returns the results that became reportable.

    Args:
        runs: (run_id, benchmark, pair) of every run of the trial.
        metric: the selection metric (``objective`` in every result).
        schedule: (stage, step) of each evaluation (:meth:`cmcl.config.TrainConfig.evaluation_schedule`).
    """

    def __init__(
        self,
        runs: Sequence[tuple[str, str, str]],
        *,
        metric: str,
        schedule: Sequence[tuple[str, int]],
    ) -> None:
        self.runs = list(runs)
        self.metric = metric
        self.schedule = list(schedule)
        self.evaluations: dict[str, dict[int, dict[str, float]]] = {r: {} for r, _, _ in runs}
        self.summaries: dict[str, dict[str, float]] = {}
        self.reported = 0

    @property
    def finished(self) -> bool:
        return len(self.summaries) == len(self.runs)

    def add(self, event: Event) -> list[dict[str, Any]]:
        run = event["run_id"]
        if run not in self.evaluations:
            raise ValueError(
                f"event for unknown run {run!r}; this trial runs {list(self.evaluations)}"
            )
        if event["kind"] == "summary":
            self.summaries[run] = event["summary"]
            return [self.final_result()] if self.finished else []
        self.evaluations[run][event["index"]] = event["metrics"]
        ready = []
        while all(self.reported + 1 in done for done in self.evaluations.values()):
            self.reported += 1
            ready.append(self.round_result(self.reported))
        return ready

    def _combine(self, per_run: dict[str, dict[str, float]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for name in METRICS:
            result[name] = _mean([m[name] for m in per_run.values() if name in m])
        result["objective"] = result[self.metric]
        pairs: dict[str, list[float]] = {}
        benchmarks: dict[str, list[float]] = {}
        for run, benchmark, pair in self.runs:
            value = per_run[run].get(self.metric, math.nan)
            pairs.setdefault(pair, []).append(value)
            benchmarks.setdefault(benchmark, []).append(value)
        result["pairs"] = {pair: _mean(values) for pair, values in pairs.items()}
        if len(benchmarks) > 1:
            result["benchmarks"] = {b: _mean(values) for b, values in benchmarks.items()}
        return result

    def _adapt_evals(self, rounds: int) -> int:
        return sum(1 for stage, _ in self.schedule[:rounds] if stage == "adapt")

    def round_result(self, k: int) -> dict[str, Any]:
        """Round ``k`` (1-based) as reported to Tune."""
        result = self._combine({run: evals[k] for run, evals in self.evaluations.items()})
        stage, step = self.schedule[k - 1] if k <= len(self.schedule) else ("adapt", 0)
        result.update(
            {
                "evaluation": k,
                "adapt_evals": self._adapt_evals(k),
                "stage": stage,
                "step": step,
                "final": False,
            }
        )
        return result

    def final_result(self) -> dict[str, Any]:
        """The configuration's value: the mean of its runs' summaries."""
        result = self._combine(self.summaries)
        rounds = len(self.schedule)
        result.update(
            {
                "evaluation": rounds,
                "adapt_evals": self._adapt_evals(rounds),
                "stage": "end",
                "step": 0,
                "final": True,
            }
        )
        return result
