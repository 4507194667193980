"""Classifier discrepancy of Maximum Classifier Discrepancy (Saito et al., CVPR 2018)."""

from __future__ import annotations

import torch
from torch import nn

from cmcl.losses._checks import check_matrix, zero_with_graph
from cmcl.losses._precision import float32_compute


class ClassifierDiscrepancyLoss(nn.Module):
    """Mean absolute difference of two classifiers' softmax outputs.

    ``d = mean_{i, c} |softmax(l1)_ic - softmax(l2)_ic|``, the mean over every
    sample and class (MCD's L1 discrepancy). The MCD method subtracts it, so
    the heads learn to disagree on the target while the features, behind a
    gradient reversal, learn to make them agree. Computed in float32 whatever
    autocast encloses it.

    Shape:
        logits1, logits2: (N, C); output: scalar in [0, 2 / C]
    """

    @float32_compute
    def forward(self, logits1: torch.Tensor, logits2: torch.Tensor) -> torch.Tensor:
        check_matrix("logits1", logits1)
        if logits2.shape != logits1.shape:
            raise ValueError(
                f"logits2 must have the shape of logits1 {tuple(logits1.shape)}, "
                f"got {tuple(logits2.shape)}"
            )
        if logits1.numel() == 0:
            return zero_with_graph(logits1)
        p1 = torch.softmax(logits1, dim=1)
        p2 = torch.softmax(logits2, dim=1)
        return (p1 - p2).abs().mean()
