"""What Ray Tune costs a study: wall time of a 16-trial grid study against its trials' own time.

The study is 16 configurations of cmco (lambda from 0.5 to 2.0) on one pair of
a small random feature store (EPIC-like, 8 classes, 64-d features), one seed,
a short schedule (default 20 warm-up + 60 adaptation steps, an evaluation
every 5): runs of a few seconds, so the per-trial cost of Tune shows.

Figures:
  own      the runs' own time (the engine's wall_s in each summary.json)
  ideal    own / concurrency: the study's wall time if Tune cost nothing
  tuner    wall time of run_study with Ray already started (Tune's loop)
  total    the same including starting and stopping a private Ray
  no-Ray   the 16 runs one after another in this process, / concurrency
and the ratios tuner/ideal and tuner/no-Ray, and the cost per trial.

    PYTHONPATH=. python benchmarks/tune_overhead.py [--trials 16] [--cpus 2] [--steps 60]

``--study FILE`` measures a study file instead (e.g. a 3 methods x 3 seeds study
on one pair, or the synthetic twin of Table 3), with ``--set KEY=VALUE`` settings
for its runs: its wall time, Ray's start included, against the runs' own time
divided by the slots (``--cpus``), the issue's measure of slots left idle:

    PYTHONPATH=. python benchmarks/tune_overhead.py --study studies/quickstart.yaml \
        --synthetic --set train.warmup_steps=150 --set train.steps=300
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from cmcl.data.benchmarks import EPIC_CLASSES
from cmcl.data.feature_store import write_meta, write_split


def write_store(root: Path, *, dim: int = 64, windows: int = 3) -> Path:
    """Three domains, 96 train / 48 test segments each, class prototypes plus noise."""
    rng = np.random.default_rng(0)
    prototypes = rng.normal(size=(len(EPIC_CLASSES), dim))
    for d, domain in enumerate(("D1", "D2", "D3")):
        shift = rng.normal(scale=0.6, size=dim) * d
        for split, n in (("train", 96), ("test", 48)):
            labels = np.arange(n) % len(EPIC_CLASSES)
            base = prototypes[labels] + shift
            streams = {
                m: np.maximum(base[:, None, :] + rng.normal(scale=1.0, size=(n, windows, dim)), 0)
                for m in ("rgb", "flow")
            }
            write_split(
                root,
                domain=domain,
                split=split,
                segment_ids=[f"{domain}-{split}-{i}" for i in range(n)],
                labels=labels,
                **streams,
            )
    write_meta(
        root,
        {
            "benchmark": "synthetic-epic",
            "class_names": list(EPIC_CLASSES),
            "domains": ["D1", "D2", "D3"],
            "feature_dim": dim,
        },
    )
    return root


def study_file(store: Path, *, trials: int, warmup: int, steps: int) -> dict:
    return {
        "name": "overhead",
        "benchmark": "synthetic-epic",
        "pairs": ["D2-D1"],
        "methods": ["cmco"],
        "settings": {
            "data.features": str(store),
            "model.feature_dim": 64,
            "model.proj_hidden": 64,
            "model.proj_dim": 32,
            "train.warmup_steps": warmup,
            "train.steps": steps,
            "train.lr_step": steps // 2,
            "train.eval_every": 5,
            "train.checkpoint_every": 20,
            "train.batch_source": 16,
            "train.batch_target": 16,
            "train.eval_last_k": 3,
            "train.dump_features": 0,
        },
        "search": {"lambda": [round(0.5 + 1.5 * i / (trials - 1), 4) for i in range(trials)]},
        "seeds": 1,
    }


def own_time(study: Path) -> float:
    return sum(json.loads(p.read_text())["wall_s"] for p in (study / "runs").glob("*/summary.json"))


def study_wall(args) -> None:
    """A study file's wall time (Ray start included) against its runs' own time / slots."""
    import ray
    import yaml

    from cmcl.ray.study import run_study
    from cmcl.study.directory import create_study_dir
    from cmcl.study.spec import parse_spec

    data = yaml.safe_load(Path(args.study).read_text())
    if args.synthetic:
        data["benchmark"] = [f"synthetic-{b}" for b in _as_list(data["benchmark"])]
        data["benchmark"] = (
            data["benchmark"][0] if len(data["benchmark"]) == 1 else data["benchmark"]
        )
    settings = dict(data.get("settings") or {})
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    data["settings"] = settings
    if args.seeds is not None:
        data["seeds"] = args.seeds
    if args.pairs:
        data["pairs"] = args.pairs.split(",")
    spec = parse_spec(data, source=args.study)
    work = Path(tempfile.mkdtemp(prefix="tune-study-"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    try:
        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        path = create_study_dir(spec, storage=work / "studies")
        run_study(path, echo=False)
        ray.shutdown()
        wall = time.perf_counter() - start
        own = own_time(path)
        runs = len(list((path / "runs").glob("*/summary.json")))
        resolved = json.loads((path / "study.json").read_text())["resolved"]
        ideal = own / args.cpus
        print(f"study {spec.name}: {runs} runs on {args.cpus} slots, plan {resolved}")
        print(f"own time of the runs   {own:8.1f} s  (mean {own / max(1, runs):.1f} s per run)")
        print(f"ideal (own / slots)    {ideal:8.1f} s")
        print(f"wall, Ray start incl.  {wall:8.1f} s  ratio to ideal {wall / ideal:.3f}")
        print(f"slot time per run beyond its own: {(wall * args.cpus - own) / runs:.2f} s")
        logs = list((work / "ray").glob("session_*/logs/worker-*.out"))
        print(f"Ray worker processes started: {len(logs)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--cpus", type=int, default=2, help="private Ray CPUs = concurrency")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--study", help="a study file to time instead of the lambda grid")
    parser.add_argument("--synthetic", action="store_true", help="its synthetic twin")
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE run setting")
    parser.add_argument("--seeds", type=int, help="override the study's seeds")
    parser.add_argument("--pairs", help="override the study's pairs (comma-separated)")
    args = parser.parse_args()
    if args.study:
        study_wall(args)
        return

    import ray

    from cmcl.ray.study import run_study
    from cmcl.study.directory import create_study_dir
    from cmcl.study.execute import execute_run, trial_jobs
    from cmcl.study.plan import grid_points, trial_plan
    from cmcl.study.spec import parse_spec

    work = Path(tempfile.mkdtemp(prefix="tune-overhead-"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    try:
        store = write_store(work / "store")
        spec = parse_spec(
            study_file(store, trials=args.trials, warmup=args.warmup, steps=args.steps)
        )

        # No Ray: the same runs one after another in this process.
        start = time.perf_counter()
        for point in grid_points(spec):
            plan = trial_plan(spec, {"point": point})
            for job in trial_jobs(spec, plan, trial_id="local", study_dir=work / "local"):
                execute_run(job, lambda event: None, threads=1)
                shutil.rmtree(work / "local" / "runs", ignore_errors=True)
        local = time.perf_counter() - start

        start = time.perf_counter()
        ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        started = time.perf_counter()
        path = create_study_dir(spec, storage=work / "studies")
        run_study(path, echo=False)
        tuner = time.perf_counter() - started
        ray.shutdown()
        total = time.perf_counter() - start

        own = own_time(path)
        concurrency = json.loads((path / "study.json").read_text())["resolved"]["max_concurrent"]
        ideal = own / concurrency
        per_trial = (tuner - ideal) * concurrency / args.trials
        print(
            f"trials {args.trials}, concurrency {concurrency}, "
            f"schedule {args.warmup}+{args.steps} steps"
        )
        print(f"own time of the runs       {own:8.1f} s  (mean {own / args.trials:.2f} s per run)")
        print(f"ideal (own / concurrency)  {ideal:8.1f} s")
        print(
            f"no Ray, sequential / conc. {local / concurrency:8.1f} s  (sequential {local:.1f} s)"
        )
        print(
            f"study, Tune loop           {tuner:8.1f} s  ratio to ideal {tuner / ideal:.2f}, "
            f"to no-Ray {tuner / (local / concurrency):.2f}"
        )
        print(f"study, with Ray start/stop {total:8.1f} s  ratio to ideal {total / ideal:.2f}")
        print(f"Tune cost per trial        {per_trial:8.2f} s (of one trial slot)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
