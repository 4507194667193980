"""Clips of one split: frames decoded, windowed and transformed into tensors.

A clip is a dict in the pytorchvideo style::

    {"rgb": (3, T, S, S) float32, "flow": (2, T, S, S) float32,   # [-1, 1)
     "label": int, "index": int, "domain": str}

or, for evaluation with every test window, ``rgb`` (W, 3, T, S, S) and
``flow`` (W, 2, T, S, S). Which clip is read is a :class:`ClipRequest`: the
segment's row, the integer seed its random window, crop and flip are derived
from (training), and the kind of windows. The content depends on the request
alone, never on global random state, so any DataLoader worker produces the same clip.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from cmcl.data import transforms
from cmcl.data.base import mix_seed
from cmcl.data.frames import FLOW_COMPONENTS, FrameLayout
from cmcl.data.jpeg import CorruptFrameError, FrameDecoder
from cmcl.data.segments import SegmentTable
from cmcl.data.windows import TestWindowSampler, TrainWindowSampler, WindowSpec

WINDOW_KINDS = ("train", "test", "centre")


class ClipRequest(NamedTuple):
    """Which clip to read: segment row, per-sample seed (training only), window kind."""

    index: int
    seed: int = 0
    windows: str = "centre"


class ClipDataset(Dataset):
    """The clips of one (domain, split), addressed by :class:`ClipRequest` (or a row: centre window).

    Training requests draw the window(s) with :class:`TrainWindowSampler` and the
    crop and flip with :func:`transforms.sample_spatial`, each from a generator
    seeded by ``mix_seed(request.seed, purpose)``; ``synchronised`` shares one
    window, crop and flip between RGB and flow. Evaluation requests read
    ``test_windows`` equidistant windows (``"test"``) or the centre one, centre-cropped.
    """

    def __init__(
        self,
        segments: SegmentTable,
        *,
        root: str | Path,
        layout: FrameLayout,
        spec: WindowSpec,
        crop_size: int = 224,
        synchronised: bool = False,
        test_windows: int = 5,
        decoder: str = "auto",
        domain: str | None = None,
    ) -> None:
        self.segments = segments
        self.root = Path(root)
        self.layout = layout
        self.crop_size = crop_size
        self.synchronised = synchronised
        self.domain = segments.domain if domain is None else domain
        self.train_sampler = TrainWindowSampler(spec, synchronised=synchronised)
        self.test_sampler = TestWindowSampler(spec, num_windows=test_windows)
        self.centre_sampler = TestWindowSampler(spec, num_windows=1)
        self.decoder = FrameDecoder(decoder)

    def __len__(self) -> int:
        return len(self.segments)

    def _read(
        self, index: int, rgb: np.ndarray, flow: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode frames (any shape of frame numbers) -> uint8 ``(*shape, H, W, 3)``, ``(*shape, H, W, 2)``."""
        fields = self.segments.fields[index]
        cache: dict[Path, np.ndarray] = {}

        def read(path: Path, grey: bool) -> np.ndarray:
            if path not in cache:
                try:
                    cache[path] = self.decoder.read(path, grey=grey)
                except FileNotFoundError:
                    raise FileNotFoundError(
                        f"{path}: missing frame of segment {self.segments.ids[index]} "
                        f"({self.segments.source}); `cmcl data check` lists every missing frame"
                    ) from None
                except CorruptFrameError as error:
                    raise CorruptFrameError(
                        f"{error} (frame of segment {self.segments.ids[index]}, "
                        f"{self.segments.source}); replace or re-extract it; `cmcl data check "
                        f"--root {self.root}` lists every damaged frame"
                    ) from None
                first_path, first = next(iter(cache.items()))
                if cache[path].shape[:2] != first.shape[:2]:
                    raise ValueError(
                        f"frames of segment {self.segments.ids[index]} differ in size (H, W): "
                        f"{first_path} is {first.shape[:2]}, {path} is {cache[path].shape[:2]}"
                    )
            return cache[path]

        rgb_frames = [
            read(self.layout.rgb_path(self.root, fields, int(n)), False) for n in rgb.ravel()
        ]
        flow_frames = [
            np.stack(
                [
                    read(self.layout.flow_path(self.root, fields, int(n), uv), True)
                    for uv in FLOW_COMPONENTS
                ],
                axis=-1,
            )
            for n in flow.ravel()
        ]
        rgb_array = np.stack(rgb_frames).reshape(*rgb.shape, *rgb_frames[0].shape)
        flow_array = np.stack(flow_frames).reshape(*flow.shape, *flow_frames[0].shape)
        return torch.from_numpy(rgb_array), torch.from_numpy(flow_array)

    def __getitem__(self, request: ClipRequest | int) -> dict:
        if not isinstance(request, ClipRequest):
            request = ClipRequest(int(request))
        index = request.index
        if not 0 <= index < len(self):
            raise IndexError(f"segment row {index} out of range for {len(self)} segments")
        start, stop = int(self.segments.start[index]), int(self.segments.stop[index])
        size = self.crop_size
        if request.windows == "train":
            frames = self.train_sampler(start, stop, _generator(request.seed, 0))
            rgb, flow = self._read(index, frames.rgb, frames.flow)
            rgb_params = transforms.sample_spatial(_generator(request.seed, 1))
            flow_params = (
                rgb_params
                if self.synchronised
                else transforms.sample_spatial(_generator(request.seed, 2))
            )
            rgb_clip = transforms.train_clip(rgb, rgb_params, size=size, flow=False)
            flow_clip = transforms.train_clip(flow, flow_params, size=size, flow=True)
        elif request.windows in ("test", "centre"):
            sampler = self.test_sampler if request.windows == "test" else self.centre_sampler
            frames = sampler(start, stop)
            rgb, flow = self._read(index, frames.rgb, frames.flow)
            rgb_clip = torch.stack([transforms.centre_clip(w, size=size) for w in rgb])
            flow_clip = torch.stack([transforms.centre_clip(w, size=size) for w in flow])
            if request.windows == "centre":
                rgb_clip, flow_clip = rgb_clip[0], flow_clip[0]
        else:
            raise ValueError(
                f"unknown window kind {request.windows!r}; valid: {', '.join(WINDOW_KINDS)}"
            )
        return {
            "rgb": rgb_clip,
            "flow": flow_clip,
            "label": int(self.segments.labels[index]),
            "index": index,
            "domain": self.domain,
        }


def _generator(seed: int, purpose: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(seed, purpose))


def collate_clips(clips: Sequence[dict]) -> dict:
    """Stack clips into a batch: tensors gain a leading N, labels and rows become long tensors."""
    return {
        "rgb": torch.stack([c["rgb"] for c in clips]),
        "flow": torch.stack([c["flow"] for c in clips]),
        "label": torch.tensor([c["label"] for c in clips], dtype=torch.long),
        "index": torch.tensor([c["index"] for c in clips], dtype=torch.long),
        "domain": clips[0]["domain"],
    }
