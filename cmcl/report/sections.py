"""Report sections other than the paper tables: overview, selection metrics, features."""

from __future__ import annotations

import pandas as pd

from cmcl.common import pair_label
from cmcl.report.document import Block, Bullets, Heading, Table, Text
from cmcl.report.protocol import FEATURE, modes_text, run_modes
from cmcl.report.selection import (
    CRITERIA,
    checkpoint_table,
    configuration_picks,
    display_rows,
)
from cmcl.report.store import Results

MODE_COLUMN = (
    "Mode, from each run's `model.backbone`: video (end-to-end I3D on frames, the paper's "
    "protocol) or feature (small layers on frozen I3D features of fixed windows, no crop or flip "
    "augmentation; on the synthetic benchmarks, generated vectors)."
)


def feature_mode_note(runs: pd.DataFrame) -> list[Block]:
    """One caption line for a table built from runs of several studies, where some are in
    feature mode (the paper tables say more, see :mod:`cmcl.report.protocol`)."""
    modes = run_modes(runs)
    feature = runs[modes == FEATURE]
    if feature.empty:
        return []
    studies = ", ".join(sorted(feature["study"].astype(str).unique()))
    everything = "All runs" if len(feature) == len(runs) else f"{len(feature)} of {len(runs)} runs"
    return [
        Text(
            f"{everything} here are in feature mode (studies: {studies}; see the Mode column of "
            "'What was read'): not the paper's end-to-end protocol."
        )
    ]


def overview_blocks(results: Results, runs: pd.DataFrame) -> list[Block]:
    """What was read: one line per study, unfinished runs, unreadable files."""
    rows = []
    for study in results.studies:
        mine = runs[runs["study"] == study.name]
        rows.append(
            [
                study.name,
                ", ".join(sorted(mine["benchmark"].unique())) or "—",
                modes_text(mine),
                ", ".join(sorted(mine["method"].unique())) or "—",
                ", ".join(pair_label(p) for p in sorted(mine["pair"].unique())) or "—",
                str(mine["seed"].nunique()),
                f"{int(mine['finished'].sum())} / {int((~mine['finished']).sum())}",
                study.selection_metric or "—",
                study.objective or "—",
                ", ".join(study.tables) if study.tables else "(all it fills)",
            ]
        )
    headers = [
        "Study",
        "Benchmarks",
        "Mode",
        "Methods",
        "Pairs",
        "Seeds",
        "Runs finished / unfinished",
        "Selection metric",
        "Objective",
        "Paper tables",
    ]
    blocks: list[Block] = [Heading(1, "What was read"), Text(MODE_COLUMN), Table(headers, rows)]
    unfinished = runs[~runs["finished"]]
    if len(unfinished):
        blocks.append(
            Text(
                f"{len(unfinished)} unfinished run(s) (stopped early by the study's scheduler, or "
                "without a summary and short of cfg.train.steps) are left out of every table: "
                + ", ".join(sorted(unfinished["run_key"])[:20])
                + (" ..." if len(unfinished) > 20 else "")
            )
        )
    if results.problems:
        blocks += [Text("Files that could not be used:"), Bullets(results.problems)]
    return blocks


def selection_blocks(checkpoints: pd.DataFrame, runs: pd.DataFrame, rule: str) -> list[Block]:
    """Configuration and checkpoint choices by each criterion against the oracle.

    ``checkpoints``: per run, :func:`cmcl.report.selection.checkpoint_values`.
    """
    blocks: list[Block] = [
        Heading(1, "Selection metrics: what each criterion would pick"),
        Text(
            "The oracle picks by target accuracy (uses target labels, as the paper's protocol does); "
            f"{', '.join(CRITERIA)} use no target labels. 'lost' = oracle's target accuracy − the "
            f"pick's. Accuracies under rule {rule}; synthetic studies are marked in the Benchmark column."
        ),
        *feature_mode_note(runs),
    ]
    configs = configuration_picks(runs)
    if len(configs):
        headers, rows = display_rows(configs, with_settings=True)
        blocks += [
            Heading(2, "Choosing a configuration (per study, benchmark, pair, method)"),
            Table(headers, rows, csv_name="selection_configurations", data=configs),
        ]
    else:
        blocks.append(
            Text("No study group has more than one configuration: nothing to choose between.")
        )
    checkpoints = checkpoint_table(checkpoints, runs)
    if len(checkpoints):
        headers, rows = display_rows(checkpoints, with_settings=False)
        blocks += [
            Heading(2, "Choosing a checkpoint within each run (mean over the group's runs)"),
            Table(headers, rows, csv_name="selection_checkpoints", data=checkpoints),
        ]
    return blocks
