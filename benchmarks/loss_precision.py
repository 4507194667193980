"""Relative error of every loss module against float64, in plain float32 and under bf16 autocast.

Inputs are drawn at the scale the losses meet in training (EPIC bank sizes,
1024-d non-negative I3D-like features with norms 10-50, 128-d unit
embeddings), in float32; the reference is the same module on the float64 copy.
Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the CPU uses the same
op lists as CUDA autocast, so this measures what a GPU run's losses see.

    python benchmarks/loss_precision.py            # a table: loss, context, dtype, value and gradient error
    python benchmarks/loss_precision.py --repeats 5
    python benchmarks/loss_precision.py --timing    # MMD's cost: the matmul form (before) vs now
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch
import torch.nn.functional as F
from tabulate import tabulate

from cmcl.losses import (
    ClassifierDiscrepancyLoss,
    CorrespondenceLoss,
    CrossDomainContrastiveLoss,
    CrossModalContrastiveLoss,
    DomainClassificationLoss,
    MMDLoss,
    PseudoLabelLoss,
)
from cmcl.losses.mmd import BANDWIDTHS

BATCH = 16
BANK = 2495  # D2's training segments, the largest source bank of the EPIC pairs but one
CLASSES = 8


def i3d_like(n: int, generator: torch.Generator, shift: float = 0.0) -> torch.Tensor:
    """Non-negative 1024-d rows with norms between about 10 and 50 (post-ReLU pooled I3D)."""
    x = torch.relu(torch.randn(n, 1024, generator=generator) + shift)
    return x / x.norm(dim=1, keepdim=True) * torch.empty(n, 1).uniform_(10, 50, generator=generator)


def cases(generator: torch.Generator) -> dict:
    """name -> (module, inputs, keyword inputs); the first input is the one differentiated."""
    unit = lambda n, d: F.normalize(torch.randn(n, d, generator=generator), dim=1)  # noqa: E731
    labels = torch.randint(0, CLASSES, (BANK,), generator=generator)
    pseudo = torch.randint(0, CLASSES, (BATCH,), generator=generator)
    confident = torch.rand(BATCH, generator=generator) > 0.3
    positive = torch.randint(0, BANK, (BATCH,), generator=generator)
    logits = lambda c: torch.randn(BATCH, c, generator=generator) * 3  # noqa: E731
    return {
        "cross_modal": (
            CrossModalContrastiveLoss(tau=0.1),
            (unit(BATCH, 128), unit(BANK, 128), positive),
            {},
        ),
        "cross_domain": (
            CrossDomainContrastiveLoss(tau=0.1),
            (unit(BATCH, 1024), unit(BANK, 1024), labels, pseudo, confident),
            {},
        ),
        "cross_domain_batch": (
            CrossDomainContrastiveLoss(tau=0.1, form="batch"),
            (unit(BATCH, 1024), unit(BANK, 1024), labels, pseudo, confident),
            {},
        ),
        "mmd": (MMDLoss(), (i3d_like(BATCH, generator), i3d_like(BATCH, generator, shift=0.3)), {}),
        "mcd": (ClassifierDiscrepancyLoss(), (logits(CLASSES), logits(CLASSES)), {}),
        "domain_adv": (DomainClassificationLoss(), (logits(2), logits(2)), {}),
        "correspondence": (
            CorrespondenceLoss(),
            (logits(2), torch.randint(0, 2, (BATCH,), generator=generator)),
            {},
        ),
        "pseudo_label": (PseudoLabelLoss(threshold=0.5), (logits(CLASSES),), {}),
    }


def value_and_grad(module, inputs, kwargs, dtype, autocast: bool):
    first = inputs[0].detach().clone().to(dtype).requires_grad_(True)
    rest = [x.to(dtype) if x.is_floating_point() else x for x in inputs[1:]]
    context = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with context:
        value = module(first, *rest, **kwargs)
    value.backward()
    return value, first.grad


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def matmul_form_mmd(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The MMD as computed before the exact form: distances as |x|^2 + |y|^2 - 2 x.y."""
    widths = torch.tensor(BANDWIDTHS)

    def kernel_mean(x, y):
        sq = (x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1) - 2.0 * x @ y.t()).clamp_min(0)
        return torch.exp(-sq.unsqueeze(-1) / widths).sum(-1).mean()

    return (
        kernel_mean(source, source) + kernel_mean(target, target) - 2 * kernel_mean(source, target)
    )


def mmd_timing(repeats: int = 500) -> None:
    """Forward + backward of one MMD term (16 + 16 rows, 1024-d), both forms interleaved."""
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    source, target = i3d_like(16, generator), i3d_like(16, generator, shift=0.3)
    forms = {"matmul form (before)": matmul_form_mmd, "MMDLoss (cdist, exact)": MMDLoss()}
    times: dict[str, list[float]] = {name: [] for name in forms}
    for _ in range(repeats):
        for name, loss in forms.items():
            xs, xt = source.clone().requires_grad_(True), target.clone().requires_grad_(True)
            start = time.process_time()
            loss(xs, xt).backward()
            times[name].append(time.process_time() - start)
    base = statistics.median(times["matmul form (before)"])
    rows = [
        [name, f"{statistics.median(t) * 1e3:.3f}", f"{statistics.median(t) / base:.2f}x"]
        for name, t in times.items()
    ]
    print(f"MMD forward+backward, 16+16 rows x 1024, one thread, median of {repeats}")
    print(tabulate(rows, headers=["form", "CPU ms", "vs before"], tablefmt="github"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="draws per loss; the worst is shown")
    parser.add_argument("--timing", action="store_true", help="time the MMD forms instead")
    args = parser.parse_args()
    if args.timing:
        mmd_timing()
        return
    rows = []
    worst: dict[tuple[str, str], list] = {}
    for seed in range(args.repeats):
        for name, (module, inputs, kwargs) in cases(torch.Generator().manual_seed(seed)).items():
            ref_value, ref_grad = value_and_grad(module, inputs, kwargs, torch.float64, False)
            for context, autocast in (("float32", False), ("bf16 autocast", True)):
                value, grad = value_and_grad(module, inputs, kwargs, torch.float32, autocast)
                old = worst.get((name, context), [None, 0.0, 0.0])
                worst[(name, context)] = [
                    value.dtype,
                    max(old[1], relative(value, ref_value)),
                    max(old[2], relative(grad, ref_grad)),
                ]
    for (name, context), (dtype, value_error, grad_error) in worst.items():
        rows.append(
            [
                name,
                context,
                str(dtype).replace("torch.", ""),
                f"{value_error:.1e}",
                f"{grad_error:.1e}",
            ]
        )
    print(
        tabulate(
            rows,
            headers=["loss", "context", "output dtype", "value rel. error", "grad rel. error"],
            tablefmt="github",
        )
    )


if __name__ == "__main__":
    main()
