"""Table 8 "Adv. + Con.": the cross-modal contrastive term with an adversarial domain term."""

from __future__ import annotations

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.methods.base import StepContext, StepResult
from cmcl.methods.cmco import CrossModalOnly
from cmcl.methods.mm_sada import DomainAdversary, adversarial_coefficient
from cmcl.models.two_stream import StreamOutput, TwoStreamModel


class ContrastiveAdversarial(CrossModalOnly):
    """``L_src + lambda * (L_mo^s + L_mo^t) + sum_k L_adv^k``.

    The cross-modal contrastive term and its banks are ``cmco_modality``'s
    (every cmco switch that concerns it applies); the cross-domain
    contrastive term is replaced by MM-SADA's per-modality discriminators on
    GRL(F^k), weight 1, reversal coefficient ramped over the adaptation stage.
    """

    name = "con_adv"
    relative_cost = 3.99
    description = (
        "Table 8 Adv. + Con.: cross-modal contrastive term + MM-SADA domain discriminators"
    )
    paper_rows = ("T8 Adv. + Con.",)

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        self.adversary = DomainAdversary(feature_dim=model.feature_dim)

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        result = self.contrastive_losses(source, target, out_s, out_t)
        terms = self.adversary(out_s, out_t, adversarial_coefficient(self.config, ctx))
        result.losses.update(terms)
        result.weights.update(dict.fromkeys(terms, 1.0))
        return result
