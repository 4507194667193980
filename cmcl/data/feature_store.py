"""The feature store: pre-extracted window features on Arrow/Parquet.

Layout of a store directory::

    meta.json                 {"format": "cmcl-feature-store", "version": 1, "benchmark": ...,
                               "class_names": [...], "feature_dim": D, "domains": [...], ...}
    {domain}_{split}.parquet  one row per segment

Columns of a split file:

    segment_id  string     unique within the split (EPIC uid, video path, ...)
    domain      string     e.g. D1, U
    split       string     train | test
    label       int32      class index
    rgb         fixed_size_list<fixed_size_list<float32, D>, K>   K window features
    flow        fixed_size_list<fixed_size_list<float32, D>, K>

Window k of ``rgb`` and window k of ``flow`` come from the same temporal
position, so ``synchronised`` sampling takes the same k for both modalities;
``independent`` sampling draws k separately per modality. Evaluation averages
the softmax over all K windows. Extra columns (frames, video id) are allowed
and ignored by the reader.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cmcl.data.base import EVAL_SPLITS, TRAIN_SPLITS, DataInfo, PairData, StepSampler, shard_range
from cmcl.data.store_errors import DamagedFileError

FORMAT = "cmcl-feature-store"
VERSION = 1
REQUIRED_COLUMNS = ("segment_id", "domain", "split", "label", "rgb", "flow")


@dataclass(frozen=True, eq=False)
class FeatureSplit:
    """One (domain, split) of a store in memory.

    Shape:
        rgb, flow: (N, K, D) float32; labels: (N,) long
    """

    domain: str
    split: str
    segment_ids: tuple[str, ...]
    labels: torch.Tensor
    rgb: torch.Tensor
    flow: torch.Tensor

    def __len__(self) -> int:
        return len(self.segment_ids)

    @property
    def num_windows(self) -> int:
        return self.rgb.shape[1]


def split_path(root: str | Path, domain: str, split: str) -> Path:
    return Path(root) / f"{domain}_{split}.parquet"


def _windows_array(values: np.ndarray) -> pa.Array:
    _, k, d = values.shape
    flat = pa.array(np.ascontiguousarray(values, dtype=np.float32).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(pa.FixedSizeListArray.from_arrays(flat, d), k)


def split_table(
    *,
    domain: str,
    split: str,
    segment_ids: Sequence[str],
    labels: np.ndarray,
    rgb: np.ndarray,
    flow: np.ndarray,
    extra: dict[str, Sequence[Any]] | None = None,
) -> pa.Table:
    """The Arrow table of one split (or of a part of one). ``rgb``/``flow``: (N, K, D) arrays."""
    rgb, flow = np.asarray(rgb), np.asarray(flow)
    n = len(segment_ids)
    if rgb.ndim != 3 or rgb.shape != flow.shape or rgb.shape[0] != n or len(labels) != n:
        raise ValueError(
            f"{domain}_{split}: expected rgb and flow of shape (N, K, D) with N={n} segments, "
            f"got rgb {rgb.shape}, flow {flow.shape}, {len(labels)} labels"
        )
    columns = {
        "segment_id": pa.array([str(s) for s in segment_ids], pa.string()),
        "domain": pa.array([domain] * n, pa.string()),
        "split": pa.array([split] * n, pa.string()),
        "label": pa.array(np.asarray(labels, dtype=np.int32)),
        "rgb": _windows_array(rgb),
        "flow": _windows_array(flow),
    }
    for name, values in (extra or {}).items():
        columns[name] = pa.array(list(values))
    return pa.table(columns)


def write_table(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically (a reader never sees a partial file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    tmp.replace(path)
    return path


def write_split(
    root: str | Path,
    *,
    domain: str,
    split: str,
    segment_ids: Sequence[str],
    labels: np.ndarray,
    rgb: np.ndarray,
    flow: np.ndarray,
    extra: dict[str, Sequence[Any]] | None = None,
) -> Path:
    """Write one split file (atomically). ``rgb``/``flow``: (N, K, D) arrays."""
    table = split_table(
        domain=domain,
        split=split,
        segment_ids=segment_ids,
        labels=labels,
        rgb=rgb,
        flow=flow,
        extra=extra,
    )
    return write_table(table, split_path(root, domain, split))


def write_meta(root: str | Path, meta: dict[str, Any]) -> Path:
    path = Path(root) / "meta.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"format": FORMAT, "version": VERSION, **meta}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_meta(root: str | Path) -> dict[str, Any]:
    path = Path(root) / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a feature store (no meta.json)")
    try:
        meta = json.loads(path.read_text())
    except ValueError as error:
        raise DamagedFileError(path, f"not JSON: {error}") from None
    if not isinstance(meta, dict):
        raise DamagedFileError(path, f"expected a JSON object, got {type(meta).__name__}")
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: store version {meta.get('version')}, this cmcl reads {VERSION}")
    return meta


def _windows_tensor(column: pa.ChunkedArray, path: Path, name: str) -> torch.Tensor:
    array = column.combine_chunks()
    if not pa.types.is_fixed_size_list(array.type) or not pa.types.is_fixed_size_list(
        array.type.value_type
    ):
        raise ValueError(f"{path}: column {name!r} must be a fixed-size list of fixed-size lists")
    k, d = array.type.list_size, array.type.value_type.list_size
    values = array.flatten().flatten().to_numpy(zero_copy_only=False)
    # A fresh, writable copy: Arrow buffers are read-only and torch would share them.
    return torch.from_numpy(np.array(values, dtype=np.float32).reshape(len(array), k, d))


def read_split(root: str | Path, domain: str, split: str) -> FeatureSplit:
    path = split_path(root, domain, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing split file of the feature store")
    try:
        # The footer first: a missing column is then told apart from a damaged file.
        missing = [c for c in REQUIRED_COLUMNS if c not in pq.read_schema(path).names]
        if missing:
            raise ValueError(f"{path}: missing columns {missing}")
        table = pq.read_table(path, columns=list(REQUIRED_COLUMNS))
    except (pa.ArrowException, OSError) as error:
        raise DamagedFileError(path, str(error).replace(f"'{path}'", "the file")) from None
    rgb = _windows_tensor(table["rgb"], path, "rgb")
    flow = _windows_tensor(table["flow"], path, "flow")
    if rgb.shape != flow.shape:
        raise ValueError(
            f"{path}: rgb windows {tuple(rgb.shape)} != flow windows {tuple(flow.shape)}"
        )
    return FeatureSplit(
        domain=domain,
        split=split,
        segment_ids=tuple(table["segment_id"].to_pylist()),
        labels=torch.from_numpy(table["label"].to_numpy().astype(np.int64)),
        rgb=rgb,
        flow=flow,
    )


class FeaturePairData(PairData):
    """A pair served from a feature store held in memory.

    Training picks one of the K stored windows per segment and modality
    (independently, or the same one when ``synchronised``); evaluation returns
    all K windows (``"test"``) or the middle one (``"centre"``).
    """

    def __init__(
        self, root: str | Path, *, benchmark: str, source: str, target: str, synchronised: bool
    ) -> None:
        from cmcl.data.store_check import refuse_bad_split

        meta = read_meta(root)
        self.root = Path(root)
        self.synchronised = synchronised
        wanted = {
            "source_train": (source, "train"),
            "target_train": (target, "train"),
            "target_test": (target, "test"),
            "source_val": (source, "test"),
        }
        self.splits = {name: read_split(root, *where) for name, where in wanted.items()}
        for name, split in self.splits.items():
            # On load, so that a NaN or an empty split never reaches a loss or a metric.
            refuse_bad_split(
                split, split_path(root, *wanted[name]), num_classes=len(meta["class_names"])
            )
        dim = self.splits["source_train"].rgb.shape[-1]
        self.info = DataInfo(
            benchmark=benchmark,
            source=source,
            target=target,
            class_names=tuple(meta["class_names"]),
            sizes={name: len(s) for name, s in self.splits.items()},
            source_labels=self.splits["source_train"].labels.clone(),
            input_shapes={"rgb": (dim,), "flow": (dim,)},
        )
        self._samplers: dict[tuple[str, int, int], StepSampler] = {}

    def _batch(self, split: FeatureSplit, indices: torch.Tensor, seeds: torch.Tensor) -> dict:
        k = split.num_windows
        w_rgb = seeds % k
        w_flow = w_rgb if self.synchronised else (seeds // k) % k
        return {
            "rgb": split.rgb[indices, w_rgb],
            "flow": split.flow[indices, w_flow],
            "label": split.labels[indices],
            "index": indices,
            "domain": "source" if split is self.splits["source_train"] else "target",
        }

    def train_batches(
        self, split: str, *, batch_size: int, seed: int, stage: int, start_step: int
    ) -> Iterator[dict]:
        self.check_split(split, TRAIN_SPLITS)
        data = self.splits[split]
        sampler = StepSampler(num_items=len(data), batch_size=batch_size, seed=seed, split=split)
        step = start_step
        while True:
            indices, seeds = sampler.local_batch(stage, step)
            yield self._batch(data, indices, seeds)
            step += 1

    def eval_batches(
        self,
        split: str,
        *,
        batch_size: int,
        windows: str = "test",
        indices: torch.Tensor | None = None,
    ) -> Iterator[dict]:
        self.check_split(split, EVAL_SPLITS)
        if windows not in ("test", "centre"):
            raise ValueError(f"windows must be 'test' or 'centre', got {windows!r}")
        data = self.splits[split]
        wanted = (
            torch.arange(len(data))[list(shard_range(len(data)))] if indices is None else indices
        )
        domain = "source" if split.startswith("source") else "target"
        for start in range(0, len(wanted), batch_size):
            indices = wanted[start : start + batch_size]
            rgb, flow = data.rgb[indices], data.flow[indices]
            if windows == "centre":
                middle = data.num_windows // 2
                rgb, flow = rgb[:, middle], flow[:, middle]
            yield {
                "rgb": rgb,
                "flow": flow,
                "label": data.labels[indices],
                "index": indices,
                "domain": domain,
            }
