"""A simulated cluster for the study driver: runs take ticks, slots are counted, nodes die.

Each :meth:`SimExecutor.poll` is one tick of simulated time. A run makes one
evaluation per tick along its config's evaluation schedule, with values that
depend on its settings (so that searchers and ASHA have something to rank),
and finishes with the engine's summary. Failures are injected per run:
``{"<run_id>": ("node" | "code", evaluation_index)}`` (each entry used once).
The executor records how many slots were busy at every tick.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from cmcl.engine.reporting import summarise
from cmcl.study.driver import Capacity
from cmcl.study.execute import RunJob


def accuracy(job: RunJob, index: int) -> float:
    """A deterministic learning curve; higher lambda and a later step score higher."""
    lam = job.config.method.lam
    return 40.0 + 10.0 * lam + 0.1 * index + 0.01 * job.seed


@dataclass
class _Running:
    job: RunJob
    schedule: list[tuple[str, int]]
    done: int = 0
    """Evaluations made."""
    began: bool = False
    stopping: bool = False
    rows: list[dict[str, Any]] = field(default_factory=list)


class SimExecutor:
    def __init__(self, slots: int, *, failures: dict[str, tuple[str, int]] | None = None):
        self.slots = slots
        self.failures = dict(failures or {})
        self.queue: list[RunJob] = []
        self.running: dict[str, _Running] = {}
        self.busy: list[int] = []
        """Busy slots at each tick."""
        self.waiting: list[int] = []
        """Runs submitted but not started, at each tick."""
        self.started: list[str] = []
        self.start_ticks: list[int] = []
        self.tick = 0
        self.stopped: list[str] = []
        self.checkpoints: dict[str, int] = {}
        """run -> evaluations done at its newest checkpoint (every evaluation is one here)."""

    def capacity(self) -> Capacity:
        return Capacity(runs=self.slots, cluster=f"{self.slots} CPU on 1 node(s)", per_run="1 CPU")

    def submit(self, job: RunJob) -> None:
        self.queue.append(job)

    def stop(self, run: str) -> None:
        if run in self.running:
            self.running[run].stopping = True
        else:
            self.queue = [j for j in self.queue if j.run_id != run]
            self.stopped.append(run)

    def shutdown(self) -> None:
        self.queue.clear()
        self.running.clear()

    def clock(self) -> float:
        return float(self.tick)

    def _row(self, job: RunJob, index: int, stage: str, step: int, warmup: int) -> dict[str, Any]:
        value = accuracy(job, index)
        return {
            "stage": stage,
            "step": step,
            "global_step": step + (warmup if stage == "adapt" else 0),
            "lr": 0.01,
            "target_acc": value,
            "target_acc_rgb": value - 1,
            "target_acc_flow": value - 2,
            "source_val_acc": math.nan,
            "target_entropy": 1.0 / value,
            "snd": value / 10,
            "loss_total": 1.0,
        }

    def poll(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        events: list[tuple[str, dict[str, Any]]] = []
        while self.queue and len(self.running) < self.slots:
            job = self.queue.pop(0)
            self.running[job.run_id] = _Running(job, job.config.train.evaluation_schedule())
        self.busy.append(len(self.running))
        self.waiting.append(len(self.queue))
        self.tick += 1
        for run_id, state in list(self.running.items()):
            job = state.job
            if not state.began:
                state.began = True
                self.started.append(run_id)
                self.start_ticks.append(self.tick - 1)
                resume = self.checkpoints.get(run_id, 0)
                events.append((run_id, {"kind": "began"}))
                events.append((run_id, {"kind": "started", "done_steps": resume, "total_steps": 1}))
                state.done = resume
                for index in range(1, resume + 1):
                    stage, step = state.schedule[index - 1]
                    row = self._row(job, index, stage, step, job.config.train.warmup_steps)
                    state.rows.append(row)
                    events.append((run_id, {"kind": "evaluation", "index": index, "row": row}))
                continue
            if state.stopping:
                del self.running[run_id]
                self.stopped.append(run_id)
                events.append((run_id, {"kind": "cancelled"}))
                continue
            state.done += 1
            failure = self.failures.get(run_id)
            if failure is not None and failure[1] == state.done:
                del self.failures[run_id]
                del self.running[run_id]
                self.checkpoints[run_id] = state.done - 1
                events.append(
                    (
                        run_id,
                        {
                            "kind": "failed",
                            "cause": failure[0],
                            "reason": f"Sim{failure[0].title()}Error: injected",
                        },
                    )
                )
                continue
            stage, step = state.schedule[state.done - 1]
            row = self._row(job, state.done, stage, step, job.config.train.warmup_steps)
            state.rows.append(row)
            self.checkpoints[run_id] = state.done
            events.append((run_id, {"kind": "evaluation", "index": state.done, "row": row}))
            if state.done == len(state.schedule):
                del self.running[run_id]
                summary = summarise(state.rows, last_k=job.config.train.eval_last_k)
                events.append(
                    (
                        run_id,
                        {
                            "kind": "finished",
                            "summary": summary,
                            "history": list(state.rows),
                            "has_features": False,
                            "has_weights": False,
                            "extra": {},
                        },
                    )
                )
        return events
