"""The engine's Reporter hooks -> a tracker, on rank 0, through a :class:`TrackingSession`.

What reaches the tracker is what the host already holds: the loss means at
each ``train.log_every`` read (``on_losses``), each evaluation's metrics, the
summary. ``on_step`` does nothing here, so a training step costs the same
with tracking on.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from cmcl.engine.reporting import Reporter
from cmcl.tracking.base import FAILED, FINISHED, KILLED, Backend, StepFilter
from cmcl.tracking.identity import (
    RunIdentity,
    evaluation_values,
    loss_values,
    summary_step,
    summary_values,
)
from cmcl.tracking.session import TrackingSession

CHECKPOINT_WAIT_S = 15.0
"""The longest a checkpoint waits for the tracker to take the points logged so far."""


class TrackingReporter(Reporter):
    """Forwards every hook to ``inner`` (the console, a study's recorder) and tracks the run.

    Args:
        backend: a function building the backend (called on the tracking thread: the
            tracker's import and connection cost the run nothing).
        label: names the tracker in the one warning a failure gives.
        identity: the tracked run's key, name, group and tags.
        params: what the run records as parameters (:func:`run_params`).
        inner: the reporter this one wraps.
    """

    def __init__(
        self,
        *,
        backend: Callable[[], Backend],
        label: str,
        identity: RunIdentity,
        params: Mapping[str, Any],
        inner: Reporter | None = None,
        flush_s: float = 30.0,
    ) -> None:
        self.make_backend = backend
        self.label = label
        self.identity = identity
        self.params = dict(params)
        self.inner = inner or Reporter()
        self.flush_s = flush_s
        self.session: TrackingSession | None = None
        self.backend: Backend | None = None
        self.filter = StepFilter()
        self.last_step = 0
        # Points wait here for the tracking thread, which takes all of them in one call:
        # a tracker that falls behind (a sqlite store, a far server) gets fewer, larger calls.
        self.points: list[tuple[int, dict[str, float]]] = []
        self.points_lock = threading.Lock()
        self.flush_queued = False

    # -- the tracking thread's side ------------------------------------------------------
    def _open(self, resume_step: int) -> None:
        self.backend = self.make_backend()
        self.filter = StepFilter(
            self.backend.open(self.identity, self.params, resume_step=resume_step)
        )

    def _flush(self) -> None:
        with self.points_lock:
            points, self.points, self.flush_queued = self.points, [], False
        fresh = [(step, self.filter.new(values, step=step)) for step, values in points]
        fresh = [(step, values) for step, values in fresh if values]
        if fresh and self.backend is not None:
            self.backend.log_points(fresh)

    def _summary(self, values: dict[str, float], step: int) -> None:
        fresh = self.filter.new(values, step=step)
        if fresh and self.backend is not None:
            self.backend.log_summary(fresh, step=step)

    def _close(self, status: str) -> None:
        if self.backend is not None:
            self.backend.close(status)

    # -- the engine's hooks --------------------------------------------------------------
    def on_start(self, *, total_steps: int, done_steps: int, is_chief: bool) -> None:
        self.inner.on_start(total_steps=total_steps, done_steps=done_steps, is_chief=is_chief)
        if is_chief and self.session is None:
            self.last_step = done_steps
            self.session = TrackingSession(label=self.label, flush_s=self.flush_s)
            self.session.submit(self._open, done_steps)

    def on_step(self, *, global_step: int) -> None:
        self.inner.on_step(global_step=global_step)

    def on_losses(self, values: dict[str, float], *, global_step: int, is_chief: bool) -> None:
        self.inner.on_losses(values, global_step=global_step, is_chief=is_chief)
        if self.session is not None:
            self.last_step = max(self.last_step, global_step)
            self._queue(loss_values(values), global_step)

    def on_evaluation(
        self, metrics: dict[str, Any], *, checkpoint: Path | None, is_chief: bool
    ) -> None:
        self.inner.on_evaluation(metrics, checkpoint=checkpoint, is_chief=is_chief)
        if self.session is not None:
            step = int(metrics["global_step"])
            self.last_step = max(self.last_step, step)
            self._queue(evaluation_values(metrics), step)
            if checkpoint is not None:
                # A run resumed from this checkpoint does not log its points again: they
                # must be in the tracker first. Checkpoints are rare, and already slow.
                self.session.wait(CHECKPOINT_WAIT_S)

    def on_end(self, summary: dict[str, Any], *, is_chief: bool) -> None:
        self.inner.on_end(summary, is_chief=is_chief)
        if self.session is not None:
            step = summary_step(summary, self.last_step)
            self.session.submit(self._summary, summary_values(summary), step)
            self.end(FINISHED)

    def _queue(self, values: dict[str, float], step: int) -> None:
        assert self.session is not None
        if self.session.failed:
            return
        with self.points_lock:
            self.points.append((step, values))
            if self.flush_queued:
                return  # the queued flush takes these too
            self.flush_queued = True
        self.session.submit(self._flush)

    # -- the caller's side ---------------------------------------------------------------
    def end(self, status: str) -> None:
        """Mark the run and wait (``flush_s`` at most) for what is queued; idempotent."""
        if self.session is None:
            return
        session, self.session = self.session, None
        session.submit(self._close, status)
        session.close()

    @contextlib.contextmanager
    def marking_failure(self) -> Iterator[TrackingReporter]:
        """Around ``fit``: a run that raises is marked failed (killed on Ctrl-C), not left
        running. A process killed outright stays marked running until it is resumed."""
        try:
            yield self
        except (KeyboardInterrupt, SystemExit):
            self.end(KILLED)
            raise
        except BaseException:
            self.end(FAILED)
            raise
