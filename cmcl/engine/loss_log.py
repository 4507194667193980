"""Loss values kept on the device between reads, so that a training step never waits for it.

Reading a loss value on the host (``.item()``, ``.tolist()``, a finiteness
check in Python) makes the host wait until the device has finished every
queued kernel; for a feature-mode step, well under a millisecond of GPU work,
that wait would be the step. The trainer instead adds each step's loss terms
into float64 sums on the device, records on the device the first step at
which each term was not finite, and reads everything back in one transfer
every ``train.log_every`` steps and before each evaluation. A non-finite loss
still ends the run, naming the term, its value and the exact step.
"""

from __future__ import annotations

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


class LossAccumulator:
    """Sums of named scalar losses on their device; :meth:`read` is the only host read."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.names: tuple[str, ...] = ()
        self.stage = ""
        self.steps = 0
        self.sums: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None
        self.bad_value: torch.Tensor | None = None

    def add(self, losses: dict[str, torch.Tensor], *, stage: str, step: int) -> LossReading | None:
        """Add one step's values (``step`` counted from 1); the terms must not change between
        reads, so a change of names or stage first reads what was pending and returns it."""
        names = tuple(losses)
        earlier = None
        if self.steps and (names != self.names or stage != self.stage):
            earlier = self.read()
        values = torch.stack([v.detach() for v in losses.values()]).double()
        if self.sums is None:
            self.names, self.stage = names, stage
            self.sums = torch.zeros_like(values)
            self.first_bad = torch.full_like(values, -1.0)
            self.bad_value = torch.zeros_like(values)
        self.sums = self.sums + values
        fresh = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad = torch.where(fresh, float(step), self.first_bad)
        self.bad_value = torch.where(fresh, values, self.bad_value)
        self.steps += 1
        return earlier

    def read(self) -> LossReading | None:
        """Everything pending, across workers (a collective: every worker calls it at the
        same steps); None if nothing is pending. Resets the sums."""
        if not self.steps:
            return None
        assert self.sums is not None and self.first_bad is not None and self.bad_value is not None
        local = torch.cat([self.sums, self.first_bad, self.bad_value]).unsqueeze(0)
        rows = dist.all_gather_cat(local).tolist()
        count = len(self.names)
        sums = {name: sum(row[i] for row in rows) / len(rows) for i, name in enumerate(self.names)}
        bad = [
            (row[count + i], i, row[2 * count + i])
            for row in rows
            for i in range(count)
            if row[count + i] >= 0
        ]
        non_finite = None
        if bad:
            step, term, value = min(bad)
            non_finite = (self.names[term], value, self.stage, int(step))
        reading = LossReading(sums=sums, steps=self.steps, non_finite=non_finite)
        self._clear()
        return reading
