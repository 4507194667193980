"""What the studies planned: which paper-table cells a missing number is a warning for.

A cell (row, pair) of a paper table is *planned* when a study whose runs the
table reads lists the row's method and the pair, on the table's benchmark,
with settings that can take the row's required values (its fixed settings, a
variant's, a searched value or range, the command line's ``--set``, or the
paper default when none of them sets the key). A planned cell without a
finished run is missing (a run failed, was stopped or has not run yet); an
unplanned one was simply never asked for.

The plan is read from the study directory's ``spec.yaml`` (the validated,
possibly command-line-overridden study) with ``study.json``'s ``run_overrides``;
a study directory without them (an old one, or bare run directories) plans
nothing that can be known, so every empty cell of its tables counts as
missing, as before plans were read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from cmcl.common import normalise_pair
from cmcl.report.aggregate import matches
from cmcl.report.paper import PAPER_DEFAULTS, PaperRow
from cmcl.report.source import StudyInfo


@dataclass(frozen=True)
class StudyPlan:
    """The planned part of one study file, as the report needs it."""

    study: str
    benchmarks: tuple[str, ...]
    pairs: tuple[str, ...]
    methods: tuple[str, ...]
    settings: dict[str, Any] = field(default_factory=dict)
    variants: tuple[tuple[tuple[str, ...] | None, dict[str, Any]], ...] = ()
    """(methods it applies to or None for all, settings) per variant."""
    search: dict[str, Any] = field(default_factory=dict)
    run_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    def covers(self, benchmark: str, row: PaperRow, pair: str) -> bool:
        """True when a run of this study fills ``row`` on ``benchmark`` and ``pair``."""
        if benchmark not in self.benchmarks or normalise_pair(pair) not in self.pairs:
            return False
        if row.method not in self.methods:
            return False
        variants = [s for only, s in self.variants if only is None or row.method in only]
        fixed = self.run_overrides.get(benchmark, {})
        return any(
            all(self._may_take({**variant, **fixed}, c[4:], c, v) for c, v in row.required)
            for variant in (variants or [{}])
        )

    def _may_take(self, variant: dict[str, Any], key: str, column: str, wanted: Any) -> bool:
        if key in variant:
            return matches(variant[key], wanted)
        if key in self.settings:
            return matches(self.settings[key], wanted)
        if key in self.search:
            return _searched(self.search[key], wanted)
        default = PAPER_DEFAULTS.get(column)
        return default is None or matches(default, wanted)


def _searched(entry: Any, wanted: Any) -> bool:
    if isinstance(entry, list):
        entry = {"values": entry}
    if not isinstance(entry, dict):
        return True
    values = entry.get("values", entry.get("grid"))
    if isinstance(values, list):
        return any(matches(v, wanted) for v in values)
    try:
        return float(entry["low"]) <= float(wanted) <= float(entry["high"])
    except (KeyError, TypeError, ValueError):
        return True


def _names(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def study_plan(info: StudyInfo) -> StudyPlan | None:
    """The plan of a study directory; None when it records none (see the module docstring)."""
    if info.kind != "study":
        return None
    try:
        data = yaml.safe_load(info.spec) if info.spec else None
    except yaml.YAMLError:
        data = None
    meta = info.meta
    if not isinstance(data, dict):
        data = {}
    methods = _names(data.get("methods", meta.get("methods")))
    pairs = _names(data.get("pairs", meta.get("pairs")))
    if "all" in pairs:  # a hand-written spec.yaml; study.json lists the pairs themselves
        pairs = _names(meta.get("pairs"))
    benchmarks = _names(data.get("benchmark", meta.get("benchmarks")))
    if not (methods and pairs and benchmarks) or "all" in pairs:
        return None
    variants = tuple(
        (_names(v["methods"]) if v.get("methods") else None, dict(v.get("settings") or {}))
        for v in data.get("variants") or []
        if isinstance(v, dict)
    )
    overrides = meta.get("run_overrides") or {}
    return StudyPlan(
        study=info.name,
        benchmarks=benchmarks,
        pairs=tuple(normalise_pair(p) for p in pairs),
        methods=methods,
        settings=dict(data.get("settings") or {}),
        variants=variants,
        search=dict(data.get("search") or {}),
        run_overrides={str(b): dict(o) for b, o in overrides.items() if isinstance(o, dict)},
    )


def planned_cells(
    plans: list[StudyPlan | None], benchmark: str, row: PaperRow, pairs: tuple[str, ...]
) -> tuple[str, ...]:
    """The pairs of ``row`` that ``plans`` planned; every pair when a study's plan is unknown."""
    if not plans or any(p is None for p in plans):
        return pairs
    return tuple(
        pair
        for pair in pairs
        if any(p is not None and p.covers(benchmark, row, pair) for p in plans)
    )
