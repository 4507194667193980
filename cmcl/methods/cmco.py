"""Cross-modal contrastive adaptation (Kim et al., ICCV 2021) and its two halves.

* ``cmco_modality``: L_mo^s + L_mo^t, each modality's projected embedding
  against the other modality's bank of the same domain (Eqs. 1-3).
* ``cmco_domain``: L_do, confident target features against the source bank
  rows of their pseudo-class, per modality (Eqs. 4-6).
* ``cmco``: both, ``L = L_src + lambda * (L_mo^s + L_mo^t + L_do)`` (Eq. 7).

Banks (Eq. 8) hold, per (domain, modality), the projected embedding z for the
cross-modal term and, for the source domain, the normalised feature f for the
cross-domain term. Table 7's switches move a term between the two spaces:
``method.head_in_modality=False`` runs the cross-modal term on f (banks of
feature_dim columns, the projection head unused), ``method.head_in_domain=True``
runs the cross-domain term on z.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cmcl import dist
from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import (
    CrossDomainContrastiveLoss,
    CrossModalContrastiveLoss,
    confident_pseudo_labels,
)
from cmcl.losses._checks import zero_with_graph
from cmcl.losses.cross_domain import BatchTerms
from cmcl.methods.base import (
    ADAPT,
    Encode,
    Method,
    StepContext,
    StepResult,
    global_weighted_mean,
    global_weights,
)
from cmcl.models.two_stream import MODALITIES, StreamOutput, TwoStreamModel
from cmcl.modules import MemoryBank

DOMAINS = ("source", "target")
_OTHER = {"rgb": "flow", "flow": "rgb"}
_SPLIT = {"source": "source_train", "target": "target_train"}


class CrossModalContrastive(Method):
    """Both contrastive terms; subclasses switch one off."""

    name = "cmco"
    relative_cost = 5.69
    description = "cross-modal + cross-domain contrastive learning with memory banks (the paper)"
    paper_rows = ("T2 Ours (final)", "T3 Ours (final)", "T4 Ours", "T5 Ours", "T6", "T7", "T8 Con.")
    use_modality = True
    use_domain = True

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        self.modality_loss = CrossModalContrastiveLoss(tau=config.tau)
        self.domain_loss = CrossDomainContrastiveLoss(tau=config.tau, form=config.cross_domain_form)
        dims = {"z": model.proj_dim, "f": model.feature_dim}
        self.modality_space = "z" if config.head_in_modality else "f"
        self.domain_space = "z" if config.head_in_domain else "f"
        self.uses_head = (self.use_modality and config.head_in_modality) or (
            self.use_domain and config.head_in_domain
        )
        sizes = {"source": info.sizes["source_train"], "target": info.sizes["target_train"]}
        banks: dict[str, MemoryBank] = {}
        if self.use_modality:
            space = self.modality_space
            for domain in DOMAINS:
                for modality in MODALITIES:
                    banks[f"{domain}_{modality}_{space}"] = MemoryBank(
                        sizes[domain], dims[space], config.delta
                    )
        if self.use_domain:
            space = self.domain_space
            for modality in MODALITIES:
                # setdefault: with both terms on f the source f banks are shared.
                banks.setdefault(
                    f"source_{modality}_{space}",
                    MemoryBank(sizes["source"], dims[space], config.delta),
                )
        self.banks = nn.ModuleDict(banks)
        self.register_buffer("source_labels", info.source_labels.clone().long())

    def _embeddings(self, outputs: dict[str, StreamOutput]) -> dict[str, dict[str, torch.Tensor]]:
        """Per domain, every vector the banks may need, keyed '<modality>_<space>'.

        The projection head runs once over all (domain, modality) features: one
        large matmul instead of four small ones, and one gradient accumulation.
        """
        vectors: dict[str, dict[str, torch.Tensor]] = {d: {} for d in outputs}
        keys = [(d, m) for d in outputs for m in MODALITIES]
        features = [_float32(outputs[d].features[m]) for d, m in keys]
        for (domain, modality), f in zip(keys, features, strict=True):
            vectors[domain][f"{modality}_f"] = F.normalize(f, dim=1)
        if self.uses_head:
            projected = self.model.project(torch.cat(features)).split([len(f) for f in features])
            for (domain, modality), z in zip(keys, projected, strict=True):
                vectors[domain][f"{modality}_z"] = z
        return vectors

    def _modality_term(self, vectors: dict[str, torch.Tensor], domain: str, index: torch.Tensor):
        per_direction = []
        space = self.modality_space
        for modality in MODALITIES:
            other = _OTHER[modality]
            bank = self.banks[f"{domain}_{other}_{space}"]
            positive = (
                vectors[f"{other}_{space}"] if self.config.modality_positive == "batch" else None
            )
            valid = None if bank.fully_written else bank.written
            anchors = vectors[f"{modality}_{space}"]
            if valid is None:
                term = self.modality_loss(anchors, bank.memory, index, positive=positive)
            else:
                # A randomly initialised bank: anchors whose positive row was never
                # written leave the mean, counted over the global batch.
                losses = self.modality_loss.per_anchor(
                    anchors, bank.memory, index, positive=positive, valid=valid
                )
                used = self.modality_loss.used_anchors(index, positive=positive, valid=valid)
                term = global_weighted_mean(losses, used)
            per_direction.append(term)
        # sum(..., start=first): no "0 +" operation (and autograd node) in front.
        return sum(per_direction[1:], per_direction[0]) / len(per_direction)

    def _domain_terms(self, vectors: dict[str, torch.Tensor], fused: torch.Tensor):
        """L_do per modality; the pseudo-labels, and the masks of banks with the same valid
        rows (all of them once written), are made once per step, not once per modality."""
        pseudo, _, confident = confident_pseudo_labels(fused, self.config.threshold)
        space = self.domain_space
        terms, masks, weights = {}, {}, {}
        for modality in MODALITIES:
            bank = self.banks[f"source_{modality}_{space}"]
            valid = None if bank.fully_written else bank.written
            anchors = vectors[f"{modality}_{space}"]
            if self.config.cross_domain_form == "batch":
                args = (anchors, bank.memory, self.source_labels, pseudo, confident)
                batch = self.domain_loss.batch_terms(*args, valid=valid)
                terms[f"do_{modality}"] = _global_batch_form(batch, anchors)
                continue
            shared = None if valid is None else modality
            if shared not in masks:
                masks[shared] = self.domain_loss.anchor_masks(
                    self.source_labels, pseudo, confident, valid=valid
                )
            result = self.domain_loss.masked_per_anchor(anchors, bank.memory, masks[shared])
            if shared not in weights:
                weights[shared] = global_weights(result.used, result.losses.dtype)
            # Mean over the confident anchors of the whole global batch.
            terms[f"do_{modality}"] = global_weighted_mean(result.losses, *weights[shared])
        return terms

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        return self.contrastive_losses(source, target, out_s, out_t)

    def contrastive_losses(
        self, source: dict, target: dict, out_s: StreamOutput, out_t: StreamOutput
    ) -> StepResult:
        """The contrastive terms given both domains' forward passes (reused by ``con_adv``)."""
        vectors = self._embeddings({"source": out_s, "target": out_t})
        losses, weights = {}, {}
        if self.use_modality:
            for domain, batch in (("source", source), ("target", target)):
                losses[f"mo_{domain}"] = self._modality_term(
                    vectors[domain], domain, batch["index"]
                )
                weights[f"mo_{domain}"] = self.config.lam
        if self.use_domain:
            for name, term in self._domain_terms(vectors["target"], out_t.fused).items():
                losses[name] = term
                weights[name] = self.config.lam
        state = {"source_index": source["index"], "target_index": target["index"]}
        for key in self.banks:
            domain, vector = key.split("_", 1)
            state[key] = vectors[domain][vector].detach()
        return StepResult(losses=losses, weights=weights, state=state)

    @torch.no_grad()
    def after_step(self, result: StepResult, ctx: StepContext) -> None:
        if ctx.stage != ADAPT:
            return
        for key, bank in self.banks.items():
            domain = key.split("_", 1)[0]
            bank.update(result.state[f"{domain}_index"], result.state[key])

    @torch.no_grad()
    def begin_adaptation(self, encode: Encode) -> None:
        if self.config.bank_init == "random":
            for bank in self.banks.values():
                bank.reset_random()
            return
        needed = {key.split("_", 1)[0] for key in self.banks}
        for domain in DOMAINS:
            if domain not in needed:
                continue
            # Collect the whole shard first: initialise() is a collective, so every
            # worker must call it the same number of times whatever its shard size.
            indices, parts = [], {"rgb": [], "flow": []}
            for index, features in encode(_SPLIT[domain]):
                indices.append(index)
                for modality in MODALITIES:
                    parts[modality].append(features[modality].float())
            index = torch.cat(indices)
            vectors = {}
            for modality in MODALITIES:
                f = torch.cat(parts[modality])
                vectors[f"{modality}_f"] = F.normalize(f, dim=1)
                vectors[f"{modality}_z"] = self.model.project(f)
            for key, bank in self.banks.items():
                if key.startswith(domain):
                    bank.initialise(index, vectors[key.split("_", 1)[1]])


def _global_batch_form(terms: BatchTerms, anchors: torch.Tensor) -> torch.Tensor:
    """The literal batch form over the global batch: log-sums combined across workers.

    Value: all_lse - positive_lse of the global sums. Gradient: each worker's
    log-sums weighted by their share of the global sums, so that DDP's average
    of the workers' gradients equals the single-process gradient.
    """
    world = dist.world_size()
    zero = zero_with_graph(anchors)
    if world == 1:
        return torch.where(terms.has_positive, terms.all_lse - terms.positive_lse, zero)
    present = torch.stack([terms.has_positive, terms.has_confident])
    local = torch.stack([terms.positive_lse, terms.all_lse]).detach().float()
    local = torch.where(present, local, torch.full_like(local, -1e30))
    total = dist.all_gather_cat(local.unsqueeze(0)).logsumexp(dim=0)
    share = (local - total).exp()
    surrogate = world * (share[1] * terms.all_lse - share[0] * terms.positive_lse)
    # No positive on any worker: 0 (selected on the device, not read back to the host).
    return torch.where(
        total[0] < -1e29, zero, surrogate - surrogate.detach() + (total[1] - total[0])
    )


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    # .float() of a float32 tensor is a no-op, but still a dispatched call every step.
    return tensor if tensor.dtype == torch.float32 else tensor.float()


class CrossModalOnly(CrossModalContrastive):
    name = "cmco_modality"
    relative_cost = 3.35
    description = "only the cross-modal contrastive term (L_mo^s + L_mo^t)"
    paper_rows = ("T2 Ours (cross-modal)", "T3 Ours (modality)", "T4 Ours (modality)", "T7")
    use_domain = False


class CrossDomainOnly(CrossModalContrastive):
    name = "cmco_domain"
    relative_cost = 3.99
    description = "only the cross-domain contrastive term with pseudo-labels (L_do)"
    paper_rows = ("T2 Ours (cross-domain)", "T3 Ours (domain)", "T4 Ours (domain)")
    use_modality = False
