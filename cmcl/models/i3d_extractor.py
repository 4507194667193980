"""A frozen two-stream I3D for feature extraction: clips -> F^k, the 1024-d pooled Mixed_5c.

What `cmcl features extract` runs over every window of every segment: the
RGB (3-channel) and flow (2-channel) I3D of :mod:`cmcl.models.i3d_backbone`,
in eval mode (BatchNorm uses its running statistics), without gradients. On
CUDA it runs under bf16 autocast with channels-last weights and activations
and cuDNN autotuning (benchmarks/gpu_check.py measures both); on CPU in fp32.
Features always come back as float32.

Weights come from pytorch-i3d checkpoints, or, for tests and smoke runs only,
from a seeded random initialisation that every process reproduces exactly.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from cmcl.models.i3d_backbone import I3DBackbone

MODALITY_CHANNELS = {"rgb": 3, "flow": 2}


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on CUDA, fp32 elsewhere; ``fp32``/``bf16`` as given."""
    if precision not in ("auto", "fp32", "bf16"):
        raise ValueError(f"precision must be auto, fp32 or bf16; got {precision!r}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def random_backbone(modality: str, seed: int) -> I3DBackbone:
    """An I3D stream with seeded random weights; the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        # One seed per modality, so the two streams differ.
        torch.manual_seed(seed * 2 + (modality == "flow"))
        return I3DBackbone(in_channels=MODALITY_CHANNELS[modality])


class FrozenTwoStreamI3D(nn.Module):
    """Both I3D streams, frozen: ``features(rgb, flow) -> {"rgb": F, "flow": F}``.

    Args:
        checkpoints: per modality, a pytorch-i3d file, or None for seeded random
            weights (then ``random_seed`` is required: random features are for tests).
        random_seed: seed of the random initialisation.
        device: where to run (default: CUDA when available).
        precision: auto (bf16 autocast on CUDA), fp32 or bf16.

    Shape:
        rgb (N, 3, T, H, W), flow (N, 2, T, H, W) -> each feature (N, 1024) float32
    """

    def __init__(
        self,
        *,
        checkpoints: dict[str, str | Path | None],
        random_seed: int | None = None,
        device: torch.device | str | None = None,
        precision: str = "auto",
    ) -> None:
        super().__init__()
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)
        streams = {}
        for modality, channels in MODALITY_CHANNELS.items():
            path = checkpoints.get(modality)
            if path is not None:
                streams[modality] = I3DBackbone(in_channels=channels, checkpoint=path)
            elif random_seed is not None:
                streams[modality] = random_backbone(modality, random_seed)
            else:
                raise ValueError(
                    f"no {modality} I3D checkpoint: give a pytorch-i3d file "
                    f"({modality}_imagenet.pt), or allow random weights explicitly (tests only)"
                )
        self.streams = nn.ModuleDict(streams)
        self.requires_grad_(False)
        self.eval()
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one clip shape: autotune once
            for stream in self.streams.values():
                stream.channels_last = True
            self.to(memory_format=torch.channels_last_3d)
        self.to(self.device)

    def train(self, mode: bool = True) -> FrozenTwoStreamI3D:
        # Frozen means eval-mode BatchNorm too, whatever a caller asks.
        return super().train(False)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def features(self, rgb: torch.Tensor, flow: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for modality, clips in (("rgb", rgb), ("flow", flow)):
            clips = clips.to(self.device, non_blocking=True)
            with self._autocast():
                out[modality] = self.streams[modality](clips).float()
        return out
