"""Two-fidelity studies: screen every configuration on frozen features, confirm the best on
video, end to end (docs/studies.md, "Two-fidelity studies"); no Ray.

A study file with ``fidelity:`` is one directory holding two study
directories, each an ordinary study of its own:

* ``screen/``: the study itself (its search, seeds, objective, ASHA...) in
  feature mode, on the feature store given with ``--features``;
* ``confirm/``: a grid study made when the screen has ended, from its records:
  the ``top_k`` best configurations (per pair with ``objective: per_pair``),
  each a variant named after its screen trial (``screen-t0007``) carrying the
  trial's exact settings, plus the ``also_confirm`` methods at the study's
  settings, on the same pairs and seeds, in video mode on the frames given
  with ``--root`` (``--splits``, ``--set model.i3d_rgb=...``).

The parent directory's spec.yaml is the study file; its study.json says
``fidelity`` and which command-line settings go to which stage.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from cmcl.study.directory import StudyDir
from cmcl.study.records import TrialRecord
from cmcl.study.spec import StudySpec, parse_spec

STAGES = ("screen", "confirm")
VIDEO_KEYS = ("data.root", "data.splits", "model.backbone")
"""Command-line settings that belong to the video-mode (confirm) stage only."""
FEATURE_KEYS = ("data.features",)
"""... and to the feature-mode (screen) stage only; every other one applies to both."""


def split_overrides(
    overrides: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per-benchmark command-line settings -> those of each stage."""
    stages: dict[str, dict[str, dict[str, Any]]] = {"screen": {}, "confirm": {}}
    for benchmark, settings in overrides.items():
        screen = {k: v for k, v in settings.items() if k not in VIDEO_KEYS}
        confirm = {k: v for k, v in settings.items() if k not in FEATURE_KEYS}
        confirm["model.backbone"] = "i3d"
        if screen:
            stages["screen"][benchmark] = screen
        stages["confirm"][benchmark] = confirm
    return stages


def check_locations(spec: StudySpec, overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """Both stages need their data: ``--features`` for the screen, ``--root`` for the confirm
    stage (a synthetic benchmark's screen needs no store: it generates its features)."""
    for benchmark in spec.benchmarks:
        given = overrides.get(benchmark, {})
        if "data.root" not in given:
            raise ValueError(
                f"a two-fidelity study confirms in video mode: give the frames of {benchmark} "
                "with --root [BENCHMARK=]DIR (and --splits, --set model.i3d_rgb=... "
                "--set model.i3d_flow=... for the pretrained I3D)"
            )
        if "data.features" not in given and not benchmark.startswith("synthetic"):
            raise ValueError(
                f"a two-fidelity study screens in feature mode: give the feature store of "
                f"{benchmark} with --features [BENCHMARK=]DIR (written by `cmcl features "
                "extract` from the same frames)"
            )


def screen_spec(spec: StudySpec) -> StudySpec:
    """The screen stage: the study itself, without its ``fidelity``."""
    return dataclasses.replace(spec, name=f"{spec.name}-screen", fidelity=None)


def chosen(spec: StudySpec, trials: list[TrialRecord]) -> list[TrialRecord]:
    """The screen's configurations the confirm stage runs again: the ``top_k`` best done
    trials (per pair with ``objective: per_pair``), best first."""
    assert spec.fidelity is not None
    sign = 1.0 if spec.mode == "max" else -1.0
    done = [t for t in trials if t.state == "done" and t.value is not None]
    done = [t for t in done if math.isfinite(t.value)]
    groups: dict[str, list[TrialRecord]] = {}
    for trial in done:
        key = ",".join(trial.pair_names()) if spec.objective == "per_pair" else "*"
        groups.setdefault(key, []).append(trial)
    top = spec.fidelity.top_k
    picked = []
    for group in groups.values():
        group.sort(key=lambda t: (-sign * t.value, t.number))
        picked += group if top is None else group[:top]
    return sorted(picked, key=lambda t: t.number)


def confirm_spec(spec: StudySpec, screen: StudyDir) -> StudySpec:
    """The confirm stage's grid study, made from the screen's records (module docstring).

    Raises:
        ValueError: the screen has no finished configuration to confirm.
    """
    assert spec.fidelity is not None
    state = screen.read_state()
    picked = chosen(spec, list(state.trials.values()) if state else [])
    if not picked:
        raise ValueError(
            f"{screen}: the screen stage finished no configuration, so there is nothing to "
            "confirm (`cmcl study status` on it lists why)"
        )
    variants = []
    for trial in picked:
        settings = dict(spec.variant(trial.variant).settings) if trial.variant else {}
        settings.update(trial.params)
        variant: dict[str, Any] = {
            "name": f"screen-{trial.trial_id}",
            "methods": [trial.method],
            "settings": settings,
        }
        if spec.objective == "per_pair":
            variant["pairs"] = trial.pair_names()
        variants.append(variant)
    methods = list(dict.fromkeys([t.method for t in picked] + list(spec.fidelity.also_confirm)))
    resources = dataclasses.asdict(spec.resources)
    if 0 < resources["gpus_per_worker"] < 1:
        resources["gpus_per_worker"] = 1.0  # a video-mode run needs a whole GPU
    data = {
        "name": f"{spec.name}-confirm",
        "description": f"the confirm stage of {spec.name}: its screen's best, in video mode",
        "benchmark": list(spec.benchmarks),
        "pairs": [p for _, p in spec.pairs],
        "methods": methods,
        "settings": dict(spec.settings),
        "variants": variants,
        "seeds": list(spec.seeds),
        "searcher": "grid",
        "objective": spec.objective,
        "metric": spec.metric,
        "resources": resources,
        "max_failures": spec.max_failures,
        "node_failures": spec.node_failures,
        "keep": spec.keep,
        "tracking": spec.tracking,
        "tables": list(spec.tables),
    }
    return parse_spec(data, source=f"{spec.name}'s confirm stage")


def stage_location(parent: StudyDir, stage: str) -> str:
    return parent.store.uri(stage)
