"""A study run on several Ray Train workers: cmcl.ray.train.fit_distributed, watched.

The run's directory is ``<study>/runs/<run_id>`` as for a one-process run
(``fit_distributed(storage=<study>/runs, name=<run_id>)``), so a trial that
restarts finds the run's checkpoints there and the report reads it like any
other. Rank 0 rewrites ``metrics.parquet`` there before each report; the trial
watches that file and turns new rows into events, because Ray Train's own
callbacks run in its controller process, where ``ray.tune.report`` cannot be
called.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from cmcl.config import RunConfig
from cmcl.study.execute import RunJob, RunRecorder, Sink, read_history
from cmcl.study.naming import RUNS_DIR
from cmcl.study.spec import Resources

POLL_S = 1.0


def run_on_trainer(job: RunJob, sink: Sink, *, resources: Resources, max_failures: int) -> None:
    """Train ``job`` with ``resources.workers`` DDP workers; its events go to ``sink``.

    Raises what :func:`cmcl.ray.train.fit_distributed` raises (NonFiniteLossError,
    ray.train.TrainingFailedError after ``max_failures`` worker-group restarts).
    """
    from cmcl.ray.train import fit_distributed

    config = RunConfig.from_dict(job.config)
    run_dir = Path(config.out)
    recorder = RunRecorder(job, config, sink)
    outcome: dict[str, Any] = {}

    def train() -> None:
        try:
            outcome["summary"] = fit_distributed(
                config.replace({"out": None, "resume": None}),
                workers=resources.workers,
                gpus_per_worker=resources.gpus_per_worker,
                cpus_per_worker=resources.cpus_per_worker,
                storage=str(Path(job.study_dir) / RUNS_DIR),
                name=job.run_id,
                max_failures=max_failures,
            )
        except BaseException as error:  # re-raised in the trial's thread below
            outcome["error"] = error

    worker = threading.Thread(target=train, name=f"train-{job.run_id}", daemon=True)
    worker.start()
    seen = None
    while True:
        worker.join(POLL_S)
        path = run_dir / "metrics.parquet"
        stamp = path.stat().st_mtime_ns if path.exists() else None
        if stamp != seen:
            seen = stamp
            recorder.extend(read_history(run_dir))
        if not worker.is_alive():
            break
    if "error" in outcome:
        raise outcome["error"]
    recorder.extend(read_history(run_dir))
    recorder.finish(outcome["summary"])
