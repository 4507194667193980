"""CrossModalContrastiveLoss against a slow float64 loop reference and exact known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcl.losses import CrossModalContrastiveLoss

TAUS = [0.01, 0.05, 0.1, 0.5, 1.0]
# (N anchors, K bank rows, D): includes a single anchor, a single row and D=1.
SHAPES = [(1, 1, 1), (1, 1, 4), (1, 5, 3), (4, 1, 3), (3, 7, 5), (8, 12, 4), (5, 3, 16)]


# ---------------------------------------------------------------- naive reference


def naive_dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    total = u[0] * v[0]
    for d in range(1, len(u)):
        total = total + u[d] * v[d]
    return total


def naive_logsumexp(values: list[torch.Tensor]) -> torch.Tensor:
    # Shift by the largest value (a constant, so autograd is unaffected) to stay finite.
    shift = max(float(v.detach()) for v in values)
    total = torch.exp(values[0] - shift)
    for v in values[1:]:
        total = total + torch.exp(v - shift)
    return shift + torch.log(total)


def naive_cross_modal(anchors, bank, positive_index, tau, positive=None, valid=None):
    """Mean over anchors of -s(a, pos)/tau + log sum_j exp(s(a, row_j)/tau), in loops.

    With ``positive`` the batch vector stands in for the bank row ``positive_index[i]``
    (numerator and denominator); with ``valid`` masked rows leave the denominator,
    and without a batch positive an anchor whose positive row is masked (never
    written: random noise, not its other modality) is left out of the mean.
    """
    total, used = None, 0
    for i in range(anchors.shape[0]):
        p = int(positive_index[i])
        if valid is not None and positive is None and not bool(valid[p]):
            continue
        used += 1
        target = positive[i] if positive is not None else bank[p]
        pos_logit = naive_dot(anchors[i], target) / tau
        terms = []
        for j in range(bank.shape[0]):
            if j == p:
                terms.append(pos_logit)
            elif valid is None or bool(valid[j]):
                terms.append(naive_dot(anchors[i], bank[j]) / tau)
        loss_i = naive_logsumexp(terms) - pos_logit
        total = loss_i if total is None else total + loss_i
    if total is None:
        return (anchors * 0.0).sum()
    return total / used


# ---------------------------------------------------------------- helpers


def unit_rows(gen: torch.Generator, n: int, d: int) -> torch.Tensor:
    """Random unit rows, rounded to float32 then held in float64 (both sides see the same input)."""
    return (
        F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1).float().double()
    )


def leaf(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.detach().to(dtype).clone().requires_grad_(True)


def tolerance(tau: float) -> dict:
    # float32 dot products carry ~1e-7 relative error that 1/tau amplifies.
    return {"rtol": 1e-4, "atol": 2e-6 / tau}


def compare_with_reference(anchors, bank, index, tau, positive=None, valid=None) -> None:
    """Value and gradients (anchors, bank, positive) of the module vs the loop reference."""
    a32, b32 = leaf(anchors, torch.float32), leaf(bank, torch.float32)
    p32 = None if positive is None else leaf(positive, torch.float32)
    loss = CrossModalContrastiveLoss(tau=tau)(a32, b32, index, positive=p32, valid=valid)
    a64, b64 = leaf(anchors, torch.float64), leaf(bank, torch.float64)
    p64 = None if positive is None else leaf(positive, torch.float64)
    expected = naive_cross_modal(a64, b64, index, tau, positive=p64, valid=valid)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), expected.detach(), **tolerance(tau))
    loss.backward()
    expected.backward()
    pairs = [(a32, a64), (b32, b64)] + ([] if positive is None else [(p32, p64)])
    for got, want in pairs:
        # A row the reference never touches (K=1 with a batch positive) has no gradient.
        want_grad = torch.zeros_like(want) if want.grad is None else want.grad
        torch.testing.assert_close(got.grad.double(), want_grad, **tolerance(tau))


# ---------------------------------------------------------------- reference comparisons


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_loop_reference(shape, tau):
    n, k, d = shape
    gen = torch.Generator().manual_seed(1000 * n + 10 * k + d)
    anchors, bank = unit_rows(gen, n, d), unit_rows(gen, k, d)
    index = torch.randint(k, (n,), generator=gen)
    compare_with_reference(anchors, bank, index, tau)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 4, 2), (5, 6, 4), (6, 3, 8)])
def test_batch_positive_matches_loop_reference(shape, tau):
    n, k, d = shape
    gen = torch.Generator().manual_seed(7 + n + k + d)
    anchors, bank, positive = unit_rows(gen, n, d), unit_rows(gen, k, d), unit_rows(gen, n, d)
    index = torch.randint(k, (n,), generator=gen)
    compare_with_reference(anchors, bank, index, tau, positive=positive)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 5, 2), (5, 8, 4), (7, 4, 6)])
def test_valid_mask_matches_loop_reference(shape, tau):
    n, k, d = shape
    gen = torch.Generator().manual_seed(99 + n + k + d)
    anchors, bank = unit_rows(gen, n, d), unit_rows(gen, k, d)
    index = torch.randint(k, (n,), generator=gen)
    valid = torch.rand(k, generator=gen) < 0.5
    valid[index[0]] = False  # this anchor has no real positive: it leaves the mean
    compare_with_reference(anchors, bank, index, tau, valid=valid)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
def test_valid_mask_with_batch_positive_keeps_every_anchor(tau):
    gen = torch.Generator().manual_seed(5)
    anchors, bank, positive = unit_rows(gen, 5, 4), unit_rows(gen, 8, 4), unit_rows(gen, 5, 4)
    index = torch.randint(8, (5,), generator=gen)
    valid = torch.zeros(8, dtype=torch.bool)
    valid[index[1:]] = True
    compare_with_reference(anchors, bank, index, tau, positive=positive, valid=valid)


def test_unwritten_positive_leaves_the_anchor_out_exactly():
    gen = torch.Generator().manual_seed(11)
    anchors, bank = unit_rows(gen, 3, 4).float(), unit_rows(gen, 6, 4).float()
    index = torch.tensor([0, 1, 2])
    valid = torch.tensor([True, False, True, True, True, True])
    loss_fn = CrossModalContrastiveLoss(tau=0.1)
    per = loss_fn.per_anchor(anchors, bank, index, valid=valid)
    used = loss_fn.used_anchors(index, valid=valid)
    assert used.tolist() == [True, False, True]
    got = loss_fn(anchors, bank, index, valid=valid)
    torch.testing.assert_close(got, (per[0] + per[2]) / 2)


def test_no_anchor_with_a_written_positive_gives_an_attached_zero():
    gen = torch.Generator().manual_seed(12)
    anchors = unit_rows(gen, 4, 3).float().requires_grad_(True)
    bank = unit_rows(gen, 5, 3).float()
    valid = torch.tensor([False, False, True, True, True])
    loss = CrossModalContrastiveLoss(tau=0.1)(
        anchors, bank, torch.tensor([0, 1, 0, 1]), valid=valid
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(anchors.grad, torch.zeros_like(anchors))


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_valid_and_positive_together_match_loop_reference(tau):
    gen = torch.Generator().manual_seed(5)
    anchors, bank, positive = unit_rows(gen, 6, 5), unit_rows(gen, 9, 5), unit_rows(gen, 6, 5)
    index = torch.tensor([0, 3, 3, 8, 1, 0])
    valid = torch.tensor([False, True, False, False, True, True, False, True, False])
    compare_with_reference(anchors, bank, index, tau, positive=positive, valid=valid)


def test_gradient_matches_finite_differences():
    gen = torch.Generator().manual_seed(3)
    anchors, bank = unit_rows(gen, 2, 3), unit_rows(gen, 4, 3)
    index = torch.tensor([1, 3])
    loss_fn = CrossModalContrastiveLoss(tau=0.2)
    a = leaf(anchors, torch.float32)
    loss_fn(a, bank.float(), index).backward()
    eps = 1e-3
    numeric = torch.zeros_like(anchors)
    for i in range(2):
        for d in range(3):
            step = torch.zeros_like(anchors)
            step[i, d] = eps
            up = naive_cross_modal(anchors + step, bank, index, 0.2)
            down = naive_cross_modal(anchors - step, bank, index, 0.2)
            numeric[i, d] = (up - down) / (2 * eps)
    torch.testing.assert_close(a.grad.double(), numeric, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- exact known values


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("k", [1, 2, 7, 1000])
def test_identical_rows_give_log_k(k, tau):
    u = F.normalize(torch.tensor([[0.3, -1.2, 0.5, 2.0]]), dim=1)
    anchors, bank = u.expand(3, 4), u.expand(k, 4)
    index = torch.tensor([0, k // 2, k - 1])
    loss = CrossModalContrastiveLoss(tau=tau)(anchors, bank, index)
    assert loss.item() == pytest.approx(math.log(k), abs=2e-6 / tau)


@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("k", [1, 3, 6])
def test_orthogonal_anchor_gives_log_k(k, tau):
    # Bank rows e_0..e_{K-1}, anchors in the orthogonal complement: every logit is exactly 0.
    bank = torch.eye(k + 2)[:k]
    anchors = torch.eye(k + 2)[[k, k + 1]]
    loss = CrossModalContrastiveLoss(tau=tau)(anchors, bank, torch.tensor([0, k - 1]))
    assert loss.item() == pytest.approx(math.log(k), rel=1e-6, abs=1e-7)


def test_hand_computed_two_by_three():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    # tau = 0.5, logits: anchor 0 -> (2, 0, -2), anchor 1 -> (0, 2, 0); positives rows 0 and 2.
    first = -2.0 + math.log(math.exp(2) + 1 + math.exp(-2))
    second = -0.0 + math.log(1 + math.exp(2) + 1)
    loss = CrossModalContrastiveLoss(tau=0.5)(anchors, bank, torch.tensor([0, 2]))
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    per = CrossModalContrastiveLoss(tau=0.5).per_anchor(anchors, bank, torch.tensor([0, 2]))
    assert per.tolist() == pytest.approx([first, second], rel=1e-6)


def test_every_row_masked_but_the_positive_gives_zero():
    gen = torch.Generator().manual_seed(0)
    anchors, bank = unit_rows(gen, 4, 3).float(), unit_rows(gen, 6, 3).float()
    loss = CrossModalContrastiveLoss(tau=0.05)(
        anchors, bank, torch.tensor([0, 1, 5, 5]), valid=torch.zeros(6, dtype=torch.bool)
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------- option semantics


def test_positive_equal_to_bank_row_changes_nothing():
    gen = torch.Generator().manual_seed(11)
    anchors, bank = unit_rows(gen, 5, 4).float(), unit_rows(gen, 7, 4).float()
    index = torch.tensor([6, 0, 2, 2, 4])
    loss_fn = CrossModalContrastiveLoss(tau=0.1)
    plain = loss_fn(anchors, bank, index)
    with_positive = loss_fn(anchors, bank, index, positive=bank[index].clone())
    torch.testing.assert_close(with_positive, plain)


def test_batch_positive_replaces_the_stale_bank_row():
    gen = torch.Generator().manual_seed(12)
    anchors, bank, positive = (unit_rows(gen, n, 4).float() for n in (3, 6, 3))
    index = torch.tensor([1, 4, 5])
    loss_fn = CrossModalContrastiveLoss(tau=0.1)
    before = loss_fn.per_anchor(anchors, bank, index, positive=positive)
    stale = bank.clone()
    stale[4] = unit_rows(gen, 1, 4).float()  # anchor 1's stale positive row
    after = loss_fn.per_anchor(anchors, stale, index, positive=positive)
    # Anchor 1 no longer sees its bank row; for the others it is an ordinary negative.
    torch.testing.assert_close(after[1], before[1])
    assert not torch.isclose(after[0], before[0]) and not torch.isclose(after[2], before[2])
    positive_leaf = positive.clone().requires_grad_(True)
    loss_fn(anchors, bank, index, positive=positive_leaf).backward()
    assert (positive_leaf.grad.abs().sum(dim=1) > 0).all(), "every batch positive gets a gradient"


def test_masked_rows_do_not_matter_and_all_valid_is_no_mask():
    gen = torch.Generator().manual_seed(13)
    anchors, bank = unit_rows(gen, 4, 5).float(), unit_rows(gen, 8, 5).float()
    index = torch.tensor([0, 2, 7, 3])
    valid = torch.tensor([True, False, True, False, True, False, True, False])
    loss_fn = CrossModalContrastiveLoss(tau=0.1)
    masked = loss_fn(anchors, bank, index, valid=valid)
    changed = bank.clone()
    changed[[1, 5]] = anchors[:2]  # masked, not a positive: may hold anything
    torch.testing.assert_close(loss_fn(anchors, changed, index, valid=valid), masked)
    changed[3] = -anchors[3]  # masked and anchor 3's positive: that anchor is left out
    torch.testing.assert_close(loss_fn(anchors, changed, index, valid=valid), masked)
    changed[0] = -anchors[0]  # written and anchor 0's positive: it counts
    assert not torch.allclose(loss_fn(anchors, changed, index, valid=valid), masked)
    all_valid = torch.ones(8, dtype=torch.bool)
    torch.testing.assert_close(
        loss_fn(anchors, bank, index, valid=all_valid), loss_fn(anchors, bank, index)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_empty_batch_is_a_float32_zero_with_graph(dtype):
    anchors = torch.zeros(0, 3, dtype=dtype, requires_grad=True)
    loss = CrossModalContrastiveLoss()(
        anchors, torch.eye(3, dtype=dtype), torch.zeros(0, dtype=torch.long)
    )
    assert loss.item() == 0.0 and loss.requires_grad and loss.dtype == torch.float32
    loss.backward()
    assert anchors.grad.shape == (0, 3)


# ---------------------------------------------------------------- stability


def assert_finite_with_gradients(loss_fn, anchors, bank, index, **options) -> torch.Tensor:
    anchors = anchors.detach().clone().requires_grad_(True)
    bank = bank.detach().clone().requires_grad_(True)
    loss = loss_fn(anchors, bank, index, **options)
    loss.backward()
    assert torch.isfinite(loss), loss
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(bank.grad).all()
    return loss.detach()


def test_nearly_identical_vectors_at_tau_001():
    gen = torch.Generator().manual_seed(21)
    base = torch.randn(1, 16, generator=gen)
    anchors = F.normalize(base + 1e-4 * torch.randn(6, 16, generator=gen), dim=1)
    bank = F.normalize(base + 1e-4 * torch.randn(50, 16, generator=gen), dim=1)
    loss = assert_finite_with_gradients(
        CrossModalContrastiveLoss(tau=0.01), anchors, bank, torch.arange(6)
    )
    assert loss.item() == pytest.approx(math.log(50), abs=0.05)


def test_opposite_positive_at_tau_001():
    # The positive is the anchor's antipode and every other row equals the anchor:
    # loss = 2/tau + log(K-1) + log(1 + exp(-2/tau)/(K-1)), about 200 + log 9.
    u = F.normalize(torch.tensor([[1.0, 2.0, -0.5]]), dim=1)
    bank = u.expand(10, 3).clone()
    bank[4] = -u
    loss = assert_finite_with_gradients(
        CrossModalContrastiveLoss(tau=0.01), u, bank, torch.tensor([4])
    )
    assert loss.item() == pytest.approx(200.0 + math.log(9), rel=1e-6)


@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_large_norm_inputs_stay_finite(scale):
    gen = torch.Generator().manual_seed(22)
    anchors = scale * torch.randn(4, 8, generator=gen)
    bank = torch.cat([anchors[:2], -anchors[2:], torch.randn(6, 8, generator=gen)])
    index = torch.tensor([2, 3, 0, 1])  # positives point away from the largest logits
    loss = assert_finite_with_gradients(CrossModalContrastiveLoss(tau=0.01), anchors, bank, index)
    expected = naive_cross_modal(anchors.double(), bank.double(), index, 0.01)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype):
    gen = torch.Generator().manual_seed(23)
    anchors = F.normalize(torch.randn(5, 32, generator=gen), dim=1).to(dtype)
    bank = F.normalize(torch.randn(40, 32, generator=gen), dim=1).to(dtype)
    index = torch.randint(40, (5,), generator=gen)
    loss_fn = CrossModalContrastiveLoss(tau=0.01)
    a = anchors.clone().requires_grad_(True)
    loss = loss_fn(a, bank, index)
    assert loss.dtype == torch.float32
    # Same value as the float32 computation on the upcast inputs (not a half computation).
    torch.testing.assert_close(loss, loss_fn(anchors.float(), bank.float(), index))
    expected = naive_cross_modal(anchors.double(), bank.double(), index, 0.01)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-4)
    loss.backward()
    assert a.grad.dtype == dtype and torch.isfinite(a.grad).all()


# ---------------------------------------------------------------- errors


def good_inputs() -> dict:
    return {
        "anchors": F.normalize(torch.randn(3, 4), dim=1),
        "bank": F.normalize(torch.randn(5, 4), dim=1),
        "positive_index": torch.tensor([0, 4, 2]),
    }


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"anchors": torch.randn(4)}, "anchors"),
        ({"anchors": torch.randn(3, 4, 1)}, "anchors"),
        ({"bank": torch.randn(5, 3)}, "bank"),
        ({"bank": torch.randn(20)}, "bank"),
        ({"positive_index": torch.tensor([0, 1])}, "positive_index"),
        ({"positive_index": torch.tensor([[0, 1, 2]])}, "positive_index"),
        ({"positive_index": torch.tensor([0.0, 1.0, 2.0])}, "positive_index"),
        ({"positive_index": torch.tensor([0, 5, 1])}, "positive_index"),
        ({"positive_index": torch.tensor([0, -1, 1])}, "positive_index"),
        ({"positive": torch.randn(3, 5)}, "positive"),
        ({"positive": torch.randn(2, 4)}, "positive"),
        ({"valid": torch.ones(4, dtype=torch.bool)}, "valid"),
        ({"valid": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])}, "valid"),
    ],
)
def test_wrong_inputs_raise_value_error(change, match):
    inputs = {**good_inputs(), **change}
    positional = [inputs.pop(name) for name in ("anchors", "bank", "positive_index")]
    with pytest.raises(ValueError, match=match):
        CrossModalContrastiveLoss()(*positional, **inputs)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_tau_raises_value_error(tau):
    with pytest.raises(ValueError, match="tau"):
        CrossModalContrastiveLoss(tau=tau)
