"""The benchmark registry: domains, pairs, classes and per-benchmark defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

EPIC_CLASSES = ("take", "put", "open", "close", "wash", "cut", "mix", "pour")
UCF_HMDB_CLASSES = (
    "climb",
    "fencing",
    "golf",
    "kick_ball",
    "pullup",
    "punch",
    "pushup",
    "ride_bike",
    "ride_horse",
    "shoot_ball",
    "shoot_bow",
    "walk",
)
EPIC_PAIRS = ("D2-D1", "D3-D1", "D1-D2", "D3-D2", "D1-D3", "D2-D3")
UCF_HMDB_PAIRS = ("U-H", "H-U")

# A shorter schedule for the synthetic benchmarks: same shape as SPEC section 7
# (warm-up, adaptation with a 10x lr drop half way, mean of the last 9
# evaluations), a fifth of the length, so that a run takes about a minute on a laptop.
SYNTHETIC_SCHEDULE: dict[str, Any] = {
    "train.warmup_steps": 600,
    "train.steps": 1200,
    "train.lr_step": 600,
    "train.eval_every": 20,
    "train.checkpoint_every": 200,
}


@dataclass(frozen=True)
class Benchmark:
    """A domain-adaptation benchmark: its domains, ordered pairs and classes."""

    name: str
    domains: tuple[str, ...]
    pairs: tuple[str, ...]
    class_names: tuple[str, ...]
    synthetic: bool
    defaults: tuple[tuple[str, Any], ...] = ()
    paper_benchmark: str = ""
    """The real benchmark whose paper numbers this one stands beside."""

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def check_pair(self, pair: str) -> tuple[str, str]:
        """(source, target) of a normalised pair, or a ValueError listing the valid pairs."""
        if pair not in self.pairs:
            raise ValueError(
                f"pair {pair!r} is not part of benchmark {self.name!r}; valid: {', '.join(self.pairs)}"
            )
        source, target = pair.split("-")
        return source, target


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark(
            name="synthetic-epic",
            domains=("D1", "D2", "D3"),
            pairs=EPIC_PAIRS,
            class_names=EPIC_CLASSES,
            synthetic=True,
            defaults=tuple(SYNTHETIC_SCHEDULE.items()),
            paper_benchmark="epic",
        ),
        Benchmark(
            name="synthetic-ucf-hmdb",
            domains=("U", "H"),
            pairs=UCF_HMDB_PAIRS,
            class_names=UCF_HMDB_CLASSES,
            synthetic=True,
            defaults=tuple(SYNTHETIC_SCHEDULE.items()),
            paper_benchmark="ucf-hmdb",
        ),
        Benchmark(
            name="epic",
            domains=("D1", "D2", "D3"),
            pairs=EPIC_PAIRS,
            class_names=EPIC_CLASSES,
            synthetic=False,
            paper_benchmark="epic",
        ),
        Benchmark(
            name="ucf-hmdb",
            domains=("U", "H"),
            pairs=UCF_HMDB_PAIRS,
            class_names=UCF_HMDB_CLASSES,
            synthetic=False,
            paper_benchmark="ucf-hmdb",
        ),
    )
}


def get_benchmark(name: str) -> Benchmark:
    try:
        return BENCHMARKS[name]
    except KeyError:
        raise ValueError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}") from None


def benchmark_defaults(name: str) -> dict[str, Any]:
    """Settings a benchmark changes from the SPEC defaults (explicit overrides win)."""
    benchmark = get_benchmark(name)
    return {"data.pair": benchmark.pairs[0], **dict(benchmark.defaults)}
