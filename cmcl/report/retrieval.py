"""Cross-domain retrieval (the paper's Figure 6) from one run's ``features.parquet``.

For each target segment, the nearest source segment by cosine similarity in
the ``feature`` space, per modality and with both (concatenated L2-normalised
RGB and flow features); accuracy is the percentage whose neighbour has the
target segment's class.

No torch and no matplotlib: the run worker calls :func:`retrieval_metrics`
once at the end of training to put the numbers in the summary's ``extra`` map
(keys :data:`EXTRA_KEYS`), so that a report of many runs never reads their
feature files; the report computes them from ``features.parquet`` only for runs
whose summary has none (results format version 1, bare run directories).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from cmcl.filestore import FileStore, is_uri

COLUMNS = ("domain", "split", "segment_index", "label", "modality", "space", "vector")
RETRIEVALS = (("rgb", ("rgb",)), ("flow", ("flow",)), ("rgb+flow", ("rgb", "flow")))
"""Name -> the modalities whose features are concatenated."""
EXTRA_KEYS = {
    "rgb": "retrieval_rgb",
    "flow": "retrieval_flow",
    "rgb+flow": "retrieval_rgb_flow",
}
"""Retrieval name -> key in a summary's ``extra`` map (accuracy in %, NaN when not computable)."""
TARGETS_KEY = "retrieval_targets"
"""``extra`` key: target segments scored by the RGB+flow retrieval."""


def _source(path: str | Path) -> Any:
    """A local path as is; a URI opened through its store (object stores, read once)."""
    text = str(path)
    if not is_uri(text):
        return text.removeprefix("file://")
    parent, _, name = text.rpartition("/")
    return FileStore(parent).open_input_file(name)


def read_features(path: str | Path, *, spaces: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a features file (a path or a URI), checking its columns (docs/results-format.md).

    ``spaces``: only rows of these spaces (retrieval needs ``feature`` only, half the file).
    """
    columns = list(pq.read_schema(_source(path)).names)
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; expected {', '.join(COLUMNS)}"
        )
    filters = [("space", "in", list(spaces))] if spaces else None
    table = pq.read_table(_source(path), columns=list(COLUMNS), filters=filters)
    return table.to_pandas()


def matrix(frame: pd.DataFrame) -> np.ndarray:
    """The ``vector`` column stacked. Shape: (N, D)."""
    return np.stack([np.asarray(v, dtype=np.float32) for v in frame["vector"]])


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm. Shape: (N, D) -> (N, D)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


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
    joined = np.concatenate([normalised(matrix(p.loc[index])) for p in parts], axis=1)
    meta = parts[0].loc[index, ["label"]].reset_index()
    return meta, normalised(joined)


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


def _accuracy(table: pd.DataFrame) -> float:
    return 100.0 * float(table["same_class"].mean()) if len(table) else math.nan


def retrieval_accuracy(frame: pd.DataFrame) -> dict[str, float]:
    """Retrieval accuracy (%) per modality and with both: keys ``rgb``, ``flow``, ``rgb+flow``."""
    return {name: _accuracy(retrieval(frame, modalities)) for name, modalities in RETRIEVALS}


def retrieval_metrics(features_path: str | Path) -> dict[str, float]:
    """The numbers a run's summary keeps in ``extra`` (keys :data:`EXTRA_KEYS`, :data:`TARGETS_KEY`).

    ``features_path``: the run's ``features.parquet`` (a local path or a URI).
    """
    frame = read_features(features_path, spaces=("feature",))
    metrics = {}
    for name, modalities in RETRIEVALS:
        table = retrieval(frame, modalities)
        metrics[EXTRA_KEYS[name]] = _accuracy(table)
        if name == "rgb+flow":
            metrics[TARGETS_KEY] = float(len(table))
    return metrics


def accuracy_from_extra(extra: Mapping[str, float] | None) -> dict[str, float] | None:
    """``retrieval_accuracy``'s dict from a summary's ``extra``; None when it has no retrieval."""
    if not extra or not all(key in extra for key in EXTRA_KEYS.values()):
        return None
    return {name: float(extra[key]) for name, key in EXTRA_KEYS.items()}
