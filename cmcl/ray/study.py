"""Driving a study directory on Ray Tune: fresh, restored after the driver died, or restarted.

One driver at a time: :func:`run_study` holds the study's lease
(cmcl/study/lease.py) from start to end, and a second driver is refused.
It builds a ``ray.tune.Tuner`` (cmcl/ray/tuner.py) or, when DIR/tune holds
Tune's state, restores it: finished trials are kept, unfinished ones continue
(their runs from their newest checkpoints), the searcher continues the same
Optuna study, and the study ends with the number of trials its file asked
for. A study whose Tune state is lost is never started over on its own
(cmcl/study/restart.py), and one in which every trial errored ends with
:class:`StudyFailedError`."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Any

from cmcl.ray.session import ray_session
from cmcl.ray.tuner import (
    check_state_api,
    needs_state_api,
    new_tuner,
    quiet_output,
    study_trainable,
    trial_dirname,  # noqa: F401  (studies saved before name it here)
)
from cmcl.study.directory import (
    create_study_dir,
    expected_trials,
    load_study_dir,
    plan_resources,
)
from cmcl.study.lease import StudyLease
from cmcl.study.naming import JOURNAL_FILE, STUDY_FILE, TUNE_DIR
from cmcl.study.naming import study_dir as study_directory
from cmcl.study.plan import RunOverrides
from cmcl.study.records import write_json
from cmcl.study.resources import check_resources, describe_plan
from cmcl.study.restart import (
    StudyStateError,
    has_progress,
    set_unfinished_aside,
    unrestorable_message,
)
from cmcl.study.spec import StudySpec
from cmcl.study.status import study_status


class StudyFailedError(RuntimeError):
    """No trial of the study finished: every one errored (the message names the first error)."""

    def __init__(self, message: str, study: Path) -> None:
        super().__init__(message)
        self.study = study


def run_study(
    study_dir: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    retry_errored: bool = False,
    restart_unfinished: bool = False,
    echo: bool = True,
    verbose: bool = False,
    lease: StudyLease | None = None,
) -> Path:
    """Run (or resume) the study in ``study_dir``; returns the directory.

    Args:
        address: a Ray cluster (``auto``, ``ray://host:10001``); None starts a
            private local instance with ``num_cpus``.
        max_concurrent: trials at once (first run only: a resumed study keeps its sizes).
        retry_errored: on resume, run errored trials again (for failures that were
            not deterministic: a lost node, out of memory).
        restart_unfinished: when Tune's state cannot be restored, keep the ended
            trials and run the others again from their start (cmcl/study/restart.py).
        echo: progress lines on stderr.
        verbose: Ray's and Tune's own output too.
        lease: the study's lease, when the caller holds it already; otherwise it
            is taken here and released at the end.

    Raises:
        StudyBusyError: another driver runs the study.
        StudyStateError: Tune's state cannot be restored and ``restart_unfinished`` is off.
        StudyFailedError: no trial finished, every one errored.
    """
    study = Path(study_dir).resolve()
    spec, meta = load_study_dir(study)
    with contextlib.ExitStack() as stack:
        if lease is None:
            lease = StudyLease(study)
            note = lease.acquire()
            stack.callback(lease.release)
            if note and echo:
                print(f"[cmcl study] {note}", file=sys.stderr)
        quiet_output(verbose)
        level = logging.WARNING if verbose else logging.ERROR
        dashboard = needs_state_api(spec)
        session = ray_session(
            address,
            num_cpus=num_cpus,
            log_to_driver=verbose,
            logging_level=level,
            dashboard=dashboard,
        )
        cluster = stack.enter_context(session)
        if dashboard and address is not None:
            check_state_api()
        _drive(
            study,
            spec,
            meta,
            cluster,
            max_concurrent=max_concurrent,
            retry_errored=retry_errored,
            restart_unfinished=restart_unfinished,
            echo=echo,
            verbose=verbose,
        )
    return study


def run_new_study(
    spec: StudySpec,
    *,
    storage: str | Path,
    overrides: RunOverrides | None = None,
    source: str | None = None,
    synthetic: bool = False,
    echo: bool = True,
    **options: Any,
) -> Path:
    """Create ``<storage>/<name>`` and run the study in it, holding its lease throughout.

    The lease comes first: a second ``cmcl study run`` of the same study while
    this one drives it is then refused by the lease, naming this driver,
    instead of being told to resume. ``options`` go to :func:`run_study`.
    """
    # A layout no run can use fails here, before the lease, the directory and Ray.
    check_resources(spec, overrides)
    path = study_directory(storage, spec.name)
    existed, created = path.exists(), False
    lease = StudyLease(path)
    note = lease.acquire()
    try:
        if note and echo:
            print(f"[cmcl study] {note}", file=sys.stderr)
        create_study_dir(
            spec, storage=storage, overrides=overrides, source=source, synthetic=synthetic
        )
        created = True
        if echo:
            print(f"study {spec.name} -> {path}", file=sys.stderr)
        return run_study(path, echo=echo, lease=lease, **options)
    finally:
        lease.release()
        if not existed and not created:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: the lease made it, nothing else is there


def _drive(
    study: Path,
    spec: StudySpec,
    meta: dict[str, Any],
    cluster: dict[str, float],
    *,
    max_concurrent: int | None,
    retry_errored: bool,
    restart_unfinished: bool,
    echo: bool,
    verbose: bool,
) -> None:
    from ray import tune

    from cmcl.ray.callback import StudyCallback, write_driver_state

    tune_dir = study / TUNE_DIR
    restorable = tune_dir.exists() and tune.Tuner.can_restore(str(tune_dir))
    kept: list[dict[str, Any]] = []
    if restorable and restart_unfinished:
        raise ValueError(
            f"{study}: --restart-unfinished is for a study whose Tune state is lost; this "
            f"one's can be restored: run `cmcl study resume {study}` without it"
        )
    if not restorable and has_progress(study):
        if not restart_unfinished:
            raise StudyStateError(unrestorable_message(study))
        kept, aside = set_unfinished_aside(study, spec, retry_errored=retry_errored)
        if echo:
            where = f"; the rest moved to {aside}" if aside else ""
            print(
                f"[cmcl study] restarting: {len(kept)} ended trial(s) kept{where}", file=sys.stderr
            )
    if "resolved" not in meta or not restorable:
        meta["resolved"] = plan_resources(
            spec, cluster, max_concurrent=max_concurrent, overrides=meta.get("run_overrides")
        )
        if echo:
            print(f"[cmcl study] {describe_plan(meta['resolved'])}", file=sys.stderr)
    trainable = study_trainable(spec, study, meta)
    callback = StudyCallback(str(study), spec.to_dict(), expected=expected_trials(spec), echo=echo)
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
        tuner = new_tuner(spec, study, meta, trainable, callback, verbose, kept)
    write_json(study / STUDY_FILE, meta)
    state = "interrupted"
    try:
        if tuner is not None:
            tuner.fit()
        status = study_status(study)
        if status.counts["running"] + status.counts["pending"] == 0:
            state = "finished"
        ended = status.counts["done"] + status.counts["stopped"]
        if state == "finished" and status.counts["errored"] and not ended:
            state = "failed"
            raise StudyFailedError(_failure_message(study, status), study)
    finally:
        write_driver_state(study, state)


def _failure_message(study: Path, status) -> str:
    first = status.errored[0]
    reason = str(first.get("reason") or "no reason recorded").splitlines()[0]
    full = study / TUNE_DIR / first["trial_id"] / "error.txt"
    where = f"the full error is in {full}" if full.exists() else "see `cmcl study status`"
    return (
        f"study {status.name}: no trial finished ({status.counts['errored']} of "
        f"{status.expected} errored); the first, trial {first['trial_id']}: {reason} "
        f"({where})"
    )
