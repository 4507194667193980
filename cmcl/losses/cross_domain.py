"""Cross-domain contrastive loss (Kim et al., ICCV 2021, Eqs. 4-6)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from cmcl.losses._checks import check_mask, check_matrix, check_tau, check_vector, zero_with_graph
from cmcl.losses._precision import common_dtype, float32_compute

FORMS = ("per_anchor", "batch")


class AnchorLosses(NamedTuple):
    """Every anchor's loss and which anchors count (confident, with a positive)."""

    losses: torch.Tensor
    """(N,) losses; an anchor that is not used has a finite placeholder (0 in value)."""
    used: torch.Tensor
    """(N,) bool: which anchors count; reduce with these as weights."""


class AnchorMasks(NamedTuple):
    """Which bank rows enter each anchor's log-sums (made by ``anchor_masks``).

    Shape:
        outside: (N, K) bool, rows left out of the positive log-sum; used: (N,) bool;
        keep: (K,) bool rows of the full log-sum, or None for every row
    """

    outside: torch.Tensor
    used: torch.Tensor
    keep: torch.Tensor | None


class BatchTerms(NamedTuple):
    """The two log-sums of the literal batch form: loss = all_lse - positive_lse.

    A log-sum over an empty set is reported as a zero attached to the graph
    with its flag False (never -inf, whose gradient would be NaN). The flags
    are 0-d bool tensors on the anchors' device, so that no caller has to read
    them back to the host: combine with ``torch.where``.
    """

    positive_lse: torch.Tensor
    all_lse: torch.Tensor
    has_positive: torch.Tensor
    has_confident: torch.Tensor


_MASKED = -1e30
"""Fill for masked logits: exp(-1e30 - max) is exactly 0 beside any real logit, as -inf
would be, but an all-masked row stays finite (so does its gradient, weighted by 0)."""


def _length(vector: torch.Tensor) -> int:
    return vector.shape[0] if vector.dim() == 1 else -1


# amax/amin over bool rows: the same answer as any/all, several times faster on CPU
# (any over a (16, 3897) mask took 67 us, amax 20 us); they need a non-empty row.
def _any_per_row(mask: torch.Tensor) -> torch.Tensor:
    return mask.amax(dim=1) if mask.shape[1] else mask.any(dim=1)


def _all_per_row(mask: torch.Tensor) -> torch.Tensor:
    return mask.amin(dim=1) if mask.shape[1] else mask.all(dim=1)


class CrossDomainContrastiveLoss(nn.Module):
    """Pull confident target features towards source bank rows of their pseudo-class.

    ``per_anchor`` (default; multi-positive InfoNCE), for each confident anchor i
    with pseudo-label yhat_i and at least one positive::

        l_i = -logsumexp_{j: y_j = yhat_i} (a_i . V[j] / tau) + logsumexp_j (a_i . V[j] / tau)

    averaged over those anchors. ``batch`` is the paper's literal single-log
    form: both sums run over all confident anchors before the log. The loss is
    exactly 0 (still attached to the graph) when no anchor is confident or no
    positive exists.

    Precision: computed in float32 (float64 for float64 inputs) with autocast
    disabled, whatever context encloses the call; the result is a float32 scalar
    for float32, bfloat16 or float16 inputs.

    Args:
        tau: temperature (> 0; stable down to 0.01).
        form: "per_anchor" or "batch".

    Shape:
        anchors: (N, D) L2-normalised current target features
        bank: (K, D) L2-normalised source bank
        bank_labels: (K,) source labels
        pseudo_labels: (N,) yhat
        confident: (N,) bool, max softmax >= T
        valid (optional): (K,) bool rows that may be used
        output: scalar
    """

    def __init__(self, tau: float = 0.1, form: str = "per_anchor") -> None:
        super().__init__()
        if form not in FORMS:
            raise ValueError(f"form must be one of {', '.join(FORMS)}; got {form!r}")
        self.tau = check_tau(tau)
        self.form = form

    def _masks(self, anchors, bank, bank_labels, pseudo_labels, confident, valid):
        check_matrix("anchors", anchors)
        check_matrix("bank", bank, anchors.shape[1])
        check_vector("bank_labels", bank_labels, bank.shape[0])
        check_vector("pseudo_labels", pseudo_labels, anchors.shape[0])
        check_mask("confident", confident, anchors.shape[0])
        keep = torch.ones(bank.shape[0], dtype=torch.bool, device=bank.device)
        if valid is not None:
            check_mask("valid", valid, bank.shape[0])
            keep = valid.bool()
        positives = (pseudo_labels.unsqueeze(1) == bank_labels.unsqueeze(0)) & keep.unsqueeze(0)
        return confident.bool(), positives, keep

    def anchor_masks(
        self,
        bank_labels: torch.Tensor,
        pseudo_labels: torch.Tensor,
        confident: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
    ) -> AnchorMasks:
        """The masks of :meth:`masked_per_anchor`; one set serves every bank with the same
        labels and valid rows (cmco's rgb and flow banks share one per step)."""
        n, k = _length(pseudo_labels), _length(bank_labels)
        check_vector("pseudo_labels", pseudo_labels, n)
        check_vector("bank_labels", bank_labels, k)
        check_mask("confident", confident, n)
        if valid is not None:
            check_mask("valid", valid, k)
            positives = (pseudo_labels.unsqueeze(1) == bank_labels.unsqueeze(0)) & valid
            used = confident & _any_per_row(positives)
            # An unused anchor takes all valid rows as "positives": loss 0, finite gradient.
            outside = ~torch.where(used.unsqueeze(1), positives, valid.unsqueeze(0))
            return AnchorMasks(outside=outside, used=used, keep=valid)
        # Every row valid: no (N, K) keep mask, and the fewest (N, K) operations; the
        # same booleans as the branch above.
        others = pseudo_labels.unsqueeze(1) != bank_labels.unsqueeze(0)
        used = confident & ~_all_per_row(others)
        return AnchorMasks(outside=others & used.unsqueeze(1), used=used, keep=None)

    @float32_compute
    def masked_per_anchor(
        self, anchors: torch.Tensor, bank: torch.Tensor, masks: AnchorMasks
    ) -> AnchorLosses:
        """:meth:`per_anchor` with masks made by :meth:`anchor_masks` for this bank."""
        check_matrix("anchors", anchors)
        check_matrix("bank", bank, anchors.shape[1])
        if masks.outside.shape != (anchors.shape[0], bank.shape[0]):
            raise ValueError(
                f"masks are for {tuple(masks.outside.shape)} (anchors, bank rows), "
                f"got {anchors.shape[0]} anchors and {bank.shape[0]} bank rows"
            )
        return self._anchor_losses(anchors, bank, masks)

    def _anchor_losses(
        self, anchors: torch.Tensor, bank: torch.Tensor, masks: AnchorMasks
    ) -> AnchorLosses:
        dtype = common_dtype(anchors, bank)
        # Skip no-op conversions: each is a dispatched call, and this runs every step.
        anchors = anchors if anchors.dtype == dtype else anchors.to(dtype)
        bank = bank if bank.dtype == dtype else bank.to(dtype)
        logits = anchors @ bank.t() / self.tau
        if masks.keep is None:
            everything = logits.logsumexp(dim=1)
        else:
            everything = logits.masked_fill(~masks.keep.unsqueeze(0), _MASKED).logsumexp(dim=1)
        pos = logits.masked_fill(masks.outside, _MASKED).logsumexp(dim=1)
        return AnchorLosses(losses=everything - pos, used=masks.used)

    def _per_anchor(self, anchors, bank, bank_labels, pseudo_labels, confident, valid):
        check_matrix("anchors", anchors)
        check_matrix("bank", bank, anchors.shape[1])
        check_vector("bank_labels", bank_labels, bank.shape[0])
        check_vector("pseudo_labels", pseudo_labels, anchors.shape[0])
        masks = self.anchor_masks(bank_labels, pseudo_labels, confident, valid=valid)
        return self._anchor_losses(anchors, bank, masks)

    @float32_compute
    def per_anchor(
        self,
        anchors: torch.Tensor,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        pseudo_labels: torch.Tensor,
        confident: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
    ) -> AnchorLosses:
        """Every anchor's loss with the mask of those used (for callers that normalise by a
        global count). Masked arithmetic, no boolean indexing: nothing is read back to the host."""
        return self._per_anchor(anchors, bank, bank_labels, pseudo_labels, confident, valid)

    @float32_compute
    def batch_terms(
        self,
        anchors: torch.Tensor,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        pseudo_labels: torch.Tensor,
        confident: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
    ) -> BatchTerms:
        """Log-sums over all confident anchors (the literal form), for cross-worker combination."""
        return self._batch_terms(anchors, bank, bank_labels, pseudo_labels, confident, valid)

    def _batch_terms(self, anchors, bank, bank_labels, pseudo_labels, confident, valid):
        confident, positives, keep = self._masks(
            anchors, bank, bank_labels, pseudo_labels, confident, valid
        )
        dtype = torch.promote_types(anchors.dtype, bank.dtype)
        logits = anchors.to(dtype) @ bank.to(dtype).t() / self.tau
        pos_mask = positives & confident.unsqueeze(1)
        all_mask = keep.unsqueeze(0) & confident.unsqueeze(1)
        zero = zero_with_graph(anchors)
        has_positive, has_confident = pos_mask.any(), all_mask.any()
        positive_lse = logits.masked_fill(~pos_mask, _MASKED).flatten().logsumexp(dim=0)
        all_lse = logits.masked_fill(~all_mask, _MASKED).flatten().logsumexp(dim=0)
        return BatchTerms(
            positive_lse=torch.where(has_positive, positive_lse, zero),
            all_lse=torch.where(has_confident, all_lse, zero),
            has_positive=has_positive,
            has_confident=has_confident,
        )

    @float32_compute
    def forward(
        self,
        anchors: torch.Tensor,
        bank: torch.Tensor,
        bank_labels: torch.Tensor,
        pseudo_labels: torch.Tensor,
        confident: torch.Tensor,
        *,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if self.form == "batch":
            terms = self._batch_terms(anchors, bank, bank_labels, pseudo_labels, confident, valid)
            zero = zero_with_graph(anchors)
            return torch.where(terms.has_positive, terms.all_lse - terms.positive_lse, zero)
        result = self._per_anchor(anchors, bank, bank_labels, pseudo_labels, confident, valid)
        if result.losses.numel() == 0:
            return zero_with_graph(anchors)
        used = result.used.to(result.losses.dtype)
        return (result.losses * used).sum() / used.sum().clamp_min(1.0)
