"""The Tune trial: one configuration, its runs (pairs x seeds), reported round by round.

How a trial runs its runs, by its resources (cmcl/study/directory.py plans them):

* one worker per run (``pool``): a Ray task per run, not captured by the
  trial's placement group (which holds only a token for the trial's process),
  so Ray starts it on any free slot of the cluster, whichever trial it belongs
  to; it streams its evaluations back;
* several workers per run: :func:`cmcl.ray.train.fit_distributed` (a Ray
  Train TorchTrainer per run, one run after another);
* studies planned before runs were pooled: one run at a time in the trial's
  process, or a task per run in its own bundle of the trial's group.

Every evaluation goes to :class:`~cmcl.study.aggregate.TrialProgress`, which
turns complete rounds into ``ray.tune.report`` calls; the last report is the
configuration's value, marked ``final``. A run that fails fails the trial
with a :class:`StudyTrialError` naming the run and the cause.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray import tune

from cmcl.config import RunConfig
from cmcl.study.aggregate import TrialProgress
from cmcl.study.execute import Event, RunJob, Sink, execute_run, trial_jobs
from cmcl.study.plan import evaluation_schedule, trial_plan
from cmcl.study.spec import parse_spec


class StudyTrialError(RuntimeError):
    """A run of the trial failed; the message names the run and the cause."""


def describe_error(error: BaseException) -> str:
    """``Type: message`` of the original error, through Ray's task-error wrappers."""
    cause = error
    while getattr(cause, "cause", None) is not None and cause is not cause.cause:
        cause = cause.cause
    if isinstance(cause, StudyTrialError):
        return str(cause)
    text = str(cause).strip().splitlines()
    message = text[-1] if text else ""
    return f"{type(cause).__name__}: {message}" if message else type(cause).__name__


def study_trial(config: dict[str, Any], context: dict[str, Any]) -> None:
    """The Tune function trainable of every study trial.

    Args:
        config: the trial's parameters (a grid point or the Optuna sample).
        context: ``spec`` (the study file as a dict), ``study_dir``,
            ``run_overrides`` (per-benchmark command-line settings), ``parallel_runs``.
    """
    spec = parse_spec(context["spec"], source="spec.yaml")
    study_dir = Path(context["study_dir"])
    trial_id = tune.get_context().get_trial_id()
    plan = trial_plan(spec, config)
    jobs = trial_jobs(
        spec, plan, trial_id=trial_id, study_dir=study_dir, overrides=context["run_overrides"]
    )
    schedule = evaluation_schedule(RunConfig.from_dict(jobs[0].config).train)
    progress = TrialProgress(
        [(j.run_id, j.benchmark, j.pair) for j in jobs], metric=spec.metric, schedule=schedule
    )

    def sink(event: Event) -> None:
        for result in progress.add(event):
            tune.report(result)

    resources = spec.resources
    threads = max(1, int(resources.cpus_per_worker))
    if resources.workers > 1:
        _run_distributed(jobs, sink, context)
    elif context.get("pool"):
        _run_parallel(jobs, sink, context["parallel_runs"], resources, threads, pool=True)
    elif context["parallel_runs"] <= 1 or len(jobs) == 1:
        for job in jobs:
            try:
                execute_run(job, sink, threads=threads)
            except Exception as error:
                raise StudyTrialError(
                    f"run {job.run_id} failed: {describe_error(error)}"
                ) from error
    else:
        _run_parallel(jobs, sink, context["parallel_runs"], resources, threads)


@ray.remote(max_retries=0)
def _remote_run(job: dict[str, Any], threads: int) -> Iterator[Event]:
    """One run as a streaming Ray task: yields its events as the engine produces them."""
    events: queue.Queue = queue.Queue()
    done = object()

    def work() -> None:
        try:
            execute_run(RunJob.from_dict(job), events.put, threads=threads)
            events.put(done)
        except BaseException as error:  # handed to the generator, which raises it
            events.put(error)

    # The engine reports through callbacks; a generator can only yield from its own frame.
    threading.Thread(target=work, name=f"run-{job['run_id']}", daemon=True).start()
    while True:
        item = events.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


def run_task_options(resources, *, pool: bool) -> dict[str, Any]:
    """Ray options of one run's task: its CPUs and (a fraction of) a GPU; pooled runs are
    not captured by the trial's placement group, so Ray queues them for any free slot."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    options: dict[str, Any] = {
        "num_cpus": resources.cpus_per_worker,
        "num_gpus": resources.gpus_per_worker,
    }
    if pool:
        options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(None)
    return options


def _run_parallel(
    jobs: list[RunJob], sink: Sink, parallel: int, resources, threads: int, *, pool: bool = False
) -> None:
    """Up to ``parallel`` runs submitted at once: ``pool``, as Ray tasks on any free slot of
    the cluster (outside the trial's placement group, which holds only the trial's token);
    otherwise each in bundle 1..parallel of the trial's group (studies planned before)."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    group = None if pool else ray.util.get_current_placement_group()
    pending = deque(jobs)
    free = list(range(1, parallel + 1))
    active: dict[Any, tuple[RunJob, int]] = {}
    try:
        while pending or active:
            while pending and free:
                job, bundle = pending.popleft(), free.pop(0)
                options = run_task_options(resources, pool=pool)
                if group is not None:
                    options["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                        group, placement_group_bundle_index=bundle
                    )
                stream = _remote_run.options(**options).remote(job.to_dict(), threads)
                active[stream] = (job, bundle)
            ready, _ = ray.wait(list(active), num_returns=1)
            stream = ready[0]
            job, bundle = active[stream]
            try:
                event = ray.get(next(stream))
            except StopIteration:
                del active[stream]
                free.append(bundle)
                continue
            except Exception as error:
                raise StudyTrialError(
                    f"run {job.run_id} failed: {describe_error(error)}"
                ) from error
            sink(event)
    finally:
        for stream in active:
            ray.cancel(stream, force=True)


def _run_distributed(jobs: list[RunJob], sink: Sink, context: dict[str, Any]) -> None:
    """Each run on a Ray Train TorchTrainer (several DDP workers), one run after another."""
    try:
        from cmcl.ray.study_train import run_on_trainer
    except ImportError as error:
        raise StudyTrialError(
            f"resources.workers > 1 needs the Ray Train adapter (cmcl.ray.train): {error}"
        ) from error
    spec = parse_spec(context["spec"], source="spec.yaml")
    for job in jobs:
        try:
            run_on_trainer(job, sink, resources=spec.resources, max_failures=spec.max_failures)
        except Exception as error:
            raise StudyTrialError(f"run {job.run_id} failed: {describe_error(error)}") from error
