"""Two-group classification loss of the adversarial baselines (DANN, MM-SADA, Table 8)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.losses._checks import check_matrix
from cmcl.losses._precision import float32_compute


class DomainClassificationLoss(nn.Module):
    """Cross-entropy of a discriminator telling group 0 from group 1.

    The first argument's rows are labelled 0, the second's 1 (source = 0 and
    target = 1 for a domain discriminator; RGB = 0 and flow = 1 for Table 8's
    modality discriminator), and the loss is the mean over all N + M rows. The
    discriminator minimises it; the features, reached through a gradient
    reversal, maximise it. Computed in float32 whatever autocast encloses it.

    Shape:
        first: (N, 2) logits; second: (M, 2) logits; output: scalar
    """

    @float32_compute
    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        check_matrix("first", first, 2)
        check_matrix("second", second, 2)
        if len(first) + len(second) == 0:
            raise ValueError("domain classification needs at least one row")
        logits = torch.cat([first, second])
        labels = torch.cat(
            [
                torch.zeros(len(first), dtype=torch.long, device=logits.device),
                torch.ones(len(second), dtype=torch.long, device=logits.device),
            ]
        )
        return F.cross_entropy(logits, labels)
