"""MMD baseline: per-modality kernel MMD between source and target features (SPEC section 8)."""

from __future__ import annotations

from cmcl.config import MethodConfig
from cmcl.data.base import DataInfo
from cmcl.losses import MMDLoss
from cmcl.methods.base import Method, StepContext, StepResult
from cmcl.models.two_stream import MODALITIES, StreamOutput, TwoStreamModel


class MMD(Method):
    """``L = L_src + w * sum_k MMD^2(F_s^k, F_t^k)``, w = ``method.mmd_weight`` (0.2).

    The biased MMD^2 of the 12-kernel RBF mixture (:class:`cmcl.losses.MMDLoss`)
    on each stream's 1024-d feature F^k, source batch against target batch. In
    distributed training each worker measures it on its own shard of both
    batches (a noisier estimate than the single-process one, same expectation
    of the kernel means).
    """

    name = "mmd"
    relative_cost = 1.98
    description = "per-modality MMD^2 (12 RBF kernels) between source and target features F^k"
    paper_rows = ("T3 MMD",)

    def __init__(self, *, model: TwoStreamModel, config: MethodConfig, info: DataInfo) -> None:
        super().__init__(model=model, config=config, info=info)
        self.mmd = MMDLoss()

    def adaptation_losses(
        self, source: dict, target: dict | None, out_s: StreamOutput, ctx: StepContext
    ) -> StepResult:
        assert target is not None
        out_t = self.model(target["rgb"], target["flow"])
        losses = {f"mmd_{m}": self.mmd(out_s.features[m], out_t.features[m]) for m in MODALITIES}
        return StepResult(losses=losses, weights=dict.fromkeys(losses, self.config.mmd_weight))
