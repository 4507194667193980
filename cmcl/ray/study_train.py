"""A study run on several Ray Train workers: cmcl.ray.train.fit_distributed, watched.

The run's directory is ``<study>/runs/<run_id>`` as for a one-process run
(``fit_distributed(storage=<study>/runs, name=<run_id>)``, a path or a URI),
so a run restarted by the study finds its checkpoints there and the report
reads it like any other. Rank 0 rewrites ``metrics.parquet`` there before
each report; this function watches that file and turns new rows into the
run's events, because Ray Train's own callbacks run in its controller
process. Ray Train restarts the worker group after a lost worker within the
run's own budget (``train.restarts``), from the newest checkpoint; stopping
the run (ASHA) writes the run's STOP marker, and the workers stop after
their next evaluation.
"""

from __future__ import annotations

import io
import threading
from typing import Any

from cmcl.study.execute import Emit, RunJob

POLL_S = 1.0


def _history(location) -> list[dict[str, Any]]:
    import pandas as pd

    data = location.read_bytes("metrics.parquet")
    return [] if data is None else pd.read_parquet(io.BytesIO(data)).to_dict("records")


def run_on_trainer(job: RunJob, emit: Emit, *, stop: threading.Event) -> None:
    """Train ``job`` on ``job.resources.workers`` DDP workers; its events go to ``emit``.

    Raises what :func:`cmcl.ray.train.fit_distributed` raises (NonFiniteLossError,
    ray.train.TrainingFailedError after ``train.restarts`` worker-group restarts), and
    :class:`~cmcl.study.execute.RunStopped` once ``stop`` is set and the workers stopped.
    """
    from cmcl.ray.storage import RunLocation
    from cmcl.ray.train import STOP_FILE, fit_distributed

    storage, _, name = job.location.rpartition("/")
    location = RunLocation(storage, name)
    location.remove(STOP_FILE)  # left by a stop of an earlier attempt
    resources = job.resources
    outcome: dict[str, Any] = {}

    def train() -> None:
        try:
            outcome["summary"] = fit_distributed(
                job.config.replace({"out": None, "resume": None}),
                workers=resources.workers,
                gpus_per_worker=resources.gpus_per_worker,
                cpus_per_worker=resources.cpus_per_worker,
                storage=storage,
                name=name,
                stoppable=True,
            )
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error

    worker = threading.Thread(target=train, name=f"train-{job.run_id}", daemon=True)
    worker.start()
    sent = 0
    started = False
    while True:
        worker.join(POLL_S)
        if stop.is_set() and not location.exists(STOP_FILE):
            location.write_bytes(STOP_FILE, b"stopped by the study\n")
        history = _history(location)
        if history and not started:
            started = True
            emit({"kind": "started", "done_steps": 0, "total_steps": 0})
        for row in history[sent:]:
            sent += 1
            emit({"kind": "evaluation", "index": sent, "row": row})
        if not worker.is_alive():
            break
    if "error" in outcome:
        raise outcome["error"]
    history = _history(location)
    for row in history[sent:]:
        sent += 1
        emit({"kind": "evaluation", "index": sent, "row": row})
    emit(
        {
            "kind": "finished",
            "summary": outcome["summary"],
            "history": history,
            "has_features": location.exists("features.parquet"),
            "has_weights": location.exists("model.pt"),
            "extra": {},
        }
    )
