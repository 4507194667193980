"""Gradient reversal (Ganin & Lempitsky, ICML 2015) with a caller-supplied coefficient.

The coefficient is an argument of every call, computed by the caller from the
trainer's progress (:func:`grl_coefficient`); nothing here counts calls or
keeps a schedule, so a resumed run reverses gradients exactly as an
uninterrupted one.
"""

from __future__ import annotations

import math

import torch


class GradientReversalFunction(torch.autograd.Function):
    """Identity forward; backward multiplies the incoming gradient by ``-coefficient``."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, coefficient: float) -> torch.Tensor:
        ctx.coefficient = coefficient
        # view_as: a new tensor node, so autograd calls our backward for it.
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad * -ctx.coefficient, None


def grad_reverse(x: torch.Tensor, coefficient: float = 1.0) -> torch.Tensor:
    """``x`` unchanged forward; gradient ``-coefficient * g`` backward.

    Args:
        x: any tensor.
        coefficient: >= 0; 0 blocks the gradient, 1 is a plain sign flip.

    Shape:
        input (*) -> output (*), same values
    """
    if not coefficient >= 0.0:
        raise ValueError(f"gradient reversal coefficient must be >= 0, got {coefficient}")
    return GradientReversalFunction.apply(x, float(coefficient))


def grl_coefficient(progress: float, *, scale: float = 1.0, gamma: float = 10.0) -> float:
    """The DANN ramp ``scale * (2 / (1 + exp(-gamma * p)) - 1)``: 0 at p=0, ~scale at p=1.

    Args:
        progress: p in [0, 1], the fraction of the adaptation stage done.
        scale: the coefficient reached at the end (0.2 for MM-SADA, SPEC section 8).
        gamma: steepness (10 in DANN and MM-SADA).
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    return scale * (2.0 / (1.0 + math.exp(-gamma * progress)) - 1.0)
