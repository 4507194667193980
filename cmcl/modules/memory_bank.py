"""Momentum memory bank (Kim et al., ICCV 2021, Eq. 8; CMC-style memory)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from cmcl import dist

Gather = Callable[[torch.Tensor], torch.Tensor]


class MemoryBank(nn.Module):
    """One L2-normalised row per training segment, updated with momentum after each step.

    ``update`` sets ``row_i <- normalize(m * row_i + (1 - m) * new_i)`` for every
    index in the batch. A new bank has zero rows, all unwritten (so a first
    update stores ``normalize(new_i)``); fill it with :meth:`initialise` (the
    initialisation pass) or :meth:`reset_random` (random unit rows). ``written``
    marks rows that losses may use; :attr:`fully_written` says on the host
    whether every row is, so that a training step never reads the mask back
    (callers pass ``written`` as a mask only when it is False). Rows and the
    mask are buffers, so they are saved in ``state_dict`` and restored with the
    model.

    Indices are checked for shape and dtype on the host; their range is
    checked by the row read itself (``index_select``: an error on CPU, a
    device-side assertion on CUDA, and never the silent wrap-around of
    negative indices that ``memory[indices]`` would do), not by reading them back.

    In distributed training every worker must hold the same bank: ``update``
    and ``initialise`` first pass indices and features through ``gather``
    (default: all-gather across ranks, a no-op in one process), so each worker
    applies the whole global batch.

    Args:
        num_rows: K, segments in the split.
        dim: D.
        momentum: m (delta in the paper), in [0, 1).
        gather: how to collect (indices, features) from all workers.

    Shape:
        memory: (K, D); written: (K,) bool
    """

    def __init__(
        self, num_rows: int, dim: int, momentum: float = 0.5, *, gather: Gather | None = None
    ) -> None:
        super().__init__()
        if num_rows <= 0 or dim <= 0:
            raise ValueError(f"bank size must be positive, got num_rows={num_rows}, dim={dim}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"bank momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.gather = gather
        self.register_buffer("memory", torch.zeros(num_rows, dim))
        self.register_buffer("written", torch.zeros(num_rows, dtype=torch.bool))
        self.fully_written = False
        """Host-side: every row written (set by :meth:`initialise` and on loading a state)."""
        self.register_load_state_dict_post_hook(_refresh_fully_written)

    @property
    def num_rows(self) -> int:
        return self.memory.shape[0]

    @property
    def dim(self) -> int:
        return self.memory.shape[1]

    def _gathered(self, indices: torch.Tensor, features: torch.Tensor):
        if indices.dim() != 1 or features.dim() != 2 or features.shape != (len(indices), self.dim):
            raise ValueError(
                f"expected indices (N,) and features (N, {self.dim}), "
                f"got {tuple(indices.shape)} and {tuple(features.shape)}"
            )
        # torch reads bool/uint8 index tensors as masks: a row list must be integer.
        if indices.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"bank indices must be an int64/int32 tensor, got {indices.dtype}")
        gather = self.gather if self.gather is not None else dist.all_gather_varlen
        memory = self.memory
        # Convert only when needed: a no-op .to() is still a dispatched call, 12 a step.
        if indices.dtype != torch.long or indices.device != memory.device:
            indices = indices.to(memory.device, torch.long)
        if features.requires_grad:
            features = features.detach()
        if features.dtype != memory.dtype or features.device != memory.device:
            features = features.to(memory.device, memory.dtype)
        return gather(indices), gather(features)

    @torch.no_grad()
    def reset_random(self, generator: torch.Generator | None = None) -> None:
        """Random unit rows, all marked unwritten (the cheap initialisation).

        Under DDP every worker ends with rank 0's rows: workers draw from their
        own random streams (their dropout masks differ), but a bank is replicated.
        """
        rows = torch.randn(self.memory.shape, generator=generator)
        self.memory.copy_(F.normalize(rows, dim=1))
        dist.broadcast_(self.memory)
        self.written.zero_()
        self.fully_written = False

    def _rows(self, indices: torch.Tensor) -> torch.Tensor:
        """The rows at ``indices``; the read is the range check (see the class docstring)."""
        try:
            return self.memory.index_select(0, indices)
        except (IndexError, RuntimeError) as error:
            raise ValueError(f"bank indices must be in [0, {self.num_rows}): {error}") from error

    @torch.no_grad()
    def initialise(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Overwrite rows with ``normalize(features)`` (the initialisation pass)."""
        indices, features = self._gathered(indices, features)
        self._rows(indices)
        self.memory.index_copy_(0, indices, F.normalize(features, dim=1))
        self.written.index_fill_(0, indices, True)
        # Once per pass, outside the training steps: the one read of the mask.
        self.fully_written = bool(self.written.all())

    @torch.no_grad()
    def update(self, indices: torch.Tensor, features: torch.Tensor) -> None:
        """Momentum update of the given rows with new (normalised) vectors."""
        indices, features = self._gathered(indices, features)
        mixed = self.momentum * self._rows(indices) + (1 - self.momentum) * features
        self.memory.index_copy_(0, indices, F.normalize(mixed, dim=1))
        if not self.fully_written:  # known on the host; once full, the fill changes nothing
            self.written.index_fill_(0, indices, True)

    def extra_repr(self) -> str:
        return f"num_rows={self.num_rows}, dim={self.dim}, momentum={self.momentum}"


def _refresh_fully_written(bank: MemoryBank, incompatible_keys) -> None:
    # A restored bank's mask came from a checkpoint: read it once, at load time.
    bank.fully_written = bool(bank.written.all())
