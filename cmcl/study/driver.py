"""The study driver: runs fill the cluster's slots, configurations are valued as their
last run reports, a lost run goes back in the queue, and nothing waits in silence.

A study is trials (configurations, from a :mod:`~cmcl.study.searchers`
source) and each trial's runs (pair x seed). The unit of scheduling is the
run: the driver keeps as many runs in flight as the cluster holds at that
moment (the executor says how many, :class:`Capacity`), taking the next run
of a trial already in flight first, then a new trial from the source. A
trial's value is the mean over its runs of their summaries once the last one
reports (cmcl/study/aggregate.py); ASHA (cmcl/study/asha.py) decides at each
complete round; the source is told how the trial ended.

When a run fails, the executor says why: ``node`` (its node, worker process
or placement died: a spot instance reclaimed, an evicted pod) puts it back at
the front of the queue, to continue from its newest checkpoint, up to the
study's ``node_failures``; ``code`` (its training raised) fails its trial
unless ``max_failures`` allows a retry. A run that waits for resources longer
than :data:`WAIT_NOTICE_S` is reported in one line with what it needs and
what the cluster has, again every :data:`WAIT_REPEAT_S` or when that changes.

Records: ``state.json`` (cmcl/study/records.py), written whole, at most about
once a second; ended runs go to ``results/`` and ``summaries/`` in chunks
(cmcl/results.py) before their records say they are saved, and only then are
their directories pruned to what ``keep`` keeps. A new driver on the same
study (:meth:`StudyDriver.run` after a crash) starts from those files and
the Optuna storage. The executor is the only part that knows Ray; tests drive
this class with a simulated one.
"""

from __future__ import annotations

import math
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from cmcl.common import METRICS
from cmcl.results import (
    RESULTS_DIR,
    SUMMARIES_DIR,
    ResultsWriter,
    RunIdentity,
    evaluation_rows,
    read_dataset,
    summary_row,
)
from cmcl.study.aggregate import TrialProgress
from cmcl.study.asha import ASHA
from cmcl.study.directory import StudyDir, adaptation_evaluations
from cmcl.study.execute import RunJob
from cmcl.study.naming import run_dir, run_id, trial_id
from cmcl.study.plan import RunKey, RunOverrides, TrialPlan, run_config
from cmcl.study.records import RunRecord, StudyState, TrialRecord
from cmcl.study.spec import StudySpec

POLL_S = 0.5
CAPACITY_EVERY_S = 5.0
WAIT_NOTICE_S = 30.0
"""A run queued this long for resources is reported (and the study's plan with it)."""
WAIT_REPEAT_S = 300.0
FLUSH_EVERY_S = 20.0
FLUSH_RUNS = 64
SAVE_EVERY_S = 1.0


@dataclass(frozen=True)
class Capacity:
    """What the cluster offers this study now."""

    runs: int
    """Runs of this study the live nodes hold at once."""
    cluster: str
    """The live nodes' resources in words: ``4 CPU, 1 GPU on 3 node(s)``."""
    per_run: str
    """What one run asks: ``1 CPU + 0.25 GPU (1 worker)``."""


class Executor(Protocol):
    """Runs runs somewhere (cmcl/ray/executor.py on Ray; a simulation in tests)."""

    def capacity(self) -> Capacity: ...

    def submit(self, job: RunJob) -> None: ...

    def poll(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        """(run_id, event) pairs: the run's own events (cmcl/study/execute.py) plus
        ``{"kind": "began"}`` when it starts on a worker, ``{"kind": "failed", "cause":
        "code"|"node", "reason"}`` and ``{"kind": "cancelled"}`` after :meth:`stop`."""
        ...

    def stop(self, run: str) -> None: ...

    def shutdown(self) -> None: ...


class StudyFailedError(RuntimeError):
    """No trial of the study finished: every one errored (the message names the first error)."""

    def __init__(self, message: str, study: str) -> None:
        super().__init__(message)
        self.study = study


class StudyWaitTimeout(RuntimeError):
    """The cluster could not start a run within ``resources.wait_timeout_s``."""


@dataclass
class _Ended:
    """A run whose results wait for the next flush."""

    run: RunRecord
    trial: TrialRecord
    state: str
    summary: dict[str, Any]
    history: list[dict[str, Any]]
    has_features: bool = False
    has_weights: bool = False
    extra: dict[str, float] = field(default_factory=dict)


def _selection(row: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key in METRICS:
        value = row.get(key)
        if value is not None:
            try:
                out[key] = float(value)
            except (TypeError, ValueError):
                continue
    return out


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def nothing_to_run(state: StudyState | None, expected: int, *, retry_errored: bool) -> bool:
    """Whether a study whose records are ``state`` has every trial it asks for ended and
    saved, with nothing a resume would run again: then no Ray is needed to resume it."""
    if state is None or len(state.trials) < expected:
        return False
    for trial in state.trials.values():
        if not trial.ended or (trial.state != "errored" and not trial.told):
            return False
        for run in trial.runs:
            if run.state in ("done", "stopped") and not run.saved:
                return False
            if run.state == "failed" and (retry_errored or run.cause == "node"):
                return False
    return True


class StudyDriver:
    """Drives one study directory to its end (see the module docstring).

    Args:
        study, spec, meta: the study directory, its spec and its study.json.
        executor: where runs run.
        source: the trials' source (grid or Optuna).
        retry_errored: run the runs of errored trials again.
        echo: progress lines on stderr.
    """

    def __init__(
        self,
        study: StudyDir,
        spec: StudySpec,
        meta: dict[str, Any],
        *,
        executor: Executor,
        source: Any,
        retry_errored: bool = False,
        echo: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.study, self.spec, self.meta = study, spec, meta
        self.executor, self.source = executor, source
        self.retry_errored = retry_errored
        self.echo = echo
        self.clock = clock
        self.overrides: RunOverrides = meta.get("run_overrides", {})
        self.state = StudyState()
        self.plans: dict[str, TrialPlan] = {}
        self.progress: dict[str, TrialProgress] = {}
        self.active: dict[str, float] = {}
        """Submitted runs and when; a run is queued until its "began" event."""
        self.began: dict[str, float] = {}
        """Runs started on a worker, and when."""
        self.jobs: dict[str, RunJob] = {}
        self.rows: dict[str, dict[int, dict[str, Any]]] = {}
        self.retry: deque[str] = deque()
        self.ending: list[_Ended] = []
        self.writer = ResultsWriter(study.store)
        self.exhausted = False
        self.capacity: Capacity | None = None
        self.asha = self._asha()
        now = clock()
        self._checked_capacity = -math.inf
        self._saved_at = -math.inf
        self._save_cost = 0.0
        self._dirty = True
        self._flushed_at = now
        self._blocked_since: float | None = None
        self._wait_said: tuple[str, float] | None = None
        self._last_line = ""
        self._last_key = ""
        self._said_at = -math.inf
        self._ended_before: dict[str, str] = {}
        self._saved: dict[str, dict[str, float]] | None = None
        self._saved_evals: dict[str, list[dict[str, float]]] | None = None

    # -- output ------------------------------------------------------------------------
    def say(self, text: str) -> None:
        if self.echo:
            print(f"[cmcl study] {text}", file=sys.stderr, flush=True)

    def _asha(self) -> ASHA | None:
        if self.spec.scheduler.name != "asha":
            return None
        evals = adaptation_evaluations(self.spec, self.overrides)
        grace = self.spec.scheduler.grace_period or max(1, evals // 8)
        self.meta.setdefault("resolved", {})["asha"] = {"grace_period": grace, "max_t": evals}
        return ASHA(
            grace_period=grace,
            max_t=evals,
            reduction_factor=self.spec.scheduler.reduction_factor,
            mode=self.spec.mode,
        )

    # -- the loop ----------------------------------------------------------------------
    def run(self) -> str:
        """Drive the study to its end; returns ``finished``.

        Raises:
            StudyFailedError: no trial finished, every one errored.
            StudyWaitTimeout: the cluster could not start a run in time.
            KeyboardInterrupt: Ctrl-C (the records and results are saved first).
        """
        self._restore()
        self.study.write_driver("running")
        outcome = "interrupted"
        try:
            while True:
                self._refresh_capacity()
                self._fill()
                if self._done():
                    break
                for run, event in self.executor.poll(POLL_S):
                    self._handle(run, event)
                self._check_waiting()
                self._flush(force=False)
                self._save(force=False)
                self._progress_line()
            outcome = "finished"
            self._flush(force=True)
            self._progress_line()
            trials = self.state.trials.values()
            if any(t.state == "errored" for t in trials) and not any(
                t.state in ("done", "stopped") for t in trials
            ):
                outcome = "failed"
                raise StudyFailedError(self._failure_message(), self.study.location)
            return outcome
        finally:
            self.executor.shutdown()
            for run in list(self.active):
                self._requeue_unfinished(run)
            self._flush(force=True)
            self._save(force=True)
            self.study.write_driver(outcome)

    def _done(self) -> bool:
        if self.active or not self.exhausted:
            return False
        return all(t.ended for t in self.state.trials.values())

    # -- restoring -----------------------------------------------------------------------
    def _restore(self) -> None:
        removed = self.writer.recover()
        if removed:
            self.say(f"removed {len(removed)} half-written result file(s) of a stopped driver")
        state = self.study.read_state() or StudyState()
        state.sessions += 1
        self.state = state
        ended = self._ended_before = self._ended_runs()
        for trial in state.trials.values():
            self.plans[trial.trial_id] = self._plan_of(trial)
            for run in trial.runs:
                self._restore_run(trial, run, ended)
            if trial.state == "errored" and any(r.state == "pending" for r in trial.runs):
                trial.state, trial.reason = "running", None
                for run in trial.runs:
                    if run.state == "cancelled":
                        run.state = "pending"
            if not trial.ended:
                trial.state = "running" if any(r.state == "done" for r in trial.runs) else "pending"
        for number, plan, *told in self.source.adopt(list(state.trials.values())):
            trial = self._new_trial(number, plan, ended)
            told_as = told[0] if told else None
            if told_as in ("PRUNED", "FAIL"):
                # Optuna heard how it ended from a driver that stopped before recording it.
                trial.state = "stopped" if told_as == "PRUNED" else "errored"
                trial.reason = f"told to Optuna as {told_as} by an earlier driver"
                trial.told = True
                for run in trial.runs:
                    if not run.saved:
                        run.state = "cancelled"
        for trial in state.trials.values():
            if trial.ended and not trial.told:
                self.source.tell(trial)
        if self.asha is not None:
            self.asha.restore(state.trials.values())
        for trial in state.trials.values():
            self._replay(trial)
            self._maybe_finish_trial(trial)
        self.study.write_meta(self.meta)

    def _ended_runs(self) -> dict[str, str]:
        from cmcl.results import ended_runs

        return ended_runs(self.study.store)

    def _restore_run(self, trial: TrialRecord, run: RunRecord, ended: dict[str, str]) -> None:
        if run.run_id in ended:
            run.state, run.saved = ended[run.run_id], True
            return
        run.saved = False
        if run.state in ("done", "stopped", "running", "queued"):
            # Ended but not saved, or in flight when the driver stopped: run it again (from
            # its newest checkpoint; a run that had finished only re-reads its result).
            run.state = "pending"
        elif run.state == "failed" and (self.retry_errored or run.cause == "node"):
            # Lost to the infrastructure more often than one driver allows: a plain resume
            # tries again; a failure of the run's code only with --retry-errored.
            run.state, run.cause, run.reason = "pending", None, None
            run.code_failures = run.node_failures = 0
        elif run.state == "cancelled" and not trial.ended:
            run.state = "pending"
        if trial.state == "stopped" and run.state == "pending":
            run.state = "cancelled"

    def _plan_of(self, trial: TrialRecord) -> TrialPlan:
        return TrialPlan(
            method=trial.method,
            variant=trial.variant,
            pairs=tuple((b, p) for b, p in trial.pairs),
            params=tuple(
                (p.key, trial.params[p.key]) for p in self.spec.search if p.key in trial.params
            ),
            seeds=tuple(dict.fromkeys(r.seed for r in trial.runs)),
        )

    def _replay(self, trial: TrialRecord) -> None:
        """Give an unfinished trial's progress what its saved runs already reported (their
        numbers are in the results, not in memory): each saved run's summary, and with ASHA
        its evaluations too (the rounds a rung is decided on)."""
        saved = [r.run_id for r in trial.runs if r.run_id in self._ended_before]
        if trial.ended or not saved:
            return
        progress = self._progress_of(trial)
        summaries, evaluations = self._saved_numbers(with_evaluations=self.asha is not None)
        for run in saved:
            for index, row in enumerate(evaluations.get(run, []), start=1):
                progress.add({"kind": "evaluation", "run_id": run, "index": index, "metrics": row})
            progress.add({"kind": "summary", "run_id": run, "summary": summaries[run]})

    def _saved_numbers(self, *, with_evaluations: bool):
        """Selection metrics of every saved run's summary (and evaluations), read once."""
        if self._saved is None:
            data = read_dataset(self.study.store, SUMMARIES_DIR, columns=["run_id", *METRICS])
            self._saved = {row.pop("run_id"): _selection(row) for row in data.to_pylist()}
        if with_evaluations and self._saved_evals is None:
            columns = ["run_id", "global_step", *METRICS]
            rows = read_dataset(self.study.store, RESULTS_DIR, columns=columns).to_pylist()
            rows.sort(key=lambda r: (r["run_id"], r["global_step"]))
            self._saved_evals = {}
            for row in rows:
                self._saved_evals.setdefault(row["run_id"], []).append(_selection(row))
        return self._saved, self._saved_evals or {}

    # -- trials and runs ----------------------------------------------------------------
    def _new_trial(
        self, number: int, plan: TrialPlan, ended: dict[str, str] | None = None
    ) -> TrialRecord:
        tid = trial_id(number)
        runs = [
            RunRecord(
                run_id=run_id(tid, key.pair, key.seed),
                benchmark=key.benchmark,
                pair=key.pair,
                seed=key.seed,
            )
            for key in plan.runs()
        ]
        names = {p.key: p.label for p in self.spec.search}
        trial = TrialRecord(
            trial_id=tid,
            number=number,
            method=plan.method,
            variant=plan.variant,
            pairs=[[b, p] for b, p in plan.pairs],
            params=dict(plan.params),
            names={k: names[k] for k, _ in plan.params if k in names},
            description=self._describe(plan),
            runs=runs,
        )
        ended = ended if ended is not None else {}
        for run in runs:
            if run.run_id in ended:  # the records were lost, the results were not
                run.state, run.saved = ended[run.run_id], True
        self.state.trials[tid] = trial
        self.plans[tid] = plan
        self._progress_of(trial)
        self._dirty = True
        return trial

    def _describe(self, plan: TrialPlan) -> str:
        names = {p.key: p.label for p in self.spec.search}
        parts = [plan.method + (f" [{plan.variant}]" if plan.variant else "")]
        for key, value in plan.params:
            shown = f"{value:g}" if isinstance(value, float) else str(value)
            parts.append(f"{names.get(key, key)}={shown}")
        where = plan.pairs[0][1] if len(plan.pairs) == 1 else f"{len(plan.pairs)} pairs"
        return f"{' '.join(parts)} on {where}"

    def _progress_of(self, trial: TrialRecord) -> TrialProgress:
        if trial.trial_id not in self.progress:
            plan = self.plans[trial.trial_id]
            first = plan.runs()[0]
            schedule = run_config(
                self.spec, plan, first, overrides=self.overrides
            ).train.evaluation_schedule()
            self.progress[trial.trial_id] = TrialProgress(
                [(r.run_id, r.benchmark, r.pair) for r in trial.runs],
                metric=self.spec.metric,
                schedule=schedule,
            )
        return self.progress[trial.trial_id]

    def _in_flight(self, trial: TrialRecord) -> int:
        return sum(r.run_id in self.active for r in trial.runs)

    def _next_run(self) -> tuple[TrialRecord, RunRecord] | None:
        while self.retry:
            run_id_ = self.retry.popleft()
            trial = self.state.run_owner(run_id_)
            run = trial.run(run_id_)
            if run.state == "pending" and not trial.ended and run_id_ not in self.active:
                return trial, run
        cap = self.spec.resources.parallel_runs or math.inf
        open_trials = [t for t in self.state.trials.values() if not t.ended]
        for trial in open_trials:
            if self._in_flight(trial) >= cap:
                continue
            for run in trial.runs:
                if run.state == "pending" and run.run_id not in self.active:
                    return trial, run
        limit = self.spec.max_concurrent or math.inf
        while not self.exhausted and len(open_trials) < limit:
            plan = self.source.next_plan()
            if plan is None:
                self.exhausted = True
                break
            trial = self._new_trial(*plan, ended=self._ended_before)
            self._replay(trial)
            self._maybe_finish_trial(trial)
            open_trials = [t for t in self.state.trials.values() if not t.ended]
            for run in trial.runs:
                if run.state == "pending":
                    return trial, run
        return None

    def _fill(self) -> None:
        assert self.capacity is not None
        while len(self.active) < self.capacity.runs:
            found = self._next_run()
            if found is None:
                return
            self._submit(*found)

    def _submit(self, trial: TrialRecord, run: RunRecord) -> None:
        plan = self.plans[trial.trial_id]
        config = run_config(
            self.spec, plan, RunKey(run.benchmark, run.pair, run.seed), overrides=self.overrides
        )
        job = RunJob(
            study=self.spec.name,
            location=self.study.run_location(run.run_id),
            trial_id=trial.trial_id,
            run_id=run.run_id,
            benchmark=run.benchmark,
            pair=run.pair,
            seed=run.seed,
            method=plan.method,
            variant=plan.variant,
            config=config,
            resources=self.spec.resources,
            tracking=self.spec.tracking,
        )
        self.jobs[run.run_id] = job
        self.active[run.run_id] = self.clock()
        run.state = "queued"
        run.attempts += 1
        if trial.state == "pending":
            trial.state = "running"
        self.rows.setdefault(run.run_id, {})
        self._dirty = True
        self.executor.submit(job)

    # -- events ------------------------------------------------------------------------
    def _handle(self, run_id_: str, event: dict[str, Any]) -> None:
        trial = self.state.run_owner(run_id_)
        run = trial.run(run_id_)
        kind = event["kind"]
        self._dirty = True
        if kind == "began":
            self.began[run_id_] = self.clock()
            run.began_at, run.ended_at = time.time(), None
            run.host, run.pid = event.get("host"), event.get("pid")
            if run.state == "queued":
                run.state = "running"
        elif kind == "started":
            done, total = int(event["done_steps"]), int(event["total_steps"])
            run.resumed_from = done or None
            if done:
                self.say(
                    f"run {run_id_} continues from step {done} of {total} (its newest checkpoint)"
                )
        elif kind == "evaluation":
            self._evaluation(trial, run, int(event["index"]), event["row"])
        elif kind == "finished":
            self._finished(trial, run, event)
        elif kind == "failed":
            self._failed(trial, run, event["cause"], str(event["reason"]))
        elif kind == "cancelled":
            self._cancelled(trial, run)

    def _evaluation(
        self, trial: TrialRecord, run: RunRecord, index: int, row: dict[str, Any]
    ) -> None:
        self.rows.setdefault(run.run_id, {})[index] = row
        run.evaluations = max(run.evaluations, index)
        if trial.ended:
            return
        rounds = self.progress[trial.trial_id].add(
            {"kind": "evaluation", "run_id": run.run_id, "index": index, "metrics": _selection(row)}
        )
        for result in rounds:
            trial.last = result["objective"] if _finite(result["objective"]) else None
            trial.rounds = int(result["evaluation"])
            trial.adapt_evals = int(result["adapt_evals"])
            asha = self.asha
            if (
                asha
                and result["stage"] == "adapt"
                and not asha.on_round(trial, trial.adapt_evals, result["objective"])
            ):
                self._stop_trial(trial)
                return

    def _finished(self, trial: TrialRecord, run: RunRecord, event: dict[str, Any]) -> None:
        self._release(run.run_id)
        history = list(event.get("history") or self.rows.get(run.run_id, {}).values())
        self.rows[run.run_id] = dict(enumerate(history, start=1))
        run.state, run.cause, run.reason = "done", None, None
        run.evaluations = len(history)
        self.ending.append(
            _Ended(
                run=run,
                trial=trial,
                state="done",
                summary=dict(event["summary"]),
                history=history,
                has_features=bool(event.get("has_features")),
                has_weights=bool(event.get("has_weights")),
                extra=dict(event.get("extra") or {}),
            )
        )
        if trial.ended:
            return
        progress = self.progress[trial.trial_id]
        for index, row in enumerate(history, start=1):
            progress.add(
                {
                    "kind": "evaluation",
                    "run_id": run.run_id,
                    "index": index,
                    "metrics": _selection(row),
                }
            )
        progress.add(
            {"kind": "summary", "run_id": run.run_id, "summary": _selection(event["summary"])}
        )
        self._maybe_finish_trial(trial)

    def _maybe_finish_trial(self, trial: TrialRecord) -> None:
        progress = self._progress_of(trial)
        if not progress.finished or trial.ended:
            return
        final = progress.final_result()
        trial.value = final["objective"] if _finite(final["objective"]) else None
        trial.per_pair = {k: v for k, v in final["pairs"].items() if _finite(v)}
        trial.per_benchmark = {k: v for k, v in final.get("benchmarks", {}).items() if _finite(v)}
        trial.state, trial.reason, trial.ended_at = "done", None, time.time()
        if trial.value is None:
            trial.state = "errored"
            trial.reason = f"its value ({self.spec.metric}) is not a finite number"
        self.source.tell(trial)
        value = "n/a" if trial.value is None else f"{trial.value:.2f}"
        self.say(
            f"trial {trial.trial_id} {trial.state}: {self.spec.metric} {value} ({trial.description})"
        )

    def _failed(self, trial: TrialRecord, run: RunRecord, cause: str, reason: str) -> None:
        self._release(run.run_id)
        run.cause, run.reason = cause, reason
        if trial.ended:
            run.state = "cancelled"
            return
        if cause == "node":
            run.node_failures += 1
            budget, used, what = self.spec.node_failures, run.node_failures, "node_failures"
        else:
            run.code_failures += 1
            budget, used, what = self.spec.max_failures, run.code_failures, "max_failures"
        if used <= budget:
            run.state = "pending"
            self.retry.appendleft(run.run_id)
            again = "from its newest checkpoint" if cause == "node" else "again"
            self.say(
                f"run {run.run_id} {'lost' if cause == 'node' else 'failed'} ({reason}); "
                f"restarting it {again} (retry {used} of {budget}, {what})"
            )
            return
        run.state = "failed"
        if cause == "node":
            reason = f"lost {used} times ({reason}), more than node_failures: {budget}"
        self._error_trial(trial, f"run {run.run_id} failed: {reason}", tell=cause == "code")

    def _error_trial(self, trial: TrialRecord, reason: str, *, tell: bool = True) -> None:
        """``tell``: Optuna hears FAIL; not for a trial lost to the infrastructure, which a
        plain resume runs again (its Optuna trial stays open until then)."""
        trial.state, trial.reason, trial.ended_at = "errored", reason, time.time()
        for other in trial.runs:
            if other.run_id in self.active:
                self.executor.stop(other.run_id)
            elif other.state == "pending":
                other.state = "cancelled"
        if tell:
            self.source.tell(trial)
        self.say(f"trial {trial.trial_id} errored: {reason}")

    def _stop_trial(self, trial: TrialRecord) -> None:
        trial.state, trial.ended_at = "stopped", time.time()
        trial.reason = f"stopped early by ASHA after {trial.adapt_evals} adaptation evaluations"
        for run in trial.runs:
            if run.run_id in self.active:
                self.executor.stop(run.run_id)
            elif run.state == "pending":
                run.state = "cancelled"
        self.source.tell(trial)
        self.say(f"trial {trial.trial_id} {trial.reason} ({trial.description})")

    def _cancelled(self, trial: TrialRecord, run: RunRecord) -> None:
        self._release(run.run_id)
        if run.state in ("done", "failed"):
            return
        rows = [row for _, row in sorted(self.rows.get(run.run_id, {}).items())]
        if trial.state == "stopped" and rows:
            from cmcl.engine.reporting import summarise

            job = self.jobs.get(run.run_id)
            last_k = job.config.train.eval_last_k if job else 9
            run.state = "stopped"
            self.ending.append(
                _Ended(
                    run=run,
                    trial=trial,
                    state="stopped",
                    summary=summarise(rows, last_k=last_k),
                    history=rows,
                )
            )
        else:
            run.state = "cancelled"

    def _release(self, run: str) -> None:
        self.active.pop(run, None)
        began = self.began.pop(run, None)
        if began is not None:
            record = self.state.run_owner(run).run(run)
            record.slot_s += self.clock() - began
            record.ended_at = time.time()

    def _requeue_unfinished(self, run: str) -> None:
        """A run in flight when the driver stops continues next time from its checkpoint."""
        self._release(run)
        trial = self.state.run_owner(run)
        record = trial.run(run)
        if record.state in ("queued", "running"):
            record.state = "pending"

    # -- capacity and waiting -------------------------------------------------------------
    def _refresh_capacity(self) -> None:
        now = self.clock()
        if now - self._checked_capacity < CAPACITY_EVERY_S and self.capacity is not None:
            return
        self._checked_capacity = now
        capacity = self.executor.capacity()
        if self.capacity is None or capacity.runs != self.capacity.runs:
            first = self.capacity is None
            self.capacity = capacity
            lead = "" if first else "the cluster changed: "
            if capacity.runs > 0:
                self.say(
                    f"{lead}{capacity.runs} run(s) at once, each {capacity.per_run} "
                    f"(cluster: {capacity.cluster})"
                )
            elif not first:
                self.say(
                    f"{lead}it holds no run of this study now (each needs {capacity.per_run}, "
                    f"the cluster has {capacity.cluster}); runs in flight wait for resources"
                )
            self.meta.setdefault("resolved", {}).update(
                {
                    "runs_at_once": capacity.runs,
                    "per_run": capacity.per_run,
                    "cluster": capacity.cluster,
                }
            )
        self.capacity = capacity

    def _check_waiting(self) -> None:
        now = self.clock()
        assert self.capacity is not None
        queued = [r for r in self.active if r not in self.began]
        blocked = self.capacity.runs == 0 and not self._done()
        if blocked and self._blocked_since is None:
            self._blocked_since = now
        elif not blocked:
            self._blocked_since = None
        since = min((self.active[r] for r in queued), default=None)
        if self._blocked_since is not None:
            since = self._blocked_since if since is None else min(since, self._blocked_since)
        if since is None or now - since < WAIT_NOTICE_S:
            return
        message = self._wait_message(len(queued), blocked, now - since)
        key = message.split(" for ", 1)[0] + self.capacity.cluster
        if (
            self._wait_said is None
            or self._wait_said[0] != key
            or now - self._wait_said[1] >= WAIT_REPEAT_S
        ):
            self._wait_said = (key, now)
            self.say(message)
        timeout = self.spec.resources.wait_timeout_s
        if timeout is not None and now - since > timeout:
            raise StudyWaitTimeout(
                f"{message} (waited more than resources.wait_timeout_s = {timeout:g} s)"
            )

    def _wait_message(self, queued: int, blocked: bool, waited: float) -> str:
        capacity = self.capacity
        assert capacity is not None
        running = len(self.began)
        what = (
            "no run can start: the cluster holds none"
            if blocked
            else f"{queued} run(s) queued for resources"
        )
        return (
            f"waiting: {what} for {waited:.0f} s; each run needs {capacity.per_run}, the "
            f"cluster has {capacity.cluster} ({running} run(s) of this study running). Runs "
            "start as soon as resources free up or nodes join (a cloud cluster's autoscaler "
            "adds them; locally: cluster/local.sh add-node); or stop with Ctrl-C and resume "
            "with smaller --cpus-per-worker/--workers"
        )

    # -- results and records -------------------------------------------------------------
    def _flush(self, *, force: bool) -> None:
        if not self.ending:
            self._flushed_at = self.clock()
            return
        due = len(self.ending) >= FLUSH_RUNS or self.clock() - self._flushed_at >= FLUSH_EVERY_S
        if not (force or due):
            return
        evaluations, summaries = [], []
        for item in self.ending:
            job = self.jobs.get(item.run.run_id)
            plan = self.plans[item.trial.trial_id]
            config = (
                job.config
                if job
                else run_config(
                    self.spec,
                    plan,
                    RunKey(item.run.benchmark, item.run.pair, item.run.seed),
                    overrides=self.overrides,
                )
            )
            identity = RunIdentity(
                study=self.spec.name,
                trial_id=item.trial.trial_id,
                run_id=item.run.run_id,
                benchmark=item.run.benchmark,
                pair=item.run.pair,
                method=plan.method,
                seed=item.run.seed,
                variant=plan.variant or "",
            )
            settings = config.flat()
            evaluations += evaluation_rows(item.history, identity=identity, settings=settings)
            summaries.append(
                summary_row(
                    item.summary,
                    identity=identity,
                    settings=settings,
                    state=item.state,
                    run_dir=run_dir(item.run.run_id),
                    has_features=item.has_features,
                    has_weights=item.has_weights,
                    attempts=item.run.attempts,
                    node_failures=item.run.node_failures,
                    extra=item.extra,
                )
            )
        self.writer.flush(evaluations, summaries)
        flushed, self.ending = self.ending, []
        self._flushed_at = self.clock()
        for item in flushed:
            item.run.saved = True
            self.rows.pop(item.run.run_id, None)
            self.jobs.pop(item.run.run_id, None)
        self._save(force=True)
        if self.spec.keep == "final":
            for item in flushed:
                self.study.prune_run(item.run.run_id)

    def _save(self, *, force: bool) -> None:
        now = self.clock()
        if not self._dirty and not force:
            return
        if not force and now - self._saved_at < max(SAVE_EVERY_S, 20 * self._save_cost):
            return
        started = time.perf_counter()
        self.study.write_state(self.state)
        self._save_cost = time.perf_counter() - started
        self._saved_at, self._dirty = now, False

    # -- progress --------------------------------------------------------------------------
    def _progress_line(self) -> None:
        trials = self.state.trials.values()
        runs = [r for t in trials for r in t.runs]
        count = {s: sum(t.state == s for t in trials) for s in ("done", "stopped", "errored")}
        queued = sum(r not in self.began for r in self.active)
        line = (
            f"{self.spec.name}: runs {sum(r.state == 'done' for r in runs)} done, "
            f"{len(self.began)} running, {queued} queued; trials {count['done']}/"
            f"{self.source.expected} done, {count['stopped']} stopped early, "
            f"{count['errored']} errored"
        )
        best = self._best()
        if best:
            line += f"; {best}"
        # Every change of the trials' counts or of the best; run counts at most every 30 s.
        key = line.split("; trials ", 1)[-1]
        now = self.clock()
        if line != self._last_line and (key != self._last_key or now - self._said_at >= 30):
            self._last_line, self._last_key, self._said_at = line, key, now
            self.say(line)

    def _best(self) -> str:
        pick = max if self.spec.mode == "max" else min
        done = [t for t in self.state.trials.values() if t.state == "done" and t.value is not None]
        if not done:
            return ""
        if self.spec.objective == "mean" or len(self.spec.pairs) == 1:
            best = pick(done, key=lambda t: t.value)
            return f"best {self.spec.metric} {best.value:.2f} ({best.description})"
        per_pair: dict[str, float] = {}
        for trial in done:
            for pair, value in trial.per_pair.items():
                per_pair[pair] = pick(value, per_pair.get(pair, value))
        order = [p for _, p in self.spec.pairs]
        return f"best {self.spec.metric} per pair: " + ", ".join(
            f"{p} {per_pair[p]:.1f}" for p in order if p in per_pair
        )

    def _failure_message(self) -> str:
        errored = [t for t in self.state.trials.values() if t.state == "errored"]
        first = errored[0]
        reason = str(first.reason or "no reason recorded").splitlines()[0]
        return (
            f"study {self.spec.name}: no trial finished ({len(errored)} of "
            f"{self.source.expected} errored); the first, trial {first.trial_id}: {reason} "
            f"(`cmcl study status {self.study}` lists every failed run)"
        )
