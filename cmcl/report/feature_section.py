"""The report's feature section: retrieval accuracy of every run, t-SNE of a few.

Memory stays flat in the number of runs: a run's retrieval accuracy comes from
its summary's ``extra`` map when the run worker recorded it (results format
version 2, :func:`cmcl.report.retrieval.retrieval_metrics`); otherwise its
``features.parquet`` is read (the ``feature`` space only), scored and dropped
before the next. t-SNE figures and nearest-neighbour tables are drawn for one
representative run per benchmark and method (the first pair in the paper's
order, the configuration the tables choose, the lowest seed; at most
``max_tsne``), or for every run with features when asked (``--all-features``),
reading one run's file at a time.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from cmcl.common import pair_label
from cmcl.report.choose import choose
from cmcl.report.document import Block, Bullets, Heading, Table, Text
from cmcl.report.features import describe_run, tsne_figure
from cmcl.report.names import run_file_names
from cmcl.report.paper import benchmark_family, class_names, family_pairs
from cmcl.report.plots import METHOD_COLOURS
from cmcl.report.progress import Progress
from cmcl.report.retrieval import (
    EXTRA_KEYS,
    read_features,
    retrieval,
    retrieval_accuracy,
)
from cmcl.report.sections import feature_mode_note

RETRIEVAL_ROWS = 10
FEATURES_FILE = "features.parquet"


def features_location(run: dict) -> str:
    """A run's ``features.parquet``: a local path or a URI (``run_dir`` is either)."""
    return f"{str(run['run_dir']).rstrip('/')}/{FEATURES_FILE}"


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


def _recorded(run: dict) -> dict[str, float] | None:
    """The retrieval accuracies the run's summary recorded, or None (compute from the file)."""
    values = {name: run.get(key, math.nan) for name, key in EXTRA_KEYS.items()}
    if all(v is None or (isinstance(v, float) and math.isnan(v)) for v in values.values()):
        return None
    return {k: float("nan") if v is None else float(v) for k, v in values.items()}


def retrieval_records(runs: pd.DataFrame, progress: Progress) -> tuple[list[dict], dict[str, str]]:
    """Per run with features: identity and retrieval accuracy (``rgb``, ``flow``, ``rgb+flow``);
    and run_key -> why, for the runs whose file could not be read."""
    records, problems, computed = [], {}, 0
    columns = ["run_key", "study", "benchmark", "pair", "method", "seed", "run_dir"]
    needed = runs[[*columns, *(k for k in EXTRA_KEYS.values() if k in runs)]]
    for done, run in enumerate(needed.to_dict("records"), start=1):
        accuracy = _recorded(run)
        if accuracy is None:
            try:
                frame = read_features(features_location(run), spaces=("feature",))
            except Exception as error:
                problems[run["run_key"]] = f"{run['run_key']}: {error}"
                continue
            accuracy = retrieval_accuracy(frame)
            computed += 1
            del frame
        records.append(
            {**{k: run[k] for k in ("study", "benchmark", "pair", "method", "seed")}, **accuracy}
        )
        progress.tick(f"retrieval: {done}/{len(runs)} runs ({computed} from features.parquet)")
    progress.stage(
        f"retrieval: {len(records)} runs, {len(records) - computed} from their summaries, "
        f"{computed} from features.parquet"
    )
    return records, problems


def _accuracy_table(records: list[dict]) -> Table:
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
    return Table(headers, rows, csv_name="retrieval_accuracy", data=table)


def feature_blocks(
    runs: pd.DataFrame,
    folder: Path,
    metric: str,
    max_tsne: int,
    *,
    all_features: bool = False,
    progress: Progress | None = None,
) -> list[Block]:
    """Retrieval accuracy for every run with features; t-SNE and a retrieval table for a few
    (for all of them with ``all_features``)."""
    progress = progress or Progress(None)
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
    records, problems = retrieval_records(with_features, progress)
    if records:
        blocks.append(_accuracy_table(records))
    if problems:
        blocks.append(Bullets(list(problems.values())))
    tsne: list[Block] = [Heading(1, "t-SNE of the feature spaces (the paper's Figures 5 and 7)")]
    file_names = run_file_names(runs)
    if all_features:
        chosen = with_features.to_dict("records")
    else:
        chosen = _feature_runs(with_features, metric, max_tsne)
    chosen = [run for run in chosen if run["run_key"] not in problems]
    for done, run in enumerate(chosen, start=1):
        progress.stage(f"t-SNE {done}/{len(chosen)}: {run['run_key']}")
        try:
            frame = read_features(features_location(run))
        except Exception as error:
            blocks.append(Bullets([f"{run['run_key']}: {error}"]))
            continue
        blocks += _neighbour_blocks(frame, run, file_names[run["run_key"]])
        figure = tsne_figure(
            frame,
            folder,
            f"tsne_{file_names[run['run_key']]}",
            class_names=class_names(run["benchmark"]),
            title=f"t-SNE: {describe_run(run, run['benchmark'])}\n"
            "coloured by class; source and target embedded together",
        )
        if figure is not None:
            tsne.append(figure)
    if max_tsne == 0 and not all_features:
        tsne.append(Text("t-SNE skipped (--max-tsne 0)."))
    return blocks + tsne


def _neighbour_blocks(frame: pd.DataFrame, run: dict, file_name: str) -> list[Block]:
    neighbours = retrieval(frame, ("rgb", "flow"))
    if not len(neighbours):
        return []
    accuracy = 100.0 * float(neighbours["same_class"].mean())
    name = describe_run(run, run["benchmark"])
    return [
        Heading(2, f"Nearest source segment of each target segment: {name}"),
        Text(
            f"First {min(RETRIEVAL_ROWS, len(neighbours))} of {len(neighbours)} target "
            f"segments (RGB+flow features); retrieval accuracy {accuracy:.1f}% over all of them."
        ),
        _retrieval_table(neighbours, run["benchmark"], file_name),
    ]


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
    return Table(headers, rows, csv_name=f"retrieval_{file_name}", data=neighbours)
