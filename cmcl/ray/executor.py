"""The study driver's executor on Ray: each run is a Ray task on any free slot.

A run is one streaming task (a generator: its events reach the driver as it
makes them) asking for the run's own resources: ``cpus_per_worker`` CPUs and
``gpus_per_worker`` GPUs (a fraction packs several feature-mode runs on a
GPU), or, for a run of several DDP workers, nothing itself while its Ray
Train worker group holds the workers' resources. Ray starts a task as soon
as a node has its resources free, whatever run or configuration it belongs
to, and reuses worker processes between tasks, so a study's second and later
runs on a slot pay neither the imports nor, for one pair, loading the data
again (cmcl/study/execute.py, ``shared_feature_data``).

A failed task is classified for the driver: ``node`` when Ray lost what ran
it (its node, its worker process, its owner; Ray Train's worker group after
its own restarts), ``code`` when the run's own code raised. Stopping a run
(ASHA, its trial errored) cancels the task without killing its process: the
run ends at its next step and the process stays for the next run.

Only public Ray APIs: ``ray.remote``, ``ray.wait``, ``ray.get``,
``ray.cancel``, ``ray.nodes``, ``ray.exceptions``.
"""

from __future__ import annotations

import os
import queue
import re
import socket
import threading
from collections.abc import Iterator
from typing import Any

import ray
from ray import exceptions as rx

from cmcl.study.driver import Capacity
from cmcl.study.execute import RunJob, RunStopped, execute_distributed_run, execute_run
from cmcl.study.resources import describe_cluster, describe_run, runs_at_once
from cmcl.study.spec import Resources

_INFRASTRUCTURE = (
    rx.NodeDiedError,
    rx.WorkerCrashedError,
    rx.ActorDiedError,
    rx.ActorUnavailableError,
    rx.LocalRayletDiedError,
    rx.ObjectLostError,
    rx.OwnerDiedError,
    rx.ObjectReconstructionFailedError,
    rx.OutOfMemoryError,
    rx.RaySystemError,
)
"""Failures of what ran a run, not of the run's code: the run goes back in the queue."""
_NODE = re.compile(r"node ID: (\w+)")
_MAX_EVENTS = 256
"""Events taken per poll at most, so that the driver's loop keeps its pace."""


def _stream_run(job: RunJob, threads: int) -> Iterator[dict[str, Any]]:
    """One run as a streaming Ray task: yields its events as the engine produces them."""
    yield {"kind": "began", "host": socket.gethostname(), "pid": os.getpid()}
    events: queue.Queue = queue.Queue()
    done = object()
    stop = threading.Event()

    def work() -> None:
        try:
            if job.resources.workers > 1:
                execute_distributed_run(job, events.put, stop=stop)
            else:
                execute_run(job, events.put, stop=stop, threads=threads)
            events.put(done)
        except BaseException as error:  # handed to the generator, which raises it
            events.put(error)

    # The engine reports through callbacks; a generator can only yield from its own frame.
    worker = threading.Thread(target=work, name=f"run-{job.run_id}", daemon=True)
    worker.start()
    try:
        while True:
            item = events.get()
            if item is done:
                return
            if isinstance(item, RunStopped):
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    except KeyboardInterrupt:
        # ray.cancel: the run stops at its next step; this process stays for the next run.
        stop.set()
        worker.join()
        raise
    finally:
        if job.config.train.device != "cpu":
            _release_gpu_memory()


def _release_gpu_memory() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:  # never let cleanup turn a run's result into a failure
        pass


# max_calls=0: GPU tasks would get a fresh process per call by default; a study's runs
# reuse their processes (imports, CUDA context and loaded data stay warm).
_run_task = ray.remote(max_retries=0, max_calls=0)(_stream_run)


def classify(error: BaseException) -> tuple[str, str]:
    """(``cancelled`` | ``node`` | ``code``, a one-line reason) for a failed run task."""
    seen: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in seen:
        seen.append(current)
        current = getattr(current, "cause", None) or current.__cause__
    for item in seen:
        if isinstance(item, rx.TaskCancelledError | KeyboardInterrupt):
            return "cancelled", "stopped"
    for item in seen:
        if isinstance(item, _INFRASTRUCTURE):
            return "node", _one_line(item)
        failures = getattr(item, "worker_failures", None)  # ray.train.WorkerGroupError
        if isinstance(failures, dict) and failures:
            inner = [classify(f) for f in failures.values()]
            if all(cause == "node" for cause, _ in inner):
                return "node", f"{type(item).__name__}: {inner[0][1]}"
    original = seen[-1]
    return "code", _one_line(original)


def _one_line(error: BaseException) -> str:
    from cmcl.commands.errors import error_message, original_error

    text = error_message(error).strip().splitlines()
    message = text[-1] if text else ""
    original = original_error(error)
    name = type(original).__name__
    if isinstance(original, _INFRASTRUCTURE):
        # Ray's texts run to several sentences and a command; the first one says it.
        node = _NODE.search(message)
        message = message.split(". ")[0]
        if node:
            message += f" (node {node[1][:8]})"
    return f"{name}: {message}" if message else name


def task_options(resources: Resources) -> dict[str, Any]:
    """What a run's task asks of Ray: its worker's CPUs and (a share of) a GPU; for a run of
    several DDP workers nothing, its Ray Train worker group holding the workers' resources."""
    if resources.workers > 1:
        return {"num_cpus": 0, "num_gpus": 0}
    return {"num_cpus": resources.cpus_per_worker, "num_gpus": resources.gpus_per_worker}


class RayExecutor:
    """Runs study runs as Ray tasks (see the module docstring).

    Args:
        resources: what one run asks (the study's ``resources``).
    """

    def __init__(self, resources: Resources) -> None:
        self.resources = resources
        self.streams: dict[Any, str] = {}
        self.runs: dict[str, Any] = {}
        self.stopping: set[str] = set()
        self.ended: list[tuple[str, dict[str, Any]]] = []

    # -- what the cluster holds -------------------------------------------------------
    def capacity(self) -> Capacity:
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        return Capacity(
            runs=runs_at_once(nodes, self.resources),
            cluster=describe_cluster(nodes),
            per_run=describe_run(self.resources),
        )

    # -- runs -------------------------------------------------------------------------
    def submit(self, job: RunJob) -> None:
        threads = max(1, int(job.resources.cpus_per_worker))
        stream = _run_task.options(**task_options(job.resources)).remote(job, threads)
        self.streams[stream] = job.run_id
        self.runs[job.run_id] = stream

    def stop(self, run: str) -> None:
        stream = self.runs.get(run)
        if stream is None or run in self.stopping:
            return
        self.stopping.add(run)
        ray.cancel(stream)

    def poll(self, timeout: float) -> list[tuple[str, dict[str, Any]]]:
        events, self.ended = self.ended, []
        if not self.streams:
            return events
        wait = timeout
        while len(events) < _MAX_EVENTS and self.streams:
            ready, _ = ray.wait(list(self.streams), num_returns=1, timeout=wait)
            if not ready:
                break
            wait = 0
            for stream in ready:
                events.append(self._next(stream))
        return [e for e in events if e is not None]

    def _next(self, stream: Any) -> tuple[str, dict[str, Any]] | None:
        run = self.streams[stream]
        try:
            event = ray.get(next(stream))
        except StopIteration:
            self._forget(run)
            if run in self.stopping:
                return run, {"kind": "cancelled"}
            return None
        except Exception as error:
            self._forget(run)
            cause, reason = classify(error)
            if cause == "cancelled" or run in self.stopping:
                return run, {"kind": "cancelled"}
            return run, {"kind": "failed", "cause": cause, "reason": reason}
        return run, event

    def _forget(self, run: str) -> None:
        stream = self.runs.pop(run, None)
        self.streams.pop(stream, None)
        self.stopping.discard(run)

    def shutdown(self) -> None:
        for run in list(self.runs):
            self.stop(run)
        self.streams.clear()
        self.runs.clear()
