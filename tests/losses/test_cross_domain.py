"""CrossDomainContrastiveLoss (both forms) against slow float64 loop references and known values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cmcl.losses import CrossDomainContrastiveLoss

TAUS = [0.01, 0.05, 0.1, 0.5, 1.0]
FORMS = ["per_anchor", "batch"]
# (N anchors, K bank rows, D, classes): includes a single anchor, a single row and D=1.
SHAPES = [(1, 1, 1, 1), (1, 1, 3, 2), (1, 6, 4, 3), (5, 1, 3, 2), (4, 9, 5, 3), (8, 16, 6, 4)]


# ---------------------------------------------------------------- naive references


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


def naive_per_anchor(anchors, bank, bank_labels, pseudo, confident, tau, valid=None):
    """(mean loss or None, per-anchor losses, used flags), one anchor and one row at a time."""
    losses, used = [], []
    for i in range(anchors.shape[0]):
        positives, everything = [], []
        for j in range(bank.shape[0]):
            if valid is not None and not bool(valid[j]):
                continue
            s = naive_dot(anchors[i], bank[j]) / tau
            everything.append(s)
            if int(bank_labels[j]) == int(pseudo[i]):
                positives.append(s)
        if not bool(confident[i]) or not positives:
            used.append(False)
            continue
        used.append(True)
        losses.append(naive_logsumexp(everything) - naive_logsumexp(positives))
    if not losses:
        return None, losses, used
    total = losses[0]
    for loss in losses[1:]:
        total = total + loss
    return total / len(losses), losses, used


def naive_batch(anchors, bank, bank_labels, pseudo, confident, tau, valid=None):
    """-log(sum_{i in C} sum_{j: y_j = yhat_i} e^{s_ij} / sum_{i in C} sum_j e^{s_ij}), or None."""
    positives, everything = [], []
    for i in range(anchors.shape[0]):
        if not bool(confident[i]):
            continue
        for j in range(bank.shape[0]):
            if valid is not None and not bool(valid[j]):
                continue
            s = naive_dot(anchors[i], bank[j]) / tau
            everything.append(s)
            if int(bank_labels[j]) == int(pseudo[i]):
                positives.append(s)
    if not positives:
        return None
    return naive_logsumexp(everything) - naive_logsumexp(positives)


def naive(form, *args, **kwargs):
    return (
        naive_per_anchor(*args, **kwargs)[0]
        if form == "per_anchor"
        else naive_batch(*args, **kwargs)
    )


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


def random_case(seed: int, n: int, k: int, d: int, classes: int):
    gen = torch.Generator().manual_seed(seed)
    anchors, bank = unit_rows(gen, n, d), unit_rows(gen, k, d)
    bank_labels = torch.randint(classes, (k,), generator=gen)
    pseudo = torch.randint(classes, (n,), generator=gen)
    confident = torch.rand(n, generator=gen) < 0.7
    confident[0] = True
    pseudo[0] = bank_labels[0]  # at least one used anchor, so the loss is not the zero case
    return anchors, bank, bank_labels, pseudo, confident


def compare_with_reference(form, tau, anchors, bank, bank_labels, pseudo, confident, valid=None):
    """Value and gradients (anchors and bank) of the module vs the loop reference."""
    a32, b32 = leaf(anchors, torch.float32), leaf(bank, torch.float32)
    loss = CrossDomainContrastiveLoss(tau=tau, form=form)(
        a32, b32, bank_labels, pseudo, confident, valid=valid
    )
    a64, b64 = leaf(anchors, torch.float64), leaf(bank, torch.float64)
    expected = naive(form, a64, b64, bank_labels, pseudo, confident, tau, valid=valid)
    assert expected is not None, "the case must not be the zero case"
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), expected.detach(), **tolerance(tau))
    loss.backward()
    expected.backward()
    for got, want in ((a32, a64), (b32, b64)):
        want_grad = torch.zeros_like(want) if want.grad is None else want.grad
        torch.testing.assert_close(got.grad.double(), want_grad, **tolerance(tau))


# ---------------------------------------------------------------- reference comparisons


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tau", TAUS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_loop_reference(shape, tau, form):
    case = random_case(sum(shape) * 31 + 1, *shape)
    compare_with_reference(form, tau, *case)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0])
@pytest.mark.parametrize("shape", [(1, 4, 3, 2), (6, 10, 4, 3)])
def test_valid_mask_matches_loop_reference(shape, tau, form):
    anchors, bank, bank_labels, pseudo, confident = random_case(77 + sum(shape), *shape)
    valid = torch.rand(shape[1], generator=torch.Generator().manual_seed(1)) < 0.6
    valid[0] = True  # keeps anchor 0's positive, so the loss is not the zero case
    compare_with_reference(form, tau, anchors, bank, bank_labels, pseudo, confident, valid)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_per_anchor_returns_used_mask_and_per_anchor_losses(tau):
    anchors, bank, bank_labels, pseudo, confident = random_case(5, 10, 12, 4, 4)
    pseudo[3] = 9  # a class the bank does not hold: confident but no positive
    confident[3] = True
    result = CrossDomainContrastiveLoss(tau=tau).per_anchor(
        anchors.float(), bank.float(), bank_labels, pseudo, confident
    )
    _, losses, used = naive_per_anchor(anchors, bank, bank_labels, pseudo, confident, tau)
    assert result.used.dtype == torch.bool
    assert result.used.tolist() == used
    assert not used[3] and used[0]
    assert result.losses.shape == (len(used),)
    got = result.losses[result.used].double()
    torch.testing.assert_close(got, torch.stack(losses), **tolerance(tau))
    # The anchors that do not count carry a finite 0, so that weights can reduce them.
    assert torch.equal(result.losses[~result.used], torch.zeros(int((~result.used).sum())))


def test_gradient_matches_finite_differences():
    anchors, bank, bank_labels, pseudo, confident = random_case(8, 2, 4, 3, 2)
    for form in FORMS:
        a = leaf(anchors, torch.float32)
        CrossDomainContrastiveLoss(tau=0.2, form=form)(
            a, bank.float(), bank_labels, pseudo, confident
        ).backward()
        eps = 1e-3
        numeric = torch.zeros_like(anchors)
        for i in range(2):
            for d in range(3):
                step = torch.zeros_like(anchors)
                step[i, d] = eps
                up = naive(form, anchors + step, bank, bank_labels, pseudo, confident, 0.2)
                down = naive(form, anchors - step, bank, bank_labels, pseudo, confident, 0.2)
                numeric[i, d] = (up - down) / (2 * eps)
        torch.testing.assert_close(a.grad.double(), numeric, rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------- exact known values


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("tau", TAUS)
def test_every_bank_row_positive_gives_zero(tau, form):
    gen = torch.Generator().manual_seed(2)
    anchors, bank = unit_rows(gen, 5, 6).float(), unit_rows(gen, 11, 6).float()
    loss = CrossDomainContrastiveLoss(tau=tau, form=form)(
        anchors,
        bank,
        torch.full((11,), 3),
        torch.full((5,), 3),
        torch.ones(5, dtype=torch.bool),
    )
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def hand_case():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    bank_labels, pseudo = torch.tensor([0, 1, 0]), torch.tensor([0, 1])
    return anchors, bank, bank_labels, pseudo, torch.tensor([True, True])


def test_hand_computed_two_by_three_per_anchor():
    # tau = 0.5, similarities / tau: anchor 0 -> (2, 0, 1.2), anchor 1 -> (0, 2, 1.6).
    e = math.exp
    first = math.log(e(2) + e(0) + e(1.2)) - math.log(e(2) + e(1.2))
    second = math.log(e(0) + e(2) + e(1.6)) - math.log(e(2))
    loss = CrossDomainContrastiveLoss(tau=0.5, form="per_anchor")(*hand_case())
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_hand_computed_two_by_three_batch():
    e = math.exp
    positives = e(2) + e(1.2) + e(2)
    everything = e(2) + e(0) + e(1.2) + e(0) + e(2) + e(1.6)
    loss = CrossDomainContrastiveLoss(tau=0.5, form="batch")(*hand_case())
    assert loss.item() == pytest.approx(-math.log(positives / everything), rel=1e-6)


def test_forms_differ_in_general_but_agree_for_one_anchor():
    anchors, bank, bank_labels, pseudo, confident = (
        x.float() if x.is_floating_point() else x for x in random_case(9, 6, 12, 5, 3)
    )
    confident[:] = True
    per_anchor = CrossDomainContrastiveLoss(tau=0.1, form="per_anchor")
    batch = CrossDomainContrastiveLoss(tau=0.1, form="batch")
    args = (anchors, bank, bank_labels, pseudo, confident)
    assert abs(per_anchor(*args).item() - batch(*args).item()) > 1e-3
    for i in range(6):
        one = (anchors[i : i + 1], bank, bank_labels, pseudo[i : i + 1], confident[i : i + 1])
        torch.testing.assert_close(per_anchor(*one), batch(*one))
    only_first = torch.zeros(6, dtype=torch.bool)
    only_first[0] = True
    single = (anchors, bank, bank_labels, pseudo, only_first)
    torch.testing.assert_close(per_anchor(*single), batch(*single))


# ---------------------------------------------------------------- zero with a graph


def zero_cases():
    gen = torch.Generator().manual_seed(4)
    anchors, bank = unit_rows(gen, 4, 3).float(), unit_rows(gen, 6, 3).float()
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    return {
        "no confident anchor": (anchors, bank, labels, torch.tensor([0, 1, 2, 0]),
                                torch.zeros(4, dtype=torch.bool), None),
        "confident without positive": (anchors, bank, labels, torch.tensor([5, 7, 5, 3]),
                                       torch.ones(4, dtype=torch.bool), None),
        "positives all masked": (anchors, bank, labels, torch.tensor([0, 0, 0, 0]),
                                 torch.ones(4, dtype=torch.bool),
                                 torch.tensor([False, False, True, True, True, True])),
        "empty batch": (anchors[:0], bank, labels, torch.zeros(0, dtype=torch.long),
                        torch.zeros(0, dtype=torch.bool), None),
    }  # fmt: skip


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", list(zero_cases()))
def test_zero_with_graph(name, form):
    anchors, bank, labels, pseudo, confident, valid = zero_cases()[name]
    anchors = anchors.clone().requires_grad_(True)
    bank = bank.clone().requires_grad_(True)
    loss = CrossDomainContrastiveLoss(tau=0.1, form=form)(
        anchors, bank, labels, pseudo, confident, valid=valid
    )
    assert loss.item() == 0.0 and loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.requires_grad, "the zero must stay attached to the graph"
    loss.backward()
    assert torch.equal(anchors.grad, torch.zeros_like(anchors))
    assert bank.grad is None or torch.equal(bank.grad, torch.zeros_like(bank))
    if form == "per_anchor":
        result = CrossDomainContrastiveLoss(tau=0.1).per_anchor(
            anchors, bank, labels, pseudo, confident, valid=valid
        )
        assert not result.used.any()
        assert torch.equal(result.losses.detach(), torch.zeros(len(anchors)))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_zero_case_of_half_inputs_is_a_finite_float32(dtype, form):
    # Unnormalised half features whose sum overflows float16: the zero must not become NaN.
    anchors = torch.full((64, 32), 60.0, dtype=dtype, requires_grad=True)
    bank = F.normalize(torch.randn(5, 32), dim=1).to(dtype)
    loss = CrossDomainContrastiveLoss(tau=0.1, form=form)(
        anchors,
        bank,
        torch.zeros(5, dtype=torch.long),
        torch.ones(64, dtype=torch.long),
        torch.ones(64, dtype=torch.bool),
    )
    assert loss.dtype == torch.float32 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(anchors.grad, torch.zeros_like(anchors))


# ---------------------------------------------------------------- anchors that do not count


@pytest.mark.parametrize("form", FORMS)
def test_unconfident_anchors_contribute_nothing(form):
    anchors, bank, bank_labels, pseudo, confident = (
        x.float() if x.is_floating_point() else x for x in random_case(6, 8, 10, 4, 3)
    )
    confident = torch.tensor([True, False, True, False, False, True, True, False])
    loss_fn = CrossDomainContrastiveLoss(tau=0.05, form=form)
    a = anchors.clone().requires_grad_(True)
    loss = loss_fn(a, bank, bank_labels, pseudo, confident)
    loss.backward()
    assert torch.equal(a.grad[~confident], torch.zeros_like(a.grad[~confident]))
    assert (a.grad[confident].abs().sum(dim=1) > 0).all()
    other = anchors.clone()
    other[~confident] = F.normalize(torch.randn(4, 4), dim=1) * 1e3  # anything at all
    other_pseudo = pseudo.clone()
    other_pseudo[~confident] = (pseudo[~confident] + 1) % 3
    torch.testing.assert_close(loss_fn(other, bank, bank_labels, other_pseudo, confident), loss)
    subset = loss_fn(anchors[confident], bank, bank_labels, pseudo[confident], confident[confident])
    torch.testing.assert_close(subset, loss)


def test_per_anchor_mean_skips_confident_anchors_without_positive():
    anchors, bank, bank_labels, pseudo, confident = (
        x.float() if x.is_floating_point() else x for x in random_case(10, 5, 9, 3, 3)
    )
    confident[:] = True
    loss_fn = CrossDomainContrastiveLoss(tau=0.1)
    before = loss_fn(anchors, bank, bank_labels, pseudo, confident)
    extra = torch.cat([anchors, anchors[:1]])
    with_orphan = loss_fn(
        extra,
        bank,
        bank_labels,
        torch.cat([pseudo, torch.tensor([42])]),
        torch.cat([confident, torch.tensor([True])]),
    )
    torch.testing.assert_close(with_orphan, before)


@pytest.mark.parametrize("form", FORMS)
def test_masked_bank_rows_do_not_matter(form):
    anchors, bank, bank_labels, pseudo, confident = (
        x.float() if x.is_floating_point() else x for x in random_case(12, 6, 10, 4, 3)
    )
    valid = torch.tensor([True, True, False, True, False, True, False, True, True, False])
    loss_fn = CrossDomainContrastiveLoss(tau=0.1, form=form)
    loss = loss_fn(anchors, bank, bank_labels, pseudo, confident, valid=valid)
    bank2, labels2 = bank.clone(), bank_labels.clone()
    bank2[~valid] = anchors[:4]
    labels2[~valid] = pseudo[:4]
    torch.testing.assert_close(
        loss_fn(anchors, bank2, labels2, pseudo, confident, valid=valid), loss
    )
    all_valid = torch.ones(10, dtype=torch.bool)
    torch.testing.assert_close(
        loss_fn(anchors, bank, bank_labels, pseudo, confident, valid=all_valid),
        loss_fn(anchors, bank, bank_labels, pseudo, confident),
    )


# ---------------------------------------------------------------- stability


def finite_loss_and_gradients(form, tau, anchors, bank, *rest) -> torch.Tensor:
    anchors = anchors.detach().clone().requires_grad_(True)
    bank = bank.detach().clone().requires_grad_(True)
    loss = CrossDomainContrastiveLoss(tau=tau, form=form)(anchors, bank, *rest)
    loss.backward()
    assert torch.isfinite(loss), loss
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(bank.grad).all()
    return loss.detach()


@pytest.mark.parametrize("form", FORMS)
def test_nearly_identical_vectors_at_tau_001(form):
    gen = torch.Generator().manual_seed(21)
    base = torch.randn(1, 16, generator=gen)
    anchors = F.normalize(base + 1e-4 * torch.randn(6, 16, generator=gen), dim=1)
    bank = F.normalize(base + 1e-4 * torch.randn(40, 16, generator=gen), dim=1)
    labels = torch.arange(40) % 4
    loss = finite_loss_and_gradients(
        form, 0.01, anchors, bank, labels, torch.arange(6) % 4, torch.ones(6, dtype=torch.bool)
    )
    # Ten of forty rows are positives and all similarities are nearly equal: about log 4.
    assert loss.item() == pytest.approx(math.log(4), abs=0.05)


@pytest.mark.parametrize("form", FORMS)
def test_opposite_positives_at_tau_001(form):
    # Positives are the anchor's antipode, negatives equal the anchor: about 2/tau + log(K-1).
    u = F.normalize(torch.tensor([[1.0, 2.0, -0.5]]), dim=1)
    bank = torch.cat([-u, u.expand(9, 3)])
    labels = torch.tensor([1] + [0] * 9)
    loss = finite_loss_and_gradients(
        form, 0.01, u, bank, labels, torch.tensor([1]), torch.tensor([True])
    )
    assert loss.item() == pytest.approx(200.0 + math.log(9), rel=1e-6)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scale", [1e2, 1e4])
def test_large_norm_inputs_stay_finite(scale, form):
    gen = torch.Generator().manual_seed(22)
    anchors = scale * torch.randn(4, 8, generator=gen)
    bank = torch.cat([-anchors, anchors, torch.randn(4, 8, generator=gen)])
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2])
    pseudo, confident = torch.tensor([0, 1, 2, 0]), torch.ones(4, dtype=torch.bool)
    loss = finite_loss_and_gradients(form, 0.01, anchors, bank, labels, pseudo, confident)
    expected = naive(form, anchors.double(), bank.double(), labels, pseudo, confident, 0.01)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=0.0)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_inputs_are_computed_in_float32(dtype, form):
    gen = torch.Generator().manual_seed(23)
    anchors = F.normalize(torch.randn(6, 32, generator=gen), dim=1).to(dtype)
    bank = F.normalize(torch.randn(40, 32, generator=gen), dim=1).to(dtype)
    labels, pseudo = torch.arange(40) % 5, torch.arange(6) % 5
    confident = torch.tensor([True, True, False, True, True, True])
    loss_fn = CrossDomainContrastiveLoss(tau=0.01, form=form)
    a = anchors.clone().requires_grad_(True)
    loss = loss_fn(a, bank, labels, pseudo, confident)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(
        loss, loss_fn(anchors.float(), bank.float(), labels, pseudo, confident)
    )
    expected = naive(form, anchors.double(), bank.double(), labels, pseudo, confident, 0.01)
    torch.testing.assert_close(loss.double(), expected, rtol=1e-5, atol=1e-4)
    loss.backward()
    assert a.grad.dtype == dtype and torch.isfinite(a.grad).all()


# ---------------------------------------------------------------- errors


def good_inputs() -> dict:
    return {
        "anchors": F.normalize(torch.randn(3, 4), dim=1),
        "bank": F.normalize(torch.randn(5, 4), dim=1),
        "bank_labels": torch.tensor([0, 1, 2, 0, 1]),
        "pseudo_labels": torch.tensor([0, 2, 1]),
        "confident": torch.tensor([True, False, True]),
    }


POSITIONAL = ("anchors", "bank", "bank_labels", "pseudo_labels", "confident")


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"anchors": torch.randn(4)}, "anchors"),
        ({"anchors": torch.randn(3, 4, 1)}, "anchors"),
        ({"bank": torch.randn(5, 3)}, "bank"),
        ({"bank": torch.randn(20)}, "bank"),
        ({"bank_labels": torch.tensor([0, 1, 2, 0])}, "bank_labels"),
        ({"bank_labels": torch.zeros(5, 1, dtype=torch.long)}, "bank_labels"),
        ({"pseudo_labels": torch.tensor([0, 2])}, "pseudo_labels"),
        ({"confident": torch.tensor([True, False])}, "confident"),
        ({"confident": torch.tensor([0.9, 0.1, 0.95])}, "confident"),
        ({"valid": torch.ones(4, dtype=torch.bool)}, "valid"),
        ({"valid": torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0])}, "valid"),
    ],
)
def test_wrong_inputs_raise_value_error(change, match, form):
    inputs = {**good_inputs(), **change}
    positional = [inputs.pop(name) for name in POSITIONAL]
    with pytest.raises(ValueError, match=match):
        CrossDomainContrastiveLoss(form=form)(*positional, **inputs)


@pytest.mark.parametrize("tau", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_tau_raises_value_error(tau):
    with pytest.raises(ValueError, match="tau"):
        CrossDomainContrastiveLoss(tau=tau)


@pytest.mark.parametrize("form", ["mean", "", "Batch", "per-anchor"])
def test_bad_form_raises_value_error(form):
    with pytest.raises(ValueError, match="form"):
        CrossDomainContrastiveLoss(form=form)


# ---------------------------------------------------------------- masks made once, shared


@pytest.mark.parametrize("with_valid", [False, True])
def test_shared_masks_give_per_anchor_bit_for_bit(with_valid):
    # cmco makes one set of masks per step for its rgb and flow banks.
    anchors, bank, bank_labels, pseudo, confident = random_case(11, 8, 40, 6, 5)
    pseudo[1], confident[1] = 4, True  # class 4 may have no bank row: a confident anchor unused
    bank_labels[bank_labels == 4] = 3
    valid = None
    if with_valid:
        valid = torch.rand(40, generator=torch.Generator().manual_seed(2)) < 0.7
    loss = CrossDomainContrastiveLoss(tau=0.1)
    masks = loss.anchor_masks(bank_labels, pseudo, confident, valid=valid)
    assert (masks.keep is None) == (valid is None)
    got = loss.masked_per_anchor(anchors, bank, masks)
    want = loss.per_anchor(anchors, bank, bank_labels, pseudo, confident, valid=valid)
    assert not got.used[1] and torch.equal(got.used, want.used)
    assert torch.equal(got.losses, want.losses)
    assert got.losses[~got.used].abs().max() == 0  # the placeholder of an unused anchor


def test_shared_masks_are_float32_under_autocast_and_checked_against_the_bank():
    anchors, bank, bank_labels, pseudo, confident = random_case(12, 4, 9, 5, 3)
    anchors, bank = anchors.float(), bank.float()
    loss = CrossDomainContrastiveLoss(tau=0.1)
    masks = loss.anchor_masks(bank_labels, pseudo, confident)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = loss.masked_per_anchor(anchors.bfloat16(), bank, masks)
    want = loss.per_anchor(anchors.bfloat16().float(), bank, bank_labels, pseudo, confident)
    assert got.losses.dtype == torch.float32
    assert torch.equal(got.losses, want.losses)
    with pytest.raises(ValueError, match="masks are for"):
        loss.masked_per_anchor(anchors, bank[:5], masks)
