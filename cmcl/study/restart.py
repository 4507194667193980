"""A study whose Tune state is lost: say so, and restart its unfinished part when asked.

Tune's state (``tune/``) is what lets a resume continue running trials where
they were. A driver stopped before Tune's first snapshot (a few seconds after
it started), or a removed ``tune/``, leaves none. A resume then stops with
:class:`StudyStateError` and changes nothing; ``cmcl study resume
--restart-unfinished`` keeps every trial that ended (done, stopped early, and
errored unless ``--retry-errored``) with its records, runs and results, moves
the rest to ``unfinished-<time>/`` and runs those trials again from their
start. No Ray, no torch.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from cmcl.study.naming import (
    JOURNAL_FILE,
    RESULTS_DIR,
    RUNS_DIR,
    TRIALS_DIR,
    TUNE_DIR,
    results_file,
    run_dir,
    trial_file,
)
from cmcl.study.plan import TrialPlan
from cmcl.study.records import read_trial_records
from cmcl.study.spec import StudySpec

ENDED = ("done", "stopped", "errored")


class StudyStateError(RuntimeError):
    """The study's execution state cannot be restored; the message says what the user may do."""


def has_progress(study: Path) -> bool:
    """Whether a driver already started the study (anything beyond spec.yaml and study.json)."""
    return any((study / name).exists() for name in (TUNE_DIR, TRIALS_DIR, RUNS_DIR, RESULTS_DIR))


def unrestorable_message(study: Path) -> str:
    records = read_trial_records(study)
    ended = sum(r["state"] in ENDED for r in records)
    tune = study / TUNE_DIR
    why = "is missing" if not tune.exists() else "holds no experiment state Tune can read"
    return (
        f"{study}: cannot resume: Tune's state {tune} {why} (the driver was stopped before "
        f"Tune's first snapshot, a few seconds after it started, or the directory was "
        f"removed). The study has {ended} ended trial(s) and {len(records) - ended} "
        "unfinished; nothing was changed. To keep the ended trials (records, runs and "
        "results) and run the unfinished ones again from their start: "
        f"`cmcl study resume {study} --restart-unfinished`. To start the whole study over, "
        f"move {study} away and run `cmcl study run` again."
    )


def plan_key(
    method: str, variant: str | None, pairs: list[str], params: dict[str, Any]
) -> tuple[str, str | None, tuple[str, ...], str]:
    """What identifies a trial's configuration, in its plan and in its record alike."""
    return method, variant, tuple(pairs), json.dumps(params, sort_keys=True)


def key_of_plan(plan: TrialPlan) -> tuple[str, str | None, tuple[str, ...], str]:
    return plan_key(plan.method, plan.variant, [p for _, p in plan.pairs], dict(plan.params))


def key_of_record(record: dict[str, Any]) -> tuple[str, str | None, tuple[str, ...], str]:
    return plan_key(record["method"], record["variant"], record["pairs"], record["params"])


def set_unfinished_aside(
    study: Path, spec: StudySpec, *, retry_errored: bool = False
) -> tuple[list[dict[str, Any]], Path | None]:
    """Keep the ended trials; move Tune's state and everything else to ``unfinished-<time>/``.

    Returns the kept records and the directory the rest went to (None if nothing moved).
    Optuna trials left RUNNING in the journal are told FAIL: the trials that
    asked for them will not report.
    """
    keep = {"done", "stopped"} | (set() if retry_errored else {"errored"})
    records = read_trial_records(study)
    kept = [r for r in records if r["state"] in keep]
    kept_runs = {run for r in kept for run in r["runs"]}
    moving = [study / TUNE_DIR]
    moving += [trial_file(study, r["trial_id"]) for r in records if r["state"] not in keep]
    for path in sorted((study / RUNS_DIR).glob("*")):
        if path.name not in kept_runs:
            moving += [run_dir(study, path.name), results_file(study, path.name)]
    for path in sorted((study / RESULTS_DIR).glob("evals-*.parquet")):
        if path.stem.removeprefix("evals-") not in kept_runs:
            moving.append(path)
    aside = study / f"unfinished-{time.strftime('%Y%m%d-%H%M%S')}"
    moved = False
    for path in dict.fromkeys(moving):
        if path.exists():
            target = aside / path.relative_to(study)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), str(target))
            moved = True
    if spec.searcher == "optuna" and (study / JOURNAL_FILE).exists():
        _fail_running_optuna_trials(study / JOURNAL_FILE, spec.name)
    return kept, aside if moved else None


def _fail_running_optuna_trials(journal: Path, name: str) -> None:
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    storage = JournalStorage(JournalFileBackend(str(journal)))
    ot_study = optuna.load_study(study_name=name, storage=storage)
    for trial in ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ot_study.tell(trial.number, state=TrialState.FAIL)
