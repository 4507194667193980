"""DataLoaders whose worker processes live as long as the data, not one pass (video mode).

A torch DataLoader starts its workers on every ``iter()`` unless
``persistent_workers`` is set, and then it serves one pass at a time. Video
mode asks for many short passes (each evaluation, the bank-initialisation
pass, the feature dump, each training stage), so :class:`ReusableLoader`
keeps one persistent DataLoader and feeds each pass's batches of requests
through a batch sampler that is swapped per pass. The sampler runs in the
training process; the workers only see the requests, so what a pass returns
does not depend on the passes before it.

A new pass over the same loader ends the previous one: the previous pass's
iterator raises if it is used again rather than silently taking the new
pass's batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

MAX_AUTO_WORKERS = 16


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def auto_workers(cpus: int | None = None, local_processes: int | None = None) -> int:
    """Workers per loader for ``data.loader_workers=-1``.

    Two training loaders (source and target) decode at the same time, and the
    training process needs a core of its own, so each loader gets half of the
    remaining CPUs of this process's share of the node (``LOCAL_WORLD_SIZE``
    training processes per node, as torchrun and Ray Train set it); at least
    1, at most :data:`MAX_AUTO_WORKERS`.
    """
    cpus = available_cpus() if cpus is None else cpus
    if local_processes is None:
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    share = cpus // max(1, local_processes)
    return max(1, min(MAX_AUTO_WORKERS, (share - 1) // 2))


def resolve_workers(value: int) -> int:
    """``data.loader_workers``: -1 means :func:`auto_workers`, anything else is taken as is."""
    if value == -1:
        return auto_workers()
    if value < 0:
        raise ValueError(f"loader workers must be >= 0, or -1 for auto; got {value}")
    return value


class _SwappableBatches:
    """A batch sampler whose batches are set before each pass."""

    def __init__(self) -> None:
        self.batches: Iterable[Sequence[Any]] = ()

    def __iter__(self) -> Iterator[Sequence[Any]]:
        return iter(self.batches)


class ReusableLoader:
    """One persistent DataLoader over ``dataset``, iterated pass by pass with :meth:`iterate`.

    Args:
        dataset: indexed by the items of the request batches.
        workers: worker processes (0: load in the calling process).
        collate_fn: turns a list of items into a batch.
        pin_memory: pin batches (for non-blocking copies to a GPU).
    """

    def __init__(
        self,
        dataset: Dataset,
        *,
        workers: int,
        collate_fn: Callable[[list], Any],
        pin_memory: bool = False,
        prefetch_factor: int = 2,
    ) -> None:
        self._batches = _SwappableBatches()
        self._loader = DataLoader(
            dataset,
            batch_sampler=self._batches,
            num_workers=workers,
            collate_fn=collate_fn,
            pin_memory=pin_memory,
            prefetch_factor=prefetch_factor if workers else None,
            persistent_workers=workers > 0,
            # A private generator: by default a DataLoader draws its workers' base
            # seed from torch's global RNG, which would shift the model's dropout
            # draws and break resume equality. Clips never use worker RNG state.
            generator=torch.Generator().manual_seed(0),
        )
        self._pass = 0

    @property
    def workers(self) -> int:
        return self._loader.num_workers

    def iterate(self, batches: Iterable[Sequence[Any]]) -> Iterator[Any]:
        """Load ``batches`` (lists of dataset keys; may be endless) in order; a generator.

        Starting another pass over this loader ends this one: using this
        iterator afterwards raises RuntimeError.
        """
        self._pass += 1
        mine = self._pass
        self._batches.batches = batches
        iterator = iter(self._loader)  # persistent workers: resets them for this pass
        while True:
            if self._pass != mine:
                raise RuntimeError(
                    "this pass over the loader was ended by a newer one; a ReusableLoader "
                    "serves one pass at a time"
                )
            try:
                batch = next(iterator)
            except StopIteration:
                return
            yield batch

    def close(self) -> None:
        """Stop the worker processes (a later pass starts new ones)."""
        self._pass += 1
        iterator = getattr(self._loader, "_iterator", None)
        # DataLoader keeps its persistent iterator privately and offers no public
        # shutdown; without this the workers live until garbage collection.
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._loader._iterator = None
