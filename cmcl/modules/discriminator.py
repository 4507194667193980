"""Small two-layer classifiers used by the adversarial and self-supervised baselines.

* :class:`Discriminator`: Linear -> ReLU -> Linear; MM-SADA's per-modality domain
  discriminator (1024 -> 100 -> 2) and Table 8's RGB-vs-flow discriminator on z.
* :class:`CorrespondenceHead`: the same classifier on ``concat(F^a, F^m)``, deciding
  whether an RGB and a flow feature come from the same segment (MM-SADA, 2048 -> 100 -> 2).

Gradient reversal is not built in: the caller reverses its input with
:func:`cmcl.modules.grad_reverse` and the coefficient it computes.
"""

from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Linear(in, hidden) -> ReLU -> Linear(hidden, classes), returning logits.

    Shape:
        input (N, D) -> output (N, classes)
    """

    def __init__(self, *, in_dim: int, hidden: int = 100, classes: int = 2) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden", hidden), ("classes", classes)):
            if value <= 0:
                raise ValueError(f"discriminator {name} must be positive, got {value}")
        self.in_dim = in_dim
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"expected input (N, {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)


class CorrespondenceHead(nn.Module):
    """Do this RGB feature and this flow feature come from the same segment? (2 logits)

    Logit 1 means "corresponding". RGB first, flow second in the concatenation.

    Shape:
        rgb (N, D), flow (N, D) -> output (N, 2)
    """

    def __init__(self, *, feature_dim: int, hidden: int = 100) -> None:
        super().__init__()
        self.classifier = Discriminator(in_dim=2 * feature_dim, hidden=hidden, classes=2)

    def forward(self, rgb: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        if rgb.shape != flow.shape:
            raise ValueError(
                f"rgb and flow features must have the same shape, got {tuple(rgb.shape)} "
                f"and {tuple(flow.shape)}"
            )
        return self.classifier(torch.cat([rgb, flow], dim=1))
