"""``cmcl data check``: does every frame that any window of any segment can read exist and decode?

For each (domain, split) of a benchmark, every segment's reachable frames
(cmcl.data.windows.reachable_frames: all training and test windows, RGB and
both flow components) are collected per video, each file is checked once
(existence from one directory listing per folder, then a full JPEG decode),
and each segment is classed ok, missing (some frame is absent) or corrupt
(all present, some fail to decode, e.g. a truncated file).
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.frames import FrameLayout, frame_layout
from cmcl.data.jpeg import CorruptFrameError, FrameDecoder
from cmcl.data.segments import SegmentTable, load_segments
from cmcl.data.windows import EPIC_WINDOW, UCF_HMDB_WINDOW, WindowSpec, reachable_frames

KINDS = ("rgb", "u", "v")


@dataclass
class SplitCounts:
    segments: int = 0
    ok: int = 0
    missing: int = 0
    corrupt: int = 0


@dataclass
class CheckReport:
    """Outcome of :func:`check_frames`; ``missing``/``corrupt`` list offending paths in order found."""

    benchmark: str
    root: Path
    splits_dir: Path
    layout: FrameLayout
    counts: dict[str, SplitCounts] = field(default_factory=dict)
    """Per ``"{domain} {split}"``."""
    frames_checked: int = 0
    decoded: bool = True
    missing: list[str] = field(default_factory=list)
    corrupt: list[tuple[str, str]] = field(default_factory=list)

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
    def passed(self) -> bool:
        total = self.total
        return total.missing == 0 and total.corrupt == 0

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
        what = "exist and decode" if self.decoded else "exist (not decoded)"
        lines.append(
            f"segments ok / missing / corrupt: {total.ok} / {total.missing} / {total.corrupt} "
            f"of {total.segments}; {self.frames_checked} frame files checked ({what})"
        )
        if self.missing:
            lines.append(
                f"missing frames (first {min(show, len(self.missing))} of {len(self.missing)}):"
            )
            lines += [f"  {path}" for path in self.missing[:show]]
        if self.corrupt:
            lines.append(
                f"corrupt frames (first {min(show, len(self.corrupt))} of {len(self.corrupt)}):"
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

    def __init__(self, decode: bool) -> None:
        self.decode = decode
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
    # (video fields, kind) -> frame numbers; segments -> their (video, kind) keys and frames.
    wanted: dict[tuple, set[int]] = defaultdict(set)
    needs: list[list[tuple[tuple, list[int]]]] = []
    for table in tables:
        for i in range(len(table)):
            video = tuple(sorted(table.fields[i].items()))
            frames = reachable_frames(spec, int(table.start[i]), int(table.stop[i]))
            parts = []
            for kind in KINDS:
                numbers = (frames.rgb if kind == "rgb" else frames.flow).tolist()
                wanted[(video, kind)].update(numbers)
                parts.append(((video, kind), numbers))
            needs.append(parts)
    jobs = [
        (key, number, path, key[1] != "rgb")
        for key, numbers in wanted.items()
        for number, path in _paths(layout, root, dict(key[0]), key[1], sorted(numbers))
    ]
    checker = _FileChecker(decode)
    report = CheckReport(
        info.name, root, splits_dir, layout, frames_checked=len(jobs), decoded=decode
    )
    bad: dict[tuple, dict[int, str]] = defaultdict(dict)
    present = []
    for key, number, path, grey in jobs:
        if checker.exists(path):
            present.append((key, number, path, grey))
        else:
            bad[key][number] = "missing"
            report.missing.append(path)
    if decode:
        from tqdm import tqdm

        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            results = pool.map(lambda job: checker.error(job[2], job[3]), present, chunksize=64)
            bar = tqdm(
                results,
                total=len(present),
                desc="decoding frames",
                unit="frame",
                disable=not progress,
            )
            for (key, number, path, _), error in zip(present, bar, strict=True):
                if error is not None:
                    bad[key][number] = "corrupt"
                    report.corrupt.append((path, error))
    position = 0
    for table in tables:
        counts = report.counts.setdefault(f"{table.domain} {table.split}", SplitCounts())
        for _ in range(len(table)):
            states = {
                bad[key][n]
                for key, numbers in needs[position]
                if key in bad
                for n in numbers
                if n in bad[key]
            }
            position += 1
            counts.segments += 1
            if "missing" in states:
                counts.missing += 1
            elif "corrupt" in states:
                counts.corrupt += 1
            else:
                counts.ok += 1
    return report
