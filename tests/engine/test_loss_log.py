"""LossAccumulator: one stacked row per step on the device, sums and non-finite search at the read."""

from __future__ import annotations

import math

import torch

from cmcl.engine import loss_log
from cmcl.engine.loss_log import LossAccumulator


def step_values(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return {"total": torch.rand((), generator=gen) * 30, "ce": torch.rand((), generator=gen) * 1e-6}


def test_sums_are_float64_running_sums_in_step_order_bit_for_bit():
    log = LossAccumulator()
    steps = loss_log._BLOCK + 7  # more than one stacked block
    running = torch.zeros(2, dtype=torch.float64)
    for step in range(1, steps + 1):
        values = step_values(step)
        assert log.add(values, stage="adapt", step=step) is None
        running = running + torch.stack(list(values.values())).double()
    reading = log.read()
    assert reading.steps == steps and reading.non_finite is None
    assert reading.sums == dict(zip(("total", "ce"), running.tolist(), strict=True))
    assert log.read() is None


def test_the_earliest_non_finite_value_is_named_with_its_step():
    log = LossAccumulator()
    for step in range(1, 6):
        values = step_values(step)
        if step == 3:
            values["ce"] = torch.tensor(float("inf"))
        if step >= 4:
            values["total"] = torch.tensor(float("nan"))
        log.add(values, stage="warmup", step=step)
    term, value, stage, step = log.read().non_finite
    assert (term, value, stage, step) == ("ce", math.inf, "warmup", 3)


def test_a_change_of_terms_first_reads_what_was_pending():
    log = LossAccumulator()
    log.add(step_values(1), stage="warmup", step=1)
    earlier = log.add({"total": torch.tensor(2.0)}, stage="adapt", step=1)
    assert earlier is not None and earlier.steps == 1 and set(earlier.sums) == {"total", "ce"}
    assert log.read().sums == {"total": 2.0}


def test_rows_keep_no_graph():
    x = torch.ones(3, requires_grad=True)
    log = LossAccumulator()
    log.add({"total": (x * 2).sum()}, stage="adapt", step=1)
    assert not log.rows[0].requires_grad and log.rows[0].grad_fn is None
