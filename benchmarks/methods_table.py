"""Every method on the six synthetic-epic pairs, beside the paper's Table 3 (and 4, 8) numbers.

Runs the grid with ``cmcl.engine.fit`` and the benchmark's default schedule
and hyperparameters (SPEC defaults; nothing is tuned here), ``--jobs`` runs at a
time with one torch thread each, writing each run's summary to
``OUT/<method>/<pair>/s<seed>.json``. A run whose file exists is skipped, so an
interrupted grid continues where it stopped.

    python benchmarks/methods_table.py run [--out .cache/methods_table] [--methods a,b] [--jobs 2]
    python benchmarks/methods_table.py table [--out .cache/methods_table]

Seeds: 0, 1, 2 for source_only, mm_sada and the three cmco variants (issues 2 and 3); 0 for
the other methods (``--seeds N`` gives every method N seeds).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from cmcl.config import RunConfig
from cmcl.data.benchmarks import EPIC_PAIRS

ROOT = Path(__file__).resolve().parents[1]
TABLES = ROOT.parent / "shared" / "paper" / "tables.json"
ORDER = (
    "source_only",
    "adabn",
    "mmd",
    "mcd",
    "mm_sada",
    "cmco_modality",
    "cmco_domain",
    "cmco",
    "supervised_target",
    "mm_sada_modality",
    "mm_sada_domain",
    "pseudo_label",
    "adv_adv",
    "con_adv",
)
THREE_SEEDS = ("source_only", "mm_sada", "cmco", "cmco_modality", "cmco_domain")
KEPT = ("target_acc", "target_acc_rgb", "target_acc_flow", "source_val_acc", "wall_s", "steps")


def seeds_of(method: str, seeds: int | None) -> list[int]:
    if seeds is not None:
        return list(range(seeds))
    return [0, 1, 2] if method in THREE_SEEDS else [0]


def result_path(out: Path, method: str, pair: str, seed: int) -> Path:
    return out / method / pair / f"s{seed}.json"


def grid(methods: list[str], seeds: int | None) -> list[tuple[str, str, int]]:
    """(method, pair, seed) in seed-major order: every method's first seed on every
    pair comes first, so that a grid stopped early still gives a one-seed table."""
    all_seeds = sorted({s for m in methods for s in seeds_of(m, seeds)})
    return [
        (method, pair, seed)
        for seed in all_seeds
        for pair in EPIC_PAIRS
        for method in methods
        if seed in seeds_of(method, seeds)
    ]


def run_one(out: Path, method: str, pair: str, seed: int, features: str | None) -> str:
    """Train one run (one torch thread) and write its summary; returns a progress line."""
    import torch

    from cmcl.engine import fit

    torch.set_num_threads(1)
    overrides = {
        "benchmark": "synthetic-epic",
        "pair": pair,
        "method": method,
        "seed": seed,
        "train.dump_features": 0,
    }
    if features is not None:
        overrides["data.features"] = features
    config = RunConfig.from_overrides(overrides)
    started = time.perf_counter()
    summary = fit(config).summary
    row = {k: summary[k] for k in KEPT if k in summary}
    row.update({"method": method, "pair": pair, "seed": seed, "threads": 1})
    row["config"] = config.to_dict()
    path = result_path(out, method, pair, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(row, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    took = time.perf_counter() - started
    return f"{method:<18} {pair} s{seed}: {row['target_acc']:.2f}% ({took:.0f} s)"


def run_grid(
    out: Path, methods: list[str], seeds: int | None, *, jobs: int, features: str | None
) -> None:
    todo = [t for t in grid(methods, seeds) if not result_path(out, *t).exists()]
    print(f"{len(todo)} runs to do, {jobs} at a time", flush=True)
    # spawn: fresh interpreters, no OpenMP state inherited from a forked parent
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(run_one, out, *task, features) for task in todo]
        for future in futures:
            print(future.result(), flush=True)


def paper_numbers() -> dict[str, dict[str, float]]:
    """method -> {pair or "Mean": value} from Table 3, and the Mean of Tables 4 and 8."""
    tables = json.loads(TABLES.read_text())
    numbers: dict[str, dict[str, float]] = {}
    t3 = tables["table3_epic"]
    pairs = [c.replace("->", "-") for c in t3["columns"]]
    for row in t3["rows"]:
        numbers[row["method"]] = {
            p: v for p, v in zip(pairs, row["values"], strict=True) if v is not None
        }
    for key, source in (("table4_ablation_epic", "T4"), ("table8_alignment_epic", "T8")):
        for row in tables[key]["rows"]:
            if row["method"] not in numbers:
                numbers[row["method"]] = {"Mean": row["values"][0], "source": source}
    return numbers


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{statistics.mean(values):.1f} ± {statistics.stdev(values):.1f}"


def print_table(out: Path) -> None:
    paper = paper_numbers()
    columns = [*EPIC_PAIRS, "Mean"]
    print("| method | seeds | " + " | ".join(c.replace("-", "→") for c in columns) + " |")
    print("|---|---|" + "---|" * len(columns))
    for method in ORDER:
        per_pair: dict[str, list[float]] = {}
        per_seed: dict[int, list[float]] = {}
        for path in sorted((out / method).glob("*/s*.json")):
            row = json.loads(path.read_text())
            per_pair.setdefault(row["pair"], []).append(row["target_acc"])
            per_seed.setdefault(row["seed"], []).append(row["target_acc"])
        if not per_pair:
            continue
        # the mean over pairs per seed, then mean ± sd over seeds (complete seeds only)
        means = [statistics.mean(v) for v in per_seed.values() if len(v) == len(EPIC_PAIRS)]
        cells = [_cell(per_pair.get(p, [])) for p in EPIC_PAIRS] + [_cell(means)]
        print(f"| {method} (synthetic) | {len(per_seed)} | " + " | ".join(cells) + " |")
        numbers = paper.get(method, {})
        if numbers:
            source = numbers.get("source", "T3")
            values = [f"{numbers[c]:.1f}" if c in numbers else "" for c in columns]
            print(f"| {method} (paper {source}, EPIC) | | " + " | ".join(values) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "table"))
    parser.add_argument("--out", type=Path, default=ROOT / ".cache" / "methods_table")
    parser.add_argument("--methods", default=",".join(ORDER))
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--jobs", type=int, default=2, help="runs at a time (1 thread each)")
    parser.add_argument(
        "--features", default=None, help="feature store to use instead of synthetic_store()"
    )
    args = parser.parse_args()
    if args.command == "run":
        run_grid(
            args.out, args.methods.split(","), args.seeds, jobs=args.jobs, features=args.features
        )
    print_table(args.out)


if __name__ == "__main__":
    main()
