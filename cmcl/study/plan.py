"""From a study to trials and runs: grid points, each trial's runs, each run's RunConfig.

A trial's parameters (what Tune's ``config`` holds) are either one grid point
``{"point": {"method", "variant", "pair", "params"}}`` or, for Optuna, the
sampled values of the searched keys. :func:`trial_plan` turns either into a
:class:`TrialPlan`; :func:`run_config` builds one run of it. Settings apply in
this order, later ones winning: benchmark defaults, ``settings``, the
variant's settings, the searched values, the run's benchmark/pair/method/seed,
and the settings given on the command line (``--root``, ``--features``, ``--set``).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cmcl.config import RunConfig, TrainConfig
from cmcl.study.spec import StudySpec

RunOverrides = Mapping[str, Mapping[str, Any]]
"""benchmark -> command-line settings (``--features``, ``--set``...) applied to its runs."""


@dataclass(frozen=True)
class RunKey:
    benchmark: str
    pair: str
    seed: int


@dataclass(frozen=True)
class TrialPlan:
    """One configuration and the runs that evaluate it."""

    method: str
    variant: str | None
    pairs: tuple[tuple[str, str], ...]
    params: tuple[tuple[str, Any], ...]
    seeds: tuple[int, ...]

    def runs(self) -> list[RunKey]:
        """Pair-major: every seed of the first pair, then the next pair."""
        return [RunKey(b, p, s) for b, p in self.pairs for s in self.seeds]

    def describe(self) -> str:
        parts = [self.method + (f" [{self.variant}]" if self.variant else "")]
        parts += [
            f"{key.split('.')[-1]}={value:g}"
            if isinstance(value, float)
            else f"{key.split('.')[-1]}={value}"
            for key, value in self.params
        ]
        where = self.pairs[0][1] if len(self.pairs) == 1 else f"{len(self.pairs)} pairs"
        return f"{' '.join(parts)} on {where}"


def grid_points(spec: StudySpec) -> list[dict[str, Any]]:
    """Every trial of a grid study, in a fixed order (methods, variants, values, pairs)."""
    points = []
    pairs: list[str | None] = (
        [f"{b}/{p}" for b, p in spec.pairs] if spec.objective == "per_pair" else [None]
    )
    for method in spec.methods:
        for variant in spec.variants_of(method):
            grids = [param.grid() for param in spec.search]
            for values in itertools.product(*grids):
                params = {p.key: v for p, v in zip(spec.search, values, strict=True)}
                for pair in pairs:
                    if (
                        pair
                        and variant
                        and variant.pairs
                        and pair.split("/")[1] not in variant.pairs
                    ):
                        continue
                    points.append(
                        {
                            "method": method,
                            "variant": variant.name if variant else None,
                            "pair": pair,
                            "params": params,
                        }
                    )
    return points


def trial_plan(spec: StudySpec, config: Mapping[str, Any]) -> TrialPlan:
    """The plan of the trial whose Tune ``config`` is given (grid point or Optuna sample)."""
    if "point" in config:
        point = config["point"]
        method, variant, params = point["method"], point["variant"], dict(point["params"])
        pair = point["pair"]
        if pair is None:
            pairs = spec.pairs
        else:
            benchmark, _, name = pair.partition("/")
            pairs = ((benchmark, name),)
    else:
        method = spec.methods[0]
        variant_obj = spec.variants_of(method)[0]
        variant = variant_obj.name if variant_obj else None
        params = {p.key: config[p.key] for p in spec.search}
        pairs = spec.pairs
    return TrialPlan(
        method=method,
        variant=variant,
        pairs=tuple(pairs),
        params=tuple(params.items()),
        seeds=spec.seeds,
    )


def run_config(
    spec: StudySpec,
    plan: TrialPlan,
    run: RunKey,
    *,
    overrides: RunOverrides | None = None,
    out: str | None = None,
) -> RunConfig:
    """The RunConfig of one run of a trial (see the module docstring for the order)."""
    variant = spec.variant(plan.variant)
    settings: dict[str, Any] = {
        **dict(spec.settings),
        **(dict(variant.settings) if variant else {}),
        **dict(plan.params),
        "data.benchmark": run.benchmark,
        "data.pair": run.pair,
        "method.name": plan.method,
        "train.seed": run.seed,
        **dict((overrides or {}).get(run.benchmark, {})),
    }
    if out is not None:
        settings["out"] = out
    return RunConfig.from_overrides(settings)


def evaluation_schedule(train: TrainConfig) -> list[tuple[str, int]]:
    """(stage, step) of every evaluation a run makes: :meth:`TrainConfig.evaluation_schedule`."""
    return train.evaluation_schedule()
