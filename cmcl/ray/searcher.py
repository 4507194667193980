"""Ray Tune's OptunaSearch, made right for studies that are stopped early and resumed.

Changes to ``ray.tune.search.optuna.OptunaSearch`` (Ray 2.60):

* a trial whose last result is not ``final`` (stopped by ASHA) is told to
  Optuna as PRUNED, not COMPLETE with its truncated value (which biases TPE);
  a final value that is NaN is told as FAIL;
* intermediate values are reported at the trial's evaluation round, once per
  round, so a resumed trial that reports its rounds again adds nothing;
* the study lives in a journal file (``optuna.journal``) in the study
  directory: it survives the driver and opens in optuna-dashboard;
* on restore the journal is re-opened at the study directory's current place,
  and trials the journal holds as RUNNING that Tune's (older) snapshot does not
  know (asked just before a crash) are handed to the next trials Tune asks
  for, so no trial is lost or duplicated and the study keeps its size. The
  sampler is then re-seeded (from the OS): with the snapshot's random state it
  would propose again the points it drew between the snapshot and the crash.
  A study resumed after a crash is therefore not bit-reproducible; one that
  was never interrupted is.
"""

from __future__ import annotations

import logging
import math
from typing import Any, ClassVar

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

log = logging.getLogger(__name__)


def journal_storage(path: str) -> JournalStorage:
    return JournalStorage(JournalFileBackend(path))


class StudyOptunaSearch(OptunaSearch):
    """See the module docstring; ``journal``: the study directory's optuna.journal."""

    journal_on_restore: ClassVar[str | None] = None
    """Set by the driver before a resume: where the journal is now (the study may have moved)."""

    def __init__(
        self,
        space: dict[str, Any],
        *,
        metric: str,
        mode: str,
        sampler,
        study_name: str,
        journal: str,
    ) -> None:
        super().__init__(
            space=space,
            metric=metric,
            mode=mode,
            sampler=sampler,
            study_name=study_name,
            storage=journal_storage(journal),
        )
        self._journal = journal
        self._reported_rounds: dict[str, int] = {}
        self._orphans: list[int] = []

    # -- asking ------------------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict | None:
        if trial_id not in self._ot_trials and self._orphans:
            number = self._orphans.pop(0)
            frozen = self._ot_study.trials[number]
            self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)
            log.info(
                "trial %s continues Optuna trial %d (asked before the crash)", trial_id, number
            )
        params = super().suggest(trial_id)
        self._ot_trials[trial_id].set_user_attr("tune_trial_id", trial_id)
        return params

    # -- telling -----------------------------------------------------------------------
    def on_trial_result(self, trial_id: str, result: dict) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        value, step = result.get(self.metric), result.get("evaluation")
        if ot_trial is None or result.get("final") or value is None or step is None:
            return
        if step <= self._reported_rounds.get(trial_id, 0) or math.isnan(value):
            return
        self._reported_rounds[trial_id] = step
        ot_trial.report(float(value), int(step))

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return
        state = self._ot_study.get_trials(deepcopy=False)[ot_trial.number].state
        if state.is_finished():
            # Told before a crash that Tune's snapshot did not see; keep the first word.
            self._completed_trials.add(trial_id)
            return
        if not error and result is not None:
            value = result.get(self.metric)
            if not result.get("final"):
                result = None  # stopped early: PRUNED (Optuna keeps its last reported value)
            elif value is None or (isinstance(value, float) and math.isnan(value)):
                result, error = None, True
        super().on_trial_complete(trial_id, result=result, error=error)

    # -- restoring ---------------------------------------------------------------------
    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        if self.journal_on_restore is not None:
            self._journal = self.journal_on_restore
        self._ot_study = optuna.load_study(
            study_name=self._study_name,
            storage=journal_storage(self._journal),
            sampler=self._sampler,
        )
        # The pickled Trial objects point at the unpickled (old) study.
        self._ot_trials = {
            tid: optuna.trial.Trial(self._ot_study, trial._trial_id)
            for tid, trial in self._ot_trials.items()
        }
        # Rounds reported after Tune's snapshot are in the journal only.
        frozen = self._ot_study.get_trials(deepcopy=False)
        self._reported_rounds = {
            tid: max(frozen[trial.number].intermediate_values, default=0)
            for tid, trial in self._ot_trials.items()
        }
        known = {trial._trial_id for trial in self._ot_trials.values()}
        self._orphans = [
            t.number
            for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t._trial_id not in known
        ]
        if self._orphans:
            log.info("Optuna trials asked before the crash, to be continued: %s", self._orphans)
        if len(frozen) > len(self._ot_trials):
            # The sampler's random state is the snapshot's: it would replay the draws
            # made between the snapshot and the crash, i.e. propose those points again.
            self._sampler.reseed_rng()
