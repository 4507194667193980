"""A driver starting on a study that an earlier driver ran: what its records and results say.

The records (state.json) are the last driver's view, written about once a
second; the results (summaries/) are the truth about which runs ended; the
Optuna storage knows every trial it asked for. :func:`reopen_trials` makes
the records agree with the results and says what runs again;
:class:`SavedRuns` gives an unfinished trial's progress what its saved runs
already reported. No Ray.
"""

from __future__ import annotations

from typing import Any

from cmcl.common import METRICS
from cmcl.filestore import FileStore
from cmcl.results import RESULTS_DIR, SUMMARIES_DIR, ended_runs, read_dataset
from cmcl.study.aggregate import TrialProgress
from cmcl.study.plan import TrialPlan
from cmcl.study.records import RunRecord, StudyState, TrialRecord
from cmcl.study.spec import StudySpec


def selection(row: dict[str, Any]) -> dict[str, float]:
    """The selection metrics of a row (evaluation or summary) that are numbers."""
    out = {}
    for key in METRICS:
        value = row.get(key)
        if value is not None:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


def reopen_run(trial: TrialRecord, run: RunRecord, ended: dict[str, str], *, retry: bool) -> None:
    """One run's record after a restart: saved runs are kept; runs that were in flight, or
    ended without being saved, run again (from their newest checkpoint); runs lost to the
    infrastructure run again; runs whose code failed only with ``retry`` (--retry-errored)."""
    if run.run_id in ended:
        run.state, run.saved = ended[run.run_id], True
        return
    run.saved = False
    if run.state in ("done", "stopped", "running", "queued"):
        run.state = "pending"  # a run that had finished only re-reads its result
    elif run.state == "failed" and (retry or run.cause == "node"):
        run.state, run.cause, run.reason = "pending", None, None
        run.code_failures = run.node_failures = 0
    elif run.state == "cancelled" and not trial.ended:
        run.state = "pending"
    if trial.state == "stopped" and run.state == "pending":
        run.state = "cancelled"


def reopen_trials(state: StudyState, ended: dict[str, str], *, retry: bool) -> None:
    """Every trial of ``state`` after a restart (see :func:`reopen_run`); an errored trial none
    of whose runs stays failed is running again, its cancelled runs with it (the results
    may even hold all its runs: then it is done)."""
    for trial in state.trials.values():
        for run in trial.runs:
            reopen_run(trial, run, ended, retry=retry)
        if trial.state == "errored" and not any(r.state == "failed" for r in trial.runs):
            trial.state, trial.reason = "running", None
            for run in trial.runs:
                if run.state == "cancelled":
                    run.state = "pending"
        if not trial.ended:
            trial.state = "running" if any(r.state == "done" for r in trial.runs) else "pending"


def plan_of(spec: StudySpec, trial: TrialRecord) -> TrialPlan:
    """The plan a trial's record stands for (the searched keys in the study file's order)."""
    return TrialPlan(
        method=trial.method,
        variant=trial.variant,
        pairs=tuple((b, p) for b, p in trial.pairs),
        params=tuple((p.key, trial.params[p.key]) for p in spec.search if p.key in trial.params),
        seeds=tuple(dict.fromkeys(r.seed for r in trial.runs)),
    )


class SavedRuns:
    """What the study's results hold about the runs that ended before this driver started.

    ``ended``: run_id -> state of every saved run. Their summaries (and, for ASHA,
    evaluations) are read once, only the selection metrics' columns, when first needed.
    """

    def __init__(self, store: FileStore) -> None:
        self.store = store
        self.ended = ended_runs(store)
        self._summaries: dict[str, dict[str, float]] | None = None
        self._evaluations: dict[str, list[dict[str, float]]] | None = None

    def feed(self, trial: TrialRecord, progress: TrialProgress, *, with_evaluations: bool):
        """Give ``progress`` each saved run's summary, and its evaluations if asked."""
        saved = [r.run_id for r in trial.runs if r.run_id in self.ended]
        if trial.ended or not saved:
            return
        summaries = self._read_summaries()
        evaluations = self._read_evaluations() if with_evaluations else {}
        for run in saved:
            for index, row in enumerate(evaluations.get(run, []), start=1):
                progress.add({"kind": "evaluation", "run_id": run, "index": index, "metrics": row})
            progress.add({"kind": "summary", "run_id": run, "summary": summaries[run]})

    def _read_summaries(self) -> dict[str, dict[str, float]]:
        if self._summaries is None:
            data = read_dataset(self.store, SUMMARIES_DIR, columns=["run_id", *METRICS])
            self._summaries = {row.pop("run_id"): selection(row) for row in data.to_pylist()}
        return self._summaries

    def _read_evaluations(self) -> dict[str, list[dict[str, float]]]:
        if self._evaluations is None:
            columns = ["run_id", "global_step", *METRICS]
            rows = read_dataset(self.store, RESULTS_DIR, columns=columns).to_pylist()
            rows.sort(key=lambda r: (r["run_id"], r["global_step"]))
            self._evaluations = {}
            for row in rows:
                self._evaluations.setdefault(row["run_id"], []).append(selection(row))
        return self._evaluations
