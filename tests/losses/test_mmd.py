"""MMD with the SPEC kernel mixture against a slow loop over pairs and kernels."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from cmcl.losses import MMDLoss
from cmcl.losses.mmd import BANDWIDTHS, kernel_bandwidths


def slow_mmd(xs: torch.Tensor, xt: torch.Tensor, widths) -> float:
    def mean_kernel(a, b):
        total = 0.0
        for i in range(len(a)):
            for j in range(len(b)):
                d = sum((float(a[i, k]) - float(b[j, k])) ** 2 for k in range(a.shape[1]))
                total += sum(math.exp(-d / g) for g in widths)
        return total / (len(a) * len(b))

    return mean_kernel(xs, xs) + mean_kernel(xt, xt) - 2 * mean_kernel(xs, xt)


def test_the_twelve_bandwidths_of_the_spec():
    assert len(BANDWIDTHS) == 12
    expected = [9.7 * 2.0 ** (-8 + k * math.sqrt(2)) for k in range(12)]
    assert list(BANDWIDTHS) == expected
    assert BANDWIDTHS[0] == 9.7 / 256
    assert BANDWIDTHS[-1] == pytest.approx(1825.83, rel=1e-5)
    # the next exponent would reach 8: the list stops strictly below it
    assert -8 + 11 * math.sqrt(2) < 8 <= -8 + 12 * math.sqrt(2)
    ratios = [b / a for a, b in itertools.pairwise(BANDWIDTHS)]
    assert ratios == pytest.approx([2 ** math.sqrt(2)] * 11, rel=1e-12)
    assert kernel_bandwidths(start=0.0, stop=2.0, step=1.0) == (9.7, 19.4)


@pytest.mark.parametrize(
    ("n", "m", "d", "scale"), [(1, 1, 3, 1.0), (5, 7, 4, 0.3), (6, 3, 8, 2.0), (4, 4, 2, 10.0)]
)
def test_matches_a_loop_over_pairs_and_kernels(n, m, d, scale):
    gen = torch.Generator().manual_seed(n * 100 + m)
    xs = torch.randn(n, d, generator=gen, dtype=torch.float64) * scale
    xt = torch.randn(m, d, generator=gen, dtype=torch.float64) * scale + 0.5
    got = MMDLoss()(xs, xt)
    assert got.dtype == torch.float64
    assert got.item() == pytest.approx(slow_mmd(xs, xt, BANDWIDTHS), abs=1e-10, rel=1e-10)


def test_custom_bandwidths_and_float32():
    gen = torch.Generator().manual_seed(3)
    xs, xt = torch.randn(6, 5, generator=gen), torch.randn(4, 5, generator=gen) + 1
    widths = (0.5, 2.0)
    got = MMDLoss(widths)(xs, xt)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(slow_mmd(xs.double(), xt.double(), widths), rel=1e-5)


def test_zero_for_identical_samples_and_positive_otherwise():
    x = torch.randn(8, 16, dtype=torch.float64)
    assert MMDLoss()(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert MMDLoss()(x, x + 3.0).item() > 0.1


def test_gradient_is_finite_on_coincident_points():
    x = torch.randn(4, 6, requires_grad=True)
    y = x.detach().clone()  # every distance of a source point to its twin is exactly zero
    MMDLoss()(x, y).backward()
    assert torch.isfinite(x.grad).all()


def test_bad_shapes_are_errors():
    with pytest.raises(ValueError, match="D=3"):
        MMDLoss()(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        MMDLoss()(torch.randn(3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="at least one sample"):
        MMDLoss()(torch.randn(0, 3), torch.randn(2, 3))
    with pytest.raises(ValueError, match="bandwidths"):
        MMDLoss((1.0, 0.0))


def i3d_like(gen: torch.Generator, n: int, shift: float = 0.0) -> torch.Tensor:
    """Non-negative 1024-d rows with norms 10-50, like pooled I3D features."""
    x = torch.relu(torch.randn(n, 1024, generator=gen) + shift)
    return x / x.norm(dim=1, keepdim=True) * torch.empty(n, 1).uniform_(10, 50, generator=gen)


def test_a_point_has_the_exact_kernel_with_itself():
    # The matmul form gave 11.98 here: |x|^2 + |x|^2 - 2 x.x is not 0 in float32.
    x = torch.randn(4, 1024, generator=torch.Generator().manual_seed(0))
    assert torch.equal(MMDLoss().kernel(x, x).diagonal(), torch.full((4,), 12.0))
    features = i3d_like(torch.Generator().manual_seed(1), 5)
    assert torch.equal(MMDLoss().kernel(features, features).diagonal(), torch.full((5,), 12.0))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shift", [0.0, 0.3])
def test_float32_value_and_gradient_match_float64_on_i3d_scale_features(seed, shift):
    gen = torch.Generator().manual_seed(seed)
    source, target = i3d_like(gen, 16), i3d_like(gen, 16, shift=shift)
    target[:3] = source[:3]  # coincident rows across domains: zero distances off the diagonal
    results = {}
    for dtype in (torch.float32, torch.float64):
        xs = source.detach().to(dtype).clone().requires_grad_(True)
        xt = target.detach().to(dtype).clone().requires_grad_(True)
        value = MMDLoss()(xs, xt)
        value.backward()
        results[dtype] = (value.detach().double(), xs.grad.double(), xt.grad.double())
    for got, want in zip(results[torch.float32], results[torch.float64], strict=True):
        assert float((got - want).norm() / want.norm()) < 1e-5
