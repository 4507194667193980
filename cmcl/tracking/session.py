"""A tracker's calls on a thread of their own: the training loop never waits on the network.

The loop hands each call to :class:`TrackingSession` (a queue put, microseconds)
and goes on; a daemon thread makes the calls in order. The first exception
(a server that is down, a timeout, a full queue behind a slow server) gives
one warning and turns tracking off for the rest of the run; the run, and the
files it writes to its own directory, go on as if tracking had never been asked for.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger("cmcl.tracking")

THREAD_NAME = "cmcl-tracking"

QUEUE_LIMIT = 10_000
"""Calls waiting at most; more means the tracker cannot keep up, and tracking stops."""

_STOP = object()


class _QuietRetries(logging.Filter):
    """Drops the HTTP client's per-retry warnings made on the tracking thread: the session's
    own warning says once what went wrong."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != THREAD_NAME


_QUIET = _QuietRetries()
for _name in ("urllib3.connectionpool", "urllib3.util.retry", "mlflow.utils.rest_utils"):
    logging.getLogger(_name).addFilter(_QUIET)


class TrackingSession:
    """Runs ``calls`` submitted by the training thread, in order, on a daemon thread.

    Args:
        label: what the warning names (``"mlflow at http://host:5000"``).
        flush_s: how long :meth:`close` waits for the calls still queued.
    """

    def __init__(self, *, label: str, flush_s: float = 30.0) -> None:
        self.label = label
        self.flush_s = flush_s
        self.failed = False
        self._lock = threading.Lock()  # the loop (a full queue) and the thread may both fail
        self.calls: queue.Queue = queue.Queue(maxsize=QUEUE_LIMIT)
        self.thread = threading.Thread(target=self._work, name=THREAD_NAME, daemon=True)
        self.thread.start()

    def submit(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue one call; never blocks, never raises."""
        if self.failed:
            return
        try:
            self.calls.put_nowait((call, args, kwargs))
        except queue.Full:
            self._fail(f"it fell {QUEUE_LIMIT} calls behind the run")

    def wait(self, timeout_s: float) -> None:
        """Block until every call queued so far has run, ``timeout_s`` at most; a tracker
        slower than that fails (one warning) rather than hold the run up again."""
        if self.failed:
            return
        drained = threading.Event()
        self.submit(drained.set)
        if not drained.wait(timeout_s):
            self._fail(f"its calls took more than {timeout_s:g} s at a checkpoint")

    def close(self) -> None:
        """Let the queued calls finish, waiting ``flush_s`` at most (the thread is a daemon:
        a tracker stuck in a call cannot keep the process alive)."""
        with contextlib.suppress(queue.Full):  # a full queue: the join below times out
            self.calls.put(_STOP, timeout=1.0)
        self.thread.join(self.flush_s)
        if self.thread.is_alive():
            self._fail(f"its calls did not finish within {self.flush_s:g} s")

    def _work(self) -> None:
        while True:
            item = self.calls.get()
            if item is _STOP:
                return
            if self.failed:
                continue
            call, args, kwargs = item
            try:
                call(*args, **kwargs)
            except Exception as error:
                self._fail(f"{type(error).__name__}: {_first_line(error)}")

    def _fail(self, why: str) -> None:
        with self._lock:
            if self.failed:
                return
            self.failed = True
        log.warning(
            "tracking: %s failed (%s); the run goes on without tracking, and its own "
            "files are complete (cmcl track sync can upload them later)",
            self.label,
            why,
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."
