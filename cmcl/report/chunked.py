"""Reader of results format version 2: chunked ``results/`` and ``summaries/`` datasets.

A study directory (a local path or an object-store URI, read through
:class:`cmcl.filestore.FileStore`) holds ``summaries/part-*.parquet``, one row
per ended run, and ``results/part-*.parquet``, one row per evaluation of those
runs, written by :mod:`cmcl.results` a flush at a time; the chunks a reader
uses are :func:`cmcl.results.study_chunks` (a chunk half written or half
merged by a killed writer is skipped). One chunk of each dataset, holding the
same runs, is read a part at a time: the summaries whole (one small row per
run), the evaluations in parts of about :data:`EVAL_ROWS` rows holding whole
runs (a run that spans two parts is held back to the next); only the columns
the report uses are read (Parquet column projection), and a part is dropped
once reduced. Which chunk holds
each run is remembered, to read a few runs' curves again from their chunk only.

Only ended runs are here (done, or stopped early by the study's scheduler):
runs still training are in no chunk yet. Run directories (``runs/<run_id>/``,
features and weights) are never listed: the summaries say which runs have them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cmcl.common import IDENTITY
from cmcl.filestore import FileStore
from cmcl.report.retrieval import EXTRA_KEYS
from cmcl.report.source import (
    EVAL_COLUMNS,
    Batch,
    Source,
    StudyInfo,
    tidy_evals,
    with_pairs_normalised,
)
from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, Chunk, study_chunks

EVAL_ROWS = 32_768
"""Evaluation rows per part of a chunk (a few hundred runs of a default schedule)."""
SUMMARY_COLUMNS = (*IDENTITY, "state", "run_dir", "has_features", "wall_s", "extra")
"""Summary columns read besides ``cfg.*`` (the reported numbers are recomputed from the
evaluations, under the report's rule, as for version 1)."""


def is_chunked(store: FileStore) -> bool:
    """True for a study directory in format version 2 (it has a summaries/ dataset or chunks)."""
    return store.is_dir(SUMMARIES_DIR) or bool(study_chunks(store))


class ChunkedStudy(Source):
    def __init__(self, store: FileStore, info: StudyInfo, problems: list[str]) -> None:
        self.store = store
        self.info = info
        self.problems = problems
        self.chunk_of: dict[str, Chunk] = {}
        """run_id -> the chunk holding it (filled while reading)."""
        self.chunks: list[Chunk] = []

    def _problem(self, relative: str, error: Exception) -> None:
        self.problem(
            f"{self.store.uri(relative)}: unreadable Parquet ({type(error).__name__}: {error}); "
            "its runs are left out"
        )

    def _summaries(self, chunk: Chunk) -> pd.DataFrame | None:
        relative = f"{SUMMARIES_DIR}/{chunk.name}"
        try:
            with self.store.open_input_file(relative) as handle:
                reader = pq.ParquetFile(handle)
                present = reader.schema_arrow.names
                wanted = [c for c in present if c in SUMMARY_COLUMNS or c.startswith("cfg.")]
                return self._runs(reader.read(columns=wanted).to_pandas())
        except Exception as error:  # truncated by a lost node, or an object store's hiccup
            self._problem(relative, error)
            return None

    def _evaluations(
        self, chunk: Chunk, columns: Sequence[str] | None, run_ids: Collection[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """The chunk's evaluation rows (of ``run_ids`` if given), whole runs per part, about
        :data:`EVAL_ROWS` rows each: a merged chunk holds thousands of runs, and reading it
        whole would make memory grow with the study.

        Raises whatever reading the file raises (the caller turns it into a problem line).
        """
        with self.store.open_input_file(f"{RESULTS_DIR}/{chunk.name}") as handle:
            reader = pq.ParquetFile(handle)
            present = reader.schema_arrow.names
            wanted = [c for c in present if c in columns] if columns else None
            wanted = None if wanted is None else [*dict.fromkeys(["run_id", *wanted])]
            keep = None if run_ids is None else pa.array(sorted(run_ids), pa.string())
            if not _runs_together(reader.read(columns=["run_id"]).column("run_id")):
                # Not as cmcl.results writes them: read the chunk whole rather than split a run.
                table = reader.read(columns=wanted)
                if keep is not None:
                    table = table.filter(pc.is_in(table.column("run_id"), value_set=keep))
                yield table.to_pandas()
                return
            pending: pd.DataFrame | None = None
            for batch in reader.iter_batches(batch_size=EVAL_ROWS, columns=wanted):
                if keep is not None:
                    batch = batch.filter(pc.is_in(batch.column("run_id"), value_set=keep))
                frame = batch.to_pandas()
                if pending is not None:
                    frame = pd.concat([pending, frame], ignore_index=True)
                if frame.empty:
                    continue
                # The last run may go on in the next batch: hold its rows back.
                last = frame["run_id"].to_numpy()[-1]
                tail = (frame["run_id"] == last).to_numpy()
                pending = frame[tail]
                if (~tail).any():
                    yield frame[~tail]
            if pending is not None and len(pending):
                yield pending

    def batches(self) -> Iterator[Batch]:
        self.chunks = study_chunks(self.store)
        for chunk in self.chunks:
            runs = self._summaries(chunk)
            if runs is None:
                continue
            for run_id in runs["run_id"]:
                self.chunk_of[run_id] = chunk
            seen: set[str] = set()
            try:
                for part in self._evaluations(chunk, EVAL_COLUMNS):
                    ids = set(part["run_id"].unique())
                    seen |= ids
                    yield Batch(tidy_evals(part, self.info.name), runs[runs["run_id"].isin(ids)])
            except Exception as error:
                self._problem(f"{RESULTS_DIR}/{chunk.name}", error)
                continue
            # Ended runs without a single evaluation (a run stopped before its first one).
            alone = runs[~runs["run_id"].isin(seen)]
            if len(alone):
                yield Batch(tidy_evals(pd.DataFrame(), self.info.name), alone)

    def _runs(self, summaries: pd.DataFrame) -> pd.DataFrame:
        runs = summaries.copy()
        runs["study"] = self.info.name
        runs["run_id"] = runs["run_id"].astype(str)
        runs["variant"] = runs["variant"].fillna("").astype(str)
        runs["seed"] = runs["seed"].fillna(0).astype("int64")
        runs["run_key"] = self.info.name + "/" + runs["run_id"]
        runs["run_dir"] = [self.store.uri(d) if d else None for d in runs["run_dir"]]
        runs["has_features"] = runs["has_features"].fillna(False).astype(bool)
        extras = [dict(e) if e is not None else {} for e in runs.pop("extra")]
        for key in EXTRA_KEYS.values():
            runs[key] = [float(e.get(key, float("nan"))) for e in extras]
        runs = with_pairs_normalised(runs)
        # A run flushed twice (a driver that died after writing it) counts once, the later row.
        return runs.drop_duplicates("run_key", keep="last").sort_values("run_key")

    def evaluations(
        self, run_ids: Collection[str] | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        if run_ids is None:
            chunks = self.chunks or study_chunks(self.store)
        else:
            chunks = sorted({self.chunk_of[r] for r in run_ids if r in self.chunk_of})
        for chunk in chunks:
            mine = None if run_ids is None else [r for r in run_ids if self.chunk_of[r] == chunk]
            try:
                for part in self._evaluations(chunk, columns, mine):
                    yield tidy_evals(part, self.info.name)
            except Exception as error:
                self._problem(f"{RESULTS_DIR}/{chunk.name}", error)


def _runs_together(run_ids: pa.ChunkedArray) -> bool:
    """Whether each run's rows are consecutive (as :class:`cmcl.results.ResultsWriter` writes)."""
    if len(run_ids) < 2:
        return True
    changes = pc.sum(pc.not_equal(run_ids.slice(1), run_ids.slice(0, len(run_ids) - 1)))
    return (changes.as_py() or 0) + 1 == pc.count_distinct(run_ids).as_py()
