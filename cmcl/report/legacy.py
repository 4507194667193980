"""Readers of results format version 1 and of bare run directories (local paths only).

Version 1 (docs/results-format.md): a study directory holds
``results/evals-<run_id>.parquet`` (one file per run, wide columns) and
``runs/<run_id>/`` with ``summary.json`` and ``features.parquet``; a run
directory in ``runs/`` whose rows never reached ``results/`` is read like a
bare one. A bare run directory (``cmcl train --out DIR``) holds
``config.json``, ``metrics.parquet`` and ``summary.json``.

Files are read a batch of runs at a time and dropped once reduced; only the
file of each run is remembered, to read the curves of a few runs again.
A missing or unreadable file becomes a line in ``problems``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl.report.source import (
    Batch,
    Source,
    StudyInfo,
    batched,
    run_rows,
    tidy_evals,
)


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"data": {"pair": ...}}`` or ``{"data.pair": ...}`` -> ``{"cfg.data.pair": ...}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"cfg.{key}.{k}": v for k, v in value.items()})
        elif key != "...":
            flat[f"cfg.{key}"] = value
    return flat


class _LocalSource(Source):
    """JSON and Parquet reads that turn a bad file into a problem line."""

    def read_json(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            self.problem(f"{path}: unreadable JSON ({error}); ignored")
            return None

    def read_parquet(self, path: Path, columns: Sequence[str] | None = None) -> pd.DataFrame | None:
        if not path.exists():
            return None
        try:
            if columns is not None:
                import pyarrow.parquet as pq

                present = set(pq.read_schema(path).names)
                columns = [c for c in columns if c in present]
            return pd.read_parquet(path, columns=columns)
        except Exception as error:  # a file being written, or truncated by a lost node
            self.problem(f"{path}: unreadable Parquet ({type(error).__name__}); ignored")
            return None

    def summary_facts(self, path: Path | None) -> tuple[str, float]:
        """(``done`` when ``summary.json`` exists else ``""``, its ``wall_s``)."""
        summary = path / "summary.json" if path is not None else None
        if summary is None or not summary.exists():
            return "", float("nan")
        try:
            value = json.loads(summary.read_text()).get("wall_s")
        except (OSError, json.JSONDecodeError):
            self.problem(f"{summary}: unreadable JSON; ignored")
            value = None
        return "done", float(value) if isinstance(value, int | float) else float("nan")

    def run_frame(self, path: Path, study: str, columns: Sequence[str] | None = None):
        """A run directory's metrics as evaluation rows (identity and ``cfg.*`` added)."""
        config = self.read_json(path / "config.json")
        if config is None:
            summary = self.read_json(path / "summary.json") or {}
            config = summary.get("config") or None
        if not config:
            self.problem(f"{path}: no config.json (nor a config in summary.json); skipped")
            return None
        metrics = self.read_parquet(path / "metrics.parquet", columns)
        if metrics is None or metrics.empty:
            return None
        cfg = flatten_config(config)
        frame = metrics.copy()
        for key, value in cfg.items():
            frame[key] = [value] * len(frame)
        frame["study"] = study
        frame["trial_id"] = ""
        frame["run_id"] = path.name
        frame["benchmark"] = cfg.get("cfg.data.benchmark", "")
        frame["pair"] = cfg.get("cfg.data.pair", "")
        frame["method"] = cfg.get("cfg.method.name", "")
        frame["seed"] = cfg.get("cfg.train.seed", 0)
        return frame

    def with_run_facts(self, evals: pd.DataFrame, dirs: dict[str, Path]) -> Batch:
        """``evals`` (tidy) and its run rows, with what each run's directory says."""
        runs = run_rows(evals)
        states, walls, paths, features = [], [], [], []
        for run_id in runs["run_id"].astype(str):
            path = dirs.get(run_id)
            state, wall = self.summary_facts(path)
            states.append(state)
            walls.append(wall)
            paths.append(str(path) if path is not None else None)
            features.append(bool(path is not None and (path / "features.parquet").exists()))
        runs["state"] = states
        runs["run_dir"] = paths
        runs["has_features"] = features
        runs["wall_s"] = walls
        return Batch(evals, runs)


class RunDirs(_LocalSource):
    """Bare run directories, pooled as one pseudo-study (their seeds pool together)."""

    def __init__(self, info: StudyInfo, problems: list[str]) -> None:
        self.info = info
        self.problems = problems
        self.paths: list[Path] = []

    def add(self, path: Path) -> None:
        self.paths.append(path)

    def _frames(self, paths: Sequence[Path], columns: Sequence[str] | None = None) -> pd.DataFrame:
        frames = [self.run_frame(p, self.info.name, columns) for p in paths]
        frames = [f for f in frames if f is not None and not f.empty]
        evals = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        return tidy_evals(evals, self.info.name)

    def batches(self) -> Iterator[Batch]:
        for group in batched(self.paths):
            evals = self._frames(group)
            if len(evals):
                yield self.with_run_facts(evals, {p.name: p for p in group})

    def evaluations(
        self, run_ids: Collection[str] | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        chosen = [p for p in self.paths if run_ids is None or p.name in run_ids]
        for group in batched(chosen):
            yield self._frames(group, columns)


class LegacyStudy(_LocalSource):
    """A study directory in results format version 1."""

    def __init__(self, info: StudyInfo, problems: list[str]) -> None:
        self.info = info
        self.problems = problems
        self.path = Path(info.path)
        self.files: dict[str, Path] = {}
        """run_id -> its ``results/evals-*.parquet`` (filled while reading)."""
        self.extra_runs = RunDirs(info, problems)
        """Runs in ``runs/`` whose rows never reached ``results/`` (read like bare ones)."""

    def batches(self) -> Iterator[Batch]:
        run_dirs = {p.name: p for p in sorted((self.path / "runs").glob("*/"))}
        files = sorted((self.path / "results").glob("evals-*.parquet"))
        for group in batched(files):
            evals = self._read(group, record=True)
            if len(evals):
                yield self.with_run_facts(evals, run_dirs)
        for run_id, path in run_dirs.items():
            if run_id not in self.files and (path / "metrics.parquet").exists():
                self.extra_runs.add(path)
        yield from self.extra_runs.batches()

    def _read(
        self, files: Sequence[Path], *, record: bool = False, columns: Sequence[str] | None = None
    ) -> pd.DataFrame:
        frames = []
        for file in files:
            frame = self.read_parquet(file, columns)
            if frame is None or frame.empty:
                continue
            if record:
                for run_id in frame["run_id"].astype(str).unique():
                    self.files[run_id] = file
            frames.append(frame)
        evals = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
        return tidy_evals(evals, self.info.name)

    def evaluations(
        self, run_ids: Collection[str] | None = None, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        wanted = (
            self.files
            if run_ids is None
            else {r: self.files[r] for r in run_ids if r in self.files}
        )
        files = sorted(set(wanted.values()))
        for group in batched(files):
            evals = self._read(group, columns=columns)
            if run_ids is not None and len(evals):
                evals = evals[evals["run_id"].astype(str).isin(set(run_ids))]
            yield evals
        extra = None if run_ids is None else [r for r in run_ids if r not in self.files]
        if extra is None or extra:
            yield from self.extra_runs.evaluations(extra, columns)
