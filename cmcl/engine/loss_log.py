"""Loss values kept on the device between reads, so that a training step never waits for it.

Reading a loss value on the host (``.item()``, ``.tolist()``, a finiteness
check in Python) makes the host wait until the device has finished every
queued kernel; for a feature-mode step, well under a millisecond of GPU work,
that wait would be the step. The trainer instead keeps each step's loss terms
on the device (one stacked row per step) and reads them back in one transfer
every ``train.log_every`` steps and before each evaluation; the float64 sums
and the first step at which each term was not finite are found then. A
non-finite loss still ends the run, naming the term, its value and the exact step.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from cmcl import dist


class LossReading(NamedTuple):
    """What the host learns at a read."""

    sums: dict[str, float]
    """Per term: the sum over the steps read of the mean over workers."""
    steps: int
    non_finite: tuple[str, float, str, int] | None
    """(term, value, stage, step) of the earliest non-finite value on any worker, else None."""
    stage: str = ""
    """The stage of the steps read."""
    last_step: int = 0
    """The last step read (counted from 1 within ``stage``)."""


_BLOCK = 256
"""Pending rows are stacked into one tensor every this many steps (few objects for a long
interval between reads)."""


class LossAccumulator:
    """Named scalar losses kept on their device; :meth:`read` is the only host read.

    Each step costs one operation, a stack of its values into a row; the sums
    (float64, added step by step in order, as a running device sum would be) and
    the search for the first non-finite value run on the host at the read.
    """

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.names: tuple[str, ...] = ()
        self.stage = ""
        self.steps = 0
        self.step_numbers: list[int] = []
        self.rows: list[torch.Tensor] = []
        self.blocks: list[torch.Tensor] = []

    def add(self, losses: dict[str, torch.Tensor], *, stage: str, step: int) -> LossReading | None:
        """Add one step's values (``step`` counted from 1); the terms must not change between
        reads, so a change of names or stage first reads what was pending and returns it."""
        names = tuple(losses)
        earlier = None
        if self.steps and (names != self.names or stage != self.stage):
            earlier = self.read()
        if not self.steps:
            self.names, self.stage = names, stage
        with torch.no_grad():  # a row without a graph: nothing of the step is kept alive
            self.rows.append(torch.stack(list(losses.values())))
            if len(self.rows) == _BLOCK:
                self.blocks.append(torch.stack(self.rows))
                self.rows = []
        self.step_numbers.append(step)
        self.steps += 1
        return earlier

    def read(self) -> LossReading | None:
        """Everything pending, across workers (a collective: every worker calls it at the
        same steps); None if nothing is pending. Resets the sums."""
        if not self.steps:
            return None
        pending = self.blocks + ([torch.stack(self.rows)] if self.rows else [])
        local = torch.cat(pending).double().flatten().unsqueeze(0)
        workers = dist.all_gather_cat(local).tolist()
        count = len(self.names)
        totals, bad = [], []
        for values in workers:
            sums = [0.0] * count
            seen = [False] * count
            for row, step in enumerate(self.step_numbers):
                for i in range(count):
                    value = values[row * count + i]
                    sums[i] += value
                    if not seen[i] and not math.isfinite(value):
                        seen[i] = True
                        bad.append((float(step), i, value))
            totals.append(sums)
        sums = {
            name: sum(row[i] for row in totals) / len(totals) for i, name in enumerate(self.names)
        }
        non_finite = None
        if bad:
            step, term, value = min(bad)
            non_finite = (self.names[term], value, self.stage, int(step))
        reading = LossReading(
            sums=sums,
            steps=self.steps,
            non_finite=non_finite,
            stage=self.stage,
            last_step=self.step_numbers[-1],
        )
        self._clear()
        return reading
