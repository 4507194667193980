"""Table 8 "Adv.": adversarial terms in place of both contrastive ones."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import DomainClassificationLoss
from cmcl.methods.base import Method, StepContext, StepResult
from cmcl.methods.mm_sada import HIDDEN, DomainAdversary, adversarial_coefficient
from cmcl.models.two_stream import StreamOutput, TwoStreamModel
from cmcl.modules import Discriminator, grad_reverse

DOMAINS = ("source", "target")


class AdversarialAlignment(Method):
    """Modality and domain alignment both by gradient reversal.

    * modality term (in place of L_mo^s + L_mo^t): per domain, a discriminator
      on GRL(z) tells RGB embeddings (0) from flow embeddings (1), z = h(F^k)
      the projected embedding of the cross-modal loss (normalised F^k when
      ``method.head_in_modality=False``); terms ``madv_<domain>``.
    * domain term (in place of L_do): MM-SADA's per-modality discriminators
      on GRL(F^k); terms ``adv_<modality>``.

    Both use MM-SADA's settings: weight 1 and the reversal coefficient ramp
    ``grl_scale * (2 / (1 + exp(-10 p)) - 1)`` over the adaptation stage.
    """

    name = "adv_adv"
    relative_cost = 3.37
    description = (
        "Table 8 Adv.: RGB-vs-flow discriminators on GRL(z) + MM-SADA domain discriminators"
    )
    paper_rows = ("T8 Adv.",)

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        dim = model.proj_dim if config.head_in_modality else model.feature_dim
        self.modality_discriminators = nn.ModuleDict(
            {d: Discriminator(in_dim=dim, hidden=HIDDEN) for d in DOMAINS}
        )
        self.modality_loss = DomainClassificationLoss()
        self.adversary = DomainAdversary(feature_dim=model.feature_dim)

    def _embeddings(self, out: StreamOutput) -> tuple[torch.Tensor, torch.Tensor]:
        rgb, flow = out.features["rgb"].float(), out.features["flow"].float()
        if not self.config.head_in_modality:
            return F.normalize(rgb, dim=1), F.normalize(flow, dim=1)
        z = self.model.project(torch.cat([rgb, flow]))
        return z[: len(rgb)], z[len(rgb) :]

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        coefficient = adversarial_coefficient(self.config, ctx)
        losses = {}
        for domain, out in (("source", out_s), ("target", out_t)):
            rgb, flow = self._embeddings(out)
            discriminator = self.modality_discriminators[domain]
            losses[f"madv_{domain}"] = self.modality_loss(
                discriminator(grad_reverse(rgb, coefficient)),
                discriminator(grad_reverse(flow, coefficient)),
            )
        losses.update(self.adversary(out_s, out_t, coefficient))
        return StepResult(losses=losses, weights=dict.fromkeys(losses, 1.0))
