"""Synthetic EPIC-style videos: JPEG frames in the MM-SADA layout plus MM-SADA split pickles.

Runs and tests the whole video path with no dataset. Written under ``out``::

    rgb/{participant}/{video}/frame_{n:010d}.jpg       RGB frames 1..N
    flow/{participant}/{video}/{u,v}/frame_{n:010d}.jpg greyscale flow 1..N // 2 (half rate)
    splits/D{1,2,3}_{train,test}.pkl                  pandas DataFrames, MM-SADA columns

Domains D1, D2, D3 are participants P08, P01, P22; each has two training
videos and one test video. A segment of class c shows a square of a
class-dependent colour moving in direction 2*pi*c/8 over a domain-dependent
textured background (the domain shift); its flow frames hold the square's
displacement over two RGB frames (flow is at half rate) as ``128 + 8 * d``
in the u (horizontal) and v (vertical) components, 128 elsewhere. Segments
are 20-60 RGB frames long by default, so both full windows and the short-segment
fallback occur. Deterministic for a seed (same pixels, same files).
"""

from __future__ import annotations

import io
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from cmcl.data.benchmarks import EPIC_CLASSES
from cmcl.data.epic import COLUMNS, DOMAIN_PARTICIPANTS
from cmcl.data.frames import LAYOUTS

FPS = 60
GAP = 6
FLOW_GAIN = 8.0
_PALETTE = np.array(
    [[230, 60, 60], [60, 200, 70], [70, 90, 230], [235, 215, 50],
     [210, 70, 210], [60, 210, 215], [245, 150, 40], [250, 250, 250]],
    dtype=np.float32,
)  # fmt: skip
_BACKGROUNDS = {"D1": (110, 80, 70), "D2": (70, 100, 80), "D3": (80, 80, 115)}


@dataclass(frozen=True)
class SyntheticVideos:
    """What :func:`write_synthetic_videos` wrote: frames root, splits directory, segment counts."""

    root: Path
    splits: Path
    sizes: dict[str, int]
    """``"D1_train"`` -> number of segments."""


def _timestamp(frame: int) -> str:
    seconds = frame / FPS
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{int(hours):02d}:{int(minutes):02d}:{secs:05.2f}"


def _encode(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _velocity(label: int) -> np.ndarray:
    angle = 2 * math.pi * label / len(EPIC_CLASSES)
    return np.array([math.cos(angle), math.sin(angle)]) * 1.5  # pixels per RGB frame (x, y)


def _blob(segment: tuple[int, int, int, np.ndarray], frame: int, shape: tuple[int, int]):
    """(top, left, side) of the moving square of ``segment`` at RGB ``frame``."""
    start, _, label, origin = segment
    height, width = shape
    side = max(2, min(height, width) // 4)
    x, y = origin + _velocity(label) * (frame - start)
    return int(y) % (height - side), int(x) % (width - side), side


def render_video(
    segments: list[tuple[int, int, int, np.ndarray]],
    num_frames: int,
    *,
    shape: tuple[int, int],
    background: tuple[int, int, int],
    rng: np.random.Generator,
):
    """Yield (frame number, RGB (H, W, 3) uint8, flow (H, W, 2) uint8 or None) for frames 1..N.

    Flow is yielded with every even RGB frame 2f (flow frame f, half rate).
    """
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 2 * math.pi, size=2)
    texture = 18 * np.sin(xx / 5.0 + phase[0]) * np.cos(yy / 7.0 + phase[1])
    base = np.asarray(background, np.float32) + texture[..., None]
    active = {f: s for s in segments for f in range(s[0], s[1] + 1)}
    for frame in range(1, num_frames + 1):
        rgb = base + rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
        flow = None
        if frame % 2 == 0:
            flow = np.full((height, width, 2), 128.0, np.float32)
            flow += rng.normal(0, 2, size=flow.shape).astype(np.float32)
        segment = active.get(frame)
        if segment is not None:
            top, left, side = _blob(segment, frame, shape)
            rgb[top : top + side, left : left + side] = _PALETTE[segment[2]]
            if flow is not None:
                # Displacement over the two RGB frames one flow frame spans.
                flow[top : top + side, left : left + side] = 128 + FLOW_GAIN * 2 * _velocity(
                    segment[2]
                )
        yield (
            frame,
            np.clip(rgb, 0, 255).astype(np.uint8),
            None if flow is None else np.clip(flow, 0, 255).astype(np.uint8),
        )


def _plan_domain(
    per_class: dict[str, int], lengths: tuple[int, int], rng: np.random.Generator
) -> dict[int, tuple[str, list[tuple[int, int, int]], int]]:
    """Videos of one domain: {video number: (split, [(start, stop, label)], number of frames)}."""
    labels = {
        split: [c for c in range(len(EPIC_CLASSES)) for _ in range(n)]
        for split, n in per_class.items()
    }
    train = rng.permutation(labels["train"]).tolist()
    videos = {1: ("train", train[: len(train) // 2]), 2: ("train", train[len(train) // 2 :])}
    videos[3] = ("test", rng.permutation(labels["test"]).tolist())
    plans = {}
    for number, (split, classes) in videos.items():
        frame, spans = 1 + GAP, []
        for label in classes:
            length = int(rng.integers(lengths[0], lengths[1] + 1))
            spans.append((frame, frame + length - 1, int(label)))
            frame += length + GAP
        plans[number] = (split, spans, frame)
    return plans


def write_synthetic_videos(
    out: str | Path,
    *,
    height: int = 64,
    width: int = 64,
    train_per_class: int = 3,
    test_per_class: int = 1,
    segment_frames: tuple[int, int] = (20, 60),
    seed: int = 0,
    quality: int = 90,
) -> SyntheticVideos:
    """Write frames and split pickles for D1, D2, D3 under ``out`` (see the module docstring)."""
    if min(height, width) < 16:
        raise ValueError(f"frames must be at least 16x16, got {height}x{width}")
    if train_per_class < 1 or test_per_class < 1:
        raise ValueError("train_per_class and test_per_class must be >= 1")
    if not 1 <= segment_frames[0] <= segment_frames[1]:
        raise ValueError(
            f"segment_frames must be (min, max) with 1 <= min <= max, got {segment_frames}"
        )
    root = Path(out)
    layout = LAYOUTS["mmsada"]
    per_class = {"train": train_per_class, "test": test_per_class}
    sizes = {}
    uid = 0
    for d, (domain, participant) in enumerate(DOMAIN_PARTICIPANTS.items()):
        rng = np.random.default_rng([seed, d])
        rows: dict[str, list[dict]] = {"train": [], "test": []}
        for number, (split, spans, num_frames) in _plan_domain(
            per_class, segment_frames, rng
        ).items():
            video = f"{participant}_{number:02d}"
            fields = {"participant": participant, "video": video}
            segments = [(s, e, c, rng.uniform(0, max(height, width), size=2)) for s, e, c in spans]
            pixels = render_video(
                segments,
                num_frames,
                shape=(height, width),
                background=_BACKGROUNDS[domain],
                rng=rng,
            )
            for frame, rgb, flow in pixels:
                path = layout.rgb_path(root, fields, frame)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(_encode(rgb, quality))
                if flow is not None:
                    for channel, uv in enumerate(("u", "v")):
                        path = layout.flow_path(root, fields, frame // 2, uv)
                        path.parent.mkdir(parents=True, exist_ok=True)
                        path.write_bytes(_encode(flow[..., channel], quality))
            for start, stop, label in spans:
                uid += 1
                verb = EPIC_CLASSES[label]
                rows[split].append(
                    {
                        "uid": 100000 * (d + 1) + uid,
                        "participant_id": participant,
                        "video_id": video,
                        "narration": f"{verb} thing",
                        "start_timestamp": _timestamp(start),
                        "stop_timestamp": _timestamp(stop),
                        "start_frame": start,
                        "stop_frame": stop,
                        "verb": verb,
                        "verb_class": label,
                    }
                )
        for split, split_rows in rows.items():
            sizes[f"{domain}_{split}"] = len(split_rows)
            _write_split(root / "splits" / f"{domain}_{split}.pkl", split_rows)
    return SyntheticVideos(root=root, splits=root / "splits", sizes=sizes)


def _write_split(path: Path, rows: list[dict]) -> None:
    ints = ("uid", "start_frame", "stop_frame", "verb_class")
    frame = pd.DataFrame(
        {
            column: pd.Series(
                [row[column] for row in rows], dtype=np.int64 if column in ints else object
            )
            for column in COLUMNS
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        # Protocol 4, as the MM-SADA originals.
        pickle.dump(frame, handle, protocol=4)
