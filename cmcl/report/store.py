"""Reading results into pandas: study directories and bare run directories.

The formats are docs/results-format.md. A study directory holds
``results/evals-*.parquet`` (one row per evaluation), ``runs/<run_id>/``,
``study.json``, ``spec.yaml`` and, for HPO studies, ``optuna.journal``; a bare
run directory (``cmcl train --out DIR``) holds ``config.json``,
``metrics.parquet`` and ``summary.json``. A directory holding neither is
searched one level down, so ``cmcl report studies_out/`` reads every study in it.

Partially written studies are normal (a study still running, a node lost): a
missing or unreadable file becomes a line in :attr:`Results.problems`, and a
run without ``summary.json`` whose last adaptation step is short of
``cfg.train.steps`` is marked unfinished so the tables can leave it out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from cmcl.common import IDENTITY, normalise_pair

SINGLE_RUNS = "single runs"
"""Study name shared by bare run directories, so that their seeds pool together."""


@dataclass
class StudyInfo:
    """One study directory (or the bare run directories, pooled as one pseudo-study)."""

    name: str
    path: Path
    kind: str
    """``study`` or ``runs``."""
    meta: dict[str, Any] = field(default_factory=dict)
    spec: str | None = None
    journal: Path | None = None

    @property
    def selection_metric(self) -> str | None:
        value = self.meta.get("selection_metric", self.meta.get("metric"))
        return str(value) if value else None

    @property
    def objective(self) -> str | None:
        value = self.meta.get("objective")
        return str(value) if value else None

    @property
    def tables(self) -> tuple[str, ...] | None:
        """The paper tables the study declares; None when it declares none (the study
        runner writes an empty list then), meaning every table its runs fill."""
        value = self.meta.get("tables")
        return tuple(value) if isinstance(value, list | tuple) and value else None


@dataclass
class Results:
    """Everything read from the given directories."""

    evals: pd.DataFrame
    """One row per evaluation; identity columns, ``run_key``, metric columns, ``cfg.*``."""
    runs: pd.DataFrame
    """One row per run: identity, ``run_key``, ``finished``, ``run_dir``, ``has_features``, ``cfg.*``."""
    studies: list[StudyInfo]
    problems: list[str]

    def study(self, name: str) -> StudyInfo | None:
        return next((s for s in self.studies if s.name == name), None)


def flatten_config(config: dict[str, Any]) -> dict[str, Any]:
    """``{"data": {"pair": ...}}`` or ``{"data.pair": ...}`` -> ``{"cfg.data.pair": ...}``."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update({f"cfg.{key}.{k}": v for k, v in value.items()})
        elif key != "...":
            flat[f"cfg.{key}"] = value
    return flat


def load_results(dirs: Sequence[str | Path]) -> Results:
    """Read every study and run directory in ``dirs`` (see the module docstring)."""
    loader = _Loader()
    for given in dirs:
        path = Path(given)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: not a directory (expected a study or run directory)")
        found = loader.add(path)
        if not found:
            children = sorted(p for p in path.iterdir() if p.is_dir())
            found = sum(loader.add(child) for child in children)
        if not found:
            raise FileNotFoundError(
                f"{path}: no study (results/, study.json, spec.yaml) or run directory "
                "(config.json, metrics.parquet) here or one level down"
            )
    return loader.finish()


def _is_study(path: Path) -> bool:
    return any((path / n).exists() for n in ("results", "study.json", "spec.yaml", "runs"))


def _is_run(path: Path) -> bool:
    return any((path / n).exists() for n in ("config.json", "metrics.parquet"))


class _Loader:
    def __init__(self) -> None:
        self.frames: list[pd.DataFrame] = []
        self.run_dirs: dict[tuple[str, str], Path] = {}
        self.studies: list[StudyInfo] = []
        self.problems: list[str] = []

    def add(self, path: Path) -> bool:
        if _is_study(path):
            self._add_study(path)
            return True
        if _is_run(path):
            if not any(s.kind == "runs" for s in self.studies):
                self.studies.append(StudyInfo(name=SINGLE_RUNS, path=path.parent, kind="runs"))
            self._add_run(path, SINGLE_RUNS)
            return True
        return False

    def _add_study(self, path: Path) -> None:
        meta = self._read_json(path / "study.json") or {}
        name = str(meta.get("name") or path.name)
        if any(s.name == name for s in self.studies):
            self.problems.append(f"{path}: a study named {name!r} was already read; skipped")
            return
        spec = path / "spec.yaml"
        journal = path / "optuna.journal"
        self.studies.append(
            StudyInfo(
                name=name,
                path=path,
                kind="study",
                meta=meta,
                spec=spec.read_text() if spec.exists() else None,
                journal=journal if journal.exists() else None,
            )
        )
        seen: set[str] = set()
        for file in sorted((path / "results").glob("evals-*.parquet")):
            frame = self._read_parquet(file)
            if frame is None or frame.empty:
                continue
            frame = frame.copy()
            frame["study"] = name
            self.frames.append(frame)
            seen.update(frame["run_id"].astype(str))
        for run in sorted((path / "runs").glob("*/")):
            if run.name in seen:
                self.run_dirs[(name, run.name)] = run
            elif (run / "metrics.parquet").exists():
                self._add_run(run, name)

    def _add_run(self, path: Path, study: str) -> None:
        config = self._read_json(path / "config.json")
        if config is None:
            summary = self._read_json(path / "summary.json") or {}
            config = summary.get("config") or None
        if not config:
            self.problems.append(f"{path}: no config.json (nor a config in summary.json); skipped")
            return
        metrics = self._read_parquet(path / "metrics.parquet")
        if metrics is None or metrics.empty:
            return
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
        self.frames.append(frame)
        self.run_dirs[(study, path.name)] = path

    def _read_json(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            self.problems.append(f"{path}: unreadable JSON ({error}); ignored")
            return None

    def _read_parquet(self, path: Path) -> pd.DataFrame | None:
        if not path.exists():
            return None
        try:
            return pd.read_parquet(path)
        except Exception as error:  # a file being written, or truncated by a lost node
            self.problems.append(f"{path}: unreadable Parquet ({type(error).__name__}); ignored")
            return None

    def finish(self) -> Results:
        evals = _tidy_evals(self.frames)
        runs = _runs_table(evals, self.run_dirs, self.problems)
        return Results(evals=evals, runs=runs, studies=self.studies, problems=self.problems)


def _tidy_evals(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame(columns=[*IDENTITY, "run_key", "stage", "step", "global_step"])
    evals = pd.concat(frames, ignore_index=True, sort=False)
    if "stage" not in evals:
        evals["stage"] = "adapt"
    evals["stage"] = evals["stage"].fillna("adapt").astype(str)
    for column in ("step", "global_step"):
        if column not in evals:
            evals[column] = evals["step"] if "step" in evals else range(len(evals))
        evals[column] = evals[column].astype("int64")
    for column in IDENTITY:
        if column not in evals:
            evals[column] = ""
    evals["variant"] = evals["variant"].fillna("").astype(str)
    evals["seed"] = evals["seed"].fillna(0).astype("int64")
    evals["pair"] = evals["pair"].astype(str).map(normalise_pair)
    evals["run_key"] = evals["study"].astype(str) + "/" + evals["run_id"].astype(str)
    # A resumed run may evaluate the same step twice; the later row is the one kept.
    evals = evals.drop_duplicates(subset=["run_key", "stage", "step"], keep="last")
    stage_order = evals["stage"].map({"warmup": 0, "adapt": 1}).fillna(2)
    return (
        evals.assign(_order=stage_order)
        .sort_values(["run_key", "_order", "step"])
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def _runs_table(
    evals: pd.DataFrame, run_dirs: dict[tuple[str, str], Path], problems: list[str]
) -> pd.DataFrame:
    cfg_columns = [c for c in evals.columns if c.startswith("cfg.")]
    if evals.empty:
        return pd.DataFrame(columns=[*IDENTITY, "run_key", "finished", "run_dir", "has_features"])
    first = evals.groupby("run_key", sort=True).first()
    runs = first[[*IDENTITY, *cfg_columns]].reset_index()
    runs["n_evals"] = evals.groupby("run_key", sort=True).size().to_numpy()
    adapt = evals[evals["stage"] == "adapt"].groupby("run_key")["step"].max()
    runs["last_adapt_step"] = runs["run_key"].map(adapt).fillna(0).astype("int64")
    finished, directory, features, wall = [], [], [], []
    for row in runs.to_dict("records"):
        path = run_dirs.get((row["study"], row["run_id"]))
        summary = (path / "summary.json") if path is not None else None
        done = summary is not None and summary.exists()
        target = row.get("cfg.train.steps")
        if not done and target is not None and pd.notna(target):
            done = int(row["last_adapt_step"]) >= int(target)
        finished.append(bool(done))
        directory.append(str(path) if path is not None else None)
        features.append(bool(path is not None and (path / "features.parquet").exists()))
        wall.append(_summary_value(summary, "wall_s", problems))
    runs["finished"] = finished
    runs["run_dir"] = directory
    runs["has_features"] = features
    runs["wall_s"] = wall
    return runs


def _summary_value(path: Path | None, key: str, problems: list[str]) -> float:
    if path is None or not path.exists():
        return float("nan")
    try:
        value = json.loads(path.read_text()).get(key)
    except (OSError, json.JSONDecodeError):
        problems.append(f"{path}: unreadable JSON; ignored")
        return float("nan")
    return float(value) if isinstance(value, int | float) else float("nan")
