"""Where a study's trials come from: the grid's points, or Optuna's ask-and-tell.

A source hands the driver one new configuration at a time (:meth:`next_plan`),
is told how each ended (:meth:`tell`), and on a resume says which trials it
created that the driver's records lack (:meth:`adopt`).

* :class:`GridSource`: every grid point once, each with the number it has in
  the grid's order (its trial id); offered costliest first, so that the study's
  last runs are its short ones and the slots finish together.
* :class:`OptunaSource`: Optuna's public ask-and-tell API on the study's
  Optuna storage (a journal file in a local study directory, or an RDB). The
  storage holds the search's state: every trial asked, its parameters under
  the study file's names (``lambda``, ``T``...), and how it ended (COMPLETE
  with its value, PRUNED when ASHA stopped it, FAIL when it errored). Nothing
  is pickled; a new driver opens the same study and continues it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from typing import Any

from cmcl.study.naming import trial_id
from cmcl.study.plan import TrialPlan, grid_points, run_config, trial_plan
from cmcl.study.records import TrialRecord
from cmcl.study.spec import StudySpec

log = logging.getLogger(__name__)


def plan_cost(spec: StudySpec, plan: TrialPlan) -> float:
    """A rough compute cost of a trial's runs, to order a grid (not a measurement).

    Warm-up steps cost what a source-only step costs for every method; adaptation
    steps cost the method's ``relative_cost`` (cmcl/methods/registry.py, from
    benchmarks/trainer_throughput.py).
    """
    from cmcl.methods.registry import METHODS

    runs = plan.runs()
    config = run_config(spec, plan, runs[0])
    factor = getattr(METHODS[plan.method], "relative_cost", 1.0)
    return len(runs) * (config.train.warmup_steps + factor * config.train.steps)


class GridSource:
    """The grid study's points (cmcl/study/plan.py), costliest first."""

    def __init__(self, spec: StudySpec) -> None:
        self.spec = spec
        points = grid_points(spec)
        self.plans = [trial_plan(spec, {"point": point}) for point in points]
        costs = [plan_cost(spec, plan) for plan in self.plans]
        # Stable: equal costs keep the grid's order.
        self.order = sorted(range(len(points)), key=lambda i: -costs[i])
        self.created: set[int] = set()

    @property
    def expected(self) -> int:
        return len(self.plans)

    def adopt(self, records: Iterable[TrialRecord]) -> list[tuple[int, TrialPlan]]:
        self.created.update(r.number for r in records)
        return []

    def next_plan(self) -> tuple[int, TrialPlan] | None:
        for number in self.order:
            if number not in self.created:
                self.created.add(number)
                return number, self.plans[number]
        return None

    def tell(self, record: TrialRecord) -> None:
        record.told = True


class OptunaSource:
    """Optuna TPE through ask-and-tell on the study's Optuna storage.

    Args:
        storage: an RDB URL, or the path of a journal file.
        study_name: the Optuna study's name (study.json ``optuna_study``).
        concurrent: trials may run side by side (TPE then assumes running trials
            scored badly, ``constant_liar``, so it does not propose one point twice).
    """

    def __init__(self, spec: StudySpec, *, storage: str, study_name: str, concurrent: bool):
        import optuna

        self.spec = spec
        self.distributions = distributions(spec)
        store = _open_storage(storage)
        direction = "maximize" if spec.mode == "max" else "minimize"
        created = optuna.create_study(
            study_name=study_name, storage=store, direction=direction, load_if_exists=True
        )
        asked = len(created.get_trials(deepcopy=False))
        # A resumed study asks with a seed of its own: the first driver's random state is
        # gone, and the same seed would propose its first points again.
        sampler = optuna.samplers.TPESampler(
            seed=spec.optuna_seed + asked,
            n_startup_trials=spec.startup_trials,
            constant_liar=concurrent,
        )
        self.study = optuna.load_study(study_name=study_name, storage=store, sampler=sampler)

    @property
    def expected(self) -> int:
        return int(self.spec.trials or 0)

    def _plan(self, params: dict[str, Any]) -> TrialPlan:
        by_key = {p.key: params[p.label] for p in self.spec.search}
        return trial_plan(self.spec, by_key)

    def adopt(self, records: Iterable[TrialRecord]) -> list[tuple[int, TrialPlan, str | None]]:
        """Trials in the storage that ``records`` lack: asked (or even told) by a driver that
        died before it recorded them. Returns (number, plan, Optuna state if ended)."""
        known = {r.number for r in records}
        found = []
        for trial in self.study.get_trials(deepcopy=False):
            if trial.number in known:
                continue
            if set(trial.params) != {p.label for p in self.spec.search}:
                continue  # asked, but the driver died before the parameters were sampled
            ended = None if not trial.state.is_finished() else trial.state.name
            found.append((trial.number, self._plan(trial.params), ended))
        return found

    def next_plan(self) -> tuple[int, TrialPlan] | None:
        if len(self.study.get_trials(deepcopy=False)) >= self.expected:
            return None
        trial = self.study.ask(self.distributions)
        trial.set_user_attr("cmcl_trial", trial_id(trial.number))
        return trial.number, self._plan(trial.params)

    def tell(self, record: TrialRecord) -> None:
        """Tell Optuna how the trial ended; once (a trial Optuna knows as ended is left)."""
        from optuna.trial import TrialState

        value = record.value
        if record.state == "done" and value is not None and math.isfinite(value):
            self.study.tell(record.number, value, skip_if_finished=True)
        elif record.state == "stopped":
            self.study.tell(record.number, state=TrialState.PRUNED, skip_if_finished=True)
        elif record.ended:
            self.study.tell(record.number, state=TrialState.FAIL, skip_if_finished=True)
        else:
            return
        record.told = True


def distributions(spec: StudySpec) -> dict[str, Any]:
    """The search space as Optuna distributions, under the study file's names."""
    import optuna

    space: dict[str, Any] = {}
    for p in spec.search:
        if p.values is not None:
            space[p.label] = optuna.distributions.CategoricalDistribution(list(p.values))
        elif p.integer:
            step = int(p.step) if p.step and not p.log else 1
            space[p.label] = optuna.distributions.IntDistribution(
                int(p.low), int(p.high), log=p.log, step=step
            )
        else:
            space[p.label] = optuna.distributions.FloatDistribution(
                p.low, p.high, log=p.log, step=p.step
            )
    return space


def _open_storage(storage: str):
    """An Optuna storage: an RDB URL as Optuna takes it, or a journal file path."""
    if "://" in storage:
        return storage
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return JournalStorage(JournalFileBackend(storage))
