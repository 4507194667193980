"""The report's Fidelity section: how far a two-fidelity study's cheap ranking held.

For a study with ``fidelity:`` (docs/studies.md, "Two-fidelity studies"),
each configuration run in both stages gets its value in the screen (feature
mode) and in the confirm stage (video mode) side by side; Spearman's and
Kendall's rank correlations between the two say how well the screen ranks
(with the number of configurations they rest on); the regret at k is what
trusting the screen's top k costs: the best confirm value the study knows of,
minus the best among the screen's k best. Values are each configuration's
mean over its runs of the study's selection metric (per pair with
``objective: per_pair``). Reads result files only: no torch, no Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cmcl.common import METRICS, pair_label
from cmcl.filestore import FileStore
from cmcl.report.document import Block, Heading, Table, Text
from cmcl.results import SUMMARIES_DIR, read_dataset

VARIANT_PREFIX = "screen-"
"""A confirm-stage variant is named after the screen trial it runs again."""


@dataclass
class FidelityGroup:
    """One pair (``per_pair``) or the whole study (``mean``)."""

    label: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    """trial, description, screen, confirm (None: not confirmed)."""
    baselines: dict[str, float] = field(default_factory=dict)
    """also_confirm method -> its confirm value."""

    def confirmed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["confirm"] is not None and r["screen"] is not None]


def _ranks(values: list[float]) -> list[float]:
    """Average ranks (1 = smallest), ties sharing the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson's on average ranks); NaN below 3 points or for
    a constant side."""
    if len(a) < 3:
        return math.nan
    ra, rb = _ranks(a), _ranks(b)
    ma, mb = sum(ra) / len(ra), sum(rb) / len(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb, strict=True))
    va = sum((x - ma) ** 2 for x in ra)
    vb = sum((y - mb) ** 2 for y in rb)
    return cov / math.sqrt(va * vb) if va > 0 and vb > 0 else math.nan


def kendall(a: list[float], b: list[float]) -> float:
    """Kendall's tau-b; NaN below 3 points or for a constant side."""
    if len(a) < 3:
        return math.nan
    concordant = discordant = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                concordant += 1
            else:
                discordant += 1
    n1 = concordant + discordant + ties_a
    n2 = concordant + discordant + ties_b
    return (concordant - discordant) / math.sqrt(n1 * n2) if n1 and n2 else math.nan


def regret(rows: list[dict[str, Any]], k: int, *, mode: str) -> float:
    """Best confirm value known minus the best confirm value among the screen's top ``k``."""
    sign = 1.0 if mode == "max" else -1.0
    by_screen = sorted(rows, key=lambda r: -sign * r["screen"])
    best = max(sign * r["confirm"] for r in rows)
    top = max(sign * r["confirm"] for r in by_screen[:k])
    return best - top


def _values(store: FileStore, metric: str) -> list[dict[str, Any]]:
    columns = ["trial_id", "method", "variant", "pair", "state", metric]
    return [
        r
        for r in read_dataset(store, SUMMARIES_DIR, columns=columns).to_pylist()
        if r["state"] == "done"
    ]


def _mean(values: list[float]) -> float | None:
    good = [v for v in values if v is not None and math.isfinite(v)]
    return sum(good) / len(good) if good else None


def fidelity_groups(parent: str, meta: dict[str, Any]) -> tuple[list[FidelityGroup], str, str]:
    """(groups, selection metric, mode) of the two-fidelity study at ``parent``."""
    metric = meta.get("selection_metric", "target_acc")
    mode = METRICS.get(metric, "max")
    screen_dir, confirm_dir = meta["fidelity"]["stages"]
    root = FileStore(parent)
    screen = root.child(screen_dir)
    confirm = root.child(confirm_dir)
    per_pair = meta.get("objective") == "per_pair"
    screen_state = screen.read_json("state.json") or {"trials": []}
    describe = {t["trial_id"]: t.get("description", "") for t in screen_state["trials"]}

    def key(row: dict[str, Any]) -> str:
        return row["pair"] if per_pair else "*"

    screen_values: dict[tuple[str, str], list[float]] = {}
    for row in _values(screen, metric):
        screen_values.setdefault((key(row), row["trial_id"]), []).append(row[metric])
    confirm_values: dict[tuple[str, str], list[float]] = {}
    baselines: dict[tuple[str, str], list[float]] = {}
    if confirm.is_dir() or confirm.exists("study.json"):
        for row in _values(confirm, metric):
            variant = row["variant"] or ""
            if variant.startswith(VARIANT_PREFIX):
                trial = variant[len(VARIANT_PREFIX) :]
                confirm_values.setdefault((key(row), trial), []).append(row[metric])
            else:
                baselines.setdefault((key(row), row["method"]), []).append(row[metric])
    groups: dict[str, FidelityGroup] = {}
    for (group, trial), values in sorted(screen_values.items()):
        label = pair_label(group) if per_pair else "mean over the pairs"
        entry = groups.setdefault(group, FidelityGroup(label=label))
        entry.rows.append(
            {
                "trial": trial,
                "description": describe.get(trial, trial),
                "screen": _mean(values),
                "confirm": _mean(confirm_values.get((group, trial), [])),
            }
        )
    for (group, method), values in baselines.items():
        if group in groups and _mean(values) is not None:
            groups[group].baselines[method] = _mean(values)
    return list(groups.values()), metric, mode


def _number(value: float | None) -> str:
    return "—" if value is None or not math.isfinite(value) else f"{value:.2f}"


def fidelity_blocks(parent: str, meta: dict[str, Any]) -> list[Block]:
    """The Fidelity section of the two-fidelity study at ``parent`` (study.json ``meta``)."""
    groups, metric, mode = fidelity_groups(parent, meta)
    blocks: list[Block] = [
        Heading(2, f"Fidelity: {meta.get('name')}"),
        Text(
            f"Each configuration's {metric} (mean over its runs) in the screen (feature mode: "
            "frozen I3D features) and in the confirm stage (video mode: I3D trained end to "
            "end); ranks 1 = best. Spearman's and Kendall's rank correlations between the "
            "stages rest on the configurations run in both; the regret at k is the best "
            "confirm value the study knows of minus the best among the screen's top k (0: "
            "trusting the screen lost nothing)."
        ),
    ]
    sign = 1.0 if mode == "max" else -1.0
    for group in groups:
        both = group.confirmed()
        rows = []
        screen_rank = {
            r["trial"]: i + 1
            for i, r in enumerate(
                sorted(
                    (r for r in group.rows if r["screen"] is not None),
                    key=lambda r: -sign * r["screen"],
                )
            )
        }
        confirm_rank = {
            r["trial"]: i + 1
            for i, r in enumerate(sorted(both, key=lambda r: -sign * r["confirm"]))
        }
        for row in sorted(group.rows, key=lambda r: screen_rank.get(r["trial"], math.inf)):
            rows.append(
                [
                    row["trial"],
                    row["description"],
                    _number(row["screen"]),
                    str(screen_rank.get(row["trial"], "—")),
                    _number(row["confirm"]),
                    str(confirm_rank.get(row["trial"], "—")),
                ]
            )
        for method, value in sorted(group.baselines.items()):
            rows.append([method, "baseline, confirm stage only", "—", "—", _number(value), "—"])
        blocks.append(Heading(3, group.label))
        blocks.append(
            Table(
                headers=["Trial", "Configuration", "Screen", "Rank", "Confirm", "Rank"],
                rows=rows,
            )
        )
        a = [r["screen"] for r in both]
        b = [r["confirm"] for r in both]
        facts = [
            f"{len(both)} configuration(s) in both stages",
            f"Spearman {_number(spearman(a, b))}",
            f"Kendall {_number(kendall(a, b))}",
        ]
        if len(both) >= 2:
            facts += [
                f"regret at {k} {_number(regret(both, k, mode=mode))}"
                for k in range(1, min(3, len(both) - 1) + 1)
            ]
        if len(both) < 3:
            facts.append("too few configurations for a rank correlation")
        blocks.append(Text("; ".join(facts) + "."))
    return blocks
