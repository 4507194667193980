"""Calibrate the synthetic benchmarks: source-only and supervised-target accuracy per pair.

Trains the standard SPEC model (feature backbone per stream, dropout 0.5, sum
fusion, SGD lr 0.01 momentum 0.9 wd 1e-7, batch 16, the synthetic schedule of
cmcl/data/benchmarks.py) with ``source_only`` and ``supervised_target`` only,
and prints the reported target accuracy (mean of the last 9 evaluations) of
the fused prediction and of each stream.

By default the loop below replays ``cmcl.engine.fit`` step for step (same
seeding, model, optimiser, scheduler, batches) but evaluates only at the last
9 evaluation points, the only ones the reported number uses: training never
depends on evaluation, so the numbers are the engine's at a fraction of the
cost. ``--engine`` runs ``cmcl.engine.fit`` itself instead.

    python benchmarks/calibrate_synthetic.py --benchmark synthetic-epic --seeds 0 1 2
    python benchmarks/calibrate_synthetic.py --pairs D2-D1 --set background_prob=0.7

Calibration uses these two methods only, by design: the generator must not be
tuned with any adaptation method in sight.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from pathlib import Path

import torch

from cmcl.config import RunConfig
from cmcl.data.benchmarks import get_benchmark
from cmcl.data.feature_store import FeaturePairData
from cmcl.data.synthetic import SyntheticParams, synthetic_store
from cmcl.engine.evaluate import predict, target_metrics
from cmcl.engine.trainer import lr_factor, seed_everything
from cmcl.methods.base import ADAPT, WARMUP, StepContext
from cmcl.methods.registry import build_method
from cmcl.models.build import build_model

METHODS = ("source_only", "supervised_target")
KEYS = ("target_acc", "target_acc_rgb", "target_acc_flow")


def reported_steps(steps: int, *, eval_every: int, checkpoint_every: int, last_k: int) -> set[int]:
    """Adaptation steps of the engine's last ``last_k`` evaluations."""
    points = [s for s in range(1, steps + 1) if s % eval_every == 0 or s % checkpoint_every == 0]
    if steps not in points:
        points.append(steps)
    return set(points[-last_k:])


def replay_fit(config: RunConfig, data: FeaturePairData) -> dict[str, float]:
    """``cmcl.engine.fit`` for source_only / supervised_target, evaluating only what is reported."""
    if config.method.name not in METHODS:
        raise ValueError(f"calibration runs {METHODS} only, got {config.method.name!r}")
    t = config.train
    seed_everything(t.seed)
    method = build_method(
        model=build_model(config.model, data.info), config=config.method, info=data.info
    )
    optimizer = torch.optim.SGD(
        method.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda it: lr_factor(it, warmup=t.warmup_steps, lr_step=t.lr_step, gamma=t.lr_gamma),
    )
    wanted = reported_steps(
        t.steps, eval_every=t.eval_every, checkpoint_every=t.checkpoint_every, last_k=t.eval_last_k
    )
    history: list[dict[str, float]] = []
    stages = [(s, n) for s, n in ((WARMUP, t.warmup_steps), (ADAPT, t.steps)) if n > 0]
    for index, (stage, steps) in enumerate(stages):
        batches = {
            split: data.train_batches(
                split, batch_size=size, seed=t.seed, stage=index, start_step=0
            )
            for split, size in (("source_train", t.batch_source), ("target_train", t.batch_target))
        }
        needs_target = method.needs_target(stage)
        method.train()
        for step in range(steps):
            ctx = StepContext(stage=stage, step=step, stage_steps=steps)
            source = next(batches["source_train"])
            target = next(batches["target_train"]) if needs_target else None
            if target is not None and not method.uses_target_labels:
                target.pop("label")
            result = method(source, target, ctx)
            optimizer.zero_grad(set_to_none=True)
            result.total().backward()
            optimizer.step()
            scheduler.step()
            method.after_step(result, ctx)
            if stage == ADAPT and step + 1 in wanted:
                pred = predict(
                    method.model,
                    data,
                    "target_test",
                    batch_size=t.eval_batch,
                    device=torch.device("cpu"),
                    autocast=torch.autocast("cpu", enabled=False),
                )
                metrics = target_metrics(pred, threshold=1.0, num_classes=data.info.num_classes)
                history.append({k: metrics[k] for k in KEYS})
    return {k: statistics.fmean(row[k] for row in history) for k in KEYS}


def engine_fit(config: RunConfig, data: FeaturePairData) -> dict[str, float]:
    from cmcl.engine import fit

    summary = fit(config.replace({"train.dump_features": 0}), data=data).summary
    return {k: summary[k] for k in KEYS}


def parse_overrides(items: list[str]) -> dict[str, float | int]:
    defaults = SyntheticParams().to_dict()
    out: dict[str, float | int] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in defaults:
            raise SystemExit(f"--set {item}: unknown parameter; valid: {', '.join(defaults)}")
        out[key] = type(defaults[key])(value)
    return out


_DATA: dict[tuple[str, str], FeaturePairData] = {}


def run_task(task: dict) -> dict:
    """One (pair, method, seed) run in this process; the pair's data is loaded once."""
    torch.set_num_threads(task["threads"])
    bench = get_benchmark(task["benchmark"])
    key = (task["store"], task["pair"])
    if key not in _DATA:
        source, target = bench.check_pair(task["pair"])
        _DATA.clear()
        _DATA[key] = FeaturePairData(
            task["store"], benchmark=bench.name, source=source, target=target, synchronised=False
        )
    config = RunConfig.from_overrides(
        {
            "benchmark": bench.name,
            "pair": task["pair"],
            "method": task["method"],
            "seed": task["seed"],
            "data.features": task["store"],
            "train.device": "cpu",
            **task["run_set"],
        }
    )
    tic = time.perf_counter()
    accs = (engine_fit if task["engine"] else replay_fit)(config, _DATA[key])
    return {
        "pair": task["pair"],
        "method": task["method"],
        "seed": task["seed"],
        **accs,
        "wall_s": time.perf_counter() - tic,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="synthetic-epic")
    parser.add_argument("--pairs", nargs="*", help="default: every pair of the benchmark")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--seeds", nargs="*", type=int, default=[0], help="training seeds")
    parser.add_argument("--store-seed", type=int, default=0, help="generator seed")
    parser.add_argument("--set", nargs="*", default=[], help="generator overrides key=value")
    parser.add_argument(
        "--run-set", nargs="*", default=[], help="run config overrides key=value (checks only)"
    )
    parser.add_argument("--engine", action="store_true", help="run cmcl.engine.fit itself")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per run (1 is fastest on CPU)"
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel processes")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--json", type=Path, help="append one JSON line per run here")
    parser.add_argument(
        "--summarise", nargs="*", type=Path, help="print the table of saved --json files and exit"
    )
    args = parser.parse_args()
    if args.summarise:
        summarise_files(args.summarise, args.benchmark, args.methods)
        return

    bench = get_benchmark(args.benchmark)
    params = SyntheticParams().replace(**parse_overrides(args.set))
    started = time.perf_counter()
    store = synthetic_store(
        bench.name, seed=args.store_seed, cache_dir=args.cache_dir, params=params
    )
    print(f"store {store} ({time.perf_counter() - started:.1f} s)", flush=True)
    tasks = [
        {
            "benchmark": bench.name,
            "store": str(store),
            "pair": pair,
            "method": method,
            "seed": seed,
            "engine": args.engine,
            "threads": args.threads,
            "run_set": dict(item.split("=", 1) for item in args.run_set),
        }
        for pair in args.pairs or bench.pairs
        for method in args.methods
        for seed in args.seeds
    ]
    # supervised_target never reads the source: its run depends on (target, seed) only, so
    # pairs sharing a target reuse one run (the same numbers, bit for bit, as rerunning it).
    unique: dict[tuple, dict] = {}
    for task in tasks:
        target = bench.check_pair(task["pair"])[1]
        key = (target, task["seed"]) if task["method"] == "supervised_target" else id(task)
        unique.setdefault(key, task)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for done in pool.imap(run_task, list(unique.values())):
            copies = [done]
            if done["method"] == "supervised_target":
                target = bench.check_pair(done["pair"])[1]
                copies = [
                    {**done, "pair": t["pair"]}
                    for t in tasks
                    if t["method"] == "supervised_target"
                    and t["seed"] == done["seed"]
                    and bench.check_pair(t["pair"])[1] == target
                ]
            for row in copies:
                results.setdefault((row["pair"], row["method"]), []).append(row)
                print(
                    f"{row['pair']:6s} {row['method']:18s} seed {row['seed']}: "
                    f"fused {row['target_acc']:5.1f}  rgb {row['target_acc_rgb']:5.1f}  "
                    f"flow {row['target_acc_flow']:5.1f}  ({row['wall_s']:.0f} s)",
                    flush=True,
                )
                if args.json:
                    row.update(params=params.to_dict(), store_seed=args.store_seed)
                    row.update(runner="engine" if args.engine else "replay")
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    print_table(results, args.methods)


def summarise_files(paths: list[Path], benchmark: str, methods: list[str]) -> None:
    """Table of saved runs of the default generator parameters (last row per run wins)."""
    defaults = SyntheticParams().to_dict()
    rows: dict[tuple, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            row = json.loads(line)
            bench = get_benchmark(benchmark)
            if row["params"] == defaults and row["pair"] in bench.pairs:
                rows[(row["pair"], row["method"], row["seed"])] = row
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for (pair, method, _), row in sorted(rows.items(), key=lambda kv: kv[0][2]):
        results.setdefault((pair, method), []).append(row)
    ordered = {
        k: results[k]
        for p in get_benchmark(benchmark).pairs
        for m in methods
        if (k := (p, m)) in results
    }
    print_table(ordered, methods)


def _mean_std(values: list[float]) -> str:
    if len(values) < 2:
        return f"{values[0]:.1f}"
    return f"{statistics.fmean(values):.1f} ± {statistics.stdev(values):.1f}"


def print_table(results: dict[tuple[str, str], list[dict[str, float]]], methods) -> None:
    pairs = sorted({p for p, _ in results}, key=list(dict.fromkeys(p for p, _ in results)).index)
    print("\n| pair | " + " | ".join(f"{m} fused / rgb / flow" for m in methods) + " |")
    print("|---|" + "---|" * len(methods))
    for pair in pairs:
        cells = []
        for m in methods:
            runs = results.get((pair, m), [])
            cells.append(" / ".join(_mean_std([r[k] for r in runs]) for k in KEYS) if runs else "")
        print(f"| {pair} | " + " | ".join(cells) + " |")
    for m in methods:
        runs = {p: results[(p, m)] for p in pairs if (p, m) in results}
        if not runs:
            continue
        # Spread over seeds of the mean over pairs (seeds every pair has).
        seeds = set.intersection(*({r["seed"] for r in rs} for rs in runs.values()))
        cells = []
        for k in KEYS:
            mean = statistics.fmean(statistics.fmean(r[k] for r in rs) for rs in runs.values())
            per_seed = [
                statistics.fmean(r[k] for rs in runs.values() for r in rs if r["seed"] == s)
                for s in sorted(seeds)
            ]
            spread = f" ± {statistics.stdev(per_seed):.1f}" if len(per_seed) > 1 else ""
            cells.append(
                f"{k.replace('target_acc', 'fused').replace('fused_', '')} {mean:.1f}{spread}"
            )
        print(f"mean over {len(runs)} pairs, {m}: " + ", ".join(cells))


if __name__ == "__main__":
    main()
