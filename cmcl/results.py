"""A study's results as two Parquet datasets with one schema whatever the benchmark.

``<study>/results/`` holds one row per evaluation of every ended run;
``<study>/summaries/`` one row per ended run (done, or stopped early by
ASHA). Both are written by the study's driver only (one writer: its lease),
in chunks named ``part-<first>-<last>.parquet`` after the flush numbers they
hold; a flush writes the evaluations first, then the summaries, each as one
whole file (docs/results-format.md).

* **One schema.** Every column has the same name and type in every study:
  per-class accuracies are a list column (``class_acc``), loss terms a map
  (``losses``), settings typed ``cfg.<key>`` columns from the RunConfig
  dataclasses (a setting that is None is a null of its declared type, never a
  null-typed column). ``pyarrow.dataset.dataset([a/results, b/results])`` and
  ``pd.concat`` read two studies, of two benchmarks, as one table. The file
  metadata carries :data:`SCHEMA_VERSION`.
* **Few files.** Chunks are merged as they accumulate (eight chunks of one
  size become one eight times larger), so a study of N flushes has
  O(log N) files here, not one per run.
* **Safe against a killed writer.** A merged chunk is written before the
  chunks it replaces are deleted; until then readers skip a chunk whose flush
  numbers another chunk covers (:func:`live_chunks`). An evaluations chunk
  without its summaries chunk (killed between the two writes) is ignored,
  and removed by the next driver, whose runs are flushed again.

No torch, no Ray.
"""

from __future__ import annotations

import dataclasses
import io
import math
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from cmcl.common import IDENTITY
from cmcl.filestore import FileStore

SCHEMA_VERSION = "2"
RESULTS_DIR = "results"
SUMMARIES_DIR = "summaries"
METADATA_KEY = b"cmcl.schema_version"

EVALUATION_METRICS = (
    "target_acc",
    "target_acc_rgb",
    "target_acc_flow",
    "target_mean_class_acc",
    "pl_coverage",
    "pl_acc",
    "target_entropy",
    "snd",
    "source_val_acc",
)
"""Float columns of an evaluation row, as the engine names them (docs/results-format.md)."""
SUMMARY_METRICS = (*EVALUATION_METRICS, "target_acc_std")
RUN_STATES = ("done", "stopped")
"""How an ended run ended: every step trained, or stopped early by the study's scheduler."""

_CHUNK = re.compile(r"^part-(\d{6})-(\d{6})\.parquet$")
MERGE_FAN_IN = 8
"""A merge takes this many chunks of one size class; files grow as O(log N) of the flushes."""


# -- schema -----------------------------------------------------------------------------


def _arrow_type(annotation: Any) -> pa.DataType:
    optional = typing.get_args(annotation)
    if optional:  # X | None
        (annotation,) = [a for a in optional if a is not type(None)]
    mapping = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}
    if annotation not in mapping:
        raise TypeError(f"no results column type for a setting of type {annotation!r}")
    return mapping[annotation]


@lru_cache(maxsize=1)
def config_fields() -> tuple[pa.Field, ...]:
    """``cfg.<section>.<field>`` of every RunConfig setting, typed from its dataclass."""
    from cmcl.config import SECTIONS, RunConfig

    hints = typing.get_type_hints(RunConfig)
    fields = []
    for section in SECTIONS:
        cls = hints[section]
        section_hints = typing.get_type_hints(cls)
        for item in dataclasses.fields(cls):
            fields.append(
                pa.field(f"cfg.{section}.{item.name}", _arrow_type(section_hints[item.name]))
            )
    return tuple(fields)


def _identity_fields() -> list[pa.Field]:
    return [pa.field(k, pa.int64() if k == "seed" else pa.string()) for k in IDENTITY]


def _with_version(fields: Iterable[pa.Field]) -> pa.Schema:
    return pa.schema(list(fields), metadata={METADATA_KEY: SCHEMA_VERSION.encode()})


@lru_cache(maxsize=1)
def evaluation_schema() -> pa.Schema:
    """One evaluation of one run."""
    return _with_version(
        [
            *_identity_fields(),
            pa.field("stage", pa.string()),
            pa.field("step", pa.int64()),
            pa.field("global_step", pa.int64()),
            pa.field("lr", pa.float64()),
            pa.field("elapsed_s", pa.float64()),
            *(pa.field(m, pa.float64()) for m in EVALUATION_METRICS),
            pa.field("class_acc", pa.list_(pa.float64())),
            pa.field("losses", pa.map_(pa.string(), pa.float64())),
            *config_fields(),
        ]
    )


@lru_cache(maxsize=1)
def summary_schema() -> pa.Schema:
    """One ended run: how it ended and its reported numbers (SPEC section 7's rule)."""
    return _with_version(
        [
            *_identity_fields(),
            pa.field("state", pa.string()),
            pa.field("rule", pa.string()),
            pa.field("eval_last_k", pa.int64()),
            pa.field("evaluations", pa.int64()),
            *(pa.field(m, pa.float64()) for m in SUMMARY_METRICS),
            pa.field("best_target_acc", pa.float64()),
            pa.field("best_stage", pa.string()),
            pa.field("best_step", pa.int64()),
            pa.field("final_target_acc", pa.float64()),
            pa.field("final_step", pa.int64()),
            pa.field("steps", pa.int64()),
            pa.field("wall_s", pa.float64()),
            pa.field("extra", pa.map_(pa.string(), pa.float64())),
            pa.field("run_dir", pa.string()),
            pa.field("has_features", pa.bool_()),
            pa.field("has_weights", pa.bool_()),
            pa.field("attempts", pa.int64()),
            pa.field("node_failures", pa.int64()),
            *config_fields(),
        ]
    )


# -- rows -------------------------------------------------------------------------------


def _float(value: Any) -> float:
    try:
        return math.nan if value is None else float(value)
    except (TypeError, ValueError):
        return math.nan


def _class_accuracies(row: Mapping[str, Any]) -> list[float]:
    found = {}
    for key, value in row.items():
        if key.startswith("class_acc_") and key[len("class_acc_") :].isdigit():
            found[int(key[len("class_acc_") :])] = _float(value)
    return [found.get(c, math.nan) for c in range(max(found) + 1)] if found else []


def _losses(row: Mapping[str, Any]) -> list[tuple[str, float]]:
    return [(k[len("loss_") :], _float(v)) for k, v in row.items() if k.startswith("loss_")]


def _settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """``RunConfig.flat()`` -> ``cfg.*`` values (unknown keys are an error: one schema)."""
    columns = {f.name for f in config_fields()}
    values = {f"cfg.{k}": v for k, v in settings.items()}
    unknown = sorted(set(values) - columns)
    if unknown:
        raise ValueError(f"settings not in the results schema: {', '.join(unknown)}")
    return values


@dataclass(frozen=True)
class RunIdentity:
    study: str
    trial_id: str
    run_id: str
    benchmark: str
    pair: str
    method: str
    seed: int
    variant: str = ""

    def columns(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY}


def evaluation_rows(
    history: Sequence[Mapping[str, Any]], *, identity: RunIdentity, settings: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A run's evaluations (rows of its metrics.parquet / the engine's metrics) as result rows."""
    fixed = {**identity.columns(), **_settings(settings)}
    rows = []
    for row in history:
        rows.append(
            {
                **fixed,
                "stage": str(row["stage"]),
                "step": int(row["step"]),
                "global_step": int(row["global_step"]),
                "lr": _float(row.get("lr")),
                "elapsed_s": _float(row.get("elapsed_s")),
                **{m: _float(row.get(m)) for m in EVALUATION_METRICS},
                "class_acc": _class_accuracies(row),
                "losses": _losses(row),
            }
        )
    return rows


def summary_row(
    summary: Mapping[str, Any],
    *,
    identity: RunIdentity,
    settings: Mapping[str, Any],
    state: str,
    run_dir: str,
    has_features: bool,
    has_weights: bool,
    attempts: int = 1,
    node_failures: int = 0,
    extra: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """One ended run (``summary`` is the engine's :func:`cmcl.engine.reporting.summarise`)."""
    if state not in RUN_STATES:
        raise ValueError(f"run state must be one of {RUN_STATES}; got {state!r}")
    best = summary.get("best") or {}
    final = summary.get("final") or {}
    return {
        **identity.columns(),
        "state": state,
        "rule": str(summary.get("rule", "")),
        "eval_last_k": int(summary.get("eval_last_k", 0) or 0),
        "evaluations": int(summary.get("evaluations", 0) or 0),
        **{m: _float(summary.get(m)) for m in SUMMARY_METRICS},
        "best_target_acc": _float(best.get("target_acc")),
        "best_stage": best.get("stage"),
        "best_step": None if best.get("step") is None else int(best["step"]),
        "final_target_acc": _float(final.get("target_acc")),
        "final_step": None if final.get("step") is None else int(final["step"]),
        "steps": None if summary.get("steps") is None else int(summary["steps"]),
        "wall_s": _float(summary.get("wall_s")),
        "extra": [(str(k), _float(v)) for k, v in (extra or {}).items()],
        "run_dir": run_dir,
        "has_features": bool(has_features),
        "has_weights": bool(has_weights),
        "attempts": int(attempts),
        "node_failures": int(node_failures),
        **_settings(settings),
    }


def table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """Rows -> a table of exactly ``schema`` (missing settings become typed nulls)."""
    columns = {f.name: [row.get(f.name) for row in rows] for f in schema}
    return pa.Table.from_pydict(columns, schema=schema)


# -- chunks -----------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Chunk:
    """A chunk file holding flushes ``first`` to ``last`` (inclusive)."""

    first: int
    last: int

    @property
    def name(self) -> str:
        return f"part-{self.first:06d}-{self.last:06d}.parquet"

    @property
    def span(self) -> int:
        return self.last - self.first + 1

    def covers(self, other: Chunk) -> bool:
        return self != other and self.first <= other.first and other.last <= self.last


def parse_chunk(name: str) -> Chunk | None:
    match = _CHUNK.match(name)
    if match is None:
        return None
    first, last = int(match[1]), int(match[2])
    return Chunk(first, last) if first <= last else None


def chunks_in(store: FileStore, directory: str) -> list[Chunk]:
    """Every chunk file in ``directory`` of ``store``, covered ones included."""
    found = []
    for entry in store.list(directory):
        chunk = parse_chunk(entry.path.rsplit("/", 1)[-1])
        if chunk is not None:
            found.append(chunk)
    return sorted(found)


def live_chunks(chunks: Iterable[Chunk]) -> list[Chunk]:
    """The chunks no other chunk covers (those a merge has not replaced yet are skipped)."""
    chunks = sorted(set(chunks))
    return [c for c in chunks if not any(o.covers(c) for o in chunks)]


def _size_class(chunk: Chunk) -> int:
    span, level = chunk.span, 0
    while span >= MERGE_FAN_IN:
        span //= MERGE_FAN_IN
        level += 1
    return level


def _to_bytes(data: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(data, sink, compression="zstd")
    return sink.getvalue()


class ResultsWriter:
    """Flushes ended runs to ``results/`` and ``summaries/`` of a study; merges chunks.

    One instance per driver; the lease guarantees there is one driver.
    :meth:`recover` runs first: it deletes what a killed writer left half done.
    """

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.next_flush = 1

    def recover(self) -> list[str]:
        """Remove what a killed writer left half done; return it (relative paths).

        A chunk counts when both datasets hold it; the counted chunks no other
        covers are kept, every other chunk file is removed. Sets the next flush number.
        """
        evals = chunks_in(self.store, RESULTS_DIR)
        sums = chunks_in(self.store, SUMMARIES_DIR)
        keep = set(live_chunks(set(evals) & set(sums)))
        removed = [f"{RESULTS_DIR}/{c.name}" for c in evals if c not in keep]
        removed += [f"{SUMMARIES_DIR}/{c.name}" for c in sums if c not in keep]
        for path in removed:
            self.store.delete(path)
        self.next_flush = max((c.last for c in evals + sums), default=0) + 1
        return removed

    def flush(
        self, evaluations: Sequence[Mapping[str, Any]], summaries: Sequence[Mapping[str, Any]]
    ) -> Chunk:
        """Write one chunk of each dataset (evaluations first) and merge if due."""
        chunk = Chunk(self.next_flush, self.next_flush)
        self.next_flush += 1
        self.store.write_bytes(
            f"{RESULTS_DIR}/{chunk.name}", _to_bytes(table(evaluations, evaluation_schema()))
        )
        self.store.write_bytes(
            f"{SUMMARIES_DIR}/{chunk.name}", _to_bytes(table(summaries, summary_schema()))
        )
        self.merge()
        return chunk

    def merge(self) -> None:
        """Merge :data:`MERGE_FAN_IN` consecutive live chunks of one size class, repeatedly."""
        while True:
            group = _mergeable(study_chunks(self.store))
            if group is None:
                return
            merged = Chunk(group[0].first, group[-1].last)
            for directory, schema in (
                (RESULTS_DIR, evaluation_schema()),
                (SUMMARIES_DIR, summary_schema()),
            ):
                parts = [self.read_chunk(directory, c) for c in group]
                self.store.write_bytes(
                    f"{directory}/{merged.name}", _to_bytes(pa.concat_tables(parts).cast(schema))
                )
            for directory in (RESULTS_DIR, SUMMARIES_DIR):
                for chunk in group:
                    self.store.delete(f"{directory}/{chunk.name}")

    def read_chunk(
        self, directory: str, chunk: Chunk, columns: Sequence[str] | None = None
    ) -> pa.Table:
        with self.store.open_input_file(f"{directory}/{chunk.name}") as handle:
            return pq.read_table(handle, columns=list(columns) if columns else None)


def _mergeable(live: Sequence[Chunk]) -> list[Chunk] | None:
    """The first run of MERGE_FAN_IN consecutive chunks of one size class, if any."""
    run: list[Chunk] = []
    for chunk in live:
        if run and (_size_class(chunk) != _size_class(run[0]) or chunk.first != run[-1].last + 1):
            run = []
        run.append(chunk)
        if len(run) == MERGE_FAN_IN:
            return run
    return None


# -- reading ----------------------------------------------------------------------------


def study_chunks(store: FileStore) -> list[Chunk]:
    """The chunks a reader uses: those both datasets hold (a chunk in one only is half a
    flush or half a merge) and no other such chunk covers."""
    evals = set(chunks_in(store, RESULTS_DIR))
    sums = set(chunks_in(store, SUMMARIES_DIR))
    return live_chunks(evals & sums)


def read_dataset(
    store: FileStore,
    directory: str,
    *,
    columns: Sequence[str] | None = None,
    chunks: Sequence[Chunk] | None = None,
) -> pa.Table:
    """One dataset of a study (``results`` or ``summaries``), only ``columns`` if given."""
    schema = evaluation_schema() if directory == RESULTS_DIR else summary_schema()
    use = study_chunks(store) if chunks is None else chunks
    parts = []
    for chunk in use:
        with store.open_input_file(f"{directory}/{chunk.name}") as handle:
            parts.append(pq.read_table(handle, columns=list(columns) if columns else None))
    if not parts:
        wanted = [schema.field(c) for c in columns] if columns else list(schema)
        return pa.schema(wanted).empty_table()
    return pa.concat_tables(parts, promote_options="permissive")


def ended_runs(store: FileStore) -> dict[str, str]:
    """run_id -> state (``done``/``stopped``) of every run the study's summaries hold."""
    data = read_dataset(store, SUMMARIES_DIR, columns=["run_id", "state"])
    return dict(
        zip(data.column("run_id").to_pylist(), data.column("state").to_pylist(), strict=True)
    )
