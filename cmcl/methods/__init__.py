"""Methods: one file each; :mod:`cmcl.methods.registry` maps names to classes."""

from cmcl.methods.base import ADAPT, WARMUP, Method, StepContext, StepResult
from cmcl.methods.registry import METHODS, build_method, method_class

__all__ = [
    "ADAPT",
    "METHODS",
    "WARMUP",
    "Method",
    "StepContext",
    "StepResult",
    "build_method",
    "method_class",
]
