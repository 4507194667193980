"""The paper's Tables 2-8 as data, and which run settings each row stands for.

The numbers live in ``paper_tables.json`` (package data, a copy of
shared/paper/tables.json). A row names a ``method`` and sometimes settings
(Table 5 sampling, Table 6 lambda and T, Table 7 where the projection head is
used); those become required values of ``cfg.*`` columns of the results. The
``modality``/``domain`` keys of Tables 4 and 8 only describe what the method
does, so they are shown but never filtered on. Rows without a ``method``
(Table 2's numbers from other papers' setups) cannot be reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# One spelling of a pair and one copy of the paper's numbers, shared with the study layer;
# the report's modules import them from here.
from cmcl.common import normalise_pair as normalise_pair
from cmcl.common import pair_label as pair_label
from cmcl.common import paper_numbers as paper_data

# The settings a paper row does not name take the paper's defaults (SPEC sections 3-6).
PAPER_DEFAULTS: dict[str, Any] = {
    "cfg.method.lam": 1.25,
    "cfg.method.threshold": 0.8,
    "cfg.method.tau": 0.1,
    "cfg.method.delta": 0.5,
    "cfg.data.sampling": "independent",
    "cfg.method.head_in_modality": True,
    "cfg.method.head_in_domain": False,
}

SETTING_NAMES: dict[str, str] = {
    "cfg.method.lam": "lambda",
    "cfg.method.threshold": "T",
    "cfg.method.tau": "tau",
    "cfg.method.delta": "delta",
    "cfg.data.sampling": "sampling",
    "cfg.method.head_in_modality": "head in modality",
    "cfg.method.head_in_domain": "head in domain",
}


def _sampling(independent: Any) -> str:
    return "independent" if bool(independent) else "synchronised"


# Row key in tables.json -> (results column, converter of the paper's value).
ROW_SETTINGS: dict[str, tuple[str, Any]] = {
    "independent_windows": ("cfg.data.sampling", _sampling),
    "lambda": ("cfg.method.lam", float),
    "threshold": ("cfg.method.threshold", float),
    "head_in_modality": ("cfg.method.head_in_modality", bool),
    "head_in_domain": ("cfg.method.head_in_domain", bool),
}
DESCRIPTIVE_KEYS = ("modality", "domain")

TITLES: dict[str, str] = {
    "table2_ucf_hmdb": "Table 2: UCF101 ↔ HMDB51",
    "table3_epic": "Table 3: EPIC-Kitchens, six domain pairs",
    "table4_ablation_epic": "Table 4: cross-modal and cross-domain terms (EPIC mean)",
    "table5_sampling_epic": "Table 5: sampling RGB and flow windows independently (EPIC mean)",
    "table6_hyperparameters_epic": "Table 6: sensitivity to lambda and T (EPIC mean)",
    "table7_projection_head_epic": "Table 7: where the projection head is used (EPIC mean)",
    "table8_alignment_epic": "Table 8: contrastive vs adversarial alignment (EPIC mean)",
}
SUMMARY_COLUMNS = ("Mean", "Gain", "Gain via sampling")


@dataclass(frozen=True)
class PaperRow:
    """One row of a paper table."""

    setting: str
    method: str | None
    """None: a number from another paper's setup, not reproducible with cmcl."""
    required: tuple[tuple[str, Any], ...]
    """(results column, value) pairs a run must have to count for this row."""
    descriptive: tuple[tuple[str, Any], ...]
    values: tuple[float | None, ...]
    unique_setting: bool = True
    """False when another row of the table has the same setting name."""

    def label(self) -> str:
        """The setting name, plus the row's own settings where the name alone is ambiguous."""
        if self.unique_setting:
            return self.setting
        extra = [f"{SETTING_NAMES.get(c, c)}={_show(v)}" for c, v in self.required]
        extra += [f"{k}={_show(v)}" for k, v in self.descriptive]
        return f"{self.setting} [{', '.join(extra)}]" if extra else self.setting


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


@dataclass(frozen=True)
class PaperTable:
    """A paper table: its family (epic or ucf-hmdb), columns and rows."""

    key: str
    family: str
    title: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...]
    note: str = ""

    @property
    def pair_columns(self) -> tuple[str, ...]:
        """The per-pair columns, normalised (``D2-D1``); empty for mean-only tables."""
        return tuple(normalise_pair(c) for c in self.columns if c not in SUMMARY_COLUMNS)

    @property
    def is_ablation(self) -> bool:
        """Tables 4-8 compare rows of one method family; Tables 2 and 3 list methods."""
        return not self.pair_columns

    def paper_value(self, row: PaperRow, column: str) -> float | None:
        """The paper's number for ``column`` (a pair, ``Mean``, ``Gain``...), or None."""
        wanted = normalise_pair(column) if column not in SUMMARY_COLUMNS else column
        for name, value in zip(self.columns, row.values, strict=True):
            key = normalise_pair(name) if name not in SUMMARY_COLUMNS else name
            if key == wanted:
                return value
        return None


def _row(raw: dict[str, Any], unique: bool) -> PaperRow:
    required = tuple(
        (ROW_SETTINGS[key][0], ROW_SETTINGS[key][1](raw[key])) for key in ROW_SETTINGS if key in raw
    )
    descriptive = tuple((key, raw[key]) for key in DESCRIPTIVE_KEYS if key in raw)
    return PaperRow(
        setting=raw["setting"],
        method=raw.get("method"),
        required=required,
        descriptive=descriptive,
        values=tuple(raw["values"]),
        unique_setting=unique,
    )


def paper_tables() -> dict[str, PaperTable]:
    """Every table key (``table2_ucf_hmdb``, ``table3_epic``...) -> its :class:`PaperTable`."""
    data = paper_data()
    tables = {}
    for key, raw in data.items():
        if not key.startswith("table"):
            continue
        names = [r["setting"] for r in raw["rows"]]
        tables[key] = PaperTable(
            key=key,
            family="ucf-hmdb" if key.endswith("ucf_hmdb") else "epic",
            title=TITLES.get(key, key),
            columns=tuple(raw["columns"]),
            rows=tuple(_row(r, names.count(r["setting"]) == 1) for r in raw["rows"]),
            note=raw.get("note", ""),
        )
    return tables


def paper_sensitivity(method: str = "cmco") -> dict[str, dict[float, float]]:
    """Table 6 as curves: for lambda and T, value -> the paper's mean accuracy of ``method``,
    the other setting at the paper's default (``{"cfg.method.lam": {1.0: 50.1, ...}}``)."""
    table = paper_tables()["table6_hyperparameters_epic"]
    curves: dict[str, dict[float, float]] = {}
    for row in table.rows:
        settings = dict(row.required)
        if row.method != method or row.values[0] is None:
            continue
        for column, value in settings.items():
            others = [c for c in settings if c != column]
            if all(settings[c] == PAPER_DEFAULTS[c] for c in others):
                curves.setdefault(column, {})[float(value)] = float(row.values[0])
    return {c: dict(sorted(points.items())) for c, points in curves.items()}


def family_pairs(family: str) -> tuple[str, ...]:
    """The paper's pairs of a family, normalised, in the paper's order."""
    key = "ucf_hmdb_pairs" if family == "ucf-hmdb" else "epic_pairs"
    return tuple(normalise_pair(p) for p in paper_data()[key])


def benchmark_family(name: str) -> tuple[str, bool]:
    """(paper family ``epic`` | ``ucf-hmdb``, synthetic?) of a results benchmark name."""
    from cmcl.data.benchmarks import BENCHMARKS  # torch-free registry

    known = BENCHMARKS.get(name)
    if known is not None:
        return known.paper_benchmark, known.synthetic
    lowered = name.lower()
    family = "ucf-hmdb" if "ucf" in lowered or "hmdb" in lowered else "epic"
    return family, lowered.startswith("synthetic")


def class_names(name: str) -> tuple[str, ...]:
    """Class names of a benchmark (empty when the registry does not know it)."""
    from cmcl.data.benchmarks import BENCHMARKS

    known = BENCHMARKS.get(name)
    return known.class_names if known is not None else ()
