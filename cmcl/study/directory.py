"""A study directory (a local path or an object-store URI) and what it holds; no Ray.

``cmcl study run`` creates ``<storage>/<name>/`` with the validated spec and
study.json; ``cmcl study resume``, ``status`` and ``cmcl report`` start from
the directory alone (docs/results-format.md, "A study directory").
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcl import __version__
from cmcl.filestore import FileStore
from cmcl.results import RESULTS_DIR, SUMMARIES_DIR
from cmcl.study._build import grid_trial_count
from cmcl.study.naming import (
    DRIVER_FILE,
    JOURNAL_FILE,
    LEGACY_TRIALS_DIR,
    LEGACY_TUNE_DIR,
    RUNS_DIR,
    SPEC_FILE,
    STATE_FILE,
    STUDY_FILE,
    run_dir,
    study_location,
)
from cmcl.study.plan import RunKey, RunOverrides, evaluation_schedule, grid_points, run_config
from cmcl.study.plan import trial_plan as _trial_plan
from cmcl.study.records import StudyState
from cmcl.study.spec import StudySpec, parse_spec

KEPT_RUN_FILES = ("model.pt", "features.parquet")
"""What a finished run keeps with ``keep: final``: what an evaluation and the report need
(and, with ``tracking: tensorboard``, its ``tensorboard/`` event files)."""
KEPT_RUN_DIRS = ("tensorboard",)


class StudyExistsError(FileExistsError):
    """The study directory exists; the message says whether to resume or rename."""


class StudyFinishedError(StudyExistsError):
    """The directory holds this very study and every trial of it has ended: nothing to run."""

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path


class StudyDir:
    """One study directory: its files, read and written whole through a FileStore."""

    def __init__(self, location: str | Path) -> None:
        self.store = FileStore(location)
        self.location = self.store.root

    def __str__(self) -> str:
        return self.location

    def __repr__(self) -> str:
        return f"StudyDir({self.location!r})"

    @property
    def remote(self) -> bool:
        return self.store.remote

    @property
    def path(self) -> Path:
        """The local directory (local studies only)."""
        return self.store.local_path()

    def is_study(self) -> bool:
        return self.store.exists(STUDY_FILE) or self.store.exists(SPEC_FILE)

    def legacy(self) -> bool:
        """A study written by cmcl 0.1 on Ray Tune (its state in tune/ and trials/)."""
        return self.store.exists(LEGACY_TUNE_DIR) or bool(self.store.list(LEGACY_TRIALS_DIR))

    # -- the study's files -----------------------------------------------------------
    def read_meta(self) -> dict[str, Any]:
        """study.json, or a FileNotFoundError naming what a study directory holds."""
        meta = self.store.read_json(STUDY_FILE)
        if meta is None:
            raise FileNotFoundError(
                f"{self.location} is not a study directory (no readable {STUDY_FILE}; "
                "`cmcl study run` writes one)"
            )
        return meta

    def write_meta(self, meta: Mapping[str, Any]) -> None:
        self.store.write_json(STUDY_FILE, dict(meta))

    def read_spec(self) -> StudySpec:
        import yaml

        text = self.store.read_bytes(SPEC_FILE)
        if text is None:
            raise FileNotFoundError(f"{self.store.uri(SPEC_FILE)} is missing")
        return parse_spec(yaml.safe_load(text), source=self.store.uri(SPEC_FILE))

    def read_state(self) -> StudyState | None:
        data = self.store.read_json(STATE_FILE)
        return None if data is None else StudyState.from_dict(data)

    def write_state(self, state: StudyState) -> None:
        self.store.write_json(STATE_FILE, state.to_dict())

    def write_driver(self, state: str) -> None:
        """driver.json: how the last driver stands: running, finished, interrupted or failed."""
        import os
        import socket

        self.store.write_json(
            DRIVER_FILE,
            {"pid": os.getpid(), "host": socket.gethostname(), "state": state, "time": time.time()},
        )

    def read_driver(self) -> dict[str, Any] | None:
        return self.store.read_json(DRIVER_FILE)

    def has_progress(self) -> bool:
        """Whether a driver already started the study (anything beyond spec and study.json)."""
        return self.store.exists(STATE_FILE) or bool(self.store.list(SUMMARIES_DIR))

    def journal(self) -> str:
        """The default Optuna storage: a journal file in a local study directory."""
        return str(self.store.local_path(JOURNAL_FILE))

    # -- runs ------------------------------------------------------------------------
    def run_location(self, run: str) -> str:
        return self.store.uri(run_dir(run))

    def run_dir_names(self) -> list[str]:
        return self.store.list_dirs(RUNS_DIR)

    def prune_run(self, run: str, keep: tuple[str, ...] = KEPT_RUN_FILES) -> int:
        """Delete every file of a run's directory but ``keep``; returns the bytes freed."""
        base = run_dir(run)
        freed = 0
        for entry in self.store.list(base, recursive=True):
            inside = entry.path[len(base) + 1 :]
            top = inside.split("/", 1)[0]
            kept = inside in keep or ("/" in inside and top in KEPT_RUN_DIRS)
            if not kept:
                self.store.delete(entry.path)
                freed += entry.size
        if not self.remote:
            # Empty checkpoint directories stay on a filesystem (an object store has none).
            for child in sorted(self.path.joinpath(base).glob("**/*"), reverse=True):
                if child.is_dir() and not any(child.iterdir()):
                    child.rmdir()
        return freed


def expected_trials(spec: StudySpec) -> int:
    return grid_trial_count(spec) if spec.searcher == "grid" else int(spec.trials or 0)


def runs_per_trial(spec: StudySpec) -> int:
    pairs = len(spec.pairs) if spec.objective == "mean" else 1
    return pairs * len(spec.seeds)


def expected_runs(spec: StudySpec) -> int:
    return expected_trials(spec) * runs_per_trial(spec)


def _spec_text(spec: StudySpec, source: str | None) -> bytes:
    import yaml

    header = f"# validated by cmcl {__version__}" + (f" from {source}" if source else "") + "\n"
    return (header + yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)).encode()


def create_study_dir(
    spec: StudySpec,
    *,
    storage: str | Path,
    overrides: RunOverrides | None = None,
    source: str | None = None,
    synthetic: bool = False,
) -> StudyDir:
    """Make ``<storage>/<spec.name>`` with spec.yaml and study.json.

    Args:
        overrides: per-benchmark command-line settings (:func:`command_line_overrides`).

    Raises:
        StudyExistsError: the directory already holds a study (the same one:
            resume it; another one: choose another storage or name).
    """
    study = StudyDir(study_location(storage, spec.name))
    options = {k: dict(v) for k, v in (overrides or {}).items()}
    if study.is_study():
        old_spec, old_meta = study.read_spec(), study.read_meta()
        if old_spec == spec and old_meta.get("run_overrides", {}) == options:
            _refuse_finished(study)
            raise StudyExistsError(
                f"{study} already holds this study; continue it with `cmcl study resume {study}`"
            )
        differ = sorted(k for k, v in spec.to_dict().items() if old_spec.to_dict().get(k) != v)
        if old_meta.get("run_overrides", {}) != options:
            differ.append("command-line settings (--root/--features/--splits/--set)")
        raise StudyExistsError(
            f"{study} holds a different study named {spec.name!r} (differs in: "
            f"{', '.join(differ)}); choose another --storage or rename the study"
        )
    study.store.write_bytes(SPEC_FILE, _spec_text(spec, source))
    meta = {
        "name": spec.name,
        "description": spec.description,
        "cmcl_version": __version__,
        "layout": 2,
        "created": time.time(),
        "source_file": source,
        "synthetic": synthetic,
        "benchmarks": list(spec.benchmarks),
        "pairs": [p for _, p in spec.pairs],
        "methods": list(spec.methods),
        "objective": spec.objective,
        "selection_metric": spec.metric,
        "mode": spec.mode,
        "oracle": spec.oracle,
        "searcher": spec.searcher,
        "trials": expected_trials(spec),
        "runs": expected_runs(spec),
        "seeds": list(spec.seeds),
        "tables": list(spec.tables),
        "run_overrides": options,
    }
    if spec.fidelity is not None:
        meta["fidelity"] = {
            "stages": [f"{spec.name}-screen", f"{spec.name}-confirm"],
            "top_k": "all" if spec.fidelity.top_k is None else spec.fidelity.top_k,
            "also_confirm": list(spec.fidelity.also_confirm),
        }
    if spec.searcher == "optuna":
        # Unique per directory: two studies of one name must not share an Optuna study in a
        # database they share.
        meta["optuna_study"] = f"{spec.name}-{uuid.uuid4().hex[:8]}"
    study.write_meta(meta)
    return study


def _refuse_finished(study: StudyDir) -> None:
    """Raise :class:`StudyFinishedError` if every trial of the study has ended well."""
    from cmcl.study.status import study_status

    counts = study_status(study).counts
    if counts["pending"] or counts["running"] or counts["errored"]:
        return
    raise StudyFinishedError(
        f"{study} already holds this study, and every trial has ended: nothing to run "
        f"(`cmcl report {study}` reads it; to run it again, move the directory away)",
        study.location,
    )


def load_study_dir(location: str | Path) -> tuple[StudyDir, StudySpec, dict[str, Any]]:
    """(directory, spec, study.json) of an existing study directory."""
    study = StudyDir(location)
    meta = study.read_meta()
    return study, study.read_spec(), meta


def adaptation_evaluations(spec: StudySpec, overrides: RunOverrides | None = None) -> int:
    """The most adaptation-stage evaluations any trial makes (ASHA's time axis)."""
    most = 0
    points = (
        grid_points(spec)
        if spec.searcher == "grid"
        else [{p.key: (p.values[0] if p.values else p.low) for p in spec.search}]
    )
    for point in points:
        plan = _trial_plan(spec, point if "method" not in point else {"point": point})
        benchmark, pair = plan.pairs[0]
        config = run_config(spec, plan, RunKey(benchmark, pair, spec.seeds[0]), overrides=overrides)
        most = max(most, sum(1 for s, _ in evaluation_schedule(config.train) if s == "adapt"))
    return most


def command_line_overrides(
    spec: StudySpec,
    *,
    root: tuple[str, ...] = (),
    features: tuple[str, ...] = (),
    splits: tuple[str, ...] = (),
    assignments: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-benchmark settings from ``--root/--features/--splits`` and ``--set``.

    A data location is ``DIR`` (every benchmark of the study) or
    ``BENCHMARK=DIR`` (a real benchmark's name also addresses its synthetic
    twin); paths become absolute, because runs start in other working
    directories. ``--root`` selects video mode (``model.backbone: i3d``).
    ``assignments`` (``--set KEY=VALUE``) apply to every benchmark; a key the
    study searches or controls is an error. Every benchmark's result is
    checked by building a RunConfig.
    """
    from cmcl.config import RunConfig
    from cmcl.study._parse import Reader, canonical_key
    from cmcl.study.spec import SYNTHETIC_TWIN, StudySpecError

    benchmarks = spec.benchmarks
    overrides: dict[str, dict[str, Any]] = {b: {} for b in benchmarks}
    for key, values in (("data.root", root), ("data.features", features), ("data.splits", splits)):
        for value in values:
            name, sep, directory = value.partition("=")
            targets = benchmarks
            if sep:
                aliases = {
                    b: {b, *(k for k, v in SYNTHETIC_TWIN.items() if v == b)} for b in benchmarks
                }
                targets = tuple(b for b in benchmarks if name.strip() in aliases[b])
                if not targets:
                    raise ValueError(
                        f"{value!r}: {name.strip()!r} is not a benchmark of this study "
                        f"({', '.join(benchmarks)})"
                    )
            else:
                directory = value
            path = Path(directory).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"{key.split('.')[1]} directory {directory} does not exist")
            for benchmark in targets:
                overrides[benchmark][key] = str(path)
                if key == "data.root":
                    overrides[benchmark]["model.backbone"] = "i3d"
    reader = Reader(dict(assignments or {}), source="--set", path="")
    searched = {p.key for p in spec.search}
    for key, value in (assignments or {}).items():
        dotted = canonical_key(reader, key)
        if dotted in searched:
            raise StudySpecError(
                f"--set {key}: {dotted} is searched by the study; it cannot be fixed"
            )
        for benchmark in benchmarks:
            overrides[benchmark][dotted] = value
    overrides = {b: o for b, o in overrides.items() if o}
    for benchmark, settings in overrides.items():
        pair = next(p for b, p in spec.pairs if b == benchmark)
        try:
            RunConfig.from_overrides(
                {**dict(spec.settings), **settings, "data.benchmark": benchmark, "data.pair": pair}
            )
        except (KeyError, ValueError) as error:
            raise ValueError(
                f"command-line settings for {benchmark}: {str(error).strip(chr(34))}"
            ) from None
    return overrides


__all__ = [
    "KEPT_RUN_FILES",
    "RESULTS_DIR",
    "RUNS_DIR",
    "SUMMARIES_DIR",
    "StudyDir",
    "StudyExistsError",
    "StudyFinishedError",
    "adaptation_evaluations",
    "command_line_overrides",
    "create_study_dir",
    "expected_runs",
    "expected_trials",
    "load_study_dir",
    "runs_per_trial",
]
