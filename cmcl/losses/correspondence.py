"""RGB/flow correspondence: MM-SADA's self-supervised alignment (Munro & Damen, CVPR 2020)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from cmcl.losses._checks import check_matrix, check_vector, zero_with_graph
from cmcl.losses._precision import float32_compute


class CorrespondencePairs(NamedTuple):
    """Which RGB row meets which flow row, and whether they come from the same segment.

    Shape:
        rgb, flow, label: (N,) long; label 1 = same segment, 0 = another segment
    """

    rgb: torch.Tensor
    flow: torch.Tensor
    label: torch.Tensor


def correspondence_pairs(
    groups: torch.Tensor, *, generator: torch.Generator | None = None
) -> CorrespondencePairs:
    """Half of each group keeps its own flow; the other half gets the flow of another member.

    Row i's RGB is always row i. In every group (a domain's batch) of n rows,
    ``n // 2`` rows chosen at random are negatives: their flow is that of a
    different row of the same group, drawn uniformly among the n - 1 others.
    So a negative never pairs a clip with itself, and never crosses groups; a
    group of one row has no negative.

    Args:
        groups: (N,) integer group id of each row (0 = source, 1 = target).
        generator: CPU generator (default: torch's global one, whose state the
            checkpoints save, so a resumed run draws the same pairs).
    """
    if groups.dim() != 1 or groups.dtype not in (torch.int64, torch.int32):
        raise ValueError(
            f"groups must be a 1-D integer tensor, got {groups.dtype} {tuple(groups.shape)}"
        )
    ids = groups.detach().cpu().long()
    members = [torch.nonzero(ids == group).flatten() for group in torch.unique(ids).tolist()]
    flow, label = _pair_members(members, len(ids), generator)
    device = groups.device
    return CorrespondencePairs(
        torch.arange(len(ids), device=device), flow.to(device), label.to(device)
    )


def block_correspondence_pairs(
    sizes: Sequence[int], *, device: torch.device, generator: torch.Generator | None = None
) -> CorrespondencePairs:
    """:func:`correspondence_pairs` for groups that are consecutive blocks of ``sizes`` rows.

    The same pairs from the same random draws, made on the host from the sizes
    alone: no tensor is read back from ``device`` (the pairs are copied to it
    without waiting), so a training step on a GPU does not synchronise here.
    """
    members, start = [], 0
    for size in sizes:
        members.append(torch.arange(start, start + size))
        start += size
    flow, label = _pair_members(members, start, generator)
    return CorrespondencePairs(
        torch.arange(start, device=device),
        flow.to(device, non_blocking=True),
        label.to(device, non_blocking=True),
    )


def _pair_members(
    groups: list[torch.Tensor], n: int, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(flow row, label) of each of ``n`` rows, given each group's member rows (CPU)."""
    flow = torch.arange(n)
    label = torch.ones(n, dtype=torch.long)
    for members in groups:
        size = len(members)
        if size < 2:
            continue
        negatives = torch.randperm(size, generator=generator)[: size // 2]
        # A shift in [1, size - 1] around the group's members: never 0, so never itself.
        shift = torch.randint(1, size, (len(negatives),), generator=generator)
        flow[members[negatives]] = members[(negatives + shift) % size]
        label[members[negatives]] = 0
    return flow, label


class CorrespondenceLoss(nn.Module):
    """Cross-entropy of the correspondence head against the pair labels.

    Computed in float32 whatever autocast encloses it.

    Shape:
        logits: (N, 2) from :class:`cmcl.modules.CorrespondenceHead`; label: (N,) long; output: scalar
    """

    @float32_compute
    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        check_matrix("logits", logits, 2)
        check_vector("label", label, logits.shape[0])
        if len(label) == 0:
            return zero_with_graph(logits)
        return F.cross_entropy(logits, label)
