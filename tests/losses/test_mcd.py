"""MCD's classifier discrepancy against a naive loop."""

from __future__ import annotations

import math

import pytest
import torch

from cmcl.losses import ClassifierDiscrepancyLoss


def naive_discrepancy(l1: torch.Tensor, l2: torch.Tensor) -> float:
    total = 0.0
    for a, b in zip(l1.tolist(), l2.tolist(), strict=True):
        za, zb = sum(math.exp(v) for v in a), sum(math.exp(v) for v in b)
        total += sum(abs(math.exp(u) / za - math.exp(v) / zb) for u, v in zip(a, b, strict=True))
    return total / l1.numel()


@pytest.mark.parametrize(("n", "c"), [(1, 2), (5, 8), (16, 12)])
def test_matches_the_naive_mean_absolute_softmax_difference(n, c):
    gen = torch.Generator().manual_seed(n + c)
    l1, l2 = torch.randn(n, c, generator=gen) * 3, torch.randn(n, c, generator=gen)
    got = ClassifierDiscrepancyLoss()(l1, l2)
    assert got.item() == pytest.approx(naive_discrepancy(l1, l2), rel=1e-5)
    assert 0.0 <= got.item() <= 2.0 / c


def test_zero_for_equal_heads_and_symmetric():
    l1, l2 = torch.randn(4, 5), torch.randn(4, 5)
    loss = ClassifierDiscrepancyLoss()
    assert loss(l1, l1).item() == 0.0
    assert loss(l1, l2).item() == pytest.approx(loss(l2, l1).item())
    # softmax is shift-invariant: adding a constant per row changes nothing
    assert loss(l1 + 5.0, l1).item() == pytest.approx(0.0, abs=1e-7)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        ClassifierDiscrepancyLoss()(torch.randn(4, 5), torch.randn(4, 6))
