"""What each selection criterion would pick, and the accuracy lost without target labels.

Two choices are compared, per study, benchmark, pair and method:

- configuration: among the configurations of the group (a grid or an HPO
  study), the one each criterion ranks best, with every configuration scored
  by the mean over its seeds of the per-run value under the report's rule;
- checkpoint: within each run, the adaptation-stage evaluation each criterion
  ranks best; the numbers are means over the group's runs.

The oracle criterion is ``target_acc`` (uses target labels). ``lost`` is the
oracle's target accuracy minus the criterion's pick's, so it is >= 0.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from cmcl.common import METRICS, pair_label
from cmcl.report.aggregate import normalise_value, varied_settings
from cmcl.report.choose import short_name

CRITERIA = ("source_val_acc", "target_entropy", "snd")
KEYS = ["study", "benchmark", "pair", "method"]


def _best_index(values: pd.Series, metric: str) -> Any:
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.isna().all():
        return None
    return numeric.idxmin() if METRICS[metric] == "min" else numeric.idxmax()


def configuration_picks(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group with more than one configuration (runs: finished, with ``config``)."""
    records = []
    for key, group in runs.groupby(KEYS, sort=True):
        if group["config"].nunique() < 2:
            continue
        varied = varied_settings(group)
        scores = group.groupby("config").agg(
            {"target_acc": "mean", **{m: "mean" for m in CRITERIA if m in group}}
        )
        oracle = _best_index(scores["target_acc"], "target_acc")
        record: dict[str, Any] = dict(zip(KEYS, key, strict=True))
        record["configurations"] = len(scores)
        record["oracle_acc"] = scores.loc[oracle, "target_acc"]
        record["oracle_pick"] = _settings(group, oracle, varied)
        for metric in CRITERIA:
            pick = _best_index(scores[metric], metric) if metric in scores else None
            acc = scores.loc[pick, "target_acc"] if pick is not None else math.nan
            record[f"{metric}_acc"] = acc
            record[f"{metric}_lost"] = record["oracle_acc"] - acc
            record[f"{metric}_pick"] = _settings(group, pick, varied) if pick is not None else ""
        records.append(record)
    return pd.DataFrame.from_records(records)


def _settings(group: pd.DataFrame, config: str, varied: list[str]) -> str:
    first = group[group["config"] == config].iloc[0]
    return ", ".join(f"{short_name(c)}={normalise_value(first[c])}" for c in varied)


def checkpoint_values(evals: pd.DataFrame) -> pd.DataFrame:
    """Per run with adaptation-stage evaluations: ``oracle_acc`` (its best target accuracy)
    and ``<criterion>_acc``, the target accuracy at the evaluation each criterion ranks best
    (NaN where the criterion was not logged). All runs at once, no loop over runs."""
    adapt = evals[evals["stage"] == "adapt"]
    columns = ["run_key", "oracle_acc", *(f"{m}_acc" for m in CRITERIA)]
    if adapt.empty:
        return pd.DataFrame(columns=columns)
    keys = adapt["run_key"]
    accuracy = pd.to_numeric(adapt["target_acc"], errors="coerce")
    table = pd.DataFrame({"oracle_acc": accuracy.groupby(keys, sort=True).max()})
    for metric in CRITERIA:
        if metric not in adapt:
            table[f"{metric}_acc"] = math.nan
            continue
        values = pd.to_numeric(adapt[metric], errors="coerce")
        logged = values.notna().groupby(keys, sort=True).any()
        worst = math.inf if METRICS[metric] == "min" else -math.inf
        ranked = values.fillna(worst).groupby(keys, sort=True)
        best = ranked.idxmin() if METRICS[metric] == "min" else ranked.idxmax()
        picked = pd.Series(accuracy.loc[best.to_numpy()].to_numpy(), index=best.index)
        table[f"{metric}_acc"] = picked.where(logged)
    return table.reset_index()[columns]


def checkpoint_table(per_run: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group of ``runs``: mean over its runs of :func:`checkpoint_values`."""
    if per_run.empty or runs.empty:
        return pd.DataFrame()
    merged = per_run.merge(runs[["run_key", *KEYS]], on="run_key")
    if merged.empty:
        return pd.DataFrame()
    columns = ["oracle_acc", *(f"{m}_acc" for m in CRITERIA)]
    table = merged.groupby(KEYS, sort=True)[columns].mean().reset_index()
    table.insert(len(KEYS), "runs", merged.groupby(KEYS, sort=True).size().to_numpy())
    for metric in CRITERIA:
        table[f"{metric}_lost"] = table["oracle_acc"] - table[f"{metric}_acc"]
    return table


def checkpoint_picks(evals: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per group: mean over runs of the oracle's and each criterion's checkpoint accuracy."""
    return checkpoint_table(checkpoint_values(evals), runs)


def _pick_text(acc: float, lost: float, settings: str = "") -> str:
    if acc is None or (isinstance(acc, float) and math.isnan(acc)):
        return "— (not logged)"
    detail = f"lost {lost:.1f}" + (f"; {settings}" if settings else "")
    return f"{acc:.1f} ({detail})"


def display_rows(table: pd.DataFrame, *, with_settings: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and display strings for a picks table."""
    headers = ["Study", "Benchmark", "Pair", "Method"]
    headers += ["Configs" if with_settings else "Runs", "Oracle (target_acc)"]
    headers += [f"{m} pick" for m in CRITERIA]
    rows = []
    for record in table.to_dict("records"):
        oracle = f"{record['oracle_acc']:.1f}"
        if with_settings:
            oracle += f" ({record['oracle_pick']})"
        row = [
            record["study"],
            record["benchmark"],
            pair_label(record["pair"]),
            record["method"],
            str(record["configurations" if with_settings else "runs"]),
            oracle,
        ]
        for metric in CRITERIA:
            settings = record.get(f"{metric}_pick", "") if with_settings else ""
            row.append(_pick_text(record[f"{metric}_acc"], record[f"{metric}_lost"], settings))
        rows.append(row)
    if len(table) > 1:
        mean = ["mean over the rows above", "", "", "", "", f"{table['oracle_acc'].mean():.1f}"]
        for metric in CRITERIA:
            mean.append(_pick_text(table[f"{metric}_acc"].mean(), table[f"{metric}_lost"].mean()))
        rows.append(mean)
    return headers, rows
