"""Cross-modal contrastive loss (Kim et al., ICCV 2021, Eqs. 1-3)."""

from __future__ import annotations

import torch
from torch import nn

from cmcl.losses._checks import check_mask, check_matrix, check_tau, check_vector, zero_with_graph
from cmcl.losses._precision import common_dtype, float32_compute


class CrossModalContrastiveLoss(nn.Module):
    """InfoNCE of one modality's embeddings against the other modality's memory bank.

    For anchor ``a_i`` (modality k, domain d) and bank ``U`` (modality l, same domain)::

        l_i = -a_i . U[p_i] / tau + logsumexp_j (a_i . U[j] / tau)

    and the loss is the mean over anchors. Positive: the other modality of the
    same segment (bank row ``p_i``); negatives: every other row of the bank.
    This is one direction; the method sums both directions and both domains.

    With ``valid`` (a randomly initialised bank, some rows never written), an
    anchor whose positive row is unwritten has no real positive (the row is
    random noise) and is left out of the mean; unwritten rows are never
    negatives. A batch ``positive`` is always real, so then every anchor counts.

    Precision: computed in float32 (float64 for float64 inputs) with autocast
    disabled, whatever context encloses the call; the result is a float32 scalar
    for float32, bfloat16 or float16 inputs.

    Args:
        tau: temperature (> 0; stable down to 0.01).

    Shape:
        anchors: (N, D), L2-normalised
        bank: (K, D), L2-normalised
        positive_index: (N,) long, rows of ``bank``
        positive (optional): (N, D); the positive taken from the current batch
            instead of ``bank[positive_index]`` (which then leaves the denominator)
        valid (optional): (K,) bool; rows that may act as negatives (unwritten
            rows of a randomly initialised bank are masked out)
        output: scalar
    """

    def __init__(self, tau: float = 0.1) -> None:
        super().__init__()
        self.tau = check_tau(tau)

    @staticmethod
    def used_anchors(
        positive_index: torch.Tensor,
        *,
        positive: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N,) bool: anchors with a real positive (all of them unless a bank positive is unwritten)."""
        if valid is None or positive is not None:
            return torch.ones_like(positive_index, dtype=torch.bool)
        return valid.bool().gather(0, positive_index.long())

    @float32_compute
    def per_anchor(
        self,
        anchors: torch.Tensor,
        bank: torch.Tensor,
        positive_index: torch.Tensor,
        *,
        positive: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The unreduced losses, shape (N,), every anchor's (see :meth:`used_anchors`)."""
        return self._per_anchor(anchors, bank, positive_index, positive, valid)

    def _per_anchor(self, anchors, bank, positive_index, positive, valid):
        check_matrix("anchors", anchors)
        check_matrix("bank", bank, anchors.shape[1])
        check_vector("positive_index", positive_index, anchors.shape[0])
        if positive_index.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"positive_index must be an integer tensor, got {positive_index.dtype}"
            )
        dtype = common_dtype(anchors, bank)
        # Skip no-op conversions: each is a dispatched call, and this runs every step.
        anchors = anchors if anchors.dtype == dtype else anchors.to(dtype)
        bank = bank if bank.dtype == dtype else bank.to(dtype)
        logits = anchors @ bank.t() / self.tau
        # gather/scatter rather than logits[rows, index]: an index out of range is
        # an error of the op itself (a device-side assertion on CUDA) instead of a
        # range check that reads the indices back, and a negative one never wraps.
        long_index = (
            positive_index if positive_index.dtype == torch.int64 else positive_index.long()
        )
        column = long_index.unsqueeze(1)
        try:
            bank_positive = logits.gather(1, column).squeeze(1)
        except RuntimeError as error:
            raise ValueError(
                f"positive_index must be in [0, {bank.shape[0]}), got out-of-range rows: {error}"
            ) from error
        if positive is not None:
            check_matrix("positive", positive, anchors.shape[1])
            if positive.shape[0] != anchors.shape[0]:
                raise ValueError(
                    f"positive must have shape {tuple(anchors.shape)}, got {tuple(positive.shape)}"
                )
            positive = positive if positive.dtype == dtype else positive.to(dtype)
            positive_logit = (anchors * positive).sum(dim=1) / self.tau
            # The bank row of the positive is a stale copy of the same segment: replace it.
            logits = logits.scatter(1, column, positive_logit.unsqueeze(1))
        else:
            positive_logit = bank_positive
        if valid is not None:
            check_mask("valid", valid, bank.shape[0])
            # The positive stays in its own row's log-sum even when unwritten, so
            # that the row is finite; such an anchor is then left out by the mean.
            keep = valid.bool().unsqueeze(0).expand_as(logits).clone()
            keep.scatter_(1, column, True)
            logits = logits.masked_fill(~keep, float("-inf"))
        return torch.logsumexp(logits, dim=1) - positive_logit

    @float32_compute
    def forward(
        self,
        anchors: torch.Tensor,
        bank: torch.Tensor,
        positive_index: torch.Tensor,
        *,
        positive: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        losses = self._per_anchor(anchors, bank, positive_index, positive, valid)
        if losses.numel() == 0:
            return zero_with_graph(anchors)
        if valid is None or positive is not None:
            return losses.mean()
        # Masked arithmetic rather than boolean indexing: no read of device values.
        used = self.used_anchors(positive_index, positive=positive, valid=valid).to(losses.dtype)
        return (losses * used).sum() / used.sum().clamp_min(1.0)
