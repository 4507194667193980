"""Temporal windows of a segment (SPEC section 6): which RGB and flow frames a clip reads.

A window is ``T`` RGB frames at ``stride`` around a centre ``c``: frames
``c - stride*T/2, ..., c + stride*(T/2 - 1)`` (EPIC: T=16, stride 2, so
c-16, c-14, ..., c+14; UCF/HMDB: T=16, stride 1, so c-8..c+7).

- Centre range: ``[start + stride*T/2, stop + 1 - stride*T/2]`` (both ends
  included); when that is empty (a segment shorter than the window) the
  centre is drawn from ``[start, stop]`` instead, and every frame is clamped
  to ``[max(start, first_frame), stop]``.
- Flow: RGB frame n maps to flow frame ``n // flow_divisor`` (EPIC-55 flow is
  at half the RGB rate, divisor 2, giving T consecutive flow frames; UCF/HMDB
  divisor 1), clamped to ``[max(start // d, first_frame), max(stop // d, first_frame)]``.
- Training: one uniformly random centre per modality (``independent``), or one
  shared centre (``synchronised``), from an explicit ``torch.Generator``.
- Test: ``W`` equidistant centres, the middles of W equal parts of the centre
  range: ``lo + ((hi - lo) * (2i + 1)) // (2W)`` for i = 0..W-1, shared by both
  modalities (W=1 is the centre window).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


@dataclass(frozen=True)
class WindowSpec:
    """The shape of a window: frames, stride, flow rate divisor and first frame number."""

    frames: int = 16
    stride: int = 2
    flow_divisor: int = 2
    first_frame: int = 1

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1 or self.flow_divisor < 1:
            raise ValueError(
                f"window frames, stride and flow_divisor must be >= 1, got {self.frames}, "
                f"{self.stride}, {self.flow_divisor}"
            )

    @property
    def half_span(self) -> int:
        return self.stride * self.frames // 2

    @property
    def offsets(self) -> np.ndarray:
        """(T,) RGB frame offsets from the centre."""
        return self.stride * (np.arange(self.frames, dtype=np.int64) - self.frames // 2)


EPIC_WINDOW = WindowSpec(frames=16, stride=2, flow_divisor=2)
UCF_HMDB_WINDOW = WindowSpec(frames=16, stride=1, flow_divisor=1)


class ClipFrames(NamedTuple):
    """Frame numbers a clip reads, ``(T,)`` for one window or ``(W, T)`` for W windows."""

    rgb: np.ndarray
    flow: np.ndarray


def _check_segment(start: int, stop: int) -> None:
    if stop < start:
        raise ValueError(f"segment stop frame {stop} is before its start frame {start}")


def centre_bounds(spec: WindowSpec, start: int, stop: int) -> tuple[int, int]:
    """Inclusive range of window centres of segment ``start..stop``."""
    _check_segment(start, stop)
    low, high = start + spec.half_span, stop + 1 - spec.half_span
    return (low, high) if low <= high else (start, stop)


def rgb_frames(spec: WindowSpec, centres: np.ndarray, start: int, stop: int) -> np.ndarray:
    """RGB frame numbers of windows at ``centres``: shape ``centres.shape + (T,)``."""
    frames = np.asarray(centres, dtype=np.int64)[..., None] + spec.offsets
    return np.clip(frames, max(start, spec.first_frame), max(stop, spec.first_frame))


def flow_frames(spec: WindowSpec, centres: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Flow frame numbers of windows at ``centres`` (RGB frame n -> flow frame n // divisor)."""
    d = spec.flow_divisor
    low = max(start // d, spec.first_frame)
    high = max(stop // d, low)
    return np.clip(rgb_frames(spec, centres, start, stop) // d, low, high)


def reachable_frames(spec: WindowSpec, start: int, stop: int) -> ClipFrames:
    """Every RGB and flow frame any window of the segment can read (sorted, unique)."""
    low, high = centre_bounds(spec, start, stop)
    centres = np.arange(low, high + 1)
    return ClipFrames(
        rgb=np.unique(rgb_frames(spec, centres, start, stop)),
        flow=np.unique(flow_frames(spec, centres, start, stop)),
    )


def _draw(generator: torch.Generator, low: int, high: int) -> int:
    return int(torch.randint(low, high + 1, (1,), generator=generator))


class TrainWindowSampler:
    """One random window per modality: independent centres, or one shared centre."""

    def __init__(self, spec: WindowSpec, *, synchronised: bool) -> None:
        self.spec = spec
        self.synchronised = synchronised

    def __call__(self, start: int, stop: int, generator: torch.Generator) -> ClipFrames:
        """Shape: rgb, flow (T,)."""
        low, high = centre_bounds(self.spec, start, stop)
        rgb_centre = _draw(generator, low, high)
        flow_centre = rgb_centre if self.synchronised else _draw(generator, low, high)
        return ClipFrames(
            rgb=rgb_frames(self.spec, np.array(rgb_centre), start, stop),
            flow=flow_frames(self.spec, np.array(flow_centre), start, stop),
        )


class TestWindowSampler:
    """``num_windows`` equidistant synchronised windows (1: the centre window)."""

    __test__ = False  # not a pytest class

    def __init__(self, spec: WindowSpec, *, num_windows: int = 5) -> None:
        if num_windows < 1:
            raise ValueError(f"num_windows must be >= 1, got {num_windows}")
        self.spec = spec
        self.num_windows = num_windows

    def centres(self, start: int, stop: int) -> np.ndarray:
        """(W,) window centres."""
        low, high = centre_bounds(self.spec, start, stop)
        w = self.num_windows
        return low + ((high - low) * (2 * np.arange(w, dtype=np.int64) + 1)) // (2 * w)

    def __call__(self, start: int, stop: int) -> ClipFrames:
        """Shape: rgb, flow (W, T)."""
        centres = self.centres(start, stop)
        return ClipFrames(
            rgb=rgb_frames(self.spec, centres, start, stop),
            flow=flow_frames(self.spec, centres, start, stop),
        )
