"""Feature-store values a run cannot turn into numbers: empty splits, NaN/inf, bad labels.

Used twice: :class:`~cmcl.data.feature_store.FeaturePairData` refuses a split
on load (:func:`refuse_bad_split`, the first problem, naming the file and the
row), and ``cmcl data check --features`` reports every split of a store
(:func:`check_store`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cmcl.data.feature_store import FeatureSplit, read_meta, read_split, split_path
from cmcl.data.store_errors import DamagedFileError, repair_hint


def split_problems(split: FeatureSplit, *, num_classes: int) -> list[str]:
    """What makes ``split`` unusable, one line per kind of problem ([] when it is fine)."""
    if len(split) == 0:
        return ["no segments (an empty split gives no batch and no accuracy)"]
    problems = []
    for modality in ("rgb", "flow"):
        values = getattr(split, modality)
        bad = torch.nonzero(~torch.isfinite(values).flatten(1).all(dim=1)).flatten()
        if len(bad):
            row = int(bad[0])
            found = values[row][~torch.isfinite(values[row])][0].item()
            problems.append(
                f"{len(bad)} of {len(split)} rows have a non-finite {modality} feature; the "
                f"first is row {row} (segment_id {split.segment_ids[row]!r}), value {found}"
            )
    labels = split.labels
    outside = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
    if len(outside):
        row = int(outside[0])
        problems.append(
            f"{len(outside)} rows have a label outside 0..{num_classes - 1}; the first is row "
            f"{row} (segment_id {split.segment_ids[row]!r}), label {int(labels[row])}"
        )
    return problems


def refuse_bad_split(split: FeatureSplit, path: Path, *, num_classes: int) -> None:
    """Raise ValueError naming ``path``, the row and what to do when ``split`` is unusable."""
    problems = split_problems(split, num_classes=num_classes)
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}. {repair_hint(path.parent)}")


@dataclass
class SplitReport:
    name: str
    """``"{domain} {split}"``."""
    segments: int = 0
    windows: int = 0
    dim: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class StoreReport:
    """Outcome of :func:`check_store`, one entry per (domain, split)."""

    root: Path
    benchmark: str
    splits: list[SplitReport] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.splits) and not any(s.problems for s in self.splits)

    def summary(self) -> str:
        lines = [f"{self.benchmark} feature store {self.root}"]
        for s in self.splits:
            shape = f", {s.windows} windows x {s.dim}" if s.segments else ""
            state = "ok" if not s.problems else "; ".join(s.problems)
            lines.append(f"{s.name:>10}: {s.segments} segments{shape}: {state}")
        if not self.passed:
            lines.append(repair_hint(self.root))
        lines.append("OK" if self.passed else "FAILED")
        return "\n".join(lines)


def check_store(root: str | Path, *, domains: Iterable[str] | None = None) -> StoreReport:
    """Read every split of the store at ``root`` as training would and report what is unusable.

    Raises FileNotFoundError or ValueError when ``root`` is not a readable store
    (no or bad meta.json), or ``domains`` names one the store does not hold.
    """
    from cmcl.data.benchmarks import get_benchmark

    root = Path(root)
    meta = read_meta(root)
    benchmark = str(meta.get("benchmark", "unknown"))
    held = list(meta.get("domains") or get_benchmark(benchmark).domains)
    chosen = held if domains is None else list(domains)
    unknown = [d for d in chosen if d not in held]
    if unknown:
        raise ValueError(f"{root}: domains {unknown} are not in the store; it holds {held}")
    num_classes = len(meta.get("class_names") or ())
    if not num_classes:
        raise ValueError(f"{root / 'meta.json'}: no class_names; every store lists its classes")
    report = StoreReport(root=root, benchmark=benchmark)
    for domain in chosen:
        for kind in ("train", "test"):
            entry = SplitReport(name=f"{domain} {kind}")
            report.splits.append(entry)
            if not split_path(root, domain, kind).is_file():
                entry.problems.append(f"missing file {split_path(root, domain, kind).name}")
                continue
            try:
                split = read_split(root, domain, kind)
            except DamagedFileError as error:
                entry.problems.append(f"cannot be read ({error.reason})")
                continue
            except ValueError as error:
                entry.problems.append(
                    str(error).removeprefix(f"{split_path(root, domain, kind)}: ")
                )
                continue
            entry.segments, entry.windows, entry.dim = len(split), *split.rgb.shape[1:]
            entry.problems += split_problems(split, num_classes=num_classes)
    return report
