"""Pseudo-label masking at the threshold boundary and the loss against a naive reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cmcl.losses import PseudoLabelLoss, confident_pseudo_labels


def _logits() -> torch.Tensor:
    return torch.randn(12, 8, generator=torch.Generator().manual_seed(0)) * 2


def test_probability_equal_to_the_threshold_is_confident_and_just_below_is_not():
    logits = _logits()
    probs = torch.softmax(logits.float(), dim=1).max(dim=1).values
    for row in range(len(logits)):
        p = float(probs[row])  # a float32 value, exactly representable as a Python float
        at = confident_pseudo_labels(logits, p)
        assert bool(at.confident[row])
        assert torch.equal(at.confident, probs >= p)
        above = float(np.nextafter(np.float32(p), np.float32(2.0)))
        assert not bool(confident_pseudo_labels(logits, min(above, 1.0)).confident[row])


def test_labels_are_the_detached_argmax():
    logits = _logits().requires_grad_()
    pseudo = confident_pseudo_labels(logits, 0.5)
    assert torch.equal(pseudo.label, logits.argmax(dim=1))
    assert not pseudo.confidence.requires_grad


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9])
def test_loss_is_the_mean_cross_entropy_of_the_confident_rows(threshold):
    logits = _logits()
    rows = logits.tolist()
    losses = []
    for row in rows:
        z = sum(math.exp(v) for v in row)
        p = [math.exp(v) / z for v in row]
        if max(p) >= threshold:
            losses.append(-math.log(max(p)))
    got = PseudoLabelLoss(threshold)(logits)
    expected = sum(losses) / len(losses) if losses else 0.0
    assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_no_confident_row_gives_an_attached_zero():
    logits = torch.zeros(4, 3, requires_grad=True)  # softmax 1/3 everywhere
    loss = PseudoLabelLoss(0.5)(logits)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(4, 3))


@pytest.mark.parametrize("threshold", [0.0, -0.1, 1.01])
def test_threshold_outside_0_1_is_an_error(threshold):
    with pytest.raises(ValueError, match=r"threshold T must be in \(0, 1\]"):
        PseudoLabelLoss(threshold)
