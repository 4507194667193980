"""Reusable parts: memory bank, gradient reversal, discriminators, heads."""

from cmcl.modules.discriminator import CorrespondenceHead, Discriminator
from cmcl.modules.gradient_reversal import GradientReversalFunction, grad_reverse, grl_coefficient
from cmcl.modules.memory_bank import MemoryBank

__all__ = [
    "CorrespondenceHead",
    "Discriminator",
    "GradientReversalFunction",
    "MemoryBank",
    "grad_reverse",
    "grl_coefficient",
]
