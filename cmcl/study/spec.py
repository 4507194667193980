"""The study file (YAML): what to run, how to search, and where; validated once, then frozen.

A study crosses methods (and optional named variants of the settings) with a
search space over pairs and seeds. A *trial* is one configuration: on one
pair (``objective: per_pair``) or on every pair (``objective: mean``), each
on every seed; its value is the mean over its runs of the selection metric
(docs/studies.md describes every key).

    spec = load_spec("studies/quickstart.yaml")
    spec = spec.on_synthetic()        # epic -> synthetic-epic, ucf-hmdb -> synthetic-ucf-hmdb

Every error is a :class:`StudySpecError` naming the key and the valid values.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmcl.common import METRICS, ORACLE_METRICS
from cmcl.study._parse import Reader, StudySpecError

__all__ = [
    "METRICS",
    "PAPER_TABLES",
    "Fidelity",
    "Resources",
    "Scheduler",
    "SearchParam",
    "StudySpec",
    "StudySpecError",
    "Variant",
    "load_spec",
    "parse_spec",
    "read_study_file",
]

PAPER_TABLES = (
    "table2_ucf_hmdb",
    "table3_epic",
    "table4_ablation_epic",
    "table5_sampling_epic",
    "table6_hyperparameters_epic",
    "table7_projection_head_epic",
    "table8_alignment_epic",
)
"""Keys of shared/paper/tables.json a study may name under ``tables``."""
SYNTHETIC_TWIN = {"epic": "synthetic-epic", "ucf-hmdb": "synthetic-ucf-hmdb"}
SEARCHERS = ("grid", "optuna")
OBJECTIVES = ("per_pair", "mean")
SCHEDULERS = ("none", "asha")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,99}$")
STUDY_KEYS = (
    "name",
    "description",
    "benchmark",
    "pairs",
    "methods",
    "settings",
    "variants",
    "search",
    "searcher",
    "optuna",
    "trials",
    "seeds",
    "objective",
    "metric",
    "scheduler",
    "resources",
    "max_concurrent",
    "max_failures",
    "node_failures",
    "storage",
    "optuna_storage",
    "keep",
    "tracking",
    "fidelity",
    "tables",
)
KEEP = ("final", "all")
"""What a finished run keeps: its final weights and feature dump, or every file and checkpoint."""


@dataclass(frozen=True)
class SearchParam:
    """One searched setting: categorical ``values``, or a range ``low``..``high``."""

    key: str
    """Canonical dotted key (``method.lam`` for ``lambda``)."""
    name: str = ""
    """The name the study file gives it (``lambda``, ``T``, ``method.tau``): what Optuna,
    the records and the progress lines call it. Empty: the key."""
    values: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    @property
    def label(self) -> str:
        return self.name or self.key

    def grid(self) -> tuple[Any, ...]:
        """The values a grid search visits (a range needs ``step``)."""
        if self.values is not None:
            return self.values
        assert self.low is not None and self.high is not None and self.step is not None
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        points = [self.low + i * self.step for i in range(count)]
        # Rounding keeps 0.1 + 2 * 0.1 from becoming 0.30000000000000004 in run names.
        return tuple(round(p) if self.integer else round(p, 10) for p in points)


@dataclass(frozen=True)
class Variant:
    """A named set of settings; crossed with the methods it applies to."""

    name: str
    settings: tuple[tuple[str, Any], ...]
    methods: tuple[str, ...] | None = None
    """None: every method of the study."""
    pairs: tuple[str, ...] | None = None
    """The pairs it runs on (``objective: per_pair``); None: every pair of the study."""


FIDELITIES = ("features", "video")


@dataclass(frozen=True)
class Fidelity:
    """A study in two stages: every configuration in feature mode, then the best again in
    video mode, end to end (docs/studies.md, "Two-fidelity studies")."""

    screen: str = "features"
    confirm: str = "video"
    top_k: int | None = 3
    """Configurations the confirm stage runs again (per pair with ``objective: per_pair``);
    None: all of them (``top_k: all``), to measure how well the stages agree."""
    also_confirm: tuple[str, ...] = ()
    """Methods (baselines) run in the confirm stage too, at the study's settings."""


@dataclass(frozen=True)
class Scheduler:
    name: str = "none"
    grace_period: int | None = None
    """Adaptation evaluations before a trial can be stopped (None: an eighth of them)."""
    reduction_factor: float = 2.0


@dataclass(frozen=True)
class Resources:
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    parallel_runs: int | None = None
    """Runs of one trial at once (None: as many as the cluster allows)."""
    wait_timeout_s: float | None = None
    """How long the study waits for a cluster too small for one of its runs before it stops
    with an error (None: it waits, saying so every few minutes)."""


@dataclass(frozen=True)
class StudySpec:
    """A validated study file (see the module docstring and docs/studies.md)."""

    name: str
    methods: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    """(benchmark, pair) in file order."""
    benchmarks: tuple[str, ...]
    description: str = ""
    settings: tuple[tuple[str, Any], ...] = ()
    variants: tuple[Variant, ...] = ()
    search: tuple[SearchParam, ...] = ()
    searcher: str = "grid"
    trials: int | None = None
    """Optuna trials (None for grid: the count is derived)."""
    optuna_seed: int = 0
    n_startup_trials: int | None = None
    seeds: tuple[int, ...] = (0,)
    objective: str = "per_pair"
    metric: str = "target_acc"
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent: int | None = None
    max_failures: int = 0
    """Retries of a run whose training code raised (a NaN, a bad file): none by default."""
    node_failures: int = 3
    """Restarts of a run lost to the infrastructure (its node, worker or placement died), each
    from its newest checkpoint; separate from ``max_failures``."""
    storage: str | None = None
    optuna_storage: str | None = None
    """An Optuna RDB URL (postgresql://, mysql://, sqlite:///); None: a journal file in the
    study directory (local or NFS studies only)."""
    keep: str = "final"
    tracking: str | None = None
    """``mlflow``, ``wandb`` or ``tensorboard``: every run is also tracked there
    (docs/tracking.md); None: the study's own results only."""
    fidelity: Fidelity | None = None
    tables: tuple[str, ...] = ()

    @property
    def mode(self) -> str:
        return METRICS[self.metric]

    @property
    def oracle(self) -> bool:
        """True when the selection metric reads target labels."""
        return self.metric in ORACLE_METRICS

    @property
    def metric_label(self) -> str:
        return f"{self.metric} (oracle: uses target labels)" if self.oracle else self.metric

    @property
    def startup_trials(self) -> int:
        """TPE's random start; Optuna's default of 10 would make a 10-trial study random search."""
        if self.n_startup_trials is not None:
            return self.n_startup_trials
        return min(10, max(1, (self.trials or 0) // 3))

    def variants_of(self, method: str) -> tuple[Variant | None, ...]:
        """The variants a method runs with; ``(None,)`` when none applies to it."""
        found = tuple(v for v in self.variants if v.methods is None or method in v.methods)
        return found or (None,)

    def variant(self, name: str | None) -> Variant | None:
        return None if name is None else next(v for v in self.variants if v.name == name)

    def on_synthetic(self) -> StudySpec:
        """The synthetic twin: real benchmarks replaced by their synthetic counterparts."""
        twin = tuple(SYNTHETIC_TWIN.get(b, b) for b in self.benchmarks)
        if twin == self.benchmarks:
            return self
        pairs = tuple((SYNTHETIC_TWIN.get(b, b), p) for b, p in self.pairs)
        name = self.name if self.name.endswith("-synthetic") else f"{self.name}-synthetic"
        return dataclasses.replace(self, benchmarks=twin, pairs=pairs, name=name)

    def to_dict(self) -> dict[str, Any]:
        """The file form (``parse_spec(spec.to_dict()) == spec``), for spec.yaml."""
        return _spec_to_dict(self)


def load_spec(path: str | Path) -> StudySpec:
    """Read and validate a study file (with command-line changes: cmcl.study.overrides)."""
    return parse_spec(read_study_file(path), source=str(path))


def read_study_file(path: str | Path) -> Any:
    """The study file's YAML, parsed but not yet validated."""
    import yaml

    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise StudySpecError(f"study file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise StudySpecError(f"study file {path} is not valid YAML: {error}") from None


def parse_spec(data: Any, *, source: str = "study file") -> StudySpec:
    """Validate a study mapping (the parsed YAML) into a :class:`StudySpec`."""
    from cmcl.study._build import build_spec

    return build_spec(Reader(data, source=source, path=""), keys=STUDY_KEYS)


def _spec_to_dict(spec: StudySpec) -> dict[str, Any]:
    def search_entry(p: SearchParam) -> dict[str, Any]:
        # Keyed by the study file's own name (see SearchParam.name).
        if p.values is not None:
            return {"values": list(p.values)}
        entry: dict[str, Any] = {"low": p.low, "high": p.high}
        if p.log:
            entry["log"] = True
        if p.step is not None:
            entry["step"] = p.step
        return entry

    data: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description,
        "benchmark": list(spec.benchmarks),
        "pairs": [p for _, p in spec.pairs],
        "methods": list(spec.methods),
        "settings": dict(spec.settings),
        "variants": [
            {
                "name": v.name,
                "settings": dict(v.settings),
                **({"methods": list(v.methods)} if v.methods is not None else {}),
                **({"pairs": list(v.pairs)} if v.pairs is not None else {}),
            }
            for v in spec.variants
        ],
        "search": {p.label: search_entry(p) for p in spec.search},
        "searcher": spec.searcher,
        "seeds": list(spec.seeds),
        "objective": spec.objective,
        "metric": spec.metric,
        "scheduler": "none"
        if spec.scheduler.name == "none"
        else dataclasses.asdict(spec.scheduler),
        "resources": dataclasses.asdict(spec.resources),
        "max_concurrent": spec.max_concurrent,
        "max_failures": spec.max_failures,
        "node_failures": spec.node_failures,
        "storage": spec.storage,
        "optuna_storage": spec.optuna_storage,
        "keep": spec.keep,
        "tracking": spec.tracking,
        "tables": list(spec.tables),
    }
    if spec.fidelity is not None:
        f = spec.fidelity
        data["fidelity"] = {
            "screen": f.screen,
            "confirm": f.confirm,
            "top_k": "all" if f.top_k is None else f.top_k,
            "also_confirm": list(f.also_confirm),
        }
    if spec.searcher == "optuna":
        data["trials"] = spec.trials
        data["optuna"] = {"seed": spec.optuna_seed, "n_startup_trials": spec.n_startup_trials}
    return data


def check_name(name: str, what: str = "name") -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise StudySpecError(
            f"key {what!r}: must be 1-100 letters, digits or ._=+- starting with a letter or "
            f"digit (it names a directory); got {name!r}"
        )
    return name
