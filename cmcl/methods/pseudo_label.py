"""Pseudo-labelling: cross-entropy on the target's own confident predictions (Table 4)."""

from __future__ import annotations

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import PseudoLabelLoss
from cmcl.methods.base import Method, StepContext, StepResult, global_weighted_mean
from cmcl.models.two_stream import StreamOutput, TwoStreamModel


class PseudoLabel(Method):
    """``L = L_src + lambda * mean_{i in C} CE(l_t,i, yhat_i)``.

    yhat_i is the argmax of softmax(fused target logits), detached, and C the
    target clips whose max softmax is >= T: the same pseudo-labels as the
    cross-domain contrastive term, used directly as classification targets.
    The mean runs over the confident clips of the whole global batch (0 when
    there are none).
    """

    name = "pseudo_label"
    relative_cost = 1.57
    description = (
        "cross-entropy on confident target pseudo-labels (max softmax >= T), weight lambda"
    )
    paper_rows = ("T4 Pseudo-labeling",)

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        self.pseudo_label_loss = PseudoLabelLoss(threshold=config.threshold)

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        result = self.pseudo_label_loss.per_sample(out_t.fused)
        return StepResult(
            losses={"pl": global_weighted_mean(result.losses, result.used)},
            weights={"pl": self.config.lam},
        )
