"""Reporter.on_losses: the loss means at each host read, on one global step axis."""

from __future__ import annotations

import pytest
from conftest import tiny_overrides

from cmcl.config import RunConfig
from cmcl.engine import Reporter, fit


class _Losses(Reporter):
    def __init__(self) -> None:
        self.reads: list[tuple[int, dict[str, float]]] = []
        self.evaluations: list[dict] = []

    def on_losses(self, values, *, global_step: int, is_chief: bool) -> None:
        assert is_chief
        self.reads.append((global_step, dict(values)))

    def on_evaluation(self, metrics, *, checkpoint, is_chief: bool) -> None:
        self.evaluations.append(metrics)


def test_reads_come_at_log_every_and_before_each_evaluation(tiny_store):
    # 6 warm-up + 8 adaptation steps; evaluations every 4 (and at each stage's end).
    losses = _Losses()
    overrides = tiny_overrides(
        tiny_store, method="cmco", **{"train.log_every": 3, "train.eval_every": 4}
    )
    fit(RunConfig.from_overrides(overrides), losses)
    steps = [step for step, _ in losses.reads]
    # warm-up: 3, 4 (eval), 6 (log_every and the stage's end); adapt: 9, 10 (eval), 12, 14.
    assert steps == [3, 4, 6, 9, 10, 12, 14]
    assert steps == sorted(set(steps))
    assert set(losses.reads[0][1]) == {"total", "src_ce"}
    assert {"total", "mo_source", "do_rgb"} <= set(losses.reads[-1][1])


def test_one_read_per_evaluation_gives_the_evaluation_means(tiny_store):
    losses = _Losses()
    overrides = tiny_overrides(
        tiny_store, method="source_only", **{"train.log_every": 2, "train.eval_every": 2}
    )
    fit(RunConfig.from_overrides(overrides), losses)
    by_step = dict(losses.reads)
    for row in losses.evaluations:
        assert by_step[row["global_step"]]["total"] == pytest.approx(row["loss_total"])
