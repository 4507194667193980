"""Steps per second of the engine in-process vs under Ray Train with 1 and 2 workers.

cmco on a random feature store with the real EPIC sizes (benchmarks/
trainer_throughput.py), global batch 16 source + 16 target, evaluation every
``--eval-every`` steps (the default schedule's 50), no checkpoint before the
end. Three figures per setting, from rank 0's per-step timestamps:

* step rate: 1 / median wall-clock gap between optimiser steps;
* run rate: steps / wall time from the first to the last step, evaluations
  and ``ray.train.report`` calls included;
* CPU ms/step: median CPU time (this process, all its threads) between steps.
  On a shared machine the wall-clock figures depend on what else runs; the
  CPU time much less, so it is the figure to compare across runs.

Settings: the engine in this process with torch's default threads and with 1
thread (a Ray worker with 1 CPU runs torch on 1 thread), then Ray Train with 1
worker (no DDP: the engine alone inside a Train worker) and with 2 workers
(DDP over gloo, each worker half the global batch). Ray runs use the Train V2
controller's default 2 s poll unless ``--health-check-interval`` is given.

    python benchmarks/ray_train_scaling.py [--steps 300] [--eval-every 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from trainer_throughput import write_random_store

from cmcl.config import RunConfig
from cmcl.engine import Reporter, fit

SKIP = 10  # first steps: allocator and DDP bucket warm-up


def _config(store: Path, steps: int, eval_every: int) -> RunConfig:
    return RunConfig.from_overrides(
        {
            "benchmark": "epic",
            "pair": "D3-D1",
            "data.features": str(store),
            "method": "cmco",
            "train.warmup_steps": 0,
            "train.steps": steps,
            "train.eval_every": eval_every,
            "train.checkpoint_every": steps,
            "train.dump_features": 0,
            "train.device": "cpu",
        }
    )


class Stamps(Reporter):
    """(wall, CPU) time after every optimiser step."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_step(self, *, global_step: int) -> None:
        self.times.append((time.perf_counter(), time.process_time()))


def _rates(times: list[tuple[float, float]]) -> tuple[float, float, float]:
    wall, cpu = (np.asarray([t[i] for t in times[SKIP:]]) for i in (0, 1))
    step = 1.0 / statistics.median(np.diff(wall).tolist())
    run = (len(wall) - 1) / (wall[-1] - wall[0])
    return step, run, 1000.0 * statistics.median(np.diff(cpu).tolist())


def in_process(config: RunConfig, threads: int) -> tuple[float, float, float]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        timer = Stamps()
        fit(config, timer)
    finally:
        torch.set_num_threads(before)
    return _rates(timer.times)


def timed_loop(payload: dict) -> dict | None:
    """``train_worker`` that also returns rank 0's step timestamps (pickled by value)."""
    from cmcl.ray import train as adapter

    times: list[tuple[float, float]] = []
    original = adapter.RayTrainReporter.on_step

    def on_step(self, *, global_step: int) -> None:
        original(self, global_step=global_step)
        times.append((time.perf_counter(), time.process_time()))

    adapter.RayTrainReporter.on_step = on_step
    summary = adapter.train_worker(payload)
    if summary is not None:
        summary["step_times"] = times
    return summary


def under_ray(config: RunConfig, workers: int, storage: Path) -> tuple[float, float, float, float]:
    from cmcl.ray.train import fit_distributed

    started = time.perf_counter()
    summary = fit_distributed(
        config, workers=workers, storage=str(storage), name=f"w{workers}", train_loop=timed_loop
    )
    total = time.perf_counter() - started
    return (*_rates(summary["step_times"]), total)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument(
        "--health-check-interval",
        type=float,
        default=None,
        help="RAY_TRAIN_HEALTH_CHECK_INTERVAL_S for the controller (default: Ray's 2 s)",
    )
    args = parser.parse_args()
    import ray

    if args.health_check_interval is not None:
        os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = str(args.health_check_interval)
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
    print(
        f"torch {torch.__version__}, ray {ray.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}, steps {args.steps}, eval every "
        f"{args.eval_every}, controller poll "
        f"{os.environ.get('RAY_TRAIN_HEALTH_CHECK_INTERVAL_S', '2 (default)')} s"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = write_random_store(Path(tmp) / "store")
        config = _config(store, args.steps, args.eval_every)
        default_threads = torch.get_num_threads()
        rows.append(
            (f"in-process, {default_threads} threads", *in_process(config, default_threads), None)
        )
        rows.append(("in-process, 1 thread", *in_process(config, 1), None))
        ray.init(
            address="local",
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            logging_level="WARNING",
        )
        try:
            for workers in (1, 2):
                name = f"Ray Train, {workers} worker{'s' * (workers > 1)}"
                rows.append((name, *under_ray(config, workers, Path(tmp) / "storage")))
        finally:
            ray.shutdown()
    base = rows[1]
    header = f"{'setting':<26} {'step rate':>10} {'run rate':>9} {'CPU ms/step':>12} {'fit() s':>8}"
    print(header)
    for name, step, run, cpu, total in rows:
        shown = "-" if total is None else f"{total:.1f}"
        print(f"{name:<26} {step:10.1f} {run:9.1f} {cpu:12.1f} {shown:>8}")
    one, two = rows[2], rows[3]
    print(
        f"1 -> 2 Ray workers: step rate x{two[1] / one[1]:.2f}, run rate x{two[2] / one[2]:.2f}, "
        f"CPU per step per worker x{two[3] / one[3]:.2f} (ideal 0.50)"
    )
    print(
        f"Ray 1 worker vs in-process 1 thread: step rate x{one[1] / base[1]:.2f}, run rate "
        f"x{one[2] / base[2]:.2f}, CPU per step {one[3] - base[3]:+.1f} ms (x{one[3] / base[3]:.2f})"
    )


if __name__ == "__main__":
    main()
