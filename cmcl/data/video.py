"""Video mode: a (source, target) pair read from frames, served to the engine as a :class:`PairData`.

Batches stack the clips of cmcl.data.clips: training ``rgb`` (N, 3, T, S, S)
and ``flow`` (N, 2, T, S, S); evaluation (N, W, C, T, S, S) with every test
window, or (N, C, T, S, S) with the centre one. The engine's
:class:`~cmcl.data.base.StepSampler` chooses the rows and per-sample seeds of
each step, so a batch depends only on (seed, split, stage, step), whatever the
number of DataLoader workers, and a resumed run reads the same clips.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch.utils.data import DataLoader

from cmcl.data.base import EVAL_SPLITS, TRAIN_SPLITS, DataInfo, PairData, StepSampler, shard_range
from cmcl.data.clips import ClipDataset, ClipRequest, collate_clips
from cmcl.data.frames import FrameLayout
from cmcl.data.segments import SegmentTable
from cmcl.data.windows import WindowSpec

if TYPE_CHECKING:
    from cmcl.config import RunConfig

__all__ = ["ClipDataset", "ClipRequest", "VideoPairData", "build_video_pair_data", "collate_clips"]


class _StepBatches:
    """Endless training batch sampler: step by step, this worker's rows and seeds."""

    def __init__(self, sampler: StepSampler, stage: int, start_step: int) -> None:
        self.sampler, self.stage, self.start_step = sampler, stage, start_step

    def __iter__(self) -> Iterator[list[ClipRequest]]:
        step = self.start_step
        while True:
            indices, seeds = self.sampler.local_batch(self.stage, step)
            yield [
                ClipRequest(int(i), int(s), "train")
                for i, s in zip(indices.tolist(), seeds.tolist(), strict=True)
            ]
            step += 1


class VideoPairData(PairData):
    """A (source, target) pair read from frames, batched by torch DataLoaders.

    ``loader_workers`` worker processes decode and transform clips per split
    (0: in this process); batches are pinned when CUDA is available so the
    engine's non-blocking copies overlap. Evaluation batches hold at most
    ``eval_batch_limit`` segments whatever ``batch_size`` asks: five test
    windows of two 16x224x224 streams take about 80 MB per segment.
    """

    def __init__(
        self,
        splits: dict[str, SegmentTable],
        *,
        benchmark: str,
        class_names: tuple[str, ...],
        root: str | Path,
        layout: FrameLayout,
        spec: WindowSpec,
        crop_size: int = 224,
        synchronised: bool = False,
        test_windows: int = 5,
        loader_workers: int = 2,
        pin_memory: bool | None = None,
        eval_batch_limit: int = 8,
        decoder: str = "auto",
    ) -> None:
        missing = [s for s in (*TRAIN_SPLITS, "target_test", "source_val") if s not in splits]
        if missing:
            raise ValueError(f"VideoPairData needs the splits {missing}")
        self.datasets = {
            name: ClipDataset(
                table,
                root=root,
                layout=layout,
                spec=spec,
                crop_size=crop_size,
                synchronised=synchronised,
                test_windows=test_windows,
                decoder=decoder,
                domain="source" if name.startswith("source") else "target",
            )
            for name, table in splits.items()
        }
        self.loader_workers = loader_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.eval_batch_limit = eval_batch_limit
        channels = {"rgb": 3, "flow": 2}
        self.info = DataInfo(
            benchmark=benchmark,
            source=splits["source_train"].domain,
            target=splits["target_train"].domain,
            class_names=class_names,
            sizes={name: len(table) for name, table in splits.items()},
            source_labels=torch.from_numpy(splits["source_train"].labels.copy()),
            input_shapes={m: (c, spec.frames, crop_size, crop_size) for m, c in channels.items()},
        )

    def _loader(self, dataset: ClipDataset, batches) -> DataLoader:
        workers = self.loader_workers
        return DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=workers,
            collate_fn=collate_clips,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if workers else None,
            # A private generator: by default every DataLoader iterator draws its workers'
            # base seed from torch's global RNG, which would shift the model's dropout
            # draws and break resume equality. Clips never use worker RNG state.
            generator=torch.Generator().manual_seed(0),
        )

    def train_batches(
        self, split: str, *, batch_size: int, seed: int, stage: int, start_step: int
    ) -> Iterator[dict]:
        self.check_split(split, TRAIN_SPLITS)
        dataset = self.datasets[split]
        sampler = StepSampler(num_items=len(dataset), batch_size=batch_size, seed=seed, split=split)
        yield from self._loader(dataset, _StepBatches(sampler, stage, start_step))

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
        dataset = self.datasets[split]
        rows = list(shard_range(len(dataset))) if indices is None else indices.tolist()
        size = max(1, min(batch_size, self.eval_batch_limit))
        batches = [
            [ClipRequest(i, 0, windows) for i in rows[start : start + size]]
            for start in range(0, len(rows), size)
        ]
        if batches:
            yield from self._loader(dataset, batches)


def build_video_pair_data(config: RunConfig) -> VideoPairData:
    """The video-mode :class:`VideoPairData` of a :class:`~cmcl.config.RunConfig`.

    Reads ``data.root`` (frames), ``data.splits`` (annotations; default
    ``data.root/splits``), ``data.rgb_template`` / ``data.flow_template``
    (templates or layout names, cmcl.data.frames), ``data.crop_size``,
    ``data.sampling``, ``data.test_windows`` and ``data.loader_workers``.
    """
    from cmcl.data.benchmarks import get_benchmark
    from cmcl.data.frames import frame_layout
    from cmcl.data.segments import load_segments
    from cmcl.data.windows import EPIC_WINDOW, UCF_HMDB_WINDOW

    data = config.data
    benchmark = get_benchmark(data.benchmark)
    if benchmark.name not in ("epic", "ucf-hmdb"):
        raise ValueError(f"video mode reads frames of epic or ucf-hmdb, not {benchmark.name!r}")
    if data.root is None:
        raise ValueError(f"video mode on {benchmark.name} needs data.root=DIR (the frames root)")
    root = Path(data.root)
    splits_dir = Path(data.splits) if data.splits is not None else root / "splits"
    if not splits_dir.is_dir():
        raise FileNotFoundError(
            f"{splits_dir}: no annotation directory (set data.splits=DIR with the split files)"
        )
    source, target = benchmark.check_pair(data.pair)
    wanted = {
        "source_train": (source, "train"),
        "target_train": (target, "train"),
        "target_test": (target, "test"),
        "source_val": (source, "test"),
    }
    tables = {
        name: load_segments(benchmark.name, splits_dir, domain, split, benchmark.num_classes)
        for name, (domain, split) in wanted.items()
    }
    return VideoPairData(
        tables,
        benchmark=benchmark.name,
        class_names=benchmark.class_names,
        root=root,
        layout=frame_layout(benchmark.name, data.rgb_template, data.flow_template),
        spec=EPIC_WINDOW if benchmark.name == "epic" else UCF_HMDB_WINDOW,
        crop_size=data.crop_size,
        synchronised=data.sampling == "synchronised",
        test_windows=data.test_windows,
        loader_workers=data.loader_workers,
    )
