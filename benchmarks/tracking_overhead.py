"""CPU time per training step with experiment tracking on, against off, in one process.

A short feature-mode ``fit`` (the EPIC-like store of tune_overhead.py) runs
once per variant per round, the variants interleaved and their order rotated
each round: tracking off, TensorBoard (event files), MLflow (a local sqlite
store; a server adds network waits, which happen on the tracking thread), W&B
offline. Each step's CPU time is the process's (``time.process_time``: every
thread, so the tracking thread's work counts) between two ``on_step`` calls;
the figure is the median over every step of a variant's runs, beside the mean
(evaluations, loss reads and the tracker's calls included) and the wall time.
A first round, which pays the imports and the sqlite store's creation, is
not counted.

    PYTHONPATH=. python benchmarks/tracking_overhead.py [--rounds 5] [--log-every 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch
from tune_overhead import write_store  # benchmarks/: the same small EPIC-like store

from cmcl.config import RunConfig
from cmcl.engine import Reporter, fit
from cmcl.tracking import check_tracking, tracking_reporter
from cmcl.tracking.reporter import TrackingReporter

THREAD_CPU: dict[str, float] = {}
"""CPU seconds the tracking thread spent in each kind of call, over the counted runs."""


def _timed(kind: str, call):
    def timed(self, *args, **kwargs):
        start = time.thread_time()  # this thread's CPU only: the tracking thread's
        try:
            return call(self, *args, **kwargs)
        finally:
            THREAD_CPU[kind] = THREAD_CPU.get(kind, 0.0) + time.thread_time() - start

    return timed


for _kind in ("_open", "_flush", "_summary", "_close"):
    setattr(TrackingReporter, _kind, _timed(_kind, getattr(TrackingReporter, _kind)))


class StepClock(Reporter):
    """Process CPU time between consecutive steps."""

    def __init__(self) -> None:
        self.last = 0.0
        self.steps: list[float] = []

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        self.last = time.process_time()

    def on_step(self, *, global_step: int) -> None:
        now = time.process_time()
        self.steps.append(now - self.last)
        self.last = now


def available(names: list[str]) -> list[str]:
    found = []
    for name in names:
        try:
            check_tracking(name)
            found.append(name)
        except Exception as error:
            print(f"skipping {name}: {error}")
    return found


def one_run(variant: str, config: RunConfig, root: Path) -> tuple[list[float], float, float]:
    clock = StepClock()
    reporter: Reporter = clock
    if variant != "off":
        reporter = tracking_reporter(variant, config=config, run_dir=config.out, inner=clock)
    wall, cpu = time.perf_counter(), time.process_time()
    fit(config, reporter)
    return clock.steps, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--method", default="cmco")
    args = parser.parse_args()
    torch.set_num_threads(1)  # one training thread: the tracking thread has the other core
    root = Path(tempfile.mkdtemp(prefix="tracking-overhead-"))
    store = write_store(root / "store")
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
    os.environ.setdefault("MLFLOW_EXPERIMENT_NAME", "tracking-overhead")
    os.environ.update({"WANDB_MODE": "offline", "WANDB_DIR": str(root), "WANDB_SILENT": "true"})
    variants = ["off", *available(["tensorboard", "mlflow", "wandb"])]
    base = RunConfig.from_overrides(
        {
            "benchmark": "synthetic-epic",
            "pair": "D2-D1",
            "method": args.method,
            "data.features": str(store),
            "model.feature_dim": 64,
            "train.warmup_steps": 100,
            "train.steps": 200,
            "train.lr_step": 100,
            "train.eval_every": 50,
            "train.checkpoint_every": 100,
            "train.log_every": args.log_every,
            "train.dump_features": 0,
        }
    )
    steps: dict[str, list[float]] = {v: [] for v in variants}
    rounds: dict[str, list[float]] = {v: [] for v in variants}
    threads: dict[str, dict[str, list[float]]] = {}
    totals: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
    for round_ in range(args.rounds + 1):
        order = variants[round_ % len(variants) :] + variants[: round_ % len(variants)]
        for variant in order:
            config = base.replace({"out": str(root / f"{variant}-{round_}")})
            before = dict(THREAD_CPU)
            per_step, cpu, wall = one_run(variant, config, root)
            if round_ == 0:
                THREAD_CPU.clear()
                THREAD_CPU.update(before)
                continue  # imports, the sqlite store's creation, first-call warm-up
            for kind, seconds in THREAD_CPU.items():
                spent = seconds - before.get(kind, 0.0)
                threads.setdefault(variant, {}).setdefault(kind, []).append(spent)
            THREAD_CPU.clear()
            steps[variant].extend(per_step)
            rounds[variant].append(statistics.median(per_step))
            totals[variant].append((cpu, wall))
        print(f"round {round_} done", flush=True)
    n = base.train.warmup_steps + base.train.steps
    off = statistics.median(steps["off"])
    off_mean = statistics.mean(cpu for cpu, _ in totals["off"]) / n
    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.method}, {n} steps per run, log_every {args.log_every}, {args.rounds} rounds"
    )
    print(
        "| tracking | median CPU ms/step | ratio | per-round ratios (min-max) "
        "| mean CPU ms/step (all work) | ratio | wall s/run |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for variant in variants:
        median = statistics.median(steps[variant])
        mean = statistics.mean(cpu for cpu, _ in totals[variant]) / n
        wall = statistics.median(w for _, w in totals[variant])
        # Each round's median against the off run of the same round: the spread is the noise.
        ratios = [v / o for v, o in zip(rounds[variant], rounds["off"], strict=True)]
        print(
            f"| {variant} | {median * 1e3:.3f} | {median / off:.3f} | "
            f"{min(ratios):.3f}-{max(ratios):.3f} | {mean * 1e3:.3f} | "
            f"{mean / off_mean:.3f} | {wall:.2f} |"
        )

    print("\ntracking thread CPU per run (median ms): open | logging | summary | close")
    for variant, kinds in threads.items():
        cells = [
            statistics.median(kinds.get(k, [0.0])) * 1e3
            for k in ("_open", "_flush", "_summary", "_close")
        ]
        print(f"{variant}: " + " | ".join(f"{c:.1f}" for c in cells))


if __name__ == "__main__":
    main()
