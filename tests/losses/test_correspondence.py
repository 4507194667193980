"""Correspondence pairs: negatives never pair a clip with itself or across domains."""

from __future__ import annotations

import math

import pytest
import torch

from cmcl.losses import CorrespondenceLoss, correspondence_pairs

GROUPINGS = [
    [1, 1],
    [2, 2],
    [3, 1],
    [5, 5],
    [7, 8],
    [16, 16],
    [9, 0],
    [1, 0],
    [13, 4, 6],
]


def _groups(sizes: list[int], interleave: bool) -> torch.Tensor:
    ids = torch.cat([torch.full((n,), g, dtype=torch.long) for g, n in enumerate(sizes)])
    if interleave:  # the construction must not rely on a group being contiguous
        ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(len(ids)))]
    return ids


@pytest.mark.parametrize("sizes", GROUPINGS)
@pytest.mark.parametrize("interleave", [False, True])
def test_pairs_stay_in_their_group_and_never_meet_themselves(sizes, interleave):
    groups = _groups(sizes, interleave)
    n = len(groups)
    for seed in range(200):
        pairs = correspondence_pairs(groups, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(pairs.rgb, torch.arange(n))
        positive = pairs.label == 1
        assert set(pairs.label.tolist()) <= {0, 1}
        assert torch.equal(pairs.flow[positive], pairs.rgb[positive])
        negative = ~positive
        assert bool((pairs.flow[negative] != pairs.rgb[negative]).all())
        assert torch.equal(groups[pairs.flow], groups)
        for g, size in enumerate(sizes):
            in_group = groups == g
            assert int(negative[in_group].sum()) == (size // 2 if size >= 2 else 0)


def test_negative_partners_cover_every_other_member():
    groups = torch.tensor([0] * 5 + [1] * 4)
    seen: dict[int, set[int]] = {i: set() for i in range(9)}
    for seed in range(400):
        pairs = correspondence_pairs(groups, generator=torch.Generator().manual_seed(seed))
        for i in torch.nonzero(pairs.label == 0).flatten().tolist():
            seen[i].add(int(pairs.flow[i]))
    for i in range(9):
        members = set(torch.nonzero(groups == groups[i]).flatten().tolist())
        assert seen[i] == members - {i}


def test_global_generator_by_default_and_bad_groups():
    torch.manual_seed(5)
    a = correspondence_pairs(torch.zeros(10, dtype=torch.long))
    torch.manual_seed(5)
    b = correspondence_pairs(torch.zeros(10, dtype=torch.long))
    assert torch.equal(a.flow, b.flow) and torch.equal(a.label, b.label)
    with pytest.raises(ValueError, match="integer"):
        correspondence_pairs(torch.zeros(4))


def test_loss_is_the_cross_entropy_of_the_pair_labels():
    logits = torch.randn(6, 2)
    label = torch.tensor([1, 0, 1, 1, 0, 0])
    naive = sum(
        -row[y] + math.log(sum(math.exp(v) for v in row))
        for row, y in zip(logits.tolist(), label.tolist(), strict=True)
    )
    assert CorrespondenceLoss()(logits, label).item() == pytest.approx(naive / 6, rel=1e-6)
    with pytest.raises(ValueError, match="label"):
        CorrespondenceLoss()(logits, label[:3])


@pytest.mark.parametrize("sizes", [[8, 8], [5, 3], [1, 4], [16]])
def test_block_pairs_equal_the_pairs_of_the_same_groups_and_draws(sizes):
    from cmcl.losses.correspondence import block_correspondence_pairs

    groups = torch.cat([torch.full((s,), i, dtype=torch.long) for i, s in enumerate(sizes)])
    want = correspondence_pairs(groups, generator=torch.Generator().manual_seed(3))
    got = block_correspondence_pairs(
        sizes, device=torch.device("cpu"), generator=torch.Generator().manual_seed(3)
    )
    for name in ("rgb", "flow", "label"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name
