"""torch.distributed helpers that fall back to one process when it is not initialised.

Plain PyTorch (no Ray): the engine, the memory banks and the losses use these
so that the same code runs in a test, a notebook and a Ray Train worker.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def all_gather_cat(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate equal-shaped tensors from every rank along dim 0, in rank order (no grad)."""
    if not is_distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


def all_gather_varlen(tensor: torch.Tensor) -> torch.Tensor:
    """Like :func:`all_gather_cat` for tensors whose first dimension differs by rank."""
    if not is_distributed():
        return tensor
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = all_gather_cat(size).tolist()
    longest = max(sizes)
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[: tensor.shape[0]] = tensor
    gathered = all_gather_cat(padded)
    return torch.cat([gathered[r * longest : r * longest + n] for r, n in enumerate(sizes)])


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks (returns a new tensor; identity in one process)."""
    if not is_distributed():
        # A copy, as with several ranks: a caller dividing the result in place
        # must not change its input in one process only.
        return tensor.clone()
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def broadcast_(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s values (identity in one process)."""
    if is_distributed():
        dist.broadcast(tensor, src=src)
    return tensor


def all_gather_object(value: object) -> list:
    """Every rank's ``value`` (any picklable object), in rank order: ``[value]`` in one process."""
    if not is_distributed():
        return [value]
    gathered: list = [None] * world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: object, src: int = 0) -> object:
    if not is_distributed():
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]
