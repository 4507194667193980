"""Spatial transforms of a clip (SPEC section 6): multi-scale crop, flip, scaling to [-1, 1).

Training: a crop whose height and width are each one of ``SCALES`` times the
frame's short side (256, 224, 192 for EPIC's 256x456 frames; the two differ by
at most one step, as in TSN's multi-scale crop), placed at the centre or a
corner, resized to ``size`` x ``size``; then a horizontal flip with p=0.5,
which negates the u (horizontal) flow channel. Test: a centre square of
``TEST_SCALE`` times the short side (224 of 256), resized to ``size`` when it
differs. Pixels become ``x / 128 - 1``.

The random choices are a :class:`SpatialParams`, drawn from an explicit
generator and applied to any frame size, so synchronised sampling can apply
the same crop and flip to RGB and flow.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

SCALES = (1.0, 0.875, 0.75)
TEST_SCALE = 0.875
POSITIONS = ("centre", "top_left", "top_right", "bottom_left", "bottom_right")


class SpatialParams(NamedTuple):
    """Random spatial choices of one clip: crop scale indices (into SCALES), position, flip."""

    height_scale: int
    width_scale: int
    position: int
    flip: bool


def sample_spatial(generator: torch.Generator, *, max_distort: int = 1) -> SpatialParams:
    """Crop scales (|height index - width index| <= max_distort), one of 5 positions, flip p=0.5."""
    pairs = [
        (h, w) for h in range(len(SCALES)) for w in range(len(SCALES)) if abs(h - w) <= max_distort
    ]
    draws = torch.randint(0, 1 << 30, (3,), generator=generator).tolist()
    h, w = pairs[draws[0] % len(pairs)]
    return SpatialParams(h, w, draws[1] % len(POSITIONS), bool(draws[2] % 2))


def crop_box(params: SpatialParams, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of ``params`` in a ``height`` x ``width`` frame."""
    short = min(height, width)
    ch, cw = int(short * SCALES[params.height_scale]), int(short * SCALES[params.width_scale])
    bottom, right = height - ch, width - cw
    top, left = {
        "centre": (bottom // 2, right // 2),
        "top_left": (0, 0),
        "top_right": (0, right),
        "bottom_left": (bottom, 0),
        "bottom_right": (bottom, right),
    }[POSITIONS[params.position]]
    return top, left, ch, cw


def _finish(crop: torch.Tensor, size: int, *, flip: bool, flow: bool) -> torch.Tensor:
    """(T, h, w, C) uint8 crop -> (C, T, size, size) float32 in [-1, 1)."""
    clip = crop.permute(0, 3, 1, 2)  # (T, C, h, w), a channels-last view
    if clip.shape[-2:] != (size, size):
        # On uint8 (rounded back to uint8, like PIL's resize) torch takes its vectorised
        # channels-last path, ~10x faster than float; antialias matches PIL when shrinking.
        clip = F.interpolate(
            clip, size=(size, size), mode="bilinear", align_corners=False, antialias=True
        )
    if flip:
        clip = clip.flip(-1)
    out = torch.empty((clip.shape[1], clip.shape[0], size, size), dtype=torch.float32)
    out.copy_(clip.permute(1, 0, 2, 3))
    out.div_(128.0).sub_(1.0)
    if flip and flow:
        # Mirroring the image reverses horizontal motion: negate u.
        out[0].neg_()
    return out


def train_clip(
    frames: torch.Tensor, params: SpatialParams, *, size: int, flow: bool
) -> torch.Tensor:
    """Multi-scale crop, resize, flip and scale one clip.

    Shape:
        frames: (T, H, W, C) uint8 (C=3 RGB, C=2 flow u, v) -> (C, T, size, size) float32
    """
    _, height, width, _ = frames.shape
    top, left, ch, cw = crop_box(params, height, width)
    crop = frames[:, top : top + ch, left : left + cw]
    return _finish(crop, size, flip=params.flip, flow=flow)


def centre_clip(frames: torch.Tensor, *, size: int) -> torch.Tensor:
    """Centre crop of TEST_SCALE x the short side, resized to ``size`` when it differs.

    Shape:
        frames: (T, H, W, C) uint8 -> (C, T, size, size) float32
    """
    _, height, width, _ = frames.shape
    side = round(min(height, width) * TEST_SCALE)
    top, left = (height - side) // 2, (width - side) // 2
    crop = frames[:, top : top + side, left : left + side]
    return _finish(crop, size, flip=False, flow=False)
