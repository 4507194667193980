"""Feature-mode backbone: trainable layers over pre-extracted window features.

In feature mode a frozen I3D has already turned each window into a 1024-d
vector (``cmcl features extract``, or the synthetic benchmark); this module is
the trainable part of the stream on top of it. Batch norm sits inside so that
per-domain batch statistics (and AdaBN) mean the same thing as in video mode.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureBackbone(nn.Module):
    """Linear -> BatchNorm1d -> ReLU, producing F^k.

    Shape:
        input (N, D_in) -> output (N, D)
    """

    def __init__(self, *, in_dim: int = 1024, out_dim: int = 1024) -> None:
        super().__init__()
        if in_dim <= 0 or out_dim <= 0:
            raise ValueError(f"dimensions must be positive, got in_dim={in_dim}, out_dim={out_dim}")
        self.net = nn.Sequential(nn.Linear(in_dim, out_dim), nn.BatchNorm1d(out_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected window features of shape (N, D), got {tuple(x.shape)}")
        return self.net(x)
