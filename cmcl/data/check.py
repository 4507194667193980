"""``cmcl data check``: does every frame that any window of any segment can read exist and decode?

For each (domain, split) of a benchmark, every segment's reachable frames
(cmcl.data.windows.reachable_frames: all training and test windows, RGB and
both flow components) are collected per video, each file is checked once
(existence from one directory listing per folder, then a full JPEG decode),
and each segment is classed ok, missing (some frame is absent) or corrupt
(all present, some fail to decode, e.g. a truncated file). A split with no
segment fails the check too: training on it cannot produce a number.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.frames import FrameLayout, frame_layout
from cmcl.data.jpeg import CorruptFrameError, FrameDecoder
from cmcl.data.segments import SegmentTable, load_segments
from cmcl.data.windows import EPIC_WINDOW, UCF_HMDB_WINDOW, WindowSpec, reachable_frames

KINDS = ("rgb", "u", "v")
LISTED = 1000
"""Offending paths kept in a report (a missing folder can mean millions)."""


@dataclass
class SplitCounts:
    segments: int = 0
    ok: int = 0
    missing: int = 0
    corrupt: int = 0


@dataclass
class CheckReport:
    """Outcome of :func:`check_frames`: per-split segment counts, offending frames."""

    benchmark: str
    root: Path
    splits_dir: Path
    layout: FrameLayout
    counts: dict[str, SplitCounts] = field(default_factory=dict)
    """Per ``"{domain} {split}"``."""
    frames_checked: int = 0
    decoded: bool = True
    missing: list[str] = field(default_factory=list)
    """The first ``LISTED`` missing frame paths."""
    corrupt: list[tuple[str, str]] = field(default_factory=list)
    """The first ``LISTED`` (path, why) of frames that do not decode."""
    missing_frames: int = 0
    corrupt_frames: int = 0

    def note_missing(self, path: str) -> None:
        self.missing_frames += 1
        if len(self.missing) < LISTED:
            self.missing.append(path)

    def note_corrupt(self, path: str, error: str) -> None:
        self.corrupt_frames += 1
        if len(self.corrupt) < LISTED:
            self.corrupt.append((path, error))

    @property
    def total(self) -> SplitCounts:
        total = SplitCounts()
        for c in self.counts.values():
            total.segments += c.segments
            total.ok += c.ok
            total.missing += c.missing
            total.corrupt += c.corrupt
        return total

    @property
    def empty(self) -> list[str]:
        """Splits without a segment: a run on them has no batch or no accuracy."""
        return [name for name, c in self.counts.items() if c.segments == 0]

    @property
    def passed(self) -> bool:
        total = self.total
        return total.missing == 0 and total.corrupt == 0 and not self.empty

    def summary(self, show: int = 10) -> str:
        """Human-readable report: per-split counts, totals, the first ``show`` offending paths."""
        total = self.total
        lines = [
            f"{self.benchmark} frames under {self.root} (annotations {self.splits_dir})",
            f"  rgb:  {self.layout.rgb}",
            f"  flow: {self.layout.flow}",
        ]
        for name, c in self.counts.items():
            lines.append(
                f"{name:>10}: {c.segments} segments, {c.ok} ok, {c.missing} missing, {c.corrupt} corrupt"
            )
        if self.empty:
            lines.append(
                f"empty splits (no segments; training on them cannot produce a number): "
                f"{', '.join(self.empty)}"
            )
        what = "exist and decode" if self.decoded else "exist (not decoded)"
        lines.append(
            f"segments ok / missing / corrupt: {total.ok} / {total.missing} / {total.corrupt} "
            f"of {total.segments}; {self.frames_checked} frame files checked ({what})"
        )
        if self.missing:
            lines.append(
                f"missing frames (first {min(show, len(self.missing))} of {self.missing_frames}):"
            )
            lines += [f"  {path}" for path in self.missing[:show]]
        if self.corrupt:
            lines.append(
                f"corrupt frames (first {min(show, len(self.corrupt))} of {self.corrupt_frames}):"
            )
            lines += [f"  {path}: {error}" for path, error in self.corrupt[:show]]
        lines.append("OK" if self.passed else "FAILED")
        return "\n".join(lines)


def _paths(
    layout: FrameLayout, root: Path, fields: dict[str, str], kind: str, frames: Iterable[int]
):
    if kind == "rgb":
        return [(n, str(layout.rgb_path(root, fields, n))) for n in frames]
    return [(n, str(layout.flow_path(root, fields, n, kind))) for n in frames]


class _FileChecker:
    """Checks files once each: existence via cached directory listings, then a decode."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(fallback=False)
        self.listings: dict[str, set[str]] = {}

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(path)
        if folder not in self.listings:
            try:
                self.listings[folder] = set(os.listdir(folder))
            except (FileNotFoundError, NotADirectoryError):
                self.listings[folder] = set()
        return name in self.listings[folder]

    def error(self, path: str, grey: bool) -> str | None:
        """None when the file decodes, else why not."""
        try:
            self.decoder.read(path, grey=grey)
        except (CorruptFrameError, OSError) as error:
            return str(error).removeprefix(f"{path}: ")
        return None


def check_frames(
    benchmark: str,
    root: str | Path,
    splits_dir: str | Path | None = None,
    *,
    rgb_template: str | None = None,
    flow_template: str | None = None,
    domains: Iterable[str] | None = None,
    decode: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> CheckReport:
    """Check every frame every segment of ``benchmark`` (epic or ucf-hmdb) can ask for."""
    info = get_benchmark(benchmark)
    root = Path(root)
    splits_dir = Path(splits_dir) if splits_dir is not None else root / "splits"
    layout = frame_layout(info.name, rgb_template, flow_template)
    spec: WindowSpec = EPIC_WINDOW if info.name == "epic" else UCF_HMDB_WINDOW
    chosen = tuple(domains) if domains is not None else info.domains
    unknown = [d for d in chosen if d not in info.domains]
    if unknown:
        raise ValueError(
            f"unknown domains {unknown} for {info.name}; valid: {', '.join(info.domains)}"
        )
    tables: list[SegmentTable] = [
        load_segments(info.name, splits_dir, d, s, info.num_classes)
        for d in chosen
        for s in ("train", "test")
    ]
    # Per video, the frame arrays its segments need; per segment, its video and arrays.
    wanted: dict[tuple, list[np.ndarray]] = defaultdict(list)
    needs: list[tuple[tuple, np.ndarray, np.ndarray]] = []
    for table in tables:
        for i in range(len(table)):
            video = tuple(sorted(table.fields[i].items()))
            frames = reachable_frames(spec, int(table.start[i]), int(table.stop[i]))
            wanted[video] += [frames.rgb, frames.flow]
            needs.append((video, frames.rgb, frames.flow))
    report = CheckReport(info.name, root, splits_dir, layout, decoded=decode)
    checker = _FileChecker()
    # (video, kind) -> {frame number: "missing" | "corrupt"}; only failures are kept.
    bad: dict[tuple, dict[int, str]] = defaultdict(dict)
    with (
        ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool,
        tqdm(desc="checking frames", unit="frame", disable=not progress) as bar,
    ):
        for video, arrays in wanted.items():
            rgb = np.unique(np.concatenate(arrays[0::2]))
            flow = np.unique(np.concatenate(arrays[1::2]))
            for kind in KINDS:
                numbers = (rgb if kind == "rgb" else flow).tolist()
                jobs = _paths(layout, root, dict(video), kind, numbers)
                present = []
                for number, path in jobs:
                    if checker.exists(path):
                        present.append((number, path))
                    else:
                        bad[(video, kind)][number] = "missing"
                        report.note_missing(path)
                if decode:
                    grey = kind != "rgb"
                    errors = pool.map(lambda job, grey=grey: checker.error(job[1], grey), present)
                    for (number, path), error in zip(present, errors, strict=True):
                        if error is not None:
                            bad[(video, kind)][number] = "corrupt"
                            report.note_corrupt(path, error)
                report.frames_checked += len(jobs)
                bar.update(len(jobs))
    segments = iter(needs)
    for table in tables:
        counts = report.counts.setdefault(f"{table.domain} {table.split}", SplitCounts())
        for _ in range(len(table)):
            video, rgb, flow = next(segments)
            states = set()
            for kind, numbers in (("rgb", rgb), ("u", flow), ("v", flow)):
                failures = bad.get((video, kind))
                if failures:
                    states.update(failures[n] for n in numbers.tolist() if n in failures)
            counts.segments += 1
            if "missing" in states:
                counts.missing += 1
            elif "corrupt" in states:
                counts.corrupt += 1
            else:
                counts.ok += 1
    return report
