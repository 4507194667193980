"""What the engine needs from data, whatever the mode (features or video frames).

A :class:`PairData` serves one (source, target) pair: training batches for
``source_train`` and ``target_train``, evaluation batches for ``target_test``
and ``source_val`` (the source domain's held-out test split), and the sizes
and source labels the memory banks need.

Batches are dicts in the pytorchvideo style::

    {"rgb": Tensor, "flow": Tensor, "label": (N,) long, "index": (N,) long, "domain": str}

Training batches hold one window per segment and modality, ``(N, *window)``;
evaluation batches hold every test window, ``(N, W, *window)``. ``index`` is
the segment's row in its split (the memory-bank row).

Which segments and windows a training step sees depends only on
``(seed, split, stage, step)`` (:class:`StepSampler`): a resumed run sees the
same batches as an uninterrupted one, and every distributed worker draws the
same global batch and keeps its own contiguous shard of it.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch

from cmcl import dist

TRAIN_SPLITS = ("source_train", "target_train")
EVAL_SPLITS = ("target_test", "source_val", "source_train", "target_train")
_STREAM_IDS = {"source_train": 1, "target_train": 2}
_MASK64 = (1 << 64) - 1


def mix_seed(*values: int) -> int:
    """Combine integers into one 63-bit seed (splitmix64 finaliser; stable across runs)."""
    state = 0x9E3779B97F4A7C15
    for value in values:
        state = (state ^ (value & _MASK64)) & _MASK64
        state = (state * 0xBF58476D1CE4E5B9) & _MASK64
        state ^= state >> 31
        state = (state * 0x94D049BB133111EB) & _MASK64
        state ^= state >> 29
    return state >> 1


@dataclass(frozen=True)
class StepSampler:
    """Deterministic global batches: epochs are seeded permutations, ``num_items // batch`` steps each.

    A batch never repeats a segment. ``seeds`` gives each sample an integer from
    which its random window, crop and flip are derived.
    """

    num_items: int
    batch_size: int
    seed: int
    split: str

    def __post_init__(self) -> None:
        if self.num_items < self.batch_size:
            raise ValueError(
                f"{self.split} has {self.num_items} segments, fewer than the batch size {self.batch_size}"
            )

    def global_batch(self, stage: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(indices (B,), per-sample seeds (B,)) of the whole batch across all workers."""
        per_epoch = self.num_items // self.batch_size
        epoch, position = divmod(step, per_epoch)
        stream = _STREAM_IDS.get(self.split, 3)
        order = _epoch_order(self.num_items, mix_seed(self.seed, stream, stage, epoch))
        indices = order[position * self.batch_size : (position + 1) * self.batch_size].clone()
        seed_gen = torch.Generator().manual_seed(mix_seed(self.seed, stream, stage, step, 7))
        seeds = torch.randint(0, 1 << 62, (self.batch_size,), generator=seed_gen)
        return indices, seeds

    def local_batch(self, stage: int, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This worker's contiguous shard of :meth:`global_batch`."""
        world, me = dist.world_size(), dist.rank()
        if self.batch_size % world:
            raise ValueError(
                f"global batch {self.batch_size} of {self.split} is not divisible by {world} workers"
            )
        indices, seeds = self.global_batch(stage, step)
        local = self.batch_size // world
        return indices[me * local : (me + 1) * local], seeds[me * local : (me + 1) * local]


@functools.lru_cache(maxsize=8)
def _epoch_order(num_items: int, seed: int) -> torch.Tensor:
    """An epoch's permutation, drawn once per epoch rather than once per step (read-only)."""
    return torch.randperm(num_items, generator=torch.Generator().manual_seed(seed))


def shard_range(num_items: int) -> range:
    """The contiguous block of ``range(num_items)`` this worker evaluates."""
    world, me = dist.world_size(), dist.rank()
    per = -(-num_items // world)
    return range(min(me * per, num_items), min((me + 1) * per, num_items))


@dataclass(frozen=True, eq=False)
class DataInfo:
    """Static facts about a pair that models and methods are built from."""

    benchmark: str
    source: str
    target: str
    class_names: tuple[str, ...]
    sizes: dict[str, int]
    source_labels: torch.Tensor
    """(N_source_train,) ground-truth labels of the source training split (bank rows)."""
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Per modality, the shape of one window: (D,) in feature mode, (C, T, H, W) in video mode."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


class PairData(ABC):
    """Training and evaluation batches for one (source, target) pair."""

    info: DataInfo

    @abstractmethod
    def train_batches(
        self, split: str, *, batch_size: int, seed: int, stage: int, start_step: int
    ) -> Iterator[dict]:
        """Endless local training batches of ``split`` from ``start_step`` on (global batch size)."""

    @abstractmethod
    def eval_batches(
        self,
        split: str,
        *,
        batch_size: int,
        windows: str = "test",
        indices: torch.Tensor | None = None,
    ) -> Iterator[dict]:
        """This worker's shard of ``split``: all test windows (``"test"``) or the centre one (``"centre"``).

        With ``windows="centre"`` the tensors are ``(N, *window)``, otherwise ``(N, W, *window)``.
        ``indices`` (sorted): exactly those segments, on this worker alone (no sharding).
        """

    def close(self) -> None:  # noqa: B027 (optional hook, not abstract)
        """Release worker processes and other resources (no-op unless a subclass holds some)."""

    def check_split(self, split: str, valid: tuple[str, ...]) -> None:
        if split not in valid:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(valid)}")
