"""The paper's feature figures from ``runs/*/features.parquet``.

- t-SNE (Figures 5 and 7): the four feature spaces, RGB and flow before the
  projection head (``feature``) and after it (``projection``). Each space is
  embedded once with source and target together (so the two domains share
  coordinates), then drawn per domain, coloured by class. At most
  ``MAX_TSNE_POINTS`` segments per space are embedded (seeded subsample);
  scikit-learn TSNE with PCA initialisation and ``random_state=0``.
- Retrieval (Figure 6): for each target segment, the nearest source segment by
  cosine similarity in the ``feature`` space, per modality and with both
  (concatenated L2-normalised RGB and flow features); accuracy is the fraction
  whose neighbour has the target segment's class.
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

COLUMNS = ("domain", "split", "segment_index", "label", "modality", "space", "vector")
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


def read_features(path: Path) -> pd.DataFrame:
    """Read a features file, checking its columns (see docs/results-format.md)."""
    frame = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in frame]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    return frame


def _matrix(frame: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])


def _normalised(matrix: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.maximum(norms, 1e-12)


def _domain_view(
    frame: pd.DataFrame, domain: str, modalities: tuple[str, ...]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Segments of ``domain`` that have every modality, and their concatenated normalised features."""
    rows = frame[(frame["domain"] == domain) & (frame["space"] == "feature")]
    parts, index = [], None
    for modality in modalities:
        part = rows[rows["modality"] == modality].set_index(["split", "segment_index"]).sort_index()
        part = part[~part.index.duplicated()]
        parts.append(part)
        index = part.index if index is None else index.intersection(part.index)
    if index is None or len(index) == 0:
        return pd.DataFrame(), np.zeros((0, 0), dtype=np.float32)
    matrix = np.concatenate([_normalised(_matrix(p.loc[index])) for p in parts], axis=1)
    meta = parts[0].loc[index, ["label"]].reset_index()
    return meta, _normalised(matrix)


def retrieval(frame: pd.DataFrame, modalities: tuple[str, ...]) -> pd.DataFrame:
    """One row per target segment: its nearest source segment, classes, cosine, match."""
    source, source_x = _domain_view(frame, "source", modalities)
    target, target_x = _domain_view(frame, "target", modalities)
    if source.empty or target.empty:
        return pd.DataFrame()
    similarity = target_x @ source_x.T
    nearest = similarity.argmax(axis=1)
    return pd.DataFrame(
        {
            "target_split": target["split"].to_numpy(),
            "target_segment": target["segment_index"].to_numpy(),
            "target_label": target["label"].to_numpy(),
            "source_split": source["split"].to_numpy()[nearest],
            "source_segment": source["segment_index"].to_numpy()[nearest],
            "source_label": source["label"].to_numpy()[nearest],
            "cosine": similarity[np.arange(len(target)), nearest],
        }
    ).assign(same_class=lambda d: d["target_label"] == d["source_label"])


def retrieval_accuracy(frame: pd.DataFrame) -> dict[str, float]:
    """Retrieval accuracy (%) per modality and with both: keys ``rgb``, ``flow``, ``rgb+flow``."""
    result = {}
    for name, modalities in (("rgb", ("rgb",)), ("flow", ("flow",)), ("rgb+flow", ("rgb", "flow"))):
        table = retrieval(frame, modalities)
        result[name] = 100.0 * float(table["same_class"].mean()) if len(table) else float("nan")
    return result


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
        points = _embed(_normalised(_matrix(rows)))
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
