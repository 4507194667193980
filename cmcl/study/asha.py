"""Asynchronous successive halving (ASHA) over a study's configurations, on plain data.

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys
2020), with the rule of Ray Tune's ``ASHAScheduler``: rungs at ``grace_period
* reduction_factor**k`` adaptation evaluations (below ``max_t``); when a
configuration completes a rung, it goes on only if its value is not below the
``1 - 1/reduction_factor`` quantile of the values recorded at that rung so
far (for metrics where lower is better, not above the mirrored quantile); a
configuration is recorded once per rung, at the highest rung it reached.

A configuration completes a rung when every one of its runs has made that
many adaptation evaluations (a *round*, cmcl/study/aggregate.py), so a
decision is about the configuration, never about one seed or pair. The
recorded values live in each trial's record (``rungs``), so a resumed study
decides as the interrupted one would have. No Ray.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from cmcl.study.records import TrialRecord


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default), of finite values only."""
    data = sorted(v for v in values if not math.isnan(v))
    if not data:
        return math.nan
    position = (len(data) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (position - low)


class ASHA:
    """Decides at each rung whether a configuration goes on.

    Args:
        grace_period: adaptation evaluations before the first rung.
        max_t: no rung at or beyond this many adaptation evaluations (the run's end
            decides nothing: it is the configuration's value).
        reduction_factor: keep the top ``1 / reduction_factor`` at each rung.
        mode: ``max`` or ``min`` (the selection metric's direction).
    """

    def __init__(self, *, grace_period: int, max_t: int, reduction_factor: float, mode: str):
        if grace_period < 1 or reduction_factor <= 1:
            raise ValueError(
                f"ASHA needs grace_period >= 1 and reduction_factor > 1; got "
                f"{grace_period} and {reduction_factor}"
            )
        self.rf = reduction_factor
        self.sign = 1.0 if mode == "max" else -1.0
        milestones = []
        rung = float(grace_period)
        while rung < max_t:
            milestones.append(int(rung))
            rung *= reduction_factor
        self.milestones = sorted(set(milestones), reverse=True)
        self.recorded: dict[int, dict[str, float]] = {m: {} for m in self.milestones}

    def restore(self, trials: Iterable[TrialRecord]) -> None:
        """The values earlier drivers recorded (from the trials' records)."""
        for trial in trials:
            for milestone, value in trial.rungs.items():
                if int(milestone) in self.recorded:
                    self.recorded[int(milestone)][trial.trial_id] = value

    def on_round(self, trial: TrialRecord, adapt_evals: int, value: float) -> bool:
        """True if ``trial`` goes on after a round with ``adapt_evals`` adaptation
        evaluations and ``value``; records the value in ``trial.rungs`` at a new rung."""
        for milestone in self.milestones:
            recorded = self.recorded[milestone]
            if adapt_evals < milestone or trial.trial_id in recorded:
                continue
            keep = True
            others = [self.sign * v for v in recorded.values()]
            if others and not math.isnan(value):
                cutoff = _quantile(others, 1 - 1 / self.rf)
                keep = not (self.sign * value < cutoff)
            recorded[trial.trial_id] = value
            trial.rungs[str(milestone)] = value
            return keep
        return True
