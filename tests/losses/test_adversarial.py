"""Domain (two-group) classification loss against a naive cross-entropy."""

from __future__ import annotations

import math

import pytest
import torch

from cmcl.losses import DomainClassificationLoss


def naive(first: torch.Tensor, second: torch.Tensor) -> float:
    rows = [(r, 0) for r in first.tolist()] + [(r, 1) for r in second.tolist()]
    total = 0.0
    for logits, label in rows:
        total += -logits[label] + math.log(sum(math.exp(v) for v in logits))
    return total / len(rows)


@pytest.mark.parametrize(("n", "m"), [(3, 5), (8, 8), (1, 0), (0, 2)])
def test_first_group_is_zero_second_is_one(n, m):
    gen = torch.Generator().manual_seed(10 * n + m)
    first, second = torch.randn(n, 2, generator=gen) * 2, torch.randn(m, 2, generator=gen)
    # float32 cross-entropy against float64 arithmetic: a loss near 0 needs an absolute bound.
    assert DomainClassificationLoss()(first, second).item() == pytest.approx(
        naive(first, second), rel=1e-6, abs=1e-7
    )


def test_a_perfect_discriminator_has_near_zero_loss():
    first = torch.tensor([[20.0, -20.0]] * 3)
    second = torch.tensor([[-20.0, 20.0]] * 4)
    assert DomainClassificationLoss()(first, second).item() < 1e-12
    assert DomainClassificationLoss()(second, first).item() > 30


def test_wrong_shapes_are_errors():
    with pytest.raises(ValueError, match="D=2"):
        DomainClassificationLoss()(torch.randn(3, 3), torch.randn(3, 2))
    with pytest.raises(ValueError, match="at least one row"):
        DomainClassificationLoss()(torch.randn(0, 2), torch.randn(0, 2))
