"""The Ray Tune side of a study: its Tuner, searcher, scheduler and trial function.

Used by cmcl/ray/study.py, which drives the study (lease, restore, failure).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from cmcl.study.directory import adaptation_evaluations
from cmcl.study.naming import JOURNAL_FILE, TUNE_DIR
from cmcl.study.plan import grid_points, trial_plan
from cmcl.study.restart import key_of_plan, key_of_record
from cmcl.study.spec import StudySpec

log = logging.getLogger(__name__)
METRIC = "objective"
"""The key every trial result carries its selection-metric value under."""


def quiet_output(verbose: bool) -> None:
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


def study_trainable(spec: StudySpec, study: Path, meta: dict[str, Any]):
    from ray import tune

    from cmcl.ray.trial import study_trial

    context = {
        "spec": spec.to_dict(),
        "study_dir": str(study),
        "run_overrides": meta.get("run_overrides", {}),
        "parallel_runs": meta["resolved"]["parallel_runs"],
        # Studies planned before runs were pooled keep their trials' own bundles.
        "pool": meta["resolved"].get("pool", False),
    }
    trainable = tune.with_parameters(study_trial, context=context)
    return tune.with_resources(trainable, trial_resources(meta["resolved"]))


def trial_resources(resolved: dict[str, Any]):
    """Tune's resource request for each trial: the placement group the plan sized.

    ``resolved`` is :func:`cmcl.study.directory.plan_resources`'s answer. Its
    bundles go to Ray as they are, fractions of a GPU included, so Ray packs
    several one-worker runs on a GPU (``gpus_per_worker: 0.25``: four).
    """
    from ray import tune

    return tune.PlacementGroupFactory([dict(bundle) for bundle in resolved["bundles"]])


def _searcher(spec: StudySpec, study: Path, concurrent: int, *, reseed: bool = False):
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
    if reseed:
        sampler.reseed_rng()
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


def check_state_api() -> None:
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


def new_tuner(
    spec: StudySpec,
    study: Path,
    meta: dict[str, Any],
    trainable,
    callback,
    verbose: bool,
    kept: list[dict[str, Any]],
):
    """A Tuner over the study's trials but those ``kept`` (ended before a restart); None if none."""
    from ray import tune

    concurrent = meta["resolved"]["max_concurrent"]
    if spec.searcher == "grid":
        ended = {key_of_record(r) for r in kept}
        points = [
            p for p in grid_points(spec) if key_of_plan(trial_plan(spec, {"point": p})) not in ended
        ]
        if not points:
            return None
        param_space: dict[str, Any] = {"point": tune.grid_search(points)}
        search_alg, samples = None, 1
    else:
        samples = int(spec.trials or 0) - len(kept)
        if samples <= 0:
            return None
        # After a restart the journal already holds trials: a sampler seeded as at the
        # start would draw the kept trials' points again.
        search_alg = _searcher(spec, study, concurrent, reseed=bool(kept))
        param_space = {}
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
            # A trial stopped early (ASHA) must take its runs down with it: Tune parks a
            # reused actor's function instead of ending it, so pooled runs (tasks the trial
            # owns) and Ray Train runs would train on; a new actor per trial ends them
            # (tasks die with their owner). Trials that end by returning can reuse actors.
            reuse_actors=spec.resources.workers == 1
            and not (meta["resolved"].get("pool", False) and spec.scheduler.name == "asha"),
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=str(study),
            verbose=1 if verbose else 0,
            failure_config=tune.FailureConfig(max_failures=spec.max_failures),
            callbacks=[callback],
        ),
    )
