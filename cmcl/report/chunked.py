"""Reader of results format version 2: chunked ``results/`` and ``summaries/`` datasets.

A study directory (a local path or an object-store URI, read through
:class:`cmcl.filestore.FileStore`) holds ``summaries/part-*.parquet``, one row
per ended run, and ``results/part-*.parquet``, one row per evaluation of those
runs, written by :mod:`cmcl.results` a flush at a time; the chunks a reader
uses are :func:`cmcl.results.study_chunks` (a chunk half written or half
merged by a killed writer is skipped). One chunk of each dataset, holding the
same runs, is one batch; only the columns the report uses are read (Parquet
column projection), and a chunk is dropped once reduced. Which chunk holds
each run is remembered, to read a few runs' curves again from their chunk only.

Only ended runs are here (done, or stopped early by the study's scheduler):
runs still training are in no chunk yet. Run directories (``runs/<run_id>/``,
features and weights) are never listed: the summaries say which runs have them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import pandas as pd
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

    def _read(
        self,
        directory: str,
        chunk: Chunk,
        columns: Sequence[str] | None,
        run_ids: Collection[str] | None = None,
    ) -> pd.DataFrame | None:
        relative = f"{directory}/{chunk.name}"
        try:
            with self.store.open_input_file(relative) as handle:
                present = pq.read_schema(handle).names
            wanted = [c for c in present if c in columns] if columns else None
            if columns and "cfg.*" in columns:
                wanted = [*(wanted or []), *(c for c in present if c.startswith("cfg."))]
            filters = [("run_id", "in", sorted(run_ids))] if run_ids is not None else None
            with self.store.open_input_file(relative) as handle:
                table = pq.read_table(handle, columns=wanted, filters=filters)
        except Exception as error:  # a chunk truncated by a lost node or an object store hiccup
            self.problem(
                f"{self.store.uri(relative)}: unreadable Parquet ({type(error).__name__}: "
                f"{error}); its runs are left out"
            )
            return None
        return table.to_pandas()

    def batches(self) -> Iterator[Batch]:
        self.chunks = study_chunks(self.store)
        for chunk in self.chunks:
            summaries = self._read(SUMMARIES_DIR, chunk, (*SUMMARY_COLUMNS, "cfg.*"))
            if summaries is None:
                continue
            evals = self._read(RESULTS_DIR, chunk, EVAL_COLUMNS)
            if evals is None:
                continue
            runs = self._runs(summaries)
            for run_id in runs["run_id"]:
                self.chunk_of[run_id] = chunk
            yield Batch(tidy_evals(evals, self.info.name), runs)

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
        needed = None if columns is None else [*dict.fromkeys(("run_id", *columns))]
        for chunk in chunks:
            wanted = (
                None if run_ids is None else [r for r in run_ids if self.chunk_of.get(r) == chunk]
            )
            evals = self._read(RESULTS_DIR, chunk, needed, wanted)
            if evals is not None:
                yield tidy_evals(evals, self.info.name)
