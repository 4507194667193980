"""Creating and reading a study directory (no Ray): spec.yaml, study.json, sizes and resources.

``cmcl study run`` creates ``<storage>/<name>/`` with the validated spec and
study.json, then hands it to the Ray driver; ``cmcl study resume`` and
``cmcl study status`` start from the directory alone.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cmcl import __version__
from cmcl.study._build import grid_trial_count
from cmcl.study.naming import SPEC_FILE, STUDY_FILE, study_dir
from cmcl.study.plan import RunKey, RunOverrides, evaluation_schedule, grid_points, run_config
from cmcl.study.plan import trial_plan as _trial_plan
from cmcl.study.records import read_study, write_json
from cmcl.study.resources import check_resources, runs_held
from cmcl.study.spec import StudySpec, load_spec

MEMORY_BUNDLE = {"memory": 1 << 20}
"""The trial process's own bundle when it only waits on its runs: 1 MiB of logical
memory, because a bundle cannot be empty and a CPU would idle."""


class StudyExistsError(FileExistsError):
    """The study directory exists; the message says whether to resume or rename."""


class StudyFinishedError(StudyExistsError):
    """The directory holds this very study and every trial of it has ended: nothing to run."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def expected_trials(spec: StudySpec) -> int:
    return grid_trial_count(spec) if spec.searcher == "grid" else int(spec.trials or 0)


def runs_per_trial(spec: StudySpec) -> int:
    pairs = len(spec.pairs) if spec.objective == "mean" else 1
    return pairs * len(spec.seeds)


def _spec_text(spec: StudySpec, source: str | None) -> str:
    import yaml

    header = f"# validated by cmcl {__version__}" + (f" from {source}" if source else "") + "\n"
    return header + yaml.safe_dump(spec.to_dict(), sort_keys=False, allow_unicode=True)


def create_study_dir(
    spec: StudySpec,
    *,
    storage: str | Path,
    overrides: RunOverrides | None = None,
    source: str | None = None,
    synthetic: bool = False,
) -> Path:
    """Make ``<storage>/<spec.name>`` with spec.yaml and study.json.

    Args:
        overrides: per-benchmark command-line settings (:func:`command_line_overrides`).

    Raises:
        StudyExistsError: the directory already holds a study (the same one:
            resume it; another one: choose another storage or name).
    """
    path = study_dir(storage, spec.name)
    options = {k: dict(v) for k, v in (overrides or {}).items()}
    if (path / STUDY_FILE).exists() or (path / SPEC_FILE).exists():
        old_spec, old_meta = load_study_dir(path)
        if old_spec == spec and old_meta.get("run_overrides", {}) == options:
            _refuse_finished(path)
            raise StudyExistsError(
                f"{path} already holds this study; continue it with `cmcl study resume {path}`"
            )
        differ = sorted(k for k, v in spec.to_dict().items() if old_spec.to_dict().get(k) != v)
        if old_meta.get("run_overrides", {}) != options:
            differ.append("command-line settings (--root/--features/--splits/--set)")
        raise StudyExistsError(
            f"{path} holds a different study named {spec.name!r} (differs in: "
            f"{', '.join(differ)}); choose another --storage or rename the study"
        )
    path.mkdir(parents=True, exist_ok=True)
    (path / SPEC_FILE).write_text(_spec_text(spec, source))
    meta = {
        "name": spec.name,
        "description": spec.description,
        "cmcl_version": __version__,
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
        "seeds": list(spec.seeds),
        "tables": list(spec.tables),
        "run_overrides": options,
    }
    write_json(path / STUDY_FILE, meta)
    return path


def _refuse_finished(path: Path) -> None:
    """Raise :class:`StudyFinishedError` if every trial of the study at ``path`` has ended well."""
    from cmcl.study.status import study_status

    counts = study_status(path).counts
    if counts["pending"] or counts["running"] or counts["errored"]:
        return
    raise StudyFinishedError(
        f"{path} already holds this study, and every trial has ended: nothing to run "
        f"(`cmcl report {path}` reads it; to run it again, move the directory away)",
        path,
    )


def load_study_dir(path: str | Path) -> tuple[StudySpec, dict[str, Any]]:
    """(spec, study.json) of an existing study directory."""
    path = Path(path)
    meta = read_study(path)
    return load_spec(path / SPEC_FILE), meta


def plan_resources(
    spec: StudySpec,
    cluster: Mapping[str, float],
    *,
    max_concurrent: int | None = None,
    overrides: RunOverrides | None = None,
) -> dict[str, Any]:
    """How many runs at once, how many trials at once, and what a trial reserves, on ``cluster``.

    A fraction of a GPU per worker (one-worker feature-mode runs) packs several
    runs on each GPU, counted as Ray counts (cmcl/study/resources.py).

    Args:
        cluster: the cluster's total resources (``{"CPU": 8.0, "GPU": 2.0}``).
        max_concurrent: overrides ``spec.max_concurrent``.
        overrides: per-benchmark command-line settings (``--root`` selects video mode,
            where a run needs a whole GPU).

    Returns ``{"parallel_runs", "max_concurrent", "runs_at_once", "per_run", "bundles",
    "pool", "cluster"}``: ``parallel_runs`` is how many runs a trial has submitted at
    a time (all of them unless ``resources.parallel_runs`` says fewer);
    ``runs_at_once`` the study's runs at once (the slots, at most ``parallel_runs`` x
    ``max_concurrent``); ``per_run`` what one run reserves; ``bundles`` the trial's
    own placement group (a token: its process only waits on its runs); ``pool``
    whether the runs are Ray tasks scheduled on the cluster's free slots (one-worker
    runs) rather than run by the trial itself (Ray Train runs).

    Raises:
        ValueError: resources no run can use (:func:`check_resources`) or a cluster
            that holds no run.
    """
    check_resources(spec, overrides)
    res = spec.resources
    per_run = {"CPU": res.cpus_per_worker * res.workers, "GPU": res.gpus_per_worker * res.workers}
    slots = runs_held(
        cluster,
        workers=res.workers,
        cpus_per_worker=res.cpus_per_worker,
        gpus_per_worker=res.gpus_per_worker,
    )
    need = f"{per_run['CPU']:g} CPU and {per_run['GPU']:g} GPU"
    have = ", ".join(f"{cluster.get(k, 0.0):g} {k}" for k in per_run)
    if slots < 1:
        raise ValueError(
            f"one run needs {need} (resources: workers x cpus/gpus_per_worker); "
            f"the cluster has {have}"
        )
    runs = runs_per_trial(spec)
    if res.workers > 1:
        # A Ray Train run sizes its own workers' placement group; a trial runs its
        # runs one after another, so as many trials as the cluster holds runs.
        parallel, pool = 1, False
        default_concurrent = max(1, slots)
    else:
        # Runs, not trials, fill the slots: a trial reserves only a token for its own
        # process and submits its runs as Ray tasks outside its placement group, so
        # Ray starts a run, of whichever trial, as soon as a slot is free. Twice the
        # trials the slots need keep a slots' worth of runs queued behind the running
        # ones, so that when runs end together their slots refill at once while the
        # ended trials' successors start (Tune takes seconds to start a trial).
        parallel, pool = min(runs, res.parallel_runs or runs), True
        default_concurrent = 2 * math.ceil(slots / parallel)
    concurrent = min(
        max_concurrent or spec.max_concurrent or default_concurrent,
        max(1, expected_trials(spec)),
    )
    return {
        "parallel_runs": parallel,
        "max_concurrent": concurrent,
        "runs_at_once": min(slots, parallel * concurrent),
        "per_run": per_run,
        "bundles": [dict(MEMORY_BUNDLE)],
        "pool": pool,
        "cluster": dict(cluster),
    }


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
    twin); paths become absolute, because trials run in other working
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
