"""A filled paper table as report blocks: the paper's layout, per-cell detail, CSV."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from cmcl.common import pair_label
from cmcl.report.aggregate import SeedStat, metric_text, rule_text
from cmcl.report.document import Block, Bullets, Heading, Table, Text
from cmcl.report.paper import SETTING_NAMES
from cmcl.report.protocol import mode_lines, schedule_lines
from cmcl.report.tables import Cell, RowResult, TableResult

DASH = "—"
SYNTHETIC_WARNING = (
    "**Synthetic data — not comparable to the paper's numbers.** "
    "The paper's values are printed beside them for orientation only."
)
LEGEND = (
    "Cell: reproduced mean ± std over seeds (n seeds) / paper (Δ = reproduced − paper). "
    "Mean: mean over pairs of the per-pair means [95% bootstrap CI] / paper. "
    "Gain: over source-only with the same benchmark, pair and data/model/training settings "
    "(same study first) "
    "[95% bootstrap CI] / paper. Accuracies are fused (RGB + flow) top-1 target accuracy in %."
)


def number(value: float | None, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return DASH
    return f"{value:+.1f}" if signed else f"{value:.1f}"


def seed_text(stat: SeedStat) -> str:
    """``49.3 ± 0.8 (3)``; one seed: ``49.3 (1)``; none: ``—``."""
    if stat.n == 0:
        return DASH
    spread = f" ± {stat.std:.1f}" if stat.n > 1 else ""
    return f"{stat.mean:.1f}{spread} ({stat.n})"


def ci_text(ci: tuple[float, float] | None) -> str:
    if ci is None or any(math.isnan(v) for v in ci):
        return ""
    return f" [{ci[0]:.1f}, {ci[1]:.1f}]"


def _paper_part(cell: Cell | None, paper: float | None, signed: bool = False) -> str:
    if paper is None:
        return ""
    if cell is None or cell.fused.n == 0:
        return f" / {number(paper, signed)}"
    return f" / {number(paper, signed)} (Δ {cell.fused.mean - paper:+.1f})"


def cell_text(result: TableResult, row: RowResult, column: str) -> str:
    cell = row.cells.get(column)
    paper = result.table.paper_value(row.row, column)
    signed = column.startswith("Gain")
    if cell is None or cell.fused.n == 0:
        if row.row.method is None:
            return f"n/a / {number(paper, signed)}" if paper is not None else "n/a"
        return DASH + _paper_part(None, paper, signed)
    if column in result.pairs:
        ours = seed_text(cell.fused)
    else:
        partial = "*" if len(cell.pairs) < len(result.pairs) else ""
        ours = number(cell.fused.mean, signed) + ci_text(cell.ci) + partial
    return ours + _paper_part(cell, paper, signed)


def protocol_lines(result: TableResult) -> list[str]:
    """What produced the table's numbers, from the recorded config of the runs behind them:
    their mode (feature or video) and their schedule (see :mod:`cmcl.report.protocol`)."""
    used = result.runs_used()
    if used.empty:
        return []
    rows = [(r.row.label(), r.runs_used()) for r in result.rows if r.used]
    return [
        *mode_lines(
            used,
            synthetic=result.synthetic,
            rows=rows,
            sampling_table=result.table.key.startswith("table5"),
        ),
        *schedule_lines(used, result.benchmark),
    ]


def _setting_columns(result: TableResult) -> list[str]:
    keys: list[str] = []
    for row in result.table.rows:
        for key, _ in (*row.required, *row.descriptive):
            if key not in keys:
                keys.append(key)
    return keys


def _setting_value(row: RowResult, key: str) -> str:
    values = dict((*row.row.required, *row.row.descriptive))
    if key not in values:
        return DASH
    value = values[key]
    if isinstance(value, bool):
        return "✓" if value else "✗"
    return str(value)


def _columns(result: TableResult) -> list[str]:
    columns = [*result.pairs, "Mean", "Gain"] if not result.table.is_ablation else ["Mean", "Gain"]
    if result.table.key.startswith("table5"):
        columns.append("Gain via sampling")
    return columns


def table_blocks(result: TableResult, rule: str) -> list[Block]:
    """Heading, labels, the paper-layout table, the per-cell detail and what is missing."""
    table = result.table
    data_kind = "synthetic data" if result.synthetic else "real data"
    blocks: list[Block] = [Heading(2, f"{table.title} — {result.benchmark} ({data_kind})")]
    if result.synthetic:
        blocks.append(Text(SYNTHETIC_WARNING))
    blocks.append(
        Text(
            f"Rule: {rule_text(rule, result.ks)}. Selection metric: {metric_text(result.metric)}; "
            "it chooses among configurations where several match a row (see Configuration). "
            f"Studies: {', '.join(result.studies) or DASH}."
        )
    )
    blocks += [Text(line) for line in protocol_lines(result)]
    if table.note:
        blocks.append(Text(f"Paper's note: {table.note}"))
    blocks.append(Text(LEGEND))
    settings = _setting_columns(result)
    columns = _columns(result)
    headers = ["Setting", *(SETTING_NAMES.get(k, k) for k in settings)]
    headers += [pair_label(c) if c in result.pairs else c for c in columns]
    rows = [
        [r.row.setting, *(_setting_value(r, k) for k in settings)]
        + [cell_text(result, r, c) for c in columns]
        for r in result.rows
    ]
    blocks.append(Table(headers, rows))
    partial = [r for r in result.rows if r.row.method and r.cells and r.missing_pairs]
    if partial:
        blocks.append(
            Text(
                f"Values marked * are over fewer pairs than the paper's {len(result.pairs)}; "
                "they are not comparable with the paper's mean."
            )
        )
    blocks.append(Heading(3, f"{table.title} — per cell: fused, RGB and flow ({result.benchmark})"))
    detail, data = _detail(result, rule)
    stem = f"{table.key}_{result.benchmark}"
    blocks.append(Table(detail[0], detail[1], csv_name=stem, data=data))
    if result.missing:
        blocks += [
            Text(
                f"**Missing** ({result.benchmark}): planned by the studies, but no finished run "
                "(failed, stopped early or not run yet):"
            ),
            Bullets(result.missing),
        ]
    if result.unplanned:
        blocks.append(
            Text(
                f"Not planned by the studies ({result.benchmark}; empty by design, not missing): "
                + "; ".join(result.unplanned)
                + "."
            )
        )
    if any(r.row.method is None for r in result.rows):
        blocks.append(
            Text("Rows marked n/a are other papers' setups (not reproducible with cmcl).")
        )
    if result.notes:
        blocks += [Text("Notes:"), Bullets(sorted(set(result.notes)))]
    return blocks


def _detail(
    result: TableResult, rule: str
) -> tuple[tuple[list[str], list[list[str]]], pd.DataFrame]:
    """One line per reproduced pair and per mean: fused, RGB, flow, paper, Δ, gain."""
    headers = [
        "Setting",
        "Column",
        "n",
        "Fused",
        "RGB",
        "Flow",
        "Paper",
        "Δ",
        "Gain",
        "Configuration",
    ]
    rows: list[list[str]] = []
    records: list[dict[str, Any]] = []
    for r in result.rows:
        for column in [*result.pairs, "Mean", "Gain via sampling"]:
            cell = r.cells.get(column)
            if cell is None or cell.fused.n == 0:
                continue
            records.append(_record(result, rule, r, column, cell))
            if column in result.pairs:
                rows.append(_detail_pair(r, cell))
            else:
                rows.append(_detail_summary(r, column, cell, result))
    return (headers, rows), pd.DataFrame.from_records(records)


def _spread(stat: SeedStat) -> str:
    return seed_text(stat).rsplit(" (", 1)[0]


def _detail_pair(r: RowResult, cell: Cell) -> list[str]:
    return [
        r.row.label(),
        pair_label(cell.column),
        str(cell.fused.n),
        _spread(cell.fused),
        _spread(cell.rgb),
        _spread(cell.flow),
        number(cell.paper),
        number(cell.diff, signed=True),
        number(cell.gain, signed=True),
        cell.choice,
    ]


def _detail_summary(r: RowResult, column: str, cell: Cell, result: TableResult) -> list[str]:
    signed = column.startswith("Gain")
    gain = r.cells.get("Gain")
    if column == "Mean":
        gain_text = number(gain.fused.mean, True) + ci_text(gain.ci) if gain else DASH
    else:
        gain_text = DASH
    pairs = ", ".join(pair_label(p) for p in cell.pairs)
    scope = "all pairs" if len(cell.pairs) == len(result.pairs) else f"only {pairs}"
    return [
        r.row.label(),
        column,
        str(cell.fused.n),
        number(cell.fused.mean, signed) + ci_text(cell.ci),
        number(cell.rgb.mean),
        number(cell.flow.mean),
        number(cell.paper, signed),
        number(cell.diff, signed=True),
        gain_text,
        f"mean over {scope}",
    ]


def _record(
    result: TableResult, rule: str, r: RowResult, column: str, cell: Cell
) -> dict[str, Any]:
    ci = cell.ci or (math.nan, math.nan)
    gain, gain_ci = cell.gain, cell.gain_ci
    if column == "Mean" and "Gain" in r.cells:
        gain, gain_ci = r.cells["Gain"].fused.mean, r.cells["Gain"].ci
    gain_ci = gain_ci or (math.nan, math.nan)
    return {
        "table": result.table.key,
        "benchmark": result.benchmark,
        "synthetic": result.synthetic,
        "rule": rule,
        "selection_metric": result.metric,
        "setting": r.row.setting,
        "row": r.row.label(),
        "method": r.row.method,
        "column": column,
        "n": cell.fused.n,
        "mean": cell.fused.mean,
        "std": cell.fused.std,
        "ci_low": ci[0],
        "ci_high": ci[1],
        "rgb_mean": cell.rgb.mean,
        "rgb_std": cell.rgb.std,
        "flow_mean": cell.flow.mean,
        "flow_std": cell.flow.std,
        "paper": cell.paper,
        "diff": cell.diff,
        "gain_vs_source_only": gain,
        "gain_ci_low": gain_ci[0],
        "gain_ci_high": gain_ci[1],
        "pairs": " ".join(cell.pairs),
        "configuration": cell.choice,
    }
