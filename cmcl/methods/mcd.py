"""Maximum Classifier Discrepancy (Saito et al., CVPR 2018), one-step form with gradient reversal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import ClassifierDiscrepancyLoss
from cmcl.methods.base import Method, StepContext, StepResult
from cmcl.models.two_stream import MODALITIES, StreamOutput, TwoStreamModel
from cmcl.modules import grad_reverse


class MCD(Method):
    """Two classifiers on the same features; they disagree on the target, the features make them agree.

    Head 1 is the model's own classifier: the two streams' linear layers,
    fused. Head 2 is a second pair of per-stream linear layers, fused the same
    way (``model.fusion``). The heads are fused rather than compared per
    stream because the fused logits are the decision the model is evaluated
    on, the one whose disagreement MCD is meant to measure. Adaptation stage::

        L = CE(head1(F_s)) + CE(head2(F_s)) - w * d(head1(R(F_t)), head2(R(F_t)))

    with d the mean absolute softmax difference, w = ``method.mcd_weight`` (0.2)
    and R a gradient reversal (coefficient 1): the heads maximise d, the
    streams below the reversal minimise it. Both heads see the same dropout
    mask of a target feature. In warm-up head 2 is trained with source
    cross-entropy too, so that adaptation starts from two trained classifiers
    rather than one trained and one random.
    """

    name = "mcd"
    relative_cost = 2.05
    description = "second classifier; target features reach both heads through gradient reversal"
    paper_rows = ("T3 MCD",)

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        self.second = nn.ModuleDict(
            {m: nn.Linear(model.feature_dim, info.num_classes) for m in MODALITIES}
        )
        self.discrepancy = ClassifierDiscrepancyLoss()

    def _heads(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused logits of head 1 and head 2 on one dropout draw per stream."""
        first, second = {}, {}
        for m in MODALITIES:
            stream = self.model.streams[m]
            dropped = stream.dropout(features[m])
            first[m], second[m] = stream.classifier(dropped), self.second[m](dropped)
        return self.model.fuse(first), self.model.fuse(second)

    def _second_ce(self, source: dict, out_s: StreamOutput) -> torch.Tensor:
        logits = self.model.fuse(
            {
                m: self.second[m](self.model.streams[m].dropout(out_s.features[m]))
                for m in MODALITIES
            }
        )
        return F.cross_entropy(logits.float(), source["label"])

    def warmup_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        return StepResult(
            losses={"src_ce2": self._second_ce(source, out_s)}, weights={"src_ce2": 1.0}
        )

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        reversed_t = {m: grad_reverse(out_t.features[m], 1.0) for m in MODALITIES}
        first, second = self._heads(reversed_t)
        losses = {
            "src_ce2": self._second_ce(source, out_s),
            "mcd_disc": self.discrepancy(first, second),
        }
        return StepResult(
            losses=losses, weights={"src_ce2": 1.0, "mcd_disc": -self.config.mcd_weight}
        )
