"""SND (Saito et al., ICCV 2021) against a naive reference and closed forms.

The paper's definition: L2-normalise each target prediction, take cosine
similarities to every other target sample (self excluded) scaled by 1/0.05,
softmax them per sample, and average the entropies of those distributions.
"""

from __future__ import annotations

import math

import pytest
import torch

from cmcl.engine.evaluate import SND_TEMPERATURE, soft_neighbourhood_density


def naive_snd(probs: torch.Tensor, temperature: float) -> float:
    rows = [r / r.norm() for r in probs.double()]
    total = 0.0
    for i, anchor in enumerate(rows):
        scores = [float(anchor @ other) / temperature for j, other in enumerate(rows) if j != i]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        z = sum(weights)
        total -= sum(w / z * math.log(w / z) for w in weights)
    return total / len(rows)


@pytest.mark.parametrize(("n", "classes", "seed"), [(5, 3, 0), (17, 8, 1), (40, 12, 2)])
def test_matches_the_naive_reference(n, classes, seed):
    gen = torch.Generator().manual_seed(seed)
    probs = torch.softmax(torch.randn(n, classes, generator=gen) * 3, dim=1)
    assert soft_neighbourhood_density(probs) == pytest.approx(
        naive_snd(probs, SND_TEMPERATURE), rel=1e-9
    )


def test_closed_forms():
    assert SND_TEMPERATURE == 0.05  # the paper's temperature
    # Identical predictions: every other sample is an equally close neighbour.
    same = torch.full((9, 4), 0.25)
    assert soft_neighbourhood_density(same) == pytest.approx(math.log(8))
    # Two one-hot clusters of m: m - 1 neighbours at similarity 1, m at 0.
    m = 6
    probs = torch.cat([torch.eye(2)[[0]].repeat(m, 1), torch.eye(2)[[1]].repeat(m, 1)])
    near, far = math.exp(1 / SND_TEMPERATURE), 1.0
    z = (m - 1) * near + m * far
    expected = -((m - 1) * near / z * math.log(near / z) + m * far / z * math.log(far / z))
    assert soft_neighbourhood_density(probs) == pytest.approx(expected, rel=1e-9)
    # Self excluded: two samples have one neighbour each, entropy 0.
    assert soft_neighbourhood_density(torch.rand(2, 5)) == pytest.approx(0.0, abs=1e-12)
    assert math.isnan(soft_neighbourhood_density(torch.rand(1, 5)))


def test_denser_neighbourhoods_score_higher():
    gen = torch.Generator().manual_seed(3)
    centres = torch.eye(4)
    labels = torch.arange(40) % 4
    tight = torch.softmax(centres[labels] * 8 + 0.1 * torch.randn(40, 4, generator=gen), dim=1)
    loose = torch.softmax(torch.randn(40, 4, generator=gen) * 3, dim=1)
    assert soft_neighbourhood_density(tight) > soft_neighbourhood_density(loose)
