"""AdaBN (Li et al., 2016): batch-norm statistics of the target domain, no extra loss.

During adaptation the target batch is forwarded in train mode under
``no_grad``: it contributes no gradient, but every batch-norm layer updates its
running statistics with target batch statistics (source and target batches
are forwarded separately, so each normalises with its own domain's batch
statistics). With ``method.adabn_reestimate=True`` the classic AdaBN is added
at test time: before each evaluation the running statistics are re-estimated
on the whole target training split, and the training statistics are put back
afterwards so that training itself is unaffected.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import nn

from cmcl.methods.base import Method, SplitBatches, StepContext, StepResult
from cmcl.models.two_stream import StreamOutput


def batch_norms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """Every batch-norm layer (1-, 2-, 3-d, sync or global) inside ``module``."""
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@torch.no_grad()
def reestimate_batch_norm(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> None:
    """Replace every running mean/variance by the average of the statistics of ``batches``.

    Batch-norm layers run in train mode with ``momentum=None`` (a cumulative
    average over batches); everything else (dropout) runs in eval mode. The
    modules' modes and momenta are restored; the statistics are not (see
    :func:`saved_batch_norm`).
    """
    norms = batch_norms(model)
    modes = {m: m.training for m in model.modules()}
    momenta = [bn.momentum for bn in norms]
    try:
        model.eval()
        for bn in norms:
            bn.reset_running_stats()
            bn.momentum = None
            bn.train()
        for batch in batches:
            model(batch["rgb"], batch["flow"])
    finally:
        for bn, momentum in zip(norms, momenta, strict=True):
            bn.momentum = momentum
        for m, training in modes.items():
            m.training = training


@contextlib.contextmanager
def saved_batch_norm(model: nn.Module) -> Iterator[None]:
    """Restore every batch-norm buffer (running stats, batch count) on exit."""
    norms = batch_norms(model)
    saved = [{name: b.clone() for name, b in bn.named_buffers(recurse=False)} for bn in norms]
    try:
        yield
    finally:
        with torch.no_grad():
            for bn, buffers in zip(norms, saved, strict=True):
                for name, value in buffers.items():
                    getattr(bn, name).copy_(value)


class AdaBN(Method):
    name = "adabn"
    relative_cost = 1.32
    description = "target batches forwarded in train mode with no loss (per-domain BN statistics)"
    paper_rows = ("T3 AdaBN",)

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        # No graph: the only effect is the running-statistics update.
        with torch.no_grad():
            self.model(target["rgb"], target["flow"])
        return StepResult(losses={}, weights={})

    @contextlib.contextmanager
    def evaluation(self, batches: SplitBatches) -> Iterator[None]:
        if not self.config.adabn_reestimate:
            yield
            return
        with saved_batch_norm(self.model):
            reestimate_batch_norm(self.model, batches("target_train"))
            yield
