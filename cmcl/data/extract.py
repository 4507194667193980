"""Feature extraction: a frozen two-stream I3D over every segment of a benchmark, into a feature store.

For each (domain, split) of the benchmark (EPIC: D1-D3 train and test;
UCF/HMDB: U and H), every segment gives ``windows`` equidistant synchronised
windows (cmcl.data.windows.TestWindowSampler; 1 = the centre window),
centre-cropped to ``crop_size`` as at test time, and each window's RGB and flow
clips go through the frozen I3D (cmcl.models.i3d_extractor). Window k of
``rgb`` and window k of ``flow`` therefore share a temporal position, as the
feature store requires (cmcl.data.feature_store).

Work is cut into shards (``shard_size`` consecutive segments of one split);
a shard's features are written as one part file as soon as they arrive, a
re-run skips finished parts, and the parts become the store's split files
when every shard is done (cmcl.data.store_parts). Who computes the shards
is a *mapper*: :func:`local_mapper` in this process, or the Ray one in
cmcl.ray.extract across a cluster.

    settings = ExtractSettings(benchmark="epic", root="frames", i3d_rgb="rgb_imagenet.pt",
                               i3d_flow="flow_imagenet.pt")
    extract_store(settings, "features/epic")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.clips import ClipDataset, ClipRequest, collate_clips
from cmcl.data.feature_store import split_table
from cmcl.data.frames import FrameLayout, frame_layout
from cmcl.data.loaders import resolve_workers
from cmcl.data.segments import SegmentTable, load_segments
from cmcl.data.windows import EPIC_WINDOW, UCF_HMDB_WINDOW, TestWindowSampler, WindowSpec

SPLITS = ("train", "test")


@dataclass(frozen=True)
class ExtractSettings:
    """What to extract and how; validated on construction.

    ``i3d_rgb`` / ``i3d_flow``: pytorch-i3d checkpoints; a modality without one
    gets seeded random weights only when ``random_seed`` is set (tests).
    ``batch_size`` counts segments per forward pass (each gives ``windows`` clips
    per stream). ``loader_workers``: DataLoader workers decoding frames (-1: auto).
    """

    benchmark: str
    root: str
    splits: str | None = None
    domains: tuple[str, ...] | None = None
    windows: int = 5
    crop_size: int = 224
    rgb_template: str | None = None
    flow_template: str | None = None
    i3d_rgb: str | None = None
    i3d_flow: str | None = None
    random_seed: int | None = None
    precision: str = "auto"
    device: str | None = None
    shard_size: int = 64
    batch_size: int = 4
    loader_workers: int = -1

    def __post_init__(self) -> None:
        benchmark = get_benchmark(self.benchmark)
        if benchmark.synthetic:
            raise ValueError(
                f"benchmark {self.benchmark} has no frames to extract from; valid: epic, ucf-hmdb"
            )
        for domain in self.domains or ():
            if domain not in benchmark.domains:
                raise ValueError(
                    f"unknown domain {domain!r} of {self.benchmark}; valid: "
                    f"{', '.join(benchmark.domains)}"
                )
        for name in ("windows", "crop_size", "shard_size", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be auto, fp32 or bf16; got {self.precision!r}")
        for modality, path in (("rgb", self.i3d_rgb), ("flow", self.i3d_flow)):
            if path is None and self.random_seed is None:
                raise ValueError(
                    f"no {modality} I3D checkpoint: give i3d_{modality} (a pytorch-i3d file, "
                    f"{modality}_imagenet.pt), or random weights explicitly (tests only)"
                )
            if path is not None and not Path(path).is_file():
                raise FileNotFoundError(f"I3D {modality} checkpoint {path}: no such file")

    def replace(self, **changes) -> ExtractSettings:
        return dataclasses.replace(self, **changes)

    @property
    def splits_dir(self) -> Path:
        return Path(self.splits) if self.splits is not None else Path(self.root) / "splits"

    @property
    def domain_list(self) -> tuple[str, ...]:
        return self.domains or get_benchmark(self.benchmark).domains

    @property
    def window_spec(self) -> WindowSpec:
        return EPIC_WINDOW if self.benchmark == "epic" else UCF_HMDB_WINDOW

    @property
    def layout(self) -> FrameLayout:
        return frame_layout(self.benchmark, self.rgb_template, self.flow_template)


class Shard(NamedTuple):
    """Rows ``start .. stop - 1`` of one (domain, split); ``number`` orders a split's shards."""

    domain: str
    split: str
    number: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return f"{self.domain}_{self.split}-{self.number:05d}"


@dataclass(frozen=True, eq=False)
class Plan:
    """Every (domain, split) to extract, its segments, and the shards that cover them."""

    settings: ExtractSettings
    tables: dict[tuple[str, str], SegmentTable]
    shards: tuple[Shard, ...]

    def segments(self, shard: Shard) -> SegmentTable:
        """The shard's rows as a table of their own (what a worker needs to read the frames)."""
        return table_rows(self.tables[(shard.domain, shard.split)], shard.start, shard.stop)


def table_rows(table: SegmentTable, start: int, stop: int) -> SegmentTable:
    return dataclasses.replace(
        table,
        ids=table.ids[start:stop],
        labels=table.labels[start:stop],
        start=table.start[start:stop],
        stop=table.stop[start:stop],
        fields=table.fields[start:stop],
    )


def plan_extraction(settings: ExtractSettings) -> Plan:
    """Read the annotations of every (domain, split) and cut them into shards."""
    benchmark = get_benchmark(settings.benchmark)
    if not settings.splits_dir.is_dir():
        raise FileNotFoundError(
            f"{settings.splits_dir}: no annotation directory (give the split files' directory)"
        )
    tables, shards = {}, []
    for domain in settings.domain_list:
        for split in SPLITS:
            table = load_segments(
                benchmark.name, settings.splits_dir, domain, split, benchmark.num_classes
            )
            if len(table) == 0:
                raise ValueError(f"{table.source}: no segments in {domain} {split}")
            tables[(domain, split)] = table
            for number, start in enumerate(range(0, len(table), settings.shard_size)):
                stop = min(start + settings.shard_size, len(table))
                shards.append(Shard(domain, split, number, start, stop))
    return Plan(settings=settings, tables=tables, shards=tuple(shards))


class ShardWorker:
    """Computes shards: holds the frozen I3D (built once) and reads clips with a DataLoader."""

    def __init__(self, settings: ExtractSettings, *, loader_workers: int | None = None) -> None:
        from cmcl.models.i3d_extractor import FrozenTwoStreamI3D

        self.settings = settings
        self.model = FrozenTwoStreamI3D(
            checkpoints={"rgb": settings.i3d_rgb, "flow": settings.i3d_flow},
            random_seed=settings.random_seed,
            device=settings.device,
            precision=settings.precision,
        )
        workers = settings.loader_workers if loader_workers is None else loader_workers
        self.loader_workers = resolve_workers(workers)

    def run(self, shard: Shard, segments: SegmentTable) -> pa.Table:
        """The part table of ``shard`` (rows of ``segments``, in order)."""
        s = self.settings
        dataset = ClipDataset(
            segments,
            root=s.root,
            layout=s.layout,
            spec=s.window_spec,
            crop_size=s.crop_size,
            test_windows=s.windows,
            domain=shard.domain,
        )
        rows = range(len(segments))
        batches = [
            [ClipRequest(i, 0, "test") for i in rows[b : b + s.batch_size]]
            for b in range(0, len(rows), s.batch_size)
        ]
        loader = DataLoader(
            dataset,
            batch_sampler=batches,
            num_workers=self.loader_workers,
            collate_fn=collate_clips,
            pin_memory=self.model.device.type == "cuda",
            generator=torch.Generator().manual_seed(0),  # leave the global RNG alone
        )
        features: dict[str, list[np.ndarray]] = {"rgb": [], "flow": []}
        for batch in loader:
            n, k = batch["rgb"].shape[:2]
            out = self.model.features(batch["rgb"].flatten(0, 1), batch["flow"].flatten(0, 1))
            for modality, values in out.items():
                features[modality].append(values.view(n, k, -1).cpu().numpy())
        sampler = TestWindowSampler(s.window_spec, num_windows=s.windows)
        centres = [
            sampler.centres(int(a), int(b)).tolist()
            for a, b in zip(segments.start, segments.stop, strict=True)
        ]
        table = split_table(
            domain=shard.domain,
            split=shard.split,
            segment_ids=segments.ids,
            labels=segments.labels,
            rgb=np.concatenate(features["rgb"]),
            flow=np.concatenate(features["flow"]),
            extra={
                "video_id": [f.get("video", "") for f in segments.fields],
                "start_frame": segments.start.tolist(),
                "stop_frame": segments.stop.tolist(),
                "window_centres": centres,
            },
        )
        device = f"{self.model.device.type}:{self.model.precision}"
        return table.replace_schema_metadata({b"cmcl.extracted_on": device.encode()})


ShardMapper = Callable[[Plan, list[Shard]], Iterable[tuple[Shard, pa.Table]]]
"""Computes ``shards`` of a plan in any order, yielding each with its part table as it finishes."""


def local_mapper(plan: Plan, shards: list[Shard]) -> Iterator[tuple[Shard, pa.Table]]:
    """Every shard in this process, one after the other."""
    if not shards:
        return
    worker = ShardWorker(plan.settings)
    for shard in shards:
        yield shard, worker.run(shard, plan.segments(shard))


class ExtractionReport(NamedTuple):
    store: Path
    shards: int
    computed: int
    skipped: int


def extract_store(
    settings: ExtractSettings,
    store: str | Path,
    *,
    mapper: ShardMapper = local_mapper,
    progress: bool = True,
) -> ExtractionReport:
    """Extract every shard not already done into ``store`` and assemble the store.

    Raises ValueError when ``store`` holds an extraction with other settings.
    """
    from tqdm.auto import tqdm

    from cmcl.data import store_parts as parts

    store = Path(store)
    plan = plan_extraction(settings)
    if parts.begin(plan, store):
        return ExtractionReport(store, len(plan.shards), 0, len(plan.shards))
    todo = parts.pending(plan, store)
    done = len(plan.shards) - len(todo)
    with tqdm(
        total=len(plan.shards), initial=done, unit="shard", disable=not progress, desc="extract"
    ) as bar:
        for shard, table in mapper(plan, todo):
            parts.write_part(store, shard, table)
            bar.update()
    parts.finish(plan, store)
    return ExtractionReport(store, len(plan.shards), len(todo), done)
