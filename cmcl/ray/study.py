"""Running a study directory on Ray Tune: fresh, or restored after the driver died.

``run_study(DIR)`` builds a ``ray.tune.Tuner`` over the trial function of
cmcl/ray/trial.py (grid: one ``grid_search`` over the study's points; Optuna:
:class:`~cmcl.ray.searcher.StudyOptunaSearch` with a seeded TPE sampler and
the journal in the study directory; ASHA on the adaptation evaluations when
asked), or, when DIR/tune holds Tune's state, restores it: finished trials
are kept, unfinished ones continue (their runs from their newest checkpoints),
the searcher continues the same Optuna study, and the study ends with the
number of trials its file asked for.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cmcl.study.directory import (
    adaptation_evaluations,
    expected_trials,
    load_study_dir,
    plan_resources,
)
from cmcl.study.naming import JOURNAL_FILE, RESULTS_DIR, RUNS_DIR, STUDY_FILE, TRIALS_DIR, TUNE_DIR
from cmcl.study.plan import grid_points
from cmcl.study.records import write_json
from cmcl.study.spec import StudySpec

log = logging.getLogger(__name__)
METRIC = "objective"
"""The key every trial result carries its selection-metric value under."""


@contextlib.contextmanager
def _ray(
    address: str | None, *, num_cpus: int | None, dashboard: bool, verbose: bool
) -> Iterator[dict]:
    """A private local Ray (``address`` None) or an existing cluster; yields its resources."""
    import ray

    if ray.is_initialized():
        yield dict(ray.cluster_resources())
        return
    level = logging.WARNING if verbose else logging.ERROR
    kwargs: dict[str, Any] = {"log_to_driver": verbose, "logging_level": level}
    if address is None:
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=dashboard, **kwargs)
    else:
        ray.init(address=address, **kwargs)
    try:
        yield dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def _quiet(verbose: bool) -> None:
    # Read when the Tuner is built; a study prints its own progress lines.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune snapshots its state every 10 s or more by default; a trial that finished
    # after the last snapshot would be resumed (instantly, from its final checkpoint)
    # rather than kept. 2 s narrows that window for little cost.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    if not verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        # Tune logs each failed trial's traceback; the study prints its one-line reason.
        for name in ("ray.tune", "ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _trainable(spec: StudySpec, study: Path, meta: dict[str, Any]):
    from ray import tune

    from cmcl.ray.trial import study_trial

    context = {
        "spec": spec.to_dict(),
        "study_dir": str(study),
        "run_overrides": meta.get("run_overrides", {}),
        "parallel_runs": meta["resolved"]["parallel_runs"],
    }
    trainable = tune.with_parameters(study_trial, context=context)
    return tune.with_resources(trainable, tune.PlacementGroupFactory(meta["resolved"]["bundles"]))


def _searcher(spec: StudySpec, study: Path, concurrent: int):
    import optuna

    from cmcl.ray.searcher import StudyOptunaSearch

    space: dict[str, Any] = {}
    for p in spec.search:
        if p.values is not None:
            space[p.key] = optuna.distributions.CategoricalDistribution(list(p.values))
        elif p.integer:
            step = int(p.step) if p.step and not p.log else 1
            space[p.key] = optuna.distributions.IntDistribution(
                int(p.low), int(p.high), log=p.log, step=step
            )
        else:
            space[p.key] = optuna.distributions.FloatDistribution(
                p.low, p.high, log=p.log, step=p.step
            )
    sampler = optuna.samplers.TPESampler(
        seed=spec.optuna_seed,
        n_startup_trials=spec.startup_trials,
        # Parallel trials: pretend running ones scored badly, so TPE does not
        # propose the same point to several workers at once.
        constant_liar=concurrent > 1,
    )
    return StudyOptunaSearch(
        space,
        metric=METRIC,
        mode=spec.mode,
        sampler=sampler,
        study_name=spec.name,
        journal=str(study / JOURNAL_FILE),
    )


def _scheduler(spec: StudySpec, meta: dict[str, Any]):
    if spec.scheduler.name != "asha":
        return None
    from ray.tune.schedulers import ASHAScheduler

    evals = adaptation_evaluations(spec, meta.get("run_overrides"))
    grace = spec.scheduler.grace_period or max(1, evals // 8)
    meta["resolved"]["asha"] = {"grace_period": grace, "max_t": evals + 1}
    # max_t above the last evaluation: the final report (the value) must not be cut.
    return ASHAScheduler(
        time_attr="adapt_evals",
        max_t=evals + 1,
        grace_period=grace,
        reduction_factor=spec.scheduler.reduction_factor,
    )


def needs_state_api(spec: StudySpec) -> bool:
    """Whether a private Ray for ``spec`` must start the dashboard.

    When ASHA stops a trial running a TorchTrainer, the workers' placement group
    is removed only through Ray's State API, which needs the dashboard; without
    it the groups leak and the sweep hangs (shared/RAY_NOTES.md). A cluster
    joined with ``--address`` must have its dashboard on for such studies.
    """
    return spec.scheduler.name == "asha" and spec.resources.workers > 1


def _check_state_api() -> None:
    try:
        from ray.util.state import list_placement_groups

        list_placement_groups(limit=1)
    except Exception as error:  # any failure means the same: no State API
        log.warning(
            "ASHA with multi-worker runs needs Ray's State API (the dashboard) on the "
            "cluster, or stopped trials leak their workers' placement groups and the "
            "study can hang (%s)",
            error,
        )


def trial_dirname(trial) -> str:
    """Tune's trial directory name: the trial id (the default spells out the whole config)."""
    return trial.trial_id


def _set_aside(study: Path) -> None:
    """Tune state that cannot be restored (a driver killed before its first snapshot)."""
    stale = study / f"stale-{time.strftime('%Y%m%d-%H%M%S')}"
    for name in (TUNE_DIR, RESULTS_DIR, RUNS_DIR, TRIALS_DIR, JOURNAL_FILE):
        if (study / name).exists():
            stale.mkdir(exist_ok=True)
            shutil.move(str(study / name), str(stale / name))
    if stale.exists():
        log.warning("%s: Tune's state was not restorable; earlier files moved to %s", study, stale)


def run_study(
    study_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    retry_errored: bool = False,
    echo: bool = True,
    verbose: bool = False,
) -> Path:
    """Run (or resume) the study in ``study_dir``; returns the directory.

    Args:
        address: a Ray cluster (``auto``, ``ray://host:10001``); None starts a
            private local instance with ``num_cpus``.
        max_concurrent: trials at once (first run only: a resumed study keeps its sizes).
        retry_errored: on resume, run errored trials again (for failures that were
            not deterministic: a lost node, out of memory).
        echo: progress lines on stderr.
        verbose: Ray's and Tune's own output too.
    """
    from ray import tune

    from cmcl.ray.callback import StudyCallback, write_driver_state
    from cmcl.study.status import study_status

    study = Path(study_dir).resolve()
    spec, meta = load_study_dir(study)
    _quiet(verbose)
    tune_dir = study / TUNE_DIR
    restorable = tune_dir.exists() and tune.Tuner.can_restore(str(tune_dir))
    dashboard = needs_state_api(spec)
    with _ray(address, num_cpus=num_cpus, dashboard=dashboard, verbose=verbose) as cluster:
        if dashboard and address is not None:
            _check_state_api()
        if "resolved" not in meta or not restorable:
            meta["resolved"] = plan_resources(spec, cluster, max_concurrent=max_concurrent)
        trainable = _trainable(spec, study, meta)
        callback = StudyCallback(
            str(study), spec.to_dict(), expected=expected_trials(spec), echo=echo
        )
        if restorable:
            from cmcl.ray.searcher import StudyOptunaSearch

            StudyOptunaSearch.journal_on_restore = str(study / JOURNAL_FILE)
            tuner = tune.Tuner.restore(
                str(tune_dir),
                trainable=trainable,
                resume_unfinished=True,
                resume_errored=retry_errored,
            )
            # The restored RunConfig holds the callback pickled with the old study path.
            tuner._local_tuner.get_run_config().callbacks = [callback]
        else:
            _set_aside(study)
            tuner = _new_tuner(spec, study, meta, trainable, callback, verbose)
        write_json(study / STUDY_FILE, meta)
        finished = False
        try:
            tuner.fit()
            status = study_status(study)
            finished = status.counts["running"] + status.counts["pending"] == 0
        finally:
            write_driver_state(study, "finished" if finished else "interrupted")
    return study


def _new_tuner(
    spec: StudySpec, study: Path, meta: dict[str, Any], trainable, callback, verbose: bool
):
    from ray import tune

    concurrent = meta["resolved"]["max_concurrent"]
    if spec.searcher == "grid":
        param_space: dict[str, Any] = {"point": tune.grid_search(grid_points(spec))}
        search_alg, samples = None, 1
    else:
        param_space, search_alg, samples = {}, _searcher(spec, study, concurrent), spec.trials
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode=spec.mode,
            num_samples=samples,
            max_concurrent_trials=concurrent,
            search_alg=search_alg,
            scheduler=_scheduler(spec, meta),
            trial_dirname_creator=trial_dirname,
            reuse_actors=spec.resources.workers == 1,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(study),
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[callback],
        ),
    )
