"""The paper's feature figures from ``runs/*/features.parquet``.

- t-SNE (Figures 5 and 7): the four feature spaces, RGB and flow before the
  projection head (``feature``) and after it (``projection``). Each space is
  embedded once with source and target together (so the two domains share
  coordinates), then drawn per domain, coloured by class. At most
  ``MAX_TSNE_POINTS`` segments per space are embedded (seeded subsample);
  scikit-learn TSNE with PCA initialisation and ``random_state=0``.
- Retrieval (Figure 6): :mod:`cmcl.report.retrieval` (no matplotlib there, so
  the run worker can import it), re-exported here.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cmcl.common import pair_label
from cmcl.report.document import Figure
from cmcl.report.plots import data_kind, save
from cmcl.report.retrieval import COLUMNS as COLUMNS
from cmcl.report.retrieval import matrix, normalised
from cmcl.report.retrieval import read_features as read_features
from cmcl.report.retrieval import retrieval as retrieval
from cmcl.report.retrieval import retrieval_accuracy as retrieval_accuracy
from cmcl.report.retrieval import retrieval_metrics as retrieval_metrics

MAX_TSNE_POINTS = 1200
SPACES = (("feature", "rgb"), ("feature", "flow"), ("projection", "rgb"), ("projection", "flow"))
SPACE_TITLES = {
    ("feature", "rgb"): "RGB, before the head",
    ("feature", "flow"): "flow, before the head",
    ("projection", "rgb"): "RGB, after the head",
    ("projection", "flow"): "flow, after the head",
}
# 12 distinguishable classes: tab10 then two dark colours; markers separate the last ones further.
CLASS_COLOURS = [*plt.cm.tab10.colors, (0.0, 0.0, 0.0), (0.55, 0.35, 0.0)]
CLASS_MARKERS = ["o"] * 10 + ["s", "^"]


def _embed(matrix: np.ndarray) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(2.0, (len(matrix) - 1) / 3.0)))
    tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=0)
    # One thread: on a shared machine TSNE's OpenMP threads spin-wait on each other and a
    # 32-point embedding took 18 s instead of 0.2 s (2-core sandbox, load 7).
    with threadpool_limits(limits=1):
        return tsne.fit_transform(matrix)


def _scatter(
    ax: plt.Axes, points: np.ndarray, labels: np.ndarray, marker: str | None = None
) -> None:
    for label in np.unique(labels):
        chosen = labels == label
        ax.scatter(
            points[chosen, 0],
            points[chosen, 1],
            s=14,
            alpha=0.8,
            color=CLASS_COLOURS[int(label) % len(CLASS_COLOURS)],
            marker=marker or CLASS_MARKERS[int(label) % len(CLASS_MARKERS)],
            linewidths=1.0 if marker == "x" else 0,
        )


def tsne_figure(
    frame: pd.DataFrame, folder: Path, stem: str, *, title: str, class_names: tuple[str, ...]
) -> Figure | None:
    """Spaces in columns; rows: source, target, both overlaid; coloured by class.

    Returns None when no space has features of both domains.
    """
    spaces = [
        s
        for s in SPACES
        if frame[(frame["space"] == s[0]) & (frame["modality"] == s[1])]["domain"].nunique() == 2
    ]
    if not spaces:
        return None
    rng = np.random.default_rng(0)
    fig, axes = plt.subplots(3, len(spaces), figsize=(3.6 * len(spaces), 10.0), squeeze=False)
    labels_seen: set[int] = set()
    for column, (space, modality) in enumerate(spaces):
        rows = frame[(frame["space"] == space) & (frame["modality"] == modality)]
        if len(rows) > MAX_TSNE_POINTS:
            rows = rows.iloc[np.sort(rng.choice(len(rows), MAX_TSNE_POINTS, replace=False))]
        points = _embed(normalised(matrix(rows)))
        labels = rows["label"].to_numpy()
        labels_seen.update(int(v) for v in labels)
        source = (rows["domain"] == "source").to_numpy()
        _scatter(axes[0, column], points[source], labels[source])
        _scatter(axes[1, column], points[~source], labels[~source])
        _scatter(axes[2, column], points[source], labels[source], marker="o")
        _scatter(axes[2, column], points[~source], labels[~source], marker="x")
        axes[0, column].set_title(SPACE_TITLES[(space, modality)], fontsize=10)
        for row, count in enumerate((source.sum(), (~source).sum(), len(source))):
            axes[row, column].set_xlabel(f"{count} segments", fontsize=8)
    for row, name in enumerate(("source", "target", "source (o) + target (x)")):
        axes[row, 0].set_ylabel(name, fontsize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        plt.Line2D(
            [],
            [],
            linestyle="",
            marker=CLASS_MARKERS[c % len(CLASS_MARKERS)],
            color=CLASS_COLOURS[c % len(CLASS_COLOURS)],
            markersize=7,
            label=class_names[c] if c < len(class_names) else f"class {c}",
        )
        for c in sorted(labels_seen)
    ]
    fig.legend(
        handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), title="class", fontsize=9
    )
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return Figure(save(fig, folder, stem), title.replace("\n", " "))


def describe_run(run: dict, benchmark: str) -> str:
    return (
        f"{run['method']}, {pair_label(run['pair'])}, seed {run['seed']} — {benchmark} "
        f"({data_kind(benchmark)})"
    )
