"""Optuna against a grid of the same space: how many trials to come within 0.5 points of the grid's best.

Space: cmco's lambda in [0.5, 2.0] and T in [0.6, 0.9]. The grid visits 4 x 4
points (lambda 0.5, 1.0, 1.5, 2.0; T 0.6, 0.7, 0.8, 0.9); Optuna (TPE, seeded,
the study's default random start of min(10, trials // 3)) samples the
continuous box for the same number of trials. Each trial is one configuration
on two synthetic EPIC pairs (D2-D1, D3-D1), one seed, valued by the mean target
accuracy (the oracle) under the SPEC rule (mean of the last 9 evaluations).
A shortened schedule keeps it to minutes on a laptop: 200 warm-up + 400
adaptation steps (the synthetic benchmark's own is 600 + 1200), an evaluation
every 20 steps.

Figures: the grid's best and all its values (how flat the objective is: the
share of grid points already within 0.5 of the best is the chance that one
random trial is); Optuna's best after each trial; the first trial at
which Optuna is within 0.5 points of the grid's best (per Optuna seed); the
best each finds within N trials.

    PYTHONPATH=. python benchmarks/search_efficiency.py [--trials 16] [--optuna-seeds 0,1]
        [--space box|wide] [--features DIR]   (a feature store instead of the synthetic benchmark's)

``--space wide`` searches tau (log, 0.02-2.0) x T (0.2-0.8) instead, with the
grid tau 0.02, 0.1, 0.5, 2.0 x T 0.2, 0.4, 0.6, 0.8.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

WITHIN = 0.5
SCHEDULE = {
    "train.warmup_steps": 200,
    "train.steps": 400,
    "train.lr_step": 200,
    "train.eval_every": 20,
    "train.checkpoint_every": 100,
    "train.dump_features": 0,
}


# name -> (the grid, the box Optuna samples): each grid spans its box.
SPACES = {
    # lambda x T around the paper's defaults (1.0, 0.8).
    "box": (
        {"lambda": [0.5, 1.0, 1.5, 2.0], "T": [0.6, 0.7, 0.8, 0.9]},
        {"lambda": {"low": 0.5, "high": 2.0}, "T": {"low": 0.6, "high": 0.9}},
    ),
    # tau x T over a wide range (tau log-spaced): the synthetic objective is flat in
    # "box", so this asks whether the searchers differ where it is not.
    "wide": (
        {"tau": [0.02, 0.1, 0.5, 2.0], "T": [0.2, 0.4, 0.6, 0.8]},
        {"tau": {"low": 0.02, "high": 2.0, "log": True}, "T": {"low": 0.2, "high": 0.8}},
    ),
}


def study_file(
    name: str, *, searcher: str, trials: int, seed: int, features: str | None, space: str = "box"
) -> dict:
    settings = dict(SCHEDULE)
    if features:
        settings["data.features"] = features
    data = {
        "name": name,
        "benchmark": "synthetic-epic",
        "pairs": ["D2-D1", "D3-D1"],
        "methods": ["cmco"],
        "settings": settings,
        "seeds": 1,
        "objective": "mean",
        "metric": "target_acc",
        "searcher": searcher,
    }
    grid, box = SPACES[space]
    if searcher == "grid":
        data["search"] = grid
    else:
        data["search"] = box
        data["trials"] = trials
        data["optuna"] = {"seed": seed}
    return data


def values_in_order(path: Path) -> list[float]:
    """Trial values in the order the trials were created (Tune's start order)."""
    from cmcl.study.records import read_trial_records

    return [r["value"] for r in read_trial_records(path) if r["state"] == "done"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument(
        "--optuna-seeds", default="0", help="comma-separated sampler seeds (empty: the grid only)"
    )
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--features", default=None)
    parser.add_argument("--space", choices=sorted(SPACES), default="box")
    args = parser.parse_args()

    import ray

    from cmcl.ray.study import run_study
    from cmcl.study.directory import create_study_dir
    from cmcl.study.spec import parse_spec

    work = Path(tempfile.mkdtemp(prefix="search-efficiency-"))
    os.environ.setdefault("RAY_TMPDIR", str(work / "ray"))
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    try:
        start = time.perf_counter()
        grid = create_study_dir(
            parse_spec(
                study_file(
                    "grid",
                    searcher="grid",
                    trials=16,
                    seed=0,
                    features=args.features,
                    space=args.space,
                )
            ),
            storage=work,
        )
        run_study(grid, echo=False)
        grid_values = values_in_order(grid)
        grid_best = max(grid_values)
        print(
            f"grid: {len(grid_values)} trials, best {grid_best:.2f} ({time.perf_counter() - start:.0f} s)"
        )
        # How flat the objective is: a random point's chance to be within WITHIN already.
        near = sum(v >= grid_best - WITHIN for v in grid_values)
        print(
            f"  grid values: {' '.join(f'{v:.1f}' for v in sorted(grid_values))}; "
            f"{near}/{len(grid_values)} within {WITHIN} of the best"
        )
        for seed in [int(s) for s in args.optuna_seeds.split(",") if s.strip()]:
            start = time.perf_counter()
            spec = parse_spec(
                study_file(
                    f"optuna-{seed}",
                    searcher="optuna",
                    trials=args.trials,
                    seed=seed,
                    features=args.features,
                    space=args.space,
                )
            )
            path = create_study_dir(spec, storage=work)
            run_study(path, echo=False)
            values = values_in_order(path)
            curve = [max(values[: i + 1]) for i in range(len(values))]
            reached = next((i + 1 for i, v in enumerate(curve) if v >= grid_best - WITHIN), None)
            print(
                f"optuna seed {seed}: best {curve[-1]:.2f} in {len(values)} trials; within "
                f"{WITHIN} of the grid's best after "
                + (
                    f"{reached} trials ({reached / len(grid_values):.2f} of the grid's)"
                    if reached
                    else "never"
                )
                + f" ({time.perf_counter() - start:.0f} s)"
            )
            print("  best so far: " + " ".join(f"{v:.1f}" for v in curve))
            meta = json.loads((path / "study.json").read_text())
            print(
                f"  random start: {spec.startup_trials} trials; concurrency {meta['resolved']['max_concurrent']}"
            )
    finally:
        ray.shutdown()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
