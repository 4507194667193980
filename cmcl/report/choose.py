"""Which configuration stands for a table row when several match.

A paper row names a method and a few settings; runs that match it may still
differ in others (a Table 6 grid also holds lambda=1.0 runs of ``cmco``, an
HPO study holds one configuration per trial). A configuration is a study plus
the values of every setting that changes what a run computes
(:func:`cmcl.report.aggregate.configuration_columns`). The choice, in order:

1. only one configuration: that one;
2. exactly one whose settings that vary equal the paper's defaults for
   lambda, T, tau, delta, sampling and the projection head (the settings the
   row does not name are the paper's defaults);
3. otherwise the best by the study's selection metric (mean over the
   configuration's runs; ``target_acc`` when the study names none, which is
   an oracle choice and is labelled so); ties go to the configuration with
   more runs, then to the first in sorted order.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from cmcl.common import METRICS
from cmcl.report.aggregate import matches, normalise_value, varied_settings
from cmcl.report.paper import PAPER_DEFAULTS, SETTING_NAMES


@dataclass(frozen=True)
class Choice:
    """The runs of the chosen configuration and how they were chosen."""

    runs: pd.DataFrame
    n_configs: int
    how: str = ""
    """Empty (one configuration), ``paper defaults`` or ``best <metric>``."""
    settings: dict[str, Any] = field(default_factory=dict)
    """The chosen values of the settings that varied among the candidates."""

    def describe(self) -> str:
        """``"lambda=1.0, T=0.8 (best source_val_acc of 3 configurations)"``, or ``""``."""
        if self.n_configs <= 1:
            return ""
        shown = ", ".join(f"{short_name(k)}={v}" for k, v in self.settings.items())
        return f"{shown} ({self.how} of {self.n_configs} configurations)"


def short_name(column: str) -> str:
    return SETTING_NAMES.get(column, column.removeprefix("cfg."))


def group_key(runs: pd.DataFrame) -> pd.Series:
    return runs["study"].astype(str) + "|" + runs["config"]


def choose(
    candidates: pd.DataFrame,
    *,
    metric: str,
    fixed: Collection[str] = (),
    across_pairs: bool = False,
) -> Choice | None:
    """Pick one configuration among ``candidates`` (runs with ``config`` and metric columns).

    ``fixed``: settings the row already pins (not checked against defaults).
    ``across_pairs``: score a configuration by the mean over pairs of its
    per-pair means (studies whose objective is the mean over pairs).
    """
    if candidates.empty:
        return None
    keys = group_key(candidates)
    groups = sorted(keys.unique())
    if len(groups) == 1:
        return Choice(runs=candidates, n_configs=1)
    varied = varied_settings(candidates)
    if candidates["study"].nunique() > 1:
        varied = ["study", *varied]
    checked = [c for c in varied if c in PAPER_DEFAULTS and c not in fixed]
    defaults = [
        g
        for g in groups
        if all(matches(candidates.loc[keys == g, c].iloc[0], PAPER_DEFAULTS[c]) for c in checked)
    ]
    if checked and len(defaults) == 1:
        return _choice(candidates, keys, defaults[0], len(groups), "paper defaults", varied)
    pool = defaults if checked and defaults else groups
    chosen = _best_by_metric(candidates, keys, pool, metric, across_pairs)
    how = f"best {metric}" if len(pool) > 1 else "paper defaults"
    return _choice(candidates, keys, chosen, len(groups), how, varied)


def _best_by_metric(
    candidates: pd.DataFrame, keys: pd.Series, pool: list[str], metric: str, across_pairs: bool
) -> str:
    sign = -1.0 if METRICS.get(metric, "max") == "min" else 1.0
    scored = []
    for g in pool:
        runs = candidates[keys == g]
        values = pd.to_numeric(runs.get(metric), errors="coerce") if metric in runs else None
        if values is None or values.isna().all():
            score = float("-inf")
        elif across_pairs:
            score = sign * float(values.groupby(runs["pair"]).mean().mean())
        else:
            score = sign * float(values.mean())
        scored.append((-score, -len(runs), g))
    return min(scored)[2]


def _choice(
    candidates: pd.DataFrame, keys: pd.Series, chosen: str, n: int, how: str, varied: list[str]
) -> Choice:
    runs = candidates[keys == chosen]
    settings = {c: normalise_value(runs[c].iloc[0]) for c in varied}
    return Choice(runs=runs, n_configs=n, how=how, settings=settings)
