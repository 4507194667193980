"""From evaluations to numbers: per-run accuracy under a rule, seed statistics,
configurations, and bootstrap intervals for means over pairs.

Rules (per run, over the adaptation-stage evaluations; a run with none uses its
last stage):

- ``last9``: mean of the last k evaluations, k = ``cfg.train.eval_last_k``
  (9 unless the run says otherwise): the paper's protocol.
- ``best``: the evaluation with the highest fused target accuracy; RGB and
  flow are read at that same evaluation. An oracle: it picks with target labels.
- ``final``: the last evaluation.

The selection metrics (``source_val_acc``, ``target_entropy``, ``snd``) of a
run are averaged over the same last k evaluations (``last9`` and ``best``) or
read at the last one (``final``), so a rule never lets the oracle pick them.

Bootstrap (:func:`bootstrap_mean_over_pairs`): percentile interval of the mean
over pairs of per-pair seed means, resampling seeds with replacement within
each pair independently (10 000 resamples, numpy ``default_rng(0)``); pairs are
fixed, not resampled, because the paper's mean is over a fixed set of pairs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# The selection metrics are cmcl.common's (the study layer values trials by them too).
from cmcl.common import METRIC_TEXT, METRICS

RULES: dict[str, str] = {
    "last9": "mean of the last k={k} adaptation-stage evaluations of each run (the paper's protocol)",
    "best": "best adaptation-stage evaluation of each run (ORACLE: chosen with target labels)",
    "final": "last evaluation of each run",
}
ACCURACIES = ("target_acc", "target_acc_rgb", "target_acc_flow")
DEFAULT_LAST_K = 9
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0

# Settings that do not change what a run computes, or that name the run itself.
NOT_CONFIGURATION = {
    "cfg.data.benchmark",
    "cfg.data.pair",
    "cfg.method.name",
    "cfg.train.seed",
    "cfg.data.root",
    "cfg.data.splits",
    "cfg.data.features",
    "cfg.data.rgb_template",
    "cfg.data.flow_template",
    "cfg.data.loader_workers",
    "cfg.train.device",
    "cfg.train.eval_batch",
    "cfg.train.checkpoint_every",
    "cfg.train.keep_checkpoints",
    "cfg.train.dump_features",
    "cfg.train.source_val",
    "cfg.out",
    "cfg.resume",
}


def check_rule(rule: str) -> str:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {', '.join(RULES)}; got {rule!r}")
    return rule


def rule_text(rule: str, ks: Sequence[int] = (DEFAULT_LAST_K,)) -> str:
    """One line naming the rule and, for last9, the k the runs used."""
    k = ", ".join(str(v) for v in sorted(set(ks))) or str(DEFAULT_LAST_K)
    return f"{rule}: " + RULES[check_rule(rule)].format(k=k)


def metric_text(metric: str | None) -> str:
    return METRIC_TEXT.get(metric or "target_acc", f"{metric} (unknown direction: max)")


def rule_rows(evals: pd.DataFrame) -> pd.DataFrame:
    """The rows a rule reads, in order: each run's adaptation-stage evaluations, or the
    evaluations of its last stage when it has none; plus ``_from_end`` (0 = the last one)."""
    stage = evals["stage"].astype(str)
    keys = evals["run_key"]
    is_adapt = stage == "adapt"
    has_adapt = is_adapt.groupby(keys, sort=False).transform("any")
    last_stage = stage.groupby(keys, sort=False).transform("last")
    rows = evals[is_adapt | (~has_adapt & (stage == last_stage))]
    return rows.assign(_from_end=rows.groupby("run_key", sort=False).cumcount(ascending=False))


def _numeric(frame: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """``columns`` as floats (NaN where a value is not a number, all NaN where absent)."""
    return pd.DataFrame(
        {c: pd.to_numeric(frame[c], errors="coerce") if c in frame else np.nan for c in columns},
        index=frame.index,
    ).astype(float)


def run_accuracy(evals: pd.DataFrame, rule: str) -> pd.DataFrame:
    """One row per ``run_key``: accuracies under ``rule``, ``k``, ``n_used`` and the metrics.

    ``evals``: tidy evaluation rows (each run's rows in stage and step order).
    Computed for all runs at once (no loop over runs): a report reads thousands.
    """
    check_rule(rule)
    criteria = [m for m in METRICS if m != "target_acc"]
    columns = ["run_key", "k", "n_used", *ACCURACIES, *criteria, "step"]
    if evals.empty:
        return pd.DataFrame(columns=columns)
    rows = rule_rows(evals)
    keys = rows["run_key"]
    if "cfg.train.eval_last_k" in rows:
        first_k = rows.groupby("run_key", sort=False)["cfg.train.eval_last_k"].transform("first")
        k = pd.to_numeric(first_k, errors="coerce").fillna(DEFAULT_LAST_K).astype("int64")
    else:
        k = pd.Series(DEFAULT_LAST_K, index=rows.index, dtype="int64")
    tail = rows["_from_end"] < k
    last = rows["_from_end"] == 0
    if rule == "last9":
        chosen = tail
    elif rule == "final":
        chosen = last
    else:
        # The first evaluation with the highest fused accuracy (NaN never wins).
        accuracy = pd.to_numeric(rows["target_acc"], errors="coerce").fillna(-np.inf)
        chosen = rows.index.isin(accuracy.groupby(keys, sort=False).idxmax())
        chosen = pd.Series(chosen, index=rows.index)
    window = last if rule == "final" else tail
    picked = rows[chosen]
    table = _means_by_run(picked, ACCURACIES)
    table["n_used"] = picked.groupby("run_key", sort=True).size()
    table["step"] = picked.groupby("run_key", sort=True)["step"].last().astype("int64")
    table = table.join(_means_by_run(rows[window], criteria))
    table["k"] = k.groupby(keys, sort=True).first()
    return table.rename_axis("run_key").reset_index()[columns]


def _means_by_run(rows: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Per run (its rows consecutive), each column's mean over its numbers, summed exactly
    as pandas' ``Series.mean`` sums (NaN as 0, numpy's pairwise sum of the run's slice): the
    report computed it run by run so, and its CSVs must not change in the last digit."""
    keys = rows["run_key"].to_numpy()
    if not len(keys):
        return pd.DataFrame(columns=list(columns), index=pd.Index([], name="run_key"))
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    means = {}
    for column, values in _numeric(rows, columns).items():
        array = values.to_numpy(float)
        valid = ~np.isnan(array)
        filled = np.where(valid, array, 0.0)
        counts = np.add.reduceat(valid.astype(np.int64), starts)
        sums = np.array([filled[a:b].sum() for a, b in zip(starts, ends, strict=True)])
        with np.errstate(invalid="ignore", divide="ignore"):
            means[column] = np.where(counts > 0, sums / counts, np.nan)
    table = pd.DataFrame(means, index=pd.Index(keys[starts], name="run_key"))
    if table.index.has_duplicates:
        raise ValueError("evaluation rows of a run must be consecutive (tidy them first)")
    return table.sort_index()


@dataclass(frozen=True)
class SeedStat:
    """Mean, sample standard deviation (ddof=1; NaN for one seed) and count."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray) -> SeedStat:
        array = np.asarray([v for v in values if not _isnan(v)], dtype=float)
        if array.size == 0:
            return cls(float("nan"), float("nan"), 0)
        std = float(array.std(ddof=1)) if array.size > 1 else float("nan")
        return cls(float(array.mean()), std, int(array.size))


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def bootstrap_mean_over_pairs(
    samples: Sequence[np.ndarray],
    *,
    minus: Sequence[np.ndarray] | None = None,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    level: float = 0.95,
) -> tuple[float, float]:
    """Percentile CI of mean over pairs of per-pair seed means (minus the same of ``minus``).

    ``samples[p]`` holds the per-seed accuracies of pair p; with ``minus``
    (same pairs, e.g. source-only), the statistic is the gain, each side's
    seeds resampled independently.
    """
    if not samples:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    total = np.zeros(resamples)
    sides = [(samples, 1.0)] + ([(minus, -1.0)] if minus is not None else [])
    for side, sign in sides:
        for values in side:
            values = np.asarray(values, dtype=float)
            draws = rng.integers(0, values.size, size=(resamples, values.size))
            total += sign * values[draws].mean(axis=1)
    statistic = total / len(samples)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(statistic, [tail, 1.0 - tail])
    return float(low), float(high)


def normalise_value(value: Any) -> Any:
    """A hashable, comparable form of a setting (floats rounded, NaN -> None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | float | np.integer | np.floating):
        return round(float(value), 9)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    return str(value)


def configuration_columns(runs: pd.DataFrame) -> list[str]:
    return sorted(c for c in runs.columns if c.startswith("cfg.") and c not in NOT_CONFIGURATION)


def with_configuration(runs: pd.DataFrame) -> pd.DataFrame:
    """``runs`` plus ``config`` (which configuration: equal settings that define one, equal
    code) and ``shared_config`` (the same without ``cfg.method.*``: what a source-only
    baseline must share).

    The codes sort as the settings' JSON texts do (ties between configurations go to the
    first in that order), but take a few bytes per run instead of a few thousand: a report
    of 10,000 runs carries the table of runs through every step.
    """
    columns = configuration_columns(runs)
    shared = [i for i, c in enumerate(columns) if not c.startswith("cfg.method.")]
    config, shared_config = [], []
    # A row at a time, only these columns: a study of 10,000 runs holds no 10,000 dicts.
    for row in runs[columns].itertuples(index=False, name=None):
        values = [normalise_value(v) for v in row]
        config.append(_key(columns, values))
        shared_config.append(_key([columns[i] for i in shared], [values[i] for i in shared]))
    return runs.assign(config=_codes(config), shared_config=_codes(shared_config))


def _codes(keys: list[str]) -> list[str]:
    """``c0``, ``c1``... in the sorted order of ``keys`` (equal keys, equal codes)."""
    ranks, uniques = pd.factorize(pd.Series(keys, dtype=object), sort=True)
    width = len(str(max(len(uniques) - 1, 0)))
    return [f"c{rank:0{width}d}" for rank in ranks]


def _key(columns: list[str], values: list[Any]) -> str:
    return json.dumps(dict(zip(columns, values, strict=True)), sort_keys=True)


def varied_settings(runs: pd.DataFrame) -> list[str]:
    """Configuration columns that take more than one value among ``runs``."""
    return [
        c for c in configuration_columns(runs) if len({normalise_value(v) for v in runs[c]}) > 1
    ]


def matches(value: Any, wanted: Any) -> bool:
    """Setting equality with float tolerance (lambda 1.25 stored as 1.2500000001 matches)."""
    a, b = normalise_value(value), normalise_value(wanted)
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b
