"""Time and disk size of generating a synthetic feature store.

Baseline, measured in the same run: writing random arrays of the same shapes
through the same writer (``write_split``), i.e. the cost of the store format
alone; the ratio says what the generator adds on top of it.

    python benchmarks/synthetic_generation.py [--benchmark synthetic-epic] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from cmcl.data.benchmarks import get_benchmark
from cmcl.data.feature_store import write_split
from cmcl.data.synthetic import SyntheticParams, class_counts, generate_store


def directory_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.iterdir() if p.is_file())


def write_random(benchmark: str, root: Path, params: SyntheticParams) -> None:
    rng = np.random.default_rng(0)
    for domain, splits in class_counts(benchmark).items():
        for split, counts in splits.items():
            n = sum(counts)
            shape = (n, params.windows, params.feature_dim)
            write_split(
                root,
                domain=domain,
                split=split,
                segment_ids=[str(i) for i in range(n)],
                labels=np.zeros(n, dtype=np.int32),
                rgb=rng.random(shape, dtype=np.float32),
                flow=rng.random(shape, dtype=np.float32),
            )


def timed(fn) -> float:
    tic = time.perf_counter()
    fn()
    return time.perf_counter() - tic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--benchmark", default="synthetic-epic")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    bench = get_benchmark(args.benchmark)
    params = SyntheticParams()
    segments = sum(sum(c) for s in class_counts(bench.name).values() for c in s.values())
    generate, baseline, size = [], [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            out = Path(tmp) / f"gen{i}"
            generate.append(timed(lambda out=out, i=i: generate_store(bench.name, out, seed=i)))
            size = directory_bytes(out)
            raw = Path(tmp) / f"raw{i}"
            baseline.append(timed(lambda raw=raw: write_random(bench.name, raw, params)))
            raw_size = directory_bytes(raw)
    gen_s, base_s = statistics.median(generate), statistics.median(baseline)
    print(
        f"benchmark {bench.name}: {segments} segments x {params.windows} windows x 2 x "
        f"{params.feature_dim}-d float32; load average {os.getloadavg()[0]:.1f}"
    )
    print(f"generate_store: {gen_s:.1f} s (runs {', '.join(f'{t:.1f}' for t in generate)})")
    print(f"baseline write_split of random arrays: {base_s:.1f} s")
    print(f"ratio generate / baseline: {gen_s / base_s:.2f}")
    print(f"store size: {size / 2**20:.0f} MiB (random-array store {raw_size / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
