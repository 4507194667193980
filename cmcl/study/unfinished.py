"""Studies a driver cannot simply continue, and starting unfinished trials over on request.

* A study directory written by cmcl 0.1, which ran studies on Ray Tune
  (``tune/`` and ``trials/<id>.json``), cannot be resumed by this version: its
  execution state is a Tune experiment that would have to be unpickled.
  :func:`check_layout` says so, and what still works (status, report).
* ``cmcl study resume --restart-unfinished`` keeps every trial that ended
  (done, stopped early, errored) with its records and results, moves the run
  directories of the unfinished trials to ``unfinished-<time>/`` and runs those
  trials again from their start, e.g. after their checkpoints were damaged or
  written by a different version. Nothing else ever moves a study's files.
"""

from __future__ import annotations

import time

from cmcl.study.directory import StudyDir
from cmcl.study.naming import run_dir


class StudyStateError(RuntimeError):
    """The study's execution state cannot be continued; the message says what the user may do."""


def check_layout(study: StudyDir) -> None:
    if study.legacy() and not study.has_progress():
        raise StudyStateError(
            f"{study} was written by cmcl 0.1, which ran studies on Ray Tune (tune/, "
            "trials/); this version continues only the studies it writes. Its results are "
            f"still read by `cmcl study status {study}` and `cmcl report {study}`; to finish "
            "it, run it again from its study file into a new directory (`cmcl study run "
            "FILE --study-set name=NEW`)."
        )


def set_unfinished_aside(study: StudyDir) -> str | None:
    """Move the unfinished trials' run directories aside and reset their runs; returns the
    directory they went to (None when nothing moved)."""
    state = study.read_state()
    if state is None:
        return None
    aside = f"unfinished-{time.strftime('%Y%m%d-%H%M%S')}"
    moved = False
    for trial in state.trials.values():
        if trial.ended:
            continue
        for run in trial.runs:
            if run.saved:
                continue
            source = run_dir(run.run_id)
            for entry in study.store.list(source, recursive=True):
                data = study.store.read_bytes(entry.path)
                if data is not None:
                    study.store.write_bytes(f"{aside}/{entry.path}", data)
                    moved = True
            study.store.delete_dir(source)
            run.state, run.attempts, run.evaluations, run.resumed_from = "pending", 0, 0, None
            run.node_failures = run.code_failures = 0
            run.cause = run.reason = None
        trial.rounds, trial.adapt_evals, trial.last, trial.rungs = 0, 0, None, {}
    study.write_state(state)
    return study.store.uri(aside) if moved else None
