"""Run configuration: frozen dataclasses built once at the boundary.

A run is one (benchmark pair, method, settings, seed). Every setting lives in
one of four sections and is addressed by a dotted key (``train.steps``,
``method.tau``); a few short aliases exist for the searched hyperparameters
(``lambda``, ``tau``, ``T``, ``delta``). Defaults follow shared/SPEC.md; a
benchmark may supply its own defaults (the synthetic ones use a shorter
schedule), video mode a few of its own (``VIDEO_DEFAULTS``), and explicit
overrides always win.

    config = RunConfig.from_overrides({"data.pair": "D2-D1", "lambda": 1.0})
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cmcl.common import normalise_pair

ALIASES = {
    "lambda": "method.lam",
    "lam": "method.lam",
    "tau": "method.tau",
    "T": "method.threshold",
    "threshold": "method.threshold",
    "delta": "method.delta",
    "method": "method.name",
    "benchmark": "data.benchmark",
    "pair": "data.pair",
    "seed": "train.seed",
    "sampling": "data.sampling",
    "fusion": "model.fusion",
}


def _choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {', '.join(valid)}; got {value!r}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    # NaN fails no comparison, so finiteness is checked explicitly.
    finite = not isinstance(value, float) or math.isfinite(value)
    if not finite or value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        what = "a finite number " if isinstance(value, float) else ""
        raise ValueError(f"{name} must be {what}{bound}, got {value}")


def _within(name: str, value: float, low: float, high: float, *, high_open: bool = False) -> None:
    """``low <= value <= high`` (``< high`` when ``high_open``); NaN is outside every range."""
    inside = low <= value < high if high_open else low <= value <= high
    if not inside:
        raise ValueError(
            f"{name} must be in [{low:g}, {high:g}{')' if high_open else ']'}, got {value}"
        )


def _finite_floats(section: str, config: Any) -> None:
    """Every float field is finite: the catch-all for a field without its own range check."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{section}.{item.name} must be a finite number, got {value}")


SEED_LIMIT = 1 << 63
"""Seeds feed numpy's SeedSequence (no negatives) and torch.manual_seed (64 bits)."""


@dataclass(frozen=True)
class DataConfig:
    """Where the two domains come from and how windows are drawn."""

    benchmark: str = "synthetic-epic"
    pair: str = "D2-D1"
    root: str | None = None
    """Frames root (video mode on real data)."""
    splits: str | None = None
    """Directory of annotation files (EPIC split pickles, TA3N lists)."""
    features: str | None = None
    """Feature store directory; feature mode on real data."""
    sampling: str = "independent"
    """independent: RGB and flow windows drawn separately; synchronised: one shared window."""
    test_windows: int = 5
    loader_workers: int = -1
    """Video mode: DataLoader worker processes per loader (0: decode in the training process;
    -1: auto, from the CPUs available, see cmcl.data.loaders.auto_workers)."""
    rgb_template: str | None = None
    flow_template: str | None = None
    crop_size: int = 224
    """Video mode: side of the square clips (224 in the paper; smaller for tests)."""

    def __post_init__(self) -> None:
        from cmcl.data.benchmarks import get_benchmark

        object.__setattr__(self, "pair", normalise_pair(self.pair))
        get_benchmark(self.benchmark).check_pair(self.pair)
        _choice("data.sampling", self.sampling, ("independent", "synchronised"))
        _positive("data.test_windows", self.test_windows)
        if self.loader_workers < -1:
            raise ValueError(
                f"data.loader_workers must be >= 0, or -1 for auto; got {self.loader_workers}"
            )
        _positive("data.crop_size", self.crop_size)
        _finite_floats("data", self)


@dataclass(frozen=True)
class ModelConfig:
    """The two-stream network (SPEC section 1)."""

    backbone: str = "features"
    """features: trainable layers over pre-extracted window features; i3d: end-to-end video."""
    feature_dim: int = 1024
    dropout: float = 0.5
    fusion: str = "sum"
    proj_hidden: int = 1024
    proj_dim: int = 128
    sync_bn: bool = False
    i3d_rgb: str | None = None
    i3d_flow: str | None = None

    def __post_init__(self) -> None:
        _choice("model.backbone", self.backbone, ("features", "i3d"))
        _choice("model.fusion", self.fusion, ("sum", "mean"))
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.dropout must be in [0, 1), got {self.dropout}")
        for name in ("feature_dim", "proj_hidden", "proj_dim"):
            _positive(f"model.{name}", getattr(self, name))
        _finite_floats("model", self)


@dataclass(frozen=True)
class MethodConfig:
    """The adaptation method and its hyperparameters (SPEC sections 2-5, 8)."""

    name: str = "cmco"
    lam: float = 1.25
    """lambda: weight of the adaptation terms (Eq. 7)."""
    tau: float = 0.1
    threshold: float = 0.8
    """T: pseudo-label confidence threshold on softmax(fused logits)."""
    delta: float = 0.5
    """Memory-bank momentum."""
    head_in_modality: bool = True
    head_in_domain: bool = False
    cross_domain_form: str = "per_anchor"
    modality_positive: str = "bank"
    bank_init: str = "pass"
    mmd_weight: float = 0.2
    mcd_weight: float = 0.2
    correspondence_weight: float = 1.0
    correspondence_weight_warmup: float = 5.0
    grl_scale: float = 0.2
    adabn_reestimate: bool = False

    def __post_init__(self) -> None:
        _positive("method.lam", self.lam, allow_zero=True)
        if not 0.01 <= self.tau <= 10.0:
            raise ValueError(f"method.tau must be in [0.01, 10], got {self.tau}")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(
                f"method.threshold: threshold T must be in (0, 1], got {self.threshold}"
            )
        if not 0.0 <= self.delta < 1.0:
            raise ValueError(f"method.delta (bank momentum) must be in [0, 1), got {self.delta}")
        _choice("method.cross_domain_form", self.cross_domain_form, ("per_anchor", "batch"))
        _choice("method.modality_positive", self.modality_positive, ("bank", "batch"))
        _choice("method.bank_init", self.bank_init, ("pass", "random"))
        for name in ("mmd_weight", "mcd_weight", "correspondence_weight", "grl_scale"):
            _positive(f"method.{name}", getattr(self, name), allow_zero=True)
        _positive(
            "method.correspondence_weight_warmup",
            self.correspondence_weight_warmup,
            allow_zero=True,
        )
        _finite_floats("method", self)


@dataclass(frozen=True)
class TrainConfig:
    """Schedule, optimiser, evaluation and checkpointing (SPEC section 7)."""

    seed: int = 0
    warmup_steps: int = 3000
    steps: int = 6000
    lr: float = 0.01
    lr_step: int = 3000
    lr_gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-7
    batch_source: int = 16
    batch_target: int = 16
    eval_every: int = 50
    eval_last_k: int = 9
    eval_batch: int = 256
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    restarts: int = 3
    """Restarts of a multi-worker (Ray Train) run's worker group after a worker or its node
    is lost, each from the newest checkpoint; a budget of its own, apart from a study's."""
    log_every: int = 50
    """Steps between reads of the loss values on the host (and the non-finite check); in
    between a step reads nothing back from the device. Evaluations read them too."""
    device: str = "auto"
    precision: str = "auto"
    """auto: bf16 autocast on CUDA, fp32 elsewhere; fp32; bf16."""
    dump_features: int = 256
    """Segments per domain whose features are written at the end (t-SNE); 0 disables."""
    source_val: str = "all"
    """Which evaluations also score the held-out source split (the source_val_acc selection
    metric): all; last (only the last eval_last_k adaptation evaluations, the ones the
    summary averages: same summary, far less work in video mode); none."""

    def __post_init__(self) -> None:
        if not 0 <= self.seed < SEED_LIMIT:
            raise ValueError(f"train.seed must be an integer in [0, 2**63), got {self.seed}")
        _positive("train.warmup_steps", self.warmup_steps, allow_zero=True)
        for name in ("steps", "lr", "batch_source", "batch_target", "eval_every"):
            _positive(f"train.{name}", getattr(self, name))
        for name in (
            "eval_last_k",
            "eval_batch",
            "checkpoint_every",
            "keep_checkpoints",
            "log_every",
        ):
            _positive(f"train.{name}", getattr(self, name))
        _positive("train.lr_step", self.lr_step, allow_zero=True)
        _positive("train.restarts", self.restarts, allow_zero=True)
        # SPEC section 7 drops the lr at lr_step (0.1: divided by 10); 0 would stop learning.
        if not 0.0 < self.lr_gamma <= 1.0:
            raise ValueError(f"train.lr_gamma must be in (0, 1], got {self.lr_gamma}")
        # Momentum 1 or more never forgets a gradient: the updates grow without bound.
        _within("train.momentum", self.momentum, 0.0, 1.0, high_open=True)
        _positive("train.weight_decay", self.weight_decay, allow_zero=True)
        _positive("train.dump_features", self.dump_features, allow_zero=True)
        _choice("train.precision", self.precision, ("auto", "fp32", "bf16"))
        _choice("train.source_val", self.source_val, ("all", "last", "none"))
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        _finite_floats("train", self)

    def evaluates_after(self, done: int, stage_steps: int) -> bool:
        """Whether the trainer evaluates after step ``done`` (1-based) of a stage of
        ``stage_steps``: every ``eval_every`` steps, at every checkpoint, and at the end."""
        return done % self.eval_every == 0 or self.checkpoints_after(done, stage_steps)

    def checkpoints_after(self, done: int, stage_steps: int) -> bool:
        return done % self.checkpoint_every == 0 or done == stage_steps

    def evaluation_steps(self, stage_steps: int) -> list[int]:
        """The steps of a stage of ``stage_steps`` after which the trainer evaluates."""
        return [d for d in range(1, stage_steps + 1) if self.evaluates_after(d, stage_steps)]

    def evaluation_schedule(self) -> list[tuple[str, int]]:
        """(stage, step) of every evaluation of a run, warm-up then adaptation: the one
        schedule the trainer, the study's rounds and ASHA's time axis all follow."""
        return [
            (stage, done)
            for stage, steps in (("warmup", self.warmup_steps), ("adapt", self.steps))
            for done in self.evaluation_steps(steps)
        ]


@dataclass(frozen=True)
class RunConfig:
    """Everything one run needs; ``out`` is its directory (None: no files written)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    out: str | None = None
    resume: str | None = None
    """Checkpoint directory to continue from."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, for results tables."""
        return {
            f"{section}.{key}": value
            for section in SECTIONS
            for key, value in dataclasses.asdict(getattr(self, section)).items()
        }

    def replace(self, overrides: Mapping[str, Any]) -> RunConfig:
        """A copy with dotted-key (or alias) overrides applied and validated.

        Benchmark defaults are not re-applied: they were resolved when this config was built.
        """
        return _apply(self, overrides, with_benchmark_defaults=False)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        overrides: dict[str, Any] = {}
        for key, value in data.items():
            if key in SECTIONS and isinstance(value, Mapping):
                overrides.update({f"{key}.{k}": v for k, v in value.items()})
            else:
                overrides[key] = value
        return _apply(cls(), overrides, with_benchmark_defaults=False)

    @classmethod
    def from_overrides(cls, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Defaults, then the benchmark's defaults, then ``overrides`` (dotted keys or aliases)."""
        return _apply(cls(), dict(overrides or {}))

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


SECTIONS = ("data", "model", "method", "train")
VIDEO_DEFAULTS: dict[str, Any] = {"train.source_val": "last"}
"""Video mode (``model.backbone=i3d``) changes only what is recorded, not what is computed:
scoring the source test split at every evaluation would cost more than the target's."""
_TOP_LEVEL = ("out", "resume")


def resolve_key(key: str) -> tuple[str | None, str]:
    """Map a dotted key or alias to (section, field); section None for top-level keys."""
    key = ALIASES.get(key, key)
    if key in _TOP_LEVEL:
        return None, key
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name:
        valid = sorted([*ALIASES, *_TOP_LEVEL, *(f"{s}.<field>" for s in SECTIONS)])
        raise KeyError(f"unknown setting {key!r}; valid: {', '.join(valid)}")
    fields = {f.name for f in dataclasses.fields(_SECTION_TYPES[section])}
    if name not in fields:
        raise KeyError(f"unknown setting {key!r}; {section} has: {', '.join(sorted(fields))}")
    return section, name


def parse_value(text: str) -> Any:
    """Parse a ``--set key=value`` right-hand side: JSON if it parses, else the string."""
    lowered = text.strip().lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_assignments(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["train.steps=200", "T=0.9"]`` -> ``{"train.steps": 200, "T": 0.9}``."""
    result: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"expected key=value, got {item!r}")
        result[key.strip()] = parse_value(value)
    return result


_SECTION_TYPES: dict[str, type] = {
    "data": DataConfig,
    "model": ModelConfig,
    "method": MethodConfig,
    "train": TrainConfig,
}


def _coerce(section: str, name: str, value: Any) -> Any:
    hints = typing.get_type_hints(_SECTION_TYPES[section])
    hint = hints[name]
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise ValueError(f"{section}.{name} cannot be empty")
    for kind in allowed:
        if kind is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
                return value.lower() in ("true", "1")
        elif kind is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, str):
                try:
                    return int(value)
                except ValueError:
                    pass
        elif kind is float:
            if isinstance(value, int | float) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif kind is str and isinstance(value, str | int | float) and not isinstance(value, bool):
            return str(value)
    names = "/".join(getattr(k, "__name__", str(k)) for k in allowed)
    raise ValueError(f"{section}.{name} expects {names}, got {value!r}")


def _apply(
    base: RunConfig, overrides: Mapping[str, Any], *, with_benchmark_defaults: bool = True
) -> RunConfig:
    resolved: dict[tuple[str | None, str], Any] = {}
    for key, value in overrides.items():
        resolved[resolve_key(key)] = value
    if with_benchmark_defaults:
        from cmcl.data.benchmarks import benchmark_defaults

        name = resolved.get(("data", "benchmark"), base.data.benchmark)
        for key, value in benchmark_defaults(str(name)).items():
            resolved.setdefault(resolve_key(key), value)
        if resolved.get(("model", "backbone"), base.model.backbone) == "i3d":
            for key, value in VIDEO_DEFAULTS.items():
                resolved.setdefault(resolve_key(key), value)
    sections = {s: dataclasses.asdict(getattr(base, s)) for s in SECTIONS}
    top = {k: getattr(base, k) for k in _TOP_LEVEL}
    for (section, name), value in resolved.items():
        if section is None:
            top[name] = None if value is None else str(value)
        else:
            sections[section][name] = _coerce(section, name, value)
    built = {s: _SECTION_TYPES[s](**sections[s]) for s in SECTIONS}
    return RunConfig(**built, **top)
