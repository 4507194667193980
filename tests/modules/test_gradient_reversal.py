"""Gradient reversal: identity forward, exactly -coefficient * gradient backward, no state."""

from __future__ import annotations

import math

import pytest
import torch

from cmcl.modules import grad_reverse, grl_coefficient


@pytest.mark.parametrize("coefficient", [0.0, 0.2, 1.0, 2.5])
def test_identity_forward_and_scaled_flipped_gradient(coefficient):
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 5, generator=gen, requires_grad=True)
    upstream = torch.randn(4, 5, generator=gen)
    y = grad_reverse(x, coefficient)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, upstream * -coefficient)


def test_reversal_inside_a_network_flips_the_parameter_gradient():
    torch.manual_seed(0)
    layer, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)
    x = torch.randn(6, 3)
    head(layer(x)).pow(2).sum().backward()
    plain_layer, plain_head = layer.weight.grad.clone(), head.weight.grad.clone()
    layer.zero_grad(), head.zero_grad()
    head(grad_reverse(layer(x), 0.3)).pow(2).sum().backward()
    assert torch.allclose(layer.weight.grad, -0.3 * plain_layer, atol=1e-6)
    assert torch.equal(head.weight.grad, plain_head)  # above the reversal nothing changes


def test_no_hidden_counter_repeated_calls_give_the_same_gradient():
    grads = []
    for _ in range(3):
        x = torch.ones(3, requires_grad=True)
        grad_reverse(x, 0.5).sum().backward()
        grads.append(x.grad.clone())
    assert all(torch.equal(g, torch.full((3,), -0.5)) for g in grads)


def test_negative_coefficient_is_an_error():
    with pytest.raises(ValueError, match=">= 0"):
        grad_reverse(torch.ones(2), -0.1)


def test_coefficient_ramp():
    assert grl_coefficient(0.0, scale=0.2) == 0.0
    assert grl_coefficient(1.0, scale=0.2) == pytest.approx(0.2 * (2 / (1 + math.exp(-10)) - 1))
    assert grl_coefficient(0.5) == pytest.approx(2 / (1 + math.exp(-5)) - 1)
    values = [grl_coefficient(p / 10, scale=0.2) for p in range(11)]
    assert values == sorted(values) and values[-1] < 0.2
    with pytest.raises(ValueError, match="progress"):
        grl_coefficient(1.5)
