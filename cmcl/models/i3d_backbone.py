"""I3D as the video-mode backbone of one stream of :class:`cmcl.models.two_stream.TwoStreamModel`.

The stream's own dropout and linear classifier sit on top (SPEC section 1), so
the backbone is I3D without its logits layer: a logits layer that is never used
would also leave parameters without gradients, which DistributedDataParallel
rejects unless told to search for them on every step.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from cmcl.models.i3d import FEATURE_DIM, InceptionI3d, load_pytorch_i3d


class I3DBackbone(nn.Module):
    """Clip -> F^k, the 1024-d pooled Mixed_5c feature of I3D.

    Args:
        in_channels: 3 for RGB, 2 for flow.
        checkpoint: optional pytorch-i3d file (rgb_imagenet.pt / flow_imagenet.pt)
            to start from; its logits are dropped. For the load report, call
            ``load_pytorch_i3d(backbone.i3d, path)`` yourself instead.
        channels_last: keep weights and activations in the channels_last_3d
            memory format (faster convolutions on recent GPUs with cuDNN; on CPU
            PyTorch's 3-D convolutions return the default format, so it buys
            little there, see benchmarks/RESULTS.md).

    Works under ``torch.autocast`` (convolutions then run in the autocast
    dtype, e.g. bfloat16, and so does the returned feature).

    Shape:
        input (N, in_channels, T, H, W) -> output (N, 1024)
    """

    feature_dim = FEATURE_DIM

    def __init__(
        self,
        *,
        in_channels: int = 3,
        checkpoint: str | Path | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.i3d = InceptionI3d(num_classes=None, in_channels=in_channels)
        if checkpoint is not None:
            load_pytorch_i3d(self.i3d, checkpoint)
        self.channels_last = channels_last
        if channels_last:
            self.to(memory_format=torch.channels_last_3d)

    @property
    def in_channels(self) -> int:
        return self.i3d.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.i3d.extract_features(x)


def two_stream_i3d_backbones(
    *,
    rgb_checkpoint: str | Path | None = None,
    flow_checkpoint: str | Path | None = None,
    channels_last: bool = False,
) -> dict[str, I3DBackbone]:
    """The RGB (3-channel) and flow (2-channel) backbones, keyed like TwoStreamModel's arguments.

    ``TwoStreamModel(**two_stream_i3d_backbones(...), num_classes=8)`` builds
    the video-mode model.
    """
    return {
        "rgb_backbone": I3DBackbone(
            in_channels=3, checkpoint=rgb_checkpoint, channels_last=channels_last
        ),
        "flow_backbone": I3DBackbone(
            in_channels=2, checkpoint=flow_checkpoint, channels_last=channels_last
        ),
    }
