"""The per-run numbers, computed for all runs at once, against the per-run loops they replaced."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cmcl.common import METRICS
from cmcl.report.aggregate import RULES, run_accuracy
from cmcl.report.selection import CRITERIA, checkpoint_values
from cmcl.report.source import tidy_evals

COLUMNS = ("target_acc", "target_acc_rgb", "target_acc_flow", *CRITERIA)


def _random_evals(seed: int) -> pd.DataFrame:
    """Runs of random lengths and k; some warm-up only, some with NaNs, some criteria unlogged."""
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(40):
        k = int(rng.choice([1, 3, 9]))
        warmup, adapt = int(rng.integers(0, 3)), int(rng.integers(0, 14))
        if warmup + adapt == 0:
            adapt = 1
        stages = ["warmup"] * warmup + ["adapt"] * adapt
        for i, stage in enumerate(stages):
            row = {
                "run_id": f"r{run:02d}",
                "stage": stage,
                "step": (i + 1 if stage == "warmup" else i - warmup + 1) * 10,
                "global_step": (i + 1) * 10,
                "cfg.train.eval_last_k": k,
            }
            for column in COLUMNS:
                # Whole numbers make ties frequent (the first must win); some runs get
                # fractions, whose sums depend on the order they are added in.
                value = float(rng.integers(0, 6)) + (rng.random() if run % 2 else 0.0)
                row[column] = math.nan if rng.random() < 0.15 else value
            if run % 7 == 0:
                row["snd"] = math.nan
            rows.append(row)
    return tidy_evals(pd.DataFrame(rows).sample(frac=1.0, random_state=seed), "s")


def _mean(frame: pd.DataFrame, column: str) -> float:
    values = pd.to_numeric(frame[column], errors="coerce")
    return float(values.mean()) if values.notna().any() else float("nan")


def _naive_accuracy(evals: pd.DataFrame, rule: str) -> pd.DataFrame:
    rows = []
    for run_key, group in evals.groupby("run_key", sort=True):
        adapt = group[group["stage"] == "adapt"]
        if adapt.empty:
            adapt = group[group["stage"] == group["stage"].iloc[-1]]
        k = int(adapt["cfg.train.eval_last_k"].iloc[0])
        tail = adapt.tail(k)
        if rule == "last9":
            chosen = tail
        elif rule == "final":
            chosen = adapt.tail(1)
        else:
            chosen = adapt.loc[[adapt["target_acc"].fillna(-np.inf).idxmax()]]
        row = {"run_key": run_key, "k": k, "n_used": len(chosen)}
        row.update(
            {c: _mean(chosen, c) for c in ("target_acc", "target_acc_rgb", "target_acc_flow")}
        )
        window = adapt.tail(1) if rule == "final" else tail
        row.update({c: _mean(window, c) for c in CRITERIA})
        row["step"] = int(chosen["step"].iloc[-1])
        rows.append(row)
    return pd.DataFrame(rows)


def _naive_checkpoints(evals: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for run_key, group in evals[evals["stage"] == "adapt"].groupby("run_key", sort=True):
        accuracy = group["target_acc"]
        row = {"run_key": run_key, "oracle_acc": accuracy.max()}
        for metric in CRITERIA:
            values = group[metric]
            if values.isna().all():
                row[f"{metric}_acc"] = math.nan
                continue
            pick = values.idxmin() if METRICS[metric] == "min" else values.idxmax()
            row[f"{metric}_acc"] = accuracy.loc[pick]
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("rule", list(RULES))
def test_run_accuracy_equals_the_per_run_loop(seed, rule):
    evals = _random_evals(seed)
    got = run_accuracy(evals, rule)
    # Exactly, to the last digit: the report's CSVs must not change with the new computation.
    expected = _naive_accuracy(evals, rule)[got.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_checkpoint_values_equal_the_per_run_loop(seed):
    evals = _random_evals(seed)
    got = checkpoint_values(evals)
    expected = _naive_checkpoints(evals)[got.columns]
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, check_exact=True)
