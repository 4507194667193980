"""The losses' precision policy: float32 results under bf16 autocast, matching float64.

CPU autocast uses the same op lists as CUDA autocast (matmuls in bfloat16), so
these tests run a GPU training step's loss numerics on the CPU.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cmcl.losses import (
    ClassifierDiscrepancyLoss,
    CorrespondenceLoss,
    CrossDomainContrastiveLoss,
    CrossModalContrastiveLoss,
    DomainClassificationLoss,
    MMDLoss,
    PseudoLabelLoss,
    confident_pseudo_labels,
)
from cmcl.losses._precision import float32_compute

BANK, BATCH, CLASSES = 1543, 16, 8  # D1's training segments: an EPIC-sized bank


def i3d_like(gen: torch.Generator, n: int, shift: float = 0.0) -> torch.Tensor:
    """Non-negative 1024-d rows with norms 10-50, like pooled I3D features."""
    x = torch.relu(torch.randn(n, 1024, generator=gen) + shift)
    return x / x.norm(dim=1, keepdim=True) * torch.empty(n, 1).uniform_(10, 50, generator=gen)


def loss_cases(gen: torch.Generator) -> dict:
    """name -> (loss callable, float inputs (the first is differentiated), other inputs)."""

    def unit(n: int, d: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, d, generator=gen), dim=1)

    def logits(c: int) -> torch.Tensor:
        return torch.randn(BATCH, c, generator=gen) * 3

    labels = torch.randint(0, CLASSES, (BANK,), generator=gen)
    pseudo = torch.randint(0, CLASSES, (BATCH,), generator=gen)
    confident = torch.rand(BATCH, generator=gen) > 0.3
    index = torch.randint(0, BANK, (BATCH,), generator=gen)
    domain = (unit(BATCH, 1024), unit(BANK, 1024))
    return {
        "cross_modal": (
            CrossModalContrastiveLoss(tau=0.1),
            (unit(BATCH, 128), unit(BANK, 128)),
            (index,),
        ),
        "cross_modal_batch_positive": (
            lambda a, b, p: CrossModalContrastiveLoss(tau=0.05)(a, b, index, positive=p),
            (unit(BATCH, 128), unit(BANK, 128), unit(BATCH, 128)),
            (),
        ),
        "cross_domain": (CrossDomainContrastiveLoss(tau=0.1), domain, (labels, pseudo, confident)),
        "cross_domain_batch": (
            CrossDomainContrastiveLoss(tau=0.1, form="batch"),
            domain,
            (labels, pseudo, confident),
        ),
        "mmd": (MMDLoss(), (i3d_like(gen, BATCH), i3d_like(gen, BATCH, shift=0.3)), ()),
        "mcd": (ClassifierDiscrepancyLoss(), (logits(CLASSES), logits(CLASSES)), ()),
        "domain_adversarial": (DomainClassificationLoss(), (logits(2), logits(2)), ()),
        "correspondence": (
            CorrespondenceLoss(),
            (logits(2),),
            (torch.randint(0, 2, (BATCH,), generator=gen),),
        ),
        "pseudo_label": (PseudoLabelLoss(threshold=0.5), (logits(CLASSES),), ()),
    }


CASES = list(loss_cases(torch.Generator().manual_seed(0)))


def evaluate(case: str, seed: int, dtype: torch.dtype, *, autocast: bool, input_dtype=None):
    loss_fn, floats, others = loss_cases(torch.Generator().manual_seed(seed))[case]
    first = floats[0].to(input_dtype or dtype).detach().requires_grad_(True)
    rest = [x.to(input_dtype or dtype) for x in floats[1:]]
    if autocast:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            value = loss_fn(first, *rest, *others)
    else:
        value = loss_fn(first, *rest, *others)
    value.backward()
    return value, first.grad


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    got, want = got.detach().double(), want.detach()
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("case", CASES)
def test_float32_result_under_bf16_autocast_matches_float64(case, seed):
    value, grad = evaluate(case, seed, torch.float32, autocast=True)
    want_value, want_grad = evaluate(case, seed, torch.float64, autocast=False)
    assert value.dtype == torch.float32 and value.dim() == 0
    assert grad.dtype == torch.float32
    assert relative(value, want_value) < 1e-5, case
    assert relative(grad, want_grad) < 1e-5, case


@pytest.mark.parametrize("case", CASES)
def test_bfloat16_inputs_give_a_float32_result(case):
    """Inputs that come out of a bf16 layer are computed on, as float32, exactly."""
    value, grad = evaluate(case, 0, torch.float32, autocast=True, input_dtype=torch.bfloat16)
    exact, _ = evaluate(case, 0, torch.float64, autocast=False, input_dtype=torch.bfloat16)
    assert value.dtype == torch.float32 and grad.dtype == torch.bfloat16
    assert relative(value, exact) < 1e-5, case


def test_float64_inputs_stay_float64():
    value, _ = evaluate("cross_modal", 0, torch.float64, autocast=True)
    assert value.dtype == torch.float64


def test_autocast_is_back_on_after_the_loss():
    loss = MMDLoss()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss(torch.randn(3, 8), torch.randn(4, 8))
        assert torch.is_autocast_enabled("cpu")
        assert (torch.randn(2, 3) @ torch.randn(3, 2)).dtype == torch.bfloat16


def test_the_wrapper_leaves_non_tensors_and_integer_tensors_alone():
    seen = {}

    @float32_compute
    def probe(x, labels, *, scale, half=None):
        seen.update(x=x.dtype, labels=labels.dtype, scale=scale, half=half.dtype)
        seen["autocast"] = torch.is_autocast_enabled("cpu")
        return x

    with torch.autocast("cpu", dtype=torch.bfloat16):
        probe(torch.ones(2), torch.ones(2, dtype=torch.long), scale=2, half=torch.ones(2).half())
    assert seen == {
        "x": torch.float32,
        "labels": torch.long,
        "scale": 2,
        "half": torch.float32,
        "autocast": False,
    }


def test_pseudo_labels_are_float32_under_autocast():
    logits = torch.randn(6, 5) * 4
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pseudo = confident_pseudo_labels(logits.bfloat16(), 0.5)
    assert pseudo.confidence.dtype == torch.float32
    want = torch.softmax(logits.bfloat16().double(), dim=1).max(dim=1)
    torch.testing.assert_close(pseudo.confidence.double(), want.values, rtol=1e-6, atol=0)
    assert torch.equal(pseudo.label, want.indices)
