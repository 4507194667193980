"""Fill the paper's tables from results: per row and column, what the runs give.

A table is filled separately for each benchmark of its family that the results
hold (``epic`` and ``synthetic-epic`` give two Table 3s). Only finished runs
count. Per cell (row, pair): the chosen configuration (:mod:`cmcl.report.choose`)
gives seeds; the cell holds their fused, RGB and flow mean ± std, the paper's
number and the gain over source-only. The source-only baseline of a cell is
the source-only configuration of the same benchmark and pair whose data, model
and training settings equal the cell's (same study first, then any study);
when none has equal settings, the nearest (same study, any settings) is used
and a note says so. ``Mean`` is over the pairs the row has, with a bootstrap
CI; ``Gain`` is the mean over the pairs both have of the per-pair gains.
Table 5's ``Gain via sampling`` is independent minus synchronised windows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from cmcl.common import pair_label
from cmcl.report.aggregate import (
    SeedStat,
    bootstrap_mean_over_pairs,
    matches,
)
from cmcl.report.choose import Choice, choose
from cmcl.report.paper import PAPER_DEFAULTS, PaperRow, PaperTable, family_pairs
from cmcl.report.planned import StudyPlan, planned_cells

SOURCE_ONLY = "source_only"
TABLE3_METHODS = frozenset(
    (
        "source_only",
        "adabn",
        "mmd",
        "mcd",
        "mm_sada",
        "cmco_modality",
        "cmco_domain",
        "cmco",
        "supervised_target",
    )
)


@dataclass
class Cell:
    """One reproduced number beside the paper's."""

    column: str
    fused: SeedStat
    rgb: SeedStat
    flow: SeedStat
    paper: float | None
    ci: tuple[float, float] | None = None
    gain: float | None = None
    gain_ci: tuple[float, float] | None = None
    pairs: tuple[str, ...] = ()
    choice: str = ""
    samples: np.ndarray | None = field(default=None, repr=False)

    @property
    def diff(self) -> float | None:
        if self.paper is None or self.fused.n == 0:
            return None
        return self.fused.mean - self.paper


@dataclass
class RowResult:
    row: PaperRow
    cells: dict[str, Cell] = field(default_factory=dict)
    """By column: a pair (``D2-D1``), ``Mean``, ``Gain``, ``Gain via sampling``."""
    missing_pairs: tuple[str, ...] = ()
    """Pairs without a finished run, planned or not."""
    unplanned_pairs: tuple[str, ...] = ()
    """The missing pairs no study planned for this row (:mod:`cmcl.report.planned`)."""
    used: list[pd.DataFrame] = field(default_factory=list, repr=False)
    """The runs behind this row's numbers: each cell's chosen runs and its source-only baseline."""

    def runs_used(self) -> pd.DataFrame:
        return _concat_runs(self.used)


def _concat_runs(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=["run_key"])
    return pd.concat(frames, ignore_index=True, sort=False).drop_duplicates("run_key")


@dataclass
class TableResult:
    table: PaperTable
    benchmark: str
    synthetic: bool
    rows: list[RowResult]
    pairs: tuple[str, ...]
    """The family's pairs in the paper's order."""
    missing: list[str]
    """Planned cells without a finished run (failed, stopped or not run yet): warnings."""
    notes: list[str]
    metric: str
    studies: tuple[str, ...]
    ks: tuple[int, ...]
    unplanned: list[str] = field(default_factory=list)
    """Cells no study planned: not warnings, listed so that an empty cell is explained."""

    def runs_used(self) -> pd.DataFrame:
        """Every run behind the table's numbers (what its captions describe: mode, schedule)."""
        return _concat_runs([f for r in self.rows for f in r.used])

    def filled_rows(self) -> list[RowResult]:
        """Rows with at least one reproduced pair."""
        return [
            r for r in self.rows if any(c.fused.n for k, c in r.cells.items() if k in self.pairs)
        ]

    def worth_showing(self) -> bool:
        """Main tables: any row filled. Ablations: two non-source-only rows filled, one of
        them something Table 3 does not show (another method, or a non-default setting)."""
        filled = self.filled_rows()
        if not self.table.is_ablation:
            return bool(filled)
        compared = [r for r in filled if r.row.method != SOURCE_ONLY]
        return len(compared) >= 2 and any(_beyond_table3(r.row) for r in compared)


def _beyond_table3(row: PaperRow) -> bool:
    return row.method not in TABLE3_METHODS or any(
        not matches(value, PAPER_DEFAULTS.get(column)) for column, value in row.required
    )


def _candidates(runs: pd.DataFrame, row: PaperRow) -> pd.DataFrame:
    mask = (runs["method"] == row.method).astype(bool)
    for column, wanted in row.required:
        if column in runs:
            mask &= runs[column].map(lambda v, w=wanted: matches(v, w)).astype(bool)
        elif not matches(PAPER_DEFAULTS.get(column), wanted):
            # A run without the column ran with the default, which is not the wanted value.
            mask &= False
    return runs[mask]


def _choose(cands: pd.DataFrame, pair: str, metric: str, fixed: list[str], mean_objective: bool):
    if mean_objective:
        choice = choose(cands, metric=metric, fixed=fixed, across_pairs=True)
        if choice is None:
            return None
        runs = choice.runs[choice.runs["pair"] == pair]
        return Choice(runs, choice.n_configs, choice.how, choice.settings) if len(runs) else None
    return choose(cands[cands["pair"] == pair], metric=metric, fixed=fixed)


def _baseline(runs: pd.DataFrame, chosen: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """Source-only runs matching the chosen runs' non-method settings (see module doc)."""
    first = chosen.iloc[0]
    pool = runs[(runs["method"] == SOURCE_ONLY) & (runs["pair"] == first["pair"])]
    if pool.empty:
        return pool, "no source-only run"
    same = pool[pool["shared_config"] == first["shared_config"]]
    note = ""
    if same.empty:
        same, note = pool, "source-only settings differ"
    in_study = same[same["study"] == first["study"]]
    same = in_study if len(in_study) else same
    choice = choose(same, metric=metric)
    return (choice.runs if choice else same.iloc[0:0]), note


def fill_table(
    table: PaperTable,
    benchmark: str,
    synthetic: bool,
    runs: pd.DataFrame,
    *,
    metric: str,
    mean_objective: bool = False,
    unfinished: pd.DataFrame | None = None,
    baselines: pd.DataFrame | None = None,
    plans: list[StudyPlan | None] | None = None,
) -> TableResult:
    """Fill ``table`` from ``runs`` (finished runs of ``benchmark``, with accuracies and ``config``).

    ``baselines``: where source-only baselines are looked for (default ``runs``).
    ``plans``: the studies' plans, which tell a missing cell from one never planned
    (None, or an unknown plan among them: every cell counts as planned).
    """
    baselines = runs if baselines is None else baselines
    pairs = family_pairs(table.family)
    result = TableResult(
        table=table,
        benchmark=benchmark,
        synthetic=synthetic,
        rows=[],
        pairs=pairs,
        missing=[],
        notes=[],
        metric=metric,
        studies=tuple(sorted(runs["study"].unique())),
        ks=tuple(sorted({int(k) for k in runs["k"].dropna()})),
    )
    for row in table.rows:
        row_result = RowResult(row=row)
        result.rows.append(row_result)
        if row.method is None:
            continue
        cands = _candidates(runs, row)
        fixed = [c for c, _ in row.required]
        gains: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for pair in pairs:
            choice = _choose(cands, pair, metric, fixed, mean_objective)
            if choice is None:
                continue
            cell = _seed_cell(choice.runs, pair, table.paper_value(row, pair))
            cell.choice = choice.describe()
            row_result.used.append(choice.runs)
            if row.method != SOURCE_ONLY:
                base, note = _baseline(baselines, choice.runs, metric)
                row_result.used.append(base)
                if len(base):
                    cell.gain = cell.fused.mean - float(base["target_acc"].mean())
                    gains[pair] = (cell.samples, base["target_acc"].to_numpy(float))
                if note:
                    result.notes.append(f"{row.label()}, {pair_label(pair)}: {note}")
            row_result.cells[pair] = cell
        have = tuple(p for p in pairs if p in row_result.cells)
        row_result.missing_pairs = tuple(p for p in pairs if p not in have)
        planned = planned_cells(plans or [None], benchmark, row, row_result.missing_pairs)
        row_result.unplanned_pairs = tuple(p for p in row_result.missing_pairs if p not in planned)
        if have:
            row_result.cells["Mean"] = _mean_cell(row_result, have, table.paper_value(row, "Mean"))
            if gains:
                row_result.cells["Gain"] = _gain_cell(gains, table.paper_value(row, "Gain"))
        _report_missing(result, row_result, unfinished)
    if table.key.startswith("table5"):
        _sampling_gains(result)
    return result


def _seed_cell(chosen: pd.DataFrame, pair: str, paper: float | None) -> Cell:
    ordered = chosen.sort_values("seed")
    return Cell(
        column=pair,
        fused=SeedStat.of(ordered["target_acc"]),
        rgb=SeedStat.of(ordered["target_acc_rgb"]),
        flow=SeedStat.of(ordered["target_acc_flow"]),
        paper=paper,
        samples=ordered["target_acc"].to_numpy(float),
    )


def _interval(
    samples: list[np.ndarray], minus: list[np.ndarray] | None = None
) -> tuple[float, float] | None:
    """Bootstrap CI; None when every pair has one seed (resampling would vary nothing)."""
    if all(len(x) <= 1 for x in [*samples, *(minus or [])]):
        return None
    return bootstrap_mean_over_pairs(samples, minus=minus)


def _mean_over_pairs(cells: list[Cell], attribute: str) -> SeedStat:
    means = [getattr(c, attribute).mean for c in cells if getattr(c, attribute).n]
    n = sum(getattr(c, attribute).n for c in cells)
    return SeedStat(float(np.mean(means)) if means else float("nan"), float("nan"), n)


def _mean_cell(row: RowResult, have: tuple[str, ...], paper: float | None) -> Cell:
    cells = [row.cells[p] for p in have]
    return Cell(
        column="Mean",
        fused=_mean_over_pairs(cells, "fused"),
        rgb=_mean_over_pairs(cells, "rgb"),
        flow=_mean_over_pairs(cells, "flow"),
        paper=paper,
        ci=_interval([c.samples for c in cells]),
        pairs=have,
    )


def _gain_cell(gains: dict[str, tuple[np.ndarray, np.ndarray]], paper: float | None) -> Cell:
    per_pair = [a.mean() - b.mean() for a, b in gains.values()]
    n = sum(len(a) for a, _ in gains.values())
    stat = SeedStat(float(np.mean(per_pair)), float("nan"), n)
    empty = SeedStat(float("nan"), float("nan"), 0)
    ci = _interval([a for a, _ in gains.values()], [b for _, b in gains.values()])
    return Cell("Gain", stat, empty, empty, paper, ci=ci, pairs=tuple(gains))


def _sampling_gains(result: TableResult) -> None:
    """Table 5: each independent-windows row gains over its method's synchronised row."""
    for row in result.rows:
        if dict(row.row.required).get("cfg.data.sampling") != "independent":
            continue
        partner = next(
            (
                r
                for r in result.rows
                if r.row.method == row.row.method
                and dict(r.row.required).get("cfg.data.sampling") == "synchronised"
            ),
            None,
        )
        if partner is None:
            continue
        common = [p for p in result.pairs if p in row.cells and p in partner.cells]
        if not common:
            continue
        a = [row.cells[p].samples for p in common]
        b = [partner.cells[p].samples for p in common]
        gain = float(np.mean([x.mean() - y.mean() for x, y in zip(a, b, strict=True)]))
        n = sum(len(x) for x in a)
        empty = SeedStat(float("nan"), float("nan"), 0)
        row.cells["Gain via sampling"] = Cell(
            "Gain via sampling",
            SeedStat(gain, float("nan"), n),
            empty,
            empty,
            result.table.paper_value(row.row, "Gain via sampling"),
            ci=_interval(a, b),
            pairs=tuple(common),
        )


def _report_missing(result: TableResult, row: RowResult, unfinished: pd.DataFrame | None) -> None:
    if not row.missing_pairs:
        return
    waiting = pd.DataFrame(columns=["pair"])
    if unfinished is not None and len(unfinished):
        waiting = _candidates(unfinished, row.row)
    # A pair with an unfinished run was asked for, whatever the plans say.
    unplanned = [p for p in row.unplanned_pairs if p not in set(waiting["pair"])]
    planned = [p for p in row.missing_pairs if p not in unplanned]
    label = f"{row.row.label()} (method {row.row.method})"
    if unplanned:
        every = len(unplanned) == len(result.pairs)
        result.unplanned.append(
            label + ("" if every else f" on {', '.join(pair_label(p) for p in unplanned)}")
        )
    if not planned:
        return
    running = f"; {len(waiting)} unfinished run(s) not counted" if len(waiting) else ""
    if len(planned) == len(result.pairs):
        result.missing.append(f"{label}: no runs{running}")
    else:
        shown = ", ".join(pair_label(p) for p in planned)
        result.missing.append(f"{label}: no runs for {shown}{running}")
