"""Self-training on confident target pseudo-labels (the pseudo-labelling baseline, Table 4)."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.losses._checks import check_matrix, zero_with_graph
from cmcl.losses._precision import float32_compute


class PseudoLabels(NamedTuple):
    """Detached pseudo-labels of a batch.

    Shape:
        label: (N,) argmax of the softmax; confidence: (N,) its max; confident: (N,) bool
    """

    label: torch.Tensor
    confidence: torch.Tensor
    confident: torch.Tensor


@float32_compute
def confident_pseudo_labels(logits: torch.Tensor, threshold: float) -> PseudoLabels:
    """``confident = max softmax >= threshold`` (a probability equal to T counts), computed in float32."""
    return _confident_pseudo_labels(logits, threshold)


def _confident_pseudo_labels(logits: torch.Tensor, threshold: float) -> PseudoLabels:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold T must be in (0, 1], got {threshold}")
    check_matrix("logits", logits)
    probs = torch.softmax(logits.detach(), dim=1)
    confidence, label = probs.max(dim=1)
    return PseudoLabels(label=label, confidence=confidence, confident=confidence >= threshold)


class PseudoLabelLosses(NamedTuple):
    """Every row's cross-entropy against its pseudo-label and which rows are confident."""

    losses: torch.Tensor
    """(N,) per-row cross-entropy (rows that are not used count with weight 0)."""
    used: torch.Tensor
    """(N,) bool: the confident rows; reduce with these as weights."""


class PseudoLabelLoss(nn.Module):
    """Cross-entropy of logits against their own confident, detached argmax.

    The loss is the mean over rows whose max softmax is >= T, and exactly 0
    (still attached to the graph) when none is confident. Computed in float32
    whatever autocast encloses it.

    Args:
        threshold: T in (0, 1].

    Shape:
        logits: (N, C) (the fused target logits); output: scalar
    """

    def __init__(self, threshold: float = 0.8) -> None:
        super().__init__()
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold T must be in (0, 1], got {threshold}")
        self.threshold = float(threshold)

    @float32_compute
    def per_sample(self, logits: torch.Tensor) -> PseudoLabelLosses:
        return self._per_sample(logits)

    def _per_sample(self, logits: torch.Tensor) -> PseudoLabelLosses:
        # Every row, then weights: boolean indexing would read the mask back to the host.
        pseudo = _confident_pseudo_labels(logits, self.threshold)
        losses = F.cross_entropy(logits, pseudo.label, reduction="none")
        return PseudoLabelLosses(losses=losses, used=pseudo.confident)

    @float32_compute
    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        result = self._per_sample(logits)
        if result.losses.numel() == 0:
            return zero_with_graph(logits)
        used = result.used.to(result.losses.dtype)
        return (result.losses * used).sum() / used.sum().clamp_min(1.0)
