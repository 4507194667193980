"""Running a study directory on Ray: its lease, its Ray session, its trials' source, its driver.

One driver at a time: the study's lease (cmcl/study/lease.py) is held from
start to end, and a second driver is refused. Everything the driver needs to
continue a study is plain data in the study directory (state.json, results,
the Optuna storage): a resume opens the same files and goes on; nothing is
unpickled from the directory.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cmcl.ray.session import ray_session
from cmcl.study.directory import StudyDir, create_study_dir, expected_trials, load_study_dir
from cmcl.study.driver import StudyDriver, StudyFailedError, StudyWaitTimeout, nothing_to_run
from cmcl.study.lease import StudyLease
from cmcl.study.naming import study_location
from cmcl.study.plan import RunOverrides
from cmcl.study.resources import check_resources
from cmcl.study.searchers import GridSource, OptunaSource
from cmcl.study.spec import StudySpec
from cmcl.study.unfinished import StudyStateError, check_layout, set_unfinished_aside

__all__ = [
    "StudyFailedError",
    "StudyStateError",
    "StudyWaitTimeout",
    "run_new_study",
    "run_study",
]


def quiet_output(verbose: bool) -> None:
    if not verbose:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        for name in ("ray.train", "ray.data"):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def check_optuna_storage(spec: StudySpec, study: StudyDir | str) -> None:
    """An Optuna study on an object store needs an RDB: its journal needs a filesystem."""
    remote = study.remote if isinstance(study, StudyDir) else "://" in str(study)
    if spec.searcher == "optuna" and spec.optuna_storage is None and remote:
        raise ValueError(
            f"study {spec.name}: an Optuna study in object storage ({study}) needs an Optuna "
            "database, because Optuna's journal file needs a filesystem with locks: give "
            "`optuna_storage: postgresql://USER@HOST/DB` in the study file or "
            "`--optuna-storage URL` (PostgreSQL or MySQL reachable from the driver; "
            "docs/studies.md, 'Storage on a cluster')"
        )


def _lease(study: StudyDir):
    if study.remote:
        from cmcl.study.object_lease import ObjectStudyLease

        return ObjectStudyLease(study.store)
    return StudyLease(study.path)


def _source(spec: StudySpec, study: StudyDir, meta: dict[str, Any], concurrent: bool):
    if spec.searcher == "grid":
        return GridSource(spec)
    storage = spec.optuna_storage or study.journal()
    name = meta.get("optuna_study") or spec.name
    return OptunaSource(spec, storage=storage, study_name=name, concurrent=concurrent)


def run_study(
    location: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    max_concurrent: int | None = None,
    retry_errored: bool = False,
    restart_unfinished: bool = False,
    echo: bool = True,
    verbose: bool = False,
    lease: Any = None,
) -> str:
    """Run (or resume) the study at ``location``; returns its location.

    Args:
        address: a Ray cluster (``auto``, ``ray://host:10001``); None starts a
            private local instance with ``num_cpus``.
        max_concurrent: trials in flight at once (default: the study file's, else
            as many as the slots need).
        retry_errored: run again the runs whose code failed (runs lost to the
            infrastructure run again without it).
        restart_unfinished: run the unfinished trials again from their start, their
            run directories set aside (cmcl/study/unfinished.py).
        echo: progress lines on stderr.
        verbose: Ray's own output too.
        lease: the study's lease, when the caller holds it already.

    Raises:
        StudyBusyError: another driver runs the study.
        StudyStateError: the directory was written by a cmcl that ran studies on Ray Tune.
        StudyFailedError: no trial finished, every one errored.
        StudyWaitTimeout: the cluster could not start a run within resources.wait_timeout_s.
    """
    study, spec, meta = load_study_dir(location)
    if spec.fidelity is not None:
        return _run_two_fidelity(
            study,
            spec,
            meta,
            address=address,
            num_cpus=num_cpus,
            echo=echo,
            verbose=verbose,
            lease=lease,
            options={
                "max_concurrent": max_concurrent,
                "retry_errored": retry_errored,
                "restart_unfinished": restart_unfinished,
            },
        )
    check_layout(study)
    check_optuna_storage(spec, study)
    if spec.tracking is not None:
        from cmcl.tracking import prepare_group

        # A missing client fails here, before any run; a tracker that is down, one line.
        warning = prepare_group(spec.tracking, spec.name)
        if warning and echo:
            print(f"[cmcl study] {warning}", file=sys.stderr)
    if max_concurrent is not None:
        spec = dataclasses.replace(spec, max_concurrent=max_concurrent)
    with contextlib.ExitStack() as stack:
        if lease is None:
            lease = _lease(study)
            note = lease.acquire()
            stack.callback(lease.release)
            if note and echo:
                print(f"[cmcl study] {note}", file=sys.stderr)
        if restart_unfinished:
            aside = set_unfinished_aside(study)
            if echo and aside:
                print(f"[cmcl study] unfinished trials' files moved to {aside}", file=sys.stderr)
        if nothing_to_run(study.read_state(), expected_trials(spec), retry_errored=retry_errored):
            # Every trial ended and was saved: no Ray to start, nothing to wait for.
            if echo:
                print(
                    f"[cmcl study] {spec.name}: every trial has ended; nothing to run",
                    file=sys.stderr,
                )
            return study.location
        quiet_output(verbose)
        level = logging.WARNING if verbose else logging.ERROR
        stack.enter_context(
            ray_session(
                address,
                num_cpus=num_cpus,
                log_to_driver=verbose,
                logging_level=level,
                quiet=not verbose,
            )
        )
        from cmcl.ray.executor import RayExecutor

        executor = RayExecutor(spec.resources)
        concurrent = executor.capacity().runs > 1
        driver = StudyDriver(
            study,
            spec,
            meta,
            executor=executor,
            source=_source(spec, study, meta, concurrent),
            retry_errored=retry_errored,
            echo=echo,
        )
        driver.run()
    return study.location


def run_new_study(
    spec: StudySpec,
    *,
    storage: str | Path,
    overrides: RunOverrides | None = None,
    source: str | None = None,
    synthetic: bool = False,
    echo: bool = True,
    **options: Any,
) -> str:
    """Create ``<storage>/<name>`` and run the study in it, holding its lease throughout.

    The lease comes first: a second ``cmcl study run`` of the same study while
    this one drives it is then refused by the lease, naming this driver,
    instead of being told to resume. ``options`` go to :func:`run_study`.
    """
    # A layout no run can use fails here, before the lease, the directory and Ray.
    if spec.fidelity is not None:
        from cmcl.study.fidelity import check_locations, screen_spec, split_overrides

        check_locations(spec, overrides or {})
        check_resources(screen_spec(spec), split_overrides(overrides or {})["screen"])
    else:
        check_resources(spec, overrides)
    location = study_location(storage, spec.name)
    check_optuna_storage(spec, location)
    if spec.tracking is not None:
        from cmcl.tracking import check_tracking

        check_tracking(spec.tracking)
    study = StudyDir(location)
    existed = study.remote or Path(location).exists()
    created = False
    lease = _lease(study)
    note = lease.acquire()
    try:
        if note and echo:
            print(f"[cmcl study] {note}", file=sys.stderr)
        create_study_dir(
            spec, storage=storage, overrides=overrides, source=source, synthetic=synthetic
        )
        created = True
        if echo:
            print(f"study {spec.name} -> {location}", file=sys.stderr)
        return run_study(location, echo=echo, lease=lease, **options)
    finally:
        lease.release()
        if not existed and not created:
            with contextlib.suppress(OSError):
                os.rmdir(location)  # only if empty: the lease made it, nothing else is there


def _run_two_fidelity(
    parent: StudyDir,
    spec: StudySpec,
    meta: dict[str, Any],
    *,
    address: str | None,
    num_cpus: int | None,
    echo: bool,
    verbose: bool,
    lease: Any,
    options: dict[str, Any],
) -> str:
    """Run (or resume) both stages of a two-fidelity study (cmcl/study/fidelity.py) on one Ray
    session: the screen to its end, then the confirm stage made from the screen's records."""
    from cmcl.study.fidelity import confirm_spec, screen_spec, split_overrides

    stages = split_overrides(meta.get("run_overrides", {}))
    with contextlib.ExitStack() as stack:
        if lease is None:
            lease = _lease(parent)
            note = lease.acquire()
            stack.callback(lease.release)
            if note and echo:
                print(f"[cmcl study] {note}", file=sys.stderr)
        level = logging.WARNING if verbose else logging.ERROR
        stack.enter_context(
            ray_session(
                address,
                num_cpus=num_cpus,
                log_to_driver=verbose,
                logging_level=level,
                quiet=not verbose,
            )
        )
        screen = StudyDir(study_location(parent.location, screen_spec(spec).name))
        if not screen.is_study():
            create_study_dir(
                screen_spec(spec),
                storage=parent.location,
                overrides=stages["screen"],
                source=f"the screen stage of {spec.name}",
            )
        if echo:
            print(
                f"[cmcl study] {spec.name}: screen stage (feature mode) -> {screen}",
                file=sys.stderr,
            )
        run_study(screen.location, echo=echo, verbose=verbose, **options)
        confirm = StudyDir(study_location(parent.location, f"{spec.name}-confirm"))
        if not confirm.is_study():
            create_study_dir(
                confirm_spec(spec, screen),
                storage=parent.location,
                overrides=stages["confirm"],
                source=f"the confirm stage of {spec.name}",
            )
        if echo:
            print(
                f"[cmcl study] {spec.name}: confirm stage (video mode) -> {confirm}",
                file=sys.stderr,
            )
        run_study(confirm.location, echo=echo, verbose=verbose, **options)
        parent.write_driver("finished")
    return parent.location
