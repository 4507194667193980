"""Supervised target: trains on the target domain's labels (the upper bound, not adaptation)."""

from __future__ import annotations

import torch.nn.functional as F

from cmcl.methods.base import Method, StepContext, StepResult


class SupervisedTarget(Method):
    """Cross-entropy of the fused logits on labelled target training clips, in both stages.

    The source batch is not used: this is the oracle that a domain-adaptation
    method tries to approach.
    """

    name = "supervised_target"
    relative_cost = 1.02
    description = "cross-entropy on the target's own labels in both stages (upper bound)"
    paper_rows = ("T2 Supervised-target", "T3 Supervised-target")
    uses_target_labels = True

    def needs_target(self, stage: str) -> bool:
        return True

    def forward(self, source: dict, target: dict | None, ctx: StepContext) -> StepResult:
        assert target is not None
        out = self.model(target["rgb"], target["flow"])
        loss = F.cross_entropy(out.fused.float(), target["label"])
        return StepResult(losses={"tgt_ce": loss}, weights={"tgt_ce": 1.0})
