"""Reading study and run directories into one table of runs, in memory flat in their number.

The formats are docs/results-format.md. What is read, and by which reader:

- a study directory in results format version 2 (chunked ``results/`` and
  ``summaries/``): :mod:`cmcl.report.chunked`, from a local path or an
  object-store URI (``s3://bucket/prefix/NAME``) through
  :class:`cmcl.filestore.FileStore`;
- a study directory in version 1 (``results/evals-*.parquet``,
  ``runs/<run_id>/summary.json``) and bare run directories (``cmcl train
  --out DIR``: ``config.json``, ``metrics.parquet``): :mod:`cmcl.report.legacy`,
  local paths only.

A directory holding neither is searched one level down, so ``cmcl report
studies_out/`` reads every study in it. Every study also has ``study.json``,
``spec.yaml`` and, for HPO studies, ``optuna.journal``.

Memory: each reader yields a batch of runs (a chunk, or a few hundred runs'
files) with only the columns used; a batch is reduced to per-run numbers
(accuracy under every rule, the checkpoint each criterion picks, counts) and
dropped. :class:`Results` keeps one row per run; the evaluations of a few
runs (training curves) are read again on demand, and :attr:`Results.evals`
(every evaluation at once) only when something asks for it (tests, small studies).

Partially written studies are normal (a study still running, a node lost): a
missing or unreadable file becomes a line in :attr:`Results.problems`, and a
version-1 run without ``summary.json`` whose last adaptation step is short of
``cfg.train.steps`` is marked unfinished so the tables can leave it out, as is
a version-2 run stopped early by the study's scheduler.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl.common import IDENTITY
from cmcl.filestore import FileStore, is_uri
from cmcl.report.aggregate import RULES, run_accuracy
from cmcl.report.chunked import ChunkedStudy, is_chunked
from cmcl.report.legacy import LegacyStudy, RunDirs
from cmcl.report.legacy import flatten_config as flatten_config
from cmcl.report.progress import Progress
from cmcl.report.retrieval import EXTRA_KEYS
from cmcl.report.selection import checkpoint_values
from cmcl.report.source import CURVE_COLUMNS, RUN_INFO, Source, tidy_evals
from cmcl.report.source import StudyInfo as StudyInfo

SINGLE_RUNS = "single runs"
"""Study name shared by bare run directories, so that their seeds pool together."""
STUDY_MARKERS = ("results", "summaries", "study.json", "spec.yaml", "runs")
RUN_MARKERS = ("config.json", "metrics.parquet")


@dataclass
class Results:
    """Everything read from the given directories, one row per run."""

    runs: pd.DataFrame
    """One row per run: identity, ``run_key``, ``finished``, ``state``, ``run_dir``,
    ``has_features``, ``wall_s``, ``n_evals``, ``last_adapt_step``, the retrieval numbers
    a summary recorded (:data:`cmcl.report.retrieval.EXTRA_KEYS`, NaN if none), ``cfg.*``."""
    studies: list[StudyInfo]
    problems: list[str]
    accuracy: dict[str, pd.DataFrame] = field(default_factory=dict)
    """Rule -> :func:`cmcl.report.aggregate.run_accuracy` of every run."""
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)
    """:func:`cmcl.report.selection.checkpoint_values` of every run."""
    sources: list[Source] = field(default_factory=list, repr=False)
    fidelity: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(location, study.json) of each two-fidelity study read: its stages are in
    :attr:`studies`; the report adds a Fidelity section for each."""

    def study(self, name: str) -> StudyInfo | None:
        return next((s for s in self.studies if s.name == name), None)

    def curves(self, run_keys: Collection[str]) -> pd.DataFrame:
        """The evaluations (stage, step, global_step, target_acc) of ``run_keys`` only."""
        return self._evaluations(run_keys, CURVE_COLUMNS)

    @property
    def evals(self) -> pd.DataFrame:
        """Every evaluation of every run, all columns: memory grows with the runs (the
        report never reads this; tests and small studies do)."""
        return self._evaluations(None, None)

    def _evaluations(
        self, run_keys: Collection[str] | None, columns: Sequence[str] | None
    ) -> pd.DataFrame:
        parts = []
        for source in self.sources:
            prefix = f"{source.info.name}/"
            ids = None
            if run_keys is not None:
                ids = {k[len(prefix) :] for k in run_keys if k.startswith(prefix)}
                if not ids:
                    continue
            parts += [p for p in source.evaluations(ids, columns) if len(p)]
        if not parts:
            return pd.DataFrame(columns=[*IDENTITY, "run_key", "stage", "step", "global_step"])
        return pd.concat(parts, ignore_index=True, sort=False)


def load_results(dirs: Sequence[str | Path], *, progress: Progress | None = None) -> Results:
    """Read every study and run directory in ``dirs`` (see the module docstring)."""
    loader = _Loader(progress or Progress(None))
    for given in dirs:
        if is_uri(str(given)):
            loader.add_uri(str(given))
            continue
        path = Path(str(given).removeprefix("file://"))
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected a study or run directory)")
        found = loader.add(path)
        if not found:
            children = sorted(p for p in path.iterdir() if p.is_dir())
            found = sum(loader.add(child) for child in children)
        if not found:
            raise FileNotFoundError(
                f"{path}: no study (results/, summaries/, study.json, spec.yaml) or run "
                "directory (config.json, metrics.parquet) here or one level down"
            )
    return loader.finish()


class _Loader:
    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.sources: list[Source] = []
        self.studies: list[StudyInfo] = []
        self.problems: list[str] = []
        self.bare: RunDirs | None = None
        self.fidelity: list[tuple[str, dict[str, Any]]] = []

    def add(self, path: Path) -> bool:
        if any((path / n).exists() for n in STUDY_MARKERS):
            self._add_study(FileStore(path))
            return True
        if any((path / n).exists() for n in RUN_MARKERS):
            if self.bare is None:
                info = StudyInfo(name=SINGLE_RUNS, path=path.parent, kind="runs", layout="runs")
                self.bare = RunDirs(info, self.problems)
                self.studies.append(info)
                self.sources.append(self.bare)
            self.bare.add(path)
            return True
        return False

    def add_uri(self, uri: str) -> None:
        store = FileStore(uri)
        if any(store.exists(n) for n in STUDY_MARKERS):
            self._add_study(store)
            return
        children = [store.child(name) for name in store.list_dirs()]
        studies = [c for c in children if any(c.exists(n) for n in STUDY_MARKERS)]
        if not studies:
            raise FileNotFoundError(
                f"{uri}: no study directory (results/, summaries/, study.json, spec.yaml) "
                "here or one level down"
            )
        for child in studies:
            self._add_study(child)

    def _read_json(self, store: FileStore, name: str) -> dict[str, Any] | None:
        data = store.read_bytes(name)
        if data is None:
            return None
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            self.problems.append(f"{store.uri(name)}: unreadable JSON ({error}); ignored")
            return None
        return value if isinstance(value, dict) else None

    def _add_study(self, store: FileStore) -> None:
        meta = self._read_json(store, "study.json") or {}
        stages = (meta.get("fidelity") or {}).get("stages")
        if stages:
            # A two-fidelity study: its two stages are the studies (cmcl/study/fidelity.py).
            self.fidelity.append((store.root, meta))
            for stage in stages:
                child = store.child(stage)
                if any(child.exists(n) for n in STUDY_MARKERS):
                    self._add_study(child)
            return
        name = str(meta.get("name") or store.root.rstrip("/").rsplit("/", 1)[-1])
        if any(s.name == name for s in self.studies):
            self.problems.append(f"{store.root}: a study named {name!r} was already read; skipped")
            return
        spec = store.read_bytes("spec.yaml")
        journal = None
        if store.exists("optuna.journal"):
            journal = (
                store.uri("optuna.journal") if store.remote else store.local_path("optuna.journal")
            )
        chunked = is_chunked(store)
        if not chunked and store.remote:
            raise ValueError(
                f"{store.root}: not a study directory in results format version 2 "
                "(no summaries/); version-1 studies are read from a local path only"
            )
        info = StudyInfo(
            name=name,
            path=store.root if store.remote else store.local_path(),
            kind="study",
            meta=meta,
            spec=spec.decode() if spec is not None else None,
            journal=journal,
            layout="2" if chunked else "1",
        )
        self.studies.append(info)
        if chunked:
            self.sources.append(ChunkedStudy(store, info, self.problems))
        else:
            self.sources.append(LegacyStudy(info, self.problems))

    def finish(self) -> Results:
        runs, accuracy, checkpoints = [], {rule: [] for rule in RULES}, []
        for source in self.sources:
            info = source.info
            self.progress.stage(f"reading {info.name} ({_layout_text(info)}, {info.path})")
            count = 0
            for batch in source.batches():
                runs.append(_with_counts(batch.runs, batch.evals))
                for rule in RULES:
                    accuracy[rule].append(run_accuracy(batch.evals, rule))
                checkpoints.append(checkpoint_values(batch.evals))
                count += len(batch.runs)
                self.progress.tick(f"{info.name}: {count} runs read")
            self.progress.stage(f"{info.name}: {count} runs")
        table = _runs_table(runs)
        keys = pd.Index(table["run_key"])
        none = tidy_evals(pd.DataFrame(), "")
        return Results(
            fidelity=self.fidelity,
            runs=table,
            studies=self.studies,
            problems=self.problems,
            accuracy={
                rule: _per_run(parts, keys, run_accuracy(none, rule))
                for rule, parts in accuracy.items()
            },
            checkpoints=_per_run(checkpoints, keys, checkpoint_values(none)),
            sources=self.sources,
        )


def _layout_text(info: StudyInfo) -> str:
    return {"1": "results format 1", "2": "results format 2"}.get(info.layout, "run directories")


def _with_counts(runs: pd.DataFrame, evals: pd.DataFrame) -> pd.DataFrame:
    """Per run: evaluations read, last adaptation step, and whether it finished."""
    if len(evals):
        counts = evals.groupby("run_key").size()
        adapt = evals[evals["stage"] == "adapt"].groupby("run_key")["step"].max()
    else:
        counts = adapt = pd.Series(dtype="int64")
    runs = runs.copy()
    runs["n_evals"] = runs["run_key"].map(counts).fillna(0).astype("int64")
    runs["last_adapt_step"] = runs["run_key"].map(adapt).fillna(0).astype("int64")
    target = pd.to_numeric(runs.get("cfg.train.steps"), errors="coerce")
    reached = runs["last_adapt_step"] >= target if target is not None else False
    state = runs["state"].fillna("").astype(str)
    runs["finished"] = (state == "done") | ((state == "") & reached)
    return runs


def _runs_table(parts: list[pd.DataFrame]) -> pd.DataFrame:
    front = [*RUN_INFO, "n_evals", "last_adapt_step", "finished", *EXTRA_KEYS.values()]
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=front)
    runs = pd.concat(parts, ignore_index=True, sort=False)
    for key in EXTRA_KEYS.values():
        if key not in runs:
            runs[key] = float("nan")
    runs = runs.drop_duplicates("run_key", keep="last").sort_values("run_key", kind="stable")
    runs["finished"] = runs["finished"].astype(bool)
    runs["has_features"] = runs["has_features"].astype(bool)
    runs["wall_s"] = pd.to_numeric(runs["wall_s"], errors="coerce").astype(float)
    cfg = sorted(c for c in runs.columns if c.startswith("cfg."))
    rest = [c for c in runs.columns if c not in front and c not in cfg]
    return runs[[*front, *rest, *cfg]].reset_index(drop=True)


def _per_run(parts: list[pd.DataFrame], keys: pd.Index, empty: pd.DataFrame) -> pd.DataFrame:
    """Per-run rows of every batch, one per run of the runs table, in its order."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty
    table = pd.concat(parts, ignore_index=True).drop_duplicates("run_key", keep="last")
    return table[table["run_key"].isin(keys)].sort_values("run_key").reset_index(drop=True)
