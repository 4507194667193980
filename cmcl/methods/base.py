"""What a method is: a module that turns (source, target) batches into named, weighted losses.

The trainer knows no method. Each step it calls ``method(source, target, ctx)``
and gets a :class:`StepResult`: unweighted loss terms, their weights, and
detached tensors the method wants back in :meth:`Method.after_step` (after
the optimiser step: memory-bank updates). A method owns the model and any
extra heads (discriminators, second classifiers) and banks it needs, so that
``method.state_dict()`` is the whole training state of the network and
``method.parameters()`` is everything the optimiser updates.

Adding a method = one file under cmcl/methods/ with a subclass + one line in
cmcl/methods/registry.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from cmcl import dist
from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.models.two_stream import StreamOutput, TwoStreamModel

WARMUP, ADAPT = "warmup", "adapt"

Encode = Callable[[str], Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]]
"""``encode(split)`` yields (indices, {"rgb": F, "flow": F}) over this worker's shard of
``split`` (centre window, eval mode, no grad); used to initialise banks."""

SplitBatches = Callable[[str], Iterator[dict[str, torch.Tensor]]]
"""``batches(split)`` yields every segment of ``split`` on every worker (no sharding), all
its test windows flattened into the batch: ``{"rgb": (N * W, ...), "flow": ..., "index": (N,)}``
on the training device. Used by :meth:`Method.evaluation` (AdaBN's re-estimation)."""


@dataclass(frozen=True)
class StepContext:
    """Where training is: stage, step within the stage (0-based) and the stage length."""

    stage: str
    step: int
    stage_steps: int

    @property
    def progress(self) -> float:
        """p in [0, 1]: fraction of the current stage done (GRL ramps use it)."""
        return min(1.0, self.step / max(1, self.stage_steps))


@dataclass
class StepResult:
    """Unweighted loss terms, their weights, and state for :meth:`Method.after_step`."""

    losses: dict[str, torch.Tensor]
    weights: dict[str, float]
    state: dict[str, torch.Tensor] = field(default_factory=dict)

    def total(self) -> torch.Tensor:
        # Left to right as sum() would, without its "0 +" and without multiplying by a
        # weight of 1: both exact, so the same value with two to six fewer autograd nodes.
        total = None
        for name, value in self.losses.items():
            weight = self.weights[name]
            term = value if isinstance(weight, int | float) and weight == 1 else weight * value
            total = term if total is None else total + term
        return 0 if total is None else total


class Method(nn.Module):
    """Base class: source cross-entropy on the fused logits, nothing else.

    Subclasses set the class attributes and override :meth:`adaptation_losses`
    (and :meth:`after_step` / :meth:`begin_adaptation` when they keep banks).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    paper_rows: ClassVar[tuple[str, ...]] = ()
    relative_cost: ClassVar[float] = 1.0
    """CPU time of an adaptation step against source_only's, as benchmarks/trainer_throughput.py
    measured it (RESULTS.md, 2026-11-26): studies start costly runs first with it."""
    """Which rows of the paper's tables this method reproduces (for ``cmcl methods``)."""
    uses_target_labels: ClassVar[bool] = False
    """Only the supervised upper bound may read target labels; the trainer strips them otherwise."""

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.num_classes = info.num_classes

    def needs_target(self, stage: str) -> bool:
        """Whether the trainer must draw and pass a target batch in ``stage``."""
        return stage == ADAPT

    def forward(self, source: dict, target: dict | None, ctx: StepContext) -> StepResult:
        out_s = self.model(source["rgb"], source["flow"])
        fused = out_s.fused if out_s.fused.dtype == torch.float32 else out_s.fused.float()
        losses = {"src_ce": F.cross_entropy(fused, source["label"])}
        weights = {"src_ce": 1.0}
        if ctx.stage == ADAPT:
            extra = self.adaptation_losses(source, target, out_s, ctx)
        else:
            extra = self.warmup_losses(source, target, out_s, ctx)
        losses.update(extra.losses)
        weights.update(extra.weights)
        return StepResult(losses=losses, weights=weights, state=extra.state)

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        """Terms added to the source cross-entropy in the adaptation stage."""
        return StepResult(losses={}, weights={})

    def warmup_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        """Terms added to the source cross-entropy in the warm-up stage (none by default)."""
        return StepResult(losses={}, weights={})

    @contextlib.contextmanager
    def evaluation(self, batches: SplitBatches) -> Iterator[None]:
        """Wraps every evaluation; whatever it changes must be undone on exit.

        The default does nothing; classic AdaBN re-estimates batch-norm
        statistics on the target here and restores the training ones afterwards.
        """
        yield

    def begin_adaptation(self, encode: Encode) -> None:
        """Called once when the adaptation stage starts (not again on resume)."""

    @torch.no_grad()
    def after_step(self, result: StepResult, ctx: StepContext) -> None:
        """Called after each optimiser step with the step's result."""


def global_weights(used: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """``used`` as weights of ``dtype`` and their count over ALL workers, clamped to 1 (detached):
    the second argument of :func:`global_weighted_mean`, for terms that share one set of weights.

    Shape:
        used: (N,) bool or 0/1; output: (N,), scalar
    """
    weights = used.to(dtype)
    count = weights.sum().detach()
    if dist.world_size() > 1:
        count = dist.all_reduce_sum(count)
    return weights, count.clamp_min(1.0)


def global_weighted_mean(
    losses: torch.Tensor, weights: torch.Tensor, count: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of ``losses`` over the rows of weight 1 of ALL workers, for DDP's gradient average.

    DDP averages gradients over workers, so the local weighted sum is scaled by
    world / global count; in one process this is the mean of the used rows.
    Masked arithmetic instead of boolean indexing, so the host reads no device
    value: with no row used anywhere the result is an attached 0 (finite losses
    times zero weights over a count clamped to 1). ``count``: from
    :func:`global_weights` (with its weights), made once for several terms.

    Shape:
        losses: (N,) every local row's loss, finite; weights: (N,) 0/1; output: scalar
    """
    if count is None:
        weights, count = global_weights(weights, losses.dtype)
    world = dist.world_size()
    total = (losses * weights).sum()
    # In one process no "* 1" (exact) in the graph.
    return total / count if world == 1 else total * world / count
