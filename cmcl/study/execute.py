"""Running one run of a study trial in this process (no Ray): engine + result files + events.

A run's directory is ``<study>/runs/<run_id>/``; it resumes from its newest
checkpoint there, so a trial restarted after a crash continues where the run
stopped. After every evaluation the run's whole history is rewritten to
``<study>/results/evals-<run_id>.parquet`` (atomically), so a resumed run
never duplicates rows. ``sink`` receives small events for the trial to
aggregate: every evaluation (the ones before a resume too) and the summary.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cmcl.config import RunConfig
from cmcl.engine.reporting import Reporter
from cmcl.study.naming import results_file, run_dir, run_id
from cmcl.study.plan import RunOverrides, TrialPlan, run_config
from cmcl.study.records import write_run_results
from cmcl.study.spec import METRICS, StudySpec

Event = dict[str, Any]
"""``{"kind": "evaluation", "run_id", "index", "stage", "step", "metrics"}`` or
``{"kind": "summary", "run_id", "summary"}``; ``metrics``/``summary`` hold the selection metrics."""
Sink = Callable[[Event], None]


@dataclass(frozen=True)
class RunJob:
    """Everything a process needs to run one run of a trial (picklable, JSON-able)."""

    study: str
    study_dir: str
    trial_id: str
    run_id: str
    benchmark: str
    pair: str
    seed: int
    method: str
    variant: str | None
    config: dict[str, Any]
    """``RunConfig.to_dict()`` with ``out`` set to the run directory."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunJob:
        return cls(**data)


def trial_jobs(
    spec: StudySpec,
    plan: TrialPlan,
    *,
    trial_id: str,
    study_dir: Path,
    overrides: RunOverrides | None = None,
) -> list[RunJob]:
    """The runs of one trial, in :meth:`TrialPlan.runs` order."""
    jobs = []
    for run in plan.runs():
        rid = run_id(trial_id, run.pair, run.seed)
        config = run_config(spec, plan, run, overrides=overrides, out=str(run_dir(study_dir, rid)))
        jobs.append(
            RunJob(
                study=spec.name,
                study_dir=str(study_dir),
                trial_id=trial_id,
                run_id=rid,
                benchmark=run.benchmark,
                pair=run.pair,
                seed=run.seed,
                method=plan.method,
                variant=plan.variant,
                config=config.to_dict(),
            )
        )
    return jobs


def _selection(row: dict[str, Any]) -> dict[str, float]:
    return {k: float(row[k]) for k in METRICS if k in row and row[k] is not None}


class RunRecorder:
    """A run's evaluations -> its result file (rewritten whole) and the trial's events."""

    def __init__(self, job: RunJob, config: RunConfig, sink: Sink) -> None:
        self.job = job
        self.sink = sink
        self.path = results_file(Path(job.study_dir), job.run_id)
        self.settings = config.flat()
        self.history: list[dict[str, Any]] = []
        self.identity = {
            "study": job.study,
            "trial_id": job.trial_id,
            "run_id": job.run_id,
            "benchmark": job.benchmark,
            "pair": job.pair,
            "method": job.method,
            "seed": job.seed,
            "variant": job.variant or "",
        }

    def add(self, row: dict[str, Any]) -> None:
        """The run's next evaluation."""
        self.history.append(row)
        write_run_results(self.path, self.history, identity=self.identity, settings=self.settings)
        self.sink(
            {
                "kind": "evaluation",
                "run_id": self.job.run_id,
                "index": len(self.history),
                "stage": row["stage"],
                "step": int(row["step"]),
                "metrics": _selection(row),
            }
        )

    def extend(self, rows: list[dict[str, Any]]) -> None:
        """The run's whole history so far: adds the rows not seen yet.

        A restarted run recomputes the evaluations after its checkpoint with the
        same numbers, so rows already seen are not added again.
        """
        for row in rows[len(self.history) :]:
            self.add(row)

    def finish(self, summary: dict[str, Any]) -> None:
        self.sink({"kind": "summary", "run_id": self.job.run_id, "summary": _selection(summary)})


class StudyRunReporter(Reporter):
    """Engine hooks -> :class:`RunRecorder` (in-process runs)."""

    def __init__(self, job: RunJob, config: RunConfig, sink: Sink) -> None:
        self.recorder = RunRecorder(job, config, sink)
        self.run_dir = Path(config.out) if config.out else None

    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        # A resumed run: the evaluations up to its checkpoint are in metrics.parquet
        # (rows after the checkpoint will be recomputed, identically).
        if done_steps == 0 or self.run_dir is None:
            return
        earlier = read_history(self.run_dir)
        self.recorder.extend([row for row in earlier if row["global_step"] <= done_steps])

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        if is_chief:
            self.recorder.add(dict(metrics))

    def on_end(self, summary: dict[str, Any], *, is_chief: bool) -> None:
        if is_chief:
            self.recorder.finish(summary)


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    """The rows of a run directory's metrics.parquet ([] when there is none yet)."""
    import pandas as pd

    path = run_dir / "metrics.parquet"
    if not path.exists():
        return []
    return pd.read_parquet(path).to_dict("records")


def execute_run(job: RunJob, sink: Sink, *, threads: int | None = None) -> dict[str, Any]:
    """Train (or finish) one run in this process; returns the engine's summary.

    Raises whatever the engine raises (NonFiniteLossError, FileNotFoundError,
    out of memory): the caller marks the trial errored.
    """
    from cmcl.engine import fit
    from cmcl.engine.checkpoint import latest_checkpoint

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    config = RunConfig.from_dict(job.config)
    resume = "auto" if latest_checkpoint(config.out) is not None else None
    config = config.replace({"resume": resume})
    return fit(
        config, StudyRunReporter(job, config, sink), data=shared_feature_data(config)
    ).summary


_FEATURE_DATA: dict[tuple, Any] = {}
"""Feature-mode data of the runs this process executed, newest last (at most two)."""


def shared_feature_data(config: RunConfig):
    """The feature-mode :class:`~cmcl.data.base.PairData` of ``config``, built once per process.

    A pooled study runs many runs in each Ray worker process; those of one pair
    read the same store, so loading it again (about 1.3 s for an EPIC-sized
    synthetic pair) would be slot time spent on nothing. The data is read-only
    during training (batches are drawn from seeds and steps, not from state in
    the data), so runs that share it compute exactly what they would alone.
    Video mode (frames through DataLoader workers) is built per run: None.
    """
    if config.model.backbone == "i3d":
        return None
    from cmcl.data.build import build_pair_data

    store = config.data.features
    stamp = None
    if store is not None:
        meta = Path(store) / "meta.json"
        stamp = meta.stat().st_mtime_ns if meta.exists() else None
    key = (config.data.benchmark, config.data.pair, store, stamp, config.data.sampling)
    if key not in _FEATURE_DATA:
        while len(_FEATURE_DATA) >= 2:
            _FEATURE_DATA.pop(next(iter(_FEATURE_DATA))).close()
        _FEATURE_DATA[key] = build_pair_data(config)
    else:
        _FEATURE_DATA[key] = _FEATURE_DATA.pop(key)  # newest last
    return _FEATURE_DATA[key]
