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
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from cmcl.study.aggregate import TrialProgress
from cmcl.study.asha import ASHA
from cmcl.study.directory import StudyDir, adaptation_evaluations
from cmcl.study.execute import RunJob
from cmcl.study.naming import run_id, trial_id
from cmcl.study.plan import RunKey, RunOverrides, TrialPlan, run_config
from cmcl.study.progress import Capacity, StudyWaitTimeout, Voice, failure_message
from cmcl.study.records import RunRecord, StudyState, TrialRecord
from cmcl.study.restore import SavedRuns, plan_of, reopen_trials, selection
from cmcl.study.saving import EndedRun, ResultsBuffer, timed_write
from cmcl.study.spec import StudySpec

__all__ = [
    "Capacity",
    "Executor",
    "StudyDriver",
    "StudyFailedError",
    "StudyWaitTimeout",
    "nothing_to_run",
]

POLL_S = 0.5
CAPACITY_EVERY_S = 5.0
SAVE_EVERY_S = 1.0


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
        self.buffer = ResultsBuffer(study, name=spec.name, keep=spec.keep, clock=clock)
        self.voice = Voice(spec, echo=echo, clock=clock)
        self.exhausted = False
        self.capacity: Capacity | None = None
        self.asha = self._asha()
        self._checked_capacity = -math.inf
        self._saved_at = -math.inf
        self._save_cost = 0.0
        self._dirty = True
        self.saved: SavedRuns | None = None

    # -- output ------------------------------------------------------------------------
    def say(self, text: str) -> None:
        self.voice.say(text)

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
                message = failure_message(
                    self.spec,
                    self.state.trials.values(),
                    expected=self.source.expected,
                    study=self.study,
                )
                raise StudyFailedError(message, self.study.location)
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
        removed = self.buffer.recover()
        if removed:
            self.say(f"removed {len(removed)} half-written result file(s) of a stopped driver")
        state = self.study.read_state() or StudyState()
        state.sessions += 1
        self.state = state
        self.saved = SavedRuns(self.study.store)
        reopen_trials(state, self.saved.ended, retry=self.retry_errored)
        for trial in state.trials.values():
            self.plans[trial.trial_id] = plan_of(self.spec, trial)
        for number, plan, *told in self.source.adopt(list(state.trials.values())):
            trial = self._new_trial(number, plan)
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

    def _replay(self, trial: TrialRecord) -> None:
        self.saved.feed(trial, self._progress_of(trial), with_evaluations=self.asha is not None)

    # -- trials and runs ----------------------------------------------------------------
    def _new_trial(self, number: int, plan: TrialPlan) -> TrialRecord:
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
        for run in runs:
            if run.run_id in self.saved.ended:  # the records were lost, the results were not
                run.state, run.saved = self.saved.ended[run.run_id], True
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
            trial = self._new_trial(*plan)
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
        rounds = self._progress_of(trial).add(
            {"kind": "evaluation", "run_id": run.run_id, "index": index, "metrics": selection(row)}
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
        self.buffer.add(
            EndedRun(
                run=run,
                trial=trial,
                plan=self.plans[trial.trial_id],
                config=self._config(trial, run),
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
        progress = self._progress_of(trial)
        for index, row in enumerate(history, start=1):
            progress.add(
                {
                    "kind": "evaluation",
                    "run_id": run.run_id,
                    "index": index,
                    "metrics": selection(row),
                }
            )
        progress.add(
            {"kind": "summary", "run_id": run.run_id, "summary": selection(event["summary"])}
        )
        self._maybe_finish_trial(trial)

    def _maybe_finish_trial(self, trial: TrialRecord) -> None:
        if trial.ended:
            self.progress.pop(trial.trial_id, None)
            return
        progress = self._progress_of(trial)
        if not progress.finished:
            return
        # An ended trial's rounds are not needed again: memory stays flat over a long study.
        self.progress.pop(trial.trial_id, None)
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
        self.progress.pop(trial.trial_id, None)
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
        self.progress.pop(trial.trial_id, None)
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
            self.buffer.add(
                EndedRun(
                    run=run,
                    trial=trial,
                    plan=self.plans[trial.trial_id],
                    config=self._config(trial, run),
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
            self.voice.capacity_changed(capacity, first=self.capacity is None)
            self.meta.setdefault("resolved", {}).update(
                {
                    "runs_at_once": capacity.runs,
                    "per_run": capacity.per_run,
                    "cluster": capacity.cluster,
                }
            )
        self.capacity = capacity

    def _check_waiting(self) -> None:
        assert self.capacity is not None
        self.voice.waiting(
            self.capacity,
            queued_since=[t for r, t in self.active.items() if r not in self.began],
            running=len(self.began),
            blocked=self.capacity.runs == 0 and not self._done(),
        )

    # -- results and records -------------------------------------------------------------
    def _config(self, trial: TrialRecord, run: RunRecord):
        job = self.jobs.get(run.run_id)
        if job is not None:
            return job.config
        key = RunKey(run.benchmark, run.pair, run.seed)
        return run_config(self.spec, self.plans[trial.trial_id], key, overrides=self.overrides)

    def _flush(self, *, force: bool) -> None:
        flushed = self.buffer.flush(force=force)
        if not flushed:
            return
        for item in flushed:
            self.rows.pop(item.run.run_id, None)
            self.jobs.pop(item.run.run_id, None)
        self._save(force=True)  # the records say "saved" before any directory is pruned
        self.buffer.prune(flushed)

    def _save(self, *, force: bool) -> None:
        now = self.clock()
        if not self._dirty and not force:
            return
        if not force and now - self._saved_at < max(SAVE_EVERY_S, 20 * self._save_cost):
            return
        self._save_cost = timed_write(lambda: self.study.write_state(self.state))
        self._saved_at, self._dirty = now, False

    def _progress_line(self) -> None:
        self.voice.counts(
            self.state.trials.values(),
            running=len(self.began),
            queued=sum(r not in self.began for r in self.active),
            expected=self.source.expected,
        )
