"""Per-step cost of the feature-mode trainer, per method, relative to source_only.

Batch 16 source + 16 target, 1024-d window features, and memory banks the size
of the real EPIC splits (source D3: 3897 rows, target D1: 1543). Features are
random (the speed does not depend on their values). Only optimiser steps are
timed: the bank initialisation pass and the evaluations are excluded. The cost
is the median CPU time of a step (process time, all threads), which other
processes on a shared machine barely change; wall-clock steps/s is printed
beside it. With ``--threads 1`` the CPU time is pure compute (no idle spinning
of a thread pool).

    python benchmarks/trainer_throughput.py [--steps 300] [--methods source_only,cmco]
    python benchmarks/trainer_throughput.py --methods all --repeats 2
    python benchmarks/trainer_throughput.py --profile cmco --threads 1   # where a step's time goes
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cmcl.config import RunConfig
from cmcl.data.benchmarks import EPIC_CLASSES
from cmcl.data.feature_store import write_meta, write_split
from cmcl.engine import Reporter, fit
from cmcl.methods import METHODS

SIZES = {"D1": (1543, 435), "D2": (2495, 750), "D3": (3897, 974)}


def write_random_store(root: Path, *, dim: int = 1024, windows: int = 5) -> Path:
    rng = np.random.default_rng(0)
    for domain, (train, test) in SIZES.items():
        for split, n in (("train", train), ("test", test)):
            labels = rng.integers(0, len(EPIC_CLASSES), size=n)
            shape = (n, windows, dim)
            write_split(
                root,
                domain=domain,
                split=split,
                segment_ids=[str(i) for i in range(n)],
                labels=labels,
                rgb=rng.random(shape, dtype=np.float32),
                flow=rng.random(shape, dtype=np.float32),
            )
    write_meta(root, {"benchmark": "epic", "class_names": list(EPIC_CLASSES), "feature_dim": dim})
    return root


class StepTimer(Reporter):
    """Wall-clock and process CPU time at the end of every optimiser step."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def on_step(self, *, global_step: int) -> None:
        self.wall.append(time.perf_counter())
        self.cpu.append(time.process_time())


class StepProfiler(Reporter):
    """torch.profiler over optimiser steps ``first`` to ``last``; prints the top operators."""

    def __init__(self, first: int = 20, last: int = 70, rows: int = 15) -> None:
        self.first, self.last, self.rows = first, last, rows
        self.seen = 0
        self.profile: torch.profiler.profile | None = None

    def on_step(self, *, global_step: int) -> None:
        self.seen += 1
        if self.seen == self.first:
            self.profile = torch.profiler.profile(
                activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True
            )
            self.profile.__enter__()
        elif self.seen == self.last and self.profile is not None:
            self.profile.__exit__(None, None, None)
            steps = self.last - self.first
            table = self.profile.key_averages(group_by_input_shape=True).table(
                sort_by="self_cpu_time_total", row_limit=self.rows, max_name_column_width=28
            )
            print(f"{steps} steps profiled (self CPU time totals over them):\n{table}")


class Rate(NamedTuple):
    steps_per_s: float
    """Wall clock: depends on what else runs on the machine."""
    cpu_ms: float
    """CPU milliseconds per step (all threads of this process): robust to other load."""


def run_config(store: Path, method: str, steps: int, pair: str) -> RunConfig:
    return RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": pair,
            "data.features": str(store),
            "method": method,
            "train.warmup_steps": 0,
            "train.steps": steps,
            "train.eval_every": steps,
            "train.checkpoint_every": steps,
            "train.dump_features": 0,
        }
    )


def measure(store: Path, method: str, steps: int, pair: str) -> Rate:
    timer = StepTimer()
    fit(run_config(store, method, steps, pair), timer)
    # skip the first steps (allocator warm-up); medians ignore the odd descheduled step
    wall = statistics.median(np.diff(timer.wall[10:]).tolist())
    cpu = statistics.median(np.diff(timer.cpu[10:]).tolist())
    return Rate(steps_per_s=1.0 / wall, cpu_ms=1000.0 * cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pair", default="D3-D1")
    parser.add_argument(
        "--methods",
        default="source_only,cmco_modality,cmco_domain,cmco,supervised_target",
        help="comma-separated method names, or 'all' for every registered method",
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="measure every method this many times (interleaved)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (1: CPU time is pure compute)"
    )
    parser.add_argument(
        "--profile", metavar="METHOD", help="profile steps 20-70 of METHOD and print the top ops"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.profile:
        with tempfile.TemporaryDirectory() as tmp:
            store = write_random_store(Path(tmp))
            fit(run_config(store, args.profile, 80, args.pair), StepProfiler())
        return
    methods = list(METHODS) if args.methods == "all" else args.methods.split(",")
    if "source_only" not in methods:
        methods.insert(0, "source_only")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, pair {args.pair}")
    with tempfile.TemporaryDirectory() as tmp:
        store = write_random_store(Path(tmp))
        runs: dict[str, list[Rate]] = {m: [] for m in methods}
        # Repeats go round the whole list so that a change of machine load
        # part-way through affects every method alike.
        for repeat in range(args.repeats):
            for m in methods:
                rate = measure(store, m, args.steps, args.pair)
                runs[m].append(rate)
                print(
                    f"  run {repeat + 1} {m}: {rate.steps_per_s:.1f} steps/s, "
                    f"{rate.cpu_ms:.1f} CPU ms/step",
                    flush=True,
                )
    base = statistics.median(r.cpu_ms for r in runs["source_only"])
    runs_header = " ".join(f"{f'cpu ms {i + 1}':>9}" for i in range(args.repeats))
    print(
        f"{'method':<18} {runs_header} {'median':>8} {'cost vs source_only':>20} "
        f"{'wall steps/s':>13}"
    )
    for method, rates in runs.items():
        cpu = statistics.median(r.cpu_ms for r in rates)
        wall = statistics.median(r.steps_per_s for r in rates)
        cells = " ".join(f"{r.cpu_ms:9.1f}" for r in rates)
        print(f"{method:<18} {cells} {cpu:8.1f} {f'{cpu / base:.2f}x':>20} {wall:13.1f}")


if __name__ == "__main__":
    main()
