"""The losses' precision policy: float32 (or float64) arithmetic whatever autocast encloses them.

Under ``torch.autocast`` a ``.float()`` inside a loss does not help: autocast
re-casts the inputs of every matmul to bfloat16, so a contrastive loss over
a bank of thousands of rows, or an MMD of 1024-d features, comes out in
bfloat16 with errors of 1e-3 to tens of percent. Every loss entry point is
wrapped with :func:`float32_compute`, which turns autocast off for its body
and casts floating-point tensor arguments to at least float32 (float64 stays
float64, so the tests can compare against a float64 run of the same code).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_HALF = (torch.float16, torch.bfloat16)


def at_least_float32(value: Any) -> Any:
    """A half-precision tensor as float32; anything else unchanged."""
    if isinstance(value, torch.Tensor) and value.dtype in _HALF:
        return value.float()
    return value


def common_dtype(a: torch.Tensor, b: torch.Tensor) -> torch.dtype:
    """``torch.promote_types`` of two tensors' dtypes; equal dtypes without a dispatched call."""
    return a.dtype if a.dtype == b.dtype else torch.promote_types(a.dtype, b.dtype)


def float32_compute(function: F) -> F:
    """Run ``function`` with autocast disabled and half-precision tensor arguments as float32."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        # One pass over the arguments, and no context managers when nothing needs
        # them: a training step calls these entry points a dozen times.
        devices: set[str] = set()
        half = False
        for value in itertools.chain(args, kwargs.values()):
            if isinstance(value, torch.Tensor):
                devices.add(value.device.type)
                half = half or value.dtype in _HALF
        if half:
            args = tuple(at_least_float32(a) for a in args)
            kwargs = {k: at_least_float32(v) for k, v in kwargs.items()}
        enclosing = [d for d in devices or ("cpu",) if torch.is_autocast_enabled(d)]
        if not enclosing:
            return function(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for device in enclosing:
                stack.enter_context(torch.autocast(device_type=device, enabled=False))
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
