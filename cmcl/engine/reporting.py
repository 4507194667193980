"""Reporters (where progress and metrics go) and the run directory's files."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl.common import atomic_write_json


class Reporter:
    """Receives progress from :func:`cmcl.engine.fit`; every hook is optional.

    The Ray adapter subclasses this to call ``ray.train.report``; the CLI uses
    :class:`ConsoleReporter`. Hooks run on every worker; ``is_chief`` tells
    rank 0.
    """

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        """Before the first step (``done_steps`` > 0 when resuming)."""

    def on_step(self, *, global_step: int) -> None:
        """After every optimiser step."""

    def on_losses(self, values: dict[str, float], *, global_step: int, is_chief: bool) -> None:
        """At every read of the loss values on the host (every ``train.log_every`` steps and
        before each evaluation): each term's mean over the steps read, the last of which is
        ``global_step``. Values the trainer already holds: no extra read from the device."""

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        """After every evaluation, with the checkpoint written at that step (if any)."""

    def on_end(self, summary: dict[str, Any], *, is_chief: bool) -> None:
        """After the last step."""


class ConsoleReporter(Reporter):
    """A progress bar on stderr with the latest accuracy; one line per stage end."""

    def __init__(self, *, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.bar = None

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        if not is_chief:
            return
        from tqdm import tqdm

        self.bar = tqdm(
            total=total_steps,
            initial=done_steps,
            unit="step",
            file=self.stream,
            mininterval=1.0,
            dynamic_ncols=True,
        )

    def on_step(self, *, global_step: int) -> None:
        if self.bar is not None:
            self.bar.update(global_step - self.bar.n)

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        if self.bar is None:
            return
        self.bar.set_postfix_str(
            f"{metrics['stage']} acc {metrics['target_acc']:.1f} "
            f"(rgb {metrics['target_acc_rgb']:.1f} flow {metrics['target_acc_flow']:.1f}) "
            f"loss {metrics.get('loss_total', math.nan):.3f}",
            refresh=False,
        )

    def on_end(self, summary: dict[str, Any], *, is_chief: bool) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically (cmcl.common)."""
    atomic_write_json(path, data)


FAILURE_FILE = "failure.json"
"""In a run directory whose run ended on an error that repeats if run again (a NaN)."""


def write_failure(run_dir: Path, error: BaseException) -> Path:
    """Record why the run failed beside its other files (removed when it later finishes)."""
    path = run_dir / FAILURE_FILE
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(path, {"error": type(error).__name__, "message": str(error)})
    return path


def write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite the per-evaluation table atomically."""
    tmp = path.with_name(path.name + ".tmp")
    pd.DataFrame(history).to_parquet(tmp, index=False)
    tmp.replace(path)


def summarise(history: list[dict[str, Any]], *, last_k: int) -> dict[str, Any]:
    """The reported numbers: mean of the last ``last_k`` adaptation evaluations (SPEC section 7).

    Also the best and the final evaluation, and the unsupervised criteria
    averaged the same way.
    """
    adapt = [row for row in history if row["stage"] == "adapt"] or history
    if not adapt:
        return {"rule": f"last{last_k}", "eval_last_k": last_k, "evaluations": 0}
    tail = adapt[-last_k:]

    def mean(key: str) -> float:
        values = [row[key] for row in tail if not _isnan(row.get(key))]
        return sum(values) / len(values) if values else math.nan

    def std(key: str) -> float:
        values = [row[key] for row in tail if not _isnan(row.get(key))]
        if len(values) < 2:
            return 0.0 if values else math.nan
        m = sum(values) / len(values)
        return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))

    best = max(adapt, key=lambda row: row["target_acc"])
    summary: dict[str, Any] = {
        "rule": f"last{last_k}",
        "eval_last_k": last_k,
        "evaluations": len(tail),
        "target_acc_std": std("target_acc"),
        "best": {"target_acc": best["target_acc"], "step": best["step"], "stage": best["stage"]},
        "final": {"target_acc": adapt[-1]["target_acc"], "step": adapt[-1]["step"]},
    }
    for key in (
        "target_acc",
        "target_acc_rgb",
        "target_acc_flow",
        "target_mean_class_acc",
        "pl_acc",
        "pl_coverage",
        "source_val_acc",
        "target_entropy",
        "snd",
    ):
        summary[key] = mean(key)
    return summary


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))
