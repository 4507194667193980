"""Report sections other than the paper tables: overview, selection metrics, features."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from cmcl.common import pair_label
from cmcl.report.choose import choose
from cmcl.report.document import Block, Bullets, Heading, Table, Text
from cmcl.report.features import (
    describe_run,
    read_features,
    retrieval,
    retrieval_accuracy,
    tsne_figure,
)
from cmcl.report.names import run_file_names
from cmcl.report.paper import benchmark_family, class_names, family_pairs
from cmcl.report.plots import METHOD_COLOURS
from cmcl.report.protocol import FEATURE, modes_text, run_modes
from cmcl.report.selection import (
    CRITERIA,
    checkpoint_picks,
    configuration_picks,
    display_rows,
)
from cmcl.report.store import Results

RETRIEVAL_ROWS = 10
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
                f"{len(unfinished)} unfinished run(s) (no summary.json and fewer adaptation steps than "
                "cfg.train.steps) are left out of every table: "
                + ", ".join(sorted(unfinished["run_key"])[:20])
                + (" ..." if len(unfinished) > 20 else "")
            )
        )
    if results.problems:
        blocks += [Text("Files that could not be used:"), Bullets(results.problems)]
    return blocks


def selection_blocks(evals: pd.DataFrame, runs: pd.DataFrame, rule: str) -> list[Block]:
    """Configuration and checkpoint choices by each criterion against the oracle."""
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
    checkpoints = checkpoint_picks(evals, runs)
    if len(checkpoints):
        headers, rows = display_rows(checkpoints, with_settings=False)
        blocks += [
            Heading(2, "Choosing a checkpoint within each run (mean over the group's runs)"),
            Table(headers, rows, csv_name="selection_checkpoints", data=checkpoints),
        ]
    return blocks


def _feature_runs(runs: pd.DataFrame, metric: str, limit: int) -> list[dict]:
    """One run per (benchmark, method): first pair in the paper's order, chosen config, lowest seed."""
    picked = []
    with_features = runs[runs["has_features"]]
    for benchmark, group in with_features.groupby("benchmark"):
        pairs = [p for p in family_pairs(benchmark_family(benchmark)[0]) if p in set(group["pair"])]
        pairs = pairs or sorted(group["pair"].unique())
        order = [m for m in ("cmco", "source_only", *METHOD_COLOURS) if m in set(group["method"])]
        order += sorted(set(group["method"]) - set(order))
        for method in dict.fromkeys(order):
            mine = group[(group["method"] == method) & (group["pair"] == pairs[0])]
            choice = choose(mine, metric=metric)
            if choice is not None:
                picked.append(choice.runs.sort_values("seed").iloc[0].to_dict())
    return picked[:limit]


def feature_blocks(runs: pd.DataFrame, folder: Path, metric: str, max_tsne: int) -> list[Block]:
    """Retrieval accuracy for every run with features; t-SNE and a retrieval table for a few."""
    with_features = runs[runs["has_features"]]
    if with_features.empty:
        return [
            Heading(1, "Features"),
            Text("No run has a features.parquet: no t-SNE or retrieval."),
        ]
    blocks: list[Block] = [
        Heading(1, "Cross-domain retrieval (the paper's Figure 6)"),
        Text(
            "For each target segment, the nearest source segment by cosine similarity in the feature "
            "space (before the projection head); accuracy = % of target segments whose neighbour "
            "has the same class. RGB+flow concatenates the normalised features of both streams."
        ),
        *feature_mode_note(with_features),
    ]
    records, problems = [], []
    frames: dict[str, pd.DataFrame] = {}
    for run in with_features.to_dict("records"):
        try:
            frame = read_features(Path(run["run_dir"]) / "features.parquet")
        except Exception as error:
            problems.append(f"{run['run_key']}: {error}")
            continue
        frames[run["run_key"]] = frame
        records.append(
            {
                **{k: run[k] for k in ("study", "benchmark", "pair", "method", "seed")},
                **retrieval_accuracy(frame),
            }
        )
    if records:
        table = pd.DataFrame(records)
        summary = table.groupby(["study", "benchmark", "pair", "method"], sort=True).agg(
            runs=("seed", "size"),
            rgb=("rgb", "mean"),
            flow=("flow", "mean"),
            both=("rgb+flow", "mean"),
        )
        rows = [
            [
                *key[:2],
                pair_label(key[2]),
                key[3],
                str(int(r.runs)),
                f"{r.rgb:.1f}",
                f"{r.flow:.1f}",
                f"{r.both:.1f}",
            ]
            for key, r in summary.iterrows()
        ]
        headers = [
            "Study",
            "Benchmark",
            "Pair",
            "Method",
            "Runs",
            "RGB (%)",
            "Flow (%)",
            "RGB+flow (%)",
        ]
        blocks.append(Table(headers, rows, csv_name="retrieval_accuracy", data=table))
    if problems:
        blocks.append(Bullets(problems))
    tsne: list[Block] = [Heading(1, "t-SNE of the feature spaces (the paper's Figures 5 and 7)")]
    file_names = run_file_names(runs)
    for run in _feature_runs(with_features, metric, max_tsne):
        frame = frames.get(run["run_key"])
        if frame is None:
            continue
        name = describe_run(run, run["benchmark"])
        neighbours = retrieval(frame, ("rgb", "flow"))
        if len(neighbours):
            accuracy = 100.0 * float(neighbours["same_class"].mean())
            blocks += [
                Heading(2, f"Nearest source segment of each target segment: {name}"),
                Text(
                    f"First {min(RETRIEVAL_ROWS, len(neighbours))} of {len(neighbours)} target "
                    f"segments (RGB+flow features); retrieval accuracy {accuracy:.1f}% over all of them."
                ),
                _retrieval_table(neighbours, run["benchmark"], file_names[run["run_key"]]),
            ]
        stem = f"tsne_{file_names[run['run_key']]}"
        figure = tsne_figure(
            frame,
            folder,
            stem,
            class_names=class_names(run["benchmark"]),
            title=f"t-SNE: {name}\ncoloured by class; source and target embedded together",
        )
        if figure is not None:
            tsne.append(figure)
    if max_tsne == 0:
        tsne.append(Text("t-SNE skipped (--max-tsne 0)."))
    return blocks + tsne


def _retrieval_table(neighbours: pd.DataFrame, benchmark: str, file_name: str) -> Table:
    names = class_names(benchmark)

    def name(label: int) -> str:
        return names[label] if 0 <= label < len(names) else str(label)

    rows = [
        [
            f"{r.target_split} #{r.target_segment}",
            name(int(r.target_label)),
            f"{r.source_split} #{r.source_segment}",
            name(int(r.source_label)),
            f"{r.cosine:.3f}",
            "✓" if r.same_class else "✗",
        ]
        for r in neighbours.head(RETRIEVAL_ROWS).itertuples()
    ]
    headers = [
        "Target segment",
        "Target class",
        "Nearest source segment",
        "Source class",
        "Cosine",
        "Same class",
    ]
    stem = f"retrieval_{file_name}"
    return Table(headers, rows, csv_name=stem, data=neighbours)
