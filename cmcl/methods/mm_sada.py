"""MM-SADA (Munro & Damen, CVPR 2020) and its two halves, on the shared two-stream model.

* (a) ``mm_sada_modality``: self-supervised RGB/flow correspondence. A head on
  ``concat(F^a, F^m)`` (2048 -> 100 -> ReLU -> 2) tells pairs from the same
  segment (half of each domain's batch) from RGB paired with the flow of
  another segment of the same domain (the other half). Weight
  ``method.correspondence_weight`` (1) in adaptation and
  ``method.correspondence_weight_warmup`` (5) in warm-up, so it trains on
  both domains from the first step.
* (b) ``mm_sada_domain``: per-modality domain discriminators on GRL(F^k)
  (1024 -> 100 -> ReLU -> 2, source = 0, target = 1), in adaptation only,
  the reversal coefficient ramping as ``grl_scale * (2 / (1 + exp(-10 p)) - 1)``
  with p the fraction of the adaptation stage done.
* ``mm_sada``: both.

:class:`DomainAdversary` is (b) on its own; Table 8's ``adv_adv`` and
``con_adv`` reuse it as their adversarial domain term.
"""

from __future__ import annotations

import torch
from torch import nn

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import CorrespondenceLoss, DomainClassificationLoss
from cmcl.losses.correspondence import block_correspondence_pairs
from cmcl.methods.base import ADAPT, Method, StepContext, StepResult
from cmcl.models.two_stream import MODALITIES, StreamOutput, TwoStreamModel
from cmcl.modules import CorrespondenceHead, Discriminator, grad_reverse, grl_coefficient

HIDDEN = 100


def adversarial_coefficient(config: MethodConfig, ctx: StepContext) -> float:
    """The GRL coefficient at this step: ``grl_scale * (2 / (1 + exp(-10 p)) - 1)``."""
    return grl_coefficient(ctx.progress, scale=config.grl_scale)


class DomainAdversary(nn.Module):
    """One domain discriminator per modality on reversed features; terms ``adv_<modality>``.

    Shape:
        out_s, out_t features: (N, D) and (M, D) per modality -> dict of scalars
    """

    def __init__(self, *, feature_dim: int) -> None:
        super().__init__()
        self.discriminators = nn.ModuleDict(
            {m: Discriminator(in_dim=feature_dim, hidden=HIDDEN) for m in MODALITIES}
        )
        self.loss = DomainClassificationLoss()

    def forward(
        self, out_s: StreamOutput, out_t: StreamOutput, coefficient: float
    ) -> dict[str, torch.Tensor]:
        terms = {}
        for m, discriminator in self.discriminators.items():
            source = discriminator(grad_reverse(out_s.features[m], coefficient))
            target = discriminator(grad_reverse(out_t.features[m], coefficient))
            terms[f"adv_{m}"] = self.loss(source, target)
        return terms


class Correspondence(nn.Module):
    """Correspondence head and loss over the batches of several domains (one group each)."""

    def __init__(self, *, feature_dim: int) -> None:
        super().__init__()
        self.head = CorrespondenceHead(feature_dim=feature_dim, hidden=HIDDEN)
        self.loss = CorrespondenceLoss()

    def forward(self, outputs: list[StreamOutput]) -> torch.Tensor:
        rgb = torch.cat([o.features["rgb"] for o in outputs])
        flow = torch.cat([o.features["flow"] for o in outputs])
        pairs = block_correspondence_pairs([len(o.fused) for o in outputs], device=rgb.device)
        return self.loss(self.head(rgb[pairs.rgb], flow[pairs.flow]), pairs.label)


class MMSADA(Method):
    name = "mm_sada"
    relative_cost = 2.09
    description = "MM-SADA: RGB/flow correspondence head + per-modality adversarial discriminators"
    paper_rows = (
        "T2 MM-SADA",
        "T3 MM-SADA",
        "T4 MM-SADA (modality + domain)",
        "T5 MM-SADA",
    )
    use_correspondence = True
    use_adversary = True

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        if self.use_correspondence:
            self.correspondence = Correspondence(feature_dim=model.feature_dim)
        if self.use_adversary:
            self.adversary = DomainAdversary(feature_dim=model.feature_dim)

    def needs_target(self, stage: str) -> bool:
        return self.use_correspondence or stage == ADAPT

    def warmup_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        if not self.use_correspondence:
            return StepResult(losses={}, weights={})
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        return StepResult(
            losses={"corr": self.correspondence([out_s, out_t])},
            weights={"corr": self.config.correspondence_weight_warmup},
        )

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        losses, weights = {}, {}
        if self.use_correspondence:
            losses["corr"] = self.correspondence([out_s, out_t])
            weights["corr"] = self.config.correspondence_weight
        if self.use_adversary:
            terms = self.adversary(out_s, out_t, adversarial_coefficient(self.config, ctx))
            losses.update(terms)
            weights.update(dict.fromkeys(terms, 1.0))
        return StepResult(losses=losses, weights=weights)


class MMSADAModality(MMSADA):
    name = "mm_sada_modality"
    relative_cost = 1.75
    description = "MM-SADA's self-supervised RGB/flow correspondence only"
    paper_rows = ("T4 MM-SADA (modality)",)
    use_adversary = False


class MMSADADomain(MMSADA):
    name = "mm_sada_domain"
    relative_cost = 1.85
    description = "MM-SADA's per-modality adversarial domain discriminators only"
    paper_rows = ("T4 MM-SADA (domain)",)
    use_correspondence = False
