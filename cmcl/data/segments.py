"""Segments of a (domain, split): what the video path needs from any annotation format.

A segment is a labelled span of RGB frames ``start..stop`` (inclusive, frames
numbered from 1) of one video, plus the fields its frame-path templates use
(cmcl.data.frames). EPIC segments come from the MM-SADA split pickles
(cmcl.data.epic); a UCF/HMDB segment is a whole video of a TA3N list file
(cmcl.data.ucf_hmdb), frames 1..num_frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from cmcl.data import epic, ucf_hmdb


@dataclass(frozen=True, eq=False)
class SegmentTable:
    """The segments of one (domain, split); row i is memory-bank row i.

    Shape:
        labels, start, stop: (N,) int64
    """

    domain: str
    split: str
    ids: tuple[str, ...]
    labels: np.ndarray
    start: np.ndarray
    stop: np.ndarray
    fields: tuple[dict[str, str], ...]
    """Per segment, the frame-template fields (participant, video, path, domain, split)."""
    source: str = ""
    """The annotation file the table came from (for error messages)."""

    def __post_init__(self) -> None:
        n = len(self.ids)
        for name in ("labels", "start", "stop", "fields"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"{self.source}: {name} has {len(getattr(self, name))} rows, ids {n}"
                )

    def __len__(self) -> int:
        return len(self.ids)


def epic_segments(frame: pd.DataFrame, domain: str, split: str, source: str = "") -> SegmentTable:
    """Segments of a validated MM-SADA split frame (:func:`cmcl.data.epic.load_split`)."""
    fields = tuple(
        {"participant": p, "video": v, "domain": domain, "split": split}
        for p, v in zip(frame["participant_id"], frame["video_id"], strict=True)
    )
    return SegmentTable(
        domain=domain,
        split=split,
        ids=tuple(str(u) for u in frame["uid"]),
        labels=frame["verb_class"].to_numpy(np.int64),
        start=frame["start_frame"].to_numpy(np.int64),
        stop=frame["stop_frame"].to_numpy(np.int64),
        fields=fields,
        source=source,
    )


def ucf_hmdb_segments(
    entries: list[ucf_hmdb.VideoEntry], domain: str, split: str, source: str = ""
) -> SegmentTable:
    """One segment per video of a TA3N list file: frames 1..num_frames."""
    fields = tuple(
        {"path": e.path, "video": Path(e.path).name, "domain": domain, "split": split}
        for e in entries
    )
    return SegmentTable(
        domain=domain,
        split=split,
        ids=tuple(e.path for e in entries),
        labels=np.array([e.label for e in entries], np.int64),
        start=np.ones(len(entries), np.int64),
        stop=np.array([e.num_frames for e in entries], np.int64),
        fields=fields,
        source=source,
    )


def load_segments(
    benchmark: str, splits_dir: str | Path, domain: str, split: str, num_classes: int
) -> SegmentTable:
    """The segments of ``domain``/``split`` of a real benchmark (epic or ucf-hmdb)."""
    if benchmark == "epic":
        path = epic.split_path(splits_dir, domain, split)
        table = epic_segments(
            epic.load_domain_split(splits_dir, domain, split), domain, split, str(path)
        )
    elif benchmark == "ucf-hmdb":
        path = ucf_hmdb.list_file_path(splits_dir, domain, split)
        entries = ucf_hmdb.read_list_file(path, num_classes)
        table = ucf_hmdb_segments(entries, domain, split, str(path))
    else:
        raise ValueError(f"benchmark {benchmark!r} has no annotations; valid: epic, ucf-hmdb")
    if len(table) and table.labels.max() >= num_classes:
        raise ValueError(
            f"{path}: class index {table.labels.max()} out of range for {num_classes} classes"
        )
    return table
