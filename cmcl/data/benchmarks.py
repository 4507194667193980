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

# UCF <-> HMDB. The paper takes batch size, schedule and learning rate for this
# benchmark from SAVA (Choi et al., ECCV 2020, "Shuffle and Attend: Video Domain
# Adaptation"). Neither SAVA's nor the paper's text or code with those numbers
# could be found (the search and what it found: docs/real-data.md, "UCF <-> HMDB
# protocol"), so this is a documented choice: SPEC section 7's schedule, written
# out here so that it is this benchmark's own setting and not whatever the
# TrainConfig defaults happen to be. Reports name it from the runs' recorded config.
UCF_HMDB_SCHEDULE: dict[str, Any] = {
    "train.warmup_steps": 3000,
    "train.steps": 6000,
    "train.lr": 0.01,
    "train.lr_step": 3000,
    "train.lr_gamma": 0.1,
    "train.momentum": 0.9,
    "train.weight_decay": 1e-7,
    "train.batch_source": 16,
    "train.batch_target": 16,
    "train.eval_every": 50,
    "train.eval_last_k": 9,
}
UCF_HMDB_PROTOCOL = (
    "SPEC section 7's schedule, a documented choice: the paper follows SAVA (Choi et al., "
    "ECCV 2020) here, whose batch size, schedule and learning rate could not be found"
)
SYNTHETIC_PROTOCOL = "the synthetic benchmarks' schedule (SPEC section 7's shape, a fifth as long)"
SCHEDULE_KEYS = tuple(UCF_HMDB_SCHEDULE)
"""The settings that make up a training protocol's schedule (what reports print)."""


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
    protocol: str = ""
    """Where the default schedule comes from, in one phrase (reports print it)."""

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
            protocol=SYNTHETIC_PROTOCOL,
        ),
        Benchmark(
            name="synthetic-ucf-hmdb",
            domains=("U", "H"),
            pairs=UCF_HMDB_PAIRS,
            class_names=UCF_HMDB_CLASSES,
            synthetic=True,
            defaults=tuple(SYNTHETIC_SCHEDULE.items()),
            paper_benchmark="ucf-hmdb",
            protocol=SYNTHETIC_PROTOCOL,
        ),
        Benchmark(
            name="epic",
            domains=("D1", "D2", "D3"),
            pairs=EPIC_PAIRS,
            class_names=EPIC_CLASSES,
            synthetic=False,
            paper_benchmark="epic",
            protocol="SPEC section 7, the paper's EPIC-Kitchens schedule (after MM-SADA)",
        ),
        Benchmark(
            name="ucf-hmdb",
            domains=("U", "H"),
            pairs=UCF_HMDB_PAIRS,
            class_names=UCF_HMDB_CLASSES,
            synthetic=False,
            defaults=tuple(UCF_HMDB_SCHEDULE.items()),
            paper_benchmark="ucf-hmdb",
            protocol=UCF_HMDB_PROTOCOL,
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
