"""A training step reads nothing back from the device between logging steps.

On a GPU every read of a tensor's value on the host (``item``, ``tolist``, a
Python ``bool``/``int``/``float`` of a tensor, boolean-mask indexing, which
must count the mask, ``nonzero``) waits for the device's queue to drain. On
the CPU the same calls can be counted: these tests count them over the
training steps of every method (the bank initialisation pass, the loss reads
every ``train.log_every`` steps and the evaluations are where reads belong,
and are left out).
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import NonFiniteLossError, Reporter, fit
from cmcl.engine import trainer as trainer_module
from cmcl.engine.loss_log import LossAccumulator
from cmcl.methods import METHODS
from cmcl.methods.base import Method

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "numpy", "nonzero")


class ReadCounter:
    """Counts host reads of tensor values while ``counting`` is on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.counting = False
        self.reads: list[str] = []
        for name in READS:
            self._spy(monkeypatch, name)
        original_getitem = torch.Tensor.__getitem__

        def getitem(tensor, key):
            keys = key if isinstance(key, tuple) else (key,)
            if any(torch.is_tensor(k) and k.dtype == torch.bool for k in keys):
                self._seen("mask indexing")
            return original_getitem(tensor, key)

        monkeypatch.setattr(torch.Tensor, "__getitem__", getitem)

    def _spy(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        original = getattr(torch.Tensor, name)

        def spy(tensor, *args, **kwargs):
            self._seen(name)
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, spy)

    def _seen(self, name: str) -> None:
        if self.counting:
            import traceback

            where = traceback.extract_stack(limit=4)[0]
            self.reads.append(f"{name} at {where.filename}:{where.lineno}")

    @contextlib.contextmanager
    def paused(self):
        was, self.counting = self.counting, False
        try:
            yield
        finally:
            self.counting = was


def count_step_reads(monkeypatch, store, method: str, **extra) -> tuple[list[str], int]:
    """Reads made during training steps, and how many steps ran."""
    counter = ReadCounter(monkeypatch)
    steps = {"n": 0}
    Trainer = trainer_module._Trainer

    def paused(function):
        def wrapper(*args, **kwargs):
            with counter.paused():
                return function(*args, **kwargs)

        return wrapper

    original_run_stage = Trainer.run_stage

    def run_stage(self, *args, **kwargs):
        counter.counting = True
        try:
            return original_run_stage(self, *args, **kwargs)
        finally:
            counter.counting = False

    monkeypatch.setattr(Trainer, "run_stage", run_stage)
    # Where reads belong: the loss reads, evaluations (with checkpoints), the bank pass.
    monkeypatch.setattr(LossAccumulator, "read", paused(LossAccumulator.read))
    monkeypatch.setattr(Trainer, "_maybe_evaluate", paused(Trainer._maybe_evaluate))
    for cls in {*METHODS.values(), Method}:
        if "begin_adaptation" in vars(cls):
            monkeypatch.setattr(cls, "begin_adaptation", paused(vars(cls)["begin_adaptation"]))

    class Steps(Reporter):
        def on_step(self, *, global_step: int) -> None:
            steps["n"] += 1

    overrides = tiny_overrides(store, method=method, **extra)
    fit(RunConfig.from_overrides(overrides), Steps())
    return counter.reads, steps["n"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_training_steps_read_no_device_value_between_logging_steps(tiny_store, monkeypatch, method):
    # One logging read per stage end only: log_every above the step count, rare evaluations.
    reads, steps = count_step_reads(
        monkeypatch,
        tiny_store,
        method,
        T=0.01,
        **{"train.log_every": 1000, "train.eval_every": 1000, "train.checkpoint_every": 1000},
    )
    assert steps == 14  # 6 warm-up + 8 adaptation steps were counted
    assert reads == [], f"{method}: {len(reads)} reads, e.g. {reads[:5]}"


def test_random_banks_read_nothing_either(tiny_store, monkeypatch):
    reads, _ = count_step_reads(
        monkeypatch,
        tiny_store,
        "cmco",
        T=0.01,
        **{"method.bank_init": "random", "method.cross_domain_form": "batch"},
    )
    assert reads == []


@pytest.mark.parametrize("log_every", [1, 3, 50])
def test_a_non_finite_loss_is_caught_within_one_logging_interval(tiny_store, log_every):
    # An lr this large makes the weights, then the loss, overflow at warm-up step 2.
    reached = []

    class Steps(Reporter):
        def on_step(self, *, global_step: int) -> None:
            reached.append(global_step)

    config = tiny_overrides(
        tiny_store,
        method="source_only",
        **{
            "train.lr": 1e20,
            "train.log_every": log_every,
            "train.eval_every": 1000,
            "train.checkpoint_every": 1000,
        },
    )
    with pytest.raises(NonFiniteLossError, match=r"'total' is nan at warmup step 2 "):
        fit(RunConfig.from_overrides(config), Steps())
    # Found at the first read after step 2: in the step that is the next multiple of
    # log_every (before that step completes), or at the stage's end (warm-up has 6 steps).
    read_at = math.ceil(2 / log_every) * log_every
    assert max(reached) == (read_at - 1 if read_at <= 6 else 6)
