"""The two-stream (RGB + flow) model of SPEC section 1.

Each stream is ``backbone -> F^k -> dropout -> linear classifier``; the
fused logits are the sum (reference code) or the mean (paper text) of the
two streams' logits. A projection head ``h`` shared by both modalities and
both domains maps F^k to an L2-normalised embedding for the cross-modal loss.

The backbone is pluggable: anything that maps a stream's input to
``(N, feature_dim)`` (the feature-mode MLP of :mod:`cmcl.models.feature_backbone`
or the I3D of :mod:`cmcl.models.i3d`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

MODALITIES = ("rgb", "flow")


class StreamOutput(NamedTuple):
    """Forward pass of one domain's batch through both streams.

    Shape:
        features: dict modality -> (N, D), F^k before dropout
        logits: dict modality -> (N, C)
        fused: (N, C)
    """

    features: dict[str, torch.Tensor]
    logits: dict[str, torch.Tensor]
    fused: torch.Tensor


class ProjectionHead(nn.Module):
    """h: Linear(D, hidden) -> ReLU -> Linear(hidden, out), then L2-normalise.

    Shape:
        input (N, D) -> output (N, out), unit rows
    """

    def __init__(self, *, in_dim: int = 1024, hidden: int = 1024, out_dim: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, out_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # The layers may run in bfloat16 under autocast; the unit rows the banks
        # and the contrastive loss compare are normalised in float32.
        return F.normalize(self.net(features).float(), dim=1)


class Stream(nn.Module):
    """One modality: backbone -> F -> dropout -> classifier."""

    def __init__(self, *, backbone: nn.Module, feature_dim: int, num_classes: int, dropout: float):
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone(x)
        return features, self.classifier(self.dropout(features))


class TwoStreamModel(nn.Module):
    """RGB and flow streams with separate weights, logit fusion and a shared projection head.

    Args:
        rgb_backbone, flow_backbone: modules mapping a stream's input to (N, feature_dim).
        num_classes: C.
        feature_dim: D of F^k (1024 for I3D).
        dropout: before each classifier (0.5 in the paper).
        fusion: "sum" or "mean" of the two streams' logits.
        proj_hidden, proj_dim: projection head sizes (1024, 128).

    Source and target batches are forwarded by separate calls so that batch
    norm uses per-domain batch statistics.
    """

    def __init__(
        self,
        *,
        rgb_backbone: nn.Module,
        flow_backbone: nn.Module,
        num_classes: int,
        feature_dim: int = 1024,
        dropout: float = 0.5,
        fusion: str = "sum",
        proj_hidden: int = 1024,
        proj_dim: int = 128,
    ) -> None:
        super().__init__()
        if fusion not in ("sum", "mean"):
            raise ValueError(f"fusion must be 'sum' or 'mean', got {fusion!r}")
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        self.fusion = fusion
        self.num_classes = num_classes
        self.feature_dim = feature_dim
        self.proj_dim = proj_dim
        self.streams = nn.ModuleDict(
            {
                "rgb": Stream(
                    backbone=rgb_backbone,
                    feature_dim=feature_dim,
                    num_classes=num_classes,
                    dropout=dropout,
                ),
                "flow": Stream(
                    backbone=flow_backbone,
                    feature_dim=feature_dim,
                    num_classes=num_classes,
                    dropout=dropout,
                ),
            }
        )
        self.head = ProjectionHead(in_dim=feature_dim, hidden=proj_hidden, out_dim=proj_dim)

    def fuse(self, logits: dict[str, torch.Tensor]) -> torch.Tensor:
        total = logits["rgb"] + logits["flow"]
        return total / 2 if self.fusion == "mean" else total

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> StreamOutput:
        features, logits = {}, {}
        for modality, x in (("rgb", rgb), ("flow", flow)):
            features[modality], logits[modality] = self.streams[modality](x)
        return StreamOutput(features=features, logits=logits, fused=self.fuse(logits))

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """z = h(F), L2-normalised. Shape: (N, D) -> (N, proj_dim)."""
        return self.head(features)
