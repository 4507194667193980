"""Shape checks shared by the loss modules."""

from __future__ import annotations

import torch


def check_matrix(name: str, tensor: torch.Tensor, dim: int | None = None) -> None:
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D (rows, D), got shape {tuple(tensor.shape)}")
    if dim is not None and tensor.shape[1] != dim:
        raise ValueError(f"{name} must have D={dim} columns, got shape {tuple(tensor.shape)}")


def check_vector(name: str, tensor: torch.Tensor, length: int) -> None:
    if tensor.dim() != 1 or tensor.shape[0] != length:
        raise ValueError(f"{name} must have shape ({length},), got {tuple(tensor.shape)}")


def check_mask(name: str, tensor: torch.Tensor, length: int) -> None:
    check_vector(name, tensor, length)
    # A float mask (say, the max probabilities instead of max p >= T) would
    # otherwise be read as "every nonzero entry is True".
    if tensor.dtype != torch.bool:
        raise ValueError(f"{name} must be a bool mask, got dtype {tensor.dtype}")


def check_tau(tau: float) -> float:
    if not 0.0 < tau <= 10.0:
        raise ValueError(f"temperature tau must be in (0, 10], got {tau}")
    return float(tau)


def zero_with_graph(anchors: torch.Tensor) -> torch.Tensor:
    """A float32 (float64 for float64 input) scalar 0 attached to ``anchors``' graph (gradient: zeros).

    Multiply before summing and upcast first: ``anchors.sum() * 0.0`` keeps a
    half dtype and turns into NaN once the half sum overflows to inf.
    """
    return (anchors.to(torch.promote_types(anchors.dtype, torch.float32)) * 0.0).sum()
